"""Height maps of vertebral bodies and their anterior / middle / posterior heights.

The isolated body is resampled in its local frame (``si`` along the spine, perpendicular to the
endplates) on a grid of ``step_ap_lr_mm`` in the axial plane and ``step_si_mm`` along the spine.
For every axial column the superior and inferior endplates are where the interpolated mask
crosses 0.5 (linear interpolation between samples, so sub-voxel); the column's height is their
distance. That is the *height map* over the body's axial footprint.

Where a CT is given, each endplate is refined from the intensities: along the column, within a
window around the mask's endplate, the cortical edge is where the CT rises most steeply from the
disc into bone (largest gradient, located to sub-sample precision by a parabola through the three
samples around it). Segmentations often smooth over endplate depressions; the CT edge does not.
The steepest-gradient point of a thin bright cortex blurred by the scanner lies a few tenths of a
millimetre outside the true surface (the cortex-to-trabecular fall behind it pulls the maximum
outwards). That bias depends on the scanner's blur and is the same for every endplate of a scan,
so it is calibrated per study: each endplate's mean CT-minus-mask offset over its core columns
(outliers beyond 3.5 MADs dropped) is taken, and the median of those over all vertebrae of the
study is removed from every CT edge (:func:`calibrate_ct`). A few fractured endplates do not
move a median over the spine, and the mask's own sub-voxel quantisation error, which differs from
vertebra to vertebra, averages out in it; the CT keeps each endplate's local shape (the
depressions a segmentation smooths over) and its sub-voxel position.

Regional heights are robust means (outliers beyond 3.5 scaled MADs dropped) of all the columns
in each third of the footprint (:mod:`vertgrade.geometry.thirds`): robust to a few bad columns, and
unlike a single slice, they use the whole footprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from nibabel.affines import voxel_sizes
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.config import MorphometryParams
from vertgrade.geometry.frames import LocalFrame
from vertgrade.geometry.sampling import LocalGrid, sample, sample_points, voxels_to_local
from vertgrade.geometry.thirds import THIRDS, FootprintThirds, footprint_thirds

__all__ = [
    "BodyMeasurement",
    "EndplatePlane",
    "HeightMap",
    "RegionHeights",
    "WallHeights",
    "calibrate_ct",
    "endplate_axis",
    "endplate_planes",
    "height_map_from_profiles",
    "measure_body",
    "region_heights",
    "robust_mean",
    "wall_heights",
]

#: Outliers are values beyond this many scaled median absolute deviations from the median
#: (robust means of heights and CT offsets, endplate-plane refits). Fixed, not a grading
#: parameter: the learned reference forms its heights with the same definition, and a measured
#: height is only comparable with a reference height formed the same way.
OUTLIER_MADS = 3.5
#: Scales a median absolute deviation to a standard deviation for normal data (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826
#: Fewest finite columns for a regional height, for a CT offset, and for an endplate plane; fewer
#: than ``MIN_PLANE_INLIERS`` inliers keep every column of the plane fit.
MIN_REGION_COLUMNS = 3
MIN_OFFSET_COLUMNS = 10
MIN_PLANE_COLUMNS = 20
MIN_PLANE_INLIERS = 10
#: A plane refit keeps residuals within at least this much (mm), however small the MAD.
PLANE_RESIDUAL_FLOOR_MM = 0.25


@dataclass(frozen=True)
class RegionHeights:
    """Heights (mm) of the whole body core and its thirds; ``None`` where not measurable."""

    body: float | None
    anterior: float | None
    middle: float | None
    posterior: float | None

    def get(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    def as_dict(self) -> dict[str, float | None]:
        return {k: self.get(k) for k in ("body", *THIRDS)}


@dataclass(frozen=True)
class HeightMap:
    """Per-column endplates and heights on the axial footprint grid.

    Arrays are ``(A, L)``: axis 0 posterior -> anterior at ``ap_mm``, axis 1 left -> right at
    ``lr_mm`` (local frame mm). ``top_mm`` / ``bottom_mm`` are the superior / inferior endplates'
    ``si`` coordinates; NaN outside the footprint.
    """

    ap_mm: NDArray[np.float64]
    lr_mm: NDArray[np.float64]
    top_mm: NDArray[np.float64]
    bottom_mm: NDArray[np.float64]
    footprint: NDArray[np.bool_]

    @property
    def heights_mm(self) -> NDArray[np.float64]:
        return self.top_mm - self.bottom_mm

    @property
    def step_mm(self) -> float:
        return float(self.ap_mm[1] - self.ap_mm[0])


def height_map_from_profiles(
    values: NDArray[np.floating], si_mm: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Endplates of every column of a resampled mask: the outermost 0.5 crossings.

    Parameters
    ----------
    values : (S, ...) ndarray
        Interpolated mask values along ``si`` (axis 0).
    si_mm : (S,) ndarray
        Their ``si`` coordinates, increasing, evenly spaced.

    Returns
    -------
    top, bottom : ndarray
        ``si`` of the upper and lower crossings (NaN in empty columns).
    footprint : bool ndarray
        Columns with any value >= 0.5.

    Examples
    --------
    >>> v = np.array([0, 0, 0.25, 1, 1, 1, 0.75, 0, 0], float)[:, None]
    >>> top, bottom, fp = height_map_from_profiles(v, np.arange(9.0))
    >>> round(float(top[0]), 3), round(float(bottom[0]), 3), bool(fp[0])
    (6.333, 2.333, True)
    """
    inside = values >= 0.5
    fp = np.asarray(inside.any(axis=0), dtype=bool)
    n = values.shape[0]
    step = float(si_mm[1] - si_mm[0])
    first = np.argmax(inside, axis=0)
    last = n - 1 - np.argmax(inside[::-1], axis=0)

    def at(index: NDArray[np.intp]) -> NDArray[np.float64]:
        return np.take_along_axis(values, index[None], axis=0)[0].astype(np.float64)

    v_first, v_before = at(first), at(np.maximum(first - 1, 0))
    v_last, v_after = at(last), at(np.minimum(last + 1, n - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_b = np.where(first > 0, (v_first - 0.5) / (v_first - v_before), 0.5)
        frac_t = np.where(last < n - 1, (v_last - 0.5) / (v_last - v_after), 0.5)
    frac_b = np.clip(np.nan_to_num(frac_b, nan=0.5), 0.0, 1.0)
    frac_t = np.clip(np.nan_to_num(frac_t, nan=0.5), 0.0, 1.0)
    bottom = si_mm[first] - frac_b * step
    top = si_mm[last] + frac_t * step
    bottom = np.where(fp, bottom, np.nan)
    top = np.where(fp, top, np.nan)
    return top, bottom, fp


def _refine_edges(
    ct_at: Callable[[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]], NDArray[np.floating]],
    si_mm: NDArray[np.float64],
    top: NDArray[np.float64],
    bottom: NDArray[np.float64],
    fp: NDArray[np.bool_],
    params: MorphometryParams,
    min_gradient: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """CT-refined endplates: steepest disc -> bone rise near each mask endplate.

    ``ct_at(si, ap, lr)`` gives the CT at grid indices (broadcast); only a band of rows around
    each footprint column's search window is read. The result is that of the same search on
    the whole grid: the gradient along ``si`` is :func:`numpy.gradient`'s (central differences,
    one-sided at the grid's ends), and the band holds every row of the window, the rows beside
    it and their neighbours.
    """
    n = len(si_mm)
    step = float(si_mm[1] - si_mm[0])
    a_idx, l_idx = np.nonzero(fp)
    cols = (a_idx[:, None], l_idx[:, None])

    def locate(sign: float, centre_map: NDArray[np.float64], lo_off: float, hi_off: float):
        out = np.full(fp.shape, np.nan)
        if a_idx.size == 0:
            return out
        centre = centre_map[a_idx, l_idx][:, None]
        # the window's rows, one beside it on each side (the parabola through the peak) and
        # their neighbours (the gradient), with a row of slack for rounding
        length = int(np.ceil((lo_off + hi_off) / step)) + 8
        if n <= length:
            rows = np.broadcast_to(np.arange(n), (a_idx.size, n))
        else:
            first = np.floor((centre[:, 0] - lo_off - si_mm[0]) / step).astype(np.intp) - 4
            rows = np.clip(first, 0, n - length)[:, None] + np.arange(length)
        v = ct_at(rows, *cols).astype(np.float64)
        grad = np.empty_like(v)
        grad[:, 1:-1] = (v[:, 2:] - v[:, :-2]) / (2.0 * step)
        grad[:, 0] = (v[:, 1] - v[:, 0]) / step
        grad[:, -1] = (v[:, -1] - v[:, -2]) / step
        # a band's end rows have their gradient only where they are the grid's end rows
        known = np.ones(v.shape, bool)
        known[:, 0] = rows[:, 0] == 0
        known[:, -1] = rows[:, -1] == n - 1
        s = si_mm[rows]
        window = known & (s >= centre - lo_off) & (s <= centre + hi_off)
        signed = sign * grad
        score = np.where(window, signed, -np.inf)
        p = np.argmax(score, axis=1)[:, None]
        best = np.take_along_axis(score, p, axis=1)[:, 0]
        k = np.take_along_axis(rows, p, axis=1)
        # the rows beside the peak (the peak itself at the grid's ends)
        pm = np.clip(np.where(k > 0, p - 1, p), 0, v.shape[1] - 1)
        pp = np.clip(np.where(k < n - 1, p + 1, p), 0, v.shape[1] - 1)
        g0 = np.take_along_axis(signed, pm, axis=1)[:, 0]
        g1 = best
        g2 = np.take_along_axis(signed, pp, axis=1)[:, 0]
        denom = g0 - 2 * g1 + g2
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(np.abs(denom) > 1e-9, 0.5 * (g0 - g2) / denom, 0.0)
        delta = np.clip(np.nan_to_num(delta), -0.5, 0.5)
        pos = si_mm[k[:, 0]] + delta * step
        ok = np.isfinite(best) & (best >= min_gradient)
        out[a_idx, l_idx] = np.where(ok, pos, np.nan)
        return out

    # superior endplate: disc above, bone below -> intensity falls with si (sign -1)
    top_ct = locate(-1.0, np.nan_to_num(top), params.ct_search_in_mm, params.ct_search_out_mm)
    bottom_ct = locate(+1.0, np.nan_to_num(bottom), params.ct_search_out_mm, params.ct_search_in_mm)
    return top_ct, bottom_ct


@dataclass(frozen=True)
class EndplatePlane:
    """A plane fitted to one endplate: a point on it (world mm, over the footprint's core
    centre) and its unit normal (world), oriented towards the patient's head (along ``+si``)."""

    point_mm: NDArray[np.float64]
    normal: NDArray[np.float64]

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "point_mm": [round(float(x), 3) for x in self.point_mm],
            "normal": [round(float(x), 6) for x in self.normal],
        }


def endplate_planes(
    m: BodyMeasurement, frame: LocalFrame, *, source: str = "mask"
) -> tuple[EndplatePlane, EndplatePlane] | None:
    """Planes fitted to the superior and inferior endplates (core columns; least squares, then
    refitted without the columns beyond :data:`OUTLIER_MADS` MADs); ``None`` with fewer than
    :data:`MIN_PLANE_COLUMNS` columns.

    Returns
    -------
    (superior, inferior) : tuple of EndplatePlane
    """
    hm = m.height_map
    top, bottom = m.endplates(source)
    core = m.regions.body & np.isfinite(top) & np.isfinite(bottom)
    if core.sum() < MIN_PLANE_COLUMNS:
        return None
    a_idx, l_idx = np.nonzero(core)
    ap, lr = hm.ap_mm[a_idx], hm.lr_mm[l_idx]
    design = np.column_stack([np.ones(a_idx.size), ap, lr])
    centre_ap, centre_lr = float(ap.mean()), float(lr.mean())
    planes = []
    for surface in (top[core], bottom[core]):
        keep = np.ones(surface.size, bool)
        coef: NDArray[np.float64] = np.zeros(3)
        for _ in range(2):
            coef = np.asarray(np.linalg.lstsq(design[keep], surface[keep], rcond=None)[0], float)
            resid = surface - design @ coef
            mad = MAD_TO_SIGMA * float(np.median(np.abs(resid[keep] - np.median(resid[keep]))))
            inliers = np.abs(resid) <= max(OUTLIER_MADS * mad, PLANE_RESIDUAL_FLOOR_MM)
            # a very skewed residual distribution can leave (almost) nothing within the bound
            # (its median far from the fit): then keep every column
            keep = inliers if inliers.sum() >= MIN_PLANE_INLIERS else np.ones(surface.size, bool)
        n_local = np.array([1.0, -coef[1], -coef[2]])
        n_local /= np.linalg.norm(n_local)
        z = coef[0] + coef[1] * centre_ap + coef[2] * centre_lr
        point = frame.to_world(np.array([[z, centre_ap, centre_lr]]))[0]
        normal = n_local[0] * frame.si + n_local[1] * frame.ap + n_local[2] * frame.lr
        planes.append(EndplatePlane(point, normal / np.linalg.norm(normal)))
    return planes[0], planes[1]


def endplate_axis(m: BodyMeasurement, frame: LocalFrame) -> NDArray[np.float64] | None:
    """The body's own axis: the bisector of its two endplate planes' normals (world), from the
    mask's endplates; ``None`` where the planes cannot be fitted.

    Perpendicular to the endplates is how vertebral height is defined; a concave endplate's
    depression is mirrored in the other endplate, so it cancels out of the bisector.
    """
    planes = endplate_planes(m, frame)
    if planes is None:
        return None
    axis = planes[0].normal + planes[1].normal
    return axis / np.linalg.norm(axis)


def _median(values: NDArray[np.float64]) -> float:
    return float(np.median(values)) if values.size else 0.0


def _mean_offset(diff: NDArray[np.float64], core: NDArray[np.bool_]) -> float:
    """Robust mean of ``diff`` over the core's valid columns (NaN if it has fewer than
    :data:`MIN_OFFSET_COLUMNS`)."""
    vals = diff[core & np.isfinite(diff)]
    return robust_mean(vals) if vals.size >= MIN_OFFSET_COLUMNS else float("nan")


def robust_mean(values: NDArray[np.float64], *, k: float = OUTLIER_MADS) -> float:
    """Mean of the values within ``k`` scaled median absolute deviations of their median.

    Columns hit by a segmentation spike or a missed edge are dropped; a smooth, skewed
    distribution (the heights across a depressed endplate) keeps its true mean, which a trimmed
    mean would not.

    >>> robust_mean(np.array([10.0, 10.2, 9.8, 10.1, 30.0]))
    10.025
    """
    med = float(np.median(values))
    mad = MAD_TO_SIGMA * float(np.median(np.abs(values - med)))
    if mad > 0:
        values = values[np.abs(values - med) <= k * mad]
    return float(np.mean(values))


def region_heights(
    heights: NDArray[np.float64],
    regions: FootprintThirds,
    *,
    min_columns: int = MIN_REGION_COLUMNS,
) -> RegionHeights:
    """Robust mean height (:func:`robust_mean`) of each region's columns; NaN columns ignored."""
    out: dict[str, float | None] = {}
    for name in ("body", *THIRDS):
        vals = heights[regions.mask(name)]
        vals = vals[np.isfinite(vals)]
        out[name] = robust_mean(vals) if vals.size >= min_columns else None
    return RegionHeights(**out)


@dataclass(frozen=True)
class WallHeights:
    """Quantitative morphometry's three heights of a body, in mm, read where radiologists place
    them (:func:`wall_heights`): the anterior and posterior wall heights and the middle height at
    the centre, where a biconcave depression is deepest. ``depth_mm`` is the antero-posterior
    distance between the two wall bands' centres (the lever of the wedge angle)."""

    anterior: float
    middle: float
    posterior: float
    depth_mm: float

    def as_dict(self) -> dict[str, float]:
        return {
            "anterior": self.anterior,
            "middle": self.middle,
            "posterior": self.posterior,
            "depth": self.depth_mm,
        }


def wall_heights(
    heights: NDArray[np.float64],
    regions: FootprintThirds,
    *,
    step_mm: float,
    band_mm: float = 3.0,
    central_radius_mm: float = 3.0,
) -> WallHeights | None:
    """The standard morphometric heights: at the anterior wall, at the posterior wall, and at
    the centre where the body is lowest.

    Six-point morphometry (lateral radiographs, DXA) measures the anterior and posterior heights
    between the corner points of the endplates and the middle height at the centre of the body.
    On the height map the corners are where the footprint's core ends: the anterior (posterior)
    wall height is the median over the columns of the mid-sagittal band (the thirds' central
    band) within ``band_mm`` of the core's front (back) end, a robust local statistic over a
    few millimetres of columns, not one voxel line. The middle height is the lowest mean over a
    disc of ``central_radius_mm`` centred in the middle third: the point a reader picks, where a
    central (biconcave) depression is deepest, with the same disc as the central loss
    (:func:`vertgrade.grading.central_loss`).

    Parameters
    ----------
    heights : (A, L) float ndarray
        Per-column heights (mm; NaN where unknown) on the grid of ``regions``.
    regions : FootprintThirds
        The footprint's core and thirds.
    step_mm : float
        The grid step.
    band_mm, central_radius_mm : float
        Depth of the wall bands and radius of the central disc.

    Returns
    -------
    WallHeights or None
        None where a band or the middle third has no measured column.

    Examples
    --------
    >>> from vertgrade.geometry.thirds import footprint_thirds
    >>> fp = np.zeros((34, 44), bool); fp[2:32, 2:42] = True   # 30 mm deep, posterior at row 2
    >>> th = footprint_thirds(fp, step_mm=1.0)
    >>> ap = (np.arange(34) + 0.5)[:, None] * np.ones((1, 44))
    >>> h = np.where(fp, 25.0 - 0.2 * (ap - 2.0), np.nan)      # a wedge: 6 mm lower in front
    >>> w = wall_heights(h, th, step_mm=1.0)
    >>> round(w.anterior, 1), round(w.middle, 1), round(w.posterior, 1), round(w.depth_mm, 1)
    (19.7, 21.1, 24.3, 23.0)
    """
    values = np.asarray(heights, dtype=np.float64)
    inner = (regions.anterior | regions.middle | regions.posterior) & np.isfinite(values)
    rows = np.flatnonzero(inner.any(axis=1))
    if rows.size == 0:
        return None
    n_band = max(1, round(band_mm / step_mm))
    front = np.zeros_like(inner)
    back = np.zeros_like(inner)
    front[rows[-1] - n_band + 1 : rows[-1] + 1] = True
    back[rows[0] : rows[0] + n_band] = True
    front &= inner
    back &= inner
    if not front.any() or not back.any():
        return None
    ap_centres = (np.arange(values.shape[0]) + 0.5) * step_mm
    depth = float(ap_centres[np.nonzero(front)[0]].mean() - ap_centres[np.nonzero(back)[0]].mean())
    valid = np.isfinite(values) & regions.body
    r = int(np.floor(central_radius_mm / step_mm))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = ((yy**2 + xx**2) * step_mm**2 <= central_radius_mm**2).astype(np.float64)
    total = ndimage.correlate(np.where(valid, values, 0.0), disc, mode="constant", cval=0.0)
    count = ndimage.correlate(valid.astype(np.float64), disc, mode="constant", cval=0.0)
    search = regions.middle & valid & (count >= 0.5 * disc.sum())
    if not search.any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total[search] / count[search]
    return WallHeights(
        anterior=float(np.median(values[front])),
        middle=float(mean.min()),
        posterior=float(np.median(values[back])),
        depth_mm=depth,
    )


@dataclass(frozen=True)
class BodyMeasurement:
    """Everything measured on one body.

    ``heights_ct`` is ``None`` without a CT; ``ct_valid_fraction`` is the share of core columns
    whose two CT edges were found; ``ct_edges_raw_mm`` are the (superior, inferior) CT edge maps
    before calibration and ``ct_edges_mm`` after it; ``ct_edge_offset_mm`` is their mean
    CT-minus-mask offset over the core columns (see :func:`calibrate_ct`).
    """

    height_map: HeightMap
    regions: FootprintThirds
    heights_mask: RegionHeights
    heights_ct: RegionHeights | None
    height_map_ct_mm: NDArray[np.float64] | None
    ct_valid_fraction: float
    volume_ml: float
    width_mm: float
    depth_mm: float
    ct_edges_raw_mm: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    ct_edge_offset_mm: tuple[float, float] | None = None
    ct_edges_mm: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    #: the image's voxel extent along the body's axis (mm): what a height can resolve
    si_voxel_mm: float = float("nan")

    def endplates(self, source: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(top, bottom) endplate maps (local ``si`` mm) of ``"mask"`` or ``"ct"``."""
        if source == "ct" and self.ct_edges_mm is not None:
            return self.ct_edges_mm
        return self.height_map.top_mm, self.height_map.bottom_mm


def calibrate_ct(
    m: BodyMeasurement, top_offset_mm: float, bottom_offset_mm: float
) -> BodyMeasurement:
    """CT edges with the edge detector's bias removed: superior edges moved by
    ``-top_offset_mm``, inferior ones by ``-bottom_offset_mm`` (offsets are CT minus mask)."""
    if m.ct_edges_raw_mm is None:
        return m
    top = m.ct_edges_raw_mm[0] - top_offset_mm
    bottom = m.ct_edges_raw_mm[1] - bottom_offset_mm
    hmap = top - bottom
    return replace(
        m,
        height_map_ct_mm=hmap,
        heights_ct=region_heights(hmap, m.regions),
        ct_edges_mm=(top, bottom),
    )


def measure_body(
    body: NDArray[np.bool_],
    offset: tuple[int, int, int],
    affine: NDArray[np.float64],
    frame: LocalFrame,
    *,
    ct: NDArray[np.generic] | None = None,
    ct_offset: tuple[int, int, int] | None = None,
    params: MorphometryParams | None = None,
) -> BodyMeasurement:
    """Height map and regional heights of one isolated body.

    Parameters
    ----------
    body : (I, J, K) bool ndarray
        The body on a crop of the canonical grid.
    offset : (3,) int
        The crop's first voxel in the full grid.
    affine : (4, 4) ndarray
        Voxel -> world of the full grid.
    frame : LocalFrame
        The body's frame.
    ct : (I', J', K') ndarray, optional
        A crop of the CT in HU, larger than the body's crop so that the discs around it are in.
    ct_offset : (3,) int, optional
        The CT crop's first voxel in the full grid (default: ``offset``).
    params : MorphometryParams, optional
        Sampling and CT-refinement settings (default: the defaults).
    """
    params = params or MorphometryParams()
    spacing = voxel_sizes(affine)
    ijk = np.argwhere(body).astype(np.float64) + np.array(offset)
    local = voxels_to_local(ijk, affine, frame)
    # voxel extent along the spine axis: |column j of the affine . si| summed in quadrature
    along = float(
        np.sqrt(np.sum((spacing * (np.linalg.inv(affine[:3, :3] / spacing) @ frame.si)) ** 2))
    )
    pad = np.array([params.ct_search_in_mm + 2.0, 2.0, 2.0]) + spacing.max()
    lo, hi = local.min(axis=0) - pad, local.max(axis=0) + pad
    step = params.step_ap_lr_mm
    grid = LocalGrid.covering(frame, lo, hi, step_mm=(params.step_si_mm, step, step))
    smooth = body.astype(np.float32)
    if params.mask_smoothing_mm > 0:
        sigma = np.minimum(1.0, params.mask_smoothing_mm / spacing)
        smooth = ndimage.gaussian_filter(smooth, sigma, mode="constant")
    values = sample(smooth, affine, grid, offset=offset, order=1)
    top, bottom, fp = height_map_from_profiles(values, grid.si)
    hmap = HeightMap(grid.ap, grid.lr, top, bottom, fp)
    heights = hmap.heights_mm
    # Columns that only clip the body's rounded edge, or its side where the frame is tilted by a
    # degree or two, are a few mm tall; they would stretch the extent that the thirds divide.
    tall = fp & (np.nan_to_num(heights) >= params.min_column_fraction * _median(heights[fp]))
    regions = footprint_thirds(tall, step_mm=step, params=params.regions)
    h_mask = region_heights(heights, regions)
    valid = 0.0
    raw_edges: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    offsets = (0.0, 0.0)
    if ct is not None:
        ct32 = ct if ct.dtype == np.float32 else ct.astype(np.float32)
        ct_off = ct_offset or offset

        def ct_at(
            si: NDArray[np.intp], ap: NDArray[np.intp], lr: NDArray[np.intp]
        ) -> NDArray[np.float32]:
            # the CT is read only around the endplates (a sixth of the grid)
            return sample_points(ct32, affine, grid, (si, ap, lr), offset=ct_off, cval=-1000.0)

        min_grad = params.ct_min_gradient_hu_per_mm / max(1.0, along)
        top_ct, bottom_ct = _refine_edges(ct_at, grid.si, top, bottom, fp, params, min_grad)
        offsets = (
            _mean_offset(top_ct - top, regions.body),
            _mean_offset(bottom_ct - bottom, regions.body),
        )
        raw_map = top_ct - bottom_ct
        raw_edges = (top_ct, bottom_ct)
        core = regions.body
        valid = float(np.isfinite(raw_map[core]).mean()) if core.any() else 0.0
    cols = np.flatnonzero(fp.any(axis=0))
    rows = np.flatnonzero(fp.any(axis=1))
    width = float((cols[-1] - cols[0] + 1) * step) if cols.size else 0.0
    depth = float((rows[-1] - rows[0] + 1) * step) if rows.size else 0.0
    volume = float(body.sum() * np.prod(spacing) / 1000.0)
    m = BodyMeasurement(
        hmap, regions, h_mask, None, None, valid, volume, width, depth, si_voxel_mm=along
    )
    if ct is None:
        return m
    m = replace(m, ct_edges_raw_mm=raw_edges, ct_edge_offset_mm=offsets)
    # calibrated on this body alone; grade_study recalibrates over the whole study
    return calibrate_ct(m, *(0.0 if not np.isfinite(o) else o for o in offsets))
