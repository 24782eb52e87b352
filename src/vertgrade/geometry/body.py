"""Isolating the vertebral body from the pedicles and posterior elements.

The published pipeline walks posteriorly along the mid-sagittal column until the label stops:
a fracture cleft in that column truncates the body. vertgrade works on the vertebra's *axial
projection* instead: the whole vertebra label, resampled in its local frame, is projected along
the spine axis (``si``). In that projection the spinal canal is a hole enclosed by the body in
front and the pedicles and laminae around it, and a fracture cleft, which runs across the body in
a few slices, disappears (other slices fill it). The body's posterior wall is the canal's
anterior edge; everything anterior of a line fitted to that edge is body footprint. The 3D body
is then the vertebra label restricted to that footprint.

Examples
--------
>>> import numpy as np
>>> p = np.zeros((60, 50), bool)
>>> yy, xx = np.mgrid[:60, :50]
>>> p |= ((yy - 40) / 14) ** 2 + ((xx - 25) / 20) ** 2 <= 1             # body, anterior
>>> p |= (((yy - 17) / 11) ** 2 + ((xx - 25) / 12) ** 2 <= 1)           # arch ring ...
>>> p &= ~(((yy - 18) / 8) ** 2 + ((xx - 25) / 9) ** 2 <= 1)            # ... around the canal
>>> fp = body_footprint(p, step_mm=1.0)
>>> fp.canal_found, int(fp.footprint[:22].sum()), fp.footprint[40, 25]
(True, 0, np.True_)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull

from vertgrade.config import BodyParams

__all__ = ["BodyFootprint", "body_footprint", "convex_hull_mask", "disk"]


@dataclass(frozen=True)
class BodyFootprint:
    """The body's axial footprint on the projection grid, and how it was found.

    ``cut_ap_mm`` is the posterior-wall line at the footprint's left-right centre, in grid mm
    (index ``i`` covers ``[i * step, (i + 1) * step)``); ``None`` when no canal was found.
    """

    footprint: NDArray[np.bool_]
    canal_found: bool
    cut_ap_mm: float | None
    #: share of the projection kept as body (about 1 for a label of the body alone)
    kept_fraction: float = 1.0


def _canal(
    projection: NDArray[np.bool_], step_mm: float, params: BodyParams
) -> tuple[NDArray[np.bool_], bool]:
    """The spinal canal in the projection: its largest enclosed hole, else the largest
    concavity near the left-right centre (an arch that the label leaves open)."""
    min_px = params.min_canal_area_mm2 / step_mm**2
    holes = ndimage.binary_fill_holes(projection) & ~projection
    lab, n = ndimage.label(holes)
    if n:
        sizes = ndimage.sum_labels(holes, lab, index=np.arange(1, n + 1))
        best = int(np.argmax(sizes))
        if sizes[best] >= min_px:
            return lab == best + 1, True
    hull = convex_hull_mask(projection)
    deficit = hull & ~projection
    lab, n = ndimage.label(deficit)
    if not n:
        return np.zeros_like(projection), False
    cols = np.flatnonzero(projection.any(axis=0))
    centre, width = 0.5 * (cols[0] + cols[-1]), cols[-1] - cols[0] + 1
    best_size, best_lab = 0.0, 0
    for k in range(1, n + 1):
        comp = lab == k
        cc = np.nonzero(comp)[1].mean()
        size = float(comp.sum())
        if abs(cc - centre) <= params.canal_centre_tolerance * width and size > best_size:
            best_size, best_lab = size, k
    if best_size < min_px:
        return np.zeros_like(projection), False
    return lab == best_lab, False


def body_footprint(
    projection: NDArray[np.bool_], *, step_mm: float, params: BodyParams | None = None
) -> BodyFootprint:
    """Find the vertebral body's footprint in a vertebra's axial projection.

    Parameters
    ----------
    projection : (A, L) bool ndarray
        The whole vertebra projected along ``si``; axis 0 runs posterior -> anterior, axis 1
        left -> right.
    step_mm : float
        Grid spacing in mm.
    params : BodyParams, optional
        Canal size and position, openings (default: the defaults).

    Returns
    -------
    BodyFootprint
        Without a canal (an open arch, or a label of the body alone) the footprint is the largest
        part that survives an opening of 1/6 of the vertebra's width, and ``canal_found`` is
        False.
    """
    prm = params or BodyParams()
    proj = np.asarray(projection, dtype=bool)
    if not proj.any():
        return BodyFootprint(np.zeros_like(proj), False, None)
    canal, enclosed = _canal(proj, step_mm, prm)
    ap_c = (np.arange(proj.shape[0]) + 0.5) * step_mm
    lr_c = (np.arange(proj.shape[1]) + 0.5) * step_mm
    if canal.any():
        rows, cols = np.nonzero(canal)
        front: dict[int, int] = {}
        for r, c in zip(rows, cols, strict=True):
            front[int(c)] = max(front.get(int(c), -1), int(r))
        cs = np.array(sorted(front))
        edge = (np.array([front[c] for c in cs]) + 1.0) * step_mm
        # the central half of the canal's width: its anterior edge there is the posterior wall
        lo, hi = np.quantile(cs, [0.25, 0.75])
        keep = (cs >= lo) & (cs <= hi)
        x, y = lr_c[cs[keep]], edge[keep]
        if keep.sum() >= 4 and np.ptp(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            slope = float(np.clip(slope, -prm.max_wall_slope, prm.max_wall_slope))
            icpt = float(np.median(y - slope * x))
        else:
            slope, icpt = 0.0, float(np.median(y))
        line = icpt + slope * lr_c
        cand = proj & (ap_c[:, None] >= line[None, :])
        cand = ndimage.binary_opening(cand, structure=disk(max(1, round(prm.opening_mm / step_mm))))
        fp = _keep_major_parts(cand, prm.major_part_fraction)
        if fp.any():
            mid = 0.5 * (lr_c[np.flatnonzero(fp.any(axis=0))[[0, -1]]].sum())
            return BodyFootprint(
                fp, enclosed, float(icpt + slope * mid), float(fp.sum() / proj.sum())
            )
    cols = np.flatnonzero(proj.any(axis=0))
    width_mm = (cols[-1] - cols[0] + 1) * step_mm
    radius = max(1, round(width_mm / prm.fallback_opening_divisor / step_mm))
    opened = ndimage.binary_opening(proj, structure=disk(radius))
    fp = _keep_major_parts(
        opened if opened.any() else proj, prm.major_part_fraction, largest_only=True
    )
    return BodyFootprint(fp, False, None, float(fp.sum() / proj.sum()))


def disk(radius: int) -> NDArray[np.bool_]:
    """The pixels within ``radius`` of the centre pixel: a flat disc structuring element.

    The same footprint as scikit-image's ``morphology.disk(radius)`` (``x**2 + y**2 <= r**2``
    over integer offsets), as bools.

    Parameters
    ----------
    radius : int
        Radius in pixels (>= 0).

    Returns
    -------
    (2 * radius + 1, 2 * radius + 1) bool ndarray

    Examples
    --------
    >>> disk(1).astype(int)
    array([[0, 1, 0],
           [1, 1, 1],
           [0, 1, 0]])
    >>> int(disk(3).sum())
    29
    """
    offsets = np.arange(-radius, radius + 1)
    disc: NDArray[np.bool_] = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2
    return disc


def convex_hull_mask(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The pixels of a 2-D mask's convex hull, its border included.

    Each pixel of the mask stands for the diamond of its four edge midpoints (its centre
    +/- 0.5 along each axis); a pixel is in the hull where its centre lies inside or on the
    convex polygon around all those diamonds. This is the definition of scikit-image's
    ``morphology.convex_hull_image`` with its defaults (``offset_coordinates=True``,
    ``include_borders=True``), which gives the same masks.

    Only the first and last pixel of each row can lie on the hull (every other pixel's diamond
    lies between theirs), so the polygon is Qhull's hull of those diamonds. Coordinates are
    doubled, so every corner and every pixel centre is an integer, and the centres are tested
    against the polygon's edges with exact integer cross products: a centre on an edge is
    always kept, never lost to rounding.

    Parameters
    ----------
    mask : (A, L) bool ndarray

    Returns
    -------
    (A, L) bool ndarray
        The hull (all False for an empty mask).

    Examples
    --------
    >>> m = np.zeros((5, 5), bool)
    >>> m[0, 0] = m[4, 0] = m[0, 4] = True
    >>> convex_hull_mask(m).astype(int)
    array([[1, 1, 1, 1, 1],
           [1, 1, 1, 1, 0],
           [1, 1, 1, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 0, 0, 0, 0]])
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"convex_hull_mask needs a 2-D mask, got shape {m.shape}")
    out = np.zeros(m.shape, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return out
    first = np.argmax(m[rows], axis=1)
    last = m.shape[1] - 1 - np.argmax(m[rows, ::-1], axis=1)
    ends = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)])
    diamond = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])
    corners = np.unique((2 * ends[:, None, :] + diamond).reshape(-1, 2), axis=0)
    vertices = corners[ConvexHull(corners.astype(np.float64)).vertices].astype(np.int64)
    # the hull lies within the mask's bounding box (a centre outside it is 1 from the box)
    cols = np.flatnonzero(m.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pr, pc = np.meshgrid(2 * np.arange(r0, r1), 2 * np.arange(c0, c1), indexing="ij")
    a, b = vertices, np.roll(vertices, -1, axis=0)
    # the polygon's orientation: the sign of its (doubled) area
    sign = np.sign(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]))
    inside = np.ones(pr.shape, dtype=bool)
    for (ar, ac), (br, bc) in zip(a.tolist(), b.tolist(), strict=True):
        inside &= sign * ((br - ar) * (pc - ac) - (bc - ac) * (pr - ar)) >= 0
    out[r0:r1, c0:c1] = inside
    return out


def _keep_major_parts(
    mask: NDArray[np.bool_], fraction: float, *, largest_only: bool = False
) -> NDArray[np.bool_]:
    """Keep the largest component and any other holding at least ``fraction`` of its area (a
    body split by a sagittal cleft stays whole)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.copy()
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    if largest_only:
        return lab == int(np.argmax(sizes)) + 1
    keep = np.flatnonzero(sizes >= fraction * sizes.max()) + 1
    return np.isin(lab, keep)
