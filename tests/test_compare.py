"""Follow-up comparison (vertgrade.compare): incident and worsening fractures between two scans.

Literal vertebrae test the rules (both definitions, the tolerance, the statuses); phantom pairs
whose truth is known test the whole path: the same spine with one fracture progressing (L1
wedge 0.22 -> 0.35), one new (L3 crush 0.30) and two healthy vertebrae, the second scan in
another orientation and spacing; a labels-only pair; and mix-ups (another spine's size, another
spine's proportions) that must be refused unless forced.
"""

from __future__ import annotations

import copy
import csv
import datetime
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from vertgrade.cli import app
from vertgrade.compare import (
    CSV_COLUMNS,
    CompareConfig,
    Scan,
    check_identity,
    compare_scans,
    compare_studies,
    compare_vertebra,
    load_schema,
    parse_study_date,
    read_scan,
    scan_from_document,
    validate_comparison,
    write_comparison,
)
from vertgrade.errors import InputError, OutputError
from vertgrade.phantom import make_phantom, write_phantom
from vertgrade.workflow import StudyInputs, grade_to_folder

runner = CliRunner()

LEVELS = "T12-L3"
SPACING = 1.5
#: One fracture progressing, one new, two healthy vertebrae (T12, L2).
PRIOR_FRACTURES = ["L1:wedge:0.22"]
CURRENT_FRACTURES = ["L1:wedge:0.35", "L3:crush:0.30"]


# --- literal vertebrae ---------------------------------------------------------------------------


def vertebra(
    heights: tuple[float, float, float],
    grade: int,
    *,
    rhlv: float = 0.0,
    confidence: float = 0.9,
    sources: tuple[str, ...] = ("T12", "L2"),
    status: str = "graded",
    type_: str | None = None,
) -> dict[str, Any]:
    """A result.json vertebra with what the comparison reads."""
    a, m, p = heights
    return {
        "label": 20,
        "level": "L1",
        "status": status,
        "reason": None if status == "graded" else "cut by the field of view",
        "grade": grade if status == "graded" else None,
        "type": type_,
        "confidence": confidence,
        "rhlv": {"body": rhlv, "anterior": rhlv, "middle": rhlv / 2, "posterior": 0.0},
        "heights_mm": {"body": m, "anterior": a, "middle": m, "posterior": p},
        "heights_source": "ct",
        "reference": {"uncertainty": 0.035, "sources": list(sources)},
        "flags": [],
    }


HEALTHY = vertebra((25.0, 24.0, 25.0), 0, rhlv=0.02)


def change(prior: Any, current: Any, u: float = 0.5, **kw: Any) -> Any:
    return compare_vertebra(prior, current, label=20, u_prior_mm=u, u_current_mm=u, **kw)


def test_tolerance_is_the_two_uncertainties_in_quadrature() -> None:
    c = change(HEALTHY, HEALTHY, u=0.5)
    assert c.change_uncertainty_mm == pytest.approx(math.hypot(0.5, 0.5))
    assert c.height_tolerance_mm == pytest.approx(1.96 * math.hypot(0.5, 0.5))
    assert c.status == "stable" and c.basis == ()
    assert c.confidence == pytest.approx(0.975, abs=1e-3)  # no change: Phi(1.96)


def test_semi_quantitative_incident() -> None:
    # grade 0 -> 1 with a 3.5 mm (14 %) anterior loss: the grade alone (QM needs 20 % and 4 mm)
    now = vertebra((21.5, 22.0, 24.8), 1, rhlv=0.21, type_="wedge", confidence=0.7)
    c = change(HEALTHY, now)
    assert (c.status, c.basis) == ("incident", ("semi_quantitative",))
    assert c.largest_loss_region == "anterior"
    assert c.largest_loss_mm == pytest.approx(3.5)
    assert c.change_mm["anterior"] == pytest.approx(-3.5)
    assert c.change_percent["anterior"] == pytest.approx(-14.0)
    # the real loss is certain (3.5 mm, u = 0.71 mm): the confidence is the current grade's
    assert c.confidence == pytest.approx(0.7, abs=1e-3)
    # 6 mm (24 %): both definitions
    both = change(HEALTHY, vertebra((19.0, 21.0, 24.8), 1, rhlv=0.22, type_="wedge"))
    assert both.basis == ("semi_quantitative", "quantitative")


