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
from skimage.morphology import convex_hull_image, disk

from vertgrade.config import BodyParams

__all__ = ["BodyFootprint", "body_footprint"]


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
    hull = convex_hull_image(projection)
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
