"""A cohort's means, with percentile intervals from a bootstrap over patients.

Vertebrae of one patient are not independent, so the intervals resample *patients* with
replacement, as the grading evaluation does (:func:`vertgrade.evaluation.metrics.draw_patients`):
a resample is every vertebra weighted by how often its patient was drawn, and a mean over a
resample is the weighted mean. The metrics (:func:`cohort_metric_names`):

- over vertebrae, pooled across cases: ``id_rate`` (identified true vertebrae / true
  vertebrae, the VerSe benchmark's dataset-level identification rate), ``precision``
  (identified / predicted vertebrae), ``localisation_mm`` (mean over the vertebrae both sides
  have), ``dice`` (mean over the true vertebrae of the label maps, a missed one counting 0),
  ``hd_mm``, ``hd95_mm`` and ``assd_mm`` (means over the vertebrae both masks have);
- over cases: ``scan_id_rate``, ``scan_dice`` (the mean of each case's own mean) and
  ``scan_global_dice``.

Examples
--------
>>> m = bootstrap_means(
...     np.array([1.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]), n_boot=200, seed=0,
...     ci_level=0.95, name="id_rate",
... )
>>> m.value, m.n, m.n_boot_valid, m.ci_low <= m.value <= m.ci_high
(0.75, 4, 200, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from vertgrade.evaluation.metrics import Metric, draw_patients
from vertgrade.segqa.case import CaseQA

__all__ = ["bootstrap_means", "cohort_metric_names", "cohort_metrics"]

#: Resamples per block: bounds memory at about 8 x block x values bytes.
_BLOCK_ELEMENTS = 2_000_000


def cohort_metric_names() -> tuple[str, ...]:
    """The cohort's metrics, in report order.

    >>> cohort_metric_names()[:3]
    ('id_rate', 'precision', 'localisation_mm')
    """
    return (
        "id_rate",
        "precision",
        "localisation_mm",
        "dice",
        "hd_mm",
        "hd95_mm",
        "assd_mm",
        "scan_id_rate",
        "scan_dice",
        "scan_global_dice",
    )


def bootstrap_means(
    values: NDArray[np.float64],
    patient: NDArray[np.int64],
    *,
    n_boot: int,
    seed: int,
    ci_level: float,
    name: str,
    counts: NDArray[np.float64] | None = None,
) -> Metric:
    """The mean of ``values`` with a percentile interval over patient resamples.

    Parameters
    ----------
    values : (N,) float ndarray
        One value per vertebra (or case); NaN = not measured, left out.
    patient : (N,) int ndarray
        Patient index of each value, ``0 .. P - 1``.
    n_boot : int
        Resamples (0: no interval).
    seed : int
        Seed of ``numpy.random.default_rng``, so that reruns give the same interval.
    ci_level : float
        Interval level in (0, 1).
    name : str
    counts : (n_boot, P) float ndarray, optional
        Resamples already drawn (:func:`~vertgrade.evaluation.metrics.draw_patients`), so that
        every metric of a cohort uses the same ones.

    Returns
    -------
    Metric
        ``value`` ``None`` where nothing was measured; ``n`` the values measured.
    """
    values = np.asarray(values, dtype=float)
    patient = np.asarray(patient, dtype=np.int64)
    valid = np.isfinite(values)
    n = int(valid.sum())
    if n == 0:
        return Metric(name, None, None, None, 0, 0)
    value = float(values[valid].mean())
    n_patients = int(patient.max()) + 1 if patient.size else 0
    if counts is None:
        counts = draw_patients(n_patients, n_boot, np.random.default_rng(seed))
    x = np.where(valid, values, 0.0)
    v = valid.astype(float)
    samples = []
    block = max(1, _BLOCK_ELEMENTS // max(1, values.size))
    for start in range(0, counts.shape[0], block):
        w = counts[start : start + block][:, patient]
        num, den = w @ x, w @ v
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        samples.append(out)
    boot = np.concatenate(samples) if samples else np.empty(0)
    finite = boot[np.isfinite(boot)]
    lo = hi = None
    if finite.size:
        alpha = 100.0 * (1.0 - ci_level) / 2.0
        lo, hi = (float(q) for q in np.percentile(finite, [alpha, 100.0 - alpha]))
    return Metric(name, value, lo, hi, n, int(finite.size))


def _nan(x: float | bool | None) -> float:
    return math.nan if x is None else float(x)


def cohort_metrics(
    cases: Sequence[CaseQA], *, n_boot: int, seed: int, ci_level: float
) -> tuple[Metric, ...]:
    """Every cohort metric (:func:`cohort_metric_names`) over ``cases``.

    The patients are the cases' ``patient`` names; one draw of resamples serves every metric.
    """
    patients = sorted({c.patient for c in cases})
    index = {p: i for i, p in enumerate(patients)}
    counts = draw_patients(len(patients), n_boot, np.random.default_rng(seed))
    rows = [(index[c.patient], v) for c in cases for v in c.vertebrae]
    vp = np.array([i for i, _ in rows], dtype=np.int64)
    cp = np.array([index[c.patient] for c in cases], dtype=np.int64)

    def col(values: list[float]) -> NDArray[np.float64]:
        return np.array(values, dtype=float)

    per_vertebra = {
        "id_rate": col([_nan(v.identified) if v.in_truth else math.nan for _, v in rows]),
        "precision": col([_nan(v.identified) if v.in_pred else math.nan for _, v in rows]),
        "localisation_mm": col([_nan(v.localisation_mm) for _, v in rows]),
        "dice": col([_nan(v.dice) if v.in_truth else math.nan for _, v in rows]),
        "hd_mm": col([_nan(v.hd_mm) for _, v in rows]),
        "hd95_mm": col([_nan(v.hd95_mm) for _, v in rows]),
        "assd_mm": col([_nan(v.assd_mm) for _, v in rows]),
    }
    per_case = {
        "scan_id_rate": col([_nan(c.summary.id_rate) for c in cases]),
        "scan_dice": col([_nan(c.summary.mean_dice) for c in cases]),
        "scan_global_dice": col([_nan(c.summary.global_dice) for c in cases]),
    }
    out = []
    for name in cohort_metric_names():
        values, who = (per_vertebra[name], vp) if name in per_vertebra else (per_case[name], cp)
        out.append(
            bootstrap_means(
                values, who, n_boot=n_boot, seed=seed, ci_level=ci_level, name=name, counts=counts
            )
        )
    return tuple(out)
