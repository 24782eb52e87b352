"""The phantom's anatomy: level sizes and the analytic vertebral body with its fracture.

Each vertebra lives in a :class:`~vertgrade.geometry.frames.LocalFrame` whose ``si`` axis is the
tangent of the spine curve at the body centre (world coordinates are RAS+ mm). In local
coordinates ``(u, a, l)`` = ``(si, ap, lr)`` mm the body is described analytically
(:class:`BodyGeometry`):

- the axial footprint is an ellipse (``semi_lr_mm`` x ``semi_ap_mm``) cut by a flat posterior
  wall that is slightly concave at the midline;
- the superior and inferior endplates are surfaces ``u = z_sup(a, l)`` and ``u = z_inf(a, l)``;
  the height map is ``h(a, l) = z_sup - z_inf``: linear in ``a`` (level-typical wedging) minus a
  smooth central depression of each endplate.

The sizes of every level (body, canal, posterior elements, discs) are interpolated in the label
id between T1, T12, L3 and L5 and multiplied by the patient's ``scale``; the posterior elements
themselves are shaped in :mod:`vertgrade.phantom._raster`.

Healthy heights follow :func:`vertgrade.levels.normative_shape` times ``scale`` times a small
seeded per-vertebra factor: the three parameters of each height map (height, AP slope, endplate
depression) are solved so that the healthy anterior, middle and posterior thirds match the
normative heights exactly (the 4 % lower middle height takes a central depression of about
1 mm per endplate). The thirds are those of :func:`vertgrade.geometry.thirds.footprint_thirds`
on a 0.25 mm grid over the footprint (:data:`TRUTH_STEP_MM`, :class:`FootprintGrid`).

Fractures remove ``k * profile(a, l)`` mm from each column (never more than 90 % of it), with
``k`` solved (Brent's method on the same grid) so that the most affected third loses exactly the
severity:

- wedge: the superior endplate drops linearly in ``a``, from 0 at the posterior edge to the
  anterior edge of the regions' antero-posterior extent: the anterior third loses the severity
  (and the middle and posterior thirds about 2/3 and 1/4 of it);
- biconcave: a smooth central dome ``(1 - rho^2)^2``, half from each endplate: the middle third
  loses the severity;
- crush: every column loses the same fraction: all thirds lose the severity.

A fracture changes its own body only, and the fractured body's frame origin moves along ``si``
to the middle of its remaining central column (:attr:`BodyGeometry.offset_mm`).

Examples
--------
>>> geo = BodyGeometry(semi_ap_mm=17.0, semi_lr_mm=20.0, wall_ap_mm=-13.0,
...                    wall_concavity_mm=1.0, wall_half_width_mm=8.0, height_mm=25.0)
>>> float(geo.height(0.0, 0.0)), float(geo.superior(0.0, 0.0)), float(geo.inferior(0.0, 0.0))
(25.0, 12.5, -12.5)
>>> grid = geo.footprint_grid()
>>> grid.step_mm, grid.footprint.shape
(0.25, (128, 168))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from vertgrade.geometry.thirds import THIRDS, FootprintThirds, footprint_thirds
from vertgrade.grading import central_loss
from vertgrade.levels import normative_shape
from vertgrade.phantom.specs import FractureSpec

__all__ = ["TRUTH_STEP_MM", "BodyGeometry", "FootprintGrid"]

#: Grid step (mm) of the footprint on which the true heights are computed.
TRUTH_STEP_MM = 0.25

# A fracture never removes more than this fraction of any single column's height.
_MAX_COLUMN_LOSS = 0.9

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
    regions : FootprintThirds
        Core and thirds of ``footprint`` (see :func:`vertgrade.geometry.thirds.footprint_thirds`).
    step_mm : float
        Cell size.
    """

    ap_mm: NDArray[np.float64]
    lr_mm: NDArray[np.float64]
    footprint: NDArray[np.bool_]
    regions: FootprintThirds
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
        return FootprintGrid(ap, lr, fp, footprint_thirds(fp, step_mm=step_mm), step_mm)


def _region_means(values: _Array, regions: FootprintThirds) -> dict[str, float]:
    return {r: float(values[regions.mask(r)].mean()) for r in ("body", *THIRDS)}


@dataclass(frozen=True)
class _Body:
    """A solved body: its geometry and its regional heights (mm) before and after."""

    geometry: BodyGeometry
    before: dict[str, float]
    after: dict[str, float]
    #: the central height loss of the true height maps (:func:`vertgrade.grading.central_loss`)
    central_loss: float = 0.0


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
            for r in THIRDS
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
    h_before, h_after = geo.height(a, b, fractured=False), geo.height(a, b)
    before = _region_means(h_before, regions)
    after = _region_means(h_after, regions)
    with np.errstate(invalid="ignore", divide="ignore"):
        column_loss = np.where(grid.footprint, 1.0 - h_after / h_before, np.nan)
    central = central_loss(column_loss, regions, step_mm=grid.step_mm)
    return _Body(geo, before, after, central.loss if central is not None else 0.0)
