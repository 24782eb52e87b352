"""The SVM grader: Genant grade from the relative height losses against the synthesised reference.

As in HealthiVert-GAN, a linear support-vector classifier with balanced class weights on
standardised features grades each vertebra 0-3. The features are the RHLV of the anterior, middle
and posterior thirds against each pass's pseudo-healthy reference (three per pass: six with the
sagittal and coronal passes), ``RHLV = (H_syn - H_ori) / H_syn``, with ``H_ori`` the vertebra's
measured heights and ``H_syn`` the pass's reference heights on the same thirds, which the
synthesis reference hands on in ``Reference.parts`` and the result keeps per vertebra
(:attr:`vertgrade.result.VertebraResult.reference_parts`): the grader reads its features from the
result, not from the estimator.

Leak control (cross-fitting). The published code trained its SVM on features of vertebrae its
generator had been trained on; a generator reproduces those far better than unseen ones, so the
features it gives them are not the features it gives new patients. Here every feature file
records the subjects its generator was trained on, and :func:`train_grader` refuses features of
a subject that its generator saw. The intended procedure (``docs/verse2019.md``): split the
subjects into K folds, train K generators each without one fold, grade each fold's subjects
with the generator that did not see them, and train the grader on all of those features.

The grader's own accuracy is estimated by cross-validation grouped by subject (no subject in
both the training and the test part), before it is fitted on everything.

Files: ``synthesis.json`` beside a result (:func:`write_synthesis_features`) holds a study's
features and provenance; a grader file (JSON, ``grader.json``) holds the fitted models as plain
arrays (:mod:`vertgrade.synthesis.svm_arrays`: the scalers, the one-vs-one linear decisions and
the Platt coefficients) with the feature list, classes, training summary and the vertgrade
version. It is data only: nothing in it can run code when it is read. Pickle and joblib grader
files (vertgrade 0.x before grader format 2) are refused with the reason, unread.

Training and evaluating a grader need scikit-learn, the ``grader`` extra
(``pip install 'vertgrade[grader]'``); grading with a trained grader file does not (its
inference is numpy, :mod:`vertgrade.synthesis.svm_arrays`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vertgrade._version import __version__
from vertgrade.config import CRUSH_POSTERIOR_SHARE
from vertgrade.errors import InputError, ModelFileError, OutputError, SetupError
from vertgrade.geometry.thirds import THIRDS
from vertgrade.grading import rhlv, type_for_grade
from vertgrade.io.files import write_text_atomic
from vertgrade.io.grades import grades_by_subject, read_grades
from vertgrade.io.nifti import file_sha256
from vertgrade.result import SpineResult
from vertgrade.synthesis.modelfile import minor_version
from vertgrade.synthesis.reference import SynthesisReference, describe
from vertgrade.synthesis.svm_arrays import LinearSVM, PlattLinearSVM, SVMArrays

__all__ = [
    "FEATURES_FILE",
    "GRADER_FORMAT_VERSION",
    "GradePrediction",
    "Grader",
    "GraderSummary",
    "SVMGrader",
    "apply_grader",
    "collect_features",
    "evaluate_grader",
    "feature_names",
    "fit_grader",
    "load_grader",
    "save_grader",
    "synthesis_features",
    "train_grader",
    "write_synthesis_features",
]

#: Name of the per-study feature file written beside ``result.json``.
FEATURES_FILE = "synthesis.json"
FEATURES_FORMAT_VERSION = 1
GRADER_FORMAT = "vertgrade-grader"
GRADER_FORMAT_VERSION = 2
_FEATURE_REGIONS = THIRDS


def feature_names(passes: Sequence[str]) -> list[str]:
    """``rhlv_<pass>_<third>`` for each pass and third.

    >>> feature_names(["sagittal"])
    ['rhlv_sagittal_anterior', 'rhlv_sagittal_middle', 'rhlv_sagittal_posterior']
    """
    return [f"rhlv_{p}_{r}" for p in passes for r in _FEATURE_REGIONS]


def synthesis_features(result: SpineResult) -> dict[int, dict[str, float | None]]:
    """RHLV of every third against every pass's reference, per vertebra with measured heights
    and per-pass references (``VertebraResult.reference_parts``).

    Parameters
    ----------
    result : SpineResult
        The study graded with the synthesis reference (its ``heights_mm`` are ``H_ori``).
    """
    out: dict[int, dict[str, float | None]] = {}
    for v in result.vertebrae:
        refs = v.reference_parts
        if not refs or v.heights_mm is None:
            continue
        feats: dict[str, float | None] = {}
        for p, ref in refs.items():
            for r in _FEATURE_REGIONS:
                feats[f"rhlv_{p}_{r}"] = rhlv(v.heights_mm.get(r), ref.get(r))
        out[v.label] = feats
    return out


def write_synthesis_features(
    result: SpineResult, reference: SynthesisReference, out_dir: str | Path
) -> Path:
    """Write ``synthesis.json`` into a result folder: per vertebra the RHLV features, each
    pass's reference heights and the threshold grade, and the model's provenance (including the
    subjects it was trained on, for the grader's leak check).

    ``reference`` is the estimator that graded ``result`` (for the model's provenance); the
    per-pass references are the result's own.
    """
    feats = synthesis_features(result)
    doc = {
        "format": FEATURES_FORMAT_VERSION,
        "subject": result.subject,
        "model": describe(reference),
        "passes": list(reference.synthesiser.config.passes),
        "vertebrae": [
            {
                "label": v.label,
                "level": v.level,
                "status": v.status,
                "threshold_grade": v.threshold_grade,
                "features": {k: _round(x) for k, x in feats.get(v.label, {}).items()},
                "reference_passes_mm": {
                    p: {k: _round(x) for k, x in h.as_dict().items()}
                    for p, h in v.reference_parts.items()
                },
            }
            for v in result.vertebrae
        ],
    }
    path = Path(out_dir) / FEATURES_FILE
    write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), 5)


# --- the classifier ------------------------------------------------------------------------


@dataclass(frozen=True)
class GradePrediction:
    """The grader's verdict on one vertebra: ``grade`` (0-3), the classifier's ``probability``
    of that grade, the probability of every class (``probabilities``, keyed by grade) and the
    threshold grade it stands beside (RHLV >= 20 / 25 / 40 %)."""

    grade: int
    probability: float
    probabilities: dict[int, float]
    threshold_grade: int | None


@dataclass(frozen=True)
class GraderSummary:
    """What went into a grader and how well it did in grouped cross-validation."""

    n_vertebrae: int
    n_subjects: int
    class_counts: dict[int, int]
    features: tuple[str, ...]
    cv_folds: int
    cv_macro_precision: float | None
    cv_macro_recall: float | None
    cv_macro_f1: float | None
    cv_confusion: list[list[int]] | None
    models: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["class_counts"] = {str(k): v for k, v in self.class_counts.items()}
        return d


@dataclass(frozen=True)
class Grader:
    """A fitted grader (standard scaler + linear SVC, as arrays) and what it expects."""

    model: SVMArrays
    features: tuple[str, ...]
    classes: tuple[int, ...]
    summary: dict[str, Any]
    vertgrade_version: str
    path: Path | None = None

    def predict_features(
        self, features: Mapping[int, Mapping[str, float | None]]
    ) -> dict[int, GradePrediction]:
        """Predictions for every vertebra whose features are all present (others are left
        out: they stay with their threshold grade or as not gradable)."""
        labels, rows = [], []
        for lab, f in features.items():
            vals = [f.get(name) for name in self.features]
            if any(v is None or not math.isfinite(float(v)) for v in vals):
                continue
            labels.append(lab)
            rows.append([float(v) for v in vals])  # type: ignore[arg-type]
        if not rows:
            return {}
        x = np.asarray(rows, dtype=np.float64)
        pred = self.model.predict(x)
        proba = self.model.predict_proba(x)
        classes = [int(c) for c in self.model.classes_]
        out = {}
        for i, lab in enumerate(labels):
            g = int(pred[i])
            probs = {c: float(proba[i, j]) for j, c in enumerate(classes)}
            out[lab] = GradePrediction(g, probs[g], probs, None)
        return out

    def grade(self, result: SpineResult) -> dict[int, GradePrediction]:
        """Grade every gradable vertebra of ``result`` (graded with the synthesis reference)
        from the per-pass references the result carries."""
        passes = list(dict.fromkeys(p for v in result.vertebrae for p in v.reference_parts))
        if not passes:
            raise InputError(
                result.provenance.get("inputs", {}).get("ct", {}).get("path"),
                "the grader needs a study graded with --reference synthesis",
            )
        missing = sorted(set(self.features) - set(feature_names(passes)))
        if missing:
            raise ModelFileError(
                self.path,
                f"the grader needs features {', '.join(missing)}, which this synthesis model "
                "does not produce (other passes)",
            )
        feats = synthesis_features(result)
        preds = self.predict_features(feats)
        threshold = {v.label: v.grade for v in result.vertebrae}
        graded = {v.label for v in result.vertebrae if v.status == "graded"}
        return {
            lab: GradePrediction(p.grade, p.probability, p.probabilities, threshold.get(lab))
            for lab, p in preds.items()
            if lab in graded
        }


def apply_grader(
    result: SpineResult, predictions: Mapping[int, GradePrediction], grader: Grader
) -> SpineResult:
    """``result`` with the grader's grades in place of the threshold grades.

    Each predicted vertebra gets ``grade`` = the classifier's grade, ``grade_method="svm"``,
    ``grade_probabilities`` and ``confidence`` = the probability of its grade; its
    ``threshold_grade`` stays. The type (wedge / biconcave / crush) is the threshold one, formed
    from the regional losses whatever their size where the classifier finds a fracture that the
    thresholds do not, and dropped where the classifier grades 0. Vertebrae without a prediction
    (not gradable, features missing) keep their threshold grade. The grader is recorded in the
    provenance.
    """
    out = []
    for v in result.vertebrae:
        p = predictions.get(v.label)
        if p is None or v.status != "graded":
            out.append(v)
            continue
        ftype = type_for_grade(
            p.grade,
            v.type,
            v.rhlv,
            crush_posterior_share=float(
                result.provenance.get("parameters", {}).get(
                    "crush_posterior_share", CRUSH_POSTERIOR_SHARE
                )
            ),
        )
        out.append(
            replace(
                v,
                grade=p.grade,
                type=ftype,
                confidence=p.probability,
                grade_method="svm",
                threshold_grade=v.threshold_grade,
                grade_probabilities=dict(p.probabilities),
            )
        )
    provenance = dict(result.provenance)
    provenance["grader"] = {
        "path": str(grader.path) if grader.path is not None else None,
        "sha256": file_sha256(grader.path) if grader.path is not None else None,
        "features": list(grader.features),
        "vertgrade_version": grader.vertgrade_version,
        "cv_macro_f1": grader.summary.get("cv_macro_f1"),
    }
    return replace(result, vertebrae=tuple(out), provenance=provenance)


def _read_feature_file(folder: Path) -> dict[str, Any]:
    path = folder / FEATURES_FILE if folder.is_dir() else folder
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            path, "no synthesis features: grade this study with --reference synthesis"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the synthesis features ({err})") from err
    if doc.get("format") != FEATURES_FORMAT_VERSION:
        raise InputError(path, f"feature file format {doc.get('format')} is not supported")
    return doc


def collect_features(
    result_dirs: Sequence[str | Path],
    grades: Mapping[str, Mapping[int, int]],
) -> tuple[
    NDArray[np.float64], NDArray[np.int64], list[str], list[str], tuple[str, ...], dict[str, int]
]:
    """Feature matrix, grades, subject per row, model per row, feature names, skip counts.

    Raises
    ------
    InputError
        A feature file from a generator trained on its own subject (leak), or files whose
        passes differ.
    """
    rows: list[list[float]] = []
    ys: list[int] = []
    subjects: list[str] = []
    models: list[str] = []
    names: tuple[str, ...] | None = None
    skipped = {"no_grade": 0, "missing_features": 0}
    for d in result_dirs:
        folder = Path(d)
        doc = _read_feature_file(folder)
        subject = str(doc["subject"])
        trained = set(doc["model"].get("trained_subjects", []))
        if subject in trained:
            raise InputError(
                folder,
                f"features of {subject} come from a generator trained on {subject}: grade each "
                "subject with a generator of a fold that left it out (cross-fitting)",
            )
        these = tuple(feature_names(doc["passes"]))
        if names is None:
            names = these
        elif these != names:
            raise InputError(folder, f"its features {these} differ from the others' {names}")
        g = grades.get(subject, {})
        for v in doc["vertebrae"]:
            if v["status"] != "graded" or int(v["label"]) not in g:
                skipped["no_grade"] += 1
                continue
            vals = [v["features"].get(n) for n in names]
            if any(x is None for x in vals):
                skipped["missing_features"] += 1
                continue
            rows.append([float(x) for x in vals])
            ys.append(int(g[int(v["label"])]))
            subjects.append(subject)
            models.append(str(doc["model"].get("model", "")))
    if names is None:
        raise InputError(None, "no result folders given")
    return (
        np.asarray(rows, dtype=np.float64).reshape(-1, len(names)),
        np.asarray(ys, dtype=np.int64),
        subjects,
        models,
        names,
        skipped,
    )


def _require_sklearn(what: str) -> None:
    """Raise :class:`~vertgrade.errors.SetupError` naming the pip command where scikit-learn
    (the ``grader`` extra) is missing; ``what`` starts the message."""
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        raise SetupError(
            f"{what} needs scikit-learn, which is not installed: "
            "pip install 'vertgrade[grader]' (or pip install scikit-learn)"
        ) from err


class SVMGrader:
    """Standard scaler + linear SVC with balanced class weights (the grade), and the same model
    calibrated by Platt scaling (sigmoid; scikit-learn's ``CalibratedClassifierCV`` with
    ``ensemble=False``) for the probabilities.

    The grade is the SVM's decision, as in HealthiVert-GAN; the probability reported with it is
    the calibrated probability of that grade. Calibration follows the class frequencies while
    the balanced SVM favours rare grades, so for a rare grade the chosen grade's probability
    need not be the largest of the four.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: NDArray[np.float64], y: NDArray[np.int64]) -> SVMGrader:
        _require_sklearn("Training the SVM grader")
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        def svc() -> Any:
            return SVC(kernel="linear", class_weight="balanced", random_state=self.seed)

        self.svm_ = _svm_pipeline(self.seed).fit(x, y)
        folds = int(min(3, np.unique(y, return_counts=True)[1].min()))
        self.calibrated_ = make_pipeline(
            StandardScaler(),
            CalibratedClassifierCV(svc(), method="sigmoid", cv=folds, ensemble=False),
        ).fit(x, y)
        self.classes_ = self.svm_.classes_
        return self

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.asarray(self.svm_.predict(x), dtype=np.int64)

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.calibrated_.predict_proba(x), dtype=np.float64)

    def to_arrays(self) -> SVMArrays:
        """The fitted models as plain arrays (what a grader file stores)."""
        return SVMArrays(
            LinearSVM.from_sklearn(self.svm_), PlattLinearSVM.from_sklearn(self.calibrated_)
        )


