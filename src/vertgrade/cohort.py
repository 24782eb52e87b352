"""Grade a cohort: thousands of studies in parallel on Dask, resumably.

A cohort run finds the studies of an input folder or CSV (:func:`discover_studies`), grades each
one exactly as ``vertgrade grade`` would (:func:`vertgrade.load_study`,
:func:`vertgrade.grade_study`, :func:`vertgrade.report.writers.write_result`) in parallel on a
Dask distributed cluster, and gathers every vertebra into one table (:func:`run_cohort`).

Output folder
-------------
``OUT/studies/<subject>/``
    The files ``vertgrade grade`` writes (:data:`vertgrade.report.writers.OUTPUT_FILES`:
    ``result.json``, ``vertebrae.csv``, ``bodies.nii.gz`` ...), and ``manifest.json``: the
    SHA-256 of each input and of the parameters (the whole :class:`GradingConfig`, the label
    format and the vertgrade version). The folder is written under a hidden temporary name
    beside it and renamed into place, so a finished folder is never half-written.
``OUT/vertebrae.csv``, ``OUT/vertebrae.parquet``
    One row per vertebra of every study of the run that is graded (in this run or, unchanged,
    in an earlier one), a ``subject`` column first, then the columns of each study's
    ``vertebrae.csv``; rebuilt at the end of every run from the finished study folders, so that
    a resumed run's table holds the studies graded before it was interrupted.
``OUT/failures.csv``
    The studies of the last run that could not be graded: ``subject, ct, labels, bodies, error``
    (one line each); header only when none failed.

Resuming
--------
A study whose folder holds a manifest with the same input checksums and the same parameters is
skipped; any change of an input file's bytes or of a parameter grades it again (inputs moved to
another path with the same bytes are not graded again). As rsync and make do, an input whose
path, size and modification time are those in the manifest is taken as unchanged without being
read; any other is read and its checksum compared (on the workers, in parallel). A run in which
every study is done starts no cluster. A run that is killed loses only the studies that were
being graded; the next run cleans their temporary folders and grades them. Failed studies are
tried again by every run; a study that fails keeps the folder of an earlier run, if it has one,
but is left out of the table. One run at a time may write an output folder
(``OUT/.vertgrade-cohort.lock``; a lock left by a killed run on this machine is taken over).

Dask, pandas and pyarrow are the ``cohort`` extra (``pip install 'vertgrade[cohort]'``); they
are imported only when a cohort runs. The input files and the output folder must be reachable
under the same paths from every worker (a shared file system when ``scheduler`` is a remote
cluster).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vertgrade.errors import InputError, OutputError, VertgradeError
from vertgrade.io._atomic import atomic_path, write_text_atomic
from vertgrade.io.study import TOTALSEG_STRUCTURE_FILE, input_checksum
from vertgrade.pipeline import GradingConfig
from vertgrade.report.writers import OUTPUT_FILES
from vertgrade.result import CSV_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from vertgrade.result import SpineResult

__all__ = [
    "FAILURE_COLUMNS",
    "MANIFEST_NAME",
    "CohortProgress",
    "CohortSummary",
    "MissingExtraError",
    "StudyFailure",
    "StudySpec",
    "discover_studies",
    "parameters_sha256",
    "read_cohort_table",
    "run_cohort",
]

logger = logging.getLogger(__name__)

#: Name of the manifest in every finished study folder.
MANIFEST_NAME = "manifest.json"
#: Columns of ``failures.csv``, in order.
FAILURE_COLUMNS: tuple[str, ...] = ("subject", "ct", "labels", "bodies", "error")
#: Bumped when the manifest or the parameter hash changes meaning (every study is then redone).
_MANIFEST_VERSION = 1
# A finished study folder: the files write_result writes, and the manifest written after them.
_STUDY_FILES = (*OUTPUT_FILES, MANIFEST_NAME)
_LOCK_NAME = ".vertgrade-cohort.lock"
_TMP_MARK, _OLD_MARK = ".tmp-", ".old-"
# The label format every cohort study is read with (load_study's default); part of the hash.
_LABEL_FORMAT = "auto"

# --- file name rules of discovery ----------------------------------------------------------
# VerSe (Sekuboyina et al. 2021, BIDS-like): sub-<id>[_<entity>...]_ct.nii.gz in rawdata/ and
# sub-<id>[_<entity>...]_seg-vert_msk.nii.gz in derivatives/; the part before the suffix is the
# subject (VerSe 2020 names carry a _dir-ax / _dir-sag entity, kept in the subject).
_VERSE_CT = re.compile(r"^(sub-.+)_ct\.nii(\.gz)?$")
_VERSE_MASK = re.compile(r"^(sub-.+)_seg-vert_msk\.nii(\.gz)?$")
# vertgrade phantom pairs (labels.nii.gz) and TotalSegmentator multilabel vertebra files.
_LABEL_FILE = re.compile(r"^(labels|(.*_)?vertebrae_pp(_refined)?)\.nii(\.gz)?$", re.IGNORECASE)
_CT_FILE = re.compile(r"^(.*_)?ct\.nii(\.gz)?$", re.IGNORECASE)
_BODY_FILE = re.compile(r"^(.*_)?vertebrae_body\.nii(\.gz)?$", re.IGNORECASE)
# TotalSegmentator's usual output folder: a per-structure folder of this name belongs to its
# parent folder's subject even without a CT beside it.
_TS_OUTPUT_FOLDER = "segmentations"
_SUBJECT_OK = re.compile(r"^[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,199}$")

# Columns of the per-study vertebrae.csv by type (every other column is numeric).
_TEXT_COLUMNS = frozenset(
    ["level", "status", "type", "heights_source", "flags", "reason", "reference_sources"]
)
# Text columns that ``SpineResult.to_records`` fills with "" rather than None.
_EMPTY_TEXT_COLUMNS = frozenset(["flags", "reference_sources"])

StudyStatus = Literal["graded", "skipped", "failed"]


class MissingExtraError(VertgradeError, ImportError):
    """An optional dependency of a feature is not installed; the message says what to install."""


# --- values --------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class StudyFailure:
    """A study that could not be graded: its subject, inputs and a one-line error."""

    subject: str
    ct: Path | None
    labels: Path
    bodies: Path | None
    error: str

    def to_row(self) -> dict[str, str]:
        """The study's row of ``failures.csv`` (see :data:`FAILURE_COLUMNS`)."""
        return {
            "subject": self.subject,
            "ct": "" if self.ct is None else str(self.ct),
            "labels": str(self.labels),
            "bodies": "" if self.bodies is None else str(self.bodies),
            "error": self.error,
        }


