"""Load a study: a CT and its vertebra labels, from files or from the layouts people have.

One dispatch, :func:`load_study_with_series`, recognises the input and returns the
:class:`~vertgrade.study.Study` together with the DICOM series it was read from (``None`` for
other inputs); :func:`load_study` (``vertgrade.load_study``) returns the study alone.

Recognised inputs
-----------------
- A CT file and a label file (``.nii`` / ``.nii.gz``), on the same grid or on different grids in
  the same physical space (labels are then resampled onto the CT grid, nearest neighbour).
- A VerSe folder: ``sub-*_ct.nii.gz``, ``sub-*_seg-vert_msk.nii.gz`` and optionally
  ``sub-*_seg-*_ctd.json`` (centroids in voxel coordinates, first entry naming their axis
  directions), found anywhere below the folder (``rawdata/`` and ``derivatives/`` included).
- TotalSegmentator outputs: the ``vertebrae_pp`` / ``vertebrae_pp_refined`` multilabel files
  (VerSe numbering); the ``total`` task's multilabel file (its own class ids, recognised by
  labels above 28 or forced with ``label_format="totalseg-total"``); a folder of per-structure
  files (``vertebrae_L1.nii.gz`` ...); and its ``vertebrae_body`` mask (1 = body, 2 = discs) as
  ``bodies``.
- A DICOM CT series (a folder, or one file of it), with labels as NIfTI or DICOM SEG
  (:func:`load_dicom_study`, reading through :mod:`vertgrade.io.dicom`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.dicom import SeriesInfo, is_dicom_path, read_dicom_seg, read_dicom_series
from vertgrade.io.labels import (
    LabelFormat,
    as_integer_labels,
    check_ct,
    convert_labels,
    present_labels,
    resample_onto,
    same_grid,
    subject_from_name,
)
from vertgrade.io.nifti import file_sha256, read_volume
from vertgrade.levels import label_id
from vertgrade.study import GridInfo, Study, Volume

__all__ = [
    "TOTALSEG_STRUCTURE_FILE",
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


# ---------------------------------------------------------------------------------------------
# The dispatch
# ---------------------------------------------------------------------------------------------


def load_study_with_series(
    ct: str | Path | None = None,
    labels: str | Path | None = None,
    *,
    bodies: str | Path | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
    series_uid: str | None = None,
) -> tuple[Study, SeriesInfo | None]:
    """Load, validate and reorient a study, and say which DICOM series it came from.

    Parameters
    ----------
    ct : path, optional
        A CT NIfTI in HU, a VerSe subject folder (then ``labels`` may be omitted), or a DICOM
        series (a folder, or one file of it).
    labels : path, optional
        A vertebra instance label file, or a folder of TotalSegmentator per-structure files;
        for a DICOM CT also a DICOM SEG. Required unless ``ct`` is a VerSe folder.
    bodies : path, optional
        A vertebral-body mask (e.g. TotalSegmentator ``vertebrae_body``: 1 = body).
    label_format : {"auto", "verse", "totalseg-total"}
        How to read label ids; ``auto`` takes labels above 28 as TotalSegmentator ``total``.
    subject : str, optional
        Subject id; default from the file or folder name.
    series_uid : str, optional
        Where ``ct`` is a DICOM folder holding several series, the one to read.

    Returns
    -------
    study : Study
    series : SeriesInfo or None
        The DICOM series of the CT, for DICOM outputs; ``None`` where the CT is not DICOM.

    Raises
    ------
    InputError
        Any input that cannot be used, naming the file and the problem.

    Warns
    -----
    DicomGeometryWarning
        As :func:`vertgrade.io.dicom.read_dicom_series`.
    """
    ct_path = Path(ct) if ct is not None else None
    if ct_path is not None and not ct_path.exists():
        raise InputError(ct_path, "no such file or folder")
    if ct_path is not None and is_dicom_path(ct_path):
        return load_dicom_study(
            ct_path,
            labels,
            series_uid=series_uid,
            bodies=bodies,
            label_format=label_format,
            subject=subject,
        )
    lab_path = Path(labels) if labels is not None else None
    return _load_files(ct_path, lab_path, bodies, label_format, subject), None


def load_study(
    ct: str | Path | None = None,
    labels: str | Path | None = None,
    *,
    bodies: str | Path | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
    series_uid: str | None = None,
) -> Study:
    """Load, validate and reorient a study.

    Parameters
    ----------
    ct : path, optional
        A CT NIfTI in HU, or a VerSe subject folder (then ``labels`` may be omitted).
    labels : path, optional
        A vertebra instance label file, or a folder of TotalSegmentator per-structure files.
        Required unless ``ct`` is a VerSe folder.
    bodies : path, optional
        A vertebral-body mask (e.g. TotalSegmentator ``vertebrae_body``: 1 = body).
    label_format : {"auto", "verse", "totalseg-total"}
        How to read label ids; ``auto`` takes labels above 28 as TotalSegmentator ``total``.
    subject : str, optional
        Subject id; default from the file or folder name.
    series_uid : str, optional
        Where ``ct`` is a DICOM folder holding several series, the one to read
        (see :func:`load_study_with_series`, which also returns the series' identifiers for
        DICOM outputs).

    Raises
    ------
    InputError
        Any input that cannot be used, naming the file and the problem.
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
# NIfTI files and folders (VerSe, TotalSegmentator)
# ---------------------------------------------------------------------------------------------


