"""Where the report's images are sampled: volumes interpolated at world points, on the curved
mid-sagittal sheet of the spine overview and on each vertebra's sagittal slice.

Everything here is geometry in world coordinates (RAS+ mm): a volume is read through its own
affine, so that any orientation, spacing or oblique grid gives the same samples; nothing is
drawn (:mod:`vertgrade.report.figures` draws). The inputs are the vertebrae as ``result.json``
holds them (``SpineResult.to_dict()``): frames as ``origin`` / ``si`` / ``ap`` / ``lr`` lists,
endplate planes as ``point_mm`` / ``normal``.

Examples
--------
>>> import numpy as np
>>> from vertgrade.study import Volume
>>> vol = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 1, 1, 1]), "ct")
>>> sample_world(vol, np.array([[2.0, 1.0, 3.0], [1.0, 0.0, 0.0]])).tolist()
[19.0, 6.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from vertgrade.geometry.frames import LocalFrame
from vertgrade.study import Volume

__all__ = [
    "CurvedSheet",
    "PlaneView",
    "anterior_directions",
    "curved_sheet",
    "document_centreline",
    "frame_from_dict",
    "plane_trace",
    "plane_view",
    "sample_world",
    "slice_points",
]

# Points sampled at once from a volume: bounds the block of voxels cropped and converted to
# float32 (a chunk of the overview is ~130 mm of spine).
_CHUNK_POINTS = 1 << 16
# A result without a centreline (a single vertebra): one is made along the frames' si axes, this
# far above and below each frame origin (mm), resampled every _FRAME_LINE_STEP_MM.
_FRAME_LINE_REACH_MM = 30.0
_FRAME_LINE_STEP_MM = 2.0


# --- sampling -----------------------------------------------------------------------------------


def sample_world(
    volume: Volume,
    points_mm: ArrayLike,
    *,
    order: int = 1,
    cval: float = 0.0,
    label: int | None = None,
) -> NDArray[np.float32]:
    """Interpolate a volume at world points.

    Only the block of voxels around each chunk of points is read and converted, so that a whole CT
    is never copied.

    Parameters
    ----------
    volume : Volume
        Any volume; its affine maps voxel indices to world RAS+ mm.
    points_mm : (..., 3) array-like
        World points (mm).
    order : int
        Spline order: 0 nearest neighbour (labels), 1 linear.
    cval : float
        Value outside the volume.
    label : int, optional
        Sample the mask ``volume == label`` (as 0.0 / 1.0) instead of the values: with
        ``order=1`` its 0.5 contour is the mask's outline at sub-voxel precision.

    Returns
    -------
    (...) float32 ndarray
        The values at ``points_mm``; labels sampled with ``order=0`` come back exactly.
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
    flat = pts.reshape(-1, 3)
    inv = np.linalg.inv(volume.affine)
    out = np.full(flat.shape[0], cval, dtype=np.float32)
    shape = np.array(volume.shape)
    array = volume.array
    for start in range(0, flat.shape[0], _CHUNK_POINTS):
        ijk = _voxel_coords(inv, flat[start : start + _CHUNK_POINTS])
        lo = np.maximum(np.floor(ijk.min(axis=1)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 2, shape)
        if np.any(hi <= lo):
            continue  # every point outside the volume
        block = array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if label is not None:
            block = block == label
        block_f = np.ascontiguousarray(block, dtype=np.float32)
        ijk -= lo[:, None]
        out[start : start + ijk.shape[1]] = ndimage.map_coordinates(
            block_f, ijk, order=order, mode="constant", cval=cval, prefilter=False
        )
    return out.reshape(pts.shape[:-1])


def _voxel_coords(
    inv: NDArray[np.floating[Any]], points: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Voxel coordinates ``(3, N)`` of world points ``(N, 3)`` through an inverse affine.

    Written out per axis rather than as one matrix product: a ``(N, 3) @ (3, 3)`` product wakes
    BLAS's threads, which then spin on the other cores for a while after it returns, and an
    ``(N, 3)`` result is slow to reduce along its long axis; ``(3, N)`` is what
    ``map_coordinates`` takes.
    """
    out = np.empty((3, points.shape[0]), dtype=np.float64)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    for r in range(3):
        np.multiply(x, inv[r, 0], out=out[r])
        out[r] += y * inv[r, 1]
        out[r] += z * inv[r, 2]
        out[r] += inv[r, 3]
    return out


def frame_from_dict(frame: Mapping[str, Sequence[float]] | None) -> LocalFrame | None:
    """A :class:`LocalFrame` from its ``result.json`` form (``origin``, ``si``, ``ap``, ``lr``).

    >>> f = frame_from_dict({"origin": [0, 0, 0], "si": [0, 0, 1], "ap": [0, 1, 0],
    ...                      "lr": [1, 0, 0]})
    >>> f.to_local([[1.0, 2.0, 3.0]]).tolist()
    [[3.0, 2.0, 1.0]]
    """
    if frame is None:
        return None
    return LocalFrame(
        *(np.asarray(frame[k], dtype=np.float64) for k in ("origin", "si", "ap", "lr"))
    )


# --- the curved reformat ------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvedSheet:
    """Sample points of a curved mid-sagittal reformat.

    Row ``i`` lies on the centreline at arc length ``arc_mm[i]`` (cranial first); column ``j`` is
    ``offsets_mm[j]`` along that row's anterior direction (negative: posterior).

    Attributes
    ----------
    points_mm : (S, T, 3) float ndarray
        World points (RAS+ mm).
    arc_mm : (S,) float ndarray
        Arc length along the centreline, increasing caudally.
    offsets_mm : (T,) float ndarray
        Signed distance along the anterior direction.
    centre_mm : (S, 3) float ndarray
        The centreline points of the rows.
    anterior : (S, 3) float ndarray
        Unit anterior direction of each row, perpendicular to the centreline.
    """

    points_mm: NDArray[np.float64]
    arc_mm: NDArray[np.float64]
    offsets_mm: NDArray[np.float64]
    centre_mm: NDArray[np.float64]
    anterior: NDArray[np.float64]

    def arc_of(self, point_mm: ArrayLike) -> float:
        """Arc length (mm) of the centreline point nearest to ``point_mm``, refined by projecting
        onto the local tangent."""
        p = np.asarray(point_mm, dtype=np.float64)
        d = np.linalg.norm(self.centre_mm - p, axis=1)
        i = int(np.argmin(d))
        j = min(i + 1, len(self.arc_mm) - 1) if i == 0 else i - 1
        lo, hi = (i, j) if self.arc_mm[j] > self.arc_mm[i] else (j, i)
        seg = self.centre_mm[hi] - self.centre_mm[lo]
        n2 = float(seg @ seg)
        if hi == lo or n2 == 0:
            return float(self.arc_mm[i])
        t = float(np.clip((p - self.centre_mm[lo]) @ seg / n2, -1.0, 2.0))
        return float(self.arc_mm[lo] + t * (self.arc_mm[hi] - self.arc_mm[lo]))


def _arc_lengths(points: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]


def anterior_directions(
    centreline_mm: ArrayLike, frames: Sequence[LocalFrame]
) -> NDArray[np.float64]:
    """Unit anterior direction at each centreline point, interpolated between vertebra frames.

    Each frame's ``ap`` axis is placed at the arc length of its origin's nearest centreline point;
    the three components are interpolated linearly in arc length (held constant beyond the first
    and last frame), then made perpendicular to the centreline's tangent and normalised. Without
    any frame the world anterior ``(0, 1, 0)`` is used.

    Parameters
    ----------
    centreline_mm : (N, 3) array-like
        Centreline points, world mm, cranial first, N >= 2.
    frames : sequence of LocalFrame

    Returns
    -------
    (N, 3) float ndarray

    Examples
    --------
    >>> line = np.stack([np.zeros(5), np.zeros(5), -2.0 * np.arange(5)], axis=1)
    >>> f = LocalFrame.from_axes([0, 0, -4.0], si=[0, 0, 1], anterior=[0, 1, 1])
    >>> anterior_directions(line, [f]).round(6).tolist()[0]
    [0.0, 1.0, 0.0]
    """
    c = np.asarray(centreline_mm, dtype=np.float64)
    s = _arc_lengths(c)
    tangent = np.gradient(c, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    if frames:
        pos = np.array([s[int(np.argmin(np.linalg.norm(c - f.origin, axis=1)))] for f in frames])
        order = np.argsort(pos, kind="stable")
        pos = pos[order]
        aps = np.stack([frames[i].ap for i in order])
        a = np.stack([np.interp(s, pos, aps[:, k]) for k in range(3)], axis=1)
    else:
        a = np.tile([0.0, 1.0, 0.0], (len(c), 1))
    a -= np.sum(a * tangent, axis=1, keepdims=True) * tangent
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-6
    if np.any(bad):  # anterior parallel to the curve: fall back on the world anterior
        w = (
            np.array([0.0, 1.0, 0.0])
            - (tangent[bad] @ np.array([0.0, 1.0, 0.0]))[:, None] * (tangent[bad])
        )
        a[bad] = w
        norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norm, 1e-12)


def curved_sheet(
    centreline_mm: ArrayLike,
    frames: Sequence[LocalFrame],
    *,
    anterior_mm: float,
    posterior_mm: float,
    step_mm: float,
) -> CurvedSheet:
    """Sample points of the curved mid-sagittal reformat along a centreline.

    The centreline is resampled every ``step_mm`` of arc length; at each point a line runs along
    the local anterior direction (:func:`anterior_directions`) from ``posterior_mm`` behind to
    ``anterior_mm`` in front of it. The rows are equally spaced in arc length: the reformat
    straightens the spine.

    Parameters
    ----------
    centreline_mm : (N, 3) array-like
        World mm, cranial first, N >= 2.
    frames : sequence of LocalFrame
        The vertebrae's frames (their ``ap`` axes orient the lines).
    anterior_mm, posterior_mm : float
        How far each line reaches in front of and behind the centreline (mm).
    step_mm : float
        Spacing of the rows (arc length) and of the columns (mm).

    Returns
    -------
    CurvedSheet

    Examples
    --------
    >>> line = np.stack([np.zeros(11), np.zeros(11), -2.0 * np.arange(11)], axis=1)
    >>> sh = curved_sheet(line, [], anterior_mm=2, posterior_mm=2, step_mm=1)
    >>> sh.points_mm.shape, sh.points_mm[3, 0].tolist()
    ((21, 5, 3), [0.0, -2.0, -3.0])
    """
    c = np.asarray(centreline_mm, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or len(c) < 2:
        raise ValueError(f"centreline must be (N >= 2, 3), got {c.shape}")
    s = _arc_lengths(c)
    ant = anterior_directions(c, frames)
    arc = np.arange(0.0, s[-1] + 1e-9, step_mm)
    centre = np.stack([np.interp(arc, s, c[:, k]) for k in range(3)], axis=1)
    a = np.stack([np.interp(arc, s, ant[:, k]) for k in range(3)], axis=1)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    n_post = round(posterior_mm / step_mm)
    n_ant = round(anterior_mm / step_mm)
    offsets = step_mm * np.arange(-n_post, n_ant + 1, dtype=np.float64)
    points = centre[:, None, :] + offsets[None, :, None] * a[:, None, :]
    return CurvedSheet(points, arc, offsets, centre, a)


# --- coronal and sagittal views that keep the world's angles ----------------------------------

# World axis index of each view's columns and of its depth (RAS+: x right, y anterior, z up).
_VIEW_AXES: dict[str, tuple[int, int]] = {"coronal": (0, 1), "sagittal": (1, 0)}


@dataclass(frozen=True)
class PlaneView:
    """Sample points of a coronal or sagittal view that follows the spine in depth.

    Row ``i`` is the world height ``z_mm[i]`` (superior first); column ``j`` the world coordinate
    ``across_mm[j]`` (``x`` for the coronal view, ``y`` for the sagittal one); the depth (``y``,
    resp. ``x``) of each row is the centreline's at that height, plus ``slab_mm``. Unlike the
    curved reformat, rows and columns are world axes: an angle drawn on the view is the angle
    in the patient's coronal (sagittal) plane, the projection the Cobb angles (kyphosis,
    lordosis) are measured in (:mod:`vertgrade.alignment`).

    Attributes
    ----------
    view : {"coronal", "sagittal"}
    points_mm : (D, R, C, 3) float ndarray
        World points (RAS+ mm), one sheet per depth of ``slab_mm``.
    z_mm : (R,) float ndarray
        Decreasing: superior first.
    across_mm : (C,) float ndarray
        Increasing.
    depth_mm : (R,) float ndarray
        The centreline's depth at each row.
    slab_mm : (D,) float ndarray
        Depth offsets of the sheets (averaged into one image).
    """

    view: str
    points_mm: NDArray[np.float64]
    z_mm: NDArray[np.float64]
    across_mm: NDArray[np.float64]
    depth_mm: NDArray[np.float64]
    slab_mm: NDArray[np.float64]

    @property
    def across_axis(self) -> int:
        """World axis of the columns (0: ``x``, 1: ``y``)."""
        return _VIEW_AXES[self.view][0]


def plane_view(
    centreline_mm: ArrayLike,
    view: str,
    *,
    across_mm: tuple[float, float],
    margin_mm: float,
    step_mm: float,
    slab_mm: Sequence[float] = (0.0,),
) -> PlaneView:
    """Sample points of a coronal or sagittal view along a centreline (see :class:`PlaneView`).

    Parameters
    ----------
    centreline_mm : (N, 3) array-like
        World mm, N >= 2.
    view : {"coronal", "sagittal"}
    across_mm : (float, float)
        The range of the columns, in world ``x`` (coronal) or ``y`` (sagittal).
    margin_mm : float
        How far the rows reach above and below the centreline's ends.
    step_mm : float
        Spacing of rows and columns.
    slab_mm : sequence of float
        Depth offsets of the sheets to average (a thin slab smooths the view).

    Returns
    -------
    PlaneView

    Examples
    --------
    >>> line = np.array([[0.0, 10.0, 0.0], [0.0, 20.0, -10.0]])
    >>> v = plane_view(line, "coronal", across_mm=(-1.0, 1.0), margin_mm=0.0, step_mm=5.0)
    >>> v.points_mm.shape, v.points_mm[0, :, 0].tolist()
    ((1, 3, 1, 3), [[-1.0, 10.0, 0.0], [-1.0, 15.0, -5.0], [-1.0, 20.0, -10.0]])
    """
    if view not in _VIEW_AXES:
        raise ValueError(f"view must be 'coronal' or 'sagittal', got {view!r}")
    c = np.asarray(centreline_mm, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or len(c) < 2:
        raise ValueError(f"centreline must be (N >= 2, 3), got {c.shape}")
    across_axis, depth_axis = _VIEW_AXES[view]
    order = np.argsort(c[:, 2], kind="stable")
    zs, depths = c[order, 2], c[order, depth_axis]
    n_rows = int(np.floor((zs[-1] - zs[0] + 2 * margin_mm) / step_mm + 1e-9)) + 1
    z = zs[-1] + margin_mm - step_mm * np.arange(n_rows, dtype=np.float64)
    depth = np.interp(z, zs, depths)  # held constant beyond the ends
    n_cols = int(np.floor((across_mm[1] - across_mm[0]) / step_mm + 1e-9)) + 1
    across = across_mm[0] + step_mm * np.arange(n_cols, dtype=np.float64)
    slab = np.asarray(slab_mm, dtype=np.float64).reshape(-1)
    pts = np.zeros((len(slab), n_rows, n_cols, 3), dtype=np.float64)
    pts[..., 2] = z[None, :, None]
    pts[..., across_axis] = across[None, None, :]
    pts[..., depth_axis] = depth[None, :, None] + slab[:, None, None]
    return PlaneView(view, pts, z, across, depth, slab)


# --- what a result document gives -------------------------------------------------------------


def document_centreline(document: Mapping[str, Any]) -> NDArray[np.float64] | None:
    """The centreline of a result document, or one made from its frames.

    A document whose ``centreline_mm`` has fewer than 2 points (a single vertebra) gets a line
    through the points 30 mm above and below each frame origin along its ``si`` axis (or through
    the centroids of vertebrae without a frame), resampled every 2 mm.

    Parameters
    ----------
    document : mapping
        The result as ``result.json`` holds it.

    Returns
    -------
    (N, 3) float ndarray or None
        World mm, cranial first; ``None`` with fewer than two distinct points to make one from.

    Examples
    --------
    >>> frame = {"origin": [0, 0, 0], "si": [0, 0, 1], "ap": [0, 1, 0], "lr": [1, 0, 0]}
    >>> line = document_centreline({"centreline_mm": [], "vertebrae": [{"frame": frame}]})
    >>> line.shape, line[0].tolist(), line[-1].tolist()
    ((31, 3), [0.0, 0.0, 30.0], [0.0, 0.0, -30.0])
    >>> document_centreline({"vertebrae": []}) is None
    True
    """
    c = np.asarray(document.get("centreline_mm") or [], dtype=np.float64).reshape(-1, 3)
    if len(c) >= 2:
        return c
    anchors: list[NDArray[np.float64]] = []
    for v in document.get("vertebrae", []):
        f = frame_from_dict(v.get("frame"))
        if f is not None:
            reach = _FRAME_LINE_REACH_MM
            anchors += [f.origin + reach * f.si, f.origin - reach * f.si]
        elif v.get("centroid_mm") is not None:
            anchors.append(np.asarray(v["centroid_mm"], dtype=np.float64))
    if len(anchors) < 2:
        return None
    pts = np.stack(anchors)
    s = _arc_lengths(pts)
    if s[-1] <= 0:
        return None
    keep = np.r_[True, np.diff(s) > 0]
    pts, s = pts[keep], s[keep]
    grid = np.arange(0.0, s[-1] + 1e-9, _FRAME_LINE_STEP_MM)
    return np.stack([np.interp(grid, s, pts[:, k]) for k in range(3)], axis=1)


# --- a vertebra's sagittal slice ----------------------------------------------------------------


def slice_points(
    frame: LocalFrame, si_mm: NDArray[np.float64], ap_mm: NDArray[np.float64]
) -> NDArray[np.float64]:
    """World points of the sagittal slice ``lr = 0`` of a vertebra's local frame.

    Parameters
    ----------
    frame : LocalFrame
    si_mm : (R,) float ndarray
        The rows: distance along the frame's ``si`` axis (mm from its origin).
    ap_mm : (C,) float ndarray
        The columns: distance along the frame's ``ap`` axis.

    Returns
    -------
    (R, C, 3) float ndarray
        World points (RAS+ mm).

    Examples
    --------
    >>> f = frame_from_dict({"origin": [1, 2, 3], "si": [0, 0, 1], "ap": [0, 1, 0],
    ...                      "lr": [1, 0, 0]})
    >>> slice_points(f, np.array([1.0, 0.0]), np.array([0.0, 5.0]))[0, 1].tolist()
    [1.0, 7.0, 4.0]
    """
    si, ap = np.asarray(si_mm, dtype=np.float64), np.asarray(ap_mm, dtype=np.float64)
    return (
        frame.origin[None, None, :]
        + si[:, None, None] * frame.si[None, None, :]
        + ap[None, :, None] * frame.ap[None, None, :]
    )


def plane_trace(
    plane: Mapping[str, Sequence[float]], frame: LocalFrame, ap_mm: NDArray[np.float64]
) -> NDArray[np.float64] | None:
    """Where an endplate plane crosses a vertebra's sagittal slice ``lr = 0``.

    Parameters
    ----------
    plane : mapping
        ``point_mm`` and ``normal`` (world), as ``result.json``'s ``endplates`` hold them.
    frame : LocalFrame
    ap_mm : (C,) float ndarray
        Positions along the frame's ``ap`` axis (mm).

    Returns
    -------
    (C,) float ndarray or None
        ``si`` (mm) of the plane at each ``ap``; ``None`` for a plane within ~12 degrees of
        parallel to ``si`` (not an endplate seen from the side).

    Examples
    --------
    >>> f = frame_from_dict({"origin": [0, 0, 0], "si": [0, 0, 1], "ap": [0, 1, 0],
    ...                      "lr": [1, 0, 0]})
    >>> plane_trace({"point_mm": [0, 0, 10], "normal": [0, 0, 1]}, f, np.array([-5.0, 5.0]))
    array([10., 10.])
    """
    ap = np.asarray(ap_mm, dtype=np.float64)
    p = frame.to_local(np.asarray(plane["point_mm"], dtype=np.float64)[None, :])[0]
    n = frame.rotation @ np.asarray(plane["normal"], dtype=np.float64)
    if abs(n[0]) < 0.2:  # a plane nearly parallel to si: not an endplate seen from the side
        return None
    si: NDArray[np.float64] = p[0] - (n[1] * (ap - p[1]) + n[2] * (0.0 - p[2])) / n[0]
    return si
