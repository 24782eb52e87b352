"""Reading image files, with the checks that turn bad files into clear errors, and writing
NIfTI.

All reading goes through :func:`read_volume`, which validates the file and reorients it to the
closest canonical (RAS+) voxel order; :class:`vertgrade.study.GridInfo` remembers the input grid.
NIfTI (``.nii``, ``.nii.gz``, Analyze ``.img`` / ``.hdr``) and MGH (``.mgz``, ``.mgh``) files are
read by nibabel; MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``) files by SimpleITK,
an optional dependency (:mod:`vertgrade.io._sitk`), whose LPS+ geometry becomes the same RAS+
affine. Whatever the format, the same checks follow (:mod:`vertgrade.io._volume`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path
from typing import Literal, cast

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._inflate import inflate, take
from vertgrade.io._messages import short_reason
from vertgrade.io._sitk import read_sitk_header, read_sitk_voxels, sitk_format
from vertgrade.io._volume import canonical_volume, check_qform_sform, checked_geometry
from vertgrade.io.files import atomic_path
from vertgrade.study import GridInfo, Volume

__all__ = ["READ_SUFFIXES", "file_sha256", "read_volume", "save_nifti"]

#: File suffixes nibabel reads here (NIfTI, Analyze, MGH).
_NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr", ".mgz", ".mgh")
#: Every file suffix :func:`read_volume` reads (MetaImage and NRRD need SimpleITK).
READ_SUFFIXES = (*_NIBABEL_SUFFIXES, ".mha", ".mhd", ".nrrd", ".nhdr")
#: Image formats vertgrade recognises but does not read (said so, by name, in the error).
_OTHER_FORMATS = {
    ".nii.bz2": "compressed NIfTI (bz2)",
    ".npy": "NumPy array (no affine)",
    ".dcm": "single DICOM",
}


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
        raise InputError(path, "is a folder, expected an image file (NIfTI, MGH, MHA or NRRD)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise InputError(path, "is an empty file")
    name = path.name.lower()
    if not name.endswith(READ_SUFFIXES):
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
            "is not an image vertgrade reads (NIfTI .nii/.nii.gz, MGH .mgz/.mgh, MetaImage "
            ".mha/.mhd, NRRD .nrrd/.nhdr, or a folder of DICOM files)",
        )


def read_volume(
    path: str | Path,
    *,
    kind: Literal["ct", "labels", "mask"],
    notes: list[str] | None = None,
) -> tuple[Volume, GridInfo]:
    """Read a 3D image file, validate it and reorient it to canonical (RAS+) voxel order.

    Parameters
    ----------
    path : path
        A NIfTI (``.nii``, ``.nii.gz``), MGH (``.mgz``, ``.mgh``), MetaImage (``.mha``,
        ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``) file; the last two are read through
        SimpleITK.
    kind : {"ct", "labels", "mask"}
        ``"ct"``: values in HU, must be finite; ``"labels"`` / ``"mask"``: integer values
        (float storage is accepted when every value is a whole number).
    notes : list of str, optional
        Receives what a user should know about the file (a NIfTI qform that disagrees with the
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
        labels; a MetaImage or NRRD file where SimpleITK is not installed (naming the command
        that installs it).
    """
    path = Path(path)
    _check_file(path)
    fmt = sitk_format(path)
    if fmt is not None:
        reader, raw_shape, sitk_affine = read_sitk_header(path, fmt)
        # a shape that is not 3D fails first: its affine (None) is never looked at
        shape, affine = checked_geometry(path, raw_shape, sitk_affine)
        data = read_sitk_voxels(reader, path, fmt)
        return canonical_volume(path, data, affine, shape, kind=kind)
    fast = _nifti_gz_in_memory(path)
    if fast is not None:
        header_img, voxels = fast
        shape, affine = checked_geometry(path, tuple(header_img.shape), header_img.affine)
        check_qform_sform(path, header_img, shape, notes)
        return canonical_volume(path, voxels, affine, shape, kind=kind)
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises many types for unreadable headers
        what = "MGH" if path.name.lower().endswith((".mgz", ".mgh")) else "NIfTI"
        raise InputError(path, f"cannot be read as {what} ({short_reason(err)})") from err
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise InputError(path, f"is a {type(img).__name__}, not an image with an affine")
    shape, affine = checked_geometry(path, tuple(img.shape), img.affine)
    check_qform_sform(path, img, shape, notes)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise InputError(path, f"is truncated or corrupt ({short_reason(err)})") from err
    # a view: flips and axis swaps only, no copy of a possibly large volume
    return canonical_volume(path, data, affine, shape, kind=kind)


def _nifti_gz_in_memory(
    path: Path,
) -> tuple[nib.spatialimages.SpatialImage, NDArray[np.generic]] | None:
    """A ``.nii.gz`` inflated in one call (:mod:`vertgrade.io._inflate`, ahead of time where the
    command line started it) with its voxels viewed in place, read-only: the header as nibabel
    reads it, the voxels as ``np.asanyarray(img.dataobj)`` gives them. ``None`` for any other
    file, and for any file this cannot read exactly so (scaled data, a short or odd file): the
    caller reads it with nibabel, which reports what is wrong."""
    if not path.name.lower().endswith(".nii.gz"):
        return None
    try:
        raw = take(path) or inflate(path)
        sizeof = int.from_bytes(raw[:4], "little")
        if sizeof not in (348, 540):
            sizeof = int.from_bytes(raw[:4], "big")
        cls = {348: nib.Nifti1Image, 540: nib.Nifti2Image}.get(sizeof)
        if cls is None:
            return None
        img = cast("nib.spatialimages.SpatialImage", cls.from_bytes(raw))
        # the header as stored: the image's copy has its data offset reset
        hdr = cls.header_class.from_fileobj(io.BytesIO(raw[:sizeof]))
        if hdr["magic"] not in (b"n+1", b"n+2"):
            return None  # a header whose voxels live in another file
        slope, inter = hdr.get_slope_inter()
        if slope not in (None, 1.0) or inter not in (None, 0.0):
            return None  # scaled: nibabel's own reading applies the scaling as it does
        dtype = hdr.get_data_dtype()
        shape = tuple(int(n) for n in hdr.get_data_shape())
        offset = int(hdr.get_data_offset())
        if offset + int(np.prod(shape)) * dtype.itemsize > len(raw):
            return None
        data = np.ndarray(shape, dtype=dtype, buffer=raw, offset=offset, order="F")
    except Exception:
        return None
    return img, data


def save_nifti(array: NDArray[np.generic], affine: NDArray[np.float64], path: str | Path) -> None:
    """Write a NIfTI file atomically (temporary file, then rename); qform and sform set."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
