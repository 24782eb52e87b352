"""Evaluation of graded results against reference Genant grades, with patient bootstrap intervals.

:func:`evaluate` matches vertgrade's predictions (:func:`~vertgrade.evaluation.collect_predictions`)
to the true grades of a grades file (:func:`vertgrade.io.grades.read_grades`) by
``(subject, label)`` and computes, on the matched vertebrae that vertgrade could grade, every
metric of :mod:`vertgrade.evaluation.metrics` with a percentile bootstrap interval that resamples
*patients* with replacement (vertebrae of one patient are not independent), overall and per
spinal region (:data:`vertgrade.levels.SPINAL_REGIONS`). Matching is exhaustive: every vertebra
that is not gradable, every true grade without a prediction and every prediction without a true
grade is counted and listed, never silently dropped. ``docs/evaluation.md`` describes the formats
and every metric.

Examples
--------
>>> from vertgrade.evaluation import Prediction
>>> from vertgrade.io.grades import GradeRow
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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.evaluation.metrics import Metric, bootstrap_metrics, confusion_matrix, draw_patients
from vertgrade.evaluation.predictions import Prediction
from vertgrade.io.grades import GRADES, GradeRow
from vertgrade.levels import SPINAL_REGIONS, level_name, order_key, spinal_region_of

__all__ = ["Evaluation", "Match", "MatchStatus", "ScopeResult", "ScoreSource", "evaluate"]

MatchStatus = Literal["evaluated", "not_gradable", "no_prediction", "no_truth"]
ScoreSource = Literal["rhlv_max", "grade"]

_STATUSES: tuple[MatchStatus, ...] = ("evaluated", "not_gradable", "no_prediction", "no_truth")
_SCORE_DESCRIPTIONS: dict[str, str] = {
    "rhlv_max": "largest of the anterior, middle and posterior RHLV (result.json rhlv)",
    "grade": "predicted Genant grade (some evaluated vertebra has no RHLV in its result.json)",
}


@dataclass(frozen=True)
class ScopeResult:
    """Metrics over one set of vertebrae: ``"all"`` or one region of
    :data:`vertgrade.levels.SPINAL_REGIONS`.

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


#: Below this many patients the bootstrap intervals come with a caution
#: (:attr:`Evaluation.caution`). Percentile intervals from few resampling units are too narrow
#: ("narrowness bias": Hesterberg, "What Teachers Should Know About the Bootstrap", The American
#: Statistician 69(4), 2015); 20 is this project's choice of where that stops mattering much.
FEW_PATIENTS = 20


@dataclass(frozen=True)
class Evaluation:
    """The whole evaluation: matching, metrics per scope and the bootstrap's settings.

    Attributes
    ----------
    n_patients, n_vertebrae : int
        Patients with at least one evaluated vertebra, and the evaluated vertebrae.
    scopes : tuple of ScopeResult
        ``"all"`` first, then the regions of :data:`vertgrade.levels.SPINAL_REGIONS` that hold
        vertebrae.
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

    @property
    def distinct_resamples(self) -> int:
        """How many different resamples of the patients exist: multisets of ``n_patients``
        drawn from ``n_patients``, ``C(2n - 1, n)`` (10 for 3 patients, 126 for 5)."""
        n = self.n_patients
        return math.comb(2 * n - 1, n) if n > 0 else 0

    @property
    def caution(self) -> str | None:
        """What the intervals cannot say, or ``None``: with fewer than
        :data:`FEW_PATIENTS` patients a percentile bootstrap over patients is known to give
        intervals that are too narrow, and its resamples repeat a few distinct draws."""
        n = self.n_patients
        if self.n_boot == 0 or n >= FEW_PATIENTS:
            return None
        repeat = ""
        if self.distinct_resamples < self.n_boot:
            repeat = (
                f"; {self.n_boot} resamples repeat only {self.distinct_resamples} distinct "
                "draws of the patients"
            )
        return (
            f"only {n} patient{'s' if n != 1 else ''}: the bootstrap intervals mean little (too "
            f"narrow with fewer than {FEW_PATIENTS} patients{repeat}); read the counts, not the "
            "intervals"
        )

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
                "distinct_resamples": self.distinct_resamples,
                "caution": self.caution,
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
    """The metrics and confusion matrix of one scope's evaluated vertebrae."""
    metrics = bootstrap_metrics(y_true, y_pred, score, patient, patient_counts, ci_level=ci_level)
    conf = confusion_matrix(y_true, y_pred)
    return ScopeResult(
        name=name,
        levels=levels,
        n_patients=int(np.unique(patient).size),
        n_vertebrae=int(y_true.size),
        confusion=tuple(tuple(int(x) for x in row) for row in conf),
        classes_in_truth=tuple(int(g) for g in np.unique(y_true)),
        metrics=metrics,
    )


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
        From :func:`vertgrade.evaluation.collect_predictions`.
    truth : sequence of GradeRow
        From :func:`vertgrade.io.grades.read_grades`.
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
    counts = draw_patients(len(subjects), n_boot, np.random.default_rng(seed))
    region = np.array([spinal_region_of(m.label) or "" for m in evaluated])

    scopes = [_scope_result("all", "all", y_true, y_pred, score, patient, counts, ci_level)]
    for name, (first, last) in SPINAL_REGIONS.items():
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
    """Up to ``limit`` of ``names``, sorted, for an error message."""
    items = sorted(names)
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
