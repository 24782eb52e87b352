"""Two studies of one patient, from their files to a comparison folder: what ``vertgrade
compare`` does.

:func:`compare_studies` takes each of the prior and the current study as

- a result folder of ``vertgrade grade`` (holding ``result.json``), read as it is; or
- a study to grade (a CT, a DICOM series, a VerSe folder; or a
  :class:`vertgrade.workflow.StudyInputs` with labels, bodies, a labels-only study), graded with
  :func:`vertgrade.workflow.grade_to_folder` into ``OUT/prior/`` or ``OUT/current/``;

then compares them (:func:`vertgrade.compare.compare_scans`), refuses a pair that does not look
like one patient unless ``force_mismatch``, and writes ``comparison.json``, ``comparison.csv``
and ``comparison.html`` (:func:`vertgrade.compare.write_comparison`).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vertgrade.compare.comparison import Comparison, compare_scans, forced
from vertgrade.compare.config import CompareConfig
from vertgrade.compare.files import write_comparison
from vertgrade.compare.scan import Scan, read_scan, scan_from_document
from vertgrade.errors import InputError
from vertgrade.io.files import check_output_dir
from vertgrade.pipeline import ProgressEvent
from vertgrade.workflow import (
    GradeOptions,
    LoadedModels,
    StudyInputs,
    grade_to_folder,
    load_models,
)

__all__ = ["CompareOutcome", "compare_studies", "is_result_folder"]

logger = logging.getLogger(__name__)

#: What a study of a pair may be given as.
StudyArgument = str | os.PathLike[str] | StudyInputs


@dataclass(frozen=True)
class CompareOutcome:
    """What :func:`compare_studies` made: the comparison and the files it wrote (the result
    folders of the studies it graded first)."""

    comparison: Comparison
    files: list[Path]


def is_result_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a result folder (holds ``result.json``) or a ``result.json``."""
    p = Path(path)
    return (p.is_dir() and (p / "result.json").is_file()) or (
        p.is_file() and p.name == "result.json"
    )


def _scan(
    arg: StudyArgument,
    role: str,
    out: Path,
    opts: GradeOptions,
    models: Callable[[], LoadedModels],
    *,
    study_date: datetime.date | None,
    force: bool,
    progress: Callable[[ProgressEvent], None] | None,
    files: list[Path],
) -> Scan:
    if not isinstance(arg, StudyInputs) and is_result_folder(arg):
        logger.info("%s: reading the result folder %s", role, arg)
        return read_scan(Path(arg), study_date=study_date)
    inputs = arg if isinstance(arg, StudyInputs) else StudyInputs(ct=Path(arg))
    path = inputs.ct if inputs.ct is not None else inputs.labels
    if path is not None and not Path(path).exists():
        raise InputError(path, "no such file or folder (expected a result folder or a study)")
    logger.info("%s: grading %s into %s", role, path, out / role)
    outcome = grade_to_folder(
        inputs, out / role, opts, force=force, models=models(), progress=progress
    )
    files.extend(outcome.files)
    return scan_from_document(
        outcome.result.to_dict(),
        source=None if path is None else Path(path),
        result_dir=out / role,
        graded_here=True,
        series=outcome.series,
        study_date=study_date,
    )


def compare_studies(
    prior: StudyArgument,
    current: StudyArgument,
    out_dir: str | os.PathLike[str],
    *,
    options: GradeOptions | None = None,
    config: CompareConfig | None = None,
    prior_date: datetime.date | None = None,
    current_date: datetime.date | None = None,
    force: bool = False,
    force_mismatch: bool = False,
    html: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> CompareOutcome:
    """Compare two studies of one patient and write the comparison folder.

    Parameters
    ----------
    prior, current : path or StudyInputs
        A result folder, a study to grade (a path: a CT, a DICOM series, a VerSe folder), or
        the inputs of a study to grade (labels, bodies; a labels-only study).
    out_dir : path
        The comparison folder; the studies graded here go to its ``prior/`` and ``current/``.
    options : GradeOptions, optional
        How the studies given as studies are graded (default: the defaults).
    config : CompareConfig, optional
        The comparison's thresholds.
    prior_date, current_date : datetime.date, optional
        Study dates, where the results do not record them (or to replace what they record).
    force : bool
        Write into a folder that holds something (earlier comparison files and graded studies
        are replaced).
    force_mismatch : bool
        Compare two scans that do not look like one patient (the identity check's findings are
        kept in ``comparison.json``).
    html : bool
        Also write ``comparison.html``.
    progress : callable, optional
        Passed to the grading of each study.

    Returns
    -------
    CompareOutcome

    Raises
    ------
    InputError
        A study or result folder that cannot be used; the current study dated before the
        prior; the two do not look like one patient (without ``force_mismatch``); the output
        folder in the way (:class:`vertgrade.errors.OutputError`).
    ValueError
        Grading options that do not go together.
    """
    opts = options or GradeOptions()
    opts.check()
    out = check_output_dir(out_dir, force=force)
    cfg = config or CompareConfig()
    loaded: list[LoadedModels] = []

    def models() -> LoadedModels:  # loaded once, only if a study is graded
        if not loaded:
            loaded.append(load_models(opts))
        return loaded[0]

    files: list[Path] = []
    scans = [
        _scan(
            arg,
            role,
            out,
            opts,
            models,
            study_date=date,
            force=force,
            progress=progress,
            files=files,
        )
        for arg, role, date in ((prior, "prior", prior_date), (current, "current", current_date))
    ]
    prior_scan, current_scan = scans
    try:
        comparison = compare_scans(prior_scan, current_scan, cfg)
    except ValueError as err:
        raise InputError(current_scan.result_dir or current_scan.source, str(err)) from None
    ident = comparison.identity
    if ident.status == "mismatch":
        graded = [str(s.result_dir) for s in scans if s.graded_here]
        kept = f"; the graded results are kept in {' and '.join(graded)}" if graded else ""
        ids = ""
        if ident.patient_id == "mismatch":
            ids = f" (Patient ID {prior_scan.patient_id!r} vs {current_scan.patient_id!r})"
        if not force_mismatch:
            raise InputError(
                current_scan.result_dir or current_scan.source,
                "the two scans do not look like one patient: "
                + "; ".join(ident.reasons)
                + ids
                + kept
                + ". Check the inputs, or give --force-mismatch to compare them anyway",
            )
        logger.warning(
            "comparing two scans that may not be of one patient (--force-mismatch): %s",
            "; ".join(ident.reasons),
        )
        comparison = forced(comparison)
    files += write_comparison(comparison, out, html=html, force=True)
    return CompareOutcome(comparison, files)
