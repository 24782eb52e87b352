"""Evaluation of graded results against reference Genant grades, with patient bootstrap intervals.

The evaluation reads a grades file (one true Genant grade per subject and vertebra), collects the
``result.json`` files written by ``vertgrade grade``, matches predictions to the truth by
``(subject, label)`` and computes, on the matched vertebrae that vertgrade could grade:

* the 4-class confusion matrix (grades 0-3), accuracy, per-grade recall and macro precision,
  recall and F1 over the grades present in the truth (scikit-learn's definitions);
* detection of grade >= 1 and of grade >= 2 as binary tasks: sensitivity, specificity, area under
  the ROC curve and average precision, ranked by a continuous score (the vertebra's largest
  regional RHLV);

each with a percentile bootstrap interval that resamples *patients* with replacement (vertebrae of
one patient are not independent), overall and per spinal region. Matching is exhaustive: every
vertebra that is not gradable, every true grade without a prediction and every prediction without a
true grade is counted and listed, never silently dropped. ``docs/evaluation.md`` describes the
formats and every metric.

Examples
--------
>>> truth = [GradeRow("p1", 20, 3), GradeRow("p1", 21, 0), GradeRow("p2", 20, 0)]
>>> preds = [
...     Prediction("p1", 20, "graded", 3, 0.45),
...     Prediction("p1", 21, "graded", 0, 0.02),
...     Prediction("p2", 20, "graded", 1, 0.21),
... ]
>>> ev = evaluate(preds, truth, n_boot=200)
>>> ev.n_patients, ev.n_vertebrae
(2, 3)
>>> ev.metric("accuracy").value
0.6666666666666666
>>> ev.metric("auroc_ge1").value
1.0
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._atomic import staged_files
from vertgrade.levels import VERSE_LABELS, label_id, level_name, order_key

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "BINARY_THRESHOLDS",
    "EVALUATION_FILES",
    "GRADES",
    "REGIONS",
    "Evaluation",
    "GradeRow",
    "Match",
    "Metric",
    "Prediction",
    "ScopeResult",
    "collect_predictions",
    "confusion_table",
    "evaluate",
    "evaluation_table",
    "metric_names",
    "read_grades",
    "write_evaluation",
]

logger = logging.getLogger(__name__)

# --- constants -------------------------------------------------------------------------------

#: The Genant semi-quantitative grades (Genant et al., J Bone Miner Res 1993): 0 normal,
#: 1 mild (20-25 % height loss), 2 moderate (25-40 %), 3 severe (> 40 %).
GRADES: tuple[int, ...] = (0, 1, 2, 3)

#: Binary detection tasks: "fracture" (grade >= 1) and "moderate or severe fracture" (grade >= 2),
#: the two cut-offs reported in the VerSe fracture-grading literature (Löffler et al., Radiology:
#: Artificial Intelligence 2020).
BINARY_THRESHOLDS: tuple[int, ...] = (1, 2)

#: Spinal regions of the breakdown, as inclusive level ranges. The thoracolumbar junction
#: (T11-L2) is where most osteoporotic fractures occur; T13 falls in it and L6 in the lumbar
#: region by their position along the spine (``vertgrade.levels.order_key``).
REGIONS: dict[str, tuple[str, str]] = {
    "thoracic": ("T1", "T10"),
    "thoracolumbar": ("T11", "L2"),
    "lumbar": ("L3", "L6"),
}

#: The files :func:`write_evaluation` writes.
EVALUATION_FILES: tuple[str, ...] = (
    "metrics.json",
    "metrics.csv",
    "confusion.csv",
    "matches.csv",
    "confusion.png",
)

#: Columns accepted for the true grade, in the grades file (lower case).
_GRADE_COLUMNS = ("grade", "genant_grade")
#: Resamples per block in the bootstrap: bounds memory at about 8 x block x vertebrae bytes.
_BLOCK_ELEMENTS = 2_000_000

MatchStatus = Literal["evaluated", "not_gradable", "no_prediction", "no_truth"]
ScoreSource = Literal["rhlv_max", "grade"]


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeRow:
    """One true Genant grade: a row of the grades file.

    Parameters
    ----------
    subject : str
        Subject id, as in ``result.json`` ``"subject"`` (e.g. ``"sub-verse012"``).
    label : int
        VerSe label id of the vertebra (20 = L1).
    grade : int
        True Genant grade, 0-3.
    source : Path or None
        The grades file the row came from.
    line : int or None
        Its line number in that file (the header is line 1).
    """

    subject: str
    label: int
    grade: int
    source: Path | None = None
    line: int | None = None

    @property
    def level(self) -> str:
        """Level name of :attr:`label` (``"L1"``)."""
        return level_name(self.label)


@dataclass(frozen=True)
class Prediction:
    """vertgrade's grade of one vertebra, read from a ``result.json``.

    Parameters
    ----------
    subject : str
        Subject id of the result.
    label : int
        VerSe label id.
    status : {"graded", "not_gradable"}
        Whether vertgrade graded the vertebra.
    grade : int or None
        Predicted Genant grade 0-3; ``None`` when not gradable.
    score : float or None
        Continuous fracture score: the largest of the anterior, middle and posterior RHLV
        (fraction, 0.25 = 25 % height loss); ``None`` where ``result.json`` has none.
    reason : str or None
        Why the vertebra is not gradable.
    source : Path or None
        The ``result.json`` it was read from.
    """

    subject: str
    label: int
    status: Literal["graded", "not_gradable"]
    grade: int | None
    score: float | None = None
    reason: str | None = None
    source: Path | None = None

    @property
    def level(self) -> str:
        """Level name of :attr:`label` (``"L1"``)."""
        return level_name(self.label)


def _parse_int(text: str) -> int | None:
    """An integer written as ``"2"`` or ``"2.0"``; ``None`` for anything else."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def read_grades(path: str | Path) -> list[GradeRow]:
    """Read a grades file: CSV with columns ``subject``, ``label`` and ``grade``.

    The grade column may be called ``genant_grade`` instead of ``grade``. Column names are
    case-insensitive and surrounding spaces are ignored; other columns are ignored. ``label`` is
    the VerSe label id (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13). A ``level``
    column (``"L1"``) may stand in for ``label``, as a whole column or in a row whose label is
    empty; where a row has both, they must name the same vertebra.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8, a byte-order mark is accepted).

    Returns
    -------
    list of GradeRow
        In file order.

    Raises
    ------
    InputError
        The file is missing or empty, lacks a column, a value is not valid (a grade outside 0-3,
        an unknown label, an empty subject), or a vertebra is graded twice. The message names the
        file, the line and the value.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "g.csv").write_text("subject,label,level,genant_grade\\np1,20,L1,3\\n")
    >>> read_grades(d / "g.csv")[0].grade
    3
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "grades file not found" if not path.exists() else "not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read as UTF-8 text: {err}") from err
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(path, "is empty; expected a header subject,label,grade") from None
    except csv.Error as err:
        raise InputError(path, f"is not valid CSV: {err}") from err
    names = [h.strip().lower() for h in header]
    dup = sorted({n for n in names if n and names.count(n) > 1})
    if dup:
        raise InputError(path, f"column {dup[0]!r} appears more than once in the header")
    col = {n: i for i, n in enumerate(names)}
    grade_cols = [c for c in _GRADE_COLUMNS if c in col]
    if len(grade_cols) > 1:
        raise InputError(path, "has both a 'grade' and a 'genant_grade' column; keep one of them")
    missing = [
        need
        for need, ok in (
            ("subject", "subject" in col),
            ("label (or level)", "label" in col or "level" in col),
            ("grade (or genant_grade)", bool(grade_cols)),
        )
        if not ok
    ]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'} "
            "(expected a header such as subject,label,grade)",
        )
    grade_col = grade_cols[0]
    rows: list[GradeRow] = []
    seen: dict[tuple[str, int], int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if len(record) != len(names):
                raise InputError(
                    path, f"line {line}: {len(record)} fields, the header has {len(names)}"
                )

            def cell(name: str, rec: list[str] = record) -> str:
                return rec[col[name]].strip() if name in col else ""

            subject = cell("subject")
            if not subject:
                raise InputError(path, f"line {line}: empty subject")
            label = _row_label(path, line, cell("label"), cell("level"))
            grade_text = cell(grade_col)
            grade = _parse_int(grade_text)
            if grade not in GRADES:
                raise InputError(
                    path,
                    f"line {line}: {grade_col} {grade_text!r} is not a Genant grade 0, 1, 2 or 3"
                    + ("" if grade_text else " (remove the rows of vertebrae not graded)"),
                )
            key = (subject, label)
            if key in seen:
                raise InputError(
                    path,
                    f"line {line}: {subject} {level_name(label)} (label {label}) is graded "
                    f"again; first on line {seen[key]}",
                )
            seen[key] = line
            rows.append(GradeRow(subject, label, int(grade), path, line))
    except csv.Error as err:
        raise InputError(path, f"is not valid CSV near line {reader.line_num}: {err}") from err
    if not rows:
        raise InputError(path, "has a header but no grades")
    logger.debug("read %d grades from %s", len(rows), path)
    return rows


def _row_label(path: Path, line: int, label_text: str, level_text: str) -> int:
    """The VerSe label of a grades row, from its label and/or level cells."""
    label: int | None = None
    if label_text:
        label = _parse_int(label_text)
        if label is None or label not in VERSE_LABELS:
            raise InputError(
                path,
                f"line {line}: label {label_text!r} is not a VerSe label id (1-7 C1-C7, 8-19 "
                "T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13)",
            )
    if level_text:
        try:
            from_level = label_id(level_text)
        except ValueError:
            raise InputError(
                path, f"line {line}: level {level_text!r} is not a vertebra level such as L1"
            ) from None
        if label is None:
            return from_level
        if from_level != label:
            raise InputError(
                path,
                f"line {line}: label {label} is {level_name(label)} but level says "
                f"{level_text!r}; correct one of them",
            )
    if label is None:
        raise InputError(path, f"line {line}: no label (and no level)")
    return label


def _result_files(path: Path) -> list[Path]:
    """The ``result.json`` files named by one argument: the file, or those in a folder tree."""
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InputError(path, "expected a result folder or a result.json file")
        return [path]
    found = sorted(
        p
        for p in path.rglob("result.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise InputError(
            path, "no result.json in this folder or below (is it a `vertgrade grade` output?)"
        )
    return found


def _score(rhlv: Any) -> float | None:
    """Largest of the anterior, middle and posterior RHLV of a ``result.json`` vertebra."""
    if not isinstance(rhlv, dict):
        return None
    values = [rhlv.get(r) for r in ("anterior", "middle", "posterior")]
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return max(finite) if finite else None


def _read_result(path: Path) -> tuple[str, list[Prediction]]:
    """Subject and per-vertebra predictions of one ``result.json``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read: {err}") from err
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise InputError(path, "is not a vertgrade result.json (not a JSON object)")
    subject = document.get("subject")
    vertebrae = document.get("vertebrae")
    if not isinstance(subject, str) or not subject:
        raise InputError(path, "is not a vertgrade result.json: no 'subject'")
    if not isinstance(vertebrae, list):
        raise InputError(path, "is not a vertgrade result.json: no 'vertebrae' list")
    preds: list[Prediction] = []
    seen: set[int] = set()
    for i, v in enumerate(vertebrae):
        where = f"vertebrae[{i}]"
        if not isinstance(v, dict):
            raise InputError(path, f"{where} is not an object")
        label = v.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or label not in VERSE_LABELS:
            raise InputError(path, f"{where}: label {label!r} is not a VerSe label id")
        if label in seen:
            raise InputError(path, f"{where}: label {label} appears twice")
        seen.add(label)
        status = v.get("status")
        grade = v.get("grade")
        if status not in ("graded", "not_gradable"):
            raise InputError(path, f"{where}: status {status!r} is not graded or not_gradable")
        if status == "graded" and (
            not isinstance(grade, int) or isinstance(grade, bool) or grade not in GRADES
        ):
            raise InputError(path, f"{where}: graded but grade {grade!r} is not 0-3")
        reason = v.get("reason")
        preds.append(
            Prediction(
                subject=subject,
                label=label,
                status=status,
                grade=grade if status == "graded" else None,
                score=_score(v.get("rhlv")),
                reason=str(reason) if reason is not None else None,
                source=path,
            )
        )
    return subject, preds


