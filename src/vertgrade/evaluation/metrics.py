"""The metrics of the evaluation and their patient bootstrap: numpy maths on graded vertebrae.

Every function here takes arrays (true and predicted Genant grades, a continuous score, the
patient of each vertebra) and returns numbers; nothing reads a file. The metrics are computed
from *weighted* counts, so that one call evaluates a whole batch of bootstrap resamples at once:
a resample of patients is the original vertebrae, each weighted by how often its patient was
drawn (:func:`draw_patients`), and a weight ``w`` counts exactly as ``w`` copies.

* the 4-class confusion matrix (grades 0-3), accuracy, per-grade recall and macro precision,
  recall and F1 over the grades present in the truth (scikit-learn's definitions);
* detection of grade >= 1 and of grade >= 2 (:data:`BINARY_THRESHOLDS`): sensitivity,
  specificity, area under the ROC curve and average precision, ranked by the score.

``docs/evaluation.md`` defines every metric.

Examples
--------
>>> import numpy as np
>>> y_true, y_pred = np.array([3, 0, 0]), np.array([3, 0, 1])
>>> score = np.array([0.45, 0.02, 0.21])
>>> m = batch_metrics(y_true, y_pred, score, np.ones((1, 3)))
>>> float(m["accuracy"][0]), float(m["auroc_ge1"][0])
(0.6666666666666666, 1.0)
>>> counts = draw_patients(2, 200, np.random.default_rng(0))
>>> result = bootstrap_metrics(y_true, y_pred, score, np.array([0, 0, 1]), counts, ci_level=0.95)
>>> result[0].name, result[0].n, result[0].n_boot_valid
('accuracy', 3, 200)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vertgrade.io.grades import GRADES

__all__ = [
    "BINARY_THRESHOLDS",
    "Metric",
    "batch_metrics",
    "bootstrap_metrics",
    "confusion_matrix",
    "draw_patients",
    "metric_denominator",
    "metric_names",
]

#: Binary detection tasks: "fracture" (grade >= 1) and "moderate or severe fracture" (grade >= 2),
#: the two cut-offs reported in the VerSe fracture-grading literature (Löffler et al., Radiology:
#: Artificial Intelligence 2020).
BINARY_THRESHOLDS: tuple[int, ...] = (1, 2)

#: Resamples per block in the bootstrap: bounds memory at about 8 x block x vertebrae bytes.
_BLOCK_ELEMENTS = 2_000_000

_BINARY_METRICS = ("sensitivity", "specificity", "auroc", "average_precision")


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
        """The metric, JSON-ready, without its name."""
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "n_boot_valid": self.n_boot_valid,
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


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """``num / den``, NaN where ``den`` is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_matrix(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> NDArray[np.int_]:
    """The 4-class confusion matrix: ``C[t, p]`` vertebrae of true grade ``t`` graded ``p``.

    Parameters
    ----------
    y_true, y_pred : (N,) int ndarray
        True and predicted grades 0-3.

    Returns
    -------
    (4, 4) int ndarray
        Rows true grade, columns predicted grade.

    >>> confusion_matrix(np.array([0, 0, 3]), np.array([0, 1, 3]))[[0, 3]].tolist()
    [[1, 1, 0, 0], [0, 0, 0, 1]]
    """
    conf = np.zeros((len(GRADES), len(GRADES)), dtype=int)
    np.add.at(conf, (y_true, y_pred), 1)
    return conf


def batch_metrics(
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


def metric_denominator(name: str, y_true: NDArray[np.int64]) -> int:
    """Size of a metric's denominator on the unweighted data (:attr:`Metric.n`).

    >>> y = np.array([0, 0, 1, 3])
    >>> metric_denominator("recall_grade_0", y), metric_denominator("specificity_ge1", y)
    (2, 2)
    >>> metric_denominator("sensitivity_ge2", y), metric_denominator("auroc_ge2", y)
    (1, 4)
    """
    if name.startswith("recall_grade_"):
        return int(np.count_nonzero(y_true == int(name.rsplit("_", 1)[1])))
    if name.startswith(("sensitivity_ge", "specificity_ge")):
        k = int(name.rsplit("_ge", 1)[1])
        pos = int(np.count_nonzero(y_true >= k))
        return pos if name.startswith("sensitivity") else int(y_true.size - pos)
    return int(y_true.size)


def draw_patients(n_patients: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Draw the bootstrap resamples of patients: how often each patient is drawn in each.

    Each resample draws ``n_patients`` patients with replacement.

    Parameters
    ----------
    n_patients : int
        Patients of the evaluation (indexed 0 to ``n_patients - 1``).
    n_boot : int
        Resamples.
    rng : numpy.random.Generator
        The source of randomness (seeded by the caller).

    Returns
    -------
    (n_boot, n_patients) float ndarray
        Counts; every row sums to ``n_patients``.

    >>> c = draw_patients(3, 4, np.random.default_rng(1))
    >>> c.shape, c.sum(axis=1).tolist()
    ((4, 3), [3.0, 3.0, 3.0, 3.0])
    """
    draws = rng.integers(0, n_patients, size=(n_boot, n_patients))
    counts = np.zeros((n_boot, n_patients))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_patients), draws.ravel()), 1.0)
    return counts


def bootstrap_metrics(
    y_true: NDArray[np.int64],
    y_pred: NDArray[np.int64],
    score: NDArray[np.float64],
    patient: NDArray[np.int64],
    patient_counts: NDArray[np.float64],
    *,
    ci_level: float,
) -> tuple[Metric, ...]:
    """Every metric on a set of vertebrae, with its percentile interval over patient resamples.

    The point estimate takes every vertebra once; resample ``b`` weights each vertebra by
    ``patient_counts[b, patient]``, in blocks that bound memory. A metric undefined in a
    resample is left out of its interval; the interval is the ``(1 - ci_level) / 2`` and
    ``(1 + ci_level) / 2`` percentiles (linear interpolation) of the resamples where it is
    defined.

    Parameters
    ----------
    y_true, y_pred : (N,) int ndarray
        True and predicted grades 0-3.
    score : (N,) float ndarray
        Continuous score for the ranking metrics (larger = more fractured).
    patient : (N,) int ndarray
        Patient index of each vertebra, a column of ``patient_counts``.
    patient_counts : (B, P) float ndarray
        From :func:`draw_patients`; ``B = 0`` computes no intervals.
    ci_level : float
        Interval level, in (0, 1).

    Returns
    -------
    tuple of Metric
        In :func:`metric_names` order.
    """
    point = batch_metrics(y_true, y_pred, score, np.ones((1, y_true.size)))
    n_boot = patient_counts.shape[0]
    boot: dict[str, list[NDArray[np.float64]]] = {k: [] for k in point}
    block = max(1, _BLOCK_ELEMENTS // max(1, y_true.size))
    for start in range(0, n_boot, block):
        w = patient_counts[start : start + block][:, patient]
        for k, v in batch_metrics(y_true, y_pred, score, w).items():
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
                n=metric_denominator(mname, y_true),
                n_boot_valid=int(valid.size),
            )
        )
    return tuple(metrics)
