"""Bad input: one line ``error: <file>: <problem>`` on stderr, non-zero exit, no traceback, and
no partial output."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from vertgrade.cli import app

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _ct(shape: tuple[int, ...] = (30, 30, 40)) -> np.ndarray:
    ct = np.full(shape, -1000, np.int16)
    ct[5:25, 5:25, 5:35] = 40
    ct[10:20, 10:20, 8:32] = 300
    return ct


def _labels(shape: tuple[int, ...] = (30, 30, 40)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[10:20, 10:20, 8:18] = 21
    lab[10:20, 10:20, 21:31] = 20
    return lab


def _save(path: Path, arr: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


def _run(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, args)


def _check_error(res, name: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == 3, res.output
    err = res.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert name in err, err
    assert "Traceback" not in res.output


@pytest.fixture
def ok_files(tmp_path: Path) -> tuple[Path, Path]:
    return _save(tmp_path / "ct.nii.gz", _ct()), _save(tmp_path / "seg.nii.gz", _labels())


def test_missing_path(tmp_path: Path) -> None:
    res = _run(
        [
            "grade",
            str(tmp_path / "nope.nii.gz"),
            "--labels",
            str(tmp_path / "x.nii.gz"),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    _check_error(res, "nope.nii.gz")
    assert "no such file" in res.stderr
    assert not (tmp_path / "out").exists()


def test_output_is_a_file(tmp_path: Path, ok_files: tuple[Path, Path]) -> None:
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    res = _run(["grade", str(ok_files[0]), "--labels", str(ok_files[1]), "-o", str(out)])
    _check_error(res, "out.txt")
    assert out.read_text() == "keep me"


def test_existing_output_needs_force(tmp_path: Path, ok_files: tuple[Path, Path]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("{}")
    res = _run(["grade", str(ok_files[0]), "--labels", str(ok_files[1]), "-o", str(out)])
    _check_error(res, "out")
    assert (out / "result.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("no_overlap", "do not overlap"),
        ("empty_labels", "empty"),
        ("no_vertebra", "no vertebra"),
        ("nan_ct", "NaN"),
        ("truncated", "truncated"),
        ("ct_2d", "2D"),
        ("ct_4d", "4D"),
        ("bad_label", "outside the VerSe convention"),
        ("float_labels", "non-integer"),
        ("empty_file", "empty file"),
        ("not_nifti", "not an image vertgrade reads"),
        ("stray_29", "ambiguous label map"),
        ("ct_int8", "8 bits"),
        ("ct_no_rescale", "without its rescale"),
        ("reversed_levels", "foot to head"),
        ("mha", "MetaImage"),
        ("binary_mask", "binary spine mask"),
        ("tiny_voxels", "voxel sizes"),
    ],
)
def test_bad_inputs(tmp_path: Path, case: str, expect: str) -> None:
    ct = tmp_path / "ct.nii.gz"
    seg = tmp_path / "seg.nii.gz"
    _save(ct, _ct())
    _save(seg, _labels())
    culprit = seg
    if case == "no_overlap":
        far = AFFINE.copy()
        far[:3, 3] = [500.0, 0.0, 0.0]
        _save(seg, _labels(), far)
    elif case == "empty_labels":
        _save(seg, np.zeros((30, 30, 40), np.uint8))
    elif case == "no_vertebra":
        lab = np.zeros((30, 30, 40), np.uint8)
        lab[2:5, 2:5, 2:5] = 5  # TotalSegmentator 'total': liver only
        lab[6:8, 6:8, 6:8] = 90
        _save(seg, lab)
    elif case == "nan_ct":
        arr = _ct().astype(np.float32)
        arr[3, 3, 3] = np.nan
        _save(ct, arr)
        culprit = ct
    elif case == "truncated":
        data = ct.read_bytes()
        ct.write_bytes(data[: len(data) // 2])
        culprit = ct
    elif case == "ct_2d":
        _save(ct, _ct()[:, :, 0])
        culprit = ct
    elif case == "ct_4d":
        _save(ct, np.stack([_ct(), _ct()], axis=-1))
        culprit = ct
    elif case == "bad_label":
        lab = _labels()
        lab[1, 1, 1] = 27
        _save(seg, lab)
    elif case == "stray_29":
        # one voxel of label 29 in a valid VerSe map must not make it a TotalSegmentator one
        lab = _labels()
        lab[1, 1, 1] = 29
        _save(seg, lab)
    elif case == "ct_int8":
        _save(ct, np.clip(_ct(), -128, 127).astype(np.int8))
        culprit = ct
    elif case == "ct_no_rescale":
        stored = _ct().astype(np.int32)
        stored[10:20, 10:20, 8] = 1100  # a cortical endplate
        _save(ct, (stored + 1024).astype(np.uint16))  # 0..4095 storage, the rescale lost
        culprit = ct
    elif case == "reversed_levels":
        lab = np.zeros((30, 30, 40), np.uint8)
        lab[10:20, 10:20, 2:12] = 20  # L1 lowest, L3 highest: the numbering runs foot to head
        lab[10:20, 10:20, 15:25] = 21
        lab[10:20, 10:20, 28:38] = 22
        _save(seg, lab)
    elif case == "mha":
        culprit = tmp_path / "ct.mha"
        culprit.write_bytes(b"ObjectType = Image\nNDims = 3\n")
        ct = culprit
    elif case == "binary_mask":
        _save(seg, (_labels() > 0).astype(np.uint8))
    elif case == "tiny_voxels":
        _save(ct, _ct(), np.diag([1e-4, 1e-4, 1e-4, 1.0]))
        culprit = ct
    elif case == "float_labels":
        _save(seg, _labels().astype(np.float32) + 0.5 * (_labels() > 0))
    elif case == "empty_file":
        ct.write_bytes(b"")
        culprit = ct
    elif case == "not_nifti":
        culprit = tmp_path / "ct.txt"
        culprit.write_text("hello")
        ct = culprit
    out = tmp_path / "out"
    res = _run(["grade", str(ct), "--labels", str(seg), "-o", str(out)])
    _check_error(res, culprit.name)
    assert expect in res.stderr, res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_label_format_is_decided_from_the_whole_map(tmp_path: Path) -> None:
    """A stray voxel above 28 is ambiguous under auto (the error names --label-format); given
    --label-format verse it is named with its voxel count; a TotalSegmentator map (structures
    with ids above 28) is read as one and the result says so."""
    from vertgrade.errors import InputError
    from vertgrade.io.labels import convert_labels
    from vertgrade.study import Volume

    lab = _labels()
    lab[1, 1, 1] = 29
    notes: list[str] = []
    with pytest.raises(InputError, match="--label-format"):
        convert_labels(Volume(lab, AFFINE, "labels"), "auto", notes)
    with pytest.raises(InputError, match=r"29 \(1 voxel\)"):
        convert_labels(Volume(lab, AFFINE, "labels"), "verse", notes)
    ts = np.where(_labels() == 21, 30, np.where(_labels() == 20, 31, 0)).astype(np.uint8)
    ts[0:4, 0:4, 0:4] = 5  # a small organ of the total task
    out = convert_labels(Volume(ts, AFFINE, "labels"), "auto", notes)
    assert sorted(np.unique(out.array).tolist()) == [0, 20, 21]
    assert "TotalSegmentator" in notes[-1] and "30, 31" in notes[-1]
    verse = convert_labels(Volume(_labels(), AFFINE, "labels"), "auto", notes)
    assert verse.array is not None and "VerSe" in notes[-1]


def test_gzip_truncation_is_detected_not_crash(tmp_path: Path) -> None:
    raw = gzip.compress(b"not a nifti at all" * 100)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(raw)
    res = _run(["grade", str(bad), "--labels", str(bad), "-o", str(tmp_path / "o")])
    _check_error(res, "bad.nii.gz")


def test_a_pickle_grader_is_refused_before_any_work(
    tmp_path: Path, ok_files: tuple[Path, Path]
) -> None:
    """``grade --grader`` with a joblib pickle whose loading would write a marker: one line
    naming the file and why, exit 2, no marker, no output folder."""
    import joblib

    marker = tmp_path / "marker.txt"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.write_text, (marker, "code ran"))

    evil = tmp_path / "grader.joblib"
    joblib.dump({"format": "vertgrade-grader", "model": Payload()}, evil, compress=3)
    out = tmp_path / "out"
    res = _run(
        [
            "grade",
            str(ok_files[0]),
            "--labels",
            str(ok_files[1]),
            "-o",
            str(out),
            "--reference",
            "synthesis",
            "--model",
            str(tmp_path / "generator.safetensors"),
            "--grader",
            str(evil),
        ]
    )
    _check_error(res, "grader.joblib")
    assert "pickle can run code" in res.stderr
    assert not marker.exists() and not out.exists()


def test_version() -> None:
    res = _run(["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("vertgrade ")


def test_a_vertebra_outside_a_shorter_ct_is_still_reported(tmp_path: Path) -> None:
    """A CT that stops below L1 while the labels reach it: L1 is in every output, not gradable
    with the reason, and L2 is graded."""
    import json

    ct = _save(tmp_path / "ct.nii.gz", _ct()[:, :, :20])  # z 0..19: L2 (8-17) inside, L1 not
    seg = _save(tmp_path / "seg.nii.gz", _labels())
    out = tmp_path / "out"
    res = _run(["grade", str(ct), "--labels", str(seg), "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())
    by_level = {v["level"]: v for v in doc["vertebrae"]}
    assert set(by_level) == {"L1", "L2"}
    assert by_level["L1"]["status"] == "not_gradable" and "outside_ct" in by_level["L1"]["flags"]
    assert "outside the CT" in by_level["L1"]["reason"]
    assert any("outside the CT" in n for n in doc["notes"])
    assert "L1" in (out / "vertebrae.csv").read_text()


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ('{"0": {"direction": ["P", "I", "R"]}}', "expected a JSON list"),
        (
            '[{"direction": ["P", "I"]}, {"label": 20, "X": 1, "Y": 2, "Z": 3}]',
            "three axis letters",
        ),
        ('[{"direction": ["P", "A", "R"]}]', "three axis letters"),
        ('[{"direction": ["P", "I", "R"]}, {"label": "L1", "X": 1, "Y": 2, "Z": 3}]', "entry 1"),
        ('[{"direction": ["P", "I", "R"]}, {"label": 20, "X": 1}]', "entry 1"),
        ("not json", "cannot be read as JSON"),
    ],
)
def test_bad_centroid_files(tmp_path: Path, content: str, expect: str) -> None:
    """Centroid files that used to crash (a two-letter direction, a dict) or said "(0)": one
    clear error naming the file."""
    from vertgrade.errors import InputError
    from vertgrade.io.load import read_verse_centroids
    from vertgrade.study import GridInfo

    path = tmp_path / "sub-x_ctd.json"
    path.write_text(content)
    grid = GridInfo((30, 30, 40), np.eye(4), np.array([[0, 1], [1, 1], [2, 1]], float))
    with pytest.raises(InputError, match=expect) as info:
        read_verse_centroids(path, grid)
    assert "sub-x_ctd.json" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_qform_and_sform_that_disagree_are_reported(tmp_path: Path) -> None:
    """A CT whose qform is 20 mm from its sform: graded on the sform (as nibabel reads it),
    and the result's notes say so."""
    import json

    img = nib.Nifti1Image(_ct(), AFFINE)
    shifted = AFFINE.copy()
    shifted[2, 3] += 20.0
    img.set_sform(AFFINE, code=1)
    img.set_qform(shifted, code=1)
    nib.save(img, tmp_path / "ct.nii.gz")
    seg = _save(tmp_path / "seg.nii.gz", _labels())
    out = tmp_path / "out"
    res = _run(["grade", str(tmp_path / "ct.nii.gz"), "--labels", str(seg), "-o", str(out)])
    assert res.exit_code == 0, res.output
    notes = json.loads((out / "result.json").read_text())["notes"]
    assert any("qform and sform disagree by up to 20.0 mm" in n for n in notes), notes


def test_a_folder_that_is_neither_verse_nor_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    res = _run(["grade", str(folder), "-o", str(out)])
    _check_error(res, "stuff")
    assert "neither a VerSe subject folder" in res.stderr and "nor a DICOM series" in res.stderr
    assert not out.exists()