@dataclass(frozen=True)
class CohortProgress:
    """One study finished: its ``subject``, ``status``, and ``done`` of ``total`` studies.

    ``status`` is ``"graded"`` (graded in this run), ``"skipped"`` (already graded with the same
    inputs and parameters) or ``"failed"`` (recorded in ``failures.csv``); ``seconds`` is the
    time the study took on its worker (0 where the quick check found it done).
    """

    subject: str
    status: StudyStatus
    done: int
    total: int
    seconds: float = 0.0


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort run did.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    graded, skipped : tuple of str
        Subjects graded in this run, and those already graded with the same inputs and
        parameters (in the order of the specs).
    failures : tuple of StudyFailure
        Studies that could not be graded (also in ``failures.csv``).
    n_vertebrae : int
        Rows of the cohort table (``vertebrae.csv`` / ``vertebrae.parquet``).
    seconds : float
        Wall-clock time of the run, cluster start and table included.
    """

    out_dir: Path
    graded: tuple[str, ...]
    skipped: tuple[str, ...]
    failures: tuple[StudyFailure, ...]
    n_vertebrae: int
    seconds: float = field(compare=False)

    @property
    def total(self) -> int:
        """Number of studies in the run."""
        return len(self.graded) + len(self.skipped) + len(self.failures)

    @property
    def table_csv(self) -> Path:
        return self.out_dir / "vertebrae.csv"

    @property
    def table_parquet(self) -> Path:
        return self.out_dir / "vertebrae.parquet"

    @property
    def failures_csv(self) -> Path:
        return self.out_dir / "failures.csv"


@dataclass(frozen=True)
class _Outcome:
    """What a worker sends back for one study (small: no arrays)."""

    subject: str
    status: StudyStatus
    error: str | None = None
    seconds: float = 0.0


# --- discovery -----------------------------------------------------------------------------


def discover_studies(input: str | os.PathLike[str]) -> list[StudySpec]:
    """The studies of a cohort input: a folder to search, or a CSV that lists them.

    Parameters
    ----------
    input : path-like
        A folder, searched recursively (hidden files and folders are left out, linked folders
        are followed) for

        - VerSe subjects: ``sub-*_seg-vert_msk.nii.gz`` masks anywhere below (``derivatives/``)
          with their ``sub-*_ct.nii.gz`` CT if found anywhere below (``rawdata/``); the subject
          is the file name's part before the suffix (``sub-verse012``);
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
        _check_subject(subject, path, where)
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


