"""The body footprint's convex hull and disc, without scikit-image.

``convex_hull_mask`` and ``disk`` replace scikit-image's ``convex_hull_image`` and ``disk`` in
:mod:`vertgrade.geometry.body`. Literal masks worked out by hand, then scikit-image itself as the
oracle (where installed) on many shapes and on the projections of phantom vertebrae.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.geometry.body import convex_hull_mask, disk


def _mask(shape: tuple[int, int], *pixels: tuple[int, int]) -> NDArray[np.bool_]:
    m = np.zeros(shape, dtype=bool)
    for p in pixels:
        m[p] = True
    return m


#: (mask pixels, shape, expected hull): each pixel counts as the diamond of its edge midpoints,
#: and a pixel is in the hull where its centre is inside or on the polygon around them.
LITERAL = [
    # one pixel: its diamond holds only its own centre
    (((1, 1),), (3, 3), [[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    # a row: the diamonds reach half a pixel above and below, not the next row's centres
    (((0, 0), (0, 3)), (3, 4), [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]),
    # a right triangle: everything on or below the anti-diagonal
    (
        ((0, 0), (4, 0), (0, 4)),
        (5, 5),
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]],
    ),
    # the centre of (1, 1) lies exactly on the edge from (0, 0.5) to (1.5, 2): kept
    (((0, 0), (1, 2)), (2, 3), [[1, 1, 0], [0, 1, 1]]),
    # a steep pair: the centres beside the segment lie outside the band
    (((0, 0), (3, 1)), (4, 2), [[1, 0], [1, 0], [0, 1], [0, 1]]),
    # a ring's hole is filled
    (
        ((0, 1), (1, 0), (1, 2), (2, 1)),
        (3, 3),
        [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
    ),
]


@pytest.mark.parametrize(("pixels", "shape", "expected"), LITERAL)
def test_convex_hull_literal(
    pixels: tuple[tuple[int, int], ...], shape: tuple[int, int], expected: list[list[int]]
) -> None:
    hull = convex_hull_mask(_mask(shape, *pixels))
    assert hull.dtype == bool
    np.testing.assert_array_equal(hull.astype(int), expected)


def test_convex_hull_holds_the_mask_within_its_box() -> None:
    """The hull holds every pixel of the mask, stays inside its bounding box and only grows
    when taken again (the pixels' diamonds reach half a pixel beyond the hull's border)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random((20, 30)) < 0.05
        if not m.any():
            continue
        hull = convex_hull_mask(m)
        assert np.all(hull[m])
        box = ndimage.find_objects(m.astype(np.uint8))[0]
        outside = np.ones_like(m)
        outside[box] = False
        assert not hull[outside].any()
        assert np.all(convex_hull_mask(hull)[hull])


def test_convex_hull_empty_and_wrong_dimensions() -> None:
    assert not convex_hull_mask(np.zeros((4, 5), bool)).any()
    with pytest.raises(ValueError, match="2-D"):
        convex_hull_mask(np.ones((2, 2, 2), bool))


def test_disk_literal() -> None:
    np.testing.assert_array_equal(disk(0).astype(int), [[1]])
    np.testing.assert_array_equal(
        disk(2).astype(int),
        [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]],
    )


def _shapes(n: int, seed: int) -> list[NDArray[np.bool_]]:
    """Sparse points, opened noise, and elliptical rings (a body with a canal), of many sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = (int(rng.integers(3, 80)), int(rng.integers(3, 80)))
        if i % 3 == 0:
            m = rng.random(shape) < rng.uniform(0.002, 0.05)
        elif i % 3 == 1:
            m = ndimage.binary_opening(rng.random(shape) < 0.6)
        else:
            yy, xx = np.mgrid[: shape[0], : shape[1]]
            cy, cx = rng.random(2) * shape
            ry, rx = 1 + rng.random(2) * np.array(shape) / 2
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            m &= ((yy - cy - ry / 3) / (ry / 2)) ** 2 + ((xx - cx) / (rx / 3)) ** 2 > 1
        if m.any():
            out.append(m)
    return out


def test_matches_scikit_image() -> None:
    """The same masks as scikit-image's ``convex_hull_image`` and ``disk`` (its defaults)."""
    morphology = pytest.importorskip("skimage.morphology")
    shapes = _shapes(600, seed=1)
    assert len(shapes) > 500
    for m in shapes:
        np.testing.assert_array_equal(convex_hull_mask(m), morphology.convex_hull_image(m))
    for r in range(20):
        np.testing.assert_array_equal(disk(r), morphology.disk(r).astype(bool))


def test_matches_scikit_image_on_phantom_slices() -> None:
    """Every axial, coronal and sagittal slice of a phantom's vertebra labels."""
    morphology = pytest.importorskip("skimage.morphology")
    from vertgrade.phantom import make_phantom

    labels = make_phantom("L1-L2", seed=0).labels
    n = 0
    for value in np.unique(labels[labels > 0]):
        m3 = labels == value
        box = ndimage.find_objects(m3.astype(np.uint8))[0]
        m3 = m3[box]
        for axis in range(3):
            for k in range(0, m3.shape[axis], 3):
                sl = np.take(m3, k, axis=axis)
                if sl.any():
                    n += 1
                    np.testing.assert_array_equal(
                        convex_hull_mask(sl), morphology.convex_hull_image(sl)
                    )
    assert n > 50
