"""Evaluation against reference grades: hand-computed metrics on a made-up table, the patient
bootstrap, matching and its counts, the grades file's errors, the output folder, and every real
VerSe case of ../shared/data (each subject of its grades.csv whose folder is present) graded end
to end."""

from __future__ import annotations

import csv
import json
import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from vertgrade import InputError, OutputError, grade_study, load_study
from vertgrade.evaluation import (
    EVALUATION_FILES,
    Evaluation,
    Prediction,
    collect_predictions,
    confusion_table,
    evaluate,
    evaluation_table,
    metric_names,
    write_evaluation,
)
from vertgrade.evaluation import metrics as evmetrics
from vertgrade.io.grades import GradeRow, grades_by_subject, read_grades
from vertgrade.levels import SPINAL_REGIONS, label_id, spinal_region_of
from vertgrade.report.files import write_result

# --- a made-up table, computed by hand -----------------------------------------------------------
# (subject, level, true grade, predicted grade, largest regional RHLV)
TABLE = [
    ("A", "T12", 0, 0, 0.05),
    ("A", "L1", 3, 3, 0.50),
    ("A", "L2", 1, 0, 0.18),
    ("A", "L3", 0, 1, 0.22),
    ("B", "T8", 2, 2, 0.30),
    ("B", "L1", 2, 1, 0.24),
    ("B", "L4", 0, 0, 0.10),
    ("C", "T11", 0, 0, 0.02),
    ("C", "L2", 1, 1, 0.21),
]
# Rows: true grade 0-3, columns: predicted grade 0-3.
CONFUSION = [
    [3, 1, 0, 0],  # A T12, B L4, C T11 right; A L3 called 1
    [1, 1, 0, 0],  # A L2 missed; C L2 right
    [0, 1, 1, 0],  # B L1 called 1; B T8 right
    [0, 0, 0, 1],  # A L1 right
]
F = Fraction
# Per grade (tp, true count, predicted count) from CONFUSION:
#   0: (3, 4, 4)  P 3/4  R 3/4  F1 3/4
#   1: (1, 2, 3)  P 1/3  R 1/2  F1 2/5
#   2: (1, 2, 1)  P 1    R 1/2  F1 2/3
#   3: (1, 1, 1)  P 1    R 1    F1 1
EXPECTED = {
    "accuracy": F(6, 9),
    "macro_precision": (F(3, 4) + F(1, 3) + 1 + 1) / 4,  # 37/48
    "macro_recall": (F(3, 4) + F(1, 2) + F(1, 2) + 1) / 4,  # 11/16
    "macro_f1": (F(3, 4) + F(2, 5) + F(2, 3) + 1) / 4,  # 169/240
    "recall_grade_0": F(3, 4),
    "recall_grade_1": F(1, 2),
    "recall_grade_2": F(1, 2),
    "recall_grade_3": F(1),
    # grade >= 1: positives A L1 .50, A L2 .18, B T8 .30, B L1 .24, C L2 .21;
    # negatives A T12 .05, A L3 .22, B L4 .10, C T11 .02
    "sensitivity_ge1": F(4, 5),  # A L2 called 0
    "specificity_ge1": F(3, 4),  # A L3 called 1
    # negatives below each positive: .50 -> 4, .18 -> 3, .30 -> 4, .24 -> 4, .21 -> 3 (of 4)
    "auroc_ge1": F(4 + 3 + 4 + 4 + 3, 5 * 4),  # 0.9
    # ranked: .50 P, .30 P, .24 P, .22 N, .21 P, .18 P, ... -> precisions 1, 1, 1, 4/5, 5/6
    "average_precision_ge1": (1 + 1 + 1 + F(4, 5) + F(5, 6)) / 5,  # 139/150
    # grade >= 2: positives A L1 .50, B T8 .30, B L1 .24 (called 1); all six negatives below .24
    "sensitivity_ge2": F(2, 3),
    "specificity_ge2": F(1),
    "auroc_ge2": F(1),
    "average_precision_ge2": F(1),
}
N_EXPECTED = {"recall_grade_0": 4, "recall_grade_1": 2, "recall_grade_2": 2, "recall_grade_3": 1}
N_EXPECTED |= {"sensitivity_ge1": 5, "specificity_ge1": 4, "sensitivity_ge2": 3}
N_EXPECTED |= {"specificity_ge2": 6}


def _table_inputs(
    extra_preds: tuple[Prediction, ...] = (), extra_truth: tuple[GradeRow, ...] = ()
) -> tuple[list[Prediction], list[GradeRow]]:
    preds = [Prediction(s, label_id(lv), "graded", p, sc) for s, lv, _, p, sc in TABLE]
    truth = [GradeRow(s, label_id(lv), t) for s, lv, t, _, _ in TABLE]
    return preds + list(extra_preds), truth + list(extra_truth)


