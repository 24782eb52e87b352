"""Rasterisation: the analytic structures as signed distances, painted onto the voxel grid.

Each structure is a part (a signed-distance-like function of local ``(u, ap, lr)`` mm, > 0
inside, with the world corners of a box that bounds it): the body of
:class:`~vertgrade.phantom.anatomy.BodyGeometry`, the disc between two bodies, and the posterior
elements (same label as the body): a neural arch (pedicles and lamina) around an empty canal
behind the body, a spinous process and two transverse processes; they never enter the body's
footprint and sit where they would on the healthy body, so a fracture changes the body only.

The CT is a layered profile blurred analytically: for a structure with signed distance ``d``,
``v <- v + (shell - v) * Phi(d / s) + (core - shell) * Phi((d - 1 mm) / s)`` with
``s = sqrt(blur^2 + max(spacing)^2 / 12)``; :func:`vertgrade.phantom.make_phantom` paints the
trunk, discs, posterior elements and bodies in that order. Labels are assigned where the voxel
centre lies inside a structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from vertgrade.geometry.frames import LocalFrame
from vertgrade.phantom.anatomy import BodyGeometry, FootprintGrid, _anatomy, _Array, _ellipse_sd

__all__: list[str] = []

# Range of the CT's int16 values (HU).
_CT_RANGE = (-1024, 3071)
# Thickness (mm) of the cortical shell of a structure painted with a core.
_CORTEX_MM = 1.0
# Discs reach this far (mm) into the neighbouring bodies before the bodies are painted over them,
# so that the endplate edge blends body with disc rather than with soft tissue.
_DISC_OVERLAP_MM = 3.0
# The neural arch may reach this far (mm) anterior of the midline posterior wall, lateral to the
# canal, so that the pedicles join the posterolateral body wall.
_PEDICLE_REACH_MM = 5.0

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