def _load_files(
    ct_path: Path | None,
    lab_path: Path | None,
    bodies: str | Path | None,
    label_format: LabelFormat,
    subject: str | None,
) -> Study:
    """A study from NIfTI files, a VerSe folder or a TotalSegmentator folder."""
    notes: list[str] = []
    inputs: dict[str, Path] = {}
    centroid_path: Path | None = None
    if ct_path is not None and ct_path.is_dir():
        files = find_verse_files(ct_path)
        notes.append(f"VerSe layout recognised in {ct_path}")
        if subject is None:
            subject = subject_from_name(files["labels"].name) or ct_path.name
        if lab_path is None:
            lab_path = files["labels"]
        ct_path = files.get("ct")
        centroid_path = files.get("centroids")
    if lab_path is None:
        raise InputError(ct_path, "no vertebra labels given (use --labels)")

    if lab_path.is_dir():
        lab_vol, lab_grid, more = _read_totalseg_folder(lab_path)
        notes.extend(more)
    else:
        lab_vol, lab_grid = read_volume(lab_path, kind="labels", notes=notes)
    inputs["labels"] = lab_path
    lab_vol = convert_labels(lab_vol, label_format, notes)

    ct_vol: Volume | None = None
    grid = lab_grid
    outside: dict[int, NDArray[np.float64]] = {}
    if ct_path is not None:
        ct_vol, grid = read_volume(ct_path, kind="ct", notes=notes)
        inputs["ct"] = ct_path
        lab_vol = _labels_onto_ct(lab_vol, ct_vol, lab_path, notes, outside)

    body_vol: Volume | None = None
    if bodies is not None:
        bpath = Path(bodies)
        body_vol = _read_bodies(bpath, lab_vol)
        inputs["bodies"] = bpath
        notes.append("vertebral bodies taken from the given body mask")

    if subject is None:
        subject = subject_from_name((ct_path or lab_path).name)
    centroids: dict[int, NDArray[np.float64]] = {}
    if centroid_path is not None:
        inputs["centroids"] = centroid_path
        centroids = read_verse_centroids(centroid_path, lab_grid)
    return Study(
        labels=lab_vol,
        grid=grid,
        subject=subject,
        ct=ct_vol,
        bodies=body_vol,
        inputs=inputs,
        checksums={k: input_checksum(p) for k, p in inputs.items()},
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


def _read_bodies(path: Path, labels: Volume) -> Volume:
    """A vertebral-body mask (value 1) as a ``uint8`` 0/1 mask on the labels' grid."""
    body_vol, _ = read_volume(path, kind="mask")
    if not same_grid(body_vol, labels):
        body_vol = resample_onto(body_vol, labels, "body mask")
    body_vol = Volume((body_vol.array == 1).astype(np.uint8), body_vol.affine, "mask", path)
    if not body_vol.array.any():
        raise InputError(path, "body mask has no voxel of value 1 (vertebral body)")
    return body_vol


def find_verse_files(folder: Path) -> dict[str, Path]:
    """Find the CT, vertebra mask and centroid files of one VerSe subject below ``folder``.

    Returns
    -------
    dict
        Role (``"ct"``, ``"labels"``, ``"centroids"``) -> path; ``"labels"`` always present.

    Raises
    ------
    InputError
        No vertebra mask below ``folder``, or several files of one role (several subjects).
    """
    found: dict[str, list[Path]] = {"ct": [], "labels": [], "centroids": []}
    for p in sorted(folder.rglob("*")):
        name = p.name
        if not p.is_file():
            continue
        if re.search(r"_ct\.nii(\.gz)?$", name):
            found["ct"].append(p)
        elif re.search(r"_seg-vert_msk\.nii(\.gz)?$", name):
            found["labels"].append(p)
        elif name.endswith("_ctd.json"):
            found["centroids"].append(p)
    if not found["labels"]:
        raise InputError(
            folder,
            "is neither a VerSe subject folder (no *_seg-vert_msk.nii.gz below it) nor a DICOM "
            "series (no DICOM file in it); give a CT file and --labels, a VerSe folder or a "
            "DICOM series folder",
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
    labels: str | Path | None,
    *,
    series_uid: str | None = None,
    bodies: str | Path | None = None,
    label_format: LabelFormat = "auto",
    subject: str | None = None,
) -> tuple[Study, SeriesInfo]:
    """Load a study whose CT is a DICOM series, with labels as NIfTI or DICOM SEG.

    Parameters
    ----------
    ct : path
        Folder of the DICOM series (see :func:`vertgrade.io.dicom.read_dicom_series`).
    labels : path
        Vertebra labels (required; ``None`` is an :class:`InputError`): a NIfTI file in the
        same patient space (resampled onto the CT grid where its grid differs, as
        :func:`load_study` does), or a DICOM SEG (:func:`vertgrade.io.dicom.read_dicom_seg`).
    series_uid : str, optional
        The series to read where the folder holds several.
    bodies : path, optional
        A vertebral-body mask NIfTI (1 = body), as for :func:`load_study`.
    label_format : {"auto", "verse", "totalseg-total"}
        How NIfTI label ids are read (ignored for a SEG).
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
    lab_path = Path(labels)
    if not lab_path.exists():
        raise InputError(lab_path, "no such file or folder")
    outside: dict[int, NDArray[np.float64]] = {}
    if lab_path.is_file() and is_dicom_path(lab_path):
        lab_vol = read_dicom_seg(
            lab_path, ct_vol, frame_of_reference_uid=info.frame_of_reference_uid, notes=notes
        )
        notes.append("labels read from a DICOM SEG and resampled onto the CT grid")
    else:
        lab_vol, _ = read_volume(lab_path, kind="labels", notes=notes)
        lab_vol = convert_labels(lab_vol, label_format, notes)
        lab_vol = _labels_onto_ct(lab_vol, ct_vol, lab_path, notes, outside)
    inputs = {"ct": info.folder, "labels": lab_path}
    checksums = {"ct": _series_checksum(info), "labels": file_sha256(lab_path)}
    body_vol: Volume | None = None
    if bodies is not None:
        bpath = Path(bodies)
        body_vol = _read_bodies(bpath, lab_vol)
        inputs["bodies"] = bpath
        checksums["bodies"] = file_sha256(bpath)
        notes.append("vertebral bodies taken from the given body mask")
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

    The arrays are validated and reoriented exactly as files are by :func:`load_study`.

    Parameters
    ----------
    labels : (I, J, K) integer ndarray
        Vertebra instance labels.
    affine : (4, 4) ndarray
        Voxel -> world (RAS+ mm) of both arrays.
    ct : (I, J, K) ndarray, optional
        CT in HU on the same grid.
    subject : str
        Subject id (also what errors name).
    label_format : {"auto", "verse", "totalseg-total"}
        As for :func:`load_study`.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.uint8); lab[1:3, 1:3, 1:3] = 20
    >>> s = study_from_arrays(lab[::-1], np.diag([-1.0, 1, 1, 1]))
    >>> s.labels.orientation, s.grid.shape, int(s.labels.array.max())
    ('RAS', (4, 4, 4), 20)
    """
    affine = np.asarray(affine, dtype=np.float64)
    if np.ndim(labels) != 3 or (ct is not None and np.shape(ct) != np.shape(labels)):
        raise InputError(None, "labels must be 3D and the CT on the same grid")
    ornt = nib.orientations.io_orientation(affine)
    shape = tuple(int(n) for n in np.shape(labels))
    can_aff = affine @ nib.orientations.inv_ornt_aff(ornt, shape)

    def canon(a: NDArray[np.generic]) -> NDArray[np.generic]:
        return nib.orientations.apply_orientation(a, ornt)

    notes: list[str] = []
    lab = Volume(canon(as_integer_labels(Path(subject), np.asarray(labels))), can_aff, "labels")
    lab = convert_labels(lab, label_format, notes)
    ct_vol = None
    if ct is not None:
        ct_vol = Volume(canon(check_ct(Path(subject), np.asarray(ct))), can_aff, "ct")
    grid = GridInfo(shape=shape, affine=affine, ornt=ornt)  # type: ignore[arg-type]
    return Study(labels=lab, grid=grid, subject=subject, ct=ct_vol, notes=tuple(notes))