def test_quantitative_needs_20_percent_and_4_mm() -> None:
    # 20 mm -> 16 mm: 4 mm and 20 % exactly: met (grade unchanged: quantitative alone)
    base = vertebra((20.0, 20.0, 20.0), 0, rhlv=0.0)
    met = change(base, vertebra((16.0, 20.0, 20.0), 0, rhlv=0.0))
    assert (met.status, met.basis) == ("incident", ("quantitative",))
    assert any("without a rise of the grade" in n for n in met.notes)
    # 3.9 mm (19.5 %): not met
    assert change(base, vertebra((16.1, 20.0, 20.0), 0)).status == "stable"
    # 30 mm -> 25.5 mm: 4.5 mm but 15 %: not met
    tall = vertebra((30.0, 30.0, 30.0), 0)
    assert change(tall, vertebra((25.5, 30.0, 30.0), 0)).status == "stable"


def test_grade_rise_within_the_tolerance_is_stable() -> None:
    """A loss near the threshold that tips the grade, with heights within the measurement's
    uncertainty, is never a new fracture."""
    before = vertebra((20.0, 21.0, 25.0), 0, rhlv=0.19)
    after = vertebra((19.6, 21.0, 25.0), 1, rhlv=0.205, type_="wedge")
    c = change(before, after)
    assert c.status == "stable"
    assert any("within the measurement's uncertainty" in n for n in c.notes)
    # the same heights but a larger uncertainty per scan: still stable, wider tolerance
    assert change(before, after, u=1.0).height_tolerance_mm == pytest.approx(1.96 * math.sqrt(2))


def test_grade_rise_with_rhlv_within_its_tolerance_is_stable() -> None:
    """Heights fell (beyond T) but the RHLV barely moved: the reference fell with them."""
    before = vertebra((22.0, 22.0, 24.0), 0, rhlv=0.19)
    after = vertebra((20.0, 20.5, 22.5), 1, rhlv=0.20, type_="wedge")
    c = change(before, after)
    assert c.status == "stable"
    assert any("RHLV rose by less than its tolerance" in n for n in c.notes)


def test_worsening_and_improved() -> None:
    mild = vertebra((19.0, 21.0, 24.8), 1, rhlv=0.22, type_="wedge")
    moderate = vertebra((16.0, 19.0, 24.5), 2, rhlv=0.34, type_="wedge")
    c = change(mild, moderate)
    assert c.status == "worsening" and "semi_quantitative" in c.basis
    back = change(moderate, mild)  # after a vertebral augmentation, say
    assert back.status == "improved"
    assert 0.0 < back.confidence <= 1.0


def test_not_comparable() -> None:
    assert change(None, HEALTHY).reason == "only in the current scan"
    assert change(HEALTHY, None).status == "not_comparable"
    cut = vertebra((25.0, 24.0, 25.0), 0, status="not_gradable")
    c = change(HEALTHY, cut)
    assert c.status == "not_comparable" and c.confidence is None
    assert "not gradable in the current scan" in (c.reason or "")
    with pytest.raises(ValueError, match="neither"):
        change(None, None)


def test_per_year_changes() -> None:
    now = vertebra((19.0, 21.0, 24.8), 1, rhlv=0.22, type_="wedge")
    c = change(HEALTHY, now, years=2.0)
    assert c.change_mm_per_year is not None and c.change_percent_per_year is not None
    assert c.change_mm_per_year["anterior"] == pytest.approx(-3.0)
    assert c.change_percent_per_year["anterior"] == pytest.approx(-12.0)
    assert change(HEALTHY, now).change_mm_per_year is None
    assert change(HEALTHY, now, years=0.0).change_mm_per_year is None


