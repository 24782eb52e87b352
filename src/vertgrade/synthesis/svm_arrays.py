"""A fitted linear SVM grader as plain numbers: what a grader file stores, and its inference.

scikit-learn fits the grader (:class:`vertgrade.synthesis.grader.SVMGrader`); what is kept of it
is data, a few arrays written as JSON, never a pickle, so a grader file cannot carry code. The
inference here redoes, with numpy, what the fitted scikit-learn pipelines compute (the tests
check that both give the same grades and probabilities):

- standardise: ``z = (x - mean) / scale``;
- one-vs-one linear decisions ``d_k = z . w_k + b_k``, one per pair of classes ``(i, j)``,
  ``i < j``, in the order ``(0, 1), (0, 2), ..., (1, 2), ...``; ``d_k > 0`` votes for class
  ``i``, otherwise for ``j`` (with two classes there is one decision and ``d > 0`` means the
  second class, scikit-learn's convention for binary problems);
- the grade: the class with the most votes, the first of those tied (libsvm's rule);
- the probability: the calibrated model's own scaler and decisions turned into one score per
  class (its votes plus the summed signed confidences squashed into ``(-1/3, 1/3)``: the
  "one-vs-rest" decision shape), each mapped by its Platt sigmoid ``1 / (1 + exp(A f + B))`` and
  normalised to sum to one (for two classes: the sigmoid of the one decision and its complement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["LinearSVM", "PlattLinearSVM", "SVMArrays"]


def _floats(value: Any, name: str, ndim: int) -> NDArray[np.float64]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not an array of numbers") from err
    if arr.ndim != ndim or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected a {ndim}-D array of finite numbers")
    return arr


@dataclass(frozen=True)
class LinearSVM:
    """Standard scaler and one-vs-one linear decisions (see the module docstring)."""

    classes: tuple[int, ...]
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]

    def __post_init__(self) -> None:
        n, f = len(self.classes), self.mean.shape[0]
        pairs = 1 if n == 2 else n * (n - 1) // 2
        if n < 2 or self.scale.shape != (f,) or self.coef.shape != (pairs, f):
            raise ValueError(
                f"inconsistent shapes: {n} classes, mean {self.mean.shape}, scale "
                f"{self.scale.shape}, coef {self.coef.shape} (expected ({pairs}, {f}))"
            )
        if self.intercept.shape != (pairs,) or np.any(self.scale <= 0):
            raise ValueError("intercept must have one value per decision; scales must be > 0")

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def decisions(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(n, pairs)`` linear decisions of the standardised rows of ``x``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        out: NDArray[np.float64] = z @ self.coef.T + self.intercept
        return out

    def _votes(self, d: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = len(self.classes)
        votes = np.zeros((d.shape[0], n))
        conf = np.zeros((d.shape[0], n))
        k = 0
        for i in range(n):
            for j in range(i + 1, n):
                for_i = d[:, k] > 0
                votes[for_i, i] += 1
                votes[~for_i, j] += 1
                conf[:, i] += d[:, k]
                conf[:, j] -= d[:, k]
                k += 1
        return votes, conf

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        """The class of every row of ``x``."""
        d = self.decisions(x)
        cls = np.asarray(self.classes, dtype=np.int64)
        if len(self.classes) == 2:
            return np.where(d[:, 0] > 0, cls[1], cls[0])
        votes, _ = self._votes(d)
        return cls[np.argmax(votes, axis=1)]

    def scores(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """One score per class (``(n, classes)``; with two classes ``(n, 1)``, the decision)."""
        d = self.decisions(x)
        if len(self.classes) == 2:
            return d
        votes, conf = self._votes(d)
        return votes + conf / (3.0 * (np.abs(conf) + 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [int(c) for c in self.classes],
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, doc: Any, name: str = "model") -> LinearSVM:
        if not isinstance(doc, dict):
            raise ValueError(f"{name}: not a table")
        missing = {"classes", "mean", "scale", "coef", "intercept"} - set(doc)
        if missing:
            raise ValueError(f"{name}: missing {', '.join(sorted(missing))}")
        classes = doc["classes"]
        if not isinstance(classes, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in classes
        ):
            raise ValueError(f"{name}.classes: expected a list of integers")
        return cls(
            tuple(classes),
            _floats(doc["mean"], f"{name}.mean", 1),
            _floats(doc["scale"], f"{name}.scale", 1),
            _floats(doc["coef"], f"{name}.coef", 2),
            _floats(doc["intercept"], f"{name}.intercept", 1),
        )

    @classmethod
    def from_sklearn(cls, pipeline: Any) -> LinearSVM:
        """From a fitted ``make_pipeline(StandardScaler(), SVC(kernel="linear"))``."""
        scaler, svc = pipeline[0], pipeline[-1]
        return cls(
            tuple(int(c) for c in svc.classes_),
            np.asarray(scaler.mean_, dtype=np.float64),
            np.asarray(scaler.scale_, dtype=np.float64),
            np.asarray(svc.coef_, dtype=np.float64),
            np.asarray(svc.intercept_, dtype=np.float64),
        )


@dataclass(frozen=True)
class PlattLinearSVM:
    """A :class:`LinearSVM` with a Platt sigmoid ``(A, B)`` per class score."""

    svm: LinearSVM
    a: NDArray[np.float64]
    b: NDArray[np.float64]

    def __post_init__(self) -> None:
        k = 1 if len(self.svm.classes) == 2 else len(self.svm.classes)
        if self.a.shape != (k,) or self.b.shape != (k,):
            raise ValueError(f"expected {k} Platt coefficients A and B")

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(n, classes)`` probabilities, rows summing to one."""
        s = self.svm.scores(x)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(self.a * s + self.b))
        if len(self.svm.classes) == 2:
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total > 0, p / total, uniform)
        return np.asarray(out, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {**self.svm.to_dict(), "platt_a": self.a.tolist(), "platt_b": self.b.tolist()}

    @classmethod
    def from_dict(cls, doc: Any, name: str = "probability_model") -> PlattLinearSVM:
        svm = LinearSVM.from_dict(doc, name)
        if "platt_a" not in doc or "platt_b" not in doc:
            raise ValueError(f"{name}: missing platt_a / platt_b")
        return cls(
            svm,
            _floats(doc["platt_a"], f"{name}.platt_a", 1),
            _floats(doc["platt_b"], f"{name}.platt_b", 1),
        )

    @classmethod
    def from_sklearn(cls, pipeline: Any) -> PlattLinearSVM:
        """From a fitted ``make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(kernel=
        "linear"), method="sigmoid", ensemble=False))``."""
        scaler, calibrated = pipeline[0], pipeline[-1]
        (one,) = calibrated.calibrated_classifiers_
        svc = one.estimator
        svm = LinearSVM(
            tuple(int(c) for c in svc.classes_),
            np.asarray(scaler.mean_, dtype=np.float64),
            np.asarray(scaler.scale_, dtype=np.float64),
            np.asarray(svc.coef_, dtype=np.float64),
            np.asarray(svc.intercept_, dtype=np.float64),
        )
        a = np.array([float(c.a_) for c in one.calibrators])
        b = np.array([float(c.b_) for c in one.calibrators])
        return cls(svm, a, b)


@dataclass(frozen=True)
class SVMArrays:
    """The grader's two models: the grade's SVM and the calibrated one for its probability;
    it answers ``predict`` / ``predict_proba`` / ``classes_`` as the scikit-learn model did."""

    grade: LinearSVM
    probability: PlattLinearSVM

    def __post_init__(self) -> None:
        if self.grade.classes != self.probability.svm.classes:
            raise ValueError("the grade and probability models have different classes")
        if self.grade.n_features != self.probability.svm.n_features:
            raise ValueError("the grade and probability models have different features")

    @property
    def classes_(self) -> NDArray[np.int64]:
        return np.asarray(self.grade.classes, dtype=np.int64)

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        return self.grade.predict(x)

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.probability.predict_proba(x)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grade_model": self.grade.to_dict(),
            "probability_model": self.probability.to_dict(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SVMArrays:
        return cls(
            LinearSVM.from_dict(doc.get("grade_model"), "grade_model"),
            PlattLinearSVM.from_dict(doc.get("probability_model"), "probability_model"),
        )
