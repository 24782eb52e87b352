"""The segmentation step (vertgrade.segment): a CT without labels, up to TotalSegmentator's API.

TotalSegmentator cannot run here (its weights cannot be downloaded), so its function is replaced
by a stand-in that writes TotalSegmentator's own output files for its example CT
(``../shared/data/totalseg-example``): everything on vertgrade's side of the call is real.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from vertgrade import segment
from vertgrade.cli import app
from vertgrade.segment import SegmenterError, SegmentOptions, check_segmenter, run_segmenter
from vertgrade.workflow import GradeOptions, StudyInputs, grade_to_folder


@pytest.fixture
def totalseg_example(data_dir: Path) -> Path:
    path = data_dir / "totalseg-example"
    if not (path / "example_ct.nii.gz").is_file():
        pytest.skip(f"{path} has no example_ct.nii.gz")
    return path


def _as_total_ids(verse: Path, out: Path) -> None:
    """The ``total`` task's file for the same labels: VerSe 1-24 -> total 50-27."""
    img = nib.load(verse)
    lab = np.asarray(img.dataobj).astype(np.int16)
    total = np.where((lab >= 1) & (lab <= 24), 51 - lab, 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(total, img.affine), out)


class FakeTotalSegmentator:
    """Stands in for ``totalsegmentator.python_api.totalsegmentator``: records each call and
    writes the real output file of the task asked for."""

    def __init__(self, example: Path) -> None:
        self.example = example
        self.calls: list[dict[str, Any]] = []

    def __call__(self, input: Path, output: Path, **kwargs: Any) -> None:
        self.calls.append({"input": Path(input), "output": Path(output), **kwargs})
        task = kwargs["task"]
        if task == "vertebrae_pp_refined":
            img = nib.load(self.example / "totalseg_vertebrae_pp_refined.nii.gz")
            nib.save(img, output)
        elif task == "total":
            _as_total_ids(self.example / "totalseg_vertebrae_pp_refined.nii.gz", Path(output))
        elif task == "vertebrae_body":
            nib.save(nib.load(self.example / "totalseg_vertebrae_body.nii.gz"), output)
        else:  # pragma: no cover - a task vertgrade never asks for
            raise AssertionError(task)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TotalSegmentator and PyTorch 'installed', with a weights folder holding every model."""
    monkeypatch.setattr(segment, "_installed", lambda name: True)
    monkeypatch.setattr(segment, "_totalseg_version", lambda: "2.18.0")
    weights = tmp_path / "weights"
    for ids in segment._FALLBACK_MODEL_IDS.values():
        for i in ids:
            (weights / f"Dataset{i:03d}_model").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    monkeypatch.delitem(sys.modules, "totalsegmentator.map_tasks_config", raising=False)
    return weights


def _fake_module(monkeypatch: pytest.MonkeyPatch, fake: FakeTotalSegmentator) -> None:
    """Put the stand-in where ``run_segmenter`` imports it from."""
    pkg = types.ModuleType("totalsegmentator")
    pkg.__spec__ = importlib.machinery.ModuleSpec("totalsegmentator", None)
    pkg.__path__ = []
    api = types.ModuleType("totalsegmentator.python_api")
    api.totalsegmentator = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "totalsegmentator", pkg)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)


# --- errors before any work -----------------------------------------------------------------


def test_not_installed_is_one_clear_error_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "_installed", lambda name: name != "totalsegmentator")
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), ct)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["grade", str(ct), "-o", str(out)])
    assert res.exit_code == 4, res.output
    assert "TotalSegmentator" in res.stderr and "pip install 'vertgrade[totalseg]'" in res.stderr
    assert "--labels" in res.stderr
    assert not out.exists()


def test_torch_missing_names_the_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "_installed", lambda name: name != "torch")
    with pytest.raises(SegmenterError, match=r"needs PyTorch.*pip install torch"):
        check_segmenter(SegmentOptions())


def test_missing_weights_name_the_folder_and_the_download_command(
    installed: Path, tmp_path: Path
) -> None:
    for p in installed.glob("Dataset305_*"):
        p.rmdir()
    with pytest.raises(SegmenterError) as err:
        check_segmenter(SegmentOptions(task="vertebrae"))
    msg = str(err.value)
    assert str(installed) in msg and "Dataset305" in msg
    assert "totalseg_download_weights -t vertebrae_pp_refined" in msg
    assert "TOTALSEG_WEIGHTS_PATH" in msg
    # the total task needs other models, all present
    assert check_segmenter(SegmentOptions(task="total")) == "2.18.0"
    for p in installed.glob("Dataset297_*"):
        p.rmdir()
    with pytest.raises(SegmenterError, match="totalseg_download_weights -t total_fast`"):
        check_segmenter(SegmentOptions(task="total", fast=True))
    # an empty weights folder: every model is missing
    (tmp_path / "empty").mkdir()
    assert segment._missing_weights([297, 298], tmp_path / "empty") == [297, 298]


def test_weights_are_found_in_nested_folders(tmp_path: Path) -> None:
    (tmp_path / "nnUNet" / "3d_fullres" / "Dataset803_vertebrae").mkdir(parents=True)
    (tmp_path / "Dataset305_vertebrae_discs_1559subj").mkdir()
    assert segment._missing_weights([803, 305, 292], tmp_path) == [292]


def test_weights_folder_follows_totalsegmentator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    assert segment.totalseg_weights_dir() == tmp_path / "nnunet" / "results"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "w"))
    assert segment.totalseg_weights_dir() == tmp_path / "w"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SegmentOptions(task="vertebrae", fast=True), "fast model for 'total' only"),
        (SegmentOptions(task="spine"), "--segment-task"),  # type: ignore[arg-type]
        (SegmentOptions(segmenter="spineps"), "--segmenter"),
        (SegmentOptions(device="tpu"), "--device"),
    ],
)
def test_bad_options_are_usage_errors(options: SegmentOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.check()


def test_device_names_are_totalsegmentators() -> None:
    assert segment._totalseg_device("cpu") == "cpu"
    assert segment._totalseg_device("cuda") == "gpu"
    assert segment._totalseg_device("cuda:1") == "gpu:1"


def test_a_failing_segmenter_is_one_error(tmp_path: Path) -> None:
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), ct)

    def broken(input: Path, output: Path, **kw: Any) -> None:
        raise SystemExit("nnUNet: CUDA out of memory")

    with pytest.raises(SegmenterError, match=r"'total' task failed on .*ct\.nii\.gz.*CUDA out of"):
        run_segmenter(ct, SegmentOptions(), work_dir=tmp_path, call=broken)

    def silent(input: Path, output: Path, **kw: Any) -> None:
        return None

    with pytest.raises(SegmenterError, match=r"wrote no vertebrae\.nii\.gz"):
        run_segmenter(ct, SegmentOptions(), work_dir=tmp_path, call=silent)


# --- the glue, on TotalSegmentator's real output ----------------------------------------------


def test_call_arguments_per_task(totalseg_example: Path, tmp_path: Path) -> None:
    fake = FakeTotalSegmentator(totalseg_example)
    ct = totalseg_example / "example_ct.nii.gz"
    seg = run_segmenter(ct, SegmentOptions(fast=True, device="cuda"), work_dir=tmp_path, call=fake)
    (call,) = fake.calls
    assert call["input"] == ct and call["task"] == "total" and call["fast"] is True
    assert call["ml"] is True and call["device"] == "gpu"
    assert "vertebrae_L1" in call["roi_subset"] and "vertebrae_C1" in call["roi_subset"]
    assert seg.label_format == "totalseg-total" and seg.bodies is None

    fake.calls.clear()
    seg = run_segmenter(
        ct, SegmentOptions(task="vertebrae", bodies=True), work_dir=tmp_path, call=fake
    )
    assert [c["task"] for c in fake.calls] == ["vertebrae_pp_refined", "vertebrae_body"]
    assert "roi_subset" not in fake.calls[0] and "fast" not in fake.calls[0]
    assert seg.label_format == "verse" and seg.bodies is not None and seg.bodies.is_file()
    assert seg.provenance["tasks"] == ["vertebrae_pp_refined", "vertebrae_body"]


def test_other_formats_reach_the_segmenter_as_nifti_in_the_same_space(
    totalseg_example: Path, tmp_path: Path
) -> None:
    """A CT in a format TotalSegmentator does not read (.mgz) reaches it as a NIfTI with the
    same voxels in the same world space; the copy is removed afterwards."""
    src = nib.load(totalseg_example / "example_ct.nii.gz")
    data = np.asarray(src.dataobj).astype(np.float32)
    odd = tmp_path / "ct.mgz"
    nib.save(nib.MGHImage(data, src.affine), odd)
    seen: list[Path] = []

    def check(input: Path, output: Path, **kw: Any) -> None:
        img = nib.as_closest_canonical(nib.load(input))
        ref = nib.as_closest_canonical(nib.Nifti1Image(data, src.affine))
        assert Path(input).name.endswith(".nii.gz")
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(ref.dataobj))
        seen.append(Path(input))
        _as_total_ids(totalseg_example / "totalseg_vertebrae_pp_refined.nii.gz", Path(output))

    run_segmenter(odd, SegmentOptions(), work_dir=tmp_path, call=check)
    assert seen and not seen[0].exists()


@pytest.mark.slow
def test_grade_from_a_ct_alone_keeps_the_segmentation_and_its_provenance(
    totalseg_example: Path,
    tmp_path: Path,
    installed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeTotalSegmentator(totalseg_example)
    _fake_module(monkeypatch, fake)
    ct = totalseg_example / "example_ct.nii.gz"
    out = tmp_path / "out"
    options = GradeOptions(segment=SegmentOptions(bodies=True))
    outcome = grade_to_folder(StudyInputs(ct=ct), out, options)
    assert (out / "segmentation" / "vertebrae.nii.gz").is_file()
    assert (out / "segmentation" / "vertebrae_body.nii.gz").is_file()
    assert not list(tmp_path.glob(".vertgrade-segment-*"))  # the work folder is gone
    doc = json.loads((out / "result.json").read_text())
    prov = doc["provenance"]
    assert prov["segmentation"]["segmenter"] == "TotalSegmentator"
    assert prov["segmentation"]["version"] == "2.18.0"
    assert prov["segmentation"]["tasks"] == ["total", "vertebrae_body"]
    assert prov["inputs"]["labels"]["path"] == str(out / "segmentation" / "vertebrae.nii.gz")
    assert prov["inputs"]["bodies"]["path"] == str(out / "segmentation" / "vertebrae_body.nii.gz")
    # the total task's ids were read as such: T12-L5 (VerSe 19-24), as the example's labels
    assert [v.label for v in outcome.result.vertebrae] == [19, 20, 21, 22, 23, 24]
    assert any(p.name == "vertebrae.nii.gz" for p in outcome.files)


@pytest.mark.slow
def test_grade_from_a_ct_alone_matches_grading_the_same_labels_given(
    totalseg_example: Path,
    tmp_path: Path,
    installed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Segmenting inside vertgrade gives the heights of grading TotalSegmentator's file."""
    _fake_module(monkeypatch, FakeTotalSegmentator(totalseg_example))
    ct = totalseg_example / "example_ct.nii.gz"
    made = grade_to_folder(
        StudyInputs(ct=ct),
        tmp_path / "a",
        GradeOptions(segment=SegmentOptions(task="vertebrae")),
    )
    given = grade_to_folder(
        StudyInputs(ct=ct, labels=totalseg_example / "totalseg_vertebrae_pp_refined.nii.gz"),
        tmp_path / "b",
    )
    a = [(v.label, v.grade, v.status) for v in made.result.vertebrae]
    b = [(v.label, v.grade, v.status) for v in given.result.vertebrae]
    assert a == b
    for va, vb in zip(made.result.vertebrae, given.result.vertebrae, strict=True):
        ha, hb = va.to_record(), vb.to_record()
        for key in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm"):
            assert ha.get(key) == hb.get(key)


