"""Build a phantom: :func:`make_phantom` and the :class:`Phantom` it returns.

:func:`make_phantom` parses the request (:mod:`~vertgrade.phantom.specs`), shapes the bodies
(:mod:`~vertgrade.phantom.anatomy`), places them on the spine curve
(:mod:`~vertgrade.phantom._curve`), sets the voxel grid around them inside a soft-tissue trunk
(any axis order and signs, anisotropic spacing, oblique in-plane rotation), paints the trunk
(40 HU in air), discs (90 HU), posterior elements (400 HU) and bodies (800 HU cortex around
``trabecular_hu``) (:mod:`~vertgrade.phantom._raster`), adds Gaussian noise and computes the
truth (:mod:`~vertgrade.phantom.truth`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from vertgrade.geometry.frames import LocalFrame
from vertgrade.morphometry import EndplatePlane
from vertgrade.phantom._curve import _coronal_tilts_deg, _spine_frames
from vertgrade.phantom._raster import (
    _CT_RANGE,
    _body_part,
    _disc_part,
    _Grid,
    _paint,
    _parse_orientation,
    _Part,
    _posterior_parts,
)
from vertgrade.phantom.anatomy import BodyGeometry, _Body, _build_body, _disc_below_mm, _ellipse_sd
from vertgrade.phantom.specs import (
    FractureSpec,
    ScoliosisSpec,
    _parse_fractures,
    _parse_levels,
    _parse_scoliosis,
)
from vertgrade.phantom.truth import (
    AlignmentTruth,
    VertebraTruth,
    _alignment_truth,
    _true_endplates,
    _truth,
)

__all__ = ["Phantom", "make_phantom"]

# Intensities (HU).
_HU_AIR = -1000.0
_HU_SOFT = 40.0
_HU_DISC = 90.0
_HU_CORTEX = 800.0
_HU_POSTERIOR = 400.0

# Trunk: an elliptic cylinder along world z centred on x = y = 0 (semi-axes lr, ap in mm).
_TRUNK_SEMI_MM = (160.0, 120.0)
# Margins (mm) of the default axial field of view around the trunk, and along S around the
# vertebrae.
_FOV_MARGIN_MM = 10.0
_Z_MARGIN_MM = 10.0


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