def collect_predictions(paths: Iterable[str | Path]) -> list[Prediction]:
    """Read the predictions of ``vertgrade grade`` result folders.

    Parameters
    ----------
    paths : iterable of str or Path
        Result folders (holding ``result.json``), folders that hold result folders at any depth
        (a cohort output), or ``result.json`` files. Hidden folders are not searched. A file
        reached twice is read once.

    Returns
    -------
    list of Prediction
        One per vertebra of every result, subjects in the order found.

    Raises
    ------
    InputError
        A path does not exist or holds no ``result.json``, a ``result.json`` is not valid, or two
        files hold the same subject (the message names both).
    """
    files: list[Path] = []
    seen_files: set[Path] = set()
    for p in paths:
        for f in _result_files(Path(p)):
            key = f.resolve()
            if key not in seen_files:
                seen_files.add(key)
                files.append(f)
    if not files:
        raise InputError(None, "no result folders given")
    subjects: dict[str, Path] = {}
    out: list[Prediction] = []
    for f in files:
        subject, preds = _read_result(f)
        if subject in subjects:
            raise InputError(
                f,
                f"subject {subject!r} is also the subject of {subjects[subject]}; "
                "give each study once",
            )
        subjects[subject] = f
        out.extend(preds)
    logger.debug("read %d vertebrae of %d subjects", len(out), len(subjects))
    return out


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric with its bootstrap interval.

    Parameters
    ----------
    name : str
        Metric name (see :func:`metric_names`).
    value : float or None
        Point estimate on all vertebrae of the scope; ``None`` where undefined (e.g. sensitivity
        without positives).
    ci_low, ci_high : float or None
        Percentile bootstrap interval; ``None`` without valid resamples.
    n : int
        Vertebrae in the metric's denominator: all vertebrae of the scope, or the true positives
        and negatives (sensitivity, specificity), or the vertebrae of the true grade (per-grade
        recall).
    n_boot_valid : int
        Resamples in which the metric was defined, out of ``Evaluation.n_boot``.
    """

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_boot_valid: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "n_boot_valid": self.n_boot_valid,
        }


@dataclass(frozen=True)
class ScopeResult:
    """Metrics over one set of vertebrae: ``"all"`` or one region of :data:`REGIONS`.

    Parameters
    ----------
    name : str
        ``"all"``, ``"thoracic"``, ``"thoracolumbar"`` or ``"lumbar"``.
    levels : str
        The levels it covers (``"T11-L2"``; ``"all"`` for every level).
    n_patients, n_vertebrae : int
        Patients with at least one vertebra in the scope, and its vertebrae.
    confusion : (4, 4) tuple of tuple of int
        ``confusion[t][p]``: vertebrae of true grade ``t`` graded ``p``.
    classes_in_truth : tuple of int
        The grades present in the truth: those the macro averages run over.
    metrics : tuple of Metric
    """

    name: str
    levels: str
    n_patients: int
    n_vertebrae: int
    confusion: tuple[tuple[int, ...], ...]
    classes_in_truth: tuple[int, ...]
    metrics: tuple[Metric, ...]

    def metric(self, name: str) -> Metric:
        """The metric called ``name``; ``KeyError`` if there is none."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "n_patients": self.n_patients,
            "n_vertebrae": self.n_vertebrae,
            "classes_in_truth": list(self.classes_in_truth),
            "confusion": {
                "rows": "true grade",
                "columns": "predicted grade",
                "grades": list(GRADES),
                "matrix": [list(r) for r in self.confusion],
            },
            "metrics": {m.name: m.to_dict() for m in self.metrics},
        }


