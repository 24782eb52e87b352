"""Load a study: a CT and its vertebra labels, from files or from the layouts people have.

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
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal, cast

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.errors import InputError
from vertgrade.io.nifti import _as_integer_labels, _check_ct, file_sha256, read_volume
from vertgrade.levels import VERSE_LABELS, label_id, totalseg_total_to_verse
from vertgrade.volume import GridInfo, Study, Volume

__all__ = [
    "LabelFormat",
    "find_verse_files",
    "load_study",
    "read_verse_centroids",
    "study_from_arrays",
]

LabelFormat = Literal["auto", "verse", "totalseg-total"]

TOTALSEG_STRUCTURE_FILE = re.compile(r"^vertebrae_([CTLS]\d{1,2})\.nii(\.gz)?$", re.IGNORECASE)


def find_verse_files(folder: Path) -> dict[str, Path]:
    """Find the CT, vertebra mask and centroid files of one VerSe subject below ``folder``."""
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
            folder, "no VerSe vertebra mask (*_seg-vert_msk.nii.gz) found in this folder"
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
    """
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        direction = tuple(entries[0]["direction"])
        points = {int(e["label"]): np.array([e["X"], e["Y"], e["Z"]], float) for e in entries[1:]}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise InputError(path, f"is not a VerSe centroid file ({err})") from err
    try:
        target = nib.orientations.axcodes2ornt(direction)
    except Exception as err:
        raise InputError(path, f"has an invalid direction entry {direction}") from err
    # voxel index in the array reoriented to `direction` -> world, via that array's affine
    input_ornt = nib.orientations.io_orientation(grid.affine)
    input_codes = nib.orientations.ornt2axcodes(input_ornt)
    tr = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(input_codes), target)
    aff_dir = grid.affine @ nib.orientations.inv_ornt_aff(tr, grid.shape)
    return {lab: (aff_dir @ np.r_[p, 1.0])[:3] for lab, p in points.items()}


def _read_totalseg_folder(folder: Path) -> tuple[Volume, GridInfo, list[str]]:
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


def _convert_labels(vol: Volume, label_format: LabelFormat, notes: list[str]) -> Volume:
    arr = cast("NDArray[np.integer]", vol.array)
    present = present_labels(arr)
    if present.size == 0:
        raise InputError(vol.source, "label map is empty (no labelled voxel)")
    fmt = label_format
    if fmt == "auto":
        fmt = "totalseg-total" if present.max() > 28 else "verse"
        if fmt == "totalseg-total":
            notes.append(
                "labels read as TotalSegmentator 'total' class ids (labels above 28 found)"
            )
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
    bad = [int(c) for c in present if int(c) not in VERSE_LABELS]
    if bad:
        raise InputError(
            vol.source,
            f"labels {bad} are outside the VerSe convention (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, "
            "25 L6, 26 S1, 28 T13); for TotalSegmentator 'total' output use "
            "--label-format totalseg-total",
        )
    return vol


def present_labels(arr: NDArray[np.integer]) -> NDArray[np.int64]:
    """The non-zero labels present in an integer array (one pass, no large temporary)."""
    from vertgrade.geometry.vertebra import find_objects

    objects = find_objects(arr)
    return np.array([i + 1 for i, sl in enumerate(objects) if sl is not None], dtype=np.int64)


def _same_grid(a: Volume, b: Volume) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=1e-3, rtol=0))


def _world_box(v: Volume) -> NDArray[np.float64]:
    n = np.array(v.shape) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    w = (v.affine @ corners.T).T[:, :3]
    return np.stack([w.min(axis=0), w.max(axis=0)])