@pytest.fixture(scope="module")
def table_eval() -> Evaluation:
    preds, truth = _table_inputs()
    return evaluate(preds, truth, n_boot=500, seed=3)


def test_confusion_matrix_by_hand(table_eval: Evaluation) -> None:
    assert [list(r) for r in table_eval.scope("all").confusion] == CONFUSION
    assert table_eval.n_patients == 3
    assert table_eval.n_vertebrae == 9
    assert table_eval.scope("all").classes_in_truth == (0, 1, 2, 3)
    assert table_eval.score_source == "rhlv_max"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metric_by_hand(table_eval: Evaluation, name: str) -> None:
    m = table_eval.metric(name)
    assert m.value == pytest.approx(float(EXPECTED[name]), abs=1e-12)
    assert m.n == N_EXPECTED.get(name, 9)


def test_every_metric_has_an_interval_around_it(table_eval: Evaluation) -> None:
    for m in table_eval.scope("all").metrics:
        assert m.value is not None
        assert m.ci_low is not None and m.ci_high is not None
        assert m.ci_low - 1e-12 <= m.value <= m.ci_high + 1e-12, m
        assert 0 < m.n_boot_valid <= 500


def test_region_breakdown_by_hand(table_eval: Evaluation) -> None:
    assert [s.name for s in table_eval.scopes] == ["all", "thoracic", "thoracolumbar", "lumbar"]
    # thoracic T1-T10: B T8 only
    th = table_eval.scope("thoracic")
    assert (th.n_patients, th.n_vertebrae, th.levels) == (1, 1, "T1-T10")
    # thoracolumbar T11-L2: A T12 0/0, A L1 3/3, A L2 1/0, B L1 2/1, C T11 0/0, C L2 1/1
    tl = table_eval.scope("thoracolumbar")
    assert (tl.n_patients, tl.n_vertebrae) == (3, 6)
    assert [list(r) for r in tl.confusion] == [
        [2, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 1],
    ]
    assert tl.metric("accuracy").value == pytest.approx(4 / 6)
    # precision: 2/3, 1/2, 0 (grade 2 never predicted), 1; recall: 1, 1/2, 0, 1
    assert tl.metric("macro_precision").value == pytest.approx((2 / 3 + 1 / 2 + 0 + 1) / 4)
    assert tl.metric("macro_recall").value == pytest.approx((1 + 1 / 2 + 0 + 1) / 4)
    # lumbar L3-L5: A L3 0/1, B L4 0/0 -> no positive: sensitivity and AUROC undefined
    lu = table_eval.scope("lumbar")
    assert (lu.n_patients, lu.n_vertebrae) == (2, 2)
    assert lu.metric("accuracy").value == pytest.approx(0.5)
    assert lu.metric("specificity_ge1").value == pytest.approx(0.5)
    for name in ("sensitivity_ge1", "auroc_ge1", "average_precision_ge1", "recall_grade_1"):
        m = lu.metric(name)
        assert (m.value, m.ci_low, m.ci_high, m.n_boot_valid) == (None, None, None, 0)
    # macro averages run over the grades present in the truth: grade 0 only
    assert lu.classes_in_truth == (0,)
    assert lu.metric("macro_recall").value == pytest.approx(0.5)


def test_scopes_are_the_spinal_regions(table_eval: Evaluation) -> None:
    """The region scopes are levels.SPINAL_REGIONS (not levels.region_of): T11-L2 on its own."""
    regions = table_eval.scopes[1:]
    assert [(s.name, s.levels) for s in regions] == [
        (name, f"{first}-{last}") for name, (first, last) in SPINAL_REGIONS.items()
    ]
    by_level = {lv: spinal_region_of(label_id(lv)) for _, lv, *_ in TABLE}
    assert by_level["T11"] == by_level["L2"] == "thoracolumbar"
    assert (by_level["T8"], by_level["L3"], by_level["L4"]) == ("thoracic", "lumbar", "lumbar")


def test_undefined_resamples_are_skipped_and_counted() -> None:
    """Grade-3 recall is defined only in resamples that drew patient A (1 - (2/3)**3 of them)."""
    preds, truth = _table_inputs()
    ev = evaluate(preds, truth, n_boot=4000, seed=1)
    m = ev.metric("recall_grade_3")
    assert m.n_boot_valid / 4000 == pytest.approx(1 - (2 / 3) ** 3, abs=0.03)
    assert ev.metric("accuracy").n_boot_valid == 4000