def test_confidence_lies_in_0_1() -> None:
    for before, after in [
        (HEALTHY, vertebra((17.0, 20.0, 24.0), 2, rhlv=0.3, type_="wedge")),
        (HEALTHY, vertebra((24.0, 23.5, 24.5), 0, rhlv=0.02)),
        (vertebra((20.0, 20.0, 20.0), 0), vertebra((15.0, 20.0, 20.0), 0)),
    ]:
        c = change(before, after)
        assert c.confidence is not None and 0.0 <= c.confidence <= 1.0


# --- dates and identifiers -----------------------------------------------------------------------


def minimal_document(**provenance: Any) -> dict[str, Any]:
    return {
        "subject": "s1",
        "vertebrae": [HEALTHY],
        "notes": [],
        "provenance": {"inputs": {}, "parameters": {}, **provenance},
    }


def test_parse_study_date() -> None:
    assert parse_study_date("20230517") == datetime.date(2023, 5, 17)
    assert parse_study_date(" 2023-05-17 ") == datetime.date(2023, 5, 17)
    assert parse_study_date(None) is None
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_study_date("17/05/2023")


def test_dates_and_ids_from_provenance_notes_or_given() -> None:
    doc = minimal_document(dicom={"StudyDate": "20200102", "PatientID": "P-1"})
    s = scan_from_document(doc)
    assert (s.study_date, s.date_source) == (datetime.date(2020, 1, 2), "provenance")
    assert (s.patient_id, s.patient_id_source) == ("P-1", "provenance")
    noted = {**minimal_document(), "notes": ["DICOM StudyDate: 2021-06-30, PatientID: X9"]}
    s = scan_from_document(noted)
    assert (s.study_date, s.patient_id) == (datetime.date(2021, 6, 30), "X9")
    given = scan_from_document(doc, study_date=datetime.date(2020, 1, 3))
    assert given.study_date == datetime.date(2020, 1, 3) and given.date_source == "given"
    assert any("replaces the one recorded" in n for n in given.notes)
    none = scan_from_document(minimal_document())
    assert none.study_date is None and none.patient_id is None
    assert "patient_id" not in none.info() and none.info()["patient_id_recorded"] is False
    with pytest.raises(InputError, match="not a date"):
        scan_from_document(minimal_document(study_date="yesterday"))


def test_date_and_id_of_the_dicom_series_graded() -> None:
    series = SimpleNamespace(study_date="20190405", patient_id="PID-7 ")
    s = scan_from_document(minimal_document(), series=series)  # type: ignore[arg-type]
    assert (s.study_date, s.date_source) == (datetime.date(2019, 4, 5), "dicom series")
    assert (s.patient_id, s.patient_id_source) == ("PID-7", "dicom series")


def test_height_uncertainty_from_voxel_size() -> None:
    s = Scan(minimal_document(), None, None, voxel_mm=(1.0, 1.0, 3.0))
    assert s.height_uncertainty_mm() == pytest.approx(0.75)
    assert (
        Scan(minimal_document(), None, None, voxel_mm=(1.5, 1.5, 1.5)).height_uncertainty_mm()
        == 0.5
    )
    assert (
        Scan(minimal_document(), None, None, grading_uncertainty_mm=0.8).height_uncertainty_mm()
        == 0.8
    )


def test_patient_id_mismatch_and_match() -> None:
    a = scan_from_document(minimal_document(patient_id="A"))
    b = scan_from_document(minimal_document(patient_id="B"))
    bad = check_identity(a, b)
    assert (bad.status, bad.patient_id) == ("mismatch", "mismatch")
    assert all("A" not in r.split() for r in bad.reasons)  # the IDs stay out of the outputs
    good = check_identity(a, scan_from_document(minimal_document(patient_id=" A ")))
    assert (good.status, good.patient_id, good.anatomy) == ("consistent", "match", "not_checked")
    unknown = check_identity(a, scan_from_document(minimal_document()))
    assert unknown.status == "unverified"


