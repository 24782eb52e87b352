"""Resampling in a vertebra's frame, and the CT edge search that reads only bands of the grid.

The band search must find what a search over the whole resampled grid finds, to the last bit:
:func:`sample_points` against :func:`sample`, and ``_refine_edges`` against the whole-grid search
written out here (``numpy.gradient`` along ``si``, then the first steepest rise in the window).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from vertgrade.config import MorphometryParams
from vertgrade.geometry.frames import LocalFrame
from vertgrade.geometry.sampling import LocalGrid, sample, sample_points
from vertgrade.morphometry import _refine_edges


def _affine(spacing: tuple[float, float, float], flip: bool) -> NDArray[np.float64]:
    a = np.diag([*spacing, 1.0])
    if flip:  # LPS-like: the first two axes run the other way
        a[:2, :2] *= -1
        a[:2, 3] = [spacing[0] * 40, spacing[1] * 40]
    a[:3, 3] += [3.0, -7.5, 11.25]
    return a


@pytest.mark.parametrize(
    ("spacing", "flip", "tilt"),
    [((1.0, 1.0, 1.0), False, 0.0), ((0.8, 0.8, 3.0), True, 12.0), ((1.5, 1.2, 2.0), False, 27.0)],
)
def test_points_are_the_whole_grid_values_to_the_last_bit(
    spacing: tuple[float, float, float], flip: bool, tilt: float
) -> None:
    rng = np.random.default_rng(7)
    array = (rng.normal(size=(40, 44, 30)) * 300).astype(np.int16)
    affine = _affine(spacing, flip)
    centre = affine[:3, :3] @ np.array([20.0, 22.0, 15.0]) + affine[:3, 3]
    t = np.radians(tilt)
    frame = LocalFrame.from_axes(centre, si=[np.sin(t), 0.3 * np.sin(t), np.cos(t)])
    grid = LocalGrid.covering(
        frame, np.array([-40.0, -11.0, -12.0]), np.array([41.0, 12.5, 13.0]), step_mm=(0.5, 1, 1)
    )
    offset = (2, 1, 3)
    whole = sample(array, affine, grid, offset=offset, cval=-1000.0)
    i = rng.integers(0, grid.shape[0], size=(300, 5))
    a = rng.integers(0, grid.shape[1], size=(300, 1))
    lr = rng.integers(0, grid.shape[2], size=(300, 1))
    part = sample_points(array, affine, grid, (i, a, lr), offset=offset, cval=-1000.0)
    assert part.dtype == np.float32 and part.shape == (300, 5)
    assert np.array_equal(part, whole[i, a, lr])
    # values outside the array take cval, as on the whole grid
    assert (whole == -1000.0).any()


def test_points_of_an_uneven_grid_are_its_values_too() -> None:
    rng = np.random.default_rng(11)
    array = rng.normal(size=(30, 30, 30)).astype(np.float32)
    affine = _affine((1.2, 1.0, 2.0), flip=True)
    centre = affine[:3, :3] @ np.array([15.0, 15.0, 15.0]) + affine[:3, 3]
    frame = LocalFrame.from_axes(centre, si=[0.1, 0.2, 1.0])
    grid = LocalGrid(
        frame, np.cumsum(rng.uniform(0.3, 1.0, 40)) - 15, np.linspace(-9, 9, 19), np.arange(-8.0, 8)
    )
    whole = sample(array, affine, grid)
    i, a, lr = (rng.integers(0, n, size=(50, 3)) for n in grid.shape)
    assert np.array_equal(sample_points(array, affine, grid, (i, a, lr)), whole[i, a, lr])


def _whole_grid_search(
    ct: NDArray[np.float64],
    si: NDArray[np.float64],
    top: NDArray[np.float64],
    bottom: NDArray[np.float64],
    fp: NDArray[np.bool_],
    params: MorphometryParams,
    min_gradient: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    step = float(si[1] - si[0])
    grad = np.gradient(ct, step, axis=0)
    s = si[:, None, None]

    def locate(sign: float, centre: NDArray[np.float64], lo: float, hi: float):
        window = (s >= (centre - lo)[None]) & (s <= (centre + hi)[None])
        score = np.where(window, sign * grad, -np.inf)
        k = np.argmax(score, axis=0)
        best = np.take_along_axis(score, k[None], axis=0)[0]
        g0 = np.take_along_axis(sign * grad, np.clip(k - 1, 0, len(si) - 1)[None], axis=0)[0]
        g2 = np.take_along_axis(sign * grad, np.clip(k + 1, 0, len(si) - 1)[None], axis=0)[0]
        denom = g0 - 2 * best + g2
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(np.abs(denom) > 1e-9, 0.5 * (g0 - g2) / denom, 0.0)
        delta = np.clip(np.nan_to_num(delta), -0.5, 0.5)
        ok = fp & np.isfinite(best) & (best >= min_gradient)
        return np.where(ok, si[k] + delta * step, np.nan)

    return (
        locate(-1.0, np.nan_to_num(top), params.ct_search_in_mm, params.ct_search_out_mm),
        locate(+1.0, np.nan_to_num(bottom), params.ct_search_out_mm, params.ct_search_in_mm),
    )


@pytest.mark.parametrize("n_rows", [60, 14])
def test_band_search_finds_what_the_whole_grid_search_finds(n_rows: int) -> None:
    rng = np.random.default_rng(3)
    si = -12.0 + 0.5 * np.arange(n_rows)
    shape = (n_rows, 9, 8)
    # bone between a bottom and a top plateau edge, noise, and integer steps: exact gradient ties
    z = si[:, None, None]
    lo_edge = rng.uniform(si[0] - 2, si[0] + 8, size=shape[1:])
    hi_edge = lo_edge + rng.uniform(4, 25, size=shape[1:])
    ct = np.where((z > lo_edge) & (z < hi_edge), 400.0, -50.0)
    ct[:, :4] += np.round(rng.normal(scale=30, size=(n_rows, 4, 8)))
    ct[:, 4:6] = np.repeat(np.arange(n_rows)[:, None, None] % 4 * 100.0, 2, axis=1)[..., :8]
    ct = ct.astype(np.float32).astype(np.float64)
    top = np.clip(hi_edge + rng.normal(scale=1.5, size=hi_edge.shape), si[0], si[-1])
    bottom = np.clip(lo_edge + rng.normal(scale=1.5, size=lo_edge.shape), si[0], si[-1])
    fp = rng.random(shape[1:]) > 0.15
    top[~fp] = bottom[~fp] = np.nan
    params = MorphometryParams()

    def ct_at(i: NDArray[np.intp], a: NDArray[np.intp], lr: NDArray[np.intp]) -> NDArray:
        return ct[i, a, lr].astype(np.float32)

    for min_gradient in (0.0, 80.0, 1e9):
        got = _refine_edges(ct_at, si, top, bottom, fp, params, min_gradient)
        want = _whole_grid_search(ct, si, top, bottom, fp, params, min_gradient)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w, equal_nan=True)
    assert np.isfinite(got[0]).sum() == 0  # nothing rises by 1e9 HU/mm


def test_a_step_edge_is_found_at_its_midpoint() -> None:
    # one column: bone (500 HU) below si = 10 mm, disc (0 HU) above; the central differences
    # at the samples 9.5 and 10.0 mm tie (-500 HU/mm), their neighbours are flat: the parabola
    # puts the edge midway, at 9.75 mm. The same below a disc that ends at 2.0 mm: 2.25 mm.
    si = np.arange(0.0, 30.0, 0.5)
    ct = np.where(si < 10.0, 500.0, 0.0)[:, None, None]
    ct[si <= 2.0] = 0.0
    fp = np.ones((1, 1), bool)

    def ct_at(i: NDArray[np.intp], a: NDArray[np.intp], lr: NDArray[np.intp]) -> NDArray:
        return ct[i, a, lr].astype(np.float32)

    top_ct, bottom_ct = _refine_edges(
        ct_at, si, np.full((1, 1), 11.0), np.full((1, 1), 3.0), fp, MorphometryParams(), 80.0
    )
    assert top_ct[0, 0] == pytest.approx(9.75)
    assert bottom_ct[0, 0] == pytest.approx(2.25)