def test_matching_counts_not_gradable_and_unmatched() -> None:
    extra_preds = (
        Prediction("A", label_id("T11"), "not_gradable", None, None, "cut by the field of view"),
        Prediction("B", label_id("L5"), "graded", 0, 0.01),  # no true grade
        Prediction("E", label_id("L1"), "graded", 2, 0.3),  # subject without any true grade
    )
    extra_truth = (
        GradeRow("A", label_id("T11"), 0),  # not gradable
        GradeRow("C", label_id("L3"), 0),  # no prediction
        GradeRow("F", label_id("L1"), 1),  # subject without any result
    )
    preds, truth = _table_inputs(extra_preds, extra_truth)
    ev = evaluate(preds, truth, n_boot=50)
    assert ev.counts == {
        "truth": 12,
        "predictions": 12,
        "evaluated": 9,
        "not_gradable": 1,
        "truth_without_prediction": 2,
        "prediction_without_truth": 2,
    }
    (ng,) = ev.matches_with("not_gradable")
    assert (ng.subject, ng.level, ng.true_grade, ng.reason) == (
        "A",
        "T11",
        0,
        "cut by the field of view",
    )
    assert {(m.subject, m.level) for m in ev.matches_with("no_prediction")} == {
        ("C", "L3"),
        ("F", "L1"),
    }
    assert {(m.subject, m.level) for m in ev.matches_with("no_truth")} == {("B", "L5"), ("E", "L1")}
    assert ev.subjects_without_truth == ("E",)
    assert ev.subjects_without_predictions == ("F",)
    # metrics only on the nine evaluated vertebrae
    assert [list(r) for r in ev.scope("all").confusion] == CONFUSION
    assert ev.n_patients == 3
    d = ev.to_dict()
    assert d["counts"]["not_gradable"] == 1
    assert d["not_gradable"][0]["level"] == "T11"
    assert len(d["truth_without_prediction"]) == 2


def test_missing_score_falls_back_to_grade() -> None:
    preds, truth = _table_inputs()
    preds[0] = Prediction(preds[0].subject, preds[0].label, "graded", preds[0].grade, None)
    ev = evaluate(preds, truth, n_boot=0)
    assert ev.score_source == "grade"
    # ranked by predicted grade: positives (>= 1) 3, 0, 2, 1, 1; negatives 0, 1, 0, 0.
    # pairs won: 3 -> 4; 0 -> 3 ties = 1.5; 2 -> 4; 1 -> 3 + 0.5 tie; 1 -> 3.5  => 16.5 / 20
    assert ev.metric("auroc_ge1").value == pytest.approx(16.5 / 20)
    assert ev.metric("accuracy").ci_low is None  # n_boot=0: no intervals


def test_bootstrap_is_seeded() -> None:
    preds, truth = _cohort(20)
    a = evaluate(preds, truth, n_boot=300, seed=7).metric("macro_f1")
    b = evaluate(preds, truth, n_boot=300, seed=7).metric("macro_f1")
    c = evaluate(preds, truth, n_boot=300, seed=8).metric("macro_f1")
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


# --- the bootstrap resamples patients ------------------------------------------------------------


def _clustered(n_patients: int, per_patient: int, *, one_patient_each: bool) -> Evaluation:
    """Half the patients have every vertebra right, the other half every vertebra wrong."""
    preds, truth = [], []
    labels = list(range(8, 8 + per_patient))
    for i in range(n_patients):
        for lab in labels:
            subject = f"p{i}-{lab}" if one_patient_each else f"p{i}"
            pred = 0 if i < n_patients // 2 else 1
            preds.append(Prediction(subject, lab, "graded", pred, 0.1 * pred))
            truth.append(GradeRow(subject, lab, 0))
    return evaluate(preds, truth, n_boot=2000, seed=0)


def test_patient_resampling_widens_intervals_of_clustered_errors() -> None:
    """10 patients x 10 vertebrae, errors clustered by patient. Resampling patients, accuracy is
    k/10 with k ~ Binomial(10, 1/2): 95 % interval about [0.2, 0.8]. Were vertebrae resampled,
    it would be k/100 with k ~ Binomial(100, 1/2): about [0.4, 0.6]."""
    by_patient = _clustered(10, 10, one_patient_each=False).metric("accuracy")
    by_vertebra = _clustered(10, 10, one_patient_each=True).metric("accuracy")
    assert by_patient.value == by_vertebra.value == 0.5
    assert by_patient.ci_low is not None and by_patient.ci_high is not None
    assert by_vertebra.ci_low is not None and by_vertebra.ci_high is not None
    assert by_patient.ci_low == pytest.approx(0.2, abs=0.05)
    assert by_patient.ci_high == pytest.approx(0.8, abs=0.05)
    assert by_vertebra.ci_low == pytest.approx(0.4, abs=0.03)
    assert by_vertebra.ci_high == pytest.approx(0.6, abs=0.03)