def _svm_pipeline(seed: int) -> Any:
    """The grade's classifier alone (for cross-validation)."""
    _require_sklearn("Training the SVM grader")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(
        StandardScaler(), SVC(kernel="linear", class_weight="balanced", random_state=seed)
    )


def fit_grader(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    subjects: Sequence[str],
    features: Sequence[str],
    *,
    models: Sequence[str] = (),
    cv_folds: int = 5,
    seed: int = 0,
    skipped: Mapping[str, int] | None = None,
) -> Grader:
    """Fit a grader on a feature matrix (rows: vertebrae) and estimate its accuracy by
    cross-validation grouped by subject.

    Raises
    ------
    InputError
        Fewer than two classes, or a class with fewer than 3 vertebrae (the probability
        calibration's internal cross-validation needs them).
    SetupError
        scikit-learn (the ``grader`` extra) is not installed.
    """
    _require_sklearn("Training the SVM grader")
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise InputError(None, "the grader needs vertebrae of at least two grades")
    if counts.min() < 3:
        few = [int(c) for c, n in zip(classes, counts, strict=True) if n < 3]
        raise InputError(None, f"grade(s) {few} have fewer than 3 vertebrae: too few to train")
    groups = np.asarray(subjects)
    n_sub = len(set(subjects))
    folds = min(cv_folds, n_sub, int(counts.min()))
    p = r = f1 = None
    conf = None
    if folds >= 2:
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        pred = cross_val_predict(_svm_pipeline(seed), x, y, groups=groups, cv=cv)
        pr, rc, f, _ = precision_recall_fscore_support(
            y, pred, labels=classes, average="macro", zero_division=0
        )
        p, r, f1 = float(pr), float(rc), float(f)
        conf = confusion_matrix(y, pred, labels=classes).tolist()
    model = SVMGrader(seed).fit(x, y).to_arrays()
    summary = GraderSummary(
        n_vertebrae=int(y.size),
        n_subjects=n_sub,
        class_counts={int(c): int(n) for c, n in zip(classes, counts, strict=True)},
        features=tuple(features),
        cv_folds=folds,
        cv_macro_precision=p,
        cv_macro_recall=r,
        cv_macro_f1=f1,
        cv_confusion=conf,
        models=tuple(sorted(set(models))),
        skipped=dict(skipped or {}),
    )
    return Grader(
        model, tuple(features), tuple(int(c) for c in classes), summary.to_dict(), __version__
    )