def test_current_before_prior_is_refused() -> None:
    a = scan_from_document(minimal_document(), study_date=datetime.date(2022, 1, 1))
    b = scan_from_document(minimal_document(), study_date=datetime.date(2021, 1, 1))
    with pytest.raises(ValueError, match="swap PRIOR and CURRENT"):
        compare_scans(a, b)
    c = compare_scans(b, a)
    assert c.interval_days == 365 and c.interval_years == pytest.approx(365 / 365.25)


def test_schema_is_valid_and_strict() -> None:
    schema = load_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    a = scan_from_document(minimal_document())
    doc = compare_scans(a, a).to_dict()
    validate_comparison(doc)
    broken = copy.deepcopy(doc)
    broken["vertebrae"][0]["status"] = "new"
    with pytest.raises(jsonschema.ValidationError):
        validate_comparison(broken)
    assert compare_scans(a, a).to_records()[0].keys() == set(CSV_COLUMNS)


def test_vertebrae_in_one_scan_only_are_listed(tmp_path: Path) -> None:
    l2 = {**vertebra((26.0, 25.0, 26.0), 0), "label": 21, "level": "L2"}
    a = scan_from_document({**minimal_document(), "vertebrae": [HEALTHY]})
    b = scan_from_document({**minimal_document(), "vertebrae": [l2]})
    c = compare_scans(a, b)
    assert (c.summary["only_in_prior"], c.summary["only_in_current"]) == (["L1"], ["L2"])
    assert [v.status for v in c.vertebrae] == ["not_comparable", "not_comparable"]
    files = write_comparison(c, tmp_path / "out")  # the page without a panel to draw
    assert [f.name for f in files] == ["comparison.json", "comparison.csv", "comparison.html"]
    doc = json.loads(files[0].read_text())
    assert doc["vertebrae"][0]["reason"] == "only in the prior scan"
    assert doc["vertebrae"][1]["prior"] is None


# --- phantom pairs -------------------------------------------------------------------------------