def test_each_resample_holds_whole_patients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight vector the metrics see gives all vertebrae of a patient the same count, and
    the counts per patient add up to the number of patients."""
    seen: list[np.ndarray] = []
    original = evmetrics.batch_metrics

    def spy(y_true: Any, y_pred: Any, score: Any, weights: np.ndarray) -> Any:
        seen.append(weights.copy())
        return original(y_true, y_pred, score, weights)

    monkeypatch.setattr(evmetrics, "batch_metrics", spy)
    preds, truth = _table_inputs()
    evaluate(preds, truth, n_boot=200, seed=5)
    # the first two calls are the "all" scope: point estimate, then the resamples
    point, boot = seen[0], seen[1]
    assert point.shape == (1, 9) and np.all(point == 1)
    assert boot.shape == (200, 9)
    # evaluated vertebrae are ordered by subject: A (4), B (3), C (2)
    groups = [slice(0, 4), slice(4, 7), slice(7, 9)]
    per_patient = np.stack([boot[:, g][:, 0] for g in groups], axis=1)
    for g, col in zip(groups, per_patient.T, strict=True):
        assert np.all(boot[:, g] == col[:, None])
    assert np.all(per_patient.sum(axis=1) == 3)
    # a patient drawn twice counts twice: more than one copy happens
    assert per_patient.max() >= 2


def test_integer_weights_equal_copies() -> None:
    """A vertebra of weight w counts as w copies, for every metric (the oracle: duplicate rows)."""
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 4, 25)
    y_pred = np.clip(y_true + rng.integers(-1, 2, 25), 0, 3)
    score = np.round(0.1 * y_true + 0.2 * rng.random(25), 2)
    w = rng.integers(0, 4, 25)
    weighted = evmetrics.batch_metrics(y_true, y_pred, score, w[None].astype(float))
    rep = np.repeat(np.arange(25), w)
    copied = evmetrics.batch_metrics(y_true[rep], y_pred[rep], score[rep], np.ones((1, rep.size)))
    for name in metric_names():
        np.testing.assert_allclose(weighted[name], copied[name], rtol=1e-12, err_msg=name)


def test_weighted_metrics_match_scikit_learn() -> None:
    """An independent oracle besides the hand-computed table: scikit-learn with sample weights."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(2)
    for _ in range(40):
        n = int(rng.integers(4, 30))
        y_true = rng.integers(0, 4, n)
        y_pred = np.clip(y_true + rng.integers(-1, 2, n), 0, 3)
        score = np.round(0.1 * y_true + 0.3 * rng.random(n), 2)  # ties included
        w = rng.integers(1, 4, n).astype(float)
        ours = evmetrics.batch_metrics(y_true, y_pred, score, w[None])
        labels = np.unique(y_true)
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average="macro", zero_division=0, sample_weight=w
        )
        expected = {"macro_precision": p, "macro_recall": r, "macro_f1": f}
        expected["accuracy"] = skm.accuracy_score(y_true, y_pred, sample_weight=w)
        for k in (1, 2):
            pos = y_true >= k
            if pos.any() and not pos.all():
                expected[f"auroc_ge{k}"] = skm.roc_auc_score(pos, score, sample_weight=w)
            if pos.any():
                ap = skm.average_precision_score(pos, score, sample_weight=w)
                expected[f"average_precision_ge{k}"] = ap
        for name, value in expected.items():
            assert ours[name][0] == pytest.approx(value, abs=1e-12), name


def _cohort(n_patients: int) -> tuple[list[Prediction], list[GradeRow]]:
    """A random cohort, T8-L4 per patient, mostly right grades and RHLV rising with the grade."""
    rng = np.random.default_rng(11)
    preds, truth = [], []
    for i in range(n_patients):
        for lab in range(15, 24):
            g = int(rng.choice(4, p=[0.7, 0.1, 0.1, 0.1]))
            p = int(np.clip(g + rng.choice([-1, 0, 0, 0, 1]), 0, 3))
            score = float(0.12 * g + rng.normal(0, 0.06))
            preds.append(Prediction(f"s{i}", lab, "graded", p, score))
            truth.append(GradeRow(f"s{i}", lab, g))
    return preds, truth


