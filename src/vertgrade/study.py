"""The image model: a :class:`Volume` is an array with its affine, and a :class:`Study` is a CT
(optional) with its vertebra labels on the same grid.

Inside vertgrade every volume is in the closest canonical (RAS+) voxel order, as
``nibabel.as_closest_canonical`` gives it; the affine still maps voxels to world millimetres,
so oblique acquisitions stay exact. The input's own grid is kept in :class:`GridInfo`, so that
image outputs are written back on the grid and affine of the input CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["GridInfo", "Study", "Volume", "find_objects"]


@dataclass(frozen=True)
class Volume:
    """A 3D array with its voxel -> world (RAS+ mm) affine.

    There is no default affine: a missing affine would make every millimetre wrong.

    >>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.5, 1, 3, 1]), "ct")
    >>> v
    Volume(ct, shape=(4, 5, 6), spacing=(0.5, 1, 3) mm, orientation=RAS)
    """

    array: NDArray[np.generic]
    affine: NDArray[np.float64]
    kind: Literal["ct", "labels", "mask"]
    source: Path | None = None

    def __post_init__(self) -> None:
        aff = np.array(self.affine, dtype=np.float64, copy=True)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise ValueError(f"affine must be a finite 4x4 matrix, got shape {aff.shape}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise ValueError("affine is singular")
        if np.ndim(self.array) != 3:
            raise ValueError(f"a Volume is 3D, got {np.ndim(self.array)}D")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    def label_boxes(self) -> list[tuple[slice, slice, slice] | None]:
        """:func:`find_objects` of an integer volume, scanned once per ``Volume``: loading and
        grading both need the labels' boxes, and a whole-spine CT takes a quarter of a second
        to scan. The array is treated as read-only, as everywhere in vertgrade (a changed
        array makes a new ``Volume``)."""
        boxes: list[tuple[slice, slice, slice] | None] | None = self.__dict__.get("_boxes")
        if boxes is None:
            boxes = find_objects(self.array)  # type: ignore[arg-type]
            object.__setattr__(self, "_boxes", boxes)
        return list(boxes)

    @property
    def spacing(self) -> NDArray[np.float64]:
        """(3,) voxel sizes in mm (column norms of the affine's linear part)."""
        sizes: NDArray[np.float64] = voxel_sizes(self.affine)
        return sizes

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    def __repr__(self) -> str:
        sp = ", ".join(f"{float(s):.4g}" for s in self.spacing)
        return (
            f"Volume({self.kind}, shape={self.shape}, spacing=({sp}) mm, "
            f"orientation={self.orientation})"
        )


def find_objects(labels: NDArray[np.integer]) -> list[tuple[slice, slice, slice] | None]:
    """The bounding box of every label: ``scipy.ndimage.find_objects``, in the array's memory order.

    Reoriented volumes are views with swapped or reversed axes; scanning them in index order
    jumps through memory and is ten times slower than scanning the same memory in order. The
    result is the same as ``ndimage.find_objects(labels)``.

    Parameters
    ----------
    labels : (I, J, K) integer ndarray
        A label volume (any memory layout, views included).

    Returns
    -------
    list of (3,) tuple of slice, or None
        Entry ``n - 1`` is the index box of label ``n``, ``None`` where label ``n`` is absent.

    Examples
    --------
    >>> a = np.zeros((4, 5, 6), np.uint8); a[1:3, 2, 3:5] = 2
    >>> find_objects(np.asfortranarray(a)[::-1]) == ndimage.find_objects(a[::-1])
    True
    >>> find_objects(a)
    [None, (slice(1, 3, None), slice(2, 3, None), slice(3, 5, None))]
    """
    order = np.argsort([-abs(st) for st in labels.strides], kind="stable")
    view = labels.transpose(order)
    flips = [view.strides[i] < 0 for i in range(labels.ndim)]
    view = view[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    out: list[tuple[slice, slice, slice] | None] = []
    for obj in ndimage.find_objects(view):
        if obj is None:
            out.append(None)
            continue
        back: list[slice] = [slice(0)] * labels.ndim
        for vi, ax in enumerate(order):
            sl, n = obj[vi], labels.shape[ax]
            back[ax] = slice(n - sl.stop, n - sl.start) if flips[vi] else sl
        out.append(tuple(back))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class GridInfo:
    """The grid of an input file before reorientation: shape, affine and the orientation
    transform (nibabel ``ornt``) that took it to canonical order."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]
    ornt: NDArray[np.float64]

    def to_input_grid(
        self, canonical: NDArray[np.generic], *, order: Literal["C", "F"] = "C"
    ) -> NDArray[np.generic]:
        """Map an array on the canonical grid back onto the input's voxel grid, as one
        contiguous array in ``order`` (``"F"`` is what NIfTI files store, so a writer need not
        transpose it again)."""
        inverse = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(("R", "A", "S")), self.ornt
        )
        out = nib.orientations.apply_orientation(canonical, inverse)
        if out.shape != self.shape:
            raise RuntimeError(f"grid mismatch: {out.shape} != {self.shape}")
        return np.asfortranarray(out) if order == "F" else np.ascontiguousarray(out)


@dataclass(frozen=True)
class Study:
    """One subject's inputs on one canonical grid.

    Attributes
    ----------
    labels : Volume
        Vertebra instance labels, VerSe numbering, integer array.
    ct : Volume or None
        CT in HU on the same grid as ``labels``; ``None`` for a labels-only study.
    bodies : Volume or None
        An optional vertebral-body mask (e.g. TotalSegmentator's ``vertebrae_body``): where given,
        it replaces vertgrade's own body isolation.
    grid : GridInfo
        The CT's (or, without CT, the labels') input grid, for writing outputs back.
    inputs : dict
        Role -> path of every file read (``ct``, ``labels``, ``bodies``, ``centroids``).
    checksums : dict
        Role -> SHA-256 of that file (for a folder of files: of their names and checksums).
    notes : tuple of str
        What loading did that a user should know (resampling, label format detected, ...).
    centroids : dict
        Label -> (3,) world mm, from a VerSe centroid file where one was found.
    outside_ct : dict
        Labels wholly outside the CT's field of view (lost when the labels were put on the CT's
        grid) -> their centre (world mm): graded as not gradable, with the reason, so that every
        labelled vertebra appears in the results.
    """

    labels: Volume
    grid: GridInfo
    subject: str
    ct: Volume | None = None
    bodies: Volume | None = None
    inputs: dict[str, Path] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    centroids: dict[int, NDArray[np.float64]] = field(default_factory=dict)
    outside_ct: dict[int, NDArray[np.float64]] = field(default_factory=dict)
