"""MetaImage (``.mha`` / ``.mhd``) and NRRD (``.nrrd`` / ``.nhdr``) files, read through SimpleITK
(an optional dependency, imported only when such a file is read; not for users to import).

SimpleITK describes an image by its origin, its spacing and its direction cosines in LPS+
millimetres, and hands out its voxels indexed ``[k, j, i]`` (the last index varying fastest).
:func:`read_sitk_header` turns the description into the voxel -> RAS+ affine that nibabel gives
for a NIfTI file (through :func:`vertgrade.io.dicom.lps_to_ras`, the one place LPS+ and RAS+
meet), and :func:`read_sitk_voxels` transposes the voxels to ``[i, j, k]``, so that the rest of
:func:`vertgrade.io.nifti.read_volume` treats them exactly as a NIfTI file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io.dicom.series import lps_to_ras

__all__ = [
    "SITK_FORMATS",
    "SITK_INSTALL",
    "lps_affine",
    "read_sitk_header",
    "read_sitk_voxels",
    "sitk_format",
]

#: File suffixes read through SimpleITK -> the format's name (said in errors).
SITK_FORMATS = {".mha": "MetaImage", ".mhd": "MetaImage", ".nrrd": "NRRD", ".nhdr": "NRRD"}
#: What installs SimpleITK (the extra is declared in pyproject.toml).
SITK_INSTALL = "pip install SimpleITK (or pip install 'vertgrade[sitk]')"


def sitk_format(path: Path) -> str | None:
    """The format's name where ``path`` is read through SimpleITK, else ``None``.

    >>> sitk_format(Path("ct.NRRD")), sitk_format(Path("ct.nii.gz"))
    ('NRRD', None)
    """
    name = path.name.lower()
    return next((fmt for suffix, fmt in SITK_FORMATS.items() if name.endswith(suffix)), None)


def _import_sitk(path: Path, fmt: str) -> Any:
    try:
        import SimpleITK as sitk
    except ImportError as err:
        raise InputError(
            path,
            f"is a {fmt} file, which vertgrade reads through SimpleITK, not installed here: "
            f"{SITK_INSTALL}; or convert the file to NIfTI",
        ) from err
    return sitk


def _sitk_reason(err: BaseException) -> str:
    """What a SimpleITK exception says, without its C++ source location.

    >>> _sitk_reason(RuntimeError("Exception thrown in X: a.cxx:91:\\n"
    ...                           "sitk::ERROR: The file does not exist."))
    'The file does not exist.'
    """
    for line in str(err).splitlines():
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1].strip()
            # ITK prefixes the object: "MetaImageIO(0x55...): File cannot be read"
            if text.split("(", 1)[0].isidentifier() and "): " in text:
                text = text.split("): ", 1)[1]
            return short_reason(RuntimeError(text))
    return short_reason(err)


def lps_affine(
    direction: tuple[float, ...], spacing: tuple[float, ...], origin: tuple[float, ...]
) -> NDArray[np.float64]:
    """The voxel -> LPS+ mm affine of a SimpleITK image's geometry.

    A voxel ``(i, j, k)`` lies at ``origin + D @ (spacing * (i, j, k))``, where ``D`` is the
    direction matrix (its columns the axes' unit vectors; SimpleITK gives it row by row).

    Parameters
    ----------
    direction : (9,) tuple of float
        ``GetDirection()``: the 3 x 3 direction matrix, row-major.
    spacing, origin : (3,) tuple of float
        ``GetSpacing()`` (mm) and ``GetOrigin()`` (LPS+ mm).

    Returns
    -------
    (4, 4) float64 ndarray

    Examples
    --------
    >>> lps_affine((0, 0, 1, 1, 0, 0, 0, 1, 0), (2.0, 3.0, 4.0), (5.0, 6.0, 7.0)).tolist()
    [[0.0, 0.0, 4.0, 5.0], [2.0, 0.0, 0.0, 6.0], [0.0, 3.0, 0.0, 7.0], [0.0, 0.0, 0.0, 1.0]]
    """
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(
        spacing, dtype=np.float64
    )
    aff[:3, 3] = origin
    return aff


def read_sitk_header(
    path: Path, fmt: str
) -> tuple[Any, tuple[int, ...], NDArray[np.float64] | None]:
    """Read a MetaImage or NRRD header (not its voxels).

    Parameters
    ----------
    path : Path
        The file.
    fmt : str
        Its format's name (:func:`sitk_format`), for the errors.

    Returns
    -------
    reader : SimpleITK.ImageFileReader
        For :func:`read_sitk_voxels`.
    shape : tuple of int
        ``(I, J, K)`` (or the image's own shape where it is not 3D).
    affine : (4, 4) float64 ndarray or None
        Voxel -> RAS+ mm; ``None`` where the image is not 3D (its shape says so).

    Raises
    ------
    InputError
        SimpleITK missing, an unreadable header, or several values per voxel.
    """
    sitk = _import_sitk(path, fmt)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(path, f"cannot be read as {fmt} ({_sitk_reason(err)})") from err
    shape = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    if components != 1:
        raise InputError(
            path,
            f"has {components} values per voxel (a vector or multi-layer image); a CT or a "
            "label map has one: export a single label map (or one CT volume)",
        )
    dim = len(shape)
    if dim == 3 or (dim == 4 and shape[3] == 1):
        # the first three axes' block: a 4D image of one volume is that volume
        direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
        aff = lps_affine(
            tuple(direction[:3, :3].ravel()),
            tuple(reader.GetSpacing())[:3],
            tuple(reader.GetOrigin())[:3],
        )
        return reader, shape, lps_to_ras(aff)
    return reader, shape, None


def read_sitk_voxels(reader: Any, path: Path, fmt: str) -> NDArray[np.generic]:
    """The voxels of a file whose header :func:`read_sitk_header` read, indexed ``[i, j, k]``.

    Raises
    ------
    InputError
        Truncated or corrupt voxel data.
    """
    sitk = _import_sitk(path, fmt)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(path, f"is truncated or corrupt ({_sitk_reason(err)})") from err
    # SimpleITK's array is [k, j, i] (C order, i fastest): its transpose is a view in [i, j, k]
    return np.asarray(sitk.GetArrayFromImage(image)).T
