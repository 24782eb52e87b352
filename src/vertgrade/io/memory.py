"""Images held in memory, as :func:`vertgrade.load_study` takes them beside paths.

Three kinds are taken, as TotalSegmentator's Python API takes a nibabel image: a nibabel image
with an affine (``nib.Nifti1Image``, ``nib.MGHImage``, any ``SpatialImage``), an
``(array, affine)`` tuple (the affine voxel -> world RAS+ mm, as nibabel's), and a
:class:`~vertgrade.study.Volume`. They are checked and reoriented exactly as files are
(:mod:`vertgrade.io._volume`); errors name them by their role, e.g. ``<in-memory labels>``, where
a file's errors name its path.

An in-memory input has no file to record in :attr:`Study.inputs <vertgrade.study.Study>`: it is
recorded under that description, with a checksum of its values (:func:`array_sha256`), so that
a result's provenance still tells two inputs apart.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Any, Literal, TypeAlias

import nibabel as nib
import numpy as np
from numpy.typing import ArrayLike, NDArray

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io._volume import canonical_volume, check_qform_sform, checked_geometry
from vertgrade.io.labels import subject_from_name
from vertgrade.study import GridInfo, Volume

__all__ = [
    "InMemoryImage",
    "array_sha256",
    "in_memory_name",
    "in_memory_subject",
    "is_in_memory",
    "is_in_memory_name",
    "volume_from_memory",
]

#: What :func:`volume_from_memory` takes: a nibabel image, an ``(array, affine)`` tuple or a
#: :class:`~vertgrade.study.Volume`.
InMemoryImage: TypeAlias = nib.spatialimages.SpatialImage | tuple[ArrayLike, ArrayLike] | Volume

#: Slab of the first axis hashed at a time (voxels are hashed without one large copy).
_HASH_SLAB = 16


def is_in_memory(obj: object) -> bool:
    """Whether an input is an image in memory rather than a path.

    A bare array counts (it is refused by :func:`volume_from_memory`, which asks for its
    affine), so that it is never taken for a file name.

    >>> is_in_memory((np.zeros((2, 2, 2)), np.eye(4))), is_in_memory("ct.nii.gz")
    (True, False)
    """
    return isinstance(obj, (nib.spatialimages.SpatialImage, tuple, list, Volume, np.ndarray))


def in_memory_name(role: str) -> Path:
    """How an in-memory input is named in errors and in ``Study.inputs``.

    >>> str(in_memory_name("labels"))
    '<in-memory labels>'
    """
    return Path(f"<in-memory {role}>")


def is_in_memory_name(path: str | Path) -> bool:
    """Whether a recorded input path (``Study.inputs``, a result's provenance) names an image
    that was in memory (:func:`in_memory_name`), not a file to look for.

    >>> is_in_memory_name("<in-memory ct>"), is_in_memory_name("ct.nii.gz")
    (True, False)
    """
    return str(path).startswith("<in-memory ") and str(path).endswith(">")


def in_memory_subject(obj: object) -> str | None:
    """A subject id for an in-memory image: from the file a nibabel image was loaded from, if
    any (``nib.load(path)`` keeps the name).

    >>> in_memory_subject(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))) is None
    True
    """
    if isinstance(obj, nib.spatialimages.SpatialImage):
        name = obj.get_filename()
        if name:
            return subject_from_name(Path(name).name)
    elif isinstance(obj, Volume) and obj.source is not None and not obj.source.name.startswith("<"):
        return subject_from_name(obj.source.name)
    return None


def array_sha256(data: NDArray[np.generic], affine: NDArray[np.float64]) -> str:
    """SHA-256 of an image's values and geometry: its dtype, shape, affine and voxels (C order).

    The same values on the same grid give the same checksum whatever the array's memory layout
    or byte order; it is not a file's checksum (the same image saved to a file has another).

    Parameters
    ----------
    data : (I, J, K) ndarray
    affine : (4, 4) float64 ndarray

    Returns
    -------
    str
        Hex digest.

    Examples
    --------
    >>> a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> array_sha256(a, np.eye(4)) == array_sha256(np.asfortranarray(a), np.eye(4))
    True
    >>> array_sha256(a, np.eye(4)) == array_sha256(a, np.diag([2.0, 1, 1, 1]))
    False
    """
    dtype = data.dtype.newbyteorder("=")
    h = hashlib.sha256()
    h.update(f"{dtype.str}|{tuple(data.shape)}|".encode())
    h.update(np.ascontiguousarray(affine, dtype="<f8").tobytes())
    if data.ndim == 0 or data.shape[0] == 0:
        h.update(np.ascontiguousarray(data, dtype=dtype).tobytes())
        return h.hexdigest()
    for start in range(0, data.shape[0], _HASH_SLAB):
        h.update(np.ascontiguousarray(data[start : start + _HASH_SLAB], dtype=dtype).data)
    return h.hexdigest()


def _parts(obj: object, source: Path) -> tuple[Any, tuple[int, ...], Any, Any]:
    """``(data or lazy data object, shape, affine, nibabel image or None)`` of an input."""
    if isinstance(obj, Volume):
        return obj.array, obj.shape, obj.affine, None
    if isinstance(obj, nib.spatialimages.SpatialImage):
        if obj.affine is None:
            raise InputError(
                source, f"is a {type(obj).__name__} without an affine; give it one (voxel -> mm)"
            )
        return obj.dataobj, tuple(obj.shape), obj.affine, obj
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise InputError(
                source,
                f"is a {type(obj).__name__} of {len(obj)} items; expected (array, affine)",
            )
        try:
            data = np.asanyarray(obj[0])
        except (TypeError, ValueError) as err:
            raise InputError(
                source, f"holds an array that is not an array of numbers ({err})"
            ) from err
        return data, tuple(data.shape), obj[1], None
    if isinstance(obj, np.ndarray):
        raise InputError(
            source,
            f"is an array of shape {obj.shape} without an affine: give (array, affine), the "
            "affine mapping voxel indices to world RAS+ millimetres (as nibabel's)",
        )
    raise InputError(
        source,
        f"is a {type(obj).__name__}; expected a path, a nibabel image or (array, affine)",
    )


def volume_from_memory(
    obj: InMemoryImage,
    *,
    kind: Literal["ct", "labels", "mask"],
    source: Path,
    notes: list[str] | None = None,
) -> tuple[Volume, GridInfo, str]:
    """Check and reorient an in-memory image, as :func:`vertgrade.io.nifti.read_volume` does a
    file.

    Parameters
    ----------
    obj : nibabel SpatialImage, (array, affine) tuple or Volume
        The image; ``affine`` maps voxel indices to world RAS+ mm (nibabel's convention).
    kind : {"ct", "labels", "mask"}
        As for :func:`~vertgrade.io.nifti.read_volume`.
    source : Path
        Its description (:func:`in_memory_name`), named in the errors and kept as the
        volume's ``source``.
    notes : list of str, optional
        Receives what a user should know (a NIfTI image whose qform and sform disagree).

    Returns
    -------
    volume : Volume
        Canonical; shares memory with the given array where no value conversion was needed
        (do not modify the array while the study is in use).
    grid : GridInfo
        The input's grid.
    sha256 : str
        :func:`array_sha256` of the values and affine as given.

    Raises
    ------
    InputError
        An array without affine, a malformed tuple, and everything
        :func:`~vertgrade.io.nifti.read_volume` refuses in a file.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.uint8); lab[1:3, 1:3, 1:3] = 20
    >>> vol, grid, sha = volume_from_memory(
    ...     (lab, np.diag([-1.0, 1, 1, 1])), kind="labels", source=in_memory_name("labels"))
    >>> vol.orientation, str(vol.source), len(sha)
    ('RAS', '<in-memory labels>', 64)
    >>> volume_from_memory(lab, kind="labels", source=in_memory_name("labels"))
    Traceback (most recent call last):
    ...
    vertgrade.errors.InputError: <in-memory labels>: is an array of shape (4, 4, 4) without ...
    """
    raw, raw_shape, raw_affine, img = _parts(obj, source)
    shape, affine = checked_geometry(source, raw_shape, raw_affine)
    if img is not None:
        check_qform_sform(source, img, shape, notes)
    try:
        data = np.asanyarray(raw)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        # a nibabel image loaded from a file reads its voxels only now
        raise InputError(source, f"is truncated or corrupt ({short_reason(err)})") from err
    data = data.reshape(shape)
    sha = array_sha256(data, affine)
    vol, grid = canonical_volume(source, data, affine, shape, kind=kind)
    return vol, grid, sha
