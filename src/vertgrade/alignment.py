"""Spinal alignment from the endplate planes: Cobb angles, kyphosis, lordosis, segmental angles.

Every angle is measured between the endplate planes that grading already fitted
(:attr:`vertgrade.result.VertebraResult.endplates`: a point and a unit normal in world RAS+ mm,
the normal pointing to the patient's head), projected onto the patient's coronal and sagittal
planes, the way a Cobb angle is drawn on an antero-posterior or lateral radiograph.

Planes and signs
----------------
The patient's planes are the world planes of the image (RAS+: ``x`` to the patient's right,
``y`` anterior, ``z`` superior): the coronal plane is ``x-z``, the sagittal plane ``y-z``. A patient
lying rotated on the table rotates them too; vertgrade does not guess a patient frame.

An endplate with unit normal ``n`` (pointing to the head) cuts the coronal plane along a line
whose angle to the horizontal is the angle of the projected normal ``(n_x, n_z)`` to the vertical
(the line is perpendicular to the projected normal); the same holds in the sagittal plane. So

- ``coronal_deg = atan2(n_x, n_z)``: **positive when the endplate descends towards the patient's
  right**;
- ``sagittal_deg = atan2(n_y, n_z)``: **positive when the endplate descends anteriorly**.

Angles between two endplates (an upper one ``U`` and a lower one ``L``) are differences of these:

- coronal: ``coronal(L) - coronal(U)``, **positive when the spine between them is convex to the
  patient's right** (the tilt grows caudally through a right-convex curve);
- sagittal: ``sagittal(U) - sagittal(L)``, **positive when kyphotic** (convex posteriorly);
  lordosis is reported as ``sagittal(L) - sagittal(U)``, positive when lordotic.

What is measured
----------------
- Per vertebra: the four endplate angles; the **wedge angle** (its own superior endplate against its
  own inferior endplate: sagittal positive when the anterior wall is the shorter, coronal positive
  when the right side is the taller); the **regional kyphosis** (superior endplate of the vertebra
  above against the inferior endplate of the vertebra below, the Cobb method of fracture kyphosis,
  Kuklo et al., Spine 2001).
- Per pair of adjacent vertebrae: the **segmental angle** (superior endplate of the upper vertebra
  against the superior endplate of the lower one: the upper body's wedge plus the disc) and the
  **disc angle** (inferior endplate of the upper against superior endplate of the lower). Segmental
  angles from ``U`` down to the vertebra above ``L``, plus the wedge of ``L``, add up to the
  ``U``-to-``L`` angle.
- Coronal **Cobb angles** (Cobb 1948; a curve is scoliosis from 10 degrees, Scoliosis Research
  Society). The coronal endplate angles are listed cranial to caudal (superior, inferior, superior,
  ...); a curve runs between two turning points of that sequence, found with a hysteresis of
  ``min_cobb_deg`` so that wiggles smaller than a reportable curve do not split one. Its end
  vertebrae are then the pair, from one level beyond the turning points inwards, whose upper
  end's superior and lower end's inferior endplate make the largest angle (the most tilted
  endplates; of exactly equally tilted ones, those nearest the apex). The apex is the vertebra
  (or disc, ``"T12/L1"``) farthest from the line joining the end vertebrae's centres in the
  coronal projection. A curve that reaches the first or last usable vertebra is marked
  incomplete: its true end may lie beyond the image.
- **Thoracic kyphosis** from the superior endplate of T4 to the inferior endplate of T12; where
  either is missing or unusable, over the widest span of usable vertebrae within T4-T12, else
  within T1-T13, saying so. **Lumbar lordosis** from the superior endplate of L1 to the inferior
  endplate of L5 (of L6 where present), or to the superior endplate of S1 where S1 is labelled and
  usable; else over the widest usable lumbar span, saying so.

A vertebra is not used when its endplates could not be fitted, when its body is cut by the field
of view (its cut face would pass for an endplate), when its size is implausible for its level, or
when its two endplate planes are implausibly far apart. C1, C2 and the sacrum take no part in
Cobb angles. What cannot be measured is ``None`` together with the reason.

Examples
--------
>>> import numpy as np
>>> def normal(coronal_deg):
...     a = np.radians(coronal_deg)
...     return np.array([np.sin(a), 0.0, np.cos(a)])
>>> tilts = {17: -10.0, 18: -5.0, 19: 0.0, 20: 5.0, 21: 10.0}    # T10-L2, right-convex
>>> al = alignment_from_endplates(
...     list(tilts),
...     superior=[normal(t) for t in tilts.values()],
...     inferior=[normal(t) for t in tilts.values()],
...     centroids_mm=[[-(abs(t) - 10.0), 0.0, -30.0 * i] for i, t in enumerate(tilts.values())],
... )
>>> c = al.curves[0]
>>> c.upper_end, c.lower_end, c.apex, c.convex, round(c.cobb_deg, 6)
('T10', 'L2', 'T12', 'right', 20.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vertgrade.levels import anatomical_order, label_id, level_name, region_of

__all__ = [
    "ALIGNMENT_COLUMNS",
    "Alignment",
    "AlignmentConfig",
    "CoronalCurve",
    "SagittalAngle",
    "SegmentAngles",
    "VertebraAngles",
    "alignment_from_endplates",
    "coronal_apex",
    "endplate_angles",
    "lumbar_lordosis_span",
    "thoracic_kyphosis_span",
]

Convexity = Literal["left", "right"]

# Labels never used for coronal Cobb angles: C1, C2 (no body / dens) and the sacrum.
_NO_COBB_LABELS = frozenset({1, 2, 26})
# The standard sequence of levels, T13 (28) and L6 (25) optional: two labelled vertebrae are
# adjacent when no standard level lies between them.
_SEQUENCE: tuple[int, ...] = (*range(1, 20), 28, *range(20, 25), 25, 26)
_OPTIONAL = frozenset({25, 28})
_T4, _T12, _L1, _S1 = 11, 19, 20, 26
# The apex is a disc when the parabola through the three most deviated vertebrae peaks more than
# this many levels from the most deviated one.
_DISC_APEX_OFFSET = 0.25


@dataclass(frozen=True)
class AlignmentConfig:
    """Parameters of :func:`alignment_from_endplates` (and
    :func:`vertgrade.pipeline.measure_alignment`).

    Attributes
    ----------
    min_cobb_deg : float
        Smallest coronal curve reported, and the hysteresis that separates curves: 10 degrees,
        the Scoliosis Research Society's threshold for scoliosis.
    max_wedge_deg : float
        A vertebra whose superior and inferior endplate normals are further apart than this is
        not used: no real body, even a vertebra plana, is that wedged, so the fit failed.
    """

    min_cobb_deg: float = 10.0
    max_wedge_deg: float = 45.0

    def __post_init__(self) -> None:
        for name in ("min_cobb_deg", "max_wedge_deg"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive angle in degrees, got {value!r}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def endplate_angles(normal: ArrayLike) -> tuple[float, float]:
    """Coronal and sagittal angles (degrees) of an endplate plane with the given normal.

    Parameters
    ----------
    normal : (3,) array-like
        The plane's normal in world RAS+ coordinates, pointing to the head (``n_z > 0`` for any
        plausible endplate); need not be unit length.

    Returns
    -------
    coronal_deg, sagittal_deg : float
        ``atan2(n_x, n_z)``, positive when the endplate descends towards the patient's right;
        ``atan2(n_y, n_z)``, positive when it descends anteriorly.

    Examples
    --------
    >>> endplate_angles([0.0, 0.0, 1.0])
    (0.0, 0.0)
    >>> [round(a, 6) for a in endplate_angles([0.1, -0.2, 1.0])]
    [5.710593, -11.309932]
    """
    n = np.asarray(normal, dtype=float)
    if n.shape != (3,) or not np.all(np.isfinite(n)) or not np.any(n):
        raise ValueError(f"an endplate normal must be a finite non-zero 3-vector, got {normal!r}")
    return (
        math.degrees(math.atan2(float(n[0]), float(n[2]))),
        math.degrees(math.atan2(float(n[1]), float(n[2]))),
    )


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VertebraAngles:
    """The endplate angles of one vertebra (degrees; signs in the module docstring).

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
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), nd)


