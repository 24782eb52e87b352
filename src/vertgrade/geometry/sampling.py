"""Resampling volumes into a vertebra's local frame.

A :class:`LocalGrid` is a regular grid of points in a vertebra's
:class:`~vertgrade.geometry.frames.LocalFrame`, axes ``(si, ap, lr)`` in mm; :func:`sample`
interpolates a (cropped) voxel array at those points, and :func:`sample_points` at some of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.geometry.frames import LocalFrame

__all__ = ["LocalGrid", "sample", "sample_points", "voxels_to_local"]


@dataclass(frozen=True)
class LocalGrid:
    """Grid point coordinates along each local axis (mm, 1D, increasing)."""

    frame: LocalFrame
    si: NDArray[np.float64]
    ap: NDArray[np.float64]
    lr: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.si.size, self.ap.size, self.lr.size)

    @classmethod
    def covering(
        cls,
        frame: LocalFrame,
        lo: NDArray[np.float64],
        hi: NDArray[np.float64],
        *,
        step_mm: tuple[float, float, float],
    ) -> LocalGrid:
        """Grid covering the local box ``lo..hi`` (each (3,) in ``si, ap, lr`` mm)."""
        axes = []
        for a in range(3):
            # a box a whole number of steps long gets that many steps, whatever its last bits
            # (which depend on the order of floating-point operations)
            n = int(np.ceil((hi[a] - lo[a]) / step_mm[a] - 1e-6)) + 1
            axes.append(lo[a] + step_mm[a] * np.arange(max(n, 2)))
        return cls(frame, axes[0], axes[1], axes[2])


def voxels_to_local(
    ijk: NDArray[np.floating], affine: NDArray[np.float64], frame: LocalFrame
) -> NDArray[np.float64]:
    """(N, 3) voxel indices -> (N, 3) local ``(si, ap, lr)`` mm.

    One 3 x 3 map and offset, applied column by column: an ``(N, 3) @ (3, 3)`` product goes to
    BLAS, which on two threads is many times slower for such thin matrices than these three
    multiply-adds (and its answer depends on the thread count in the last bits).
    """
    rot = frame.rotation
    m = rot @ affine[:3, :3]
    t = rot @ (affine[:3, 3] - frame.origin)
    x = np.asarray(ijk, dtype=np.float64)
    out = np.empty((x.shape[0], 3))
    for r in range(3):
        out[:, r] = x[:, 0] * m[r, 0] + x[:, 1] * m[r, 1] + x[:, 2] * m[r, 2] + t[r]
    return out


def sample(
    array: NDArray[np.generic],
    affine: NDArray[np.float64],
    grid: LocalGrid,
    *,
    offset: tuple[int, int, int] = (0, 0, 0),
    order: int = 1,
    cval: float = 0.0,
) -> NDArray[np.float32]:
    """Interpolate ``array`` at every point of ``grid``.

    Parameters
    ----------
    array : (I, J, K) ndarray
        Voxel data, possibly a crop of a larger volume.
    affine : (4, 4) ndarray
        Voxel -> world affine of the *uncropped* volume.
    grid : LocalGrid
        Where to sample.
    offset : (3,) int
        Index of ``array[0, 0, 0]`` in the uncropped volume.
    order : int
        Spline order (0 nearest, 1 linear).
    cval : float
        Value outside the array.

    Returns
    -------
    (S, A, L) float32 ndarray
    """
    src = array if array.dtype == np.float32 else array.astype(np.float32)
    index_map = _index_map(affine, grid, offset)
    if index_map is not None:
        # evenly spaced axes (every grid vertgrade makes): one affine map from output index to
        # input index, with no (3, S, A, L) coordinate array to build and read
        matrix, start = index_map
        out = ndimage.affine_transform(
            src,
            matrix,
            offset=start,
            output_shape=grid.shape,
            order=order,
            mode="constant",
            cval=cval,
            prefilter=False,
        )
        return out.astype(np.float32, copy=False)
    base, dsi, dap, dlr = _world_map(affine, grid, offset)
    coords = (
        base[:, None, None, None]
        + dsi[:, None, None, None] * grid.si[None, :, None, None]
        + dap[:, None, None, None] * grid.ap[None, None, :, None]
        + dlr[:, None, None, None] * grid.lr[None, None, None, :]
    )
    out = ndimage.map_coordinates(
        src, coords, order=order, mode="constant", cval=cval, prefilter=False
    )
    return out.astype(np.float32, copy=False)


def sample_points(
    array: NDArray[np.generic],
    affine: NDArray[np.float64],
    grid: LocalGrid,
    index: tuple[NDArray[np.integer], NDArray[np.integer], NDArray[np.integer]],
    *,
    offset: tuple[int, int, int] = (0, 0, 0),
    order: int = 1,
    cval: float = 0.0,
) -> NDArray[np.float32]:
    """Interpolate ``array`` at some points of ``grid``, given by their grid indices.

    The values are those of :func:`sample` at the same points, to the last bit: each point's
    input coordinate is computed from its grid index with the same operations, in the same
    order, as :func:`scipy.ndimage.affine_transform` computes it for the whole grid (a test
    checks this). So a search that reads only some of a grid's points, such as bands around
    the endplates, finds what it would find on the whole grid.

    Parameters
    ----------
    array, affine, grid, offset, order, cval
        As for :func:`sample`.
    index : tuple of three int arrays
        Grid indices along ``si``, ``ap`` and ``lr``, broadcast against each other.

    Returns
    -------
    float32 ndarray
        The broadcast shape of the indices.
    """
    src = array if array.dtype == np.float32 else array.astype(np.float32)
    idx = [np.asarray(i) for i in index]
    shape = np.broadcast_shapes(*(i.shape for i in idx))
    coords = np.empty((3, *shape))
    index_map = _index_map(affine, grid, offset)
    if index_map is not None:
        matrix, start = index_map
        for h in range(3):
            # start + index * matrix, term by term: affine_transform's own accumulation (each
            # term broadcast from its own index array, so the sums are the same numbers)
            t = coords[h]
            t[...] = start[h] + idx[0] * matrix[h, 0]
            t += idx[1] * matrix[h, 1]
            t += idx[2] * matrix[h, 2]
    else:
        base, dsi, dap, dlr = _world_map(affine, grid, offset)
        si, ap, lr = grid.si[idx[0]], grid.ap[idx[1]], grid.lr[idx[2]]
        for h in range(3):
            coords[h] = base[h] + dsi[h] * si + dap[h] * ap + dlr[h] * lr
    out = np.empty(shape, np.float32)
    ndimage.map_coordinates(
        src, coords, output=out, order=order, mode="constant", cval=cval, prefilter=False
    )
    return out


def _world_map(
    affine: NDArray[np.float64], grid: LocalGrid, offset: tuple[int, int, int]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Input index of the frame's origin, and the input index steps of one mm along each
    local axis."""
    inv = np.linalg.inv(affine)
    lin = inv[:3, :3]
    f = grid.frame
    base = lin @ f.origin + inv[:3, 3] - np.asarray(offset, dtype=float)
    return base, lin @ f.si, lin @ f.ap, lin @ f.lr


def _index_map(
    affine: NDArray[np.float64], grid: LocalGrid, offset: tuple[int, int, int]
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Grid index -> input index as ``matrix @ index + start``, for evenly spaced axes; else
    ``None``."""
    found = [_step(axis) for axis in (grid.si, grid.ap, grid.lr)]
    steps = [st for st in found if st is not None]
    if len(steps) != 3:
        return None
    base, dsi, dap, dlr = _world_map(affine, grid, offset)
    matrix = np.stack([d * st for d, st in zip((dsi, dap, dlr), steps, strict=True)], axis=1)
    start = base + dsi * grid.si[0] + dap * grid.ap[0] + dlr * grid.lr[0]
    return matrix, start


def _step(axis: NDArray[np.float64]) -> float | None:
    """The spacing of an evenly spaced axis (0 for one point), else ``None``."""
    if axis.size < 2:
        return 0.0
    d = np.diff(axis)
    return float(d[0]) if np.allclose(d, d[0], rtol=1e-9, atol=1e-12) else None
