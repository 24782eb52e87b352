"""The SVM grader: features, leak control, training with grouped cross-validation, files.

Feature files are written here directly (their format is the one
``vertgrade.synthesis.grader.write_synthesis_features`` writes; ``tests/test_synthesis.py``
checks that writer on a study graded with a trained generator), so these tests need no PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vertgrade.errors import InputError, ModelFileError, OutputError
from vertgrade.morphometry import RegionHeights
from vertgrade.synthesis.grader import (
    FEATURES_FILE,
    evaluate_grader,
    feature_names,
    fit_grader,
    load_grader,
    save_grader,
    synthesis_features,
    train_grader,
)

NAMES = feature_names(["sagittal", "coronal"])
#: typical RHLV of each grade's worst third (Genant: < 20 %, 20-25, 25-40, > 40 %)
CENTRES = {0: 0.03, 1: 0.225, 2: 0.32, 3: 0.5}


def _features(grade: int, rng: np.random.Generator) -> dict[str, float]:
    loss = CENTRES[grade] + rng.normal(0, 0.02)
    return {n: float(loss * (1.0 if "anterior" in n else 0.6) + rng.normal(0, 0.01)) for n in NAMES}


def _write_study(
    folder: Path,
    subject: str,
    grades: dict[int, int],
    rng: np.random.Generator,
    *,
    trained_on: list[str],
) -> None:
    folder.mkdir(parents=True)
    doc = {
        "format": 1,
        "subject": subject,
        "model": {"model": "synthesis-test-0123456789ab", "trained_subjects": trained_on},
        "passes": ["sagittal", "coronal"],
        "vertebrae": [
            {
                "label": lab,
                "level": str(lab),
                "status": "graded",
                "threshold_grade": g,
                "features": _features(g, rng),
                "reference_passes_mm": {},
            }
            for lab, g in grades.items()
        ],
    }
    (folder / FEATURES_FILE).write_text(json.dumps(doc))


@pytest.fixture()
def cohort(tmp_path: Path) -> tuple[list[Path], dict[str, dict[int, int]]]:
    """12 subjects, 7 vertebrae each, grades of every kind; features from 'another fold'."""
    rng = np.random.default_rng(1)
    dirs, table = [], {}
    for i in range(12):
        subject = f"sub-{i:02d}"
        grades = {17 + k: 0 for k in range(7)}
        grades[18] = i % 4
        grades[21] = (i + 2) % 4
        table[subject] = grades
        d = tmp_path / subject
        _write_study(d, subject, grades, rng, trained_on=[f"other-{i}"])
        dirs.append(d)
    return dirs, table


def test_feature_names_three_per_pass() -> None:
    assert len(NAMES) == 6
    assert NAMES[:3] == [
        "rhlv_sagittal_anterior",
        "rhlv_sagittal_middle",
        "rhlv_sagittal_posterior",
    ]


def test_features_are_rhlv_against_each_pass() -> None:
    from types import SimpleNamespace

    v = SimpleNamespace(
        label=20,
        heights_mm=RegionHeights(20.0, 15.0, 18.0, 24.0),
        reference_parts={"sagittal": RegionHeights(25.0, 25.0, 24.0, 24.0)},
    )
    # a vertebra without per-pass references (graded with the neighbours) has no features
    other = SimpleNamespace(label=21, heights_mm=v.heights_mm, reference_parts={})
    result = SimpleNamespace(vertebrae=(v, other))
    f = synthesis_features(result)  # type: ignore[arg-type]
    assert set(f) == {20}
    assert f[20]["rhlv_sagittal_anterior"] == pytest.approx(0.4)
    assert f[20]["rhlv_sagittal_middle"] == pytest.approx(0.25)
    assert f[20]["rhlv_sagittal_posterior"] == pytest.approx(0.0)


def test_train_save_load_and_evaluate(cohort, tmp_path: Path) -> None:
    dirs, table = cohort
    out = tmp_path / "grader.json"
    grader = train_grader(dirs[:9], table, out)
    s = grader.summary
    assert s["n_subjects"] == 9 and list(s["features"]) == NAMES
    expected = np.bincount([g for d in dirs[:9] for g in table[d.name].values()], minlength=4)
    assert s["class_counts"] == {str(g): int(n) for g, n in enumerate(expected)}
    assert s["cv_macro_f1"] is not None and s["cv_macro_f1"] > 0.8
    loaded = load_grader(out)
    assert loaded.features == tuple(NAMES) and loaded.classes == (0, 1, 2, 3)
    rng = np.random.default_rng(5)
    feats = {k: _features(g, rng) for k, g in enumerate([0, 1, 2, 3, 3, 0])}
    feats[99] = {**_features(0, rng), NAMES[0]: None}  # type: ignore[dict-item]
    preds = loaded.predict_features(feats)
    assert 99 not in preds  # incomplete features: left to the threshold grade
    for k, g in enumerate([0, 1, 2, 3, 3, 0]):
        p = preds[k]
        assert p.grade == g
        assert p.probability == pytest.approx(p.probabilities[p.grade])
        assert abs(sum(p.probabilities.values()) - 1.0) < 1e-6
    ev = evaluate_grader(out, dirs[9:], table)
    assert ev["n_subjects"] == 3 and ev["macro_f1"] > 0.6
    assert sum(map(sum, ev["confusion"])) == ev["n_vertebrae"] == 21
    # an independent tally of the same predictions gives the same macro-F1
    truth, pred = [], []
    for d in dirs[9:]:
        doc = json.loads((d / FEATURES_FILE).read_text())
        feats = {v["label"]: v["features"] for v in doc["vertebrae"]}
        for lab, p in loaded.predict_features(feats).items():
            truth.append(table[d.name][lab])
            pred.append(p.grade)
    f1 = []
    pairs = list(zip(truth, pred, strict=True))
    for g in range(4):
        tp = sum(t == g and q == g for t, q in pairs)
        fp = sum(t != g and q == g for t, q in pairs)
        fn = sum(t == g and q != g for t, q in pairs)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert ev["macro_f1"] == pytest.approx(np.mean(f1))
    assert "threshold" in ev
    with pytest.raises(OutputError, match="exists"):
        train_grader(dirs[:9], table, out)


def test_features_of_subjects_the_generator_saw_are_refused(cohort, tmp_path: Path) -> None:
    dirs, table = cohort
    rng = np.random.default_rng(2)
    leaky = tmp_path / "leaky"
    _write_study(leaky, "sub-leak", {20: 0, 21: 3}, rng, trained_on=["sub-leak", "sub-x"])
    with pytest.raises(InputError, match="cross-fitting"):
        train_grader([*dirs, leaky], table | {"sub-leak": {20: 0, 21: 3}}, tmp_path / "g.json")
    with pytest.raises(InputError, match="grade this study with --reference synthesis"):
        train_grader([tmp_path], table, tmp_path / "g.json")


def test_too_few_vertebrae_per_grade(tmp_path: Path) -> None:
    x = np.zeros((5, 6))
    with pytest.raises(InputError, match="fewer than 3"):
        fit_grader(x, np.array([0, 0, 0, 1, 1]), ["a"] * 5, NAMES)
    with pytest.raises(InputError, match="at least two grades"):
        fit_grader(x, np.zeros(5, int), ["a"] * 5, NAMES)


def _small_grader():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], 5)
    x = np.array([list(_features(int(g), rng).values()) for g in y])
    return fit_grader(x, y, [f"s{i % 5}" for i in range(y.size)], NAMES), x, y


def test_grader_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_grader(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not JSON"):
        load_grader(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"something": 1}))
    with pytest.raises(ModelFileError, match="not a vertgrade grader"):
        load_grader(other)
    g, _, _ = _small_grader()
    path = save_grader(g, tmp_path / "ok.json")
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 2 and set(doc) >= {"grade_model", "probability_model"}
    (tmp_path / "old.json").write_text(json.dumps({**doc, "vertgrade": "9.9.0"}))
    with pytest.raises(ModelFileError, match=r"vertgrade 9\.9\.0"):
        load_grader(tmp_path / "old.json")
    (tmp_path / "v1.json").write_text(json.dumps({**doc, "format_version": 1}))
    with pytest.raises(ModelFileError, match="format 1 is not supported"):
        load_grader(tmp_path / "v1.json")
    # missing keys, wrong shapes, a model that does not match its features: one clear error
    broken = {k: v for k, v in doc.items() if k != "probability_model"}
    (tmp_path / "nokey.json").write_text(json.dumps(broken))
    with pytest.raises(ModelFileError, match="damaged grader file: probability_model"):
        load_grader(tmp_path / "nokey.json")
    shapes = json.loads(json.dumps(doc))
    shapes["grade_model"]["coef"] = shapes["grade_model"]["coef"][:2]
    (tmp_path / "shape.json").write_text(json.dumps(shapes))
    with pytest.raises(ModelFileError, match="damaged grader file: inconsistent shapes"):
        load_grader(tmp_path / "shape.json")
    (tmp_path / "feat.json").write_text(json.dumps({**doc, "features": doc["features"][:3]}))
    with pytest.raises(ModelFileError, match="do not match its model"):
        load_grader(tmp_path / "feat.json")


class _Marker:
    """Unpickling this writes a file: the proof that loading ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (Path(self.path), "code ran"))


