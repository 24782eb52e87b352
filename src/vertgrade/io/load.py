"""Load a study: a CT and its vertebra labels, from files, from the layouts people have, or from
images already in memory.

One dispatch, :func:`load_study_with_series`, recognises the input and returns the
:class:`~vertgrade.study.Study` together with the DICOM series it was read from (``None`` for
other inputs); :func:`load_study` (``vertgrade.load_study``) returns the study alone.

Recognised inputs
-----------------
- A CT file and a label file: NIfTI (``.nii`` / ``.nii.gz``), MGH (``.mgz`` / ``.mgh``), and,
  where SimpleITK is installed (``pip install SimpleITK``, or the extra ``vertgrade[sitk]``),
  MetaImage (``.mha`` / ``.mhd``) and NRRD (``.nrrd`` / ``.nhdr``), read with the same
  orientation handling (their LPS+ geometry becomes the RAS+ affine nibabel gives). The two may
  be on the same grid or on different grids in the same physical space (labels are then
  resampled onto the CT grid, nearest neighbour).
- Images in memory, for the CT, the labels and the bodies alike: a nibabel image
  (``nib.Nifti1Image`` or any ``SpatialImage``), an ``(array, affine)`` tuple or a
  :class:`~vertgrade.study.Volume` (:mod:`vertgrade.io.memory`). They are recorded in
  ``Study.inputs`` as ``<in-memory ct>`` (and so on), with a checksum of their values, and errors
  name them so.
- A BIDS-style folder, as VerSe and SPINEPS / TPTBox write them: ``sub-*_ct.nii.gz``, the
  vertebra instance mask ``sub-*_seg-vert_msk.nii.gz`` (further entities allowed before
  ``_msk``, e.g. ``sub-ct_seg-vert_label-22_msk.nii.gz``), optionally a SPINEPS / TPTBox subregion
  mask ``sub-*_seg-subreg[_*]_msk.nii.gz`` (then the bodies, as ``bodies`` would give them,
  unless ``bodies`` or ``labels`` is given) and
  ``sub-*_seg-*_ctd.json`` (centroids in voxel coordinates, first entry naming their axis
  directions), found anywhere below the folder (``rawdata/`` and ``derivatives/`` included).
- TotalSegmentator outputs: the ``vertebrae_pp`` / ``vertebrae_pp_refined`` multilabel files
  (VerSe numbering); the ``total`` task's multilabel file (its own class ids, recognised by
  labels above 28 or forced with ``label_format="totalseg-total"``); a folder of per-structure
  files (``vertebrae_L1.nii.gz`` ...); and its ``vertebrae_body`` mask (1 = body, 2 = discs) as
  ``bodies``.
- As ``bodies``, a SPINEPS / TPTBox subregion mask too, recognised by its labels (49 corpus
  border + 50 corpus = the body; 41-48, 60-62 and its other labels ignored). A body mask has no
  instance ids: each body voxel belongs to the vertebra whose instance label it lies in.
- A DICOM CT series (a folder, or one file of it), with labels as a label file, an in-memory
  image or a DICOM SEG (:func:`load_dicom_study`, reading through :mod:`vertgrade.io.dicom`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal, TypeAlias, cast

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.dicom import SeriesInfo, is_dicom_path, read_dicom_seg, read_dicom_series
from vertgrade.io.labels import (
    LabelFormat,
    body_voxels,
    convert_labels,
    present_labels,
    resample_onto,
    same_grid,
    subject_from_name,
)
from vertgrade.io.memory import (
    InMemoryImage,
    in_memory_name,
    in_memory_subject,
    volume_from_memory,
)
from vertgrade.io.nifti import file_sha256, read_volume
from vertgrade.levels import label_id
from vertgrade.study import GridInfo, Study, Volume

__all__ = [
    "TOTALSEG_STRUCTURE_FILE",
    "ImageInput",
    "find_verse_files",
    "input_checksum",
    "load_dicom_study",
    "load_study",
    "load_study_with_series",
    "read_verse_centroids",
    "study_from_arrays",
]

#: File names of TotalSegmentator's per-structure vertebra masks (``vertebrae_L1.nii.gz``).
TOTALSEG_STRUCTURE_FILE = re.compile(r"^vertebrae_([CTLS]\d{1,2})\.nii(\.gz)?$", re.IGNORECASE)

#: An input image: a path, or an image in memory (:data:`vertgrade.io.memory.InMemoryImage`).
ImageInput: TypeAlias = str | os.PathLike[str] | InMemoryImage

#: BIDS-style names in a subject folder (VerSe, SPINEPS / TPTBox): the suffix after the last
#: ``_`` says what a file is; entities such as ``label-22`` may come between ``seg-*`` and it.
_BIDS_ROLES = {
    "ct": re.compile(r"_ct\.nii(\.gz)?$"),
    "labels": re.compile(r"_seg-vert(_[A-Za-z0-9]+-[A-Za-z0-9]+)*_msk\.nii(\.gz)?$"),
    "subregions": re.compile(r"_seg-subreg(_[A-Za-z0-9]+-[A-Za-z0-9]+)*_msk\.nii(\.gz)?$"),
    "centroids": re.compile(r"_ctd\.json$"),
}


# ---------------------------------------------------------------------------------------------
# The dispatch
# ---------------------------------------------------------------------------------------------


def load_study_with_series(
    ct: ImageInput | None = None,
    labels: ImageInput | None = None,
    *,
    bodies: ImageInput | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
    series_uid: str | None = None,
) -> tuple[Study, SeriesInfo | None]:
    """Load, validate and reorient a study, and say which DICOM series it came from.

    Parameters
    ----------
    ct : path or in-memory image, optional
        A CT in HU: an image file (NIfTI, MGH, MetaImage, NRRD), a BIDS-style subject folder
        (VerSe, SPINEPS / TPTBox: then ``labels`` may be omitted), a DICOM series (a folder, or
        one file of it), or an image in memory (a nibabel image, ``(array, affine)`` or a
        :class:`~vertgrade.study.Volume`).
    labels : path or in-memory image, optional
        Vertebra instance labels (a file or an image in memory), or a folder of
        TotalSegmentator per-structure files; for a DICOM CT also a DICOM SEG. Required unless
        ``ct`` is a subject folder.
    bodies : path or in-memory image, optional
        A vertebral-body mask: TotalSegmentator ``vertebrae_body`` (1 = body) or a SPINEPS /
        TPTBox subregion mask (49 + 50 = body), told apart by their labels.
    label_format : {"auto", "verse", "totalseg-total"}
        How to read label ids; ``auto`` takes labels above 28 as TotalSegmentator ``total``.
    subject : str, optional
        Subject id; default from the file or folder name (for an image in memory, the name of
        the file a nibabel image was loaded from, else ``"study"``).
    series_uid : str, optional
        Where ``ct`` is a DICOM folder holding several series, the one to read.

    Returns
    -------
    study : Study
        ``inputs`` holds each input's path, or ``<in-memory ct>`` (etc.) for an image in
        memory; ``checksums`` the SHA-256 of each file, or of an in-memory image's values and
        affine (:func:`vertgrade.io.memory.array_sha256`).
    series : SeriesInfo or None
        The DICOM series of the CT, for DICOM outputs; ``None`` where the CT is not DICOM.

    Raises
    ------
    InputError
        Any input that cannot be used, naming the file (or ``<in-memory ...>``) and the problem.

    Warns
    -----
    DicomGeometryWarning
        As :func:`vertgrade.io.dicom.read_dicom_series`.
    """
    ct_in = _as_input(ct)
    if isinstance(ct_in, Path) and not ct_in.exists():
        raise InputError(ct_in, "no such file or folder")
    if isinstance(ct_in, Path) and is_dicom_path(ct_in):
        return load_dicom_study(
            ct_in,
            labels,
            series_uid=series_uid,
            bodies=bodies,
            label_format=label_format,
            subject=subject,
        )
    study = _load_files(ct_in, _as_input(labels), _as_input(bodies), label_format, subject)
    return study, None


def load_study(
    ct: ImageInput | None = None,
    labels: ImageInput | None = None,
    *,
    bodies: ImageInput | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
    series_uid: str | None = None,
) -> Study:
    """Load, validate and reorient a study.

    Parameters
    ----------
    ct : path or in-memory image, optional
        A CT in HU: an image file (``.nii``, ``.nii.gz``, ``.mgz``; ``.mha``, ``.nrrd`` with
        SimpleITK installed), a BIDS-style subject folder (VerSe, SPINEPS / TPTBox: then
        ``labels`` may be omitted), a DICOM series, or an image in memory: a nibabel image
        (``nib.Nifti1Image`` ...), an ``(array, affine)`` tuple (affine voxel -> RAS+ mm, as
        nibabel's) or a :class:`~vertgrade.study.Volume`.
    labels : path or in-memory image, optional
        Vertebra instance labels, as a file, an image in memory, or a folder of TotalSegmentator
        per-structure files. Required unless ``ct`` is a subject folder.
    bodies : path or in-memory image, optional
        A vertebral-body mask: TotalSegmentator ``vertebrae_body`` (1 = body) or a SPINEPS /
        TPTBox subregion mask (49 corpus border + 50 corpus = body), recognised by its labels.
    label_format : {"auto", "verse", "totalseg-total"}
        How to read label ids; ``auto`` takes labels above 28 as TotalSegmentator ``total``.
    subject : str, optional
        Subject id; default from the file or folder name (``"study"`` for arrays in memory).
    series_uid : str, optional
        Where ``ct`` is a DICOM folder holding several series, the one to read
        (see :func:`load_study_with_series`, which also returns the series' identifiers for
        DICOM outputs).

    Raises
    ------
    InputError
        Any input that cannot be used, naming the file (or ``<in-memory ct>``, ...) and the
        problem.

    Examples
    --------
    Images in memory, as TotalSegmentator's Python API returns them:

    >>> import nibabel as nib
    >>> lab = np.zeros((20, 20, 30), np.uint8); lab[5:15, 5:15, 2:12] = 20
    >>> lab[5:15, 5:15, 16:26] = 21
    >>> study = load_study(labels=nib.Nifti1Image(lab, np.diag([-1.0, -1, 1, 1])))
    >>> study.labels.orientation, str(study.inputs["labels"]), len(study.checksums["labels"])
    ('RAS', '<in-memory labels>', 64)
    >>> load_study(labels=(lab, np.eye(3)))
    Traceback (most recent call last):
    ...
    vertgrade.errors.InputError: <in-memory labels>: has an affine of shape (3, 3); expected (4, 4)
    """
    study, _ = load_study_with_series(
        ct,
        labels,
        bodies=bodies,
        label_format=label_format,
        subject=subject,
        series_uid=series_uid,
    )
    return study


# ---------------------------------------------------------------------------------------------
# Files, folders (BIDS-style, TotalSegmentator) and images in memory
# ---------------------------------------------------------------------------------------------

#: A normalised input: a path, or an image in memory.
_Input: TypeAlias = Path | InMemoryImage


def _as_input(obj: ImageInput | None) -> _Input | None:
    """A path as :class:`~pathlib.Path`; anything else as it is: an image in memory, or an
    object that :func:`~vertgrade.io.memory.volume_from_memory` refuses with an error naming
    its role."""
    if isinstance(obj, (str, os.PathLike)):
        return Path(obj)
    return obj


@dataclasses.dataclass(frozen=True)
class _Read:
    """One input read: its volume, its grid, and what the study records of it."""

    volume: Volume
    grid: GridInfo
    name: Path
    sha256: str


def _read_input(
    obj: _Input,
    *,
    role: Literal["ct", "labels", "bodies"],
    kind: Literal["ct", "labels", "mask"],
    notes: list[str],
) -> _Read:
    """Read one input: a file (:func:`read_volume`) or an image in memory
    (:func:`~vertgrade.io.memory.volume_from_memory`, named ``<in-memory {role}>``)."""
    if isinstance(obj, Path):
        vol, grid = read_volume(obj, kind=kind, notes=notes)
        return _Read(vol, grid, obj, input_checksum(obj))
    name = in_memory_name(role)
    vol, grid, sha = volume_from_memory(obj, kind=kind, source=name, notes=notes)
    return _Read(vol, grid, name, sha)


def _default_subject(obj: _Input) -> str:
    """The subject id of an input: from its file name (or the file a nibabel image came from)."""
    if isinstance(obj, Path):
        return subject_from_name(obj.name)
    return in_memory_subject(obj) or "study"


def _load_files(
    ct: _Input | None,
    labels: _Input | None,
    bodies: _Input | None,
    label_format: LabelFormat,
    subject: str | None,
) -> Study:
    """A study from image files, a BIDS-style folder, a TotalSegmentator folder or images in
    memory (any mix of them)."""
    notes: list[str] = []
    inputs: dict[str, Path] = {}
    checksums: dict[str, str] = {}
    centroid_path: Path | None = None
    if isinstance(ct, Path) and ct.is_dir():
        files = find_verse_files(ct)
        kind = "SPINEPS / TPTBox" if "subregions" in files else "VerSe"
        notes.append(f"BIDS-style {kind} layout recognised in {ct}")
        if subject is None:
            subject = subject_from_name(files["labels"].name) or ct.name
        if labels is None:
            labels = files["labels"]
            # the subregion mask beside the folder's own instance mask gives the bodies
            if bodies is None and "subregions" in files:
                bodies = files["subregions"]
                notes.append(
                    f"SPINEPS / TPTBox subregion mask {files['subregions'].name} found beside "
                    "the vertebra mask: its vertebral bodies (labels 49 + 50) are used"
                )
        ct = files.get("ct")
        centroid_path = files.get("centroids")
    if labels is None:
        where = ct if isinstance(ct, Path) else in_memory_name("ct") if ct is not None else None
        raise InputError(where, "no vertebra labels given (use --labels)")

    if isinstance(labels, Path) and labels.is_dir():
        lab_vol, lab_grid, more = _read_totalseg_folder(labels)
        notes.extend(more)
        lab_name, lab_sha = labels, input_checksum(labels)
    else:
        lab = _read_input(labels, role="labels", kind="labels", notes=notes)
        lab_vol, lab_grid, lab_name, lab_sha = lab.volume, lab.grid, lab.name, lab.sha256
    inputs["labels"], checksums["labels"] = lab_name, lab_sha
    lab_vol = convert_labels(lab_vol, label_format, notes)

    ct_vol: Volume | None = None
    grid = lab_grid
    outside: dict[int, NDArray[np.float64]] = {}
    if ct is not None:
        read = _read_input(ct, role="ct", kind="ct", notes=notes)
        ct_vol, grid = read.volume, read.grid
        inputs["ct"], checksums["ct"] = read.name, read.sha256
        lab_vol = _labels_onto_ct(lab_vol, ct_vol, lab_name, notes, outside)

    body_vol: Volume | None = None
    if bodies is not None:
        body_vol, inputs["bodies"], checksums["bodies"] = _read_bodies(bodies, lab_vol, notes)

    if subject is None:
        subject = _default_subject(ct if ct is not None else labels)
    centroids: dict[int, NDArray[np.float64]] = {}
    if centroid_path is not None:
        inputs["centroids"] = centroid_path
        checksums["centroids"] = input_checksum(centroid_path)
        centroids = read_verse_centroids(centroid_path, lab_grid)
    return Study(
        labels=lab_vol,
        grid=grid,
        subject=subject,
        ct=ct_vol,
        bodies=body_vol,
        inputs=inputs,
        checksums=checksums,
        notes=tuple(notes),
        centroids=centroids,
        outside_ct=outside,
    )


def _labels_onto_ct(
    lab_vol: Volume,
    ct_vol: Volume,
    lab_path: Path,
    notes: list[str],
    outside: dict[int, NDArray[np.float64]] | None = None,
) -> Volume:
    """The labels on the CT's grid: resampled (nearest neighbour) where their grids differ.

    Labels that fall wholly outside the CT go into ``outside`` (label -> centre, world mm)."""
    if same_grid(lab_vol, ct_vol):
        return lab_vol
    before = lab_vol
    lab_vol = resample_onto(lab_vol, ct_vol, "labels")
    notes.append("labels resampled onto the CT grid (nearest neighbour)")
    if not lab_vol.array.any():
        raise InputError(lab_path, "labels do not overlap the CT: none falls inside it")
    was = present_labels(cast("NDArray[np.integer]", before.array)).tolist()
    now = present_labels(cast("NDArray[np.integer]", lab_vol.array)).tolist()
    lost = sorted(set(was) - set(now))
    if lost and outside is not None:
        arr = np.asarray(before.array)
        for lab in lost:
            idx = np.argwhere(arr == lab).mean(axis=0)
            outside[int(lab)] = before.affine[:3, :3] @ idx + before.affine[:3, 3]
        notes.append(
            f"labels {', '.join(map(str, lost))} lie wholly outside the CT's field of view: "
            "reported as not gradable"
        )
    return lab_vol


def _read_bodies(obj: _Input, labels: Volume, notes: list[str]) -> tuple[Volume, Path, str]:
    """A vertebral-body mask as a ``uint8`` 0/1 mask on the labels' grid, with the name and
    checksum the study records.

    The mask's kind is told by its labels (:func:`~vertgrade.io.labels.body_voxels`:
    TotalSegmentator's 1, or a SPINEPS / TPTBox subregion mask's 49 + 50). A body mask has no
    instance ids: grading gives each body voxel to the vertebra whose label it lies in, so a
    mask none of whose body voxels lies in a vertebra label belongs to another study (or
    another space) and is refused; body voxels outside every label are said in a note.
    """
    read = _read_input(obj, role="bodies", kind="mask", notes=notes)
    body_vol = body_voxels(read.volume, notes)
    if not same_grid(body_vol, labels):
        body_vol = resample_onto(body_vol, labels, "body mask")
    body = np.asarray(body_vol.array).astype(bool)
    n_body = int(np.count_nonzero(body))
    if n_body == 0:
        raise InputError(read.name, "body mask has no body voxel inside the labels' grid")
    n_inside = int(np.count_nonzero(body & (np.asarray(labels.array) > 0)))
    if n_inside == 0:
        raise InputError(
            read.name,
            f"none of the body mask's {n_body} body voxels lies inside a vertebra label: the "
            "body mask and the labels are not of the same study, or not in the same space",
        )
    if n_inside < n_body:
        notes.append(
            f"{100 * (n_body - n_inside) / n_body:.0f} % of the body mask's voxels lie outside "
            "every vertebra label: ignored (a body voxel belongs to the vertebra it lies in)"
        )
    notes.append("vertebral bodies taken from the given body mask")
    return body_vol, read.name, read.sha256


def find_verse_files(folder: Path) -> dict[str, Path]:
    """Find the files of one subject below a BIDS-style ``folder`` (VerSe, SPINEPS / TPTBox).

    Files are told apart by their BIDS suffix, entities such as ``label-22`` allowed between
    ``seg-*`` and it: ``*_ct.nii.gz`` (CT), ``*_seg-vert[_*]_msk.nii.gz`` (vertebra instance
    mask), ``*_seg-subreg[_*]_msk.nii.gz`` (SPINEPS / TPTBox subregion mask) and ``*_ctd.json``
    (centroids).

    Returns
    -------
    dict
        Role (``"ct"``, ``"labels"``, ``"subregions"``, ``"centroids"``) -> path;
        ``"labels"`` always present.

    Raises
    ------
    InputError
        No vertebra mask below ``folder``, or several files of one role (several subjects).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz",
    ...                  "sub-ct_seg-subreg_label-22_msk.nii.gz"):
    ...         _ = (Path(tmp) / name).write_bytes(b"")
    ...     sorted((role, p.name) for role, p in find_verse_files(Path(tmp)).items())
    [('ct', 'sub-ct_label-22_ct.nii.gz'), ('labels', 'sub-ct_seg-vert_label-22_msk.nii.gz'), \
('subregions', 'sub-ct_seg-subreg_label-22_msk.nii.gz')]
    """
    found: dict[str, list[Path]] = {role: [] for role in _BIDS_ROLES}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        role = next((r for r, pattern in _BIDS_ROLES.items() if pattern.search(p.name)), None)
        if role is not None:
            found[role].append(p)
    if not found["labels"]:
        raise InputError(
            folder,
            "is neither a VerSe subject folder (nor a SPINEPS / TPTBox one: no "
            "*_seg-vert[_*]_msk.nii.gz below it) nor a DICOM series (no DICOM file in it); give "
            "a CT file and --labels, a subject folder or a DICOM series folder",
        )
    out: dict[str, Path] = {}
    for role, paths in found.items():
        if len(paths) > 1:
            listing = ", ".join(str(p.relative_to(folder)) for p in paths)
            raise InputError(folder, f"holds several {role} files ({listing}); give one subject")
        if paths:
            out[role] = paths[0]
    return out


def read_verse_centroids(path: Path, grid: GridInfo) -> dict[int, NDArray[np.float64]]:
    """Centroids of a VerSe ``*_ctd.json`` in world mm (RAS+).

    The file's first entry gives the axis directions (e.g. ``["P", "I", "R"]``) of the voxel
    coordinates ``X, Y, Z`` that follow; they refer to the mask's voxel grid reoriented to those
    directions.

    Parameters
    ----------
    path : Path
        The ``*_ctd.json`` file.
    grid : GridInfo
        The input grid of the vertebra mask the centroids refer to.

    Returns
    -------
    dict
        Label -> (3,) float64 world position in mm (RAS+).
    """
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cannot be read as JSON ({err})") from err
    if (
        not isinstance(entries, list)
        or not entries
        or not isinstance(entries[0], dict)
        or "direction" not in entries[0]
    ):
        raise InputError(
            path,
            "is not a VerSe centroid file: expected a JSON list whose first entry gives the "
            "axis directions ({'direction': ['P', 'I', 'R']})",
        )
    raw = entries[0]["direction"]
    axis_of = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or not all(isinstance(c, str) and c in axis_of for c in raw)
        or len({axis_of[c] for c in raw}) != 3
    ):
        raise InputError(
            path,
            f"has an invalid direction entry {raw!r}: expected three axis letters, one of "
            "L/R, A/P and S/I each (e.g. ['P', 'I', 'R'])",
        )
    direction = tuple(raw)
    points: dict[int, NDArray[np.float64]] = {}
    for i, e in enumerate(entries[1:], start=1):
        try:
            lab = e["label"]
            xyz = np.array([e["X"], e["Y"], e["Z"]], float)
            if isinstance(lab, bool) or int(lab) != lab or not np.all(np.isfinite(xyz)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise InputError(
                path, f"entry {i} is not a centroid (an integer 'label' and numbers 'X', 'Y', 'Z')"
            ) from None
        points[int(lab)] = xyz
    target = nib.orientations.axcodes2ornt(direction)
    # voxel index in the array reoriented to `direction` -> world, via that array's affine
    input_ornt = nib.orientations.io_orientation(grid.affine)
    input_codes = nib.orientations.ornt2axcodes(input_ornt)
    tr = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(input_codes), target)
    aff_dir = grid.affine @ nib.orientations.inv_ornt_aff(tr, grid.shape)
    return {lab: (aff_dir @ np.r_[p, 1.0])[:3] for lab, p in points.items()}


def _read_totalseg_folder(folder: Path) -> tuple[Volume, GridInfo, list[str]]:
    """Merge a folder of TotalSegmentator per-structure masks into one VerSe label volume."""
    files = [p for p in sorted(folder.iterdir()) if TOTALSEG_STRUCTURE_FILE.match(p.name)]
    if not files:
        raise InputError(folder, "no vertebrae_*.nii.gz files found (TotalSegmentator layout)")
    merged: NDArray[np.uint8] | None = None
    first: tuple[Volume, GridInfo] | None = None
    for p in files:
        m = TOTALSEG_STRUCTURE_FILE.match(p.name)
        assert m is not None
        level = m.group(1).upper()
        lab = label_id(level)
        vol, grid = read_volume(p, kind="mask")
        if first is None:
            first = (vol, grid)
            merged = np.zeros(vol.shape, np.uint8)
        elif vol.shape != first[0].shape or not np.allclose(vol.affine, first[0].affine, atol=1e-3):
            raise InputError(p, "is on another grid than the other vertebrae_*.nii.gz files")
        assert merged is not None
        merged[vol.array.astype(bool)] = lab
    assert first is not None and merged is not None
    vol0, grid0 = first
    notes = [f"labels merged from {len(files)} TotalSegmentator per-structure files"]
    return Volume(merged, vol0.affine, "labels", folder), grid0, notes


def input_checksum(path: Path) -> str:
    """SHA-256 of an input: of the file, or for a folder of TotalSegmentator per-structure files
    (``vertebrae_L1.nii.gz`` ...) of their names and checksums in sorted order."""
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.iterdir()):
            if TOTALSEG_STRUCTURE_FILE.match(p.name):
                h.update(f"{p.name}:{file_sha256(p)}\n".encode())
        return h.hexdigest()
    return file_sha256(path)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def load_dicom_study(
    ct: str | Path,
    labels: ImageInput | None,
    *,
    series_uid: str | None = None,
    bodies: ImageInput | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
) -> tuple[Study, SeriesInfo]:
    """Load a study whose CT is a DICOM series, with labels as an image file, an image in memory
    or a DICOM SEG.

    Parameters
    ----------
    ct : path
        Folder of the DICOM series (see :func:`vertgrade.io.dicom.read_dicom_series`).
    labels : path or in-memory image
        Vertebra labels (required; ``None`` is an :class:`InputError`): an image file or an
        image in memory in the same patient space (resampled onto the CT grid where its grid
        differs, as :func:`load_study` does), or a DICOM SEG
        (:func:`vertgrade.io.dicom.read_dicom_seg`).
    series_uid : str, optional
        The series to read where the folder holds several.
    bodies : path or in-memory image, optional
        A vertebral-body mask, as for :func:`load_study`.
    label_format : {"auto", "verse", "totalseg-total"}
        How label ids are read (ignored for a SEG).
    subject : str, optional
        Subject id; default the folder's name (never a DICOM identifier, which may identify
        the patient).

    Returns
    -------
    study : Study
        As :func:`load_study` gives it; ``inputs["ct"]`` is the folder and its checksum covers
        the series' files.
    series : SeriesInfo
        For :func:`vertgrade.report.dicom.write_dicom_outputs`.

    Warns
    -----
    DicomGeometryWarning
        As :func:`vertgrade.io.dicom.read_dicom_series`.
    """
    if labels is None:
        raise InputError(ct, "no vertebra labels given (use --labels)")
    ct_vol, grid, info = read_dicom_series(ct, series_uid=series_uid, stacklevel=3)
    notes = [f"CT read from DICOM series {info.series_instance_uid} ({info.n_images} images)"]
    notes.extend(info.notes)
    lab_in = cast("_Input", _as_input(labels))  # not None: checked above
    if isinstance(lab_in, Path) and not lab_in.exists():
        raise InputError(lab_in, "no such file or folder")
    outside: dict[int, NDArray[np.float64]] = {}
    if isinstance(lab_in, Path) and lab_in.is_file() and is_dicom_path(lab_in):
        lab_vol = read_dicom_seg(
            lab_in, ct_vol, frame_of_reference_uid=info.frame_of_reference_uid, notes=notes
        )
        notes.append("labels read from a DICOM SEG and resampled onto the CT grid")
        lab_name, lab_sha = lab_in, file_sha256(lab_in)
    else:
        lab = _read_input(lab_in, role="labels", kind="labels", notes=notes)
        lab_vol = convert_labels(lab.volume, label_format, notes)
        lab_vol = _labels_onto_ct(lab_vol, ct_vol, lab.name, notes, outside)
        lab_name, lab_sha = lab.name, lab.sha256
    inputs = {"ct": info.folder, "labels": lab_name}
    checksums = {"ct": _series_checksum(info), "labels": lab_sha}
    body_vol: Volume | None = None
    body_in = _as_input(bodies)
    if body_in is not None:
        body_vol, inputs["bodies"], checksums["bodies"] = _read_bodies(body_in, lab_vol, notes)
    study = Study(
        labels=lab_vol,
        grid=grid,
        subject=subject or subject_from_name(info.folder.name),
        ct=ct_vol,
        bodies=body_vol,
        inputs=inputs,
        checksums=checksums,
        notes=tuple(notes),
        outside_ct=outside,
    )
    return study, info


def _series_checksum(info: SeriesInfo) -> str:
    """SHA-256 over the series' SOP Instance UIDs and the checksums of their files."""
    h = hashlib.sha256()
    for inst in info.instances:
        h.update(f"{inst.sop_instance_uid}:{file_sha256(inst.path)}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------


def study_from_arrays(
    labels: NDArray[np.integer],
    affine: NDArray[np.float64],
    *,
    ct: NDArray[np.generic] | None = None,
    subject: str = "study",
    label_format: LabelFormat = "auto",
) -> Study:
    """A study from in-memory arrays on one grid (for pipelines that already hold the images).

    The same as ``load_study((ct, affine), (labels, affine), subject=subject)``: the arrays are
    validated and reoriented exactly as files are, and errors name ``<in-memory labels>`` or
    ``<in-memory ct>``. Unlike :func:`load_study`, it records no ``inputs`` or ``checksums``
    (a result's provenance then says it was graded from arrays in memory).

    Parameters
    ----------
    labels : (I, J, K) integer ndarray
        Vertebra instance labels.
    affine : (4, 4) ndarray
        Voxel -> world (RAS+ mm) of both arrays.
    ct : (I, J, K) ndarray, optional
        CT in HU on the same grid.
    subject : str
        Subject id.
    label_format : {"auto", "verse", "totalseg-total"}
        As for :func:`load_study`.

    Raises
    ------
    InputError
        Labels not 3D, a CT of another shape, and whatever :func:`load_study` refuses.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.uint8); lab[1:3, 1:3, 1:3] = 20
    >>> s = study_from_arrays(lab[::-1], np.diag([-1.0, 1, 1, 1]))
    >>> s.labels.orientation, s.grid.shape, int(s.labels.array.max()), s.inputs
    ('RAS', (4, 4, 4), 20, {})
    """
    if np.ndim(labels) != 3 or (ct is not None and np.shape(ct) != np.shape(labels)):
        raise InputError(None, "labels must be 3D and the CT on the same grid")
    study = _load_files(
        None if ct is None else (ct, affine), (labels, affine), None, label_format, subject
    )
    return dataclasses.replace(study, inputs={}, checksums={})