def phantom_study(
    folder: Path,
    fractures: list[str],
    *,
    orientation: str = "RAS",
    spacing: float | tuple[float, float, float] = SPACING,
    seed: int = 0,
    scale: float = 1.0,
    jitter: float = 0.005,
    labels_only: bool = False,
) -> tuple[StudyInputs, Any]:
    ph = make_phantom(
        LEVELS,
        fractures,
        orientation=orientation,
        spacing=spacing,
        seed=seed,
        scale=scale,
        jitter=jitter,
    )
    paths = write_phantom(ph, folder)
    if labels_only:
        return StudyInputs(labels=paths["labels"]), ph
    return StudyInputs(ct=paths["ct"], labels=paths["labels"]), ph


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same spine twice: RAS 1.5 mm, then PIR 1.5 x 1.5 x 1.25 mm with L1 worse and L3 new;
    graded by ``compare_studies`` into ``out/prior`` and ``out/current``."""
    root = tmp_path_factory.mktemp("pair")
    prior, ph0 = phantom_study(root / "ph_prior", PRIOR_FRACTURES)
    current, ph1 = phantom_study(
        root / "ph_current", CURRENT_FRACTURES, orientation="PIR", spacing=(1.5, 1.5, 1.25)
    )
    outcome = compare_studies(
        prior,
        current,
        root / "out",
        prior_date=datetime.date(2021, 3, 1),
        current_date=datetime.date(2023, 3, 1),
    )
    return {"root": root, "outcome": outcome, "truth": (ph0.truth, ph1.truth), "current": current}


@pytest.mark.slow
def test_phantom_pair_calls(pair: dict[str, Any]) -> None:
    c = pair["outcome"].comparison
    status = {v.level: v.status for v in c.vertebrae}
    assert status == {"T12": "stable", "L1": "worsening", "L2": "stable", "L3": "incident"}
    by = {v.level: v for v in c.vertebrae}
    # L3: 30 % crush, 7-8 mm: both definitions; L1: wedge 22 -> 35 %, 3.2 mm: the grade alone
    assert set(by["L3"].basis) == {"semi_quantitative", "quantitative"}
    assert by["L1"].basis == ("semi_quantitative",)
    assert c.summary["incident_levels"] == ["L3"]
    assert c.summary["worsening_levels"] == ["L1"]
    assert c.summary["only_in_prior"] == c.summary["only_in_current"] == []
    assert c.identity.status == "consistent" and c.identity.anatomy == "consistent"
    assert c.interval_days == 730
    for v in c.vertebrae:
        assert v.confidence is not None and v.confidence >= 0.8, v


@pytest.mark.slow
def test_phantom_pair_height_changes_match_the_truth(pair: dict[str, Any]) -> None:
    """Measured changes lie within the height tolerance of the true ones, region by region."""
    c = pair["outcome"].comparison
    t0, t1 = ({t.level: t for t in truth} for truth in pair["truth"])
    for v in c.vertebrae:
        assert v.height_tolerance_mm is not None
        for region in ("anterior", "middle", "posterior"):
            true = getattr(t1[v.level], f"height_{region}_after_mm") - getattr(
                t0[v.level], f"height_{region}_after_mm"
            )
            measured = v.change_mm[region]
            assert measured is not None
            assert abs(measured - true) <= v.height_tolerance_mm, (v.level, region)
            assert v.change_mm_per_year is not None
            assert v.change_mm_per_year[region] == pytest.approx(measured * 365.25 / 730)


@pytest.mark.slow
def test_phantom_pair_files(pair: dict[str, Any]) -> None:
    out = pair["root"] / "out"
    assert {p.name for p in out.iterdir()} >= {
        "comparison.json",
        "comparison.csv",
        "comparison.html",
        "prior",
        "current",
    }
    assert (out / "prior" / "result.json").is_file() and (out / "current" / "result.json").is_file()
    doc = json.loads((out / "comparison.json").read_text())
    validate_comparison(doc)
    assert doc["schema_version"] == "1.0"
    assert doc["prior"]["voxel_mm"] == [1.5, 1.5, 1.5]
    assert doc["prior"]["graded_here"] is True and doc["prior"]["date_source"] == "given"
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["level"] for r in rows] == ["T12", "L1", "L2", "L3"]
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[3]["status"] == "incident" and float(rows[3]["change_anterior_mm"]) < -4
    page = (out / "comparison.html").read_text()
    assert "data:image/png;base64," in page and "Incident fractures:</b> L3" in page
    assert not list(out.glob(".vertgrade-staging-*"))


@pytest.mark.slow
def test_result_folders_compare_as_graded(pair: dict[str, Any], tmp_path: Path) -> None:
    """The folders graded by the first run, given as result folders: the same calls; a study
    date recorded in the provenance is found; a folder that is not a result is refused."""
    out = pair["root"] / "out"
    prior = tmp_path / "prior"
    shutil.copytree(out / "prior", prior)
    doc = json.loads((prior / "result.json").read_text())
    doc["provenance"]["dicom"] = {"study_date": "20210301"}
    (prior / "result.json").write_text(json.dumps(doc))
    again = compare_studies(
        prior, out / "current", tmp_path / "cmp", current_date=datetime.date(2022, 3, 1)
    ).comparison
    first = pair["outcome"].comparison
    assert [v.status for v in again.vertebrae] == [v.status for v in first.vertebrae]
    assert again.prior.date_source == "provenance" and again.interval_days == 365
    assert not (tmp_path / "cmp" / "prior").exists()  # nothing graded
    with pytest.raises(InputError, match="no such file"):
        compare_studies(tmp_path / "missing", out / "current", tmp_path / "cmp2")
    with pytest.raises(OutputError, match="not empty"):
        compare_studies(prior, out / "current", tmp_path / "cmp")
    # --force without the page: the earlier comparison.html goes
    compare_studies(prior, out / "current", tmp_path / "cmp", force=True, html=False)
    assert not (tmp_path / "cmp" / "comparison.html").exists()


@pytest.mark.slow
def test_labels_only_pair(pair: dict[str, Any], tmp_path: Path) -> None:
    """Heights from the masks alone, in both scans: the same calls."""
    prior, _ = phantom_study(tmp_path / "a", PRIOR_FRACTURES, labels_only=True)
    current, _ = phantom_study(
        tmp_path / "b", CURRENT_FRACTURES, orientation="PIR", labels_only=True
    )
    c = compare_studies(prior, current, tmp_path / "out").comparison
    by = {v.level: v for v in c.vertebrae}
    assert (by["T12"].status, by["L2"].status, by["L3"].status) == ("stable", "stable", "incident")
    # the prior L1 (22 % wedge, 2 points above grade 1's 20 %) may grade 0 or 1 from its mask:
    # it is then a new fracture or a worse one, never stable
    l1 = by["L1"]
    assert l1.prior is not None
    assert l1.status == ("incident" if l1.prior.grade == 0 else "worsening")
    assert c.identity.status == "consistent"
    assert c.interval_days is None and c.vertebrae[0].change_mm_per_year is None
    assert "no study date recorded" in c.to_dict()["interval"]["note"]


@pytest.fixture(scope="module")
def other_spines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Result folders of spines that are not the pair's: one 15 % larger; and two whose
    vertebrae vary by 8 % each in height (seeds 0 and 1; the phantoms' default is 0.5 %)."""
    root = tmp_path_factory.mktemp("others")
    studies = {
        "larger": phantom_study(
            root / "ph_larger", CURRENT_FRACTURES, orientation="PIR", scale=1.15
        ),
        "seed0": phantom_study(root / "ph_seed0", [], seed=0, jitter=0.08),
        "seed1": phantom_study(root / "ph_seed1", [], orientation="PIR", seed=1, jitter=0.08),
    }
    for name, (inputs, _) in studies.items():
        grade_to_folder(inputs, root / name)
    return {name: root / name for name in studies}