@pytest.mark.parametrize("compress", [0, 3])
def test_a_pickle_grader_is_refused_unread(tmp_path: Path, compress: int) -> None:
    """A joblib / pickle grader whose unpickling would write a marker file: refused with the
    reason, before anything is loaded, bare or inside a grader-looking dict; no marker."""
    import joblib

    marker = tmp_path / "marker.txt"
    g, _, _ = _small_grader()
    doc = json.loads(save_grader(g, tmp_path / "ok.json").read_text())
    for name, payload in (
        ("bare", _Marker(str(marker))),
        ("hidden", {**doc, "model": _Marker(str(marker))}),
    ):
        path = tmp_path / f"{name}-{compress}.joblib"
        joblib.dump(payload, path, compress=compress)
        with pytest.raises(ModelFileError, match="refused unread: a pickle can run code"):
            load_grader(path)
        assert not marker.exists()


def test_grader_arrays_match_scikit_learn() -> None:
    """The grader's numpy inference (from the stored arrays) gives scikit-learn's grades and
    probabilities, with 2, 3 and 4 classes."""
    from vertgrade.synthesis.grader import SVMGrader

    rng = np.random.default_rng(3)
    for n in (2, 3, 4):
        y = np.repeat(np.arange(n), 12)
        x = rng.normal(size=(y.size, 6)) + 0.8 * y[:, None] * rng.normal(size=6)
        fitted = SVMGrader(0).fit(x, y)
        arrays = fitted.to_arrays()
        probe = np.vstack([x, rng.normal(size=(40, 6)) * 2.0])
        assert np.array_equal(arrays.predict(probe), fitted.predict(probe))
        assert np.allclose(arrays.predict_proba(probe), fitted.predict_proba(probe), atol=1e-9)
        assert list(arrays.classes_) == list(range(n))


def test_train_grader_command(cohort, tmp_path: Path) -> None:
    """``vertgrade train-grader`` on feature folders with a grades CSV writes a loadable grader."""
    from typer.testing import CliRunner

    from vertgrade.cli import app

    dirs, table = cohort
    grades = tmp_path / "grades.csv"
    grades.write_text(
        "subject,label,grade\n"
        + "".join(f"{s},{lab},{g}\n" for s, gs in table.items() for lab, g in gs.items())
    )
    out = tmp_path / "g.json"
    res = CliRunner().invoke(
        app, ["train-grader", *map(str, dirs), "--grades", str(grades), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    g = load_grader(out)
    assert g.summary["n_subjects"] == 12 and g.summary["cv_macro_f1"] > 0.8
    again = CliRunner().invoke(
        app, ["train-grader", *map(str, dirs), "--grades", str(grades), "-o", str(out)]
    )
    assert again.exit_code == 3 and "g.json" in again.stderr