def train_grader(
    result_dirs: Sequence[str | Path],
    grades: str | Path | Mapping[str, Mapping[int, int]],
    out_path: str | Path,
    *,
    cv_folds: int = 5,
    seed: int = 0,
    force: bool = False,
) -> Grader:
    """Train a grader on graded result folders (``vertgrade train-grader``) and save it.

    Parameters
    ----------
    result_dirs : sequence of path
        Folders written by ``vertgrade grade --reference synthesis`` (each with
        ``synthesis.json``), every subject graded by a generator that did not train on it.
    grades : path or mapping
        Expert Genant grades (CSV as :func:`vertgrade.io.grades.read_grades` reads, or
        subject -> {label: grade}).
    out_path : path
        The grader file (JSON, ``grader.json``) to write.
    cv_folds : int
        Folds of the grouped cross-validation that estimates accuracy.
    force : bool
        Overwrite an existing file.

    Raises
    ------
    SetupError
        scikit-learn (the ``grader`` extra) is not installed; raised before anything is read.
    """
    _require_sklearn("Training the SVM grader (vertgrade train-grader)")
    out = Path(out_path)
    if out.exists() and not force:
        raise OutputError(out, "grader file exists (use --force to overwrite)")
    table = grades_by_subject(read_grades(grades)) if isinstance(grades, (str, Path)) else grades
    x, y, subjects, models, names, skipped = collect_features(result_dirs, table)
    if y.size == 0:
        raise InputError(None, "no graded vertebra with features and an expert grade")
    grader = fit_grader(
        x, y, subjects, names, models=models, cv_folds=cv_folds, seed=seed, skipped=skipped
    )
    save_grader(grader, out)
    return Grader(
        grader.model, grader.features, grader.classes, grader.summary, grader.vertgrade_version, out
    )


