"""The command line, end to end through Typer's CliRunner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from vertgrade.cli import app
from vertgrade.report.files import validate_result

runner = CliRunner()


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


@pytest.mark.slow
def test_phantom_then_grade_writes_outputs_on_the_input_grid(tmp_path: Path) -> None:
    ph = tmp_path / "ph"
    res = runner.invoke(
        app,
        [
            "phantom",
            "-o",
            str(ph),
            "--levels",
            "T11-L3",
            "--fracture",
            "L1:wedge:0.35",
            "--orientation",
            "PIR",
            "--spacing",
            "3,1,1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert {p.name for p in ph.iterdir()} == {"ct.nii.gz", "labels.nii.gz", "truth.csv"}
    out = tmp_path / "out"
    res = runner.invoke(
        app, ["grade", str(ph / "ct.nii.gz"), "--labels", str(ph / "labels.nii.gz"), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "L1" in res.stdout
    ct = nib.load(ph / "ct.nii.gz")
    bodies = nib.load(out / "bodies.nii.gz")
    assert bodies.shape == ct.shape
    assert np.allclose(bodies.affine, ct.affine)
    assert nib.aff2axcodes(bodies.affine) == ("P", "I", "R")
    labels = np.asanyarray(nib.load(ph / "labels.nii.gz").dataobj)
    b = np.asanyarray(bodies.dataobj)
    assert set(np.unique(b)) == set(np.unique(labels))
    assert np.all(labels[b > 0] == b[b > 0])  # bodies are inside their own vertebra
    doc = json.loads((out / "result.json").read_text())
    validate_result(doc)
    assert doc["provenance"]["inputs"]["ct"]["sha256"]
    rows = _csv(out / "vertebrae.csv")
    truth = {r["level"]: r for r in _csv(ph / "truth.csv")}
    for row in rows:
        assert row["grade"] == truth[row["level"]]["grade"]
    required = {
        "label",
        "level",
        "grade",
        "type",
        "rhlv",
        "rhlv_anterior",
        "rhlv_middle",
        "rhlv_posterior",
        "height_anterior_mm",
        "height_middle_mm",
        "height_posterior_mm",
        "confidence",
        "flags",
        "hu_trabecular",
    }
    assert required <= set(rows[0])


@pytest.mark.slow
def test_labels_only_grade(tmp_path: Path) -> None:
    ph = tmp_path / "ph"
    assert runner.invoke(app, ["phantom", "-o", str(ph), "--levels", "L1-L3"]).exit_code == 0
    out = tmp_path / "out"
    res = runner.invoke(app, ["grade", "--labels", str(ph / "labels.nii.gz"), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = _csv(out / "vertebrae.csv")
    assert all(r["hu_trabecular"] == "" for r in rows)
    assert all(r["grade"] == "0" for r in rows)


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "grades agree with the truth for 8 of 8 vertebrae" in res.stdout
    for name in ("result.json", "vertebrae.csv", "bodies.nii.gz"):
        assert (out / "result" / name).is_file()
    again = runner.invoke(app, ["demo", "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.stderr


def test_phantom_rejects_bad_fracture(tmp_path: Path) -> None:
    res = runner.invoke(app, ["phantom", "-o", str(tmp_path / "x"), "--fracture", "L1:squash:0.3"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: --fracture")
    assert not (tmp_path / "x").exists()


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("grade", "demo", "phantom"):
        assert cmd in res.stdout


@pytest.mark.slow
def test_evaluate_command(tmp_path: Path) -> None:
    """grade two phantom studies, evaluate them against their truth grades."""
    rows = ["subject,label,grade"]
    outs = []
    for i, fr in enumerate(("L1:crush:0.45", "L2:wedge:0.3")):
        ph = tmp_path / f"ph{i}"
        assert (
            runner.invoke(
                app,
                [
                    "phantom",
                    "-o",
                    str(ph),
                    "--levels",
                    "T12-L3",
                    "--fracture",
                    fr,
                    "--seed",
                    str(i),
                ],
            ).exit_code
            == 0
        )
        out = tmp_path / f"out{i}"
        res = runner.invoke(
            app,
            [
                "grade",
                str(ph / "ct.nii.gz"),
                "--labels",
                str(ph / "labels.nii.gz"),
                "-o",
                str(out),
                "-q",
                "--subject",
                f"s{i}",
            ],
        )
        assert res.exit_code == 0, res.output
        outs.append(str(out))
        rows += [f"s{i},{r['label']},{r['grade']}" for r in _csv(ph / "truth.csv")]
    grades = tmp_path / "grades.csv"
    grades.write_text("\n".join(rows) + "\n")
    res = runner.invoke(
        app,
        [
            "evaluate",
            *outs,
            "--grades",
            str(grades),
            "-o",
            str(tmp_path / "ev"),
            "--n-boot",
            "50",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["scopes"]["all"]["metrics"]["accuracy"]["value"] == 1.0


@pytest.mark.slow
def test_grade_from_dicom_with_dicom_outputs(tmp_path: Path) -> None:
    """A DICOM CT series on the command line: same grades as the NIfTI path, DICOM outputs."""
    pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from test_dicom import write_series  # the DICOM tests' own series writer
    from vertgrade.phantom import FractureSpec, make_phantom

    ph = make_phantom("T12-L2", [FractureSpec.parse("L1:wedge:0.35")], seed=2)
    series_dir = tmp_path / "series"
    write_series(ph.ct, ph.affine, series_dir)
    nib.save(nib.Nifti1Image(ph.labels, ph.affine), tmp_path / "seg.nii.gz")
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "grade",
            str(series_dir),
            "--labels",
            str(tmp_path / "seg.nii.gz"),
            "-o",
            str(out),
            "--dicom-out",
            "--anonymize",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {r["level"]: r for r in _csv(out / "vertebrae.csv")}
    assert rows["L1"]["grade"] == "2"
    names = {p.name for p in (out / "dicom").iterdir()}
    assert {"measurements_sr.dcm", "bodies_seg.dcm"} <= names
    bad = runner.invoke(
        app,
        [
            "grade",
            str(tmp_path / "seg.nii.gz"),
            "--labels",
            str(tmp_path / "seg.nii.gz"),
            "-o",
            str(tmp_path / "o2"),
            "--dicom-out",
        ],
    )
    assert bad.exit_code == 3 and "need a DICOM series" in bad.stderr


@pytest.mark.slow
def test_synthesis_commands_end_to_end(tmp_path: Path) -> None:
    """synthesis-data -> train-synthesis (2 epochs) -> grade --reference synthesis: the
    commands run and write their files (accuracy is tested in tests/test_synthesis.py)."""
    pytest.importorskip("torch")
    rows = ["subject,label,grade"]
    folders = []
    for i, fr in ((1, []), (2, ["--fracture", "L1:wedge:0.3"])):
        ph = tmp_path / f"ph{i}"
        assert (
            runner.invoke(
                app, ["phantom", "-o", str(ph), "--levels", "T11-L2", "--seed", str(i), *fr]
            ).exit_code
            == 0
        )
        v = tmp_path / f"v{i}"
        v.mkdir()
        (ph / "ct.nii.gz").rename(v / f"sub-p{i}_ct.nii.gz")
        (ph / "labels.nii.gz").rename(v / f"sub-p{i}_seg-vert_msk.nii.gz")
        rows += [f"sub-p{i},{r['label']},{r['grade']}" for r in _csv(ph / "truth.csv")]
        folders.append(str(v))
    grades = tmp_path / "g.csv"
    grades.write_text("\n".join(rows) + "\n")
    samples, model, out = tmp_path / "samples", tmp_path / "model", tmp_path / "out"
    res = runner.invoke(
        app, ["synthesis-data", *folders, "--grades", str(grades), "-o", str(samples)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train-synthesis",
            str(samples),
            "-o",
            str(model),
            "--epochs",
            "1",
            "--shrm-pool",
            "global",
            "--healthy-max-grade",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "1/1 epochs" in res.stdout and "generator parameters" in res.stdout
    from vertgrade.synthesis.modelfile import read_model_file

    mf = read_model_file(model / "generator.safetensors")
    assert mf.config.name == "tiny" and mf.config.shrm_pool == "global"
    assert mf.config.healthy_max_grade == 1
    bad = runner.invoke(
        app, ["train-synthesis", str(samples), "-o", str(tmp_path / "m2"), "--shrm-pool", "max"]
    )
    assert bad.exit_code == 2 and "--shrm-pool" in bad.stderr
    res = runner.invoke(
        app,
        [
            "grade",
            folders[1],
            "-o",
            str(out),
            "--reference",
            "synthesis",
            "--model",
            str(model / "generator.safetensors"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())
    assert doc["provenance"]["reference_estimator"] != "neighbours"
    assert (out / "synthesis.json").is_file()
    assert all(
        v["grade_method"] == "thresholds" and v["threshold_grade"] == v["grade"]
        for v in doc["vertebrae"]
    )
    bad = runner.invoke(
        app,
        [
            "grade",
            folders[1],
            "-o",
            str(tmp_path / "o4"),
            "--grader",
            str(tmp_path / "grader.json"),
        ],
    )
    assert bad.exit_code == 2 and "--reference synthesis" in bad.stderr
    bad = runner.invoke(
        app,
        [
            "grade",
            folders[1],
            "-o",
            str(tmp_path / "o2"),
            "--reference",
            "synthesis",
            "--model",
            str(tmp_path / "missing.safetensors"),
        ],
    )
    assert bad.exit_code == 3 and "missing.safetensors" in bad.stderr


def _spine_result():  # type: ignore[no-untyped-def]
    from vertgrade import grade_study
    from vertgrade.io.load import study_from_arrays
    from vertgrade.phantom import make_phantom

    ph = make_phantom("T12-L3", ["L1:wedge:0.32"], spacing=1.5, fov_mm=(120.0, 120.0), seed=4)
    return grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))


def test_the_table_never_cuts_a_number() -> None:
    """Piped (not a terminal): the whole table, every value in full, however wide; on a narrow
    terminal: columns dropped with a note naming them, the numbers left whole."""
    import io

    from rich.console import Console

    from vertgrade.cli import _print_table

    result = _spine_result()
    heights = [
        "/".join(f"{v.heights_mm.get(k):.1f}" for k in ("anterior", "middle", "posterior"))
        for v in result.vertebrae
        if v.heights_mm is not None
    ]
    piped = io.StringIO()
    _print_table(Console(file=piped, width=80), result)
    text = piped.getvalue()
    assert "…" not in text
    assert all(h in text for h in heights)
    for v in result.vertebrae:  # the flags (or the reason) in full, on the vertebra's line
        said = v.reason or ", ".join(v.flags)
        line = next(ln for ln in text.splitlines() if ln.startswith(f"│ {v.level} "))
        assert said in line, (said, line)
    narrow = io.StringIO()
    _print_table(Console(file=narrow, width=60, force_terminal=True, color_system=None), result)
    text = narrow.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    assert "columns left out to fit 60 columns: HU" in text.replace("\n", " ")
    l1 = next(v for v in result.vertebrae if v.level == "L1")
    assert "/".join(f"{100 * l1.rhlv[k]:.0f}" for k in ("anterior", "middle", "posterior")) in text


def test_help_shows_flags_as_flags() -> None:
    """``--force`` takes no value: ``--help`` shows no type beside it; a list argument reads
    as repeated values."""
    from typer.testing import CliRunner

    from vertgrade.cli import app

    res = CliRunner().invoke(app, ["grade", "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    force = next(line for line in res.output.splitlines() if "--force" in line)
    assert "<bool>" not in force and "Overwrite" in force
    assert "<bool>" not in res.output
    res = CliRunner().invoke(app, ["train-grader", "--help"], env={"COLUMNS": "120"})
    # typer 0.29 would print <list[Path]>; vertgrade shows <path>... (typer < 0.29: <path>)
    assert "<path>" in res.output and "list[" not in res.output