def _resample_onto(src: Volume, ref: Volume, what: str) -> Volume:
    """Nearest-neighbour resampling of a label volume onto another grid (same world space)."""
    box_s, box_r = _world_box(src), _world_box(ref)
    if np.any(box_s[1] < box_r[0]) or np.any(box_r[1] < box_s[0]):
        raise InputError(
            src.source,
            f"{what} do not overlap the CT in physical space (labels span "
            f"{np.round(box_s[0]).tolist()}..{np.round(box_s[1]).tolist()} mm, CT "
            f"{np.round(box_r[0]).tolist()}..{np.round(box_r[1]).tolist()} mm)",
        )
    m = np.linalg.inv(src.affine) @ ref.affine
    # One voxel of zeros around the source, sampled in "nearest" mode: a target voxel that lies
    # on the source's outermost voxel up to rounding keeps its label, and beyond the padding
    # everything is zero.
    padded = np.pad(np.asarray(src.array), 1)
    out = ndimage.affine_transform(
        padded, m[:3, :3], m[:3, 3] + 1.0, output_shape=ref.shape, order=0, mode="nearest"
    )
    return Volume(out, ref.affine, src.kind, src.source)


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
        (see :func:`vertgrade.io.dicom.load_dicom_study`, which also returns the series'
        identifiers for DICOM outputs).

    Raises
    ------
    InputError
        Any input that cannot be used, naming the file and the problem.
    """
    notes: list[str] = []
    inputs: dict[str, Path] = {}
    ct_path = Path(ct) if ct is not None else None
    lab_path = Path(labels) if labels is not None else None
    centroid_path: Path | None = None
    if ct_path is not None and not ct_path.exists():
        raise InputError(ct_path, "no such file or folder")
    if ct_path is not None and _looks_dicom(ct_path):
        from vertgrade.io.dicom import load_dicom_study

        return load_dicom_study(
            ct_path,
            lab_path,
            series_uid=series_uid,
            bodies=bodies,
            label_format=label_format,
            subject=subject,
        )[0]
    if ct_path is not None and ct_path.is_dir():
        files = find_verse_files(ct_path)
        notes.append(f"VerSe layout recognised in {ct_path}")
        if subject is None:
            subject = _subject_from_name(files["labels"].name) or ct_path.name
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
        lab_vol, lab_grid = read_volume(lab_path, kind="labels")
    inputs["labels"] = lab_path
    lab_vol = _convert_labels(lab_vol, label_format, notes)

    ct_vol: Volume | None = None
    grid = lab_grid
    if ct_path is not None:
        ct_vol, grid = read_volume(ct_path, kind="ct")
        inputs["ct"] = ct_path
        if not _same_grid(lab_vol, ct_vol):
            lab_vol = _resample_onto(lab_vol, ct_vol, "labels")
            notes.append("labels resampled onto the CT grid (nearest neighbour)")
            if not lab_vol.array.any():
                raise InputError(lab_path, "labels do not overlap the CT: none falls inside it")

    body_vol: Volume | None = None
    if bodies is not None:
        bpath = Path(bodies)
        body_vol, _ = read_volume(bpath, kind="mask")
        inputs["bodies"] = bpath
        if not _same_grid(body_vol, lab_vol):
            body_vol = _resample_onto(body_vol, lab_vol, "body mask")
        body_vol = Volume((body_vol.array == 1).astype(np.uint8), body_vol.affine, "mask", bpath)
        if not body_vol.array.any():
            raise InputError(bpath, "body mask has no voxel of value 1 (vertebral body)")
        notes.append("vertebral bodies taken from the given body mask")

    if subject is None:
        subject = _subject_from_name((ct_path or lab_path).name)
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
    )


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


def _looks_dicom(path: Path) -> bool:
    try:
        from vertgrade.io.dicom import is_dicom_path
    except ImportError:  # pragma: no cover
        return False
    return is_dicom_path(path)


def _subject_from_name(name: str) -> str:
    m = re.match(r"^(sub-[^_]+)", name)
    if m:
        return m.group(1)
    stem = name
    for suffix in (".nii.gz", ".nii", ".gz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem


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
    lab = Volume(canon(_as_integer_labels(Path(subject), np.asarray(labels))), can_aff, "labels")
    lab = _convert_labels(lab, label_format, notes)
    ct_vol = None
    if ct is not None:
        ct_vol = Volume(canon(_check_ct(Path(subject), np.asarray(ct))), can_aff, "ct")
    grid = GridInfo(shape=shape, affine=affine, ornt=ornt)  # type: ignore[arg-type]
    return Study(labels=lab, grid=grid, subject=subject, ct=ct_vol, notes=tuple(notes))