def test_interval_contains_point_on_a_larger_cohort() -> None:
    ev = evaluate(*_cohort(40), n_boot=1000, seed=0)
    assert ev.n_patients == 40 and ev.n_vertebrae == 360
    for scope in ev.scopes:
        for m in scope.metrics:
            assert m.value is not None and m.ci_low is not None and m.ci_high is not None
            assert m.ci_low <= m.value <= m.ci_high, (scope.name, m)
    for m in ev.scope("all").metrics:
        assert m.ci_low is not None and m.ci_high is not None
        assert 0 < m.ci_high - m.ci_low < 0.4, m


# --- grades file ---------------------------------------------------------------------------------


def test_read_grades_verse_format(tmp_path: Path) -> None:
    f = tmp_path / "grades.csv"
    f.write_text(
        "\ufeffsubject,label,level,genant_grade\nsub-a,20,L1,3\n\nsub-a,28,T13,0\n", "utf-8"
    )
    rows = read_grades(f)
    assert [(r.subject, r.label, r.level, r.grade) for r in rows] == [
        ("sub-a", 20, "L1", 3),
        ("sub-a", 28, "T13", 0),
    ]
    assert rows[1].line == 4 and rows[1].source == f


def test_read_grades_grade_column_level_only_and_extra_columns(tmp_path: Path) -> None:
    f = tmp_path / "g.csv"
    f.write_text(" Subject , LEVEL ,Grade,reader\nx, t12 ,2.0,R1\nx,L2,0,R1\n", "utf-8")
    rows = read_grades(f)
    assert [(r.label, r.grade) for r in rows] == [(19, 2), (21, 0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("subject,label,grade\n", "no grades"),
        ("subject,label\nA,20\n", "missing column(s) grade"),
        ("label,grade\n20,1\n", "missing column(s) subject"),
        ("subject,grade\nA,1\n", "label (or level)"),
        ("subject,label,grade,genant_grade\nA,20,1,1\n", "both a 'grade' and a 'genant_grade'"),
        ("subject,label,grade\nA,20,4\n", "line 2: grade '4' is not a Genant grade"),
        ("subject,label,grade\nA,20,1.5\n", "'1.5' is not a Genant grade"),
        ("subject,label,grade\nA,20,\n", "remove the rows of vertebrae not graded"),
        ("subject,label,grade\nA,20,mild\n", "'mild' is not a Genant grade"),
        ("subject,label,grade\nA,27,1\n", "label '27' is not a VerSe label id"),
        ("subject,label,grade\nA,L1,1\n", "label 'L1' is not a VerSe label id"),
        ("subject,level,grade\nA,Q7,1\n", "level 'Q7' is not a vertebra level"),
        ("subject,label,level,grade\nA,20,T12,1\n", "label 20 is L1 but level says 'T12'"),
        ("subject,label,grade\n,20,1\n", "line 2: empty subject"),
        (
            "subject,label,grade\nA,20,1\nB,20,1\nA,20,2\n",
            "line 4: A L1 (label 20) is graded again",
        ),
        ("subject,label,grade\nA,20,1,x\n", "line 2: 4 fields, the header has 3"),
        ("subject,label,label,grade\nA,20,20,1\n", "'label' appears more than once"),
    ],
)
def test_bad_grades_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "grades.csv"
    f.write_text(text, "utf-8")
    with pytest.raises(InputError) as info:
        read_grades(f)
    assert info.value.path == f
    assert message in info.value.problem
    assert str(f) in str(info.value)


def test_missing_grades_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="grades file not found"):
        read_grades(tmp_path / "nope.csv")


def test_grades_by_subject_view() -> None:
    rows = [GradeRow("b", 20, 3), GradeRow("a", 19, 0), GradeRow("b", 28, 1)]
    by_subject = grades_by_subject(rows)
    assert by_subject == {"b": {20: 3, 28: 1}, "a": {19: 0}}
    assert list(by_subject) == ["b", "a"]  # subjects in order of their first row


# --- result folders ------------------------------------------------------------------------------