def _check_subject(subject: str, path: Path | None, where: str) -> None:
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
    for paths in files.values():
        for p in paths:
            if m := _VERSE_MASK.match(p.name):
                masks.setdefault(m.group(1), []).append(p)
            elif m := _VERSE_CT.match(p.name):
                cts.setdefault(m.group(1), []).append(p)
    used: set[Path] = set()
    for key in sorted(masks):
        for role, table in (("vertebra masks", masks), ("CTs", cts)):
            if len(table.get(key, [])) > 1:
                listing = ", ".join(str(p.relative_to(root)) for p in table[key])
                raise InputError(root, f"VerSe subject {key!r} has several {role}: {listing}")
        ct = cts.get(key, [None])[0]
        _check_subject(key, root, f"VerSe mask {masks[key][0].relative_to(root)}")
        add(StudySpec(key, ct, masks[key][0]), str(masks[key][0].relative_to(root)))
        used.update([masks[key][0], *([ct] if ct is not None else [])])

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
        _check_subject(subject, root, f"folder {where}")
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


def _shown(p: Path, base: Path) -> str:
    """``p`` relative to ``base`` for messages, folders ending with ``/``."""
    if p == base:
        return "./"
    return str(p.relative_to(base)) + ("/" if p.is_dir() else "")


# --- parameters, manifests -----------------------------------------------------------------


