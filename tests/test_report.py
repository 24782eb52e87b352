"""The HTML / PDF report: self-contained, complete, and drawing what the result says.

Phantoms know their true heights and grades; the report of a graded phantom must list every
vertebra, draw each third's height where the result's ``thirds`` points are (and as long as the
true height), draw the reference heights at their length, and survive a labels-only study, a
vertebra that cannot be graded, and a CT moved or changed since grading.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from vertgrade import grade_study, load_study
from vertgrade.errors import InputError, OutputError
from vertgrade.geometry.thirds import THIRDS
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import Phantom, make_phantom, write_phantom
from vertgrade.report.figures import overview_figure, panel_extent_mm, vertebra_figure
from vertgrade.report.files import (
    VALIDATE_ENV,
    load_schema,
    validate_on_write,
    validate_result,
    write_result,
)
from vertgrade.report.html import (
    REPORT_HTML,
    render_report,
    render_result_dir,
    save_report,
    write_report,
)
from vertgrade.report.pdf import REPORT_PDF
from vertgrade.report.reformat import frame_from_dict
from vertgrade.report.style import GRADE_COLOURS, confidence_text, grade_rgb
from vertgrade.result import SpineResult
from vertgrade.study import Study, Volume

LEVELS = "T11-L3"
FRACTURES = ("L1:wedge:0.35", "L3:crush:0.3")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    _chromium() is None,
    reason="headless Chromium not installed (Debian/Ubuntu: apt-get install chromium)",
)


# --- fixtures: an oblique, anisotropic phantom graded in memory; the same written to files ----


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    # PIR axis order, 2 mm along P, grid rotated 10 degrees about S: oblique and anisotropic
    return make_phantom(
        LEVELS,
        FRACTURES,
        orientation="PIR",
        spacing=(2.0, 1.0, 1.0),
        oblique_deg=10.0,
        fov_mm=(150.0, 150.0),
        seed=3,
    )


@pytest.fixture(scope="module")
def graded(phantom: Phantom) -> tuple[SpineResult, Study]:
    study = study_from_arrays(phantom.labels, phantom.affine, ct=phantom.ct, subject="ph")
    return grade_study(study), study


@pytest.fixture(scope="module")
def report_html(graded: tuple[SpineResult, Study]) -> str:
    result, study = graded
    return render_report(result, study)


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom written to files, graded from them and its result folder written."""
    root = tmp_path_factory.mktemp("report")
    ph = make_phantom(
        LEVELS, FRACTURES, orientation="LPS", spacing=(1.0, 1.0, 2.0), seed=1, fov_mm=(150.0, 150.0)
    )
    write_phantom(ph, root / "phantom")
    study = load_study(root / "phantom" / "ct.nii.gz", root / "phantom" / "labels.nii.gz")
    write_result(grade_study(study), root / "out")
    return root


