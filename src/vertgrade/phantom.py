"""A synthetic spine CT whose vertebral body heights are known exactly.

The phantom is the ground truth of the demo and of every accuracy test: a stack of thoracic and
lumbar vertebrae along a curved spine, inside a soft-tissue trunk, rasterised onto any voxel grid
(axis order and signs, anisotropic spacing, oblique in-plane rotation), with optional compression
fractures of known type and severity.

Geometry
--------
Each vertebra lives in a :class:`~vertgrade.geometry.frames.LocalFrame` whose ``si`` axis is the
tangent of the spine curve at the body centre (world coordinates are RAS+ mm). In local
coordinates ``(u, a, l)`` = ``(si, ap, lr)`` mm the body is described analytically
(:class:`BodyGeometry`):

- the axial footprint is an ellipse (``semi_lr_mm`` x ``semi_ap_mm``) cut by a flat posterior
  wall that is slightly concave at the midline;
- the superior and inferior endplates are surfaces ``u = z_sup(a, l)`` and ``u = z_inf(a, l)``;
  the height map is ``h(a, l) = z_sup - z_inf``: linear in ``a`` (level-typical wedging) minus a
  smooth central depression of each endplate;
- posterior elements (same label): a neural arch (pedicles and lamina) around an empty canal
  behind the body, a spinous process and two transverse processes; they never enter the body's
  footprint.

The true heights are region means of the height map over the masks of
:func:`vertgrade.regions.footprint_regions`, evaluated on a 0.25 mm grid over the footprint
(:data:`TRUTH_STEP_MM`): the very definition the measurement uses.

Healthy heights follow :func:`vertgrade.levels.normative_shape` times ``scale`` times a small
seeded per-vertebra factor: the three parameters of each height map (height, AP slope, endplate
depression) are solved so that the healthy anterior, middle and posterior thirds match the
normative heights exactly (the 4 % lower middle height takes a central depression of about
1 mm per endplate).

Fractures remove ``k * profile(a, l)`` mm from each column (never more than 90 % of it), with
``k`` solved (Brent's method on the same grid) so that the most affected third loses exactly the
severity:

- wedge: the superior endplate drops linearly in ``a``, from 0 at the posterior edge to the
  anterior edge of the regions' antero-posterior extent: the anterior third loses the severity
  (and the middle and posterior thirds about 2/3 and 1/4 of it);
- biconcave: a smooth central dome ``(1 - rho^2)^2``, half from each endplate: the middle third
  loses the severity;
- crush: every column loses the same fraction: all thirds lose the severity.

Vertebrae are stacked along the curve's arc length by their healthy central heights plus discs;
a fracture changes its own body only (the posterior elements keep the spine's length and the disc
fills what the body lost), and the fractured body's frame moves along ``si`` to the middle of
its remaining central column.

The spine curve's tangent has a sagittal angle that falls through the thoracic levels
(``kyphosis_deg`` over T1-T12) and rises through the lumbar ones (``lordosis_deg`` over L1-L5),
and optionally a coronal angle that changes by the same amount per level between the end
vertebrae of requested scoliotic curves (:class:`ScoliosisSpec`). Bodies are rigid: both endplates
of a healthy body share its axis's coronal angle, so the Cobb angle between two end vertebrae is
exactly the axis's rotation between them. The true alignment (:class:`AlignmentTruth`) is measured
between the true endplate planes: least-squares planes of the analytic endplate surfaces over the
footprint's core, as the measurement fits them; sagittally they include the bodies' own wedging.

The CT is a layered profile blurred analytically: for a structure with signed distance ``d``,
``v <- v + (shell - v) * Phi(d / s) + (core - shell) * Phi((d - 1 mm) / s)`` with
``s = sqrt(blur^2 + max(spacing)^2 / 12)``, applied in the order trunk (40 HU in air), discs
(90 HU), posterior elements (400 HU), bodies (800 HU cortex around ``trabecular_hu``), then
Gaussian noise.

Examples
--------
>>> ph = make_phantom("L1", ["L1:wedge:0.3"], spacing=2.0, fov_mm=(120, 120), noise_hu=0)
>>> t = ph.truth[0]
>>> t.level, t.type, round(t.loss_anterior, 6), t.grade
('L1', 'wedge', 0.3, 2)
>>> ph.ct.shape == ph.labels.shape == ph.bodies.shape, ph.ct.dtype.name
(True, 'int16')
>>> ph = make_phantom("T4-L4", scoliosis=["T5-T11:right:40"], spacing=3.0, noise_hu=0)
>>> [c.as_text() for c in ph.alignment.curves]
['T4-T5:left:2.222222', 'T5-T11:right:40.000000', 'T11-L4:left:11.111111']
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from vertgrade.alignment import (
    coronal_apex,
    endplate_angles,
    lumbar_lordosis_span,
    thoracic_kyphosis_span,
)
from vertgrade.geometry.frames import LocalFrame
from vertgrade.grading import genant_grade
from vertgrade.levels import label_id, level_name, normative_shape, parse_level_range
from vertgrade.morphometry import EndplatePlane
from vertgrade.regions import REGIONS, FootprintRegions, footprint_regions

__all__ = [
    "MAX_COBB_PER_LEVEL_DEG",
    "MAX_SEVERITY",
    "TRUTH_STEP_MM",
    "AlignmentTruth",
    "BodyGeometry",
    "FootprintGrid",
    "FractureSpec",
    "FractureType",
    "Phantom",
    "ScoliosisSpec",
    "TrueCurve",
    "VertebraTruth",
    "make_phantom",
]

FractureType = Literal["wedge", "biconcave", "crush"]
_FRACTURE_TYPES: tuple[str, ...] = get_args(FractureType)

#: Largest accepted severity (fractional height loss of the most affected third).
MAX_SEVERITY = 0.8
#: Grid step (mm) of the footprint on which the true heights are computed.
TRUTH_STEP_MM = 0.25
#: Largest coronal tilt change (deg) per level inside a requested scoliotic curve: beyond about
#: this, adjacent bodies would touch on the curve's concave side.
MAX_COBB_PER_LEVEL_DEG = 10.0

# A fracture never removes more than this fraction of any single column's height.
_MAX_COLUMN_LOSS = 0.9

# Intensities (HU).
_HU_AIR = -1000.0
_HU_SOFT = 40.0
_HU_DISC = 90.0
_HU_CORTEX = 800.0
_HU_POSTERIOR = 400.0
_CT_RANGE = (-1024, 3071)
_CORTEX_MM = 1.0

# Trunk: an elliptic cylinder along world z centred on x = y = 0 (semi-axes lr, ap in mm); the
# mean of the body centres sits this far anterior (negative: posterior) of the trunk's centre.
_TRUNK_SEMI_MM = (160.0, 120.0)
_SPINE_Y_MM = -25.0
_FOV_MARGIN_MM = 10.0
_Z_MARGIN_MM = 10.0
# Mean sagittal tilt of the imaged segment against the scanner axis (deg), so that no endplate
# is grid-aligned merely because the curve is flat there.
_TABLE_TILT_DEG = 3.0
# Half-width (mm) of the smooth transition from kyphotic to lordotic curvature at T12/L1.
_CURVE_TRANSITION_MM = 10.0
# Beyond the outermost end vertebrae of the requested scoliotic curves the coronal tilt turns
# back at this fraction of the neighbouring curve's rate per level (compensatory curves), so
# that every requested end vertebra is a strict extreme of the tilt.
_COMPENSATION = 1.0 / 3.0
# Discs reach this far (mm) into the neighbouring bodies before the bodies are painted over them,
# so that the endplate edge blends body with disc rather than with soft tissue.
_DISC_OVERLAP_MM = 3.0
# The neural arch may reach this far (mm) anterior of the midline posterior wall, lateral to the
# canal, so that the pedicles join the posterolateral body wall.
_PEDICLE_REACH_MM = 5.0

# Anatomy by level, interpolated in the label id between T1 (8), T12 (19), L3 (22) and L5 (24).
# All lengths in mm (before ``scale``), angles in degrees.
_ANCHOR_LABELS = (8.0, 19.0, 22.0, 24.0)
_ANATOMY: dict[str, tuple[float, float, float, float]] = {
    "body_width": (28.0, 40.0, 48.0, 50.0),
    "body_depth": (16.0, 30.0, 34.0, 35.0),
    "canal_ap": (15.0, 17.0, 17.0, 17.0),
    "canal_lr": (17.0, 18.0, 22.0, 23.0),
    "pedicle_width": (8.0, 9.0, 10.0, 12.0),
    "lamina_thickness": (5.0, 6.0, 7.0, 7.0),
    "spinous_length": (25.0, 28.0, 28.0, 24.0),
    "spinous_angle": (35.0, 25.0, 5.0, 10.0),
    "spinous_half_height": (3.5, 5.0, 9.0, 8.0),
    "spinous_half_width": (3.0, 3.0, 3.5, 3.5),
    "transverse_length": (20.0, 12.0, 22.0, 18.0),
    "transverse_back": (12.0, 8.0, 3.0, 3.0),
    "transverse_half_height": (4.0, 4.0, 4.5, 5.0),
    "transverse_half_thickness": (3.5, 3.5, 3.0, 3.0),
}
# Disc height (mm, before ``scale``) below a vertebra, by the label of the vertebra above.
_DISC_BELOW_MM: dict[int, float] = {19: 7.0, 20: 9.0, 21: 9.5, 22: 10.0, 23: 10.0}
_THORACIC_DISC_MM = 5.0

_Array = NDArray[np.floating[Any]]


def _anatomy(label: int, key: str) -> float:
    return float(np.interp(float(label), _ANCHOR_LABELS, _ANATOMY[key]))


def _disc_below_mm(label: int) -> float:
    return _DISC_BELOW_MM.get(int(label), _THORACIC_DISC_MM)


def _ellipse_sd(x: ArrayLike, y: ArrayLike, rx: float, ry: float) -> _Array:
    """Signed-distance-like value (mm, > 0 inside) of the ellipse ``(x/rx)^2 + (y/ry)^2 < 1``.

    The implicit function divided by its gradient norm: exact in sign, close to the Euclidean
    distance near the outline (which is all that the blur and the cortical shell look at).
    """
    xa, ya = np.asarray(x), np.asarray(y)
    f = (xa / rx) ** 2 + (ya / ry) ** 2 - 1.0
    g = 2.0 * np.sqrt((xa / rx**2) ** 2 + (ya / ry**2) ** 2)
    return -f / np.maximum(g, 1e-6)


def _dome(rho2: _Array) -> _Array:
    """Smooth bump: 1 at ``rho2 = 0``, 0 with zero slope at ``rho2 >= 1``."""
    t = np.maximum(1.0 - rho2, 0.0)
    return t * t


# ---------------------------------------------------------------------------------------------
# Fracture specification and truth records
# ---------------------------------------------------------------------------------------------


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


def _genant_grade(loss: float) -> int:
    """Genant grade of a fractional height loss, rounded to 1e-6 first so that a severity of
    exactly 0.20, 0.25 or 0.40 lands in the higher grade."""
    return genant_grade(round(float(loss), 6))


@dataclass(frozen=True)
class VertebraTruth:
    """Ground truth of one vertebra; the field order is the column order of ``truth.csv``.

    Heights are in mm along the frame's ``si`` axis, region means of the height map over the
    masks of :func:`vertgrade.regions.footprint_regions` (``body`` is the eroded footprint core).
    ``loss_*`` is ``1 - after / before``. ``grade`` is Genant's grade of the largest of the three
    regional losses; ``fractured`` is ``grade > 0`` and ``type`` is ``""`` when not fractured.
    ``severity`` is the requested severity (0 where none was requested). ``centre_*_mm`` is the
    frame origin in world RAS+ mm: the middle of the body's central column (at ``lr = 0`` and the
    footprint's antero-posterior middle), after the fracture.

    Alignment (angles in degrees, signs of :mod:`vertgrade.alignment`): ``superior_*_deg`` and
    ``inferior_*_deg`` are the coronal and sagittal angles of the true endplate planes (the
    least-squares planes of the analytic endplate surfaces, fracture included, over the
    footprint's core: the fit the measurement makes). The study-level truth is repeated on every
    row: ``coronal_curves`` lists every monotone run of the coronal tilt over the phantom's
    levels as ``UPPER-LOWER:SIDE:DEGREES`` joined by ``;`` (empty without scoliosis), and
    ``thoracic_kyphosis_deg`` / ``lumbar_lordosis_deg`` are measured between the endplates of
    ``kyphosis_span`` / ``lordosis_span`` (the spans :mod:`vertgrade.alignment` chooses; ``None``
    and ``""`` where the levels do not allow one). These study-level fields take no part in
    comparing two records (``==``): a fracture elsewhere may change the kyphosis, not this
    vertebra's truth.
    """

    label: int
    level: str
    fractured: bool
    type: str
    severity: float
    grade: int
    height_body_before_mm: float
    height_anterior_before_mm: float
    height_middle_before_mm: float
    height_posterior_before_mm: float
    height_body_after_mm: float
    height_anterior_after_mm: float
    height_middle_after_mm: float
    height_posterior_after_mm: float
    loss_body: float
    loss_anterior: float
    loss_middle: float
    loss_posterior: float
    centre_x_mm: float
    centre_y_mm: float
    centre_z_mm: float
    superior_coronal_deg: float = 0.0
    superior_sagittal_deg: float = 0.0
    inferior_coronal_deg: float = 0.0
    inferior_sagittal_deg: float = 0.0
    # Study-level context, repeated on every row; not part of comparing two vertebrae' truths.
    coronal_curves: str = field(default="", compare=False)
    thoracic_kyphosis_deg: float | None = field(default=None, compare=False)
    kyphosis_span: str = field(default="", compare=False)
    lumbar_lordosis_deg: float | None = field(default=None, compare=False)
    lordosis_span: str = field(default="", compare=False)

    def as_row(self) -> dict[str, Any]:
        """The record as an ordered dict (CSV columns -> Python values)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrueCurve:
    """One true coronal curve of a phantom: a monotone run of the vertebrae's coronal tilt.

    ``cobb_deg`` is the angle between ``upper``'s superior and ``lower``'s inferior true
    endplate (positive); ``apex`` is the vertebra, or ``"T12/L1"`` disc, that
    :func:`vertgrade.alignment.coronal_apex` finds from the true body centres. ``requested`` is
    true when both ends are end vertebrae of requested curves; otherwise the run is a
    compensatory curve, or a requested curve cut by the phantom's levels.
    """

    upper: str
    lower: str
    convex: Convexity
    cobb_deg: float
    apex: str
    requested: bool

    def as_text(self) -> str:
        """``"T5-T11:right:40.000000"``."""
        return f"{self.upper}-{self.lower}:{self.convex}:{self.cobb_deg:.6f}"


@dataclass(frozen=True)
class AlignmentTruth:
    """A phantom's true alignment (degrees; signs of :mod:`vertgrade.alignment`).

    ``curves`` holds every monotone run of the coronal tilt over the phantom's levels, cranial
    first, whatever its size (none without scoliosis). Kyphosis and lordosis are measured
    between the true endplates of ``kyphosis_span`` and ``lordosis_span`` (level names), the
    spans :func:`vertgrade.alignment.thoracic_kyphosis_span` and
    :func:`~vertgrade.alignment.lumbar_lordosis_span` choose; ``None`` where there is none.
    """

    curves: tuple[TrueCurve, ...]
    thoracic_kyphosis_deg: float | None
    kyphosis_span: tuple[str, str] | None
    lumbar_lordosis_deg: float | None
    lordosis_span: tuple[str, str] | None


# ---------------------------------------------------------------------------------------------
# Vertebral body geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FootprintGrid:
    """The body footprint sampled on a regular 2D grid in the local frame.

    Attributes
    ----------
    ap_mm : (A,) float ndarray
        Local ``ap`` coordinate (mm) of the cell centres of axis 0 (posterior -> anterior).
    lr_mm : (L,) float ndarray
        Local ``lr`` coordinate (mm) of the cell centres of axis 1 (left -> right).
    footprint : (A, L) bool ndarray
        Cells whose centre lies inside the footprint.
    regions : FootprintRegions
        Core and thirds of ``footprint`` (see :func:`vertgrade.regions.footprint_regions`).
    step_mm : float
        Cell size.
    """

    ap_mm: NDArray[np.float64]
    lr_mm: NDArray[np.float64]
    footprint: NDArray[np.bool_]
    regions: FootprintRegions
    step_mm: float

    def mesh(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(ap, lr)`` coordinates (mm) of every cell centre, each of shape ``(A, L)``."""
        a, b = np.meshgrid(self.ap_mm, self.lr_mm, indexing="ij")
        return a, b

    def ap_extent_local_mm(self) -> tuple[float, float]:
        """The regions' antero-posterior extent, converted to local ``ap`` mm."""
        lo = float(self.ap_mm[0]) - 0.5 * self.step_mm
        e0, e1 = self.regions.ap_extent_mm
        return lo + e0, lo + e1


@dataclass(frozen=True)
class BodyGeometry:
    """Analytic vertebral body in its local frame (all lengths in mm).

    Local coordinates are ``u`` (along ``si``), ``ap`` and ``lr`` from the frame origin. Methods
    accept arrays of any (matching or broadcastable) shape and return arrays of that shape.

    Attributes
    ----------
    semi_ap_mm, semi_lr_mm : float
        Semi-axes of the footprint ellipse, centred at ``ap = lr = 0``.
    wall_ap_mm : float
        ``ap`` of the flat posterior wall (the ellipse is cut there).
    wall_concavity_mm, wall_half_width_mm : float
        The posterior wall bulges anteriorly by up to ``wall_concavity_mm`` over
        ``|lr| < wall_half_width_mm`` (the concave back of the body facing the canal).
    height_mm, height_slope : float
        Endplate-rim height ``H(ap) = height_mm + height_slope * (ap - dome centre)``.
    depression_mm : float
        Central depression of each healthy endplate.
    fracture : str
        ``""``, ``"wedge"``, ``"biconcave"`` or ``"crush"``.
    fracture_scale : float
        Scale of the fracture's loss profile (solved so the affected third loses the severity).
    ramp_ap_mm : tuple of float
        Posterior and anterior ``ap`` of the wedge ramp (the regions' antero-posterior extent).
    superior_fraction : float
        Share of the lost height taken from the superior endplate (the rest from the inferior).
    offset_mm : float
        Local ``u`` of the healthy body's centre is ``-offset_mm``: the frame origin is the
        middle of the central column (``lr = 0``, ``ap`` = dome centre) of the body as it is,
        which a fracture moves along ``si``.
    """

    semi_ap_mm: float
    semi_lr_mm: float
    wall_ap_mm: float
    wall_concavity_mm: float
    wall_half_width_mm: float
    height_mm: float = 1.0
    height_slope: float = 0.0
    depression_mm: float = 0.0
    fracture: str = ""
    fracture_scale: float = 0.0
    ramp_ap_mm: tuple[float, float] = (0.0, 1.0)
    superior_fraction: float = 1.0
    offset_mm: float = 0.0

    @property
    def dome_centre_ap_mm(self) -> float:
        """``ap`` of the footprint's antero-posterior middle (centre of the endplate domes)."""
        return 0.5 * (self.wall_ap_mm + self.semi_ap_mm)

    @property
    def dome_semi_ap_mm(self) -> float:
        return 0.5 * (self.semi_ap_mm - self.wall_ap_mm)

    def footprint_sd(self, ap: ArrayLike, lr: ArrayLike) -> _Array:
        """Signed distance-like value (mm, > 0 inside) of the axial footprint."""
        a, b = np.asarray(ap), np.asarray(lr)
        wall = self.wall_ap_mm + self.wall_concavity_mm * np.maximum(
            1.0 - (b / self.wall_half_width_mm) ** 2, 0.0
        )
        return np.minimum(_ellipse_sd(a, b, self.semi_ap_mm, self.semi_lr_mm), a - wall)

    def _dome(self, ap: ArrayLike, lr: ArrayLike) -> _Array:
        a, b = np.asarray(ap), np.asarray(lr)
        rho2 = ((a - self.dome_centre_ap_mm) / self.dome_semi_ap_mm) ** 2 + (
            b / self.semi_lr_mm
        ) ** 2
        return _dome(rho2)

    def _rim_height(self, ap: ArrayLike) -> _Array:
        return self.height_mm + self.height_slope * (np.asarray(ap) - self.dome_centre_ap_mm)

    def healthy_height(self, ap: ArrayLike, lr: ArrayLike) -> _Array:
        """Height map (mm) before any fracture."""
        return self._rim_height(ap) - 2.0 * self.depression_mm * self._dome(ap, lr)

    def _profile(self, ap: ArrayLike, lr: ArrayLike) -> _Array:
        """Unscaled loss profile of the fracture (mm per unit of ``fracture_scale``)."""
        a = np.asarray(ap)
        if self.fracture == "wedge":
            lo, hi = self.ramp_ap_mm
            return np.clip((a - lo) / (hi - lo), 0.0, 1.0)
        if self.fracture == "biconcave":
            return self._dome(ap, lr)
        if self.fracture == "crush":
            return self.healthy_height(ap, lr)
        return np.zeros(np.broadcast_shapes(a.shape, np.shape(lr)), dtype=a.dtype)

    def loss_mm(self, ap: ArrayLike, lr: ArrayLike) -> _Array:
        """Height (mm) the fracture removes at each footprint point (0 when unfractured)."""
        h = self.healthy_height(ap, lr)
        if not self.fracture:
            return np.zeros_like(h)
        return np.minimum(self.fracture_scale * self._profile(ap, lr), _MAX_COLUMN_LOSS * h)

    def superior(self, ap: ArrayLike, lr: ArrayLike, *, fractured: bool = True) -> _Array:
        """Local ``u`` (mm) of the superior endplate."""
        z = 0.5 * self._rim_height(ap) - self.depression_mm * self._dome(ap, lr) - self.offset_mm
        if fractured and self.fracture:
            z = z - self.superior_fraction * self.loss_mm(ap, lr)
        return z

    def inferior(self, ap: ArrayLike, lr: ArrayLike, *, fractured: bool = True) -> _Array:
        """Local ``u`` (mm) of the inferior endplate."""
        z = -0.5 * self._rim_height(ap) + self.depression_mm * self._dome(ap, lr) - self.offset_mm
        if fractured and self.fracture:
            z = z + (1.0 - self.superior_fraction) * self.loss_mm(ap, lr)
        return z

    def height(self, ap: ArrayLike, lr: ArrayLike, *, fractured: bool = True) -> _Array:
        """Height map ``superior - inferior`` (mm) along ``si``."""
        h = self.healthy_height(ap, lr)
        return h - self.loss_mm(ap, lr) if fractured else h

    def sd(self, u: ArrayLike, ap: ArrayLike, lr: ArrayLike) -> _Array:
        """Signed distance-like value (mm, > 0 inside) of the (fractured) body."""
        uu = np.asarray(u)
        return np.minimum(
            self.footprint_sd(ap, lr),
            np.minimum(self.superior(ap, lr) - uu, uu - self.inferior(ap, lr)),
        )

    def footprint_grid(self, step_mm: float = TRUTH_STEP_MM) -> FootprintGrid:
        """Sample the footprint on a grid of ``step_mm`` cells, with 1 mm of empty border.

        The ``lr`` cell centres are symmetric about 0, so that the central band of the regions is
        centred on the body.
        """
        a0 = self.wall_ap_mm - 1.0
        n_ap = math.ceil((self.semi_ap_mm + 1.0 - a0) / step_mm)
        n_lr = 2 * math.ceil((self.semi_lr_mm + 1.0) / step_mm)
        ap = np.asarray(a0 + (np.arange(n_ap) + 0.5) * step_mm, dtype=np.float64)
        lr = np.asarray((np.arange(n_lr) + 0.5 - 0.5 * n_lr) * step_mm, dtype=np.float64)
        a, b = np.meshgrid(ap, lr, indexing="ij")
        fp = self.footprint_sd(a, b) > 0
        return FootprintGrid(ap, lr, fp, footprint_regions(fp, step_mm=step_mm), step_mm)


def _region_means(values: _Array, regions: FootprintRegions) -> dict[str, float]:
    return {r: float(values[regions.mask(r)].mean()) for r in ("body", *REGIONS)}


@dataclass(frozen=True)
class _Body:
    """A solved body: its geometry and its regional heights (mm) before and after."""

    geometry: BodyGeometry
    before: dict[str, float]
    after: dict[str, float]


def _build_body(label: int, scale: float, factor: float, fracture: FractureSpec | None) -> _Body:
    """Shape one body: footprint from the level table, heights solved against the norm."""
    width = _anatomy(label, "body_width") * scale
    depth = _anatomy(label, "body_depth") * scale
    flat, concave = 0.12 * depth, 0.04 * depth
    semi_ap = 0.5 * (depth + flat + concave)  # midline depth from the wall to the front = depth
    semi_lr = 0.5 * width
    wall_ap = -semi_ap + flat
    flat_half_width = semi_lr * math.sqrt(1.0 - (wall_ap / semi_ap) ** 2)
    canal_half = 0.5 * _anatomy(label, "canal_lr") * scale
    geo = BodyGeometry(
        semi_ap_mm=semi_ap,
        semi_lr_mm=semi_lr,
        wall_ap_mm=wall_ap,
        wall_concavity_mm=concave,
        wall_half_width_mm=min(canal_half, 0.85 * flat_half_width),
    )
    grid = geo.footprint_grid()
    regions = grid.regions
    a, b = grid.mesh()

    # Healthy height map h = h0 + h1 * (a - a_mid) - 2 c D(a, l): its three regional means are
    # linear in (h0, h1, c); solve them to equal the normative shape.
    norm = normative_shape(label)
    target = np.array([norm.anterior_mm, norm.middle_mm, norm.posterior_mm]) * scale * factor
    da = a - geo.dome_centre_ap_mm
    dome = geo._dome(a, b)
    system = np.array(
        [
            [1.0, float(da[regions.mask(r)].mean()), -2.0 * float(dome[regions.mask(r)].mean())]
            for r in REGIONS
        ]
    )
    h0, h1, c = np.linalg.solve(system, target)
    geo = dataclasses.replace(
        geo, height_mm=float(h0), height_slope=float(h1), depression_mm=float(c)
    )

    if fracture is not None and fracture.severity > 0:
        kind = fracture.type
        geo = dataclasses.replace(
            geo,
            fracture=kind,
            ramp_ap_mm=grid.ap_extent_local_mm(),
            superior_fraction=0.5 if kind == "biconcave" else 1.0,
        )
        region = {"wedge": "anterior", "biconcave": "middle", "crush": "anterior"}[kind]
        mask = regions.mask(region)
        h_region = float(geo.healthy_height(a, b)[mask].mean())

        def excess(k: float) -> float:
            trial = dataclasses.replace(geo, fracture_scale=k)
            return float(trial.loss_mm(a, b)[mask].mean()) / h_region - fracture.severity

        profile_mean = float(geo._profile(a, b)[mask].mean())
        hi = fracture.severity * h_region / profile_mean
        while excess(hi) < 0:
            hi *= 1.5
        k = optimize.brentq(excess, 0.0, hi, xtol=1e-13, rtol=1e-13)
        geo = dataclasses.replace(geo, fracture_scale=float(k))

    # Frame origin: the middle of the central column (lr = 0, AP middle of the footprint) of the
    # body as it is, fractured or not; healthy, that is the centre of the healthy body.
    a_mid = geo.dome_centre_ap_mm
    offset = 0.5 * float(geo.superior(a_mid, 0.0) + geo.inferior(a_mid, 0.0))
    geo = dataclasses.replace(geo, offset_mm=offset)
    before = _region_means(geo.height(a, b, fractured=False), regions)
    after = _region_means(geo.height(a, b), regions)
    return _Body(geo, before, after)


def _true_endplates(geo: BodyGeometry, frame: LocalFrame) -> tuple[EndplatePlane, EndplatePlane]:
    """Least-squares planes of the analytic (fractured) endplate surfaces over the footprint's
    core, the columns :func:`vertgrade.morphometry.endplate_planes` fits; the point lies over the
    core's centre, the normal points along ``+si``."""
    grid = geo.footprint_grid()
    a, b = grid.mesh()
    core = grid.regions.body
    ap, lr = a[core], b[core]
    design = np.column_stack([np.ones(ap.size), ap, lr])
    ap_c, lr_c = float(ap.mean()), float(lr.mean())
    planes = []
    for surface in (geo.superior(ap, lr), geo.inferior(ap, lr)):
        coef = np.linalg.lstsq(design, surface, rcond=None)[0]
        n_local = np.array([1.0, -coef[1], -coef[2]])
        n_local /= np.linalg.norm(n_local)
        z = float(coef[0] + coef[1] * ap_c + coef[2] * lr_c)
        point = frame.to_world(np.array([[z, ap_c, lr_c]]))[0]
        normal = n_local @ frame.rotation
        planes.append(EndplatePlane(point, normal / np.linalg.norm(normal)))
    return planes[0], planes[1]


def _truth(
    label: int,
    body: _Body,
    fracture: FractureSpec | None,
    frame: LocalFrame,
    planes: tuple[EndplatePlane, EndplatePlane],
) -> VertebraTruth:
    sup_cor, sup_sag = endplate_angles(planes[0].normal)
    inf_cor, inf_sag = endplate_angles(planes[1].normal)
    before, after = body.before, body.after
    loss = {r: 1.0 - after[r] / before[r] for r in before}
    grade = _genant_grade(max(loss[r] for r in REGIONS))
    fractured = grade > 0
    x, y, z = (float(v) for v in frame.origin)
    return VertebraTruth(
        label=int(label),
        level=level_name(label),
        fractured=fractured,
        type=fracture.type if (fractured and fracture is not None) else "",
        severity=fracture.severity if fracture is not None else 0.0,
        grade=grade,
        height_body_before_mm=before["body"],
        height_anterior_before_mm=before["anterior"],
        height_middle_before_mm=before["middle"],
        height_posterior_before_mm=before["posterior"],
        height_body_after_mm=after["body"],
        height_anterior_after_mm=after["anterior"],
        height_middle_after_mm=after["middle"],
        height_posterior_after_mm=after["posterior"],
        loss_body=loss["body"],
        loss_anterior=loss["anterior"],
        loss_middle=loss["middle"],
        loss_posterior=loss["posterior"],
        centre_x_mm=x,
        centre_y_mm=y,
        centre_z_mm=z,
        superior_coronal_deg=sup_cor,
        superior_sagittal_deg=sup_sag,
        inferior_coronal_deg=inf_cor,
        inferior_sagittal_deg=inf_sag,
    )


def _alignment_truth(
    labels: Sequence[int],
    truth: dict[int, VertebraTruth],
    frames: dict[int, LocalFrame],
    tilts_deg: NDArray[np.float64] | None,
    knots: Sequence[int],
) -> AlignmentTruth:
    """Study-level truth from the true endplate angles.

    The coronal runs are cut at the requested curves' end vertebrae (the tilt's turning points,
    by construction) and at the first and last level.
    """
    curves = []
    if tilts_deg is not None:
        inside = [k for k in knots if labels[0] < k < labels[-1]]
        cuts = [labels[0], *inside, labels[-1]]
        for up, low in itertools.pairwise(cuts):
            cobb = truth[low].inferior_coronal_deg - truth[up].superior_coronal_deg
            if abs(cobb) < 1e-9:
                continue
            convex: Convexity = "right" if cobb > 0 else "left"
            run = list(range(up, low + 1))
            i, j, _ = coronal_apex(np.stack([frames[k].origin for k in run]), convex)
            apex = level_name(run[i]) if i == j else f"{level_name(run[i])}/{level_name(run[j])}"
            curves.append(
                TrueCurve(
                    level_name(up),
                    level_name(low),
                    convex,
                    abs(cobb),
                    apex,
                    requested=up in knots and low in knots,
                )
            )
    kyphosis = lordosis = None
    k_span = thoracic_kyphosis_span(labels)
    if k_span is not None:
        kyphosis = truth[k_span[0]].superior_sagittal_deg - truth[k_span[1]].inferior_sagittal_deg
    l_span = lumbar_lordosis_span(labels)
    if l_span is not None:  # no S1 in the phantom: always to the last lumbar's inferior endplate
        lordosis = truth[l_span[1]].inferior_sagittal_deg - truth[l_span[0]].superior_sagittal_deg
    return AlignmentTruth(
        curves=tuple(curves),
        thoracic_kyphosis_deg=kyphosis,
        kyphosis_span=None if k_span is None else (level_name(k_span[0]), level_name(k_span[1])),
        lumbar_lordosis_deg=lordosis,
        lordosis_span=None if l_span is None else (level_name(l_span[0]), level_name(l_span[1])),
    )


# ---------------------------------------------------------------------------------------------
# Structures to rasterise
# ---------------------------------------------------------------------------------------------

_Coords = tuple[_Array, _Array, _Array]


@dataclass(frozen=True)
class _Part:
    """One analytic shape: its frames, world corners bounding it, and its signed distance.

    ``sd`` receives, for each frame, the local ``(u, ap, lr)`` coordinates of the voxel centres.
    """

    frames: tuple[LocalFrame, ...]
    corners: NDArray[np.float64]
    sd: Callable[[Sequence[_Coords]], _Array]


def _box_corners(
    frame: LocalFrame, lo: Sequence[float], hi: Sequence[float]
) -> NDArray[np.float64]:
    """World positions (8, 3) of the corners of a local box ``lo..hi`` (``(u, ap, lr)`` mm)."""
    local = np.array(
        [
            [(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
            for i in (0, 1)
            for j in (0, 1)
            for k in (0, 1)
        ],
        dtype=float,
    )
    return frame.to_world(local)


def _capsule_sd(
    c: _Coords,
    start: Sequence[float],
    direction: Sequence[float],
    length: float,
    axis1: Sequence[float],
    axis2: Sequence[float],
    r1: float,
    r2: float,
) -> _Array:
    """Signed distance-like value of a rod with elliptical section (semi-axes ``r1``, ``r2``).

    All vectors are in local ``(u, ap, lr)``; ``direction``, ``axis1``, ``axis2`` orthonormal. The
    ends are rounded with radius ``min(r1, r2)``.
    """
    p = [c[i] - start[i] for i in range(3)]
    t = p[0] * direction[0] + p[1] * direction[1] + p[2] * direction[2]
    qt = t - np.clip(t, 0.0, length)
    q1 = p[0] * axis1[0] + p[1] * axis1[1] + p[2] * axis1[2]
    q2 = p[0] * axis2[0] + p[1] * axis2[1] + p[2] * axis2[2]
    rc = min(r1, r2)
    f = (qt / rc) ** 2 + (q1 / r1) ** 2 + (q2 / r2) ** 2 - 1.0
    g = 2.0 * np.sqrt((qt / rc**2) ** 2 + (q1 / r1**2) ** 2 + (q2 / r2**2) ** 2)
    return -f / np.maximum(g, 1e-6)


def _capsule_box(
    start: Sequence[float], direction: Sequence[float], length: float, radius: float
) -> tuple[list[float], list[float]]:
    end = [start[i] + length * direction[i] for i in range(3)]
    lo = [min(start[i], end[i]) - radius for i in range(3)]
    hi = [max(start[i], end[i]) + radius for i in range(3)]
    return lo, hi


def _posterior_parts(
    label: int, scale: float, geo: BodyGeometry, frame: LocalFrame, margin: float
) -> list[_Part]:
    """Neural arch (pedicles + lamina around the canal), spinous and transverse processes.

    They sit where they would on the healthy body (whose centre is at local ``u = -offset``): a
    fracture changes the body only.
    """
    s = scale
    canal_ap = _anatomy(label, "canal_ap") * s
    canal_half = 0.5 * _anatomy(label, "canal_lr") * s
    pedicle = _anatomy(label, "pedicle_width") * s
    lamina = _anatomy(label, "lamina_thickness") * s
    wall = geo.wall_ap_mm + geo.wall_concavity_mm  # midline posterior wall
    # Arch level: the upper part of the healthy body.
    u_arch = 0.12 * geo.height_mm - geo.offset_mm
    arch_half = 0.35 * geo.height_mm
    reach = _PEDICLE_REACH_MM * s

    def arch_sd(coords: Sequence[_Coords]) -> _Array:
        u, a, b = coords[0]
        da = a - wall
        outer = _ellipse_sd(da, b, canal_ap + lamina, canal_half + pedicle)
        inner = _ellipse_sd(da, b, canal_ap, canal_half)
        out = np.minimum(outer, -inner)
        out = np.minimum(out, (wall + reach) - a)
        out = np.minimum(out, -geo.footprint_sd(a, b))
        return np.minimum(out, arch_half - np.abs(u - u_arch))

    half_lr = canal_half + pedicle + margin
    lo = [u_arch - arch_half - margin, wall - canal_ap - lamina - margin, -half_lr]
    hi = [u_arch + arch_half + margin, wall + reach + margin, half_lr]
    parts = [_Part((frame,), _box_corners(frame, lo, hi), arch_sd)]

    # Spinous process: from the lamina's midline, posteriorly and caudally.
    ang = math.radians(_anatomy(label, "spinous_angle"))
    sp_start = (u_arch, wall - canal_ap - 0.5 * lamina, 0.0)
    sp_dir = (-math.sin(ang), -math.cos(ang), 0.0)
    sp_ax1 = (math.cos(ang), -math.sin(ang), 0.0)
    sp_len = _anatomy(label, "spinous_length") * s
    sp_r1 = _anatomy(label, "spinous_half_height") * s
    sp_r2 = _anatomy(label, "spinous_half_width") * s

    def spinous_sd(coords: Sequence[_Coords]) -> _Array:
        return _capsule_sd(
            coords[0], sp_start, sp_dir, sp_len, sp_ax1, (0.0, 0.0, 1.0), sp_r1, sp_r2
        )

    lo, hi = _capsule_box(sp_start, sp_dir, sp_len, max(sp_r1, sp_r2) + margin)
    parts.append(_Part((frame,), _box_corners(frame, lo, hi), spinous_sd))

    # Transverse processes: from the arch's lateral walls, laterally (and back, in the thorax).
    tp_len = _anatomy(label, "transverse_length") * s
    tp_back = _anatomy(label, "transverse_back") * s
    tp_r1 = _anatomy(label, "transverse_half_height") * s
    tp_r2 = _anatomy(label, "transverse_half_thickness") * s
    for side in (-1.0, 1.0):
        start = (u_arch, wall - 0.35 * canal_ap, side * (canal_half + 0.5 * pedicle))
        # The tip lies tp_len beyond the arch's outer wall.
        vec = np.array([0.0, -tp_back, side * (0.5 * pedicle + tp_len)])
        length = float(np.linalg.norm(vec))
        d = [float(v) for v in vec / length]
        ax1 = [1.0, 0.0, 0.0]
        ax2 = [float(v) for v in np.cross(d, ax1)]

        def tp_sd(
            coords: Sequence[_Coords],
            start: tuple[float, float, float] = start,
            d: list[float] = d,
            length: float = length,
            ax1: list[float] = ax1,
            ax2: list[float] = ax2,
        ) -> _Array:
            return _capsule_sd(coords[0], start, d, length, ax1, ax2, tp_r1, tp_r2)

        lo, hi = _capsule_box(start, d, length, max(tp_r1, tp_r2) + margin)
        parts.append(_Part((frame,), _box_corners(frame, lo, hi), tp_sd))
    return parts


def _body_part(geo: BodyGeometry, frame: LocalFrame, margin: float, grid: FootprintGrid) -> _Part:
    a, b = grid.mesh()
    fp = grid.footprint
    u_lo = float(geo.inferior(a, b)[fp].min()) - margin
    u_hi = float(geo.superior(a, b)[fp].max()) + margin
    lo = [u_lo, geo.wall_ap_mm - margin, -geo.semi_lr_mm - margin]
    hi = [u_hi, geo.semi_ap_mm + margin, geo.semi_lr_mm + margin]

    def body_sd(coords: Sequence[_Coords]) -> _Array:
        return geo.sd(*coords[0])

    return _Part((frame,), _box_corners(frame, lo, hi), body_sd)


def _disc_part(upper: _Part, lower: _Part, geo_up: BodyGeometry, geo_lo: BodyGeometry) -> _Part:
    """The disc fills the gap between two bodies within both footprints."""
    ext = _DISC_OVERLAP_MM

    def disc_sd(coords: Sequence[_Coords]) -> _Array:
        (u1, a1, b1), (u2, a2, b2) = coords
        out = np.minimum(geo_up.inferior(a1, b1) - u1, u2 - geo_lo.superior(a2, b2)) + ext
        out = np.minimum(out, geo_up.footprint_sd(a1, b1))
        return np.minimum(out, geo_lo.footprint_sd(a2, b2))

    corners = np.concatenate([upper.corners, lower.corners])
    return _Part((upper.frames[0], lower.frames[0]), corners, disc_sd)


# ---------------------------------------------------------------------------------------------
# Spine curve
# ---------------------------------------------------------------------------------------------


def _log_cosh(x: NDArray[np.float64]) -> NDArray[np.float64]:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - math.log(2.0)


def _nominal_span_mm(labels: range, scale: float) -> float:
    total = 0.0
    for lab in labels:
        ant, _, post = normative_shape(lab).as_tuple()
        total += 0.5 * (ant + post) * scale
        if lab != labels[-1]:
            total += _disc_below_mm(lab) * scale
    return total


def _spine_frames(
    labels: Sequence[int],
    s_nodes: NDArray[np.float64],
    scale: float,
    kyphosis_deg: float,
    lordosis_deg: float,
    coronal_deg: NDArray[np.float64] | None = None,
) -> list[LocalFrame]:
    """Frames on the spine curve through the healthy body centres at arc lengths ``s_nodes``.

    Without ``coronal_deg`` the curve is sagittal: the superior tangent is ``(0, sin t, cos t)``;
    ``t`` falls through the thoracic levels by ``kyphosis_deg`` over the whole T1-T12 span and
    rises through the lumbar levels by ``lordosis_deg`` over L1-L5, with a smooth change of
    curvature at the T12/L1 disc. With the coronal tilt ``c`` of each node (deg, interpolated
    linearly in arc length between nodes) the tangent is ``(tan c, tan t, 1)`` normalised, whose
    coronal and sagittal projections make exactly the angles ``c`` and ``t`` with the vertical.
    """
    k_t = -math.radians(kyphosis_deg) / _nominal_span_mm(range(8, 20), scale)
    k_l = math.radians(lordosis_deg) / _nominal_span_mm(range(20, 25), scale)
    labs = list(labels)
    if 19 in labs and 20 in labs:
        s_j = 0.5 * (s_nodes[labs.index(19)] + s_nodes[labs.index(20)])
    elif labs[-1] <= 19:
        s_j = float(s_nodes[-1]) + 1e4
    else:
        s_j = float(s_nodes[0]) - 1e4
    w = _CURVE_TRANSITION_MM

    def angle(s: NDArray[np.float64]) -> NDArray[np.float64]:
        return k_t * s + 0.5 * (k_l - k_t) * (s + w * _log_cosh((s - s_j) / w))

    theta0 = math.radians(_TABLE_TILT_DEG) - float(np.mean(angle(s_nodes)))
    s_lo, s_hi = float(s_nodes[0]), float(s_nodes[-1])
    s_fine = np.linspace(s_lo, s_hi, max(2, int((s_hi - s_lo) / 0.02) + 1))
    th = theta0 + angle(s_fine)
    th_n = theta0 + angle(s_nodes)
    ds = np.diff(s_fine)
    if coronal_deg is None:
        # Going caudal (increasing s) moves along the inferior direction -(0, sin t, cos t).
        dy, dz = -np.sin(th), -np.cos(th)
    else:
        c_fine = np.radians(np.interp(s_fine, s_nodes, coronal_deg))
        tx, ty = np.tan(c_fine), np.tan(th)
        norm = np.sqrt(1.0 + tx**2 + ty**2)
        dx, dy, dz = -tx / norm, -ty / norm, -1.0 / norm
        x = np.r_[0.0, np.cumsum(0.5 * (dx[1:] + dx[:-1]) * ds)]
        xn = np.interp(s_nodes, s_fine, x)
        xn -= xn.mean()
    y = np.r_[0.0, np.cumsum(0.5 * (dy[1:] + dy[:-1]) * ds)]
    z = np.r_[0.0, np.cumsum(0.5 * (dz[1:] + dz[:-1]) * ds)]
    yn, zn = np.interp(s_nodes, s_fine, y), np.interp(s_nodes, s_fine, z)
    yn += _SPINE_Y_MM - yn.mean()
    zn -= zn.mean()
    if coronal_deg is None:
        return [
            LocalFrame.from_axes([0.0, yy, zz], si=[0.0, math.sin(t), math.cos(t)])
            for yy, zz, t in zip(yn, zn, th_n, strict=True)
        ]
    c_n = np.radians(np.asarray(coronal_deg, dtype=float))
    return [
        LocalFrame.from_axes([xx, yy, zz], si=[math.tan(c), math.tan(t), 1.0])
        for xx, yy, zz, c, t in zip(xn, yn, zn, c_n, th_n, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Voxel grid and rasterisation
# ---------------------------------------------------------------------------------------------

_AXIS_LETTERS = {
    "R": (0, 1.0),
    "L": (0, -1.0),
    "A": (1, 1.0),
    "P": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}


def _parse_orientation(orientation: str) -> list[tuple[int, float]]:
    code = str(orientation).strip().upper()
    if len(code) != 3 or any(ch not in _AXIS_LETTERS for ch in code):
        raise ValueError(f"orientation {orientation!r} must be three of R/L, A/P, S/I, e.g. RAS")
    axes = [_AXIS_LETTERS[ch] for ch in code]
    if sorted(ax for ax, _ in axes) != [0, 1, 2]:
        raise ValueError(f"orientation {orientation!r} names a physical axis twice")
    return axes


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def inverse(self) -> NDArray[np.float64]:
        return np.asarray(np.linalg.inv(self.affine), dtype=np.float64)

    def index_box(self, corners: NDArray[np.float64]) -> tuple[slice, slice, slice] | None:
        inv = self.inverse
        ijk = corners @ inv[:3, :3].T + inv[:3, 3]
        lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.shape)
        if np.any(lo >= hi):
            return None
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))

    def local(self, box: tuple[slice, slice, slice], frame: LocalFrame) -> _Coords:
        """Local ``(u, ap, lr)`` (float32 mm) of the voxel centres of ``box``."""
        rot = frame.rotation
        m = rot @ self.affine[:3, :3]
        off = rot @ (self.affine[:3, 3] - frame.origin)
        idx = [np.arange(sl.start, sl.stop, dtype=np.float64) for sl in box]
        out = []
        for q in range(3):
            c0 = (off[q] + m[q, 0] * idx[0]).astype(np.float32)[:, None, None]
            c1 = (m[q, 1] * idx[1]).astype(np.float32)[None, :, None]
            c2 = (m[q, 2] * idx[2]).astype(np.float32)[None, None, :]
            out.append(c0 + c1 + c2)
        return out[0], out[1], out[2]


def _paint(
    grid: _Grid,
    ct: NDArray[np.int16],
    parts: Sequence[_Part],
    *,
    sigma: float,
    hu: float,
    core_hu: float | None = None,
    label: int = 0,
    label_volumes: Sequence[NDArray[np.uint8]] = (),
) -> None:
    """Blend the union of ``parts`` into ``ct`` (layered, blurred profile) and label it.

    With ``core_hu`` the structure is a ``_CORTEX_MM`` shell of ``hu`` around a core of
    ``core_hu``; otherwise it is uniform ``hu``. Voxels whose centre is inside get ``label``.
    """
    boxes = [grid.index_box(p.corners) for p in parts]
    live = [(p, b) for p, b in zip(parts, boxes, strict=True) if b is not None]
    if not live:
        return
    lo = [min(b[d].start for _, b in live) for d in range(3)]
    hi = [max(b[d].stop for _, b in live) for d in range(3)]
    union = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    sd = np.full([h - low for low, h in zip(lo, hi, strict=True)], -1e3, dtype=np.float32)
    for part, box in live:
        coords = [grid.local(box, f) for f in part.frames]
        sub = tuple(slice(b.start - low, b.stop - low) for b, low in zip(box, lo, strict=True))
        np.maximum(sd[sub], part.sd(coords), out=sd[sub])
    region = ct[union].astype(np.float32)
    alpha = special.ndtr(sd / np.float32(sigma))
    region += alpha * (np.float32(hu) - region)
    if core_hu is not None:
        inner = special.ndtr((sd - np.float32(_CORTEX_MM)) / np.float32(sigma))
        region += np.float32(core_hu - hu) * inner
    ct[union] = np.rint(np.clip(region, *_CT_RANGE)).astype(np.int16)
    inside = sd > 0
    for vol in label_volumes:
        view = vol[union]
        view[inside] = label


# ---------------------------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rasterised phantom and its ground truth.

    Attributes
    ----------
    ct : (X, Y, Z) int16 ndarray
        Intensities in HU.
    labels : (X, Y, Z) uint8 ndarray
        VerSe label of each vertebra (body and posterior elements); 0 elsewhere (discs too).
    bodies : (X, Y, Z) uint8 ndarray
        The same labels restricted to the vertebral bodies.
    affine : (4, 4) float64 ndarray
        Voxel indices -> world RAS+ mm.
    truth : tuple of VertebraTruth
        One record per vertebra, cranial to caudal.
    frames : dict of int to LocalFrame
        Each vertebra's local frame (origin = body centre, ``si`` = spine tangent).
    geometry : dict of int to BodyGeometry
        The analytic body shape behind the truth, in the frame's local coordinates.
    endplates : dict of int to (EndplatePlane, EndplatePlane)
        Each vertebra's true superior and inferior endplate planes (world RAS+ mm, normals
        pointing to the head): the least-squares planes of the analytic surfaces over the
        footprint's core.
    alignment : AlignmentTruth or None
        True coronal curves, thoracic kyphosis and lumbar lordosis.
    """

    ct: NDArray[np.int16]
    labels: NDArray[np.uint8]
    bodies: NDArray[np.uint8]
    affine: NDArray[np.float64]
    truth: tuple[VertebraTruth, ...]
    frames: dict[int, LocalFrame]
    geometry: dict[int, BodyGeometry] = field(default_factory=dict, repr=False)
    endplates: dict[int, tuple[EndplatePlane, EndplatePlane]] = field(
        default_factory=dict, repr=False
    )
    alignment: AlignmentTruth | None = field(default=None, repr=False)

    def truth_rows(self) -> list[dict[str, Any]]:
        """Truth records as dicts, keys in ``truth.csv`` column order."""
        return [t.as_row() for t in self.truth]


def _parse_levels(levels: str | Iterable[str | int]) -> list[int]:
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


def _coronal_tilts_deg(specs: Sequence[ScoliosisSpec]) -> NDArray[np.float64]:
    """Coronal tilt (deg) of the vertebral axes of T1-L5 (labels 8-24, in that order).

    Linear in the level between the end vertebrae of the requested curves (rising caudally
    through a right-convex curve); beyond the outermost ends it turns back at
    ``_COMPENSATION`` times the neighbouring curve's rate; the mean over T1-L5 is zero.
    """
    levels = np.arange(8, 25, dtype=float)
    if not specs:
        return np.zeros(levels.size)
    xs = [float(specs[0].upper_label)]
    cs = [0.0]
    for c in specs:
        xs.append(float(c.lower_label))
        cs.append(cs[-1] + (c.cobb_deg if c.convex == "right" else -c.cobb_deg))
    tilt = np.interp(levels, xs, cs)
    first = (cs[1] - cs[0]) / (xs[1] - xs[0])
    last = (cs[-1] - cs[-2]) / (xs[-1] - xs[-2])
    tilt += np.where(levels < xs[0], _COMPENSATION * first * (xs[0] - levels), 0.0)
    tilt -= np.where(levels > xs[-1], _COMPENSATION * last * (levels - xs[-1]), 0.0)
    return np.asarray(tilt - tilt.mean(), dtype=np.float64)


def _as_triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (3,))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(arr[0]), float(arr[1]), float(arr[2])


def _fov_centre(fov: float, lo: float, hi: float) -> float:
    """Centre of a window of width ``fov`` on one axis: the trunk's (0) if the spine fits."""
    if fov >= hi - lo:
        return float(np.clip(0.0, hi - 0.5 * fov, lo + 0.5 * fov))
    return 0.5 * (lo + hi)


def make_phantom(
    levels: str | Iterable[str] = "T10-L3",
    fractures: str | Iterable[FractureSpec | str] = (),
    *,
    orientation: str = "RAS",
    spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
    oblique_deg: float = 0.0,
    fov_mm: tuple[float, float] | None = None,
    seed: int = 0,
    noise_hu: float = 20.0,
    blur_mm: float = 0.6,
    scale: float = 1.0,
    jitter: float = 0.005,
    trabecular_hu: float = 180.0,
    kyphosis_deg: float = 40.0,
    lordosis_deg: float = 45.0,
    scoliosis: str | Iterable[ScoliosisSpec | str] = (),
) -> Phantom:
    """Build a synthetic spine CT with exactly known vertebral body heights.

    Parameters
    ----------
    levels : str or sequence of str
        Contiguous levels within T1-L5: a range ``"T10-L3"`` or level names.
    fractures : str or iterable of FractureSpec or str
        Fractures, e.g. ``["L1:wedge:0.35", "L2:biconcave:0.25"]`` or the same as one
        comma-separated string; at most one per level.
    orientation : str
        Axis codes of the array axes, any permutation and sign of R/L, A/P, S/I (``"RAS"``,
        ``"LPS"``, ``"PIR"``...): axis ``k`` points towards the ``k``-th letter.
    spacing : float or (3,) sequence of float
        Voxel size (mm) along each array axis.
    oblique_deg : float
        Rotation of the grid about the S axis (deg): the affine becomes oblique.
    fov_mm : (float, float), optional
        Axial field of view ``(lr, ap)`` in mm along the grid's in-plane axes. Default: the trunk
        (320 x 240 mm) plus 10 mm on each side. A smaller field is centred on the trunk when the
        spine fits in it, else on the spine.
    seed : int
        Seed of the noise (``np.random.default_rng(seed)``) and of the per-vertebra jitter.
    noise_hu : float
        Standard deviation of the additive Gaussian noise (HU).
    blur_mm : float
        Standard deviation of the scanner's Gaussian blur (mm); the partial-volume term
        ``max(spacing)^2 / 12`` is added in quadrature.
    scale : float
        Patient size factor applied to every length of the spine.
    jitter : float
        Relative standard deviation of a per-vertebra height factor.
    trabecular_hu : float
        Intensity of the trabecular bone inside the ~1 mm cortical shell (800 HU).
    kyphosis_deg, lordosis_deg : float
        Sagittal curvature: change of the axis's sagittal angle over the whole T1-T12 and L1-L5
        spans, applied pro rata to the levels present. The true kyphosis and lordosis between
        endplates (``Phantom.alignment``) also include the bodies' own wedging.
    scoliosis : str or iterable of ScoliosisSpec or str
        Coronal curves, e.g. ``["T5-T11:right:40", "T11-L4:left:30"]`` or the same as one
        comma-separated string; consecutive curves share an end vertebra and bend to opposite
        sides. The curves are defined over T1-L5 whatever ``levels`` are present (a partial
        phantom shows part of them); beyond the outermost end vertebrae the tilt turns back at
        a third of the neighbouring curve's rate (compensatory curves). Bodies are not rotated
        axially. Default: none (the spine is straight in the coronal plane).

    Returns
    -------
    Phantom
        Arrays of shape ``(n0, n1, n2)`` in array-axis order, their affine and the ground truth.

    Notes
    -----
    The superior-inferior extent covers the vertebrae plus 10 mm. Labels are assigned where the
    voxel centre lies inside a structure. Same arguments give identical arrays.
    """
    labels = _parse_levels(levels)
    specs = _parse_fractures(fractures, labels)
    curves = _parse_scoliosis(scoliosis)
    sp = _as_triple(spacing, "spacing")
    axes = _parse_orientation(orientation)
    for name, val in (("scale", scale),):
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be positive, got {val!r}")
    for name, val in (("jitter", jitter), ("noise_hu", noise_hu), ("blur_mm", blur_mm)):
        if not (math.isfinite(val) and val >= 0):
            raise ValueError(f"{name} must be >= 0, got {val!r}")
    for name, val in (("kyphosis_deg", kyphosis_deg), ("lordosis_deg", lordosis_deg)):
        if not (math.isfinite(val) and abs(val) <= 90.0):
            raise ValueError(f"{name} must be an angle within -90..90 degrees, got {val!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sigma = math.sqrt(blur_mm**2 + max(sp) ** 2 / 12.0)
    margin = 4.0 * sigma + 1.0

    # Bodies, stacked along the arc length by their healthy rim-to-rim lengths plus discs: the
    # posterior elements keep the spine's length, the disc fills what a fracture removes.
    bodies: dict[int, _Body] = {}
    for lab in labels:
        factor = 1.0 + jitter * float(np.random.default_rng([int(seed), lab]).standard_normal())
        bodies[lab] = _build_body(lab, scale, max(factor, 0.5), specs.get(lab))
    s_nodes = [0.0]
    for up, lo in itertools.pairwise(labels):
        half_up, half_lo = bodies[up].geometry.height_mm / 2, bodies[lo].geometry.height_mm / 2
        step = half_up + _disc_below_mm(up) * scale + half_lo
        s_nodes.append(s_nodes[-1] + step)
    # A fractured body's frame moves along its si axis to the middle of what remains; nothing
    # rotates, so the fracture changes no other structure.
    tilts = None
    if curves:
        all_tilts = _coronal_tilts_deg(curves)
        tilts = np.array([all_tilts[lab - 8] for lab in labels])
    healthy = _spine_frames(labels, np.array(s_nodes), scale, kyphosis_deg, lordosis_deg, tilts)
    frames: dict[int, LocalFrame] = {}
    for lab, hf in zip(labels, healthy, strict=True):
        shift = bodies[lab].geometry.offset_mm
        frames[lab] = dataclasses.replace(hf, origin=hf.origin + shift * hf.si)

    body_parts: dict[int, _Part] = {}
    pe_parts: dict[int, list[_Part]] = {}
    for lab in labels:
        geo = bodies[lab].geometry
        body_parts[lab] = _body_part(geo, frames[lab], margin, geo.footprint_grid())
        pe_parts[lab] = _posterior_parts(lab, scale, geo, frames[lab], margin)
    disc_parts = [
        _disc_part(body_parts[up], body_parts[lo], bodies[up].geometry, bodies[lo].geometry)
        for up, lo in itertools.pairwise(labels)
    ]

    # Grid: in-plane axes e1 (R), e2 (A) rotated about S; field of view around trunk / spine.
    phi = math.radians(oblique_deg)
    rot = np.array(
        [[math.cos(phi), -math.sin(phi), 0.0], [math.sin(phi), math.cos(phi), 0.0], [0.0, 0.0, 1.0]]
    )
    corners = np.concatenate(
        [p.corners for p in body_parts.values()]
        + [p.corners for ps in pe_parts.values() for p in ps]
    )
    if fov_mm is None:
        a_t, b_t = _TRUNK_SEMI_MM
        fov = (
            2.0 * math.hypot(a_t * math.cos(phi), b_t * math.sin(phi)) + 2 * _FOV_MARGIN_MM,
            2.0 * math.hypot(a_t * math.sin(phi), b_t * math.cos(phi)) + 2 * _FOV_MARGIN_MM,
        )
    else:
        fov_arr = np.asarray(fov_mm, dtype=float)
        if fov_arr.shape != (2,) or not np.all(np.isfinite(fov_arr)) or np.any(fov_arr <= 0):
            raise ValueError(f"fov_mm must be two positive lengths (lr, ap), got {fov_mm!r}")
        fov = (float(fov_arr[0]), float(fov_arr[1]))
    centre = np.zeros(3)
    for axis in (0, 1):
        proj = corners @ rot[:, axis]
        centre += rot[:, axis] * _fov_centre(fov[axis], float(proj.min()), float(proj.max()))
    z_lo = float(corners[:, 2].min()) - _Z_MARGIN_MM
    z_hi = float(corners[:, 2].max()) + _Z_MARGIN_MM
    centre[2] = 0.5 * (z_lo + z_hi)
    extent = (fov[0], fov[1], z_hi - z_lo)
    lin = np.zeros((3, 3))
    shape = []
    for k, (phys, sign) in enumerate(axes):
        lin[:, k] = rot[:, phys] * sign * sp[k]
        shape.append(max(1, math.ceil(extent[phys] / sp[k] - 1e-6)))
    affine = np.eye(4)
    affine[:3, :3] = lin
    affine[:3, 3] = centre - lin @ ((np.array(shape) - 1) / 2.0)
    grid = _Grid((shape[0], shape[1], shape[2]), affine)

    # Background: the trunk is a cylinder along S, so one axial map serves every slice.
    k_s = next(k for k, (phys, _) in enumerate(axes) if phys == 2)
    k1, k2 = (k for k in range(3) if k != k_s)
    i1 = np.arange(shape[k1], dtype=np.float64)[:, None]
    i2 = np.arange(shape[k2], dtype=np.float64)[None, :]
    x = affine[0, 3] + affine[0, k1] * i1 + affine[0, k2] * i2
    y = affine[1, 3] + affine[1, k1] * i1 + affine[1, k2] * i2
    trunk = special.ndtr(_ellipse_sd(x, y, *_TRUNK_SEMI_MM) / sigma)
    background = np.rint(_HU_AIR + (_HU_SOFT - _HU_AIR) * trunk).astype(np.int16)
    ct = np.empty(grid.shape, dtype=np.int16)
    ct[...] = np.expand_dims(background, k_s)
    label_vol = np.zeros(grid.shape, dtype=np.uint8)
    body_vol = np.zeros(grid.shape, dtype=np.uint8)

    for disc in disc_parts:
        _paint(grid, ct, [disc], sigma=sigma, hu=_HU_DISC)
    for lab in labels:
        _paint(
            grid,
            ct,
            pe_parts[lab],
            sigma=sigma,
            hu=_HU_POSTERIOR,
            label=lab,
            label_volumes=(label_vol,),
        )
        _paint(
            grid,
            ct,
            [body_parts[lab]],
            sigma=sigma,
            hu=_HU_CORTEX,
            core_hu=trabecular_hu,
            label=lab,
            label_volumes=(label_vol, body_vol),
        )

    if noise_hu > 0:
        rng = np.random.default_rng(int(seed))
        per_slab = max(1, shape[1] * shape[2])
        chunk = max(1, (1 << 23) // per_slab)
        for start in range(0, shape[0], chunk):
            block = ct[start : start + chunk].astype(np.float32)
            block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(noise_hu)
            ct[start : start + chunk] = np.rint(np.clip(block, *_CT_RANGE)).astype(np.int16)

    planes = {lab: _true_endplates(bodies[lab].geometry, frames[lab]) for lab in labels}
    records = {
        lab: _truth(lab, bodies[lab], specs.get(lab), frames[lab], planes[lab]) for lab in labels
    }
    knots = sorted({c.upper_label for c in curves} | {c.lower_label for c in curves})
    alignment = _alignment_truth(labels, records, frames, tilts, knots)
    truth = tuple(
        dataclasses.replace(
            records[lab],
            coronal_curves=";".join(c.as_text() for c in alignment.curves),
            thoracic_kyphosis_deg=alignment.thoracic_kyphosis_deg,
            kyphosis_span="-".join(alignment.kyphosis_span or ()),
            lumbar_lordosis_deg=alignment.lumbar_lordosis_deg,
            lordosis_span="-".join(alignment.lordosis_span or ()),
        )
        for lab in labels
    )
    return Phantom(
        ct=ct,
        labels=label_vol,
        bodies=body_vol,
        affine=affine,
        truth=truth,
        frames=frames,
        geometry={lab: bodies[lab].geometry for lab in labels},
        endplates=planes,
        alignment=alignment,
    )