def _result_json(folder: Path, subject: str, vertebrae: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    path.write_text(json.dumps({"subject": subject, "vertebrae": vertebrae}), "utf-8")
    return path


def _vertebra(label: int, grade: int | None, rhlv: tuple[float, float, float] | None) -> dict:
    return {
        "label": label,
        "status": "graded" if grade is not None else "not_gradable",
        "grade": grade,
        "reason": None if grade is not None else "no usable reference: none",
        "rhlv": None
        if rhlv is None
        else {"body": 0.0, "anterior": rhlv[0], "middle": rhlv[1], "posterior": rhlv[2]},
    }


def test_collect_predictions_recursive_and_scores(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort_out"
    _result_json(cohort / "studies" / "s1", "s1", [_vertebra(20, 2, (0.1, 0.31, -0.02))])
    _result_json(cohort / "studies" / "s2", "s2", [_vertebra(20, None, None)])
    _result_json(cohort / ".staging" / "s9", "s9", [_vertebra(20, 0, (0, 0, 0))])  # hidden
    single = _result_json(tmp_path / "single", "s3", [_vertebra(21, 0, (0.05, None, 0.01))])
    preds = collect_predictions([cohort, single.parent, single])  # single twice: read once
    by = {p.subject: p for p in preds}
    assert sorted(by) == ["s1", "s2", "s3"]
    assert by["s1"].score == pytest.approx(0.31) and by["s1"].grade == 2
    assert by["s2"].status == "not_gradable" and by["s2"].grade is None and by["s2"].score is None
    assert by["s3"].score == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"vertebrae": []}', "no 'subject'"),
        ('{"subject": "a"}', "no 'vertebrae' list"),
        (
            '{"subject": "a", "vertebrae": [{"label": 99, "status": "graded", "grade": 1}]}',
            "label 99",
        ),
        (
            '{"subject": "a", "vertebrae": [{"label": 20, "status": "graded", "grade": 5}]}',
            "grade 5",
        ),
        ('{"subject": "a", "vertebrae": [{"label": 20, "status": "ok", "grade": 1}]}', "status"),
    ],
)
def test_bad_result_json_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "r" / "result.json"
    f.parent.mkdir()
    f.write_text(content, "utf-8")
    with pytest.raises(InputError) as info:
        collect_predictions([tmp_path / "r"])
    assert info.value.path == f
    assert message in info.value.problem


