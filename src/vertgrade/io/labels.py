"""The helpers every reader shares: value checks of CT and label arrays, label-format conversion
to VerSe numbering, the reading of body masks (TotalSegmentator's or a SPINEPS / TPTBox
subregion mask), and nearest-neighbour resampling of labels onto the CT's grid.

The readers (:mod:`vertgrade.io.nifti`, :mod:`vertgrade.io.dicom`, :mod:`vertgrade.io.load`)
call these, so that a NIfTI file, a DICOM series and an in-memory array are checked and
converted the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.errors import InputError
from vertgrade.levels import VERSE_LABELS, totalseg_total_to_verse
from vertgrade.study import Volume, find_objects

__all__ = [
    "SUBREGION_BODY_LABELS",
    "TOTALSEG_BODY_LABEL",
    "LabelFormat",
    "as_integer_labels",
    "body_voxels",
    "check_ct",
    "convert_labels",
    "detect_label_format",
    "present_labels",
    "resample_nearest",
    "resample_onto",
    "same_grid",
    "subject_from_name",
    "world_box",
]

#: How label ids are read: ``"auto"`` decides from the whole map (:func:`detect_label_format`).
LabelFormat = Literal["auto", "verse", "totalseg-total"]

#: Largest VerSe label id (28, T13); under ``label_format="auto"`` a map holding a structure of at
#: least ``_MIN_STRUCTURE_ML`` with a larger id is read as TotalSegmentator ``total`` class ids.
_MAX_VERSE_LABEL = 28
#: Under ``label_format="auto"``, a label counts as a structure from this volume (mL) on: the
#: smallest vertebral body is several mL; a few stray voxels of a segmentation are not one.
_MIN_STRUCTURE_ML = 0.5
#: Affines that agree to this (mm, absolute) describe the same grid.
_SAME_GRID_ATOL_MM = 1e-3
#: Largest label id any supported convention uses (uint16).
_MAX_LABEL = 65535
#: Image file suffixes taken off a file name for a subject id (longest first).
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".mha", ".mhd", ".nrrd", ".nhdr", ".gz")
#: TotalSegmentator's ``vertebrae_body`` task: 1 = vertebral body (2 = intervertebral discs).
TOTALSEG_BODY_LABEL = 1
#: A SPINEPS / TPTBox subregion mask (``*_seg-subreg_msk.nii.gz``): 49 = corpus border and
#: 50 = corpus, together the vertebral body. Its other ids are not body (41-48 the arch and its
#: processes, 60-62 spinal cord, canal and endplate, 100 discs). Source: the TPTBox sample CT
#: (``tptbox-l3`` in the test data), whose README names 49 + 50 the vertebral body.
SUBREGION_BODY_LABELS = (49, 50)


# ---------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------


def check_ct(path: Path | None, data: NDArray[np.generic]) -> NDArray[np.generic]:
    """Check that an array holds a CT in HU; ``float64`` becomes ``float32``.

    Parameters
    ----------
    path : Path or None
        The file (or folder) the array came from, named in the error.
    data : (I, J, K) ndarray
        Numbers in HU.

    Returns
    -------
    (I, J, K) ndarray
        ``data`` (``float32`` where it was ``float64``).

    Raises
    ------
    InputError
        Not numbers, NaN or infinite voxels, a constant array, values without air or bone
        (a label map given as CT), an 8-bit array, or stored values that are not HU (no fat
        or air, soft tissue near +1000: the rescale to HU was lost).

    Examples
    --------
    >>> check_ct(None, np.array([[[-1000.0, 400.0]]])).dtype
    dtype('float32')
    """
    if data.dtype.kind not in "iuf":
        raise InputError(path, f"has data type {data.dtype}, expected numbers in HU")
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(path, f"contains {bad} NaN or infinite voxels")
        if data.dtype == np.float64:
            data = data.astype(np.float32)
    lo, hi = float(data.min()), float(data.max())
    if hi - lo == 0:
        raise InputError(path, f"is constant ({lo:g}); not a CT")
    if lo >= -100 and hi <= 300:
        # A CT in HU has air near -1000; a label map given as CT looks like this.
        raise InputError(
            path, f"values {lo:g}..{hi:g} do not look like a CT in HU (no air, no bone)"
        )
    if data.dtype.itemsize == 1:
        # 8 bits hold -128..127 or 0..255: bone (several hundred HU) cannot be stored
        raise InputError(
            path,
            f"is stored in 8 bits ({data.dtype}, values {lo:g}..{hi:g}): a CT in HU needs at "
            "least 16 (bone is several hundred HU); export the CT again",
        )
    if lo >= -100:
        # no voxel of fat or air anywhere: stored values without the rescale to HU (e.g.
        # 0..4095 with air at 0 instead of -1000) put soft tissue near +1000 and cortical bone
        # above 2000
        median = float(
            np.median(np.asarray(data[:: max(1, data.shape[0] // 16)], dtype=np.float32))
        )
        if median > 500 or (lo >= 0 and hi >= 2000):
            raise InputError(
                path,
                f"values {lo:g}..{hi:g} (median {median:g}) are not HU: no fat or air below "
                "-100, and soft tissue or bone 1000 too high; the CT looks stored without its "
                "rescale (slope and intercept): export it in HU",
            )
    return data


def as_integer_labels(path: Path | None, data: NDArray[np.generic]) -> NDArray[np.integer]:
    """Check that an array holds non-negative integer labels and store them as ``uint8`` (or
    ``uint16`` where a label exceeds 255).

    Float storage is accepted where every value is a whole number; ``bool`` becomes ``uint8``.

    Parameters
    ----------
    path : Path or None
        The file the array came from, named in the error.
    data : (I, J, K) ndarray
        Label values.

    Returns
    -------
    (I, J, K) uint8 or uint16 ndarray

    Raises
    ------
    InputError
        NaN, infinite, non-integer or negative values, labels above 65535, or a non-numeric
        data type.

    Examples
    --------
    >>> as_integer_labels(None, np.array([[[0.0, 20.0]]]))
    array([[[ 0, 20]]], dtype=uint8)
    """
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise InputError(path, "label map contains NaN or infinite values")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(path, "label map has non-integer values; expected instance labels")
        data = rounded
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind not in "iu":
        raise InputError(path, f"label map has data type {data.dtype}")
    lo, hi = int(data.min()), int(data.max())
    if lo < 0:
        raise InputError(path, f"label map has negative label {lo}")
    if hi > _MAX_LABEL:
        raise InputError(path, f"label map has label {hi}, beyond any vertebra convention")
    out_dtype = np.uint8 if hi <= 255 else np.uint16
    return data.astype(out_dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Label conventions
# ---------------------------------------------------------------------------------------------


def present_labels(arr: NDArray[np.integer] | Volume) -> NDArray[np.int64]:
    """The non-zero labels present in an integer array or volume (one pass, no large
    temporary; a ``Volume``'s scan is kept for the next one, :meth:`Volume.label_boxes`).

    >>> present_labels(np.array([[[0, 20, 20, 19]]], np.uint8))
    array([19, 20])
    """
    objects = arr.label_boxes() if isinstance(arr, Volume) else find_objects(arr)
    return np.array([i + 1 for i, sl in enumerate(objects) if sl is not None], dtype=np.int64)


def convert_labels(vol: Volume, label_format: LabelFormat, notes: list[str]) -> Volume:
    """A label volume in VerSe numbering.

    Parameters
    ----------
    vol : Volume
        Integer labels as read (see :func:`as_integer_labels`).
    label_format : {"auto", "verse", "totalseg-total"}
        ``"totalseg-total"``: TotalSegmentator ``total`` class ids, mapped to VerSe labels
        (other classes become background); ``"verse"``: VerSe labels, checked;
        ``"auto"``: decided from the whole map (:func:`detect_label_format`).
    notes : list of str
        Receives a note saying what ``"auto"`` decided, and why.

    Returns
    -------
    Volume
        ``vol`` itself for VerSe labels, else a new ``uint8`` volume.

    Raises
    ------
    InputError
        An empty map, no vertebra class in a TotalSegmentator map, labels outside the VerSe
        convention, or (``"auto"``) a map whose format cannot be told.

    Examples
    --------
    >>> v = Volume(np.array([[[0, 31], [26, 5]]], np.uint8), 10 * np.eye(4), "labels")
    >>> notes: list[str] = []
    >>> convert_labels(v, "auto", notes).array.tolist(), len(notes)
    ([[[0, 20], [26, 0]]], 1)
    """
    arr = cast("NDArray[np.integer]", vol.array)
    present = present_labels(vol)
    if present.size == 0:
        raise InputError(vol.source, "label map is empty (no labelled voxel)")
    fmt = label_format
    if fmt == "auto":
        fmt, why = detect_label_format(vol, present)
        notes.append(why)
    if fmt == "totalseg-total":
        lut = np.zeros(int(present.max()) + 1, np.uint8)
        kept = []
        for c in present:
            v = totalseg_total_to_verse(int(c))
            if v is not None:
                lut[c] = v
                kept.append(int(c))
        if not kept:
            raise InputError(
                vol.source,
                "no vertebra classes (26-50) in this TotalSegmentator 'total' label map",
            )
        return Volume(lut[arr], vol.affine, "labels", vol.source)
    if present.tolist() == [1]:
        raise InputError(
            vol.source,
            "holds only the value 1: a binary spine mask, not vertebra instance labels (one id "
            "per vertebra, VerSe numbering); give the instance labels (e.g. TotalSegmentator's "
            "vertebrae output)",
        )
    bad = [int(c) for c in present if int(c) not in VERSE_LABELS]
    if bad:
        counts = _label_voxels(arr, bad)
        said = ", ".join(f"{c} ({counts[c]} voxel{'s' if counts[c] != 1 else ''})" for c in bad)
        raise InputError(
            vol.source,
            f"labels {said} are outside the VerSe convention (1-7 C1-C7, 8-19 T1-T12, "
            "20-24 L1-L5, 25 L6, 26 S1, 28 T13); for TotalSegmentator 'total' output use "
            "--label-format totalseg-total",
        )
    return vol


def _label_voxels(arr: NDArray[np.integer], labels: list[int]) -> dict[int, int]:
    """Voxel count of each of ``labels`` (one pass over the map)."""
    counts = np.bincount(np.asarray(arr).ravel().astype(np.int64, copy=False))
    return {int(c): int(counts[c]) if c < counts.size else 0 for c in labels}


def detect_label_format(
    vol: Volume, present: NDArray[np.int64] | None = None
) -> tuple[Literal["verse", "totalseg-total"], str]:
    """Tell VerSe labels from TotalSegmentator ``total`` class ids, from the whole map.

    VerSe ids stop at 28 (T13); TotalSegmentator's vertebrae are 26-50 and its other classes run
    to 117. A map is read as TotalSegmentator's when it holds a *structure* (at least
    ``_MIN_STRUCTURE_ML`` = 0.5 mL) with an id above 28, as VerSe when no id above 28 is present.
    Ids above 28 present only as a few stray voxels beside structures of VerSe ids are
    ambiguous (a stray voxel must not turn a VerSe map into another numbering): an error that
    names ``--label-format``.

    Returns
    -------
    format, note
        The reading and a sentence saying why (for the result's ``notes``).

    Raises
    ------
    InputError
        Ambiguous, or no structure at all.

    >>> lab = np.zeros((20, 20, 20), np.uint8); lab[:10] = 20; lab[0, 0, 0] = 29
    >>> detect_label_format(Volume(lab, np.eye(4), "labels"))
    Traceback (most recent call last):
    ...
    vertgrade.errors.InputError: ambiguous label map: ids 1-28 hold structures (20) but ids ...
    """
    arr = cast("NDArray[np.integer]", vol.array)
    ids = present_labels(vol) if present is None else present
    if ids.size == 0 or int(ids.max()) <= _MAX_VERSE_LABEL:
        return "verse", "labels read as VerSe ids (auto: no id above 28)"
    voxel_ml = abs(float(np.linalg.det(vol.affine[:3, :3]))) / 1000.0
    counts = _label_voxels(arr, [int(c) for c in ids])
    structures = {c for c, n in counts.items() if n * voxel_ml >= _MIN_STRUCTURE_ML}
    high = sorted(c for c in structures if c > _MAX_VERSE_LABEL)
    if high:
        return "totalseg-total", (
            "labels read as TotalSegmentator 'total' class ids (auto: structures with ids "
            f"above 28: {', '.join(map(str, high[:6]))}{', ...' if len(high) > 6 else ''})"
        )
    strays = sorted(c for c in counts if c > _MAX_VERSE_LABEL)
    n_stray = sum(counts[c] for c in strays)
    low = sorted(c for c in structures if c <= _MAX_VERSE_LABEL)
    if not low:
        raise InputError(
            vol.source,
            f"no vertebra in this label map: no label holds {_MIN_STRUCTURE_ML:g} mL or more",
        )
    raise InputError(
        vol.source,
        f"ambiguous label map: ids 1-28 hold structures ({', '.join(map(str, low))}) but ids "
        f"above 28 only {n_stray} stray voxel{'s' if n_stray != 1 else ''} "
        f"({', '.join(map(str, strays))}); give --label-format verse (and remove the strays) "
        "or --label-format totalseg-total",
    )


def subject_from_name(name: str) -> str:
    """Subject id from a file or folder name: its BIDS ``sub-*`` entity, else the name without
    its image suffix.

    >>> subject_from_name("sub-verse004_seg-vert_msk.nii.gz"), subject_from_name("ct.nii.gz")
    ('sub-verse004', 'ct')
    >>> subject_from_name("case7.nrrd"), subject_from_name("brain.MGZ")
    ('case7', 'brain')
    """
    m = re.match(r"^(sub-[^_]+)", name)
    if m:
        return m.group(1)
    lower = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------------------------
# Body masks
# ---------------------------------------------------------------------------------------------


def body_voxels(vol: Volume, notes: list[str]) -> Volume:
    """The vertebral-body voxels of a body mask, told apart by its labels.

    Two kinds are read: a mask whose value 1 is the body (TotalSegmentator's ``vertebrae_body``,
    where 2 = discs, ignored), and a SPINEPS / TPTBox subregion mask, recognised by its labels
    49 (corpus border) or 50 (corpus), whose body is 49 + 50 (its other labels ignored). A
    subregion mask has no instance ids: each body voxel belongs to the vertebra whose instance
    label it lies in, as every body mask's does.

    Parameters
    ----------
    vol : Volume
        The mask as read (integer values).
    notes : list of str
        Receives a note for a subregion mask, naming the labels ignored.

    Returns
    -------
    Volume
        ``uint8`` 0/1 body mask, kind ``"mask"``, on ``vol``'s grid.

    Raises
    ------
    InputError
        Neither kind (no voxel of 1, 49 or 50), or both (1 beside 49 / 50: ambiguous).

    Examples
    --------
    >>> sub = Volume(np.array([[[0, 41, 49], [50, 61, 0]]], np.uint8), np.eye(4), "mask")
    >>> notes: list[str] = []
    >>> body_voxels(sub, notes).array.tolist(), notes[0][:38]
    ([[[0, 0, 1], [1, 0, 0]]], 'bodies taken from a SPINEPS / TPTBox s')
    """
    arr = cast("NDArray[np.integer]", vol.array)
    present = set(present_labels(vol).tolist())
    subregion = sorted(present & set(SUBREGION_BODY_LABELS))
    if subregion and TOTALSEG_BODY_LABEL in present:
        raise InputError(
            vol.source,
            f"body mask holds both {TOTALSEG_BODY_LABEL} (a body mask's body, as in "
            "TotalSegmentator's vertebrae_body) and "
            f"{' and '.join(map(str, subregion))} (a SPINEPS / TPTBox subregion mask's corpus): "
            "give one kind of body mask",
        )
    if subregion:
        others = sorted(present - set(SUBREGION_BODY_LABELS))
        notes.append(
            "bodies taken from a SPINEPS / TPTBox subregion mask: labels 49 + 50 (corpus border "
            "and corpus)"
            + (f"; its other labels ({', '.join(map(str, others))}) ignored" if others else "")
        )
        return Volume(
            np.isin(arr, SUBREGION_BODY_LABELS).astype(np.uint8), vol.affine, "mask", vol.source
        )
    if TOTALSEG_BODY_LABEL not in present:
        raise InputError(
            vol.source,
            "body mask has no voxel of value 1 (the body in a body mask such as "
            "TotalSegmentator's vertebrae_body) nor of 49 or 50 (corpus border and corpus in a "
            "SPINEPS / TPTBox subregion mask)",
        )
    return Volume((arr == TOTALSEG_BODY_LABEL).astype(np.uint8), vol.affine, "mask", vol.source)


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether two volumes share shape and affine (to 0.001 mm).

    >>> a = Volume(np.zeros((2, 3, 4)), np.eye(4), "labels")
    >>> same_grid(a, a), same_grid(a, Volume(np.zeros((2, 3, 4)), np.diag([2, 1, 1, 1]), "ct"))
    (True, False)
    """
    return a.shape == b.shape and bool(
        np.allclose(a.affine, b.affine, atol=_SAME_GRID_ATOL_MM, rtol=0)
    )


def world_box(v: Volume) -> NDArray[np.float64]:
    """(2, 3) world (RAS+ mm) bounding box of a volume's voxel centres: minimum, then maximum.

    >>> world_box(Volume(np.zeros((2, 3, 4)), np.diag([2.0, 1, 1, 1]), "ct")).tolist()
    [[0.0, 0.0, 0.0], [2.0, 2.0, 3.0]]
    """
    n = np.array(v.shape) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    w = (v.affine @ corners.T).T[:, :3]
    return np.stack([w.min(axis=0), w.max(axis=0)])


def resample_nearest(src: Volume, ref: Volume) -> Volume:
    """Nearest-neighbour resampling of a label volume onto another grid (same world space).

    The source is padded with one voxel of background and sampled in ``"nearest"`` mode, so
    that a reference voxel lying on the source's outermost voxel centres (up to rounding of the
    affines) keeps its label, and every voxel beyond the padding is background.

    Parameters
    ----------
    src : Volume
        The labels (or mask) to resample.
    ref : Volume
        The grid to resample onto.

    Returns
    -------
    Volume
        ``src``'s values on ``ref``'s shape and affine, with ``src``'s kind and source.

    Examples
    --------
    A reference grid one voxel wider on each side along ``i``:

    >>> src = Volume(np.arange(1, 9, dtype=np.uint8).reshape(2, 2, 2), np.eye(4), "labels")
    >>> shifted = np.eye(4); shifted[0, 3] = -1.0
    >>> resample_nearest(src, Volume(np.zeros((4, 2, 2)), shifted, "ct")).array[:, 0, 0].tolist()
    [0, 1, 5, 0]
    """
    m = np.linalg.inv(src.affine) @ ref.affine
    padded = np.pad(np.asarray(src.array), 1)
    out = ndimage.affine_transform(
        padded, m[:3, :3], m[:3, 3] + 1.0, output_shape=ref.shape, order=0, mode="nearest"
    )
    return Volume(out, ref.affine, src.kind, src.source)


def resample_onto(src: Volume, ref: Volume, what: str) -> Volume:
    """:func:`resample_nearest`, refusing volumes that do not overlap in physical space.

    Parameters
    ----------
    src, ref : Volume
        As for :func:`resample_nearest`.
    what : str
        What ``src`` is (``"labels"``, ``"body mask"``), for the error.

    Raises
    ------
    InputError
        The world boxes of ``src`` and ``ref`` are disjoint (named with both boxes in mm).
    """
    box_s, box_r = world_box(src), world_box(ref)
    if np.any(box_s[1] < box_r[0]) or np.any(box_r[1] < box_s[0]):
        raise InputError(
            src.source,
            f"{what} do not overlap the CT in physical space (labels span "
            f"{np.round(box_s[0]).tolist()}..{np.round(box_s[1]).tolist()} mm, CT "
            f"{np.round(box_r[0]).tolist()}..{np.round(box_r[1]).tolist()} mm)",
        )
    return resample_nearest(src, ref)
