"""The Python API's protocols on a real graded phantom: a SpineResult as a collection of its
vertebrae, short reprs, one name for the type, one shape for heights and RHLV, the confidence
rounded once, the writer at the top level, DataFrames, and the optional extras' errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest

import vertgrade
from vertgrade import RegionValues, SpineResult, VertebraResult, grade_study
from vertgrade.errors import SetupError
from vertgrade.io.load import study_from_arrays
from vertgrade.morphometry import RegionHeights
from vertgrade.phantom import FractureSpec, make_phantom
from vertgrade.result import CONFIDENCE_DECIMALS, CSV_COLUMNS

LEVELS = ["T11", "T12", "L1", "L2", "L3"]
REGIONS = ["body", "anterior", "middle", "posterior"]


@pytest.fixture(scope="module")
def result() -> SpineResult:
    """Five vertebrae, L1 with a 35 % anterior wedge (a moderate fracture)."""
    ph = make_phantom("T11-L3", [FractureSpec.parse("L1:wedge:0.35")], seed=0)
    return grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))


# -- a collection of vertebrae ------------------------------------------------------------


def test_iterates_vertebrae_in_spine_order(result: SpineResult) -> None:
    assert len(result) == len(LEVELS)
    assert [v.level for v in result] == LEVELS
    assert list(result) == list(result.vertebrae)
    assert all(isinstance(v, VertebraResult) for v in result)


def test_index_by_label_and_by_level_name(result: SpineResult) -> None:
    l1 = result[20]
    assert l1.level == "L1" and l1.label == 20
    assert result["L1"] is l1 and result["l1"] is l1 and result[np.int64(20)] is l1
    assert result["t12"].label == 19
    assert "L1" in result and "l2" in result and 22 in result and l1 in result
    assert "L5" not in result and 24 not in result and "X1" not in result and 2.5 not in result


@pytest.mark.parametrize("key", [24, "L5", "l5", "X1"])
def test_missing_vertebra_names_what_is_there(result: SpineResult, key: int | str) -> None:
    with pytest.raises(KeyError) as err:
        result[key]
    text = str(err.value)
    assert repr(key) in text
    assert "T11 (18), T12 (19), L1 (20), L2 (21), L3 (22)" in text


@pytest.mark.parametrize("key", [1.0, True, slice(0, 2), None])
def test_index_of_another_type_is_a_type_error(result: SpineResult, key: object) -> None:
    with pytest.raises(TypeError, match=r"label id .* or level name"):
        result[key]  # type: ignore[index]


# -- short reprs ---------------------------------------------------------------------------


def test_repr_is_a_short_summary(result: SpineResult) -> None:
    text = repr(result)
    assert len(text) < 200
    assert "array" not in text
    assert text == (
        f"SpineResult({result.subject!r}, 5 vertebrae T11-L3, 5 graded, 0 not gradable, "
        "fractured: L1 grade 2 wedge)"
    )


def test_vertebra_repr(result: SpineResult) -> None:
    l1 = result["L1"]
    assert l1.confidence is not None and l1.rhlv is not None
    text = repr(l1)
    assert text.startswith("VertebraResult(L1, label 20, grade 2 wedge, confidence ")
    assert f"confidence {round(l1.confidence, 2):.2f}" in text
    assert f"rhlv a/m/p {l1.rhlv.anterior:.2f}/" in text
    assert len(text) < 120
    for v in result:
        assert len(repr(v)) < 120 and "array" not in repr(v)
    ng = replace(l1, status="not_gradable", grade=None, type=None, reason="x" * 200)
    assert repr(ng).startswith("VertebraResult(L1, label 20, not gradable: xxx")
    assert len(repr(ng)) < 120


def test_summary_is_a_property(result: SpineResult) -> None:
    s = result.summary
    assert s == {
        "n_vertebrae": 5,
        "n_graded": 5,
        "n_not_gradable": 0,
        "fractured_levels": ["L1"],
        "worst_grade": 2,
    }
    assert result.to_dict()["summary"] == s
    with pytest.raises(TypeError):  # a dict: no longer called
        result.summary()  # type: ignore[operator]


# -- one name for the type -----------------------------------------------------------------


def test_type_is_one_name_in_python_json_and_csv(result: SpineResult) -> None:
    l1 = result["L1"]
    assert l1.type == "wedge"
    assert l1.fracture_type == l1.type  # the former name, read-only
    with pytest.raises(FrozenInstanceError):
        l1.fracture_type = "crush"  # type: ignore[misc]
    assert l1.to_dict()["type"] == l1.to_record()["type"] == "wedge"
    assert "type" in CSV_COLUMNS and "fracture_type" not in CSV_COLUMNS
    assert result["L2"].type is None and result["L2"].to_dict()["type"] is None


# -- heights and RHLV of one shape ---------------------------------------------------------


def test_heights_and_rhlv_have_one_shape(result: SpineResult) -> None:
    l1 = result["L1"]
    per_region = [l1.rhlv, l1.heights_mm, l1.heights_mask_mm, l1.heights_ct_mm, l1.reference_mm]
    for values in per_region:
        assert isinstance(values, RegionValues)
        assert list(values) == REGIONS and len(values) == 4
        for k in REGIONS:
            assert values[k] == getattr(values, k) == values.get(k) == values.as_dict()[k]
        assert dict(values) == values.as_dict()
    assert l1.rhlv is not None and l1.heights_mm is not None and l1.reference_mm is not None
    ref, measured = l1.reference_mm["anterior"], l1.heights_mm["anterior"]
    assert ref is not None and measured is not None
    assert l1.rhlv.anterior == pytest.approx((ref - measured) / ref)
    assert l1.rhlv.anterior == pytest.approx(0.35, abs=0.03)
    with pytest.raises(KeyError, match="body, anterior, middle, posterior"):
        l1.rhlv["front"]
    # the JSON keeps its shape: an object of the four regions
    doc = l1.to_dict()
    assert list(doc["rhlv"]) == REGIONS and list(doc["heights_mm"]) == REGIONS


def test_region_values_from_region_heights_or_dicts(result: SpineResult) -> None:
    l1 = result["L1"]
    h = RegionHeights(body=20.0, anterior=15.0, middle=18.0, posterior=24.0)
    loss = {"body": 0.1, "anterior": 0.3, "middle": 0.2, "posterior": 0.0}
    v = replace(l1, heights_mm=h, rhlv=loss)  # type: ignore[arg-type]
    assert isinstance(v.heights_mm, RegionValues) and isinstance(v.rhlv, RegionValues)
    assert v.heights_mm == h and v.rhlv == loss
    assert v.heights_mm.anterior == 15.0 and v.rhlv["anterior"] == 0.3
    assert v.to_record()["rhlv_anterior"] == 0.3
    assert RegionValues.of(None) is None
    assert RegionValues.of({"anterior": 1.0}) == RegionValues(None, 1.0, None, None)


# -- the confidence, rounded once ----------------------------------------------------------


def test_confidence_rounded_to_two_decimals(result: SpineResult, tmp_path: Path) -> None:
    assert CONFIDENCE_DECIMALS == 2
    for v in result:
        assert v.confidence is not None
        want = round(v.confidence, 2)
        assert v.to_dict()["confidence"] == want
        assert v.to_record()["confidence"] == want
    vertgrade.write_result(result, tmp_path / "out")
    with open(tmp_path / "out" / "vertebrae.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row, v in zip(rows, result, strict=True):
        assert v.confidence is not None
        assert row["confidence"] == str(round(v.confidence, 2))
        assert len(row["confidence"].split(".")[-1]) <= 2


# -- writing, records and frames -----------------------------------------------------------


def test_write_result_at_the_top_level(result: SpineResult, tmp_path: Path) -> None:
    from vertgrade.report.files import OUTPUT_FILES
    from vertgrade.report.files import write_result as files_write_result

    assert vertgrade.write_result is files_write_result
    assert "write_result" in vertgrade.__all__
    written = vertgrade.write_result(result, tmp_path / "out")
    assert [p.name for p in written] == list(OUTPUT_FILES)
    doc = json.loads((tmp_path / "out" / "result.json").read_text("utf-8"))
    assert doc["summary"] == result.summary
    assert [v["level"] for v in doc["vertebrae"]] == LEVELS
    with pytest.raises(vertgrade.OutputError):
        vertgrade.write_result(result, tmp_path / "out")  # exists: needs force
    vertgrade.write_result(result, tmp_path / "out", force=True)


def test_records_and_frame(result: SpineResult) -> None:
    pd = pytest.importorskip("pandas")
    records = result.to_records()
    assert [list(r) for r in records] == [list(CSV_COLUMNS)] * len(result)
    frame = pd.DataFrame(records)
    assert list(frame["level"]) == LEVELS
    pd.testing.assert_frame_equal(result.to_frame(), frame)
    assert list(result.to_frame().columns) == list(CSV_COLUMNS)


def test_frame_without_pandas_says_what_to_install(
    result: SpineResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"pip install pandas .*vertgrade\[cohort\]"):
        result.to_frame()
    assert result.to_records()  # the records need nothing


# -- the extras ----------------------------------------------------------------------------


def test_training_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from vertgrade.synthesis.grader import fit_grader, train_grader

    monkeypatch.setitem(sys.modules, "sklearn", None)
    x, y = np.zeros((6, 3)), np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(SetupError, match=r"scikit-learn.*pip install 'vertgrade\[grader\]'"):
        fit_grader(x, y, ["a"] * 6, ["f1", "f2", "f3"])
    with pytest.raises(SetupError, match=r"vertgrade train-grader"):
        train_grader([], {}, "grader.json")


def test_import_and_body_isolation_need_neither_scikit() -> None:
    """The core imports neither scikit-learn nor scikit-image, the body isolation included."""
    code = (
        "import sys, vertgrade, vertgrade.geometry.body, vertgrade.synthesis.grader; "
        "print(sorted(m for m in ('sklearn', 'skimage') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
