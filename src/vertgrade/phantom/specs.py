"""What a phantom is asked for: fractures, scoliotic curves and levels, and their parsing.

A fracture is ``LEVEL:TYPE:SEVERITY`` (:class:`FractureSpec`), a scoliotic curve
``UPPER-LOWER:SIDE:DEGREES`` (:class:`ScoliosisSpec`); both validate on construction and raise
``ValueError`` with the expected form. :func:`vertgrade.phantom.make_phantom` accepts either the
objects or their text, one by one or comma-separated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from vertgrade.grading import FractureType
from vertgrade.levels import label_id, level_name, parse_level_range

__all__ = [
    "MAX_COBB_PER_LEVEL_DEG",
    "MAX_SEVERITY",
    "Convexity",
    "FractureSpec",
    "ScoliosisSpec",
]

_FRACTURE_TYPES: tuple[str, ...] = get_args(FractureType)

#: Largest accepted severity (fractional height loss of the most affected third).
MAX_SEVERITY = 0.8
#: Largest coronal tilt change (deg) per level inside a requested scoliotic curve: beyond about
#: this, adjacent bodies would touch on the curve's concave side.
MAX_COBB_PER_LEVEL_DEG = 10.0


@dataclass(frozen=True)
class FractureSpec:
    """A requested compression fracture.

    Attributes
    ----------
    level : str
        Level name such as ``"L1"`` (normalised to upper case).
    type : {"wedge", "biconcave", "crush"}
        Wedge: the anterior third collapses; biconcave: the middle third; crush: all thirds alike.
    severity : float
        Fractional height loss (0 to :data:`MAX_SEVERITY`) of the most affected third, exactly as
        the truth defines it (region means of the height map).

    Examples
    --------
    >>> FractureSpec.parse("l1:Wedge:0.35")
    FractureSpec(level='L1', type='wedge', severity=0.35)
    """

    level: str
    type: FractureType
    severity: float

    def __post_init__(self) -> None:
        label = label_id(str(self.level))  # ValueError for unknown levels
        if not 8 <= label <= 24:
            raise ValueError(f"fracture level {self.level!r}: the phantom has T1-L5 only")
        object.__setattr__(self, "level", level_name(label))
        kind = str(self.type).strip().lower()
        if kind not in _FRACTURE_TYPES:
            raise ValueError(
                f"fracture type {self.type!r} is not one of {', '.join(_FRACTURE_TYPES)}"
            )
        object.__setattr__(self, "type", kind)
        sev = float(self.severity)
        if not (math.isfinite(sev) and 0.0 <= sev <= MAX_SEVERITY):
            raise ValueError(
                f"fracture severity {self.severity!r} is outside 0..{MAX_SEVERITY} "
                "(fractional height loss of the most affected third)"
            )
        object.__setattr__(self, "severity", sev)

    @classmethod
    def parse(cls, text: str) -> FractureSpec:
        """Parse ``"LEVEL:TYPE:SEVERITY"`` such as ``"L1:wedge:0.35"``; ``ValueError`` if not."""
        parts = [p.strip() for p in str(text).split(":")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"fracture {text!r} is not of the form LEVEL:TYPE:SEVERITY, e.g. L1:wedge:0.35"
            )
        level, kind, sev_text = parts
        try:
            sev = float(sev_text)
        except ValueError:
            raise ValueError(
                f"fracture {text!r}: severity {sev_text!r} is not a number (e.g. 0.35)"
            ) from None
        return cls(level, kind, sev)  # type: ignore[arg-type]


Convexity = Literal["left", "right"]


@dataclass(frozen=True)
class ScoliosisSpec:
    """A requested coronal (scoliotic) curve.

    The coronal tilt of the vertebrae (:func:`vertgrade.alignment.endplate_angles` of their
    axes) changes by the same amount at every level from ``upper`` to ``lower``, so that the
    Cobb angle between ``upper``'s superior and ``lower``'s inferior endplate is exactly
    ``cobb_deg``: the vertebrae are rigid and, for a healthy body, both endplates share the
    coronal tilt of its axis.

    Attributes
    ----------
    upper, lower : str
        End vertebrae within T1-L5, at least two levels apart (normalised to upper case).
    convex : {"left", "right"}
        The side of the patient the curve bulges towards.
    cobb_deg : float
        The Cobb angle, more than 0 and at most :data:`MAX_COBB_PER_LEVEL_DEG` per level.

    Examples
    --------
    >>> ScoliosisSpec.parse("t5-T11:Right:40")
    ScoliosisSpec(upper='T5', lower='T11', convex='right', cobb_deg=40.0)
    """

    upper: str
    lower: str
    convex: Convexity
    cobb_deg: float

    def __post_init__(self) -> None:
        up, low = label_id(str(self.upper)), label_id(str(self.lower))
        for lab in (up, low):
            if not 8 <= lab <= 24:
                raise ValueError(
                    f"scoliosis end vertebra {level_name(lab)}: the phantom has T1-L5 only"
                )
        if low - up < 2:
            raise ValueError(
                f"scoliosis {level_name(up)}-{level_name(low)}: the upper end vertebra must lie "
                "at least two levels above the lower one, e.g. T5-T11"
            )
        object.__setattr__(self, "upper", level_name(up))
        object.__setattr__(self, "lower", level_name(low))
        side = str(self.convex).strip().lower()
        if side not in ("left", "right"):
            raise ValueError(f"scoliosis convexity {self.convex!r} is not left or right")
        object.__setattr__(self, "convex", side)
        cobb = float(self.cobb_deg)
        most = MAX_COBB_PER_LEVEL_DEG * (low - up)
        if not (math.isfinite(cobb) and 0.0 < cobb <= most):
            raise ValueError(
                f"scoliosis {self.upper}-{self.lower}: Cobb angle {self.cobb_deg!r} is outside "
                f"0..{most:g} deg (more than 0, at most {MAX_COBB_PER_LEVEL_DEG:g} per level)"
            )
        object.__setattr__(self, "cobb_deg", cobb)

    @property
    def upper_label(self) -> int:
        return label_id(self.upper)

    @property
    def lower_label(self) -> int:
        return label_id(self.lower)

    @classmethod
    def parse(cls, text: str) -> ScoliosisSpec:
        """Parse ``"UPPER-LOWER:SIDE:DEGREES"`` such as ``"T5-T11:right:40"``; ``ValueError``
        if not."""
        parts = [p.strip() for p in str(text).split(":")]
        ends = parts[0].split("-") if parts else []
        if len(parts) != 3 or not all(parts) or len(ends) != 2 or not all(e.strip() for e in ends):
            raise ValueError(
                f"scoliosis {text!r} is not of the form UPPER-LOWER:SIDE:DEGREES, "
                "e.g. T5-T11:right:40"
            )
        try:
            cobb = float(parts[2])
        except ValueError:
            raise ValueError(
                f"scoliosis {text!r}: Cobb angle {parts[2]!r} is not a number (e.g. 40)"
            ) from None
        return cls(ends[0].strip(), ends[1].strip(), parts[1], cobb)  # type: ignore[arg-type]


def _parse_levels(levels: str | Iterable[str | int]) -> list[int]:
    """Label ids, cranial first, of contiguous levels within T1-L5; ``ValueError`` if not."""
    if isinstance(levels, str):
        out = parse_level_range(levels)
    else:
        out = [int(v) if isinstance(v, (int, np.integer)) else label_id(str(v)) for v in levels]
    if not out:
        raise ValueError("no levels requested")
    bad = [v for v in out if not 8 <= v <= 24]
    if bad:
        raise ValueError(f"the phantom has T1-L5 only; got {', '.join(level_name(v) for v in bad)}")
    if len(set(out)) != len(out):
        raise ValueError(f"levels repeat: {levels!r}")
    out = sorted(out)
    if out != list(range(out[0], out[-1] + 1)):
        raise ValueError(f"levels must be contiguous, got {[level_name(v) for v in out]}")
    return out


def _parse_fractures(
    fractures: str | Iterable[FractureSpec | str], labels: Sequence[int]
) -> dict[int, FractureSpec]:
    """Fractures by label id, each at one of ``labels`` and at most one per level."""
    if isinstance(fractures, str):
        fractures = [f for f in fractures.split(",") if f.strip()]
    out: dict[int, FractureSpec] = {}
    for item in fractures:
        spec = item if isinstance(item, FractureSpec) else FractureSpec.parse(str(item))
        lab = label_id(spec.level)
        if lab not in labels:
            raise ValueError(
                f"fracture at {spec.level}, which is not among the phantom's levels "
                f"{level_name(labels[0])}-{level_name(labels[-1])}"
            )
        if lab in out:
            raise ValueError(f"two fractures requested at {spec.level}")
        out[lab] = spec
    return out


def _parse_scoliosis(scoliosis: str | Iterable[ScoliosisSpec | str]) -> list[ScoliosisSpec]:
    """Requested curves, cranial first; consecutive curves must share an end vertebra and bend
    to opposite sides (so that every end vertebra is a turning point of the tilt)."""
    if isinstance(scoliosis, str):
        scoliosis = [c for c in scoliosis.split(",") if c.strip()]
    specs = [c if isinstance(c, ScoliosisSpec) else ScoliosisSpec.parse(str(c)) for c in scoliosis]
    specs.sort(key=lambda c: c.upper_label)
    for a, b in itertools.pairwise(specs):
        if a.lower_label != b.upper_label or a.convex == b.convex:
            raise ValueError(
                f"scoliotic curves {a.upper}-{a.lower} ({a.convex}) and {b.upper}-{b.lower} "
                f"({b.convex}): consecutive curves must share their end vertebra and bend to "
                "opposite sides, e.g. T5-T11:right:40 and T11-L4:left:30"
            )
    return specs
