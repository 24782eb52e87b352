"""Finding and reading what ``vertgrade seg-qa`` compares: label maps and VerSe centroid files,
for one case (two files) or for folders of cases paired by name.

A case's name comes from its file names (:func:`case_of`): the leading BIDS entities of a
``sub-*`` name (``sub-verse004``, ``sub-verse506_dir-iso``), else the sub-folder of the given
folder that holds the file (``pred/case7/vertebrae.nii.gz`` is ``case7``), else the file name
without its suffixes (``case7.nii.gz``). Its patient, the unit of a cohort's bootstrap, is the
``sub-`` entity, else the case's name.

In a folder, every image file is a label map except a BIDS CT (``*_ct.nii.gz``) and a subregion
mask (``*_seg-subreg*_msk.nii.gz``), which are skipped (and listed); ``*_ctd.json`` files are
centroid files. A case has at most one label map and one centroid file on each side.

A VerSe centroid file gives voxel coordinates of the vertebra mask it belongs to
(:func:`vertgrade.io.load.read_verse_centroids`): its grid is that mask, the label map of the
same case on the same side, or the image given for it (``--pred-grid``, ``--truth-grid``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.labels import LabelFormat, convert_labels, present_labels
from vertgrade.io.load import read_verse_centroids
from vertgrade.io.nifti import READ_SUFFIXES, file_sha256, read_volume
from vertgrade.segqa.case import CaseSide
from vertgrade.study import GridInfo, Volume

__all__ = [
    "CENTROID_SUFFIX",
    "CaseFiles",
    "Pairing",
    "SideFiles",
    "case_of",
    "pair_cases",
    "read_side",
]

#: The name ending of a VerSe centroid file (``sub-verse004_seg-subreg_ctd.json``).
CENTROID_SUFFIX = "_ctd.json"

#: A BIDS ``key-value`` entity.
_ENTITY = re.compile(r"^([A-Za-z]+)-([A-Za-z0-9]+)$")
#: BIDS entities that name a derivative, not the scan: a case's name stops at the first.
_DERIVATIVE_ENTITIES = ("seg", "label", "desc", "space", "res", "den", "mod")
#: Images in a folder that are not vertebra label maps: a BIDS CT and a subregion mask.
_NOT_LABELS = (
    (re.compile(r"_ct\.[A-Za-z.]+$"), "a CT image"),
    (
        re.compile(r"_seg-subreg(_[A-Za-z0-9]+-[A-Za-z0-9]+)*_msk\.", re.IGNORECASE),
        "a subregion mask",
    ),
)


@dataclass(frozen=True)
class SideFiles:
    """The files of one side of one case.

    Attributes
    ----------
    labels : Path or None
        The vertebra label map.
    centroids : Path or None
        A VerSe ``*_ctd.json``.
    grid : Path or None
        The image whose voxel grid the centroid file's coordinates refer to (``labels`` where
        ``None``).
    """

    labels: Path | None = None
    centroids: Path | None = None
    grid: Path | None = None


@dataclass(frozen=True)
class CaseFiles:
    """One case to compare: its name, its patient and the files of each side."""

    subject: str
    patient: str
    pred: SideFiles
    truth: SideFiles


@dataclass(frozen=True)
class Pairing:
    """The cases found, and what was left out.

    Attributes
    ----------
    cases : tuple of CaseFiles
        The cases both sides have, by name.
    pred_only, truth_only : tuple of str
        Cases found on one side only (not compared).
    skipped : tuple of str
        Files of the folders that were not taken, each with the reason.
    """

    cases: tuple[CaseFiles, ...]
    pred_only: tuple[str, ...] = ()
    truth_only: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def _strip(name: str) -> str:
    lower = name.lower()
    for suffix in (".json", *sorted(READ_SUFFIXES, key=len, reverse=True), ".gz"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_of(path: Path, root: Path | None = None) -> tuple[str, str]:
    """The case and the patient a file belongs to (see the module's description).

    Parameters
    ----------
    path : Path
        The file.
    root : Path, optional
        The folder the file was found in (for a non-BIDS file in a case's sub-folder).

    Returns
    -------
    case, patient : str

    Examples
    --------
    >>> case_of(Path("sub-verse004_seg-vert_msk.nii.gz"))
    ('sub-verse004', 'sub-verse004')
    >>> case_of(Path("sub-verse506_dir-iso_seg-subreg_ctd.json"))
    ('sub-verse506_dir-iso', 'sub-verse506')
    >>> case_of(Path("pred/case7/vertebrae.nii.gz"), Path("pred")), case_of(Path("c3_ctd.json"))
    (('case7', 'case7'), ('c3', 'c3'))
    """
    stem = _strip(path.name)
    if stem.startswith("sub-"):
        keep = []
        for part in stem.split("_"):
            m = _ENTITY.match(part)
            if m is None or m.group(1).lower() in _DERIVATIVE_ENTITIES:
                break
            keep.append(part)
        if keep:
            return "_".join(keep), keep[0]
    if root is not None:
        rel = path.relative_to(root)
        if len(rel.parts) > 1:
            return rel.parts[0], rel.parts[0]
    if stem.lower().endswith("_ctd"):
        stem = stem[: -len("_ctd")]
    return stem, stem


def _kind(path: Path) -> tuple[str | None, str | None]:
    """``("centroids" | "labels" | None, why skipped)`` of a file met in a folder."""
    name = path.name
    lower = name.lower()
    if lower.endswith(CENTROID_SUFFIX):
        return "centroids", None
    if not lower.endswith(READ_SUFFIXES):
        return None, None
    if lower.endswith(".img") and path.with_suffix(".hdr").exists():
        return None, None  # the Analyze pair is read through its header
    for pattern, what in _NOT_LABELS:
        if pattern.search(name):
            return None, f"{what}, not a vertebra label map"
    return "labels", None


@dataclass
class _Found:
    patient: str
    labels: list[Path]
    centroids: list[Path]


def _scan(folder: Path) -> tuple[dict[str, _Found], list[str]]:
    found: dict[str, _Found] = {}
    skipped: list[str] = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        kind, why = _kind(p)
        if why is not None:
            skipped.append(f"{p}: {why}")
        if kind is None:
            continue
        case, patient = case_of(p, folder)
        entry = found.setdefault(case, _Found(patient, [], []))
        (entry.labels if kind == "labels" else entry.centroids).append(p)
    return found, skipped


def _side(folder: Path, case: str, entry: _Found) -> SideFiles:
    for what, paths in (("label maps", entry.labels), ("centroid files", entry.centroids)):
        if len(paths) > 1:
            listing = ", ".join(str(p.relative_to(folder)) for p in paths)
            raise InputError(folder, f"case {case} has several {what} ({listing}): keep one")
    labels = entry.labels[0] if entry.labels else None
    centroids = entry.centroids[0] if entry.centroids else None
    if centroids is not None and labels is None:
        raise InputError(
            centroids,
            "no label map of this case beside it: a VerSe centroid file gives voxel "
            "coordinates, and the vertebra mask of the same case gives their grid",
        )
    return SideFiles(labels=labels, centroids=centroids)


def _grid_beside(ctd: Path, option: str) -> Path:
    """The one label map of the same case in a centroid file's folder."""
    case, _ = case_of(ctd)
    beside = [
        p
        for p in sorted(ctd.parent.iterdir())
        if p.is_file() and _kind(p)[0] == "labels" and case_of(p)[0] == case
    ]
    if len(beside) != 1:
        what = "no label map" if not beside else f"{len(beside)} label maps"
        raise InputError(
            ctd,
            f"a VerSe centroid file gives voxel coordinates, and {what} of case {case} lies "
            f"beside it to give their grid: name the vertebra mask it belongs to with {option}",
        )
    return beside[0]


def _file_side(path: Path, grid: Path | None, option: str) -> SideFiles:
    lower = path.name.lower()
    if lower.endswith(".json"):
        return SideFiles(
            centroids=path, grid=grid if grid is not None else _grid_beside(path, option)
        )
    if grid is not None:
        raise InputError(grid, f"{option} is for a centroid file, and {path.name} is a label map")
    return SideFiles(labels=path)


def pair_cases(
    pred: Path,
    truth: Path,
    *,
    pred_grid: Path | None = None,
    truth_grid: Path | None = None,
) -> Pairing:
    """The cases to compare: two files (one case) or two folders (cases paired by name).

    Parameters
    ----------
    pred, truth : Path
        Label maps (any format :func:`vertgrade.io.nifti.read_volume` reads) or VerSe centroid
        files (``*.json``), or two folders of them.
    pred_grid, truth_grid : Path, optional
        For a centroid file given alone, the vertebra mask whose voxel grid its coordinates
        refer to (default: the one label map of the same case beside it).

    Raises
    ------
    InputError
        A missing path, a file and a folder, a case with several files of one kind, a centroid
        file without a grid, or two folders without a case in common.
    """
    for p in (pred, truth, pred_grid, truth_grid):
        if p is not None and not p.exists():
            raise InputError(p, "no such file or folder")
    if pred.is_dir() != truth.is_dir():
        raise InputError(
            pred if pred.is_dir() else truth,
            "is a folder and the other input a file: give two files (one case) or two folders "
            "(cases paired by name)",
        )
    if not pred.is_dir():
        subject, patient = case_of(truth)
        return Pairing(
            (
                CaseFiles(
                    subject,
                    patient,
                    _file_side(pred, pred_grid, "--pred-grid"),
                    _file_side(truth, truth_grid, "--truth-grid"),
                ),
            )
        )
    for grid, option in ((pred_grid, "--pred-grid"), (truth_grid, "--truth-grid")):
        if grid is not None:
            raise InputError(
                grid,
                f"{option} is for one centroid file; in folders, each case's centroid file "
                "takes its grid from the label map of the same case",
            )
    p_found, p_skipped = _scan(pred)
    t_found, t_skipped = _scan(truth)
    both = sorted(set(p_found) & set(t_found))
    if not both:
        p_names = ", ".join(sorted(p_found)[:5]) or "none"
        t_names = ", ".join(sorted(t_found)[:5]) or "none"
        raise InputError(
            pred,
            f"no case in common with {truth} (cases here: {p_names}; there: {t_names}); cases "
            "are paired by the BIDS sub- entity, the sub-folder or the file name",
        )
    cases = tuple(
        CaseFiles(
            case,
            t_found[case].patient,
            _side(pred, case, p_found[case]),
            _side(truth, case, t_found[case]),
        )
        for case in both
    )
    return Pairing(
        cases,
        pred_only=tuple(sorted(set(p_found) - set(t_found))),
        truth_only=tuple(sorted(set(t_found) - set(p_found))),
        skipped=tuple(p_skipped + t_skipped),
    )


def _labels(
    path: Path, label_format: LabelFormat, notes: list[str], *, truth: bool
) -> tuple[Volume, GridInfo]:
    vol, grid = read_volume(path, kind="labels", notes=notes)
    if present_labels(vol).size == 0:
        if truth:
            raise InputError(path, "label map is empty (no labelled voxel): nothing to compare to")
        notes.append("the predicted label map is empty")
        return vol, grid
    return convert_labels(vol, label_format, notes), grid


def _grid(path: Path) -> GridInfo:
    _, grid = read_volume(path, kind="labels")
    return grid


def read_side(files: SideFiles, *, label_format: LabelFormat = "auto", truth: bool) -> CaseSide:
    """Read one side of a case.

    Parameters
    ----------
    files : SideFiles
    label_format : {"auto", "verse", "totalseg-total"}
        How to read the label map's ids (:func:`vertgrade.io.labels.convert_labels`).
    truth : bool
        The truth's side: an empty label map or centroid file is an error there (an empty
        prediction is a result: every vertebra missed).

    Returns
    -------
    CaseSide
        Labels on the canonical (RAS+) grid; centroids in world mm.

    Raises
    ------
    InputError
        An unreadable file, labels outside the VerSe convention, an empty truth.
    """
    notes: list[str] = []
    inputs: dict[str, str] = {}
    labels = None
    grid_info: GridInfo | None = None
    if files.labels is not None:
        labels, grid_info = _labels(files.labels, label_format, notes, truth=truth)
        inputs["labels"] = str(files.labels)
        inputs["labels_sha256"] = file_sha256(files.labels)
    centroids: dict[int, NDArray[np.float64]] | None = None
    if files.centroids is not None:
        grid_path = files.grid if files.grid is not None else files.labels
        if grid_path is None:
            raise InputError(files.centroids, "a centroid file needs the image of its grid")
        if grid_path != files.labels or grid_info is None:
            grid_info = _grid(grid_path)
        centroids = read_verse_centroids(files.centroids, grid_info)
        if not centroids and truth:
            raise InputError(files.centroids, "holds no centroid: nothing to compare to")
        inputs["centroids"] = str(files.centroids)
        inputs["centroids_sha256"] = file_sha256(files.centroids)
        inputs["centroids_grid"] = str(grid_path)
        notes.append(f"centroids from {files.centroids.name} (grid of {grid_path.name})")
    return CaseSide(labels=labels, centroids=centroids, inputs=inputs, notes=tuple(notes))
