"""Find the studies of a cohort: a folder searched for known layouts, or a CSV that lists them.

:func:`discover_studies` turns a cohort input into :class:`StudySpec` values (where each study's
CT, labels and body mask are); :func:`check_subject` is the rule a subject id must follow to name
the study's result folder. Nothing is read but folder listings and the CSV.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vertgrade.errors import InputError
from vertgrade.io.load import TOTALSEG_STRUCTURE_FILE

__all__ = ["StudySpec", "check_subject", "discover_studies", "skipped_folders"]

# --- file name rules of discovery ----------------------------------------------------------
# VerSe (Sekuboyina et al. 2021, BIDS-like): sub-<id>[_<entity>...]_ct.nii.gz in rawdata/ and
# sub-<id>[_<entity>...]_seg-vert_msk.nii.gz in derivatives/; the part before the suffix is the
# subject (VerSe 2020 names carry a _dir-ax / _dir-sag entity, kept in the subject).
_VERSE_CT = re.compile(r"^(sub-.+)_ct\.nii(\.gz)?$")
# VerSe and SPINEPS / TPTBox masks: BIDS entities may follow the seg entity
# (sub-ct_seg-vert_label-22_msk.nii.gz); the subject is the name without seg-* and the suffix
_VERSE_MASK = re.compile(
    r"^(sub-[^_]+(?:_[a-z]+-[^_]+)*?)_seg-vert((?:_[a-z]+-[^_]+)*)_msk\.nii(\.gz)?$"
)
_SUBREG_MASK = re.compile(
    r"^(sub-[^_]+(?:_[a-z]+-[^_]+)*?)_seg-subreg((?:_[a-z]+-[^_]+)*)_msk\.nii(\.gz)?$"
)
# vertgrade phantom pairs (labels.nii.gz) and TotalSegmentator multilabel vertebra files.
_LABEL_FILE = re.compile(r"^(labels|(.*_)?vertebrae_pp(_refined)?)\.nii(\.gz)?$", re.IGNORECASE)
_CT_FILE = re.compile(r"^(.*_)?ct\.nii(\.gz)?$", re.IGNORECASE)
_BODY_FILE = re.compile(r"^(.*_)?vertebrae_body\.nii(\.gz)?$", re.IGNORECASE)
# TotalSegmentator's usual output folder: a per-structure folder of this name belongs to its
# parent folder's subject even without a CT beside it.
_TS_OUTPUT_FOLDER = "segmentations"
_SUBJECT_OK = re.compile(r"^[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,199}$")


@dataclass(frozen=True)
class StudySpec:
    """Where one study's files are.

    Attributes
    ----------
    subject : str
        Subject id; also the name of the study's result folder (no path separators, not hidden).
    ct : Path or None
        The CT (NIfTI, HU); ``None`` for a labels-only study.
    labels : Path
        Vertebra instance labels: a NIfTI file or a folder of TotalSegmentator
        ``vertebrae_*.nii.gz`` files.
    bodies : Path or None
        A vertebral-body mask (TotalSegmentator ``vertebrae_body``: 1 = body), if any.
    """

    subject: str
    ct: Path | None
    labels: Path
    bodies: Path | None = None

    def inputs(self) -> dict[str, Path]:
        """Role (``ct``, ``labels``, ``bodies``) -> path of every input given."""
        roles = {"ct": self.ct, "labels": self.labels, "bodies": self.bodies}
        return {role: p for role, p in roles.items() if p is not None}


# --- discovery -----------------------------------------------------------------------------


def discover_studies(input: str | os.PathLike[str]) -> list[StudySpec]:
    """The studies of a cohort input: a folder to search, or a CSV that lists them.

    Parameters
    ----------
    input : path-like
        A folder, searched recursively (hidden files and folders are left out, linked folders
        are followed) for

        - VerSe and SPINEPS / TPTBox subjects: ``sub-*_seg-vert[_<key>-<value>...]_msk.nii.gz``
          masks anywhere below (``derivatives/``) with their ``sub-*_ct.nii.gz`` CT if found
          anywhere below (``rawdata/``) and a SPINEPS subregion mask
          ``sub-*_seg-subreg[...]_msk.nii.gz`` as the bodies (its labels 49 + 50); the subject
          is the file name without its ``seg-*`` entity and suffix (``sub-verse012``,
          ``sub-ct_label-22`` for ``sub-ct_seg-vert_label-22_msk.nii.gz``);
        - study folders: a folder holding one label source, which is ``labels.nii.gz`` (as
          written by ``vertgrade phantom``), a TotalSegmentator multilabel file
          ``[*_]vertebrae_pp[_refined].nii.gz``, or TotalSegmentator per-structure files
          ``vertebrae_L1.nii.gz`` ... (in the folder itself, or in a subfolder without a CT of
          its own when the folder holds the CT or the subfolder is named ``segmentations``);
          with at most one CT ``[*_]ct.nii.gz`` and one body mask
          ``[*_]vertebrae_body.nii.gz`` (beside the labels). The subject is the folder's path
          below ``input`` with ``_`` between its parts (``input``'s own name for ``input``).

        Or a ``.csv`` file with a header row and the columns ``subject`` and ``labels``, and
        optionally ``ct`` (empty for a labels-only study) and ``bodies``; relative paths are
        relative to the CSV's folder; other columns are ignored.

    Returns
    -------
    list of StudySpec
        Sorted by subject, with absolute paths.

    Raises
    ------
    InputError
        ``input`` missing, neither a folder nor a CSV; no study found; a folder with several
        label sources, CTs or body masks (ambiguous: list the studies in a CSV instead); the
        same subject twice; in a CSV, a missing column, an empty or unusable subject, or a file
        that does not exist (with the line number).
    """
    root = Path(input)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise InputError(
                root, "is neither a folder of studies nor a .csv file listing subject, ct, labels"
            )
        specs = _read_csv(root)
    else:
        specs = _search_folder(root)
    return sorted(specs, key=lambda s: s.subject)


def _read_csv(path: Path) -> list[StudySpec]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read as a UTF-8 CSV file ({err})") from err
    reader = csv.reader(io.StringIO(text))
    try:  # (line number, cells) of the rows that are not blank
        numbered = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except csv.Error as err:
        raise InputError(path, f"line {reader.line_num}: not valid CSV ({err})") from err
    rows = [r for _, r in numbered]
    if not rows:
        raise InputError(path, "is empty; expected a header row 'subject,ct,labels' and rows")
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("subject", "labels") if c not in header]
    if missing:
        raise InputError(
            path,
            f"has no {' or '.join(repr(c) for c in missing)} column (header: {rows[0]}); "
            "expected subject, ct, labels (and optionally bodies)",
        )
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if dupes:
        raise InputError(path, f"has the columns {dupes} more than once")
    base = path.parent.resolve()
    specs: list[StudySpec] = []
    seen: dict[str, int] = {}
    for number, row in numbered[1:]:
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        where = f"line {number}"
        subject = cells["subject"]
        check_subject(subject, path, where)
        if subject in seen:
            raise InputError(
                path, f"{where}: subject {subject!r} is listed twice (also on line {seen[subject]})"
            )
        seen[subject] = number

        labels = _csv_path(cells, "labels", path, base, where, required=True)
        assert labels is not None  # required=True never returns None
        ct = _csv_path(cells, "ct", path, base, where)
        bodies = _csv_path(cells, "bodies", path, base, where)
        specs.append(StudySpec(subject, ct, labels, bodies))
    if not specs:
        raise InputError(path, "lists no studies (a header row only)")
    return specs


def _csv_path(
    cells: dict[str, str],
    role: str,
    csv_path: Path,
    base: Path,
    where: str,
    *,
    required: bool = False,
) -> Path | None:
    """The absolute path in a CSV row's ``role`` cell (relative to ``base``); checked to exist."""
    value = cells.get(role, "")
    if not value:
        if required:
            raise InputError(csv_path, f"{where}: no {role} file given")
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise InputError(csv_path, f"{where}: {role} {p} does not exist")
    return p.resolve()


def check_subject(subject: str, path: Path | None, where: str) -> None:
    """Check that ``subject`` can name a result folder: not empty, not hidden, no separators.

    Parameters
    ----------
    subject : str
        The subject id.
    path : Path or None
        The file the subject comes from (named in the error), if any.
    where : str
        Where in that file or input it was found (``"line 3"``), for the error.

    Raises
    ------
    InputError
        The subject is empty, starts with ``.``, holds ``/``, ``\\`` or control characters, or
        is longer than 200 characters.

    >>> check_subject("sub-verse012", None, "StudySpec")
    >>> check_subject("../x", None, "StudySpec")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vertgrade.errors.InputError: StudySpec: subject '../x' cannot name a folder ...
    """
    if not subject:
        raise InputError(path, f"{where}: empty subject")
    if not _SUBJECT_OK.match(subject):
        raise InputError(
            path,
            f"{where}: subject {subject!r} cannot name a folder (it must not start with '.', "
            "hold '/' or '\\' or control characters, or be longer than 200 characters)",
        )


def _search_folder(root: Path) -> list[StudySpec]:
    root = root.resolve()
    files: dict[Path, list[Path]] = {}
    visited: set[str] = set()  # real paths: linked folders are followed, once each
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        files[here] = [here / f for f in sorted(filenames) if not f.startswith(".")]

    found: dict[str, tuple[StudySpec, str]] = {}  # subject -> (spec, where found)

    def add(spec: StudySpec, where: str) -> None:
        if spec.subject in found:
            raise InputError(
                root,
                f"subject {spec.subject!r} found twice ({found[spec.subject][1]} and {where}); "
                "rename one, or list the studies in a CSV (subject, ct, labels)",
            )
        found[spec.subject] = (spec, where)

    # VerSe subjects, matched across the whole tree (rawdata/ and derivatives/)
    masks: dict[str, list[Path]] = {}
    cts: dict[str, list[Path]] = {}
    subregs: dict[str, list[Path]] = {}
    for paths in files.values():
        for p in paths:
            if m := _VERSE_MASK.match(p.name):
                masks.setdefault(m.group(1) + m.group(2), []).append(p)
            elif m := _SUBREG_MASK.match(p.name):
                subregs.setdefault(m.group(1) + m.group(2), []).append(p)
            elif m := _VERSE_CT.match(p.name):
                cts.setdefault(m.group(1), []).append(p)
    used: set[Path] = set()
    for key in sorted(masks):
        for role, table in (
            ("vertebra masks", masks),
            ("CTs", cts),
            ("subregion masks", subregs),
        ):
            if len(table.get(key, [])) > 1:
                listing = ", ".join(str(p.relative_to(root)) for p in table[key])
                raise InputError(root, f"VerSe subject {key!r} has several {role}: {listing}")
        ct = cts.get(key, [None])[0]
        subreg = subregs.get(key, [None])[0]  # SPINEPS: its 49 + 50 are the bodies
        check_subject(key, root, f"VerSe mask {masks[key][0].relative_to(root)}")
        add(StudySpec(key, ct, masks[key][0], subreg), str(masks[key][0].relative_to(root)))
        used.update([masks[key][0], *(q for q in (ct, subreg) if q is not None)])

    # study folders: label files, TotalSegmentator per-structure folders
    def free(d: Path) -> list[Path]:
        return [p for p in files.get(d, []) if p not in used]

    def ct_files(d: Path) -> list[Path]:
        return [p for p in free(d) if _CT_FILE.match(p.name)]

    sources: dict[Path, list[Path]] = {}
    for d in files:
        for p in free(d):
            if _LABEL_FILE.match(p.name):
                sources.setdefault(d, []).append(p)
        if any(TOTALSEG_STRUCTURE_FILE.match(p.name) for p in free(d)):
            owner = d
            if (
                d != root
                and not ct_files(d)
                and (ct_files(d.parent) or d.name.lower() == _TS_OUTPUT_FOLDER)
            ):
                owner = d.parent
            sources.setdefault(owner, []).append(d)
    for d in sorted(sources):
        rel = d.relative_to(root)
        where = str(rel) if rel.parts else root.name
        if len(sources[d]) > 1:
            listing = ", ".join(_shown(p, d) for p in sources[d])
            raise InputError(
                d,
                f"holds several vertebra label sources ({listing}); keep one, or list the "
                "studies in a CSV (subject, ct, labels)",
            )
        labels = sources[d][0]
        ct_list = ct_files(d)
        body_dirs = [d] if labels == d or not labels.is_dir() else [d, labels]
        body_list = [p for bd in body_dirs for p in free(bd) if _BODY_FILE.match(p.name)]
        for role, lst in (("CT files", ct_list), ("body masks", body_list)):
            if len(lst) > 1:
                listing = ", ".join(_shown(p, d) for p in lst)
                raise InputError(
                    d, f"holds several {role} ({listing}); list the studies in a CSV instead"
                )
        subject = "_".join(rel.parts) if rel.parts else root.name
        check_subject(subject, root, f"folder {where}")
        ct = ct_list[0] if ct_list else None
        add(StudySpec(subject, ct, labels, body_list[0] if body_list else None), where)
    if not found:
        raise InputError(
            root,
            "no studies found: expected VerSe subjects (sub-*_seg-vert_msk.nii.gz), "
            "TotalSegmentator outputs (vertebrae_*.nii.gz, *vertebrae_pp*.nii.gz) or "
            "ct.nii.gz + labels.nii.gz folders; or give a CSV listing subject, ct, labels",
        )
    return [spec for spec, _ in found.values()]


#: Image files a cohort folder may hold: a folder with some that no study uses is reported.
_IMAGE_FILE = re.compile(r"\.(nii|nii\.gz|mha|mhd|nrrd|nhdr|mgz|mgh|dcm)$", re.IGNORECASE)


def skipped_folders(
    input: str | os.PathLike[str], specs: list[StudySpec]
) -> list[tuple[Path, str]]:
    """The folders below a cohort folder that hold image files no study uses, and why.

    Parameters
    ----------
    input : path-like
        The cohort folder given to :func:`discover_studies` (a CSV: nothing is skipped).
    specs : list of StudySpec
        What :func:`discover_studies` found there.

    Returns
    -------
    list of (Path, str)
        Each folder (sorted) with the reason it is not a study: a CT without labels, or image
        files whose names are not recognised (the names listed).
    """
    root = Path(input).resolve()
    if not root.is_dir():
        return []
    used: set[Path] = set()
    for spec in specs:
        for path in spec.inputs().values():
            used.add(path.resolve())
            if path.is_dir():
                used.update(q.resolve() for q in path.iterdir())
    out: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        images = [f for f in sorted(filenames) if not f.startswith(".") and _IMAGE_FILE.search(f)]
        unused = [f for f in images if (here / f).resolve() not in used]
        if not unused:
            continue
        cts = [f for f in unused if _CT_FILE.match(f) or _VERSE_CT.match(f)]
        if cts and len(cts) == len(unused):
            why = (
                f"a CT ({', '.join(cts)}) without vertebra labels: add labels.nii.gz, "
                "a TotalSegmentator output or a VerSe mask, or grade it alone with "
                "`vertgrade grade` (which segments it)"
            )
        else:
            shown = ", ".join(unused[:4]) + (
                f" and {len(unused) - 4} more" if len(unused) > 4 else ""
            )
            why = (
                f"image files not recognised as a study ({shown}); name them ct.nii.gz and "
                "labels.nii.gz, or list the study in a CSV (subject, ct, labels)"
            )
        out.append((here, why))
    return out


def _shown(p: Path, base: Path) -> str:
    """``p`` relative to ``base`` for messages, folders ending with ``/``."""
    if p == base:
        return "./"
    return str(p.relative_to(base)) + ("/" if p.is_dir() else "")