@dataclass(frozen=True)
class Match:
    """One vertebra of the truth or of the predictions, and what the evaluation did with it.

    ``status`` is ``"evaluated"`` (both present and graded), ``"not_gradable"`` (a true grade,
    but vertgrade could not grade the vertebra), ``"no_prediction"`` (a true grade, no such
    vertebra in the results) or ``"no_truth"`` (predicted, no true grade).
    """

    subject: str
    label: int
    status: MatchStatus
    true_grade: int | None
    predicted_grade: int | None
    score: float | None
    reason: str | None = None

    @property
    def level(self) -> str:
        return level_name(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "label": self.label,
            "level": self.level,
            "status": self.status,
            "true_grade": self.true_grade,
            "predicted_grade": self.predicted_grade,
            "score": self.score,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Evaluation:
    """The whole evaluation: matching, metrics per scope and the bootstrap's settings.

    Attributes
    ----------
    n_patients, n_vertebrae : int
        Patients with at least one evaluated vertebra, and the evaluated vertebrae.
    scopes : tuple of ScopeResult
        ``"all"`` first, then the regions of :data:`REGIONS` that hold vertebrae.
    matches : tuple of Match
        Every vertebra of the truth and of the predictions, sorted by subject and level.
    score_source : {"rhlv_max", "grade"}
        What ranked the vertebrae for AUROC and average precision: the largest regional RHLV,
        or the predicted grade where some evaluated vertebra has no RHLV.
    n_boot, seed, ci_level
        Bootstrap resamples (of patients), random seed and interval level.
    grades_sources, result_sources : tuple of str
        The files read.
    """

    n_patients: int
    n_vertebrae: int
    scopes: tuple[ScopeResult, ...]
    matches: tuple[Match, ...]
    score_source: ScoreSource
    n_boot: int
    seed: int
    ci_level: float
    grades_sources: tuple[str, ...] = ()
    result_sources: tuple[str, ...] = ()
    subjects_without_truth: tuple[str, ...] = ()
    subjects_without_predictions: tuple[str, ...] = ()

    def scope(self, name: str) -> ScopeResult:
        """The scope called ``name``; ``KeyError`` if it has no vertebrae."""
        for s in self.scopes:
            if s.name == name:
                return s
        raise KeyError(name)

    def metric(self, name: str, scope: str = "all") -> Metric:
        """Shortcut for ``ev.scope(scope).metric(name)``."""
        return self.scope(scope).metric(name)

    def matches_with(self, status: MatchStatus) -> tuple[Match, ...]:
        """The matches of one status."""
        return tuple(m for m in self.matches if m.status == status)

    @property
    def counts(self) -> dict[str, int]:
        """Vertebrae per matching status, truth rows and predictions."""
        c = {s: len(self.matches_with(s)) for s in _STATUSES}
        return {
            "truth": c["evaluated"] + c["not_gradable"] + c["no_prediction"],
            "predictions": c["evaluated"] + c["not_gradable"] + c["no_truth"],
            "evaluated": c["evaluated"],
            "not_gradable": c["not_gradable"],
            "truth_without_prediction": c["no_prediction"],
            "prediction_without_truth": c["no_truth"],
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (undefined values are ``None``)."""
        listed: dict[str, MatchStatus] = {
            "not_gradable": "not_gradable",
            "truth_without_prediction": "no_prediction",
            "prediction_without_truth": "no_truth",
        }
        return {
            "n_patients": self.n_patients,
            "n_vertebrae": self.n_vertebrae,
            "counts": self.counts,
            "score": {
                "source": self.score_source,
                "description": _SCORE_DESCRIPTIONS[self.score_source],
            },
            "bootstrap": {
                "unit": "patient",
                "method": "percentile",
                "n_resamples": self.n_boot,
                "seed": self.seed,
                "ci_level": self.ci_level,
            },
            "macro_average": "over the grades present in the truth of the scope "
            "(scikit-learn average='macro', labels = those grades, zero_division=0)",
            "scopes": {s.name: s.to_dict() for s in self.scopes},
            **{
                key: [m.to_dict() for m in self.matches_with(status)]
                for key, status in listed.items()
            },
            "subjects_without_truth": list(self.subjects_without_truth),
            "subjects_without_predictions": list(self.subjects_without_predictions),
            "sources": {
                "grades": list(self.grades_sources),
                "results": list(self.result_sources),
            },
        }


_BINARY_METRICS = ("sensitivity", "specificity", "auroc", "average_precision")
_STATUSES: tuple[MatchStatus, ...] = ("evaluated", "not_gradable", "no_prediction", "no_truth")
_SCORE_DESCRIPTIONS: dict[str, str] = {
    "rhlv_max": "largest of the anterior, middle and posterior RHLV (result.json rhlv)",
    "grade": "predicted Genant grade (some evaluated vertebra has no RHLV in its result.json)",
}


def metric_names() -> tuple[str, ...]:
    """Names of the metrics, in report order.

    >>> metric_names()[:4]
    ('accuracy', 'macro_precision', 'macro_recall', 'macro_f1')
    """
    names = ["accuracy", "macro_precision", "macro_recall", "macro_f1"]
    names += [f"recall_grade_{g}" for g in GRADES]
    for k in BINARY_THRESHOLDS:
        names += [f"{m}_ge{k}" for m in _BINARY_METRICS]
    return tuple(names)


# --- metrics on weighted samples ---------------------------------------------------------------


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """``num / den``, NaN where ``den`` is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _batch_metrics(
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    score: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> dict[str, NDArray[np.float64]]:
    """Every metric for a batch of integer-weighted samples of the same vertebrae.

    A bootstrap resample of patients is the original vertebrae, each repeated as often as its
    patient was drawn: an integer weight per vertebra. Every metric below is computed from
    weighted counts, so that weight ``w`` gives exactly the result of ``w`` copies.

    Parameters
    ----------
    y_true, y_pred : (N,) int ndarray
        True and predicted grades 0-3.
    score : (N,) float ndarray
        Continuous score for the ranking metrics (larger = more fractured).
    weights : (B, N) float ndarray
        Multiplicity of each vertebra in each of ``B`` samples.

    Returns
    -------
    dict of str to (B,) float ndarray
        One entry per :func:`metric_names`; NaN where a metric is undefined in a sample.
    """
    n_grades = len(GRADES)
    onehot = np.zeros((y_true.size, n_grades * n_grades))
    onehot[np.arange(y_true.size), y_true * n_grades + y_pred] = 1.0
    conf = (weights @ onehot).reshape(-1, n_grades, n_grades)  # (B, true, predicted)
    total = conf.sum(axis=(1, 2))
    tp = np.diagonal(conf, axis1=1, axis2=2)
    true_n = conf.sum(axis=2)
    pred_n = conf.sum(axis=1)
    present = true_n > 0
    n_present = present.sum(axis=1).astype(float)
    recall = _ratio(tp, true_n)
    # scikit-learn's zero_division=0: a grade never predicted has precision 0 (and F1 0)
    precision = np.nan_to_num(_ratio(tp, pred_n), nan=0.0)
    f1 = np.nan_to_num(_ratio(2.0 * tp, true_n + pred_n), nan=0.0)
    out: dict[str, NDArray[np.float64]] = {
        "accuracy": _ratio(tp.sum(axis=1), total),
        "macro_precision": _ratio(np.where(present, precision, 0.0).sum(axis=1), n_present),
        "macro_recall": _ratio(np.nan_to_num(recall).sum(axis=1), n_present),
        "macro_f1": _ratio(np.where(present, f1, 0.0).sum(axis=1), n_present),
    }
    for g in GRADES:
        out[f"recall_grade_{g}"] = recall[:, g]

    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w_sorted = weights[:, order]
    for k in BINARY_THRESHOLDS:
        pos = y_true >= k
        called = y_pred >= k
        n_pos = weights @ pos.astype(float)
        n_neg = weights @ (~pos).astype(float)
        out[f"sensitivity_ge{k}"] = _ratio(weights @ (pos & called).astype(float), n_pos)
        out[f"specificity_ge{k}"] = _ratio(weights @ (~pos & ~called).astype(float), n_neg)
        # Group vertebrae of equal score (descending) and sum positive and negative weights.
        pos_sorted = pos[order].astype(float)
        pos_g = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
        neg_g = np.add.reduceat(w_sorted * (1.0 - pos_sorted), starts, axis=1)
        cum_neg = np.cumsum(neg_g, axis=1)
        # Mann-Whitney: a positive beats every negative of lower score, ties count one half.
        beats = (pos_g * (n_neg[:, None] - cum_neg + 0.5 * neg_g)).sum(axis=1)
        out[f"auroc_ge{k}"] = _ratio(beats, n_pos * n_neg)
        # Average precision: sum over thresholds of (R_k - R_{k-1}) * P_k, as scikit-learn.
        cum_pos = np.cumsum(pos_g, axis=1)
        prec = np.nan_to_num(_ratio(cum_pos, cum_pos + cum_neg), nan=0.0)
        out[f"average_precision_ge{k}"] = _ratio((pos_g * prec).sum(axis=1), n_pos)
    return out


def _metric_n(name: str, y_true: NDArray[np.int64]) -> int:
    """Size of a metric's denominator on the unweighted data."""
    if name.startswith("recall_grade_"):
        return int(np.count_nonzero(y_true == int(name.rsplit("_", 1)[1])))
    if name.startswith(("sensitivity_ge", "specificity_ge")):
        k = int(name.rsplit("_ge", 1)[1])
        pos = int(np.count_nonzero(y_true >= k))
        return pos if name.startswith("sensitivity") else int(y_true.size - pos)
    return int(y_true.size)


def _patient_weights(n_patients: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """How often each patient is drawn in each resample: (n_boot, n_patients) counts."""
    draws = rng.integers(0, n_patients, size=(n_boot, n_patients))
    counts = np.zeros((n_boot, n_patients))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_patients), draws.ravel()), 1.0)
    return counts


def _scope_result(
    name: str,
    levels: str,
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    score: NDArray[np.float64],
    patient: NDArray[np.int64],
    patient_counts: NDArray[np.float64],
    ci_level: float,
) -> ScopeResult:
    point = _batch_metrics(y_true, y_pred, score, np.ones((1, y_true.size)))
    n_boot = patient_counts.shape[0]
    boot: dict[str, list[NDArray[np.float64]]] = {k: [] for k in point}
    block = max(1, _BLOCK_ELEMENTS // max(1, y_true.size))
    for start in range(0, n_boot, block):
        w = patient_counts[start : start + block][:, patient]
        for k, v in _batch_metrics(y_true, y_pred, score, w).items():
            boot[k].append(v)
    alpha = 100.0 * (1.0 - ci_level) / 2.0
    metrics = []
    for mname in metric_names():
        value = float(point[mname][0])
        samples = np.concatenate(boot[mname]) if boot[mname] else np.empty(0)
        valid = samples[np.isfinite(samples)]
        lo = hi = None
        if valid.size and math.isfinite(value):
            lo, hi = (float(x) for x in np.percentile(valid, [alpha, 100.0 - alpha]))
        metrics.append(
            Metric(
                name=mname,
                value=value if math.isfinite(value) else None,
                ci_low=lo,
                ci_high=hi,
                n=_metric_n(mname, y_true),
                n_boot_valid=int(valid.size),
            )
        )
    conf = np.zeros((len(GRADES), len(GRADES)), dtype=int)
    np.add.at(conf, (y_true, y_pred), 1)
    return ScopeResult(
        name=name,
        levels=levels,
        n_patients=int(np.unique(patient).size),
        n_vertebrae=int(y_true.size),
        confusion=tuple(tuple(int(x) for x in row) for row in conf),
        classes_in_truth=tuple(int(g) for g in np.unique(y_true)),
        metrics=tuple(metrics),
    )


def _region_of_label(label: int) -> str | None:
    """The region of :data:`REGIONS` a label falls in (by position along the spine), or None."""
    pos = order_key(label)
    for name, (first, last) in REGIONS.items():
        if order_key(label_id(first)) <= pos <= order_key(label_id(last)):
            return name
    return None


def _match(predictions: Sequence[Prediction], truth: Sequence[GradeRow]) -> list[Match]:
    """One :class:`Match` per vertebra of the union of predictions and truth."""
    preds: dict[tuple[str, int], Prediction] = {}
    for pred in predictions:
        key = (pred.subject, pred.label)
        if key in preds:
            raise InputError(
                pred.source,
                f"{pred.subject} {pred.level} is predicted twice (also in {preds[key].source})",
            )
        preds[key] = pred
    true: dict[tuple[str, int], GradeRow] = {}
    for row in truth:
        key = (row.subject, row.label)
        if key in true:
            raise InputError(row.source, f"{row.subject} {row.level} is graded twice")
        true[key] = row
    matches = []
    for key in sorted(set(preds) | set(true), key=lambda k: (k[0], order_key(k[1]))):
        p, t = preds.get(key), true.get(key)
        status: MatchStatus
        if p is None:
            status = "no_prediction"
        elif t is None:
            status = "no_truth"
        elif p.status != "graded" or p.grade is None:
            status = "not_gradable"
        else:
            status = "evaluated"
        matches.append(
            Match(
                subject=key[0],
                label=key[1],
                status=status,
                true_grade=None if t is None else t.grade,
                predicted_grade=None if p is None else p.grade,
                score=None if p is None else p.score,
                reason=None if p is None else p.reason,
            )
        )
    return matches


def evaluate(
    predictions: Sequence[Prediction],
    truth: Sequence[GradeRow],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> Evaluation:
    """Match predictions to true grades and compute every metric with its bootstrap interval.

    The bootstrap resamples patients: each resample draws as many patients as were evaluated,
    with replacement, and takes all evaluated vertebrae of each drawn patient (as often as the
    patient was drawn). All metrics and scopes use the same resamples. A metric undefined in a
    resample (no positive, no vertebra of a grade, no vertebra of a region) is left out of that
    resample; ``Metric.n_boot_valid`` says how many remained. The interval is the
    ``(1 - ci_level) / 2`` and ``(1 + ci_level) / 2`` percentiles of the valid resamples.

    Parameters
    ----------
    predictions : sequence of Prediction
        From :func:`collect_predictions`.
    truth : sequence of GradeRow
        From :func:`read_grades`.
    n_boot : int, optional
        Bootstrap resamples; 0 computes no intervals.
    seed : int, optional
        Seed of the resampling (the same seed gives the same intervals).
    ci_level : float, optional
        Interval level, in (0, 1).

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        No graded vertebra has a true grade (the message lists the subjects on both sides, the
        usual cause being differently written subject ids), or a vertebra appears twice.
    ValueError
        ``n_boot`` negative or ``ci_level`` outside (0, 1).
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")
    grades_sources = tuple(sorted({str(t.source) for t in truth if t.source is not None}))
    result_sources = tuple(sorted({str(p.source) for p in predictions if p.source is not None}))
    matches = _match(predictions, truth)
    evaluated = [m for m in matches if m.status == "evaluated"]
    pred_subjects = {p.subject for p in predictions}
    true_subjects = {t.subject for t in truth}
    if not evaluated:
        where = grades_sources[0] if len(grades_sources) == 1 else None
        raise InputError(
            where,
            "no graded vertebra of the results has a true grade; subjects in the grades: "
            f"{_few(true_subjects)}; in the results: {_few(pred_subjects)}",
        )
    score_source: ScoreSource = (
        "rhlv_max" if all(m.score is not None for m in evaluated) else "grade"
    )
    subjects = sorted({m.subject for m in evaluated})
    index = {s: i for i, s in enumerate(subjects)}
    y_true = np.array([m.true_grade for m in evaluated], dtype=np.int64)
    y_pred = np.array([m.predicted_grade for m in evaluated], dtype=np.int64)
    if score_source == "rhlv_max":
        score = np.array([m.score for m in evaluated], dtype=float)
    else:
        score = y_pred.astype(float)
    patient = np.array([index[m.subject] for m in evaluated], dtype=np.int64)
    counts = _patient_weights(len(subjects), n_boot, np.random.default_rng(seed))
    region = np.array([_region_of_label(m.label) or "" for m in evaluated])

    scopes = [_scope_result("all", "all", y_true, y_pred, score, patient, counts, ci_level)]
    for name, (first, last) in REGIONS.items():
        sel = region == name
        if sel.any():
            scopes.append(
                _scope_result(
                    name,
                    f"{first}-{last}",
                    y_true[sel],
                    y_pred[sel],
                    score[sel],
                    patient[sel],
                    counts,
                    ci_level,
                )
            )
    return Evaluation(
        n_patients=len(subjects),
        n_vertebrae=len(evaluated),
        scopes=tuple(scopes),
        matches=tuple(matches),
        score_source=score_source,
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        grades_sources=grades_sources,
        result_sources=result_sources,
        subjects_without_truth=tuple(sorted(pred_subjects - true_subjects)),
        subjects_without_predictions=tuple(sorted(true_subjects - pred_subjects)),
    )


def _few(names: Iterable[str], limit: int = 5) -> str:
    items = sorted(names)
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# --- outputs ---------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _metrics_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "metric", "value", "ci_low", "ci_high", "n", "n_boot_valid"])
    for s in ev.scopes:
        for m in s.metrics:
            values = (m.value, m.ci_low, m.ci_high)
            w.writerow([s.name, m.name, *(_fmt(x) for x in values), m.n, m.n_boot_valid])
    return buf.getvalue()


def _confusion_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "true_grade", *(f"predicted_{g}" for g in GRADES)])
    for s in ev.scopes:
        for g, row in zip(GRADES, s.confusion, strict=True):
            w.writerow([s.name, g, *row])
    return buf.getvalue()


def _matches_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    cols = list(Match("", 1, "evaluated", None, None, None).to_dict())
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for m in ev.matches:
        w.writerow({k: "" if v is None else v for k, v in m.to_dict().items()})
    return buf.getvalue()


def _confusion_png(ev: Evaluation, path: Path) -> None:
    """Draw the overall confusion matrix with its counts (matplotlib's object API, no pyplot)."""
    from matplotlib.figure import Figure

    scope = ev.scope("all")
    conf = np.array(scope.confusion, dtype=float)
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    fig = Figure(figsize=(4.8, 4.2), dpi=120)
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for t in GRADES:
        for p in GRADES:
            ax.text(
                p,
                t,
                str(int(conf[t, p])),
                ha="center",
                va="center",
                color="white" if frac[t, p] > 0.6 else "black",
                fontsize=11,
            )
    ax.set_xticks(list(GRADES))
    ax.set_yticks(list(GRADES))
    ax.set_xlabel("predicted Genant grade")
    ax.set_ylabel("true Genant grade")
    ax.set_title(f"{scope.n_vertebrae} vertebrae, {scope.n_patients} patients", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true grade")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def write_evaluation(ev: Evaluation, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write the evaluation folder: metrics, confusion matrix, matches and a confusion plot.

    The files are written into a hidden staging folder inside ``out_dir`` and renamed into place
    one by one: an interrupted run leaves no half-written file.

    Parameters
    ----------
    ev : Evaluation
    out_dir : str or Path
        Output folder; created if missing.
    force : bool, optional
        Write into an existing non-empty folder (files of the same names are replaced).

    Returns
    -------
    list of Path
        The files written, in :data:`EVALUATION_FILES` order.

    Raises
    ------
    OutputError
        ``out_dir`` is a file, or a non-empty folder without ``force``.
    """
    from vertgrade.report.writers import check_output_dir

    out = check_output_dir(out_dir, force=force)
    with staged_files(out, EVALUATION_FILES) as staging:
        texts = {
            "metrics.json": json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n",
            "metrics.csv": _metrics_csv(ev),
            "confusion.csv": _confusion_csv(ev),
            "matches.csv": _matches_csv(ev),
        }
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8", newline="")
        _confusion_png(ev, staging / "confusion.png")
    return [out / name for name in EVALUATION_FILES]


def _cell(m: Metric) -> str:
    if m.value is None:
        return "-"
    if m.ci_low is None or m.ci_high is None:
        return f"{m.value:.2f}"
    return f"{m.value:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"


def evaluation_table(ev: Evaluation) -> Table:
    """A terminal summary: one row per metric, one column per scope, with intervals.

    Parameters
    ----------
    ev : Evaluation

    Returns
    -------
    rich.table.Table
        Cells read ``value [ci_low, ci_high]``; ``-`` where undefined. The caption gives the
        counts of not-gradable and unmatched vertebrae and the bootstrap's settings.
    """
    from rich.table import Table

    pct = f"{100 * ev.ci_level:g} %"
    t = Table(
        title=f"evaluation - {ev.n_patients} patients, {ev.n_vertebrae} vertebrae",
        header_style="bold",
    )
    t.add_column("metric", justify="left")
    for s in ev.scopes:
        t.add_column(f"{s.name} (n={s.n_vertebrae})", justify="right")
    for name in metric_names():
        t.add_row(name, *(_cell(s.metric(name)) for s in ev.scopes))
    c = ev.counts
    t.caption = (
        f"{pct} intervals: bootstrap over patients, {ev.n_boot} resamples, seed {ev.seed}; "
        f"score: {ev.score_source}. Not gradable: {c['not_gradable']}; true grade without "
        f"prediction: {c['truth_without_prediction']}; prediction without true grade: "
        f"{c['prediction_without_truth']}."
    )
    return t


def confusion_table(ev: Evaluation, scope: str = "all") -> Table:
    """The confusion matrix of one scope as a terminal table (rows: true grade)."""
    from rich.table import Table

    s = ev.scope(scope)
    t = Table(title=f"confusion matrix - {scope}", header_style="bold")
    t.add_column("true \\ predicted", justify="right")
    for g in GRADES:
        t.add_column(str(g), justify="right")
    for g, row in zip(GRADES, s.confusion, strict=True):
        t.add_row(str(g), *(str(x) for x in row))
    return t