@pytest.mark.slow
def test_mix_up_of_size_is_refused(
    pair: dict[str, Any], other_spines: dict[str, Path], tmp_path: Path
) -> None:
    prior = pair["root"] / "out" / "prior"
    with pytest.raises(InputError, match=r"do not look like one patient.*factor 1\.1"):
        compare_studies(prior, other_spines["larger"], tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "comparison.json").exists()
    forced = compare_studies(
        prior, other_spines["larger"], tmp_path / "cmp", force_mismatch=True
    ).comparison
    assert forced.identity.status == "mismatch" and forced.identity.forced
    assert forced.identity.scale_ratio == pytest.approx(1.15, abs=0.03)
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert doc["identity"]["forced"] is True
    assert any("--force-mismatch" in n for n in doc["notes"])


@pytest.mark.slow
def test_mix_up_of_proportions_is_refused(other_spines: dict[str, Path]) -> None:
    a, b = read_scan(other_spines["seed0"]), read_scan(other_spines["seed1"])
    ident = compare_scans(a, b).identity
    assert ident.anatomy == "mismatch" and ident.shape_spread is not None
    assert ident.shape_spread > CompareConfig().max_shape_spread
    assert any("proportions along the spine differ" in r for r in ident.reasons)
    # the same spine read twice is consistent, with no spread at all
    same = compare_scans(a, a).identity
    assert same.status == "consistent" and same.shape_spread == pytest.approx(0.0)


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_compare(pair: dict[str, Any], other_spines: dict[str, Path], tmp_path: Path) -> None:
    out = pair["root"] / "out"
    args = ["compare", str(out / "prior"), str(out / "current"), "-o", str(tmp_path / "c")]
    res = runner.invoke(app, [*args, "--prior-date", "2021-03-01", "--current-date", "20230301"])
    assert res.exit_code == 0, res.output
    assert "incident: L3; worsening: L1" in res.output
    assert "730 days" in res.output and "one patient: consistent" in res.output
    assert (tmp_path / "c" / "comparison.json").is_file()
    res = runner.invoke(app, args)  # the folder is not empty now
    assert res.exit_code == 3 and "--force" in res.stderr
    res = runner.invoke(app, [*args, "--force", "--prior-date", "1 March"])
    assert res.exit_code == 2 and "--prior-date" in res.stderr
    mixed = ["compare", str(out / "prior"), str(other_spines["larger"]), "-o", str(tmp_path / "m")]
    res = runner.invoke(app, mixed)
    assert res.exit_code == 3 and "--force-mismatch" in res.stderr
    assert res.stderr.count("\n") == 1  # one line, no traceback
    res = runner.invoke(app, [*mixed, "--force-mismatch", "--no-html", "-q"])
    assert res.exit_code == 0, res.output
    assert "level" not in res.stdout  # -q: no table, the summary stays
    assert "one patient: mismatch (forced)" in res.stdout
    assert not (tmp_path / "m" / "comparison.html").exists()
    res = runner.invoke(app, ["-q", *mixed, "--force-mismatch", "--force"])
    assert res.exit_code == 0 and res.stdout == ""