class _Page(HTMLParser):
    """What the report's HTML holds: images, scripts, links, and the vertebra table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self.rows: list[list[str]] = []
        self._table = 0
        self._cell: list[str] | None = None
        self._impression: list[str] | None = None
        self.impression = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(str(a[key]))
        if tag == "p" and a.get("id") == "impression":
            self._impression = []
        if tag == "table" and a.get("id") == "vertebrae":
            self._table = 1
        elif tag == "table" and self._table:
            self._table += 1
        if self._table == 1 and tag == "tr":
            self.rows.append([])
        if self._table == 1 and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._impression is not None:
            self.impression = " ".join("".join(self._impression).split())
            self._impression = None
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table" and self._table:
            self._table -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._impression is not None:
            self._impression.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _png(uri: str | None) -> np.ndarray:
    assert uri is not None and uri.startswith("data:image/png;base64,")
    data = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(mpimg.imread(io.BytesIO(data), format="png"))


# --- content --------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_is_self_contained(report_html: str, graded: tuple[SpineResult, Study]) -> None:
    page = _parse(report_html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"https?://", report_html)
    assert "url(" not in report_html and "@import" not in report_html
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls)
    result = graded[0]
    # the overview, the alignment and one per vertebra
    assert len(page.imgs) == 2 + len(result.vertebrae)
    for img in page.imgs:
        pixels = _png(img["src"])
        assert pixels.shape[:2] == (int(str(img["height"])), int(str(img["width"])))
        assert pixels[..., :3].std() > 0.05  # not blank


def test_table_lists_every_vertebra_with_its_grade(
    report_html: str, graded: tuple[SpineResult, Study], phantom: Phantom
) -> None:
    page = _parse(report_html)
    rows = [r for r in page.rows if r]
    truth = {t.level: t.grade for t in phantom.truth}
    assert [r[0] for r in rows] == [v.level for v in graded[0].vertebrae] == list(truth)
    for row in rows:
        assert row[1] == f"grade {truth[row[0]]}", row
    assert {r[0]: r[2] for r in rows if r[2]} == {"L1": "wedge", "L3": "crush"}
    # RHLV per third (%), as the result has it
    l1 = graded[0]["L1"]
    assert l1.rhlv is not None
    shown = [float(x) for x in rows[2][3].split("/")]
    assert shown == pytest.approx([100 * float(l1.rhlv[r] or 0) for r in THIRDS], abs=0.5)
    # the summary names the fractured levels and the worst grade
    head = report_html.split('id="overview"')[0]
    assert "L1 2 wedge" in head and "L3 2 crush" in head and "grade 2" in head
    # one line of impression, from the grades
    assert page.impression == (
        "Impression: moderate wedge fracture of L1; moderate crush fracture of L3; "
        "no other fracture."
    )
    # the confidence is rounded once, as every output rounds it
    for row, v in zip(rows, graded[0].vertebrae, strict=True):
        assert row[8] == confidence_text(v.confidence) == f"{round(v.confidence or 0, 2):.2f}"


def test_svm_grades_in_the_result_and_the_report(
    graded: tuple[SpineResult, Study], tmp_path: Path
) -> None:
    """A grader's verdicts replace the threshold grades (the threshold grade kept beside them),
    pass the result schema, and the report says which grade came from where."""
    from vertgrade.synthesis.grader import GradePrediction, Grader, apply_grader

    result, study = graded
    grader = Grader(None, ("f",), (0, 1, 2, 3), {"cv_macro_f1": 0.7}, "0.0", None)
    probs = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}
    preds = {
        result["L1"].label: GradePrediction(3, 0.4, probs, 2),  # fractured: 2 -> 3
        result["L3"].label: GradePrediction(0, 0.4, {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1}, 2),
        result["L2"].label: GradePrediction(1, 0.2, probs, 0),  # sound by the thresholds
    }
    svm = apply_grader(result, preds, grader)
    assert svm["L1"].grade == 3 and svm["L1"].threshold_grade == 2
    assert svm["L1"].grade_method == "svm" and svm["L1"].confidence == 0.4
    assert svm["L1"].fracture_type == "wedge"  # kept from the thresholds
    assert svm["L3"].grade == 0 and svm["L3"].fracture_type is None
    l2 = svm["L2"]
    assert l2.grade == 1 and l2.threshold_grade == 0 and l2.fracture_type is not None
    assert svm["T12"].grade_method == "thresholds" and svm["T12"].grade == result["T12"].grade
    assert svm.summary["fractured_levels"] == ["L1", "L2"]
    assert svm.provenance["grader"]["cv_macro_f1"] == 0.7
    write_result(svm, tmp_path / "out")  # validated against the schema before writing
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    l1 = next(v for v in doc["vertebrae"] if v["level"] == "L1")
    assert l1["grade_probabilities"] == {"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4}
    html = render_report(svm, study)
    row = next(r for r in _parse(html).rows if r and r[0] == "L1")
    assert row[1] == "grade 3SVM; thresholds: 2"
    assert "the RHLV thresholds give grade 2" in html


def test_drawn_heights_are_the_thirds_and_the_reference(
    graded: tuple[SpineResult, Study], phantom: Phantom
) -> None:
    result, study = graded
    doc = result.to_dict()
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    extent = panel_extent_mm(doc["vertebrae"])
    truth = {t.level: t for t in phantom.truth}
    for v in doc["vertebrae"]:
        fig = vertebra_figure(v, ct=study.ct, bodies=bodies, extent_mm=extent)
        frame = frame_from_dict(v["frame"])
        assert frame is not None and fig.background == "ct" and fig.loss_map
        measured = {ln.region: ln for ln in fig.lines if ln.kind == "measured"}
        reference = {ln.region: ln for ln in fig.lines if ln.kind == "reference"}
        assert set(measured) == set(reference) == set(THIRDS)
        drawn = {
            (tuple(np.round(line.get_xdata(), 6)), tuple(np.round(line.get_ydata(), 6)))
            for line in fig.figure.axes[0].lines
        }
        for r in THIRDS:
            m, ref = measured[r], reference[r]
            # what was returned was drawn
            for ln in (m, ref):
                assert ((round(ln.ap_mm, 6),) * 2, tuple(np.round(ln.si_mm, 6))) in drawn
            # the drawn ends are the thirds' world points, projected on the slice lr = 0
            for end, key in zip(m.si_mm, ("inferior_mm", "superior_mm"), strict=True):
                point = np.asarray(v["thirds"][r][key])
                lr = float((point - frame.origin) @ frame.lr)
                back = frame.origin + end * frame.si + m.ap_mm * frame.ap + lr * frame.lr
                # (the JSON's frame axes are rounded to 1e-6, its points to 0.01 mm)
                np.testing.assert_allclose(back, point, atol=0.01)
            # the measured line is the height measured and the true one
            assert m.length_mm == pytest.approx(v["heights_mm"][r], abs=0.75)
            true_h = getattr(truth[v["level"]], f"height_{r}_after_mm")
            assert m.length_mm == pytest.approx(true_h, abs=1.0)
            # the reference line is as long as the reference height, centred on the measured one
            assert ref.length_mm == pytest.approx(v["reference"]["heights_mm"][r], abs=1e-9)
            assert ref.middle_mm == pytest.approx(m.middle_mm, abs=1e-9)
            assert ref.ap_mm == m.ap_mm
        # a wedge: the anterior line clearly shorter than its reference, the posterior not
        if v["level"] == "L1":
            assert reference["anterior"].length_mm - measured["anterior"].length_mm > 6.0
            assert reference["posterior"].length_mm - measured["posterior"].length_mm < 3.0


def test_overview_follows_the_centreline(graded: tuple[SpineResult, Study]) -> None:
    result, study = graded
    doc = result.to_dict()
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    ov = overview_figure(doc, ct=study.ct, bodies=bodies)
    assert ov is not None and ov.background == "ct"
    col = int(np.argmin(np.abs(ov.sheet.offsets_mm)))
    for v in result.vertebrae:
        # the sheet passes through every body centre: the body's label is there on the sheet
        row = int(np.argmin(np.abs(ov.sheet.arc_mm - ov.positions_mm[v.level])))
        assert ov.bodies[row, col] == v.label
        assert v.frame is not None
        dist = np.linalg.norm(ov.sheet.centre_mm[row] - v.frame.origin)
        assert dist < 2.0
        assert ov.outlined[v.level] == GRADE_COLOURS[v.grade]
    # each row's line is perpendicular to the centreline
    tangent = np.gradient(ov.sheet.centre_mm, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    assert np.abs(np.sum(tangent * ov.sheet.anterior, axis=1)).max() < 1e-2


@pytest.mark.slow
def test_labels_only_study(phantom: Phantom, tmp_path: Path) -> None:
    study = study_from_arrays(phantom.labels, phantom.affine, subject="labels-only")
    result = grade_study(study)
    doc = result.to_dict()
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    ov = overview_figure(doc, bodies=bodies, labels=study.labels)
    assert ov is not None and ov.background == "labels"
    assert set(ov.outlined) == {v.level for v in result.vertebrae}
    text = render_report(result, study)
    assert text == render_report(result, study)  # deterministic
    page = _parse(text)
    assert [r[0] for r in page.rows if r] == [v.level for v in result.vertebrae]
    assert "No CT" in text and "segmentation only" in text
    # from the result folder: no input files recorded (arrays), bodies only
    write_result(result, tmp_path / "out")
    written = write_report(tmp_path / "out")
    assert written == [tmp_path / "out" / REPORT_HTML]
    from_dir = written[0].read_text(encoding="utf-8")
    assert "graded from arrays in memory" in from_dir
    assert [r[0] for r in _parse(from_dir).rows if r] == [v.level for v in result.vertebrae]


@pytest.mark.slow
def test_report_of_an_in_memory_study_says_so(phantom: Phantom, tmp_path: Path) -> None:
    """Images given to load_study in memory have no file to find again: the report from the
    result folder says they were in memory, not that they were moved or deleted."""
    from vertgrade.io.load import load_study

    study = load_study((phantom.ct, phantom.affine), (phantom.labels, phantom.affine))
    write_result(grade_study(study), tmp_path / "out")
    text = write_report(tmp_path / "out")[0].read_text(encoding="utf-8")
    assert "was given in memory at grading (no file to read again)" in text
    assert "moved or deleted" not in text


@pytest.mark.slow
def test_not_gradable_vertebra(phantom: Phantom) -> None:
    # cut the field of view through L3's body: L3 cannot be graded, the rest can
    inv = np.linalg.inv(phantom.affine)
    l3 = next(t for t in phantom.truth if t.level == "L3")
    centre_ijk = inv[:3, :3] @ [l3.centre_x_mm, l3.centre_y_mm, l3.centre_z_mm] + inv[:3, 3]
    cut = round(float(centre_ijk[1]))  # axis 1 runs inferior (PIR)
    study = study_from_arrays(
        phantom.labels[:, :cut], phantom.affine, ct=phantom.ct[:, :cut], subject="cut"
    )
    result = grade_study(study)
    assert result["L3"].status == "not_gradable"
    doc = result.to_dict()
    l3_doc = next(v for v in doc["vertebrae"] if v["level"] == "L3")
    fig = vertebra_figure(
        l3_doc, ct=study.ct, bodies=Volume(result.bodies, result.bodies_affine, "labels")
    )
    assert not fig.loss_map
    # no heights drawn for it either: they may be truncated, and would read as measured
    assert fig.lines == ()
    text = render_report(result, study)
    page = _parse(text)
    rows = {r[0]: r for r in page.rows if r}
    # the row says why, in one cell where the numbers would be, and shows none of them
    assert rows["L3"][1] == "not gradable"
    assert rows["L3"][2] == f"not gradable: {result['L3'].reason}"
    assert "cut_by_fov" in rows["L3"][-1] and len(rows["L3"]) == 4
    assert not re.search(r"\d+\.\d / \d+\.\d", " ".join(rows["L3"]))
    assert rows["L1"][1] == "grade 2" and len(rows["L1"]) == 11
    assert "not gradable" in text.split('id="overview"')[0]
    assert page.impression.endswith("; L3 not gradable: cut by the field of view.")
    # its panel: the reason, no table of heights
    panel = text.split('id="v-L3"')[1].split("</section>")[0]
    assert "Not gradable:" in panel and "<th>height (mm)</th>" not in panel


def test_single_vertebra() -> None:
    # one vertebra: no centreline in the result (the overview follows the frame's axis), no
    # neighbour to serve as reference (not gradable)
    ph = make_phantom("L1", spacing=2.0, fov_mm=(120.0, 120.0), noise_hu=0.0)
    study = study_from_arrays(ph.labels, ph.affine, ct=ph.ct, subject="one")
    result = grade_study(study)
    assert len(result.centreline_mm) == 0 and result["L1"].status == "not_gradable"
    page = _parse(render_report(result, study))
    assert len(page.imgs) == 3  # overview and alignment along the frame's axis, the vertebra
    assert [r[:2] for r in page.rows if r] == [["L1", "not gradable"]]


# --- from a result folder -------------------------------------------------------------------


@pytest.mark.slow
def test_report_from_folder_finds_the_ct(result_dir: Path) -> None:
    out = result_dir / "out"
    text = render_result_dir(out)
    assert "checksum matches" in text and "CT and segmentation" in text
    assert "not found" not in text
    doc = json.loads((out / "result.json").read_text())
    assert [r[0] for r in _parse(text).rows if r] == [v["level"] for v in doc["vertebrae"]]


@pytest.mark.slow
def test_report_from_folder_with_the_ct_moved_or_changed(result_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(result_dir / "out", out)
    doc = json.loads((out / "result.json").read_text())
    ct_path = Path(doc["provenance"]["inputs"]["ct"]["path"])
    moved = tmp_path / "ct-moved.nii.gz"
    shutil.copy(ct_path, moved)
    try:
        shutil.move(ct_path, tmp_path / "elsewhere.nii.gz")
        text = render_result_dir(out)
        assert "was not found (moved or deleted since grading)" in text
        assert '<div class="notes alert"><strong>Attention</strong>' in text
        assert "segmentation only (no CT)" in text
        assert len(_parse(text).imgs) == 2 + len(doc["vertebrae"])
        # a different file at the recorded path is not shown either
        img = nib.load(moved)
        data = np.asanyarray(img.dataobj).astype(np.int16) + 1
        nib.save(nib.Nifti1Image(data, img.affine), ct_path)
        text = render_result_dir(out)
        assert "has changed since grading" in text and "segmentation only (no CT)" in text
    finally:
        shutil.copy(moved, ct_path)


@pytest.mark.slow
def test_report_from_folder_with_a_label_folder(tmp_path: Path) -> None:
    # labels as TotalSegmentator's per-structure files, no CT: the folder's checksum is checked
    ph = make_phantom("L1-L3", ("L2:crush:0.3",), spacing=2.0, fov_mm=(120.0, 120.0))
    folder = tmp_path / "ts"
    folder.mkdir()
    for t in ph.truth:
        mask = (ph.labels == t.label).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, ph.affine), folder / f"vertebrae_{t.level}.nii.gz")
    study = load_study(None, folder)
    write_result(grade_study(study), tmp_path / "out")
    text = render_result_dir(tmp_path / "out")
    assert f"found at {folder}" in text and "Attention" not in text
    assert "vertebra labels and bodies" in text
    half = (ph.labels == 21).astype(np.uint8)
    half[: half.shape[0] // 2] = 0  # the same grid, another content
    nib.save(nib.Nifti1Image(half, ph.affine), folder / "vertebrae_L2.nii.gz")
    text = render_result_dir(tmp_path / "out")
    assert "has changed since grading" in text and "Attention" in text


def test_write_report_refuses_bad_folders(result_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such result folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"result\.json: no such file"):
        write_report(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(result_dir / "out", bad)
    doc: dict[str, Any] = json.loads((bad / "result.json").read_text())
    doc["schema_version"] = "0.9"
    (bad / "result.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="does not follow the result schema"):
        write_report(bad)
    (bad / "result.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON file"):
        write_report(bad)
    # an existing report is kept without force
    keep = tmp_path / "keep"
    shutil.copytree(result_dir / "out", keep)
    (keep / REPORT_HTML).write_text("old")
    with pytest.raises(OutputError, match="exists"):
        save_report("<html></html>", keep, force=False)
    with pytest.raises(OutputError, match=r"report\.html: exists \(use --force"):
        write_report(keep, force=False)
    assert (keep / REPORT_HTML).read_text() == "old"


def test_pdf_without_chromium_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OutputError, match="apt-get install chromium"):
        save_report("<html></html>", tmp_path, pdf=True)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(OutputError, match="not an executable"):
        save_report("<html></html>", tmp_path, pdf=True, browser=tmp_path / "no-chromium")
    assert not any(p.name.startswith(("report", ".report")) for p in tmp_path.iterdir())


# --- one source for the colours, the schema check and the overview --------------------------


def test_page_colours_are_the_style_table(report_html: str) -> None:
    root = report_html.split(":root {", 1)[1].split("}", 1)[0]
    for grade, colour in GRADE_COLOURS.items():
        name = "gna" if grade is None else f"g{grade}"
        assert f"--{name}: {colour};" in root
        assert "#{:02x}{:02x}{:02x}".format(*grade_rgb(grade)) == colour


def test_one_validator_reports_as_jsonschema_does(
    graded: tuple[SpineResult, Study], monkeypatch: pytest.MonkeyPatch
) -> None:
    document = graded[0].to_dict()
    broken = json.loads(json.dumps(document))
    broken["vertebrae"][1]["grade"] = "two"
    broken["vertebrae"][2]["status"] = 7
    del broken["summary"]
    with pytest.raises(jsonschema.ValidationError) as theirs:
        jsonschema.validate(broken, load_schema())
    validate_result(document)
    # once built, the validator is reused: the schema is not read or checked again
    cls = jsonschema.validators.validator_for(load_schema())
    monkeypatch.setattr(cls, "check_schema", _no_rebuild)
    monkeypatch.setattr(resources, "files", _no_rebuild)
    validate_result(document)
    with pytest.raises(jsonschema.ValidationError) as ours:
        validate_result(broken)
    assert ours.value.message == theirs.value.message
    assert list(ours.value.absolute_path) == list(theirs.value.absolute_path)


def _no_rebuild(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the result schema's validator was built again")


@pytest.mark.parametrize(
    ("env", "validate", "checked"),
    [
        ("1", None, True),
        ("", None, False),
        ("0", None, False),
        ("", True, True),
        ("yes", False, False),
    ],
)
def test_written_results_are_validated_where_asked(
    graded: tuple[SpineResult, Study],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    validate: bool | None,
    checked: bool,
) -> None:
    # a grade the schema does not allow: where validation is asked for, nothing is written
    first = graded[0].vertebrae[0]
    bad = dataclasses.replace(graded[0], vertebrae=(dataclasses.replace(first, grade=7),))
    monkeypatch.setenv(VALIDATE_ENV, env)
    out = tmp_path / "out"
    if checked:
        with pytest.raises(jsonschema.ValidationError, match="7"):
            write_result(bad, out, validate=validate)
        assert not out.exists() or not any(out.iterdir())
    else:
        write_result(bad, out, validate=validate)
        assert json.loads((out / "result.json").read_text())["vertebrae"][0]["grade"] == 7


def test_the_tests_validate_every_result_they_write() -> None:
    # set by conftest.py for this process and every command the tests run
    assert validate_on_write()


def test_schema_ships_in_its_folder() -> None:
    package = resources.files("vertgrade.report")
    schema_file = package.joinpath("schema/result.schema.json")
    assert json.loads(schema_file.read_text("utf-8")) == load_schema()
    assert not package.joinpath("result.schema.json").is_file()
    assert "alignment" in load_schema()["properties"]
    # the validator does not check the schema at run time: this does
    schema = load_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator


def test_dicom_overview_is_the_report_overview(
    graded: tuple[SpineResult, Study], report_html: str
) -> None:
    from vertgrade.report.dicom import overview_image

    result, study = graded
    rgb = overview_image(result, study.ct)
    shown = _png(_parse(report_html).imgs[0]["src"])  # the report's first image: the overview
    assert rgb.dtype == np.uint8 and rgb.shape == (*shown.shape[:2], 3)
    np.testing.assert_array_equal(rgb, np.rint(shown[..., :3] * 255).astype(np.uint8))


# --- in a browser ---------------------------------------------------------------------------


@needs_chromium
@pytest.mark.slow
def test_report_renders_in_chromium(result_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(result_dir / "out", out)
    written = write_report(out, pdf=True)
    assert written == [out / REPORT_HTML, out / REPORT_PDF]
    pdf = (out / REPORT_PDF).read_bytes()
    assert pdf.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2

    shot = tmp_path / "shot.png"
    chromium = _chromium()
    assert chromium is not None
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            (out / REPORT_HTML).as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rgb = np.asarray(mpimg.imread(shot))[..., :3]
    assert rgb.shape[:2] == (2000, 1280)
    assert rgb.std() > 0.1  # not blank
    colours = np.unique((rgb * 15).round().astype(np.int8).reshape(-1, 3), axis=0)
    assert len(colours) > 50
    # the grade colours of the phantom (grade 0 green, grade 2 orange) are on screen
    for grade in (0, 2):
        target = np.array(grade_rgb(grade)) / 255
        close = np.abs(rgb - target).max(axis=-1) < 0.06
        assert close.sum() > 200, grade
