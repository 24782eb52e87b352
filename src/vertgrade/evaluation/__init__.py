"""Evaluation of vertgrade's grades against reference Genant grades (``vertgrade evaluate``).

The stages, one module each:

- :mod:`.predictions`: vertgrade's grades, read from ``result.json`` files
  (:func:`collect_predictions`);
- :mod:`.scoring`: matching them to the true grades of a grades file (read by
  :func:`vertgrade.io.grades.read_grades`) and computing every metric, overall and per spinal
  region (:data:`vertgrade.levels.SPINAL_REGIONS`) (:func:`evaluate`);
- :mod:`.metrics`: the metrics and the patient bootstrap, numpy maths only;
- :mod:`.output`: the evaluation folder (:func:`write_evaluation`) and the terminal tables.

``docs/evaluation.md`` describes the formats and every metric.

Examples
--------
>>> from vertgrade.io.grades import GradeRow
>>> truth = [GradeRow("p1", 20, 3), GradeRow("p1", 21, 0), GradeRow("p2", 20, 0)]
>>> preds = [
...     Prediction("p1", 20, "graded", 3, 0.45),
...     Prediction("p1", 21, "graded", 0, 0.02),
...     Prediction("p2", 20, "graded", 1, 0.21),
... ]
>>> ev = evaluate(preds, truth, n_boot=200)
>>> ev.metric("accuracy").value, ev.metric("sensitivity_ge1").value
(0.6666666666666666, 1.0)
"""

from __future__ import annotations

from vertgrade.evaluation.metrics import BINARY_THRESHOLDS, Metric, metric_names
from vertgrade.evaluation.output import (
    EVALUATION_FILES,
    confusion_table,
    evaluation_table,
    write_evaluation,
)
from vertgrade.evaluation.predictions import Prediction, collect_predictions
from vertgrade.evaluation.scoring import Evaluation, Match, ScopeResult, evaluate

__all__ = [
    "BINARY_THRESHOLDS",
    "EVALUATION_FILES",
    "Evaluation",
    "Match",
    "Metric",
    "Prediction",
    "ScopeResult",
    "collect_predictions",
    "confusion_table",
    "evaluate",
    "evaluation_table",
    "metric_names",
    "write_evaluation",
]