def evaluate_grader(
    grader: Grader | str | Path,
    result_dirs: Sequence[str | Path],
    grades: str | Path | Mapping[str, Mapping[int, int]],
) -> dict[str, Any]:
    """Macro precision, recall and F1 (and the confusion matrix) of a grader on held-out result
    folders, against expert grades; with the threshold grades' scores beside them.

    The features must come from generators that did not see these subjects (checked as in
    :func:`train_grader`).

    Raises
    ------
    SetupError
        scikit-learn (the ``grader`` extra) is not installed.
    """
    _require_sklearn("Evaluating the SVM grader")
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    g = grader if isinstance(grader, Grader) else load_grader(grader)
    table = grades_by_subject(read_grades(grades)) if isinstance(grades, (str, Path)) else grades
    x, y, subjects, _, names, skipped = collect_features(result_dirs, table)
    if tuple(names) != tuple(g.features):
        raise InputError(None, f"features {names} differ from the grader's {g.features}")
    if y.size == 0:
        raise InputError(None, "no graded vertebra with features and an expert grade")
    pred = g.model.predict(x)
    labels = [0, 1, 2, 3]
    p, r, f, _ = precision_recall_fscore_support(
        y, pred, labels=labels, average="macro", zero_division=0
    )
    thr = _threshold_grades(result_dirs, table)
    out: dict[str, Any] = {
        "n_vertebrae": int(y.size),
        "n_subjects": len(set(subjects)),
        "macro_precision": float(p),
        "macro_recall": float(r),
        "macro_f1": float(f),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "skipped": skipped,
    }
    if thr:
        ty, tp = zip(*thr, strict=True)
        tp_, tr_, tf_, _ = precision_recall_fscore_support(
            ty, tp, labels=labels, average="macro", zero_division=0
        )
        out["threshold"] = {
            "macro_precision": float(tp_),
            "macro_recall": float(tr_),
            "macro_f1": float(tf_),
        }
    return out