def test_a_failed_segmentation_leaves_no_result_folder(
    totalseg_example: Path,
    tmp_path: Path,
    installed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(input: Path, output: Path, **kw: Any) -> None:
        Path(output).write_bytes(b"half")
        raise RuntimeError("killed")

    fake = FakeTotalSegmentator(totalseg_example)
    _fake_module(monkeypatch, fake)
    monkeypatch.setattr(sys.modules["totalsegmentator.python_api"], "totalsegmentator", broken)
    out = tmp_path / "out"
    with pytest.raises(SegmenterError, match="killed"):
        grade_to_folder(StudyInputs(ct=totalseg_example / "example_ct.nii.gz"), out)
    assert not out.exists()
    assert not list(tmp_path.glob(".vertgrade-segment-*"))


def test_a_verse_folder_is_not_segmented(tmp_path: Path) -> None:
    from vertgrade.workflow import needs_segmentation

    folder = tmp_path / "sub-x"
    folder.mkdir()
    assert not needs_segmentation(StudyInputs(ct=folder))
    assert needs_segmentation(StudyInputs(ct=tmp_path / "ct.nii.gz"))
    assert not needs_segmentation(StudyInputs(ct=tmp_path / "ct.nii.gz", labels=tmp_path / "l"))
    assert not needs_segmentation(StudyInputs(labels=tmp_path / "l"))