@pytest.mark.slow
def test_phantom_command_writes_a_pair_that_compare_reads(tmp_path: Path) -> None:
    """`vertgrade phantom --follow-up` writes the same spine twice (prior and current, the second
    in another orientation and spacing): a fracture that progresses, a new one, the others as
    they were; `vertgrade compare` on the two CTs calls them so."""
    runner = CliRunner()
    out = tmp_path / "pair"
    res = runner.invoke(
        app,
        ["phantom", "-o", str(out), "--levels", "T12-L3", "--spacing", "1.5",
         "--fracture", "L1:wedge:0.22", "--follow-up", "L1:wedge:0.38",
         "--follow-up", "L3:crush:0.30", "--follow-up-orientation", "PIR",
         "--follow-up-spacing", "1.5,1.25,1.5"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output

    def truth(sub: str) -> dict[str, dict[str, str]]:
        with open(out / sub / "truth.csv", newline="") as fh:
            return {r["level"]: r for r in csv.DictReader(fh)}

    before, after = truth("prior"), truth("current")
    assert float(before["L1"]["severity"]) == 0.22 and float(after["L1"]["severity"]) == 0.38
    assert before["L3"]["fractured"] == "false" and after["L3"]["type"] == "crush"
    for level in ("T12", "L2"):  # unchanged vertebrae: the same true heights
        assert before[level]["height_anterior_after_mm"] == after[level]["height_anterior_after_mm"]
    again = runner.invoke(app, ["phantom", "-o", str(out), "--follow-up", "L1:wedge:0.3"])
    assert again.exit_code == 3 and "--force" in again.stderr
    cmp = runner.invoke(
        app,
        ["compare", str(out / "prior" / "ct.nii.gz"), str(out / "current" / "ct.nii.gz"),
         "--prior-labels", str(out / "prior" / "labels.nii.gz"),
         "--current-labels", str(out / "current" / "labels.nii.gz"), "-o", str(tmp_path / "c")],
    )  # fmt: skip
    assert cmp.exit_code == 0, cmp.output
    with open(tmp_path / "c" / "comparison.csv", newline="") as fh:
        status = {r["level"]: r["status"] for r in csv.DictReader(fh)}
    assert status == {"T12": "stable", "L1": "worsening", "L2": "stable", "L3": "incident"}