def _threshold_grades(
    result_dirs: Sequence[str | Path], grades: Mapping[str, Mapping[int, int]]
) -> list[tuple[int, int]]:
    """(expert, threshold) grade pairs of the graded vertebrae in the feature files."""
    pairs = []
    for d in result_dirs:
        doc = _read_feature_file(Path(d))
        g = grades.get(str(doc["subject"]), {})
        for v in doc["vertebrae"]:
            lab = int(v["label"])
            if v["status"] == "graded" and lab in g and v.get("threshold_grade") is not None:
                pairs.append((int(g[lab]), int(v["threshold_grade"])))
    return pairs


def save_grader(grader: Grader, path: str | Path) -> Path:
    """Write a grader file atomically: JSON, the models as arrays (format 2)."""
    doc = {
        "format": GRADER_FORMAT,
        "format_version": GRADER_FORMAT_VERSION,
        "vertgrade": grader.vertgrade_version,
        "features": list(grader.features),
        "classes": list(grader.classes),
        "summary": grader.summary,
        **grader.model.to_dict(),
    }
    target = Path(path)
    write_text_atomic(target, json.dumps(doc, indent=1) + "\n")
    return target


#: First bytes of files that are not JSON but a pickle (protocol 2+), or joblib's zlib-, gzip-,
#: bz2-, xz- or lz4-compressed pickles.
_PICKLE_MAGIC = (b"\x80", b"x\x01", b"x^", b"x\x9c", b"x\xda", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


def load_grader(path: str | Path) -> Grader:
    """Read a grader file; :class:`~vertgrade.errors.ModelFileError` when it is missing, a
    pickle (refused unread: a pickle can run code when loaded), not valid JSON, of another kind
    or format, inconsistent, or from another vertgrade minor version."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(p, "grader file not found (train one with: vertgrade train-grader)")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ModelFileError(p, f"cannot read the grader file ({err.strerror or err})") from err
    if raw.startswith(_PICKLE_MAGIC):
        raise ModelFileError(
            p,
            "a pickle or joblib grader file, refused unread: a pickle can run code when it is "
            "loaded; grader files are JSON since vertgrade grader format 2 (retrain with: "
            "vertgrade train-grader ... -o grader.json)",
        )
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(p, f"not a vertgrade grader file (not JSON: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != GRADER_FORMAT:
        raise ModelFileError(p, "not a vertgrade grader file")
    if doc.get("format_version") != GRADER_FORMAT_VERSION:
        raise ModelFileError(p, f"grader format {doc.get('format_version')} is not supported")
    made_by = str(doc.get("vertgrade", "unknown"))
    if minor_version(made_by) != minor_version(__version__):
        raise ModelFileError(
            p, f"made by vertgrade {made_by}, which differs from this {__version__}: retrain it"
        )
    try:
        model = SVMArrays.from_dict(doc)
        features = tuple(str(f) for f in doc["features"])
        classes = tuple(int(c) for c in doc["classes"])
        summary = dict(doc.get("summary") or {})
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(p, f"damaged grader file: {err}") from err
    if len(features) != model.grade.n_features or classes != model.grade.classes:
        raise ModelFileError(
            p, "damaged grader file: its features or classes do not match its model"
        )
    return Grader(model, features, classes, summary, made_by, p)
