"""The checks and the reorientation every reader shares (not for users to import).

A file of any format (:mod:`vertgrade.io.nifti`, :mod:`vertgrade.io._sitk`) and an image held in
memory (:mod:`vertgrade.io.memory`) end in the same two steps: :func:`checked_geometry` (a 3D
shape, a finite, non-singular affine in millimetres), done before the voxels are read so that a
bad header fails at once, then :func:`canonical_volume` (CT or label values checked, voxels put
in the closest canonical RAS+ order).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.labels import as_integer_labels, check_ct
from vertgrade.study import GridInfo, Volume

logger = logging.getLogger(__name__)

__all__ = ["VOXEL_MM_RANGE", "canonical_volume", "check_qform_sform", "checked_geometry"]

#: Voxel sizes outside this range (mm) are not a CT in millimetres (a unit error).
VOXEL_MM_RANGE = (0.05, 50.0)
#: qform and sform further apart than this (mm, at the image's corners) are reported.
_QFORM_SFORM_TOL_MM = 1.0


def checked_geometry(
    source: Path, shape: tuple[int, ...], affine: object
) -> tuple[tuple[int, int, int], NDArray[np.float64]]:
    """Check an image's shape and voxel -> world (RAS+ mm) affine.

    Parameters
    ----------
    source : Path
        The file (or the in-memory input's description), named in the errors.
    shape : tuple of int
        The image's shape; a trailing axis of length 1 (a 4D file of one volume) is dropped.
    affine : (4, 4) array-like
        Voxel -> world (RAS+ mm).

    Returns
    -------
    shape : (3,) tuple of int
    affine : (4, 4) float64 ndarray

    Raises
    ------
    InputError
        Not 3D, a single slice, an affine that is not a finite 4 x 4 matrix, voxel sizes outside
        0.05-50 mm, or a singular affine.

    Examples
    --------
    >>> checked_geometry(Path("ct.nii"), (4, 5, 6, 1), np.diag([2.0, 2, 3, 1]))[0]
    (4, 5, 6)
    >>> checked_geometry(Path("ct.nii"), (4, 5), np.eye(4))
    Traceback (most recent call last):
    ...
    vertgrade.errors.InputError: ct.nii: is 2D with shape (4, 5); a 3D volume is needed
    """
    dims = tuple(int(n) for n in shape)
    if len(dims) == 4 and dims[3] == 1:
        dims = dims[:3]
    if len(dims) != 3:
        raise InputError(
            source, f"is {len(dims)}D with shape {tuple(shape)}; a 3D volume is needed"
        )
    if min(dims) < 2:
        raise InputError(source, f"has shape {dims}: a single slice is not a 3D volume")
    try:
        aff = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(source, f"has an affine that is not a matrix of numbers ({err})") from err
    if aff.shape != (4, 4):
        raise InputError(source, f"has an affine of shape {aff.shape}; expected (4, 4)")
    if not np.all(np.isfinite(aff)):
        raise InputError(source, "has an invalid (non-finite) affine")
    sizes = nib.affines.voxel_sizes(aff)
    if sizes.min() < VOXEL_MM_RANGE[0] or sizes.max() > VOXEL_MM_RANGE[1]:
        raise InputError(
            source,
            f"has voxel sizes {', '.join(f'{v:g}' for v in sizes)} mm, outside "
            f"{VOXEL_MM_RANGE[0]:g}-{VOXEL_MM_RANGE[1]:g} mm: not a CT in millimetres (check "
            "the header's units and affine)",
        )
    if abs(np.linalg.det(aff[:3, :3])) < 1e-9 * float(np.prod(sizes)):
        raise InputError(source, "has an invalid (singular) affine: its axes are not independent")
    return (dims[0], dims[1], dims[2]), aff


def canonical_volume(
    source: Path,
    data: NDArray[np.generic],
    affine: NDArray[np.float64],
    shape: tuple[int, int, int],
    *,
    kind: Literal["ct", "labels", "mask"],
) -> tuple[Volume, GridInfo]:
    """Check an image's values and reorient it to the closest canonical (RAS+) voxel order.

    Parameters
    ----------
    source : Path
        Named in the errors, and kept as the volume's ``source``.
    data : ndarray
        The voxels, of ``shape`` (up to a trailing axis of length 1).
    affine : (4, 4) float64 ndarray
        Voxel -> world (RAS+ mm) of ``data``, as :func:`checked_geometry` returned it.
    shape : (3,) tuple of int
        As :func:`checked_geometry` returned it.
    kind : {"ct", "labels", "mask"}
        ``"ct"``: values in HU (:func:`~vertgrade.io.labels.check_ct`); else integer labels
        (:func:`~vertgrade.io.labels.as_integer_labels`).

    Returns
    -------
    volume : Volume
        A view of ``data`` where no value conversion was needed (flips and axis swaps only).
    grid : GridInfo
        The input's shape, affine and orientation, to write outputs back onto it.

    Examples
    --------
    >>> lab = np.zeros((3, 4, 5), np.uint8); lab[0, 1, 2] = 20
    >>> vol, grid = canonical_volume(Path("m"), lab, np.diag([-1.0, 1, 1, 1]), (3, 4, 5),
    ...                              kind="labels")
    >>> vol.orientation, np.argwhere(vol.array).tolist(), grid.shape
    ('RAS', [[2, 1, 2]], (3, 4, 5))
    """
    data = data.reshape(shape)
    if not data.dtype.isnative:
        # big-endian storage (MGH always, some NIfTI): native order for everything downstream
        data = data.astype(data.dtype.newbyteorder("="))
    if kind == "ct":
        data = check_ct(source, data)
    else:
        data = as_integer_labels(source, data)
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(data, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    grid = GridInfo(shape=shape, affine=affine, ornt=ornt)
    return Volume(canonical, can_affine, kind, source), grid


def check_qform_sform(
    source: Path, img: Any, shape: tuple[int, ...], notes: list[str] | None
) -> None:
    """Say when a NIfTI header's qform and sform disagree (nibabel uses the sform).

    Images without a NIfTI header (MGH, an image built in memory without a header) pass.
    """
    header = getattr(img, "header", None)
    if header is None or not hasattr(header, "get_qform"):
        return
    q, qcode = header.get_qform(coded=True)
    s_, scode = header.get_sform(coded=True)
    if q is None or s_ is None or not qcode or not scode:
        return
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    )
    gap = float(np.max(np.linalg.norm((corners @ (q - s_).T)[:, :3], axis=1)))
    if gap > _QFORM_SFORM_TOL_MM:
        message = (
            f"{source.name}: its qform and sform disagree by up to {gap:.1f} mm; the sform was "
            "used (as nibabel does): check that every input was written in the same space"
        )
        logger.warning(message)
        if notes is not None:
            notes.append(message)
