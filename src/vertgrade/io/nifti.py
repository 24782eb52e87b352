"""Reading and writing NIfTI volumes, with the checks that turn bad files into clear errors.

All reading goes through :func:`read_volume`, which validates the file and reorients it to the
closest canonical (RAS+) voxel order; :class:`vertgrade.study.GridInfo` remembers the input grid.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io.files import atomic_path
from vertgrade.io.labels import as_integer_labels, check_ct
from vertgrade.study import GridInfo, Volume

logger = logging.getLogger(__name__)

__all__ = ["file_sha256", "read_volume", "save_nifti"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr", ".mgz", ".mgh")
#: Image formats vertgrade recognises but does not read (said so, by name, in the error).
_OTHER_FORMATS = {
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".nii.bz2": "compressed NIfTI (bz2)",
    ".npy": "NumPy array (no affine)",
    ".dcm": "single DICOM",
}
#: Voxel sizes outside this range (mm) are not a CT in millimetres (a unit error).
_VOXEL_MM_RANGE = (0.05, 50.0)
#: qform and sform further apart than this (mm, at the image's corners) are reported.
_QFORM_SFORM_TOL_MM = 1.0


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
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise InputError(path, "is an empty file")
    name = path.name.lower()
    if not name.endswith(_NIFTI_SUFFIXES):
        other = next(
            (kind for suffix, kind in _OTHER_FORMATS.items() if name.endswith(suffix)), None
        )
        if other is not None:
            raise InputError(
                path,
                f"is a {other} file, which vertgrade does not read: convert it to NIfTI (for "
                "example with SimpleITK: sitk.WriteImage(sitk.ReadImage(path), 'ct.nii.gz'))",
            )
        raise InputError(
            path,
            "is not an image vertgrade reads (NIfTI .nii/.nii.gz, MGH .mgz, or a folder of "
            "DICOM files)",
        )


def _check_qform_sform(
    path: Path, img: Any, shape: tuple[int, ...], notes: list[str] | None
) -> None:
    """Say when a NIfTI header's qform and sform disagree (nibabel uses the sform)."""
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
            f"{path.name}: its qform and sform disagree by up to {gap:.1f} mm; the sform was "
            "used (as nibabel does): check that every input was written in the same space"
        )
        logger.warning(message)
        if notes is not None:
            notes.append(message)


def read_volume(
    path: str | Path,
    *,
    kind: Literal["ct", "labels", "mask"],
    notes: list[str] | None = None,
) -> tuple[Volume, GridInfo]:
    """Read a 3D NIfTI file, validate it and reorient it to canonical (RAS+) voxel order.

    Parameters
    ----------
    path : path
        A ``.nii`` or ``.nii.gz`` file.
    kind : {"ct", "labels", "mask"}
        ``"ct"``: values in HU, must be finite; ``"labels"`` / ``"mask"``: integer values
        (float storage is accepted when every value is a whole number).
    notes : list of str, optional
        Receives what a user should know about the file (a qform that disagrees with the
        sform).

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
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "has an invalid (non-finite) affine")
    sizes = nib.affines.voxel_sizes(affine)
    if sizes.min() < _VOXEL_MM_RANGE[0] or sizes.max() > _VOXEL_MM_RANGE[1]:
        raise InputError(
            path,
            f"has voxel sizes {', '.join(f'{v:g}' for v in sizes)} mm, outside "
            f"{_VOXEL_MM_RANGE[0]:g}-{_VOXEL_MM_RANGE[1]:g} mm: not a CT in millimetres (check "
            "the header's units and affine)",
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9 * float(np.prod(sizes)):
        raise InputError(path, "has an invalid (singular) affine: its axes are not independent")
    _check_qform_sform(path, img, shape, notes)
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