# ---------------------------------------------------------------------------------------------
# Spans of the sagittal angles
# ---------------------------------------------------------------------------------------------


def thoracic_kyphosis_span(labels: Sequence[int]) -> tuple[int, int] | None:
    """End vertebrae of the thoracic kyphosis among usable vertebrae ``labels``.

    T4 (superior endplate) to T12 (inferior endplate) where both are there; otherwise the widest
    span of the thoracic vertebrae within T4-T12, and failing two of those, within T1-T13.
    ``None`` with fewer than two thoracic vertebrae.

    >>> [level_name(x) for x in thoracic_kyphosis_span([10, 11, 12, 19, 20])]
    ['T4', 'T12']
    >>> [level_name(x) for x in thoracic_kyphosis_span([17, 18, 19, 20])]
    ['T10', 'T12']
    >>> thoracic_kyphosis_span([19, 20, 21]) is None
    True
    """
    thoracic = [x for x in anatomical_order(list(labels)) if region_of(x) == "thoracic"]
    window = [x for x in thoracic if _T4 <= x <= _T12]
    for group in (window, thoracic):
        if len(group) >= 2:
            return group[0], group[-1]
    return None


def lumbar_lordosis_span(labels: Sequence[int]) -> tuple[int, int] | None:
    """End vertebrae of the lumbar lordosis among usable vertebrae ``labels``.

    The upper end is the most cranial lumbar vertebra (L1 where there) and its superior endplate
    is used; the lower end is S1 (label 26, its superior endplate) where it is among ``labels``,
    else the most caudal lumbar vertebra (its inferior endplate). ``None`` unless the two ends are
    different vertebrae.

    >>> [level_name(x) for x in lumbar_lordosis_span([19, 20, 21, 22, 23, 24])]
    ['L1', 'L5']
    >>> [level_name(x) for x in lumbar_lordosis_span([20, 21, 22, 23, 24, 26])]
    ['L1', 'S1']
    >>> lumbar_lordosis_span([24]) is None
    True
    """
    lumbar = [x for x in anatomical_order(list(labels)) if region_of(x) == "lumbar"]
    if not lumbar:
        return None
    lower = _S1 if _S1 in labels else lumbar[-1]
    return (lumbar[0], lower) if lower != lumbar[0] else None