def test_collect_predictions_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        collect_predictions([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no result\.json"):
        collect_predictions([tmp_path / "empty"])
    a = _result_json(tmp_path / "a", "same", [_vertebra(20, 0, (0, 0, 0))])
    b = _result_json(tmp_path / "b", "same", [_vertebra(20, 0, (0, 0, 0))])
    with pytest.raises(InputError, match="also the subject of") as info:
        collect_predictions([a.parent, b.parent])
    assert info.value.path == b


def test_no_match_names_the_grades_file_and_subjects(tmp_path: Path) -> None:
    grades = tmp_path / "grades.csv"
    grades.write_text("subject,label,grade\nverse012,20,3\n", "utf-8")
    preds = [Prediction("sub-verse012", 20, "graded", 3, 0.5)]
    with pytest.raises(InputError, match="sub-verse012") as info:
        evaluate(preds, read_grades(grades), n_boot=10)
    assert info.value.path == grades
    assert "verse012" in info.value.problem


# --- outputs -------------------------------------------------------------------------------------


def test_written_files(tmp_path: Path, table_eval: Evaluation) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    out = tmp_path / "eval"
    written = write_evaluation(table_eval, out)
    # no pyplot state: the backend is unchanged and pyplot is neither loaded nor holds figures
    assert matplotlib.get_backend() == backend
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded
    if pyplot_loaded:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    assert [p.name for p in written] == list(EVALUATION_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(EVALUATION_FILES)  # no staging left

    doc = json.loads((out / "metrics.json").read_text("utf-8"))
    assert doc["n_patients"] == 3 and doc["n_vertebrae"] == 9
    assert doc["bootstrap"]["unit"] == "patient" and doc["bootstrap"]["n_resamples"] == 500
    assert doc["scopes"]["all"]["confusion"]["matrix"] == CONFUSION
    auc = doc["scopes"]["all"]["metrics"]["auroc_ge1"]
    assert auc["value"] == pytest.approx(0.9) and auc["ci_low"] <= 0.9 <= auc["ci_high"]
    assert doc["scopes"]["lumbar"]["metrics"]["auroc_ge1"]["value"] is None

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:6] == ["scope", "metric", "value", "ci_low", "ci_high", "n"]
    assert len(rows) == len(table_eval.scopes) * len(metric_names())
    acc = next(r for r in rows if r["scope"] == "all" and r["metric"] == "accuracy")
    assert float(acc["value"]) == pytest.approx(2 / 3, abs=1e-5) and acc["n"] == "9"
    sens = next(r for r in rows if r["scope"] == "lumbar" and r["metric"] == "sensitivity_ge1")
    assert sens["value"] == "" and sens["n"] == "0"

    with open(out / "confusion.csv", newline="") as fh:
        conf = [r for r in csv.DictReader(fh) if r["scope"] == "all"]
    assert [[int(r[f"predicted_{g}"]) for g in range(4)] for r in conf] == CONFUSION

    with open(out / "matches.csv", newline="") as fh:
        matches = list(csv.DictReader(fh))
    assert len(matches) == 9 and {r["status"] for r in matches} == {"evaluated"}

    png = (out / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    img = imread(out / "confusion.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique(np.round(rgb, 2), axis=0)) > 20  # a colour map, text, axes


def test_output_folder_refused_unless_force(tmp_path: Path, table_eval: Evaluation) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "other.txt").write_text("keep", "utf-8")
    with pytest.raises(OutputError, match="not empty"):
        write_evaluation(table_eval, out)
    assert sorted(p.name for p in out.iterdir()) == ["other.txt"]
    write_evaluation(table_eval, out, force=True)
    assert (out / "metrics.json").is_file() and (out / "other.txt").read_text() == "keep"
    afile = tmp_path / "file"
    afile.write_text("x", "utf-8")
    with pytest.raises(OutputError, match="is a file"):
        write_evaluation(table_eval, afile)


def test_terminal_tables(table_eval: Evaluation) -> None:
    console = Console(record=True, width=220)
    console.print(evaluation_table(table_eval))
    console.print(confusion_table(table_eval))
    text = console.export_text()
    assert "3 patients, 9 vertebrae" in text
    assert "thoracolumbar (n=6)" in text
    acc = table_eval.metric("accuracy")
    assert f"0.67 [{acc.ci_low:.2f}, {acc.ci_high:.2f}]" in text
    assert "bootstrap over patients, 500 resamples" in text
    # three patients: the caption says the intervals mean little, and why
    assert "Caution: only 3 patients" in text
    assert "500 resamples repeat only 10 distinct draws" in text


def test_caution_only_with_few_patients(table_eval: Evaluation) -> None:
    """C(2n-1, n) distinct resamples; a caution below 20 patients, none from 20 on, none
    without intervals; written to metrics.json."""
    assert table_eval.distinct_resamples == 10  # C(5, 3)
    assert table_eval.to_dict()["bootstrap"]["caution"] == table_eval.caution
    assert table_eval.caution is not None and "only 3 patients" in table_eval.caution
    big = evaluate(*_cohort(20), n_boot=200, seed=0)
    assert big.caution is None and big.distinct_resamples == math.comb(39, 20)
    assert evaluate(*_table_inputs(), n_boot=0).caution is None
    few = evaluate(*_cohort(12), n_boot=200, seed=0)
    assert few.caution is not None and "distinct" not in few.caution  # C(23, 12) > 200


# --- the real cases ------------------------------------------------------------------------------


def _folder(subject: str) -> str:
    """The folder of a VerSe subject in ../shared/data: its id without ``sub-``."""
    return subject.removeprefix("sub-")


@pytest.fixture(scope="module")
def real_subjects(data_dir: Path, expert_grades: dict[tuple[str, int], int]) -> list[str]:
    """Every subject of grades.csv whose folder is present, in the file's order."""
    subjects = list(dict.fromkeys(subject for subject, _ in expert_grades))
    present = [s for s in subjects if (data_dir / _folder(s)).is_dir()]
    if not present:
        pytest.skip(f"no subject of {data_dir / 'grades.csv'} has its folder in {data_dir}")
    return present


@pytest.fixture(scope="module")
def real_results(
    data_dir: Path, real_subjects: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("graded")
    results = {}
    for subject in real_subjects:
        result = grade_study(load_study(data_dir / _folder(subject)))
        write_result(result, root / "studies" / _folder(subject))
        results[subject] = result
    return {"root": root, "results": results}


@pytest.mark.realdata
def test_real_grades_file(data_dir: Path, expert_grades: dict[tuple[str, int], int]) -> None:
    """The reader takes every row of the real grades file; the by-subject view regroups them."""
    rows = read_grades(data_dir / "grades.csv")
    assert {(r.subject, r.label): r.grade for r in rows} == expert_grades
    assert len(rows) == len(expert_grades)
    assert [r.line for r in rows] == list(range(2, len(rows) + 2))
    by_subject = grades_by_subject(rows)
    assert list(by_subject) == list(dict.fromkeys(s for s, _ in expert_grades))
    for (subject, label), grade in expert_grades.items():
        assert by_subject[subject][label] == grade


def _stored_score(rhlv: dict[str, float | None] | None) -> float | None:
    """The score as the evaluation reads it from result.json: the largest regional RHLV, each
    rounded to 4 decimals as result.json stores it; None without any."""
    values = [(rhlv or {}).get(r) for r in ("anterior", "middle", "posterior")]
    finite = [round(float(v), 4) for v in values if v is not None and np.isfinite(v)]
    return max(finite) if finite else None


def _auroc(pos: list[float], neg: list[float]) -> float | None:
    """Mann-Whitney AUROC, ties one half; None without positives or negatives."""
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_cases_consistent_with_per_vertebra_grades(
    real_results: dict[str, Any], data_dir: Path, expert_grades: dict[tuple[str, int], int]
) -> None:
    """Every real case graded: the evaluation's matching, confusion matrices, counts and metrics
    follow from each vertebra's grade and the expert grades of grades.csv, by the rules of
    docs/evaluation.md."""
    root: Path = real_results["root"]
    results = real_results["results"]
    for subject, result in results.items():
        assert result.subject == subject
    preds = collect_predictions([root / "studies" / _folder(s) for s in results])
    assert set(collect_predictions([root])) == set(preds)  # the cohort layout: same files
    ev = evaluate(preds, read_grades(data_dir / "grades.csv"), n_boot=500, seed=0)

    # (subject, label, true grade, predicted grade, score) of every evaluated vertebra
    evaluated: list[tuple[str, int, int, int, float | None]] = []
    n_not_gradable = n_no_truth = 0
    for subject, result in results.items():
        for v in result.vertebrae:
            truth = expert_grades.get((subject, v.label))
            if truth is None:
                n_no_truth += 1
            elif v.grade is None:
                n_not_gradable += 1
            else:
                evaluated.append((subject, v.label, truth, v.grade, _stored_score(v.rhlv)))
    n_no_prediction = sum(
        1
        for (subject, label) in expert_grades
        if subject not in results or label not in {v.label for v in results[subject].vertebrae}
    )
    assert ev.counts["not_gradable"] == n_not_gradable
    assert ev.counts["prediction_without_truth"] == n_no_truth
    assert ev.counts["truth_without_prediction"] == n_no_prediction
    assert ev.counts["evaluated"] == ev.n_vertebrae == len(evaluated)
    assert ev.n_patients == len({e[0] for e in evaluated})
    assert ev.subjects_without_truth == ()
    assert ev.subjects_without_predictions == tuple(
        sorted({s for s, _ in expert_grades} - set(results))
    )
    # ranked by the largest RHLV, or by the grade where some evaluated vertebra has none
    by_rhlv = all(e[4] is not None for e in evaluated)
    assert ev.score_source == ("rhlv_max" if by_rhlv else "grade")

    scopes = {"all": evaluated}
    for name in SPINAL_REGIONS:
        inside = [e for e in evaluated if spinal_region_of(e[1]) == name]
        if inside:
            scopes[name] = inside
    assert [s.name for s in ev.scopes] == list(scopes)
    for name, vertebrae in scopes.items():
        scope = ev.scope(name)
        expected = np.zeros((4, 4), dtype=int)
        for _, _, t, p, _ in vertebrae:
            expected[t, p] += 1
        assert np.array_equal(np.array(scope.confusion), expected), name
        assert scope.n_vertebrae == len(vertebrae)
        assert scope.n_patients == len({e[0] for e in vertebrae})
        assert scope.metric("accuracy").value == pytest.approx(np.trace(expected) / len(vertebrae))
        positives = expected[1:].sum()
        sens = scope.metric("sensitivity_ge1").value
        if positives:
            assert sens == pytest.approx(expected[1:, 1:].sum() / positives)
        else:
            assert sens is None
        scores = [(e[4] if by_rhlv else float(e[3]), e[2]) for e in vertebrae]
        auroc = _auroc([s for s, t in scores if t >= 1], [s for s, t in scores if t == 0])
        if auroc is None:
            assert scope.metric("auroc_ge1").value is None
        else:
            assert scope.metric("auroc_ge1").value == pytest.approx(auroc)
        for m in scope.metrics:
            if m.value is not None and m.ci_low is not None and m.ci_high is not None:
                assert m.ci_low - 1e-12 <= m.value <= m.ci_high + 1e-12, (name, m)

    written = write_evaluation(ev, root / "eval")
    assert {p.name for p in written} == set(EVALUATION_FILES)
    doc = json.loads((root / "eval" / "metrics.json").read_text("utf-8"))
    assert doc["n_patients"] == ev.n_patients
    assert doc["scopes"]["all"]["confusion"]["matrix"] == [
        list(r) for r in ev.scope("all").confusion
    ]
    assert doc["sources"]["grades"] == [str(data_dir / "grades.csv")]
    assert len(doc["sources"]["results"]) == len(results)
