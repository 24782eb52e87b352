"""Reading and writing NIfTI volumes, with the checks that turn bad files into clear errors.

All reading goes through :func:`read_volume`, which validates the file and reorients it to the
closest canonical (RAS+) voxel order; :class:`vertgrade.study.GridInfo` remembers the input grid.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io.files import atomic_path
from vertgrade.io.labels import as_integer_labels, check_ct
from vertgrade.study import GridInfo, Volume

__all__ = ["file_sha256", "read_volume", "save_nifti"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr", ".mgz", ".mgh")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a NIfTI file")
    if path.stat().st_size == 0:
        raise InputError(path, "is an empty file")
    if not path.name.lower().endswith(_NIFTI_SUFFIXES):
        raise InputError(
            path, "is not a NIfTI file (expected .nii or .nii.gz; DICOM series are not read yet)"
        )


def read_volume(
    path: str | Path, *, kind: Literal["ct", "labels", "mask"]
) -> tuple[Volume, GridInfo]:
    """Read a 3D NIfTI file, validate it and reorient it to canonical (RAS+) voxel order.

    Parameters
    ----------
    path : path
        A ``.nii`` or ``.nii.gz`` file.
    kind : {"ct", "labels", "mask"}
        ``"ct"``: values in HU, must be finite; ``"labels"`` / ``"mask"``: integer values
        (float storage is accepted when every value is a whole number).

    Returns
    -------
    volume : Volume
        Canonical array (CT: its stored dtype with scaling applied; labels: an integer dtype).
    grid : GridInfo
        The input's shape, affine and orientation, to write outputs back onto it.

    Raises
    ------
    InputError
        Missing, empty, truncated or unreadable file; not 3D; non-finite CT values; non-integer
        labels.
    """
    path = Path(path)
    _check_file(path)
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises many types for unreadable headers
        raise InputError(path, f"cannot be read as NIfTI ({short_reason(err)})") from err
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise InputError(path, f"is a {type(img).__name__}, not an image with an affine")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            path, f"is {len(shape)}D with shape {tuple(img.shape)}; a 3D volume is needed"
        )
    if min(shape) < 2:
        raise InputError(path, f"has shape {shape}: a single slice is not a 3D volume")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "has an invalid (singular or non-finite) affine")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise InputError(path, f"is truncated or corrupt ({short_reason(err)})") from err
    data = data.reshape(shape)
    if kind == "ct":
        data = check_ct(path, data)
    else:
        data = as_integer_labels(path, data)
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(data, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    grid = GridInfo(shape=(shape[0], shape[1], shape[2]), affine=affine, ornt=ornt)
    # a view: flips and axis swaps only, no copy of a possibly large volume
    return Volume(canonical, can_affine, kind, path), grid


def save_nifti(array: NDArray[np.generic], affine: NDArray[np.float64], path: str | Path) -> None:
    """Write a NIfTI file atomically (temporary file, then rename); qform and sform set."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