def parameters_sha256(config: GradingConfig | None = None) -> str:
    """SHA-256 of everything besides the inputs that decides a study's result.

    That is the whole grading configuration, the label format the studies are read with and
    the vertgrade version (a new version may grade differently), as canonical JSON.

    >>> parameters_sha256() == parameters_sha256(GradingConfig())
    True
    >>> parameters_sha256() == parameters_sha256(GradingConfig(hu_core_erosion_mm=4.0))
    False
    """
    from vertgrade import __version__

    document = {
        "manifest_version": _MANIFEST_VERSION,
        "config": (config or GradingConfig()).to_dict(),
        "label_format": _LABEL_FORMAT,
        "vertgrade": __version__,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _study_key(checksums: dict[str, str], parameters: str) -> str:
    text = json.dumps({"inputs": checksums, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished study folder; ``None`` if missing, unreadable or incomplete."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not all((folder / f).is_file() for f in _STUDY_FILES):
        return None
    return manifest


def _stat(path: Path) -> str:
    """Size and modification time (ns) of an input; of each per-structure file of a folder."""
    if path.is_dir():
        lines = [
            f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(path.iterdir())
            if TOTALSEG_STRUCTURE_FILE.match(p.name)
        ]
        return "folder:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _manifest(
    spec: StudySpec, checksums: dict[str, str], stats: dict[str, str], parameters: str
) -> dict[str, Any]:
    from vertgrade import __version__

    return {
        "manifest_version": _MANIFEST_VERSION,
        "subject": spec.subject,
        "inputs": {
            role: {"path": str(p), "sha256": checksums[role], "stat": stats[role]}
            for role, p in sorted(spec.inputs().items())
        },
        "parameters_sha256": parameters,
        "vertgrade_version": __version__,
        "key": _study_key(checksums, parameters),
    }


def _unchanged_by_stat(spec: StudySpec, studies_dir: Path, parameters: str) -> bool:
    """Whether the study's folder was graded from the same paths, of the same size and mtime.

    The quick check (rsync's, make's): a file whose path, size and modification time (ns) are
    those recorded is taken as unchanged without reading it. Anything else goes to
    :func:`_process_study`, which compares checksums.
    """
    manifest = _read_manifest(studies_dir / spec.subject)
    if manifest is None or manifest.get("parameters_sha256") != parameters:
        return False
    recorded = manifest.get("inputs")
    inputs = spec.inputs()
    if not isinstance(recorded, dict) or set(recorded) != set(inputs):
        return False
    try:
        return all(
            recorded[role].get("path") == str(p) and recorded[role].get("stat") == _stat(p)
            for role, p in inputs.items()
        )
    except (OSError, AttributeError):
        return False


# --- one study (runs on a worker) ----------------------------------------------------------


def _one_line(err: BaseException) -> str:
    text = str(err) if isinstance(err, VertgradeError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


def _process_study(
    spec: StudySpec,
    studies_dir: Path,
    config: GradingConfig,
    parameters: str,
    force: bool,
) -> _Outcome:
    """Grade one study into ``studies_dir/<subject>/`` unless it is already done; never raises.

    A study is done when its folder's manifest has the same key (input checksums and
    parameters); the checksums are computed for that only where a manifest with the same
    parameters exists (inputs moved, or touched), otherwise they come from loading. A study
    found done gets its manifest's paths and file times brought up to date (its results are
    left alone), so that the next run's quick check passes.
    """
    from vertgrade import grade_study, load_study

    t0 = time.perf_counter()
    target = studies_dir / spec.subject
    try:
        inputs = spec.inputs()
        stats = {role: _stat(p) for role, p in inputs.items()}  # before reading: a file
        manifest = None if force else _read_manifest(target)  # changed meanwhile is redone
        if manifest is not None and manifest.get("parameters_sha256") == parameters:
            checksums = {role: input_checksum(p) for role, p in inputs.items()}
            if manifest.get("key") == _study_key(checksums, parameters):
                fresh = _manifest(spec, checksums, stats, parameters)
                if fresh != manifest:
                    write_text_atomic(target / MANIFEST_NAME, json.dumps(fresh, indent=2) + "\n")
                return _Outcome(spec.subject, "skipped", seconds=time.perf_counter() - t0)
        study = load_study(spec.ct, spec.labels, bodies=spec.bodies, subject=spec.subject)
        checksums = {role: study.checksums[role] for role in inputs}
        result = grade_study(study, config)
        _write_study_folder(result, _manifest(spec, checksums, stats, parameters), target)
        return _Outcome(spec.subject, "graded", seconds=time.perf_counter() - t0)
    except Exception as err:
        logger.debug("study %s failed", spec.subject, exc_info=True)
        return _Outcome(spec.subject, "failed", _one_line(err), time.perf_counter() - t0)


def _write_study_folder(result: SpineResult, manifest: dict[str, Any], target: Path) -> None:
    """Write the result and its manifest into a temporary sibling folder, then swap it in.

    The manifest is written last, so a folder with a manifest is always complete. An existing
    folder is first renamed aside and deleted after the new one is in place.
    """
    from vertgrade.report.writers import write_result

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}", dir=target.parent))
    try:
        write_result(result, tmp, force=True)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        old: Path | None = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}{_OLD_MARK}{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# --- the run -------------------------------------------------------------------------------


def _require(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs the Python package {module!r}, which is not installed; "
            "install the cohort extra: pip install 'vertgrade[cohort]'"
        ) from err


def _prepare_output(out: Path, force: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    if (
        out.is_dir()
        and not (out / "studies").is_dir()
        and any(p.name != _LOCK_NAME for p in out.iterdir())
        and not force
    ):
        raise OutputError(
            out,
            "output folder exists, is not empty and holds no earlier cohort run (no studies/); "
            "choose another folder or use --force",
        )
    (out / "studies").mkdir(parents=True, exist_ok=True)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _output_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.vertgrade-cohort.lock`` for the run; take over one left by a dead process."""
    lock = out / _LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text(encoding="utf-8"))
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                # being written right now, or garbage; stale only if old
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > 60:
                        lock.unlink()
                        continue
                time.sleep(0.2)
                continue
            if host == me["host"] and not _pid_alive(pid):
                logger.info("taking over the lock of a dead cohort run (pid %d)", pid)
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise OutputError(
                out,
                f"another cohort run (pid {pid} on {host}) is writing into this folder; wait "
                f"for it, or delete {lock} if no run is going on",
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        break
    else:
        raise OutputError(out, f"cannot take the lock {lock}; delete it if no run is going on")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _clean_stale(studies_dir: Path) -> None:
    """Remove temporary folders left by a killed run (only hidden names cohort runs make)."""
    for p in studies_dir.iterdir():
        if p.name.startswith(".") and (_TMP_MARK in p.name or _OLD_MARK in p.name):
            logger.info("removing %s, left by an interrupted run", p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


def _absolute(spec: StudySpec) -> StudySpec:
    def a(p: Path | None) -> Path | None:
        return None if p is None else Path(p).absolute()

    labels = Path(spec.labels).absolute()
    return StudySpec(spec.subject, a(spec.ct), labels, a(spec.bodies))


def _check_specs(specs: Sequence[StudySpec]) -> None:
    if not specs:
        raise InputError(None, "no studies to grade")
    seen: set[str] = set()
    for s in specs:
        _check_subject(s.subject, None, "StudySpec")
        if s.subject in seen:
            raise InputError(None, f"subject {s.subject!r} is given twice")
        seen.add(s.subject)


@contextlib.contextmanager
def _dask_client(scheduler: str | None, workers: int | None, n_tasks: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(
                None, f"cannot reach the Dask scheduler at {scheduler!r} ({_one_line(err)})"
            ) from err
        with client:
            yield client
        return
    n = min(workers if workers is not None else _default_workers(), n_tasks)
    with (
        _local_cluster_config(),
        LocalCluster(**_local_cluster_options(n)) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def _local_cluster_config() -> Iterator[None]:
    """Dask settings for grading workers, and this process's environment left as it was.

    Dask's nannies start worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes
    glibc's mmap threshold at 128 KiB: every large array is then mapped and unmapped afresh,
    and grading a study costs about 35 % more CPU time in page faults (measured on phantoms).
    Workers here keep glibc's adaptive default, as a plain ``vertgrade grade`` process does;
    ``OMP_NUM_THREADS=1`` and its kin stay (one thread per worker). The workers' statistical
    profiler (a thread sampling every 10 ms, for the dashboard) is off, and the event-loop tick
    (20 -> 200 ms) and the nannies' memory checks (100 -> 500 ms) are slower: an idle cluster of
    two workers then takes about 2.5 % of a core instead of 8 % (measured), which matters on a
    machine with few cores. The nannies also copy these variables into this process's
    ``os.environ``; they are removed again afterwards.
    """
    import dask

    saved = dict(os.environ)
    try:
        with dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.profile.enabled": False,
                "distributed.admin.tick.interval": "200ms",
                "distributed.worker.memory.monitor-interval": "500ms",
            }
        ):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _local_cluster_options(n_workers: int) -> dict[str, Any]:
    """``LocalCluster`` keywords: processes of one thread, no dashboard, loopback only.

    Without a dashboard the scheduler still serves HTTP (health, metrics), by default on port
    8787, and warns when another cluster holds that port; a free loopback port avoids both.
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        # workers log only what is critical: their connection errors while the cluster shuts
        # down are noise, and a study's own errors come back in its outcome
        "silence_logs": logging.CRITICAL,
    }


def _default_workers() -> int:
    """One worker per core, as many as memory allows at 4 GiB each (a whole-spine CT)."""
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    return max(1, min(int(CPU_COUNT), int(MEMORY_LIMIT // (4 * 2**30))))


def run_cohort(
    specs: Sequence[StudySpec],
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    config: GradingConfig | None = None,
    force: bool = False,
    progress: Callable[[CohortProgress], None] | None = None,
) -> CohortSummary:
    """Grade every study, in parallel, resumably, and gather all vertebrae into one table.

    Each study is graded as ``vertgrade grade`` grades it (:func:`vertgrade.load_study`,
    :func:`vertgrade.grade_study`, :func:`vertgrade.report.writers.write_result`) into
    ``out_dir/studies/<subject>/``, with a manifest of its input checksums and parameters; see
    the module's description for the output folder.

    Parameters
    ----------
    specs : sequence of StudySpec
        The studies, e.g. from :func:`discover_studies`; subjects must be unique.
    out_dir : path-like
        Output folder: missing, empty, or the folder of an earlier cohort run (resumed).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); ``"synchronous"`` grades in
        this process, one study after the other (no Dask needed; for debugging). Default: a
        Dask ``LocalCluster`` of ``workers`` processes with one thread each, for this run.
    workers : int, optional
        Number of worker processes of the local cluster; default one per core, at most one per
        4 GiB of memory. Only with the local cluster.
    config : GradingConfig, optional
        Grading parameters (default ``GradingConfig()``); part of every study's manifest.
    force : bool
        Grade every study again, even those already graded with the same inputs and parameters,
        and write into a non-empty folder that holds no earlier cohort run.
    progress : callable, optional
        Called in this process with a :class:`CohortProgress` as each study finishes.

    Returns
    -------
    CohortSummary

    Raises
    ------
    InputError
        No studies, duplicate or unusable subjects, ``workers`` with ``scheduler``.
    OutputError
        ``out_dir`` is a file, a non-empty folder of something else (without ``force``), or
        another run is writing into it.
    MissingExtraError
        Dask, pandas or pyarrow is not installed.

    Notes
    -----
    A study that fails (any exception: unreadable file, unusable labels, a worker that died) is
    recorded in ``failures.csv`` and does not stop the others. Results are the same numbers as
    grading each study alone; the cohort adds no parameter of its own.
    """
    t0 = time.perf_counter()
    _check_specs(specs)
    # absolute paths: worker processes, maybe on other machines, read and write them
    specs = [_absolute(s) for s in specs]
    local = scheduler == "synchronous"
    if scheduler is not None and workers is not None:
        raise InputError(None, "workers applies to the local cluster only, not with scheduler")
    if workers is not None and workers < 1:
        raise InputError(None, f"workers must be at least 1, not {workers}")
    _require("pandas", "The cohort table")
    _require("pyarrow", "The cohort table (vertebrae.parquet)")
    if not local:
        _require("distributed", "Grading a cohort in parallel")
    cfg = config or GradingConfig()
    parameters = parameters_sha256(cfg)
    out = _prepare_output(Path(out_dir).absolute(), force)
    studies_dir = out / "studies"
    with _output_lock(out):
        _clean_stale(studies_dir)
        outcomes: dict[str, _Outcome] = {}

        def record(outcome: _Outcome) -> None:
            outcomes[outcome.subject] = outcome
            if progress is not None:
                n = len(outcomes)
                progress(
                    CohortProgress(outcome.subject, outcome.status, n, len(specs), outcome.seconds)
                )

        todo = []
        for spec in specs:
            if not force and _unchanged_by_stat(spec, studies_dir, parameters):
                record(_Outcome(spec.subject, "skipped"))
            else:
                todo.append(spec)
        if local:
            for spec in todo:
                record(_process_study(spec, studies_dir, cfg, parameters, force))
        elif todo:  # no cluster when every study is done
            _run_on_dask(todo, studies_dir, cfg, parameters, force, scheduler, workers, record)

        by_subject = {s.subject: s for s in specs}
        failures = tuple(
            _failure(by_subject[s.subject], outcomes[s.subject].error or "failed")
            for s in specs
            if outcomes[s.subject].status == "failed"
        )
        finished = [s.subject for s in specs if outcomes[s.subject].status != "failed"]
        table = _build_table(studies_dir, finished)
        _write_table(table, out)
        _write_failures(failures, out / "failures.csv")
    return CohortSummary(
        out_dir=out,
        graded=tuple(s.subject for s in specs if outcomes[s.subject].status == "graded"),
        skipped=tuple(s.subject for s in specs if outcomes[s.subject].status == "skipped"),
        failures=failures,
        n_vertebrae=len(table),
        seconds=time.perf_counter() - t0,
    )


def _run_on_dask(
    specs: Sequence[StudySpec],
    studies_dir: Path,
    cfg: GradingConfig,
    parameters: str,
    force: bool,
    scheduler: str | None,
    workers: int | None,
    record: Callable[[_Outcome], None],
) -> None:
    from distributed import as_completed

    with _dask_client(scheduler, workers, len(specs)) as client:
        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for spec in specs:
            fut = client.submit(
                _process_study,
                spec,
                studies_dir,
                cfg,
                parameters,
                force,
                key=f"vertgrade-study-{spec.subject}-{run_id}",
                pure=False,
            )
            futures[fut.key] = (fut, spec.subject)
        try:
            for fut in as_completed([f for f, _ in futures.values()]):
                subject = futures[fut.key][1]
                try:
                    outcome = fut.result()
                except Exception as err:  # the worker died (KilledWorker), cancelled, ...
                    outcome = _Outcome(subject, "failed", _one_line(err))
                record(outcome)
                fut.release()
        except BaseException:
            client.cancel([f for f, _ in futures.values()])
            raise


def _failure(spec: StudySpec, error: str) -> StudyFailure:
    return StudyFailure(spec.subject, spec.ct, spec.labels, spec.bodies, error)


def _write_failures(failures: Sequence[StudyFailure], target: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FAILURE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for f in failures:
        writer.writerow(f.to_row())
    write_text_atomic(target, buf.getvalue())


# --- the cohort table ----------------------------------------------------------------------


def _build_table(studies_dir: Path, subjects: Sequence[str]) -> pd.DataFrame:
    """All vertebrae of the given finished studies, read from their ``vertebrae.csv``.

    Column types: ``subject`` and the text columns as strings (missing: NA), ``label`` int64,
    ``grade`` nullable Int64 (NA when not gradable), every other column float64 (missing: NaN).
    """
    import pandas as pd

    columns: dict[str, list[Any]] = {"subject": []}
    for c in CSV_COLUMNS:
        columns[c] = []
    for subject in subjects:
        path = studies_dir / subject / "vertebrae.csv"
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                columns["subject"].append(subject)
                for c in CSV_COLUMNS:
                    value = row.get(c)
                    columns[c].append(None if value in (None, "") else value)
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "subject" or name in _TEXT_COLUMNS:
            if name in _EMPTY_TEXT_COLUMNS:
                values = ["" if v is None else v for v in values]
            data[name] = pd.array(values, dtype="string")
        elif name == "label":
            data[name] = pd.array([int(v) for v in values], dtype="int64")
        elif name == "grade":
            data[name] = pd.array([None if v is None else int(v) for v in values], dtype="Int64")
        else:
            try:
                data[name] = pd.array(
                    [math.nan if v is None else float(v) for v in values], dtype="float64"
                )
            except ValueError:  # a column this module does not know yet that holds text
                data[name] = pd.array(values, dtype="string")
    return pd.DataFrame(data)


def _write_table(table: pd.DataFrame, out: Path) -> None:
    with atomic_path(out / "vertebrae.parquet") as tmp:
        table.to_parquet(tmp, index=False, engine="pyarrow")
    with atomic_path(out / "vertebrae.csv") as tmp:
        table.to_csv(tmp, index=False, na_rep="", lineterminator="\n")


def read_cohort_table(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The cohort table of an output folder, from ``vertebrae.parquet`` (types kept).

    Raises
    ------
    InputError
        The folder holds no ``vertebrae.parquet`` or it cannot be read.
    """
    _require("pandas", "Reading the cohort table")
    import pandas as pd

    path = Path(out_dir) / "vertebrae.parquet"
    if not path.is_file():
        raise InputError(path, "no such file (not the output folder of a cohort run?)")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as err:
        raise InputError(path, f"cannot be read as Parquet ({err})") from err
