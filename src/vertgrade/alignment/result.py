"""What the alignment measurement returns: :class:`Alignment` and the values it holds, with the
``alignment`` object of ``result.json`` and the rows of ``alignment.csv``.

Angles are in degrees, with the signs defined in :mod:`vertgrade.alignment`; they are kept at full
precision here and rounded (to 0.01 degree) only in :meth:`Alignment.to_dict` and
:meth:`Alignment.to_records`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from vertgrade.alignment.config import AlignmentConfig

__all__ = [
    "ALIGNMENT_COLUMNS",
    "Alignment",
    "CoronalCurve",
    "SagittalAngle",
    "SegmentAngles",
    "VertebraAngles",
]

Convexity = Literal["left", "right"]


@dataclass(frozen=True)
class VertebraAngles:
    """The endplate angles of one vertebra (degrees; signs in :mod:`vertgrade.alignment`).

    ``usable`` is false, and every angle ``None``, when the vertebra cannot take part (``reason``
    says why). ``regional_kyphosis_deg`` needs usable adjacent vertebrae above and below.
    """

    label: int
    level: str
    usable: bool
    reason: str | None
    superior_coronal_deg: float | None = None
    superior_sagittal_deg: float | None = None
    inferior_coronal_deg: float | None = None
    inferior_sagittal_deg: float | None = None
    wedge_coronal_deg: float | None = None
    wedge_sagittal_deg: float | None = None
    regional_kyphosis_deg: float | None = None


@dataclass(frozen=True)
class SegmentAngles:
    """Angles between two adjacent vertebrae (degrees; coronal positive convex right, sagittal
    positive kyphotic). ``segmental_*``: superior endplate of ``upper`` against superior endplate
    of ``lower``; ``disc_*``: inferior endplate of ``upper`` against superior endplate of
    ``lower``. ``None`` with ``reason`` when either vertebra is not usable."""

    upper: str
    lower: str
    segmental_coronal_deg: float | None
    segmental_sagittal_deg: float | None
    disc_coronal_deg: float | None
    disc_sagittal_deg: float | None
    reason: str | None = None


@dataclass(frozen=True)
class CoronalCurve:
    """One coronal curve.

    Attributes
    ----------
    upper_end, lower_end : str
        End vertebrae: the angle is taken between ``upper_end``'s superior endplate and
        ``lower_end``'s inferior endplate.
    apex : str
        The most deviated vertebra, or a disc written ``"T12/L1"``.
    convex : {"left", "right"}
        The side of the patient the curve bulges towards (dextroscoliosis is convex right).
    cobb_deg : float
        The Cobb angle, positive.
    upper_endplate_deg, lower_endplate_deg : float
        Coronal angles of the two endplates the Cobb angle is taken between.
    apex_deviation_mm : float
        Distance of the apex's centre (the mean of a disc's two vertebrae) from the line
        joining the end vertebrae's centres, in the coronal projection, towards the convex side.
    complete : bool
        False when an end vertebra is the first or last usable vertebra: the curve may continue
        beyond the image, and then the Cobb angle is underestimated (``note`` says which end).
    note : str or None
    """

    upper_end: str
    lower_end: str
    apex: str
    convex: Convexity
    cobb_deg: float
    upper_endplate_deg: float
    lower_endplate_deg: float
    apex_deviation_mm: float
    complete: bool
    note: str | None = None


@dataclass(frozen=True)
class SagittalAngle:
    """Thoracic kyphosis or lumbar lordosis (degrees, positive when kyphotic resp. lordotic).

    ``angle_deg`` is ``None`` when it cannot be measured; ``reason`` then says why. When measured
    over another span than the standard one (``standard`` false), ``reason`` says which span and
    why; it may also carry a note on a standard span (S1 labelled but not usable).
    """

    name: Literal["thoracic_kyphosis", "lumbar_lordosis"]
    angle_deg: float | None
    upper: str | None
    upper_endplate: Literal["superior", "inferior"] | None
    lower: str | None
    lower_endplate: Literal["superior", "inferior"] | None
    standard: bool
    reason: str | None

    @property
    def span(self) -> str | None:
        """``"T4-T12"``-style span, or ``None``."""
        return None if self.upper is None else f"{self.upper}-{self.lower}"


#: Columns of ``alignment.csv``, in order: one row per vertebra, cranial to caudal.
ALIGNMENT_COLUMNS: tuple[str, ...] = (
    "label",
    "level",
    "usable",
    "superior_coronal_deg",
    "superior_sagittal_deg",
    "inferior_coronal_deg",
    "inferior_sagittal_deg",
    "wedge_coronal_deg",
    "wedge_sagittal_deg",
    "regional_kyphosis_deg",
    "segment_below",
    "segmental_coronal_deg",
    "segmental_sagittal_deg",
    "disc_coronal_deg",
    "disc_sagittal_deg",
    "curve_roles",
    "reason",
)


@dataclass(frozen=True)
class Alignment:
    """The spine's alignment: per vertebra, per segment and per study.

    ``curves`` lists the coronal curves of at least ``config.min_cobb_deg``, cranial first;
    when it is empty ``coronal_reason`` says why (no curve that large, or too few vertebrae).
    ``largest_coronal_deg`` is the largest coronal angle between any superior endplate and any
    lower inferior endplate, reported even when no curve qualifies. ``notes`` list the vertebrae
    left out and why.
    """

    subject: str
    vertebrae: tuple[VertebraAngles, ...]
    segments: tuple[SegmentAngles, ...]
    curves: tuple[CoronalCurve, ...]
    coronal_reason: str | None
    largest_coronal_deg: float | None
    kyphosis: SagittalAngle
    lordosis: SagittalAngle
    notes: tuple[str, ...] = ()
    config: AlignmentConfig = field(default_factory=AlignmentConfig)

    def __getitem__(self, level: str) -> VertebraAngles:
        for v in self.vertebrae:
            if v.level == level:
                return v
        raise KeyError(level)

    def to_dict(self) -> dict[str, Any]:
        """The ``alignment`` object of ``result.json`` (its schema is the ``alignment`` entry of
        ``result.schema.json``);
        angles rounded to 0.01 degree, missing values ``null``."""

        def sag(a: SagittalAngle) -> dict[str, Any]:
            return {
                "angle_deg": _r(a.angle_deg),
                "upper": a.upper,
                "upper_endplate": a.upper_endplate,
                "lower": a.lower,
                "lower_endplate": a.lower_endplate,
                "standard": a.standard,
                "reason": a.reason,
            }

        return {
            "parameters": self.config.to_dict(),
            "coronal": {
                "curves": [
                    {
                        "upper_end": c.upper_end,
                        "lower_end": c.lower_end,
                        "apex": c.apex,
                        "convex": c.convex,
                        "cobb_deg": _r(c.cobb_deg),
                        "upper_endplate_deg": _r(c.upper_endplate_deg),
                        "lower_endplate_deg": _r(c.lower_endplate_deg),
                        "apex_deviation_mm": _r(c.apex_deviation_mm, 1),
                        "complete": c.complete,
                        "note": c.note,
                    }
                    for c in self.curves
                ],
                "largest_angle_deg": _r(self.largest_coronal_deg),
                "reason": self.coronal_reason,
            },
            "sagittal": {
                "thoracic_kyphosis": sag(self.kyphosis),
                "lumbar_lordosis": sag(self.lordosis),
            },
            "vertebrae": [
                {
                    "label": v.label,
                    "level": v.level,
                    "usable": v.usable,
                    "reason": v.reason,
                    "superior": {
                        "coronal_deg": _r(v.superior_coronal_deg),
                        "sagittal_deg": _r(v.superior_sagittal_deg),
                    },
                    "inferior": {
                        "coronal_deg": _r(v.inferior_coronal_deg),
                        "sagittal_deg": _r(v.inferior_sagittal_deg),
                    },
                    "wedge_coronal_deg": _r(v.wedge_coronal_deg),
                    "wedge_sagittal_deg": _r(v.wedge_sagittal_deg),
                    "regional_kyphosis_deg": _r(v.regional_kyphosis_deg),
                }
                for v in self.vertebrae
            ],
            "segments": [
                {
                    "upper": s.upper,
                    "lower": s.lower,
                    "segmental_coronal_deg": _r(s.segmental_coronal_deg),
                    "segmental_sagittal_deg": _r(s.segmental_sagittal_deg),
                    "disc_coronal_deg": _r(s.disc_coronal_deg),
                    "disc_sagittal_deg": _r(s.disc_sagittal_deg),
                    "reason": s.reason,
                }
                for s in self.segments
            ],
            "notes": list(self.notes),
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One flat row per vertebra (columns :data:`ALIGNMENT_COLUMNS`), for
        ``alignment.csv``; the segment columns describe the segment from this vertebra to the
        adjacent one below (empty at the last vertebra or before a gap)."""
        below = {s.upper: s for s in self.segments}
        roles: dict[str, list[str]] = {}
        for i, c in enumerate(self.curves, start=1):
            roles.setdefault(c.upper_end, []).append(f"upper_end_{i}")
            for lv in c.apex.split("/"):
                roles.setdefault(lv, []).append(f"apex_{i}")
            roles.setdefault(c.lower_end, []).append(f"lower_end_{i}")
        rows = []
        for v in self.vertebrae:
            s = below.get(v.level)
            rows.append(
                {
                    "label": v.label,
                    "level": v.level,
                    "usable": v.usable,
                    "superior_coronal_deg": _r(v.superior_coronal_deg),
                    "superior_sagittal_deg": _r(v.superior_sagittal_deg),
                    "inferior_coronal_deg": _r(v.inferior_coronal_deg),
                    "inferior_sagittal_deg": _r(v.inferior_sagittal_deg),
                    "wedge_coronal_deg": _r(v.wedge_coronal_deg),
                    "wedge_sagittal_deg": _r(v.wedge_sagittal_deg),
                    "regional_kyphosis_deg": _r(v.regional_kyphosis_deg),
                    "segment_below": None if s is None else f"{s.upper}-{s.lower}",
                    "segmental_coronal_deg": None if s is None else _r(s.segmental_coronal_deg),
                    "segmental_sagittal_deg": None if s is None else _r(s.segmental_sagittal_deg),
                    "disc_coronal_deg": None if s is None else _r(s.disc_coronal_deg),
                    "disc_sagittal_deg": None if s is None else _r(s.disc_sagittal_deg),
                    "curve_roles": ";".join(roles.get(v.level, [])),
                    "reason": v.reason,
                }
            )
        return rows

    def describe(self) -> list[str]:
        """A few human-readable lines (for a command line's summary).

        Examples
        --------
        >>> from vertgrade.alignment import alignment_from_endplates
        >>> al = alignment_from_endplates([20], superior=[[0, 0, 1.0]], inferior=[[0, 0, 1.0]],
        ...                               centroids_mm=[[0, 0, 0]])
        >>> print("\\n".join(al.describe()))
        coronal: coronal curves need at least two usable vertebrae between C3 and L6; usable: L1
        thoracic kyphosis: not measured: needs at least two usable thoracic vertebrae; usable: none
        lumbar lordosis: not measured: needs at least two usable vertebrae from L1 to S1; usable: L1
        """
        lines = []
        if self.curves:
            for c in self.curves:
                text = (
                    f"coronal: Cobb {c.cobb_deg:.1f} deg {c.upper_end}-{c.lower_end}, "
                    f"apex {c.apex}, convex {c.convex}"
                )
                lines.append(text + ("" if c.complete else " (may continue beyond the image)"))
        else:
            lines.append(f"coronal: {self.coronal_reason}")
        for a in (self.kyphosis, self.lordosis):
            name = a.name.replace("_", " ")
            if a.angle_deg is None:
                lines.append(f"{name}: not measured: {a.reason}")
            else:
                extra = "" if a.standard else " (not the standard span)"
                lines.append(f"{name}: {a.angle_deg:.1f} deg {a.span}{extra}")
        return lines


def _r(value: float | None, nd: int = 2) -> float | None:
    """``value`` rounded to ``nd`` decimals; a zero is written ``0.0``, never ``-0.0`` (whose
    sign is the last bits' noise, not a direction)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), nd) + 0.0