# ---------------------------------------------------------------------------------------------
# Apex
# ---------------------------------------------------------------------------------------------


def coronal_apex(centres_mm: ArrayLike, convex: Convexity) -> tuple[int, int, float]:
    """Apex of a coronal curve from the centres of its vertebrae, end vertebrae included.

    Each centre's distance from the line through the first and last centres is taken in the
    coronal projection (world ``x``, ``z``), positive towards the convex side. The apex is the
    vertebra farthest out; when the parabola through it and its two neighbours peaks more than a
    quarter of a level away, the apex is the disc on that side. With only the two end vertebrae,
    it is the disc between them.

    Parameters
    ----------
    centres_mm : (N, 3) array-like
        World RAS+ centres (mm) of the curve's vertebrae, cranial first, ``N >= 2``.
    convex : {"left", "right"}

    Returns
    -------
    first, last : int
        Indices into ``centres_mm`` of the apex: equal for a vertebra, consecutive for a disc.
    deviation_mm : float
        The apex's distance from the line (a disc's: the mean of its two vertebrae).

    Examples
    --------
    >>> pts = [[0, 0, 0], [6, 0, -30], [8, 0, -60], [6, 0, -90], [0, 0, -120]]
    >>> coronal_apex(pts, "right")
    (2, 2, 8.0)
    >>> coronal_apex(pts[:3] + [[8, 0, -90], [6, 0, -120], [0, 0, -150]], "right")
    (2, 3, 8.0)
    """
    p = np.asarray(centres_mm, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 2:
        raise ValueError(f"need at least two 3D centres, got shape {p.shape}")
    xz = p[:, [0, 2]]
    d = xz[-1] - xz[0]
    length = float(np.hypot(*d))
    if length == 0:
        raise ValueError("the end vertebrae's centres coincide")
    right = np.array([-d[1], d[0]]) / length  # perpendicular; flipped below to point to +x
    if right[0] < 0 or (right[0] == 0 and right[1] > 0):
        right = -right
    dev = (xz - xz[0]) @ right * (1.0 if convex == "right" else -1.0)
    n = len(p)
    if n == 2:
        return 0, 1, float(dev.mean())
    k = 1 + int(np.argmax(dev[1:-1]))
    a, b, c = float(dev[k - 1]), float(dev[k]), float(dev[k + 1])
    curvature = a - 2.0 * b + c
    offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    if offset > _DISC_APEX_OFFSET:
        return k, k + 1, 0.5 * (b + c)
    if offset < -_DISC_APEX_OFFSET:
        return k - 1, k, 0.5 * (a + b)
    return k, k, b


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def alignment_from_endplates(
    labels: Sequence[int],
    *,
    superior: Sequence[ArrayLike | None],
    inferior: Sequence[ArrayLike | None],
    centroids_mm: Sequence[ArrayLike] | NDArray[np.float64],
    excluded: Mapping[int, str] | None = None,
    subject: str = "study",
    config: AlignmentConfig | None = None,
) -> Alignment:
    """Alignment from endplate normals: the computation behind
    :func:`vertgrade.pipeline.measure_alignment`.

    Parameters
    ----------
    labels : sequence of int
        VerSe labels of the vertebrae, any order (they are sorted cranial to caudal); no repeats.
    superior, inferior : sequence of (3,) array-like or None
        Each vertebra's endplate normals in world RAS+ (pointing to the head), ``None`` where the
        plane was not fitted.
    centroids_mm : (N, 3) array-like
        Body centres in world RAS+ mm (for the apex).
    excluded : mapping of int to str, optional
        Vertebrae not to use, with the reason (e.g. cut by the field of view).
    subject : str
    config : AlignmentConfig, optional

    Returns
    -------
    Alignment
    """
    cfg = config or AlignmentConfig()
    excluded = dict(excluded or {})
    n = len(labels)
    if not (len(superior) == len(inferior) == len(centroids_mm) == n):
        raise ValueError(
            f"labels, superior, inferior and centroids_mm differ in length: {n}, "
            f"{len(superior)}, {len(inferior)}, {len(centroids_mm)}"
        )
    if len(set(labels)) != n:
        raise ValueError(f"labels repeat: {list(labels)}")
    by_label = {
        int(lab): (s, i, np.asarray(c, dtype=float))
        for lab, s, i, c in zip(labels, superior, inferior, centroids_mm, strict=True)
    }
    order = anatomical_order(list(by_label))

    # --- per vertebra: angles and usability ---------------------------------------------------
    angles: dict[int, tuple[float, float, float, float]] = {}  # sup cor, sup sag, inf cor, inf sag
    reasons: dict[int, str] = {}
    for lab in order:
        s, i, _ = by_label[lab]
        if lab in excluded:
            reasons[lab] = excluded[lab]
            continue
        if s is None or i is None:
            reasons[lab] = "its endplate planes could not be fitted"
            continue
        ns, ni = _unit(s), _unit(i)
        if ns[2] <= 0 or ni[2] <= 0:
            reasons[lab] = "an endplate normal does not point to the head: implausible fit"
            continue
        between = math.degrees(math.acos(float(np.clip(ns @ ni, -1.0, 1.0))))
        if between > cfg.max_wedge_deg:
            reasons[lab] = (
                f"its endplate planes are {between:.0f} deg apart (more than "
                f"{cfg.max_wedge_deg:g}): implausible fit"
            )
            continue
        angles[lab] = (*endplate_angles(ns), *endplate_angles(ni))

    def adjacent(a: int, b: int) -> bool:
        ia, ib = _SEQUENCE.index(a), _SEQUENCE.index(b)
        return all(x in _OPTIONAL for x in _SEQUENCE[ia + 1 : ib])

    vertebrae = []
    for idx, lab in enumerate(order):
        if lab not in angles:
            vertebrae.append(VertebraAngles(lab, level_name(lab), False, reasons[lab]))
            continue
        sc, ss, ic, is_ = angles[lab]
        regional = None
        if 0 < idx < len(order) - 1:
            up, lo = order[idx - 1], order[idx + 1]
            if up in angles and lo in angles and adjacent(up, lab) and adjacent(lab, lo):
                regional = angles[up][1] - angles[lo][3]
        vertebrae.append(
            VertebraAngles(
                lab,
                level_name(lab),
                True,
                None,
                superior_coronal_deg=sc,
                superior_sagittal_deg=ss,
                inferior_coronal_deg=ic,
                inferior_sagittal_deg=is_,
                wedge_coronal_deg=ic - sc,
                wedge_sagittal_deg=ss - is_,
                regional_kyphosis_deg=regional,
            )
        )

    segments = []
    for up, lo in itertools.pairwise(order):
        if not adjacent(up, lo):
            continue
        name_up, name_lo = level_name(up), level_name(lo)
        if up in angles and lo in angles:
            a, b = angles[up], angles[lo]
            segments.append(
                SegmentAngles(name_up, name_lo, b[0] - a[0], a[1] - b[1], b[0] - a[2], a[3] - b[1])
            )
        else:
            bad = up if up not in angles else lo
            segments.append(
                SegmentAngles(
                    name_up,
                    name_lo,
                    None,
                    None,
                    None,
                    None,
                    f"{level_name(bad)} not usable: {reasons[bad]}",
                )
            )

    notes = tuple(f"{level_name(lab)} not used: {reasons[lab]}" for lab in order if lab in reasons)
    usable = [lab for lab in order if lab in angles]
    curves, coronal_reason, largest = _coronal_curves(usable, angles, by_label, cfg)
    return Alignment(
        subject=subject,
        vertebrae=tuple(vertebrae),
        segments=tuple(segments),
        curves=curves,
        coronal_reason=coronal_reason,
        largest_coronal_deg=largest,
        kyphosis=_kyphosis(order, usable, angles, reasons),
        lordosis=_lordosis(order, usable, angles, reasons),
        notes=notes,
        config=cfg,
    )


def _unit(v: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=float)
    norm = float(np.linalg.norm(a))
    if a.shape != (3,) or not math.isfinite(norm) or norm == 0:
        raise ValueError(f"an endplate normal must be a finite non-zero 3-vector, got {v!r}")
    return a / norm


def _zigzag(values: NDArray[np.float64], threshold: float) -> list[int]:
    """Indices of the alternating extremes of ``values``, each at least ``threshold`` from the
    previous one (a turning point counts once the values have come back by ``threshold``)."""
    pivots: list[int] = []
    if len(values) < 2:
        return pivots
    lo = hi = ext = 0
    trend = 0
    for i in range(1, len(values)):
        x = values[i]
        if trend == 0:
            if x < values[lo]:
                lo = i
            if x > values[hi]:
                hi = i
            if values[hi] - values[lo] >= threshold:
                trend = 1 if lo < hi else -1
                pivots.append(min(lo, hi))
                ext = max(lo, hi)
        elif trend > 0:
            if x > values[ext]:
                ext = i
            elif values[ext] - x >= threshold:
                pivots.append(ext)
                trend, ext = -1, i
        else:
            if x < values[ext]:
                ext = i
            elif x - values[ext] >= threshold:
                pivots.append(ext)
                trend, ext = 1, i
    if trend != 0:
        pivots.append(ext)
    return pivots


def _coronal_curves(
    usable: list[int],
    angles: dict[int, tuple[float, float, float, float]],
    by_label: dict[int, tuple[Any, Any, NDArray[np.float64]]],
    cfg: AlignmentConfig,
) -> tuple[tuple[CoronalCurve, ...], str | None, float | None]:
    seq = [lab for lab in usable if lab not in _NO_COBB_LABELS]
    if len(seq) < 2:
        names = ", ".join(level_name(x) for x in seq) or "none"
        return (
            (),
            f"coronal curves need at least two usable vertebrae between C3 and L6; usable: {names}",
            None,
        )
    sup = np.array([angles[x][0] for x in seq])
    inf = np.array([angles[x][2] for x in seq])
    # Largest angle between a superior endplate and the inferior endplate of a lower vertebra.
    diff = inf[None, :] - sup[:, None]
    upper_tri = np.triu(np.ones_like(diff, dtype=bool), k=1)
    largest = float(np.abs(diff[upper_tri]).max())

    values = np.column_stack([sup, inf]).ravel()  # S0, I0, S1, I1, ...
    pivots = _zigzag(values, cfg.min_cobb_deg)
    n = len(seq)
    curves = []
    for p, q in itertools.pairwise(pivots):
        sign = 1.0 if values[q] > values[p] else -1.0
        vp, vq = p // 2, q // 2
        # The largest angle between a superior endplate from one level above the upper turning
        # point and an inferior endplate down to one level below the lower one; of equally
        # tilted candidates (a flat run of tilt), the ones nearest the curve's apex.
        best: tuple[float, int, int] | None = None
        for u in range(max(vp - 1, 0), min(vq + 1, n - 1)):
            for low in range(u + 1, min(vq + 1, n - 1) + 1):
                cobb = sign * (inf[low] - sup[u])
                if (
                    best is None
                    or cobb > best[0] + 1e-9
                    or (cobb > best[0] - 1e-9 and (u > best[1] or (u == best[1] and low < best[2])))
                ):
                    best = (cobb, u, low)
        if best is None or best[0] < cfg.min_cobb_deg:
            continue
        cobb, u, low = best
        convex: Convexity = "right" if sign > 0 else "left"
        centres = np.stack([by_label[x][2] for x in seq[u : low + 1]])
        a, b, dev = coronal_apex(centres, convex)
        apex = (
            level_name(seq[u + a])
            if a == b
            else f"{level_name(seq[u + a])}/{level_name(seq[u + b])}"
        )
        open_ends = []
        if u == 0:
            open_ends.append(f"upper end {level_name(seq[u])} is the first usable vertebra")
        if low == n - 1:
            open_ends.append(f"lower end {level_name(seq[low])} is the last usable vertebra")
        note = None
        if open_ends:
            note = (
                "; ".join(open_ends)
                + ": the curve may continue beyond it, and the Cobb angle be underestimated"
            )
        curves.append(
            CoronalCurve(
                upper_end=level_name(seq[u]),
                lower_end=level_name(seq[low]),
                apex=apex,
                convex=convex,
                cobb_deg=float(cobb),
                upper_endplate_deg=float(sup[u]),
                lower_endplate_deg=float(inf[low]),
                apex_deviation_mm=float(dev),
                complete=not open_ends,
                note=note,
            )
        )
    reason = None
    if not curves:
        reason = (
            f"no coronal curve of {cfg.min_cobb_deg:g} deg or more over "
            f"{level_name(seq[0])}-{level_name(seq[-1])} (largest angle between two endplates "
            f"{largest:.1f} deg)"
        )
    return tuple(curves), reason, largest


def _why_missing(level: str, order: list[int], reasons: dict[int, str]) -> str:
    lab = label_id(level)
    if lab not in order:
        return f"{level} is not in the labels"
    return f"{level} is not usable ({reasons.get(lab, 'unknown reason')})"


def _kyphosis(
    order: list[int],
    usable: list[int],
    angles: dict[int, tuple[float, float, float, float]],
    reasons: dict[int, str],
) -> SagittalAngle:
    span = thoracic_kyphosis_span(usable)
    if span is None:
        names = ", ".join(level_name(x) for x in usable if region_of(x) == "thoracic") or "none"
        return SagittalAngle(
            "thoracic_kyphosis",
            None,
            None,
            None,
            None,
            None,
            False,
            f"needs at least two usable thoracic vertebrae; usable: {names}",
        )
    u, low = span
    standard = (u, low) == (_T4, _T12)
    reason = None
    if not standard:
        missing = [
            _why_missing(lv, order, reasons)
            for lv, want, got in (("T4", _T4, u), ("T12", _T12, low))
            if want != got
        ]
        reason = (
            f"T4-T12 not available ({'; '.join(missing)}): measured over "
            f"{level_name(u)}-{level_name(low)} instead, not comparable with T4-T12 norms"
        )
    return SagittalAngle(
        "thoracic_kyphosis",
        angles[u][1] - angles[low][3],
        level_name(u),
        "superior",
        level_name(low),
        "inferior",
        standard,
        reason,
    )


def _lordosis(
    order: list[int],
    usable: list[int],
    angles: dict[int, tuple[float, float, float, float]],
    reasons: dict[int, str],
) -> SagittalAngle:
    span = lumbar_lordosis_span(usable)
    if span is None:
        names = ", ".join(x for x in (level_name(y) for y in usable) if x[0] in "LS") or "none"
        return SagittalAngle(
            "lumbar_lordosis",
            None,
            None,
            None,
            None,
            None,
            False,
            f"needs at least two usable vertebrae from L1 to S1; usable: {names}",
        )
    u, low = span
    to_s1 = low == _S1
    lower_deg = angles[low][1] if to_s1 else angles[low][3]
    last_lumbar = 25 if 25 in order else 24
    notes = []
    if u != _L1:
        notes.append(_why_missing("L1", order, reasons))
    if not to_s1 and low != last_lumbar:
        notes.append(_why_missing(level_name(last_lumbar), order, reasons))
    standard = not notes
    if _S1 in order and not to_s1:
        notes.append(_why_missing("S1", order, reasons))
    reason = None
    if notes:
        span_text = f"{level_name(u)}-{level_name(low)}"
        if standard:
            reason = f"{'; '.join(notes)}: measured to the inferior endplate of {level_name(low)}"
        else:
            std = "L1-S1" if _S1 in order else f"L1-{level_name(last_lumbar)}"
            reason = (
                f"{std} not available ({'; '.join(notes)}): measured over {span_text} instead, "
                f"not comparable with {std} norms"
            )
    return SagittalAngle(
        "lumbar_lordosis",
        lower_deg - angles[u][1],
        level_name(u),
        "superior",
        level_name(low),
        "superior" if to_s1 else "inferior",
        standard,
        reason,
    )
