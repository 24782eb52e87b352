"""Grading parameters: one value, read from TOML or JSON files, written into the provenance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vertgrade.config import (
    GradingConfig,
    NeighbourParams,
    config_from_dict,
    config_to_toml,
    read_params,
)
from vertgrade.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_defaults_and_their_sources() -> None:
    cfg = GradingConfig()
    assert cfg.thresholds == (0.20, 0.25, 0.40)  # Genant 1993
    assert cfg.neighbours == NeighbourParams()
    d = cfg.to_dict()
    assert d["neighbours"]["healthy_loss"] == 0.15 and d["morphometry"]["regions"]["rim_mm"] == 2.0


def test_partial_tables_replace_only_what_they_name() -> None:
    cfg = config_from_dict({"neighbours": {"max_level_gap": 3}, "disagreement_mm": 1})
    assert cfg.neighbours.max_level_gap == 3.0 and isinstance(cfg.neighbours.max_level_gap, float)
    assert cfg.neighbours.healthy_loss == 0.15
    assert cfg.disagreement_mm == 1.0
    assert cfg.thresholds == GradingConfig().thresholds


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": [0.2, 0.25, 0.4]}, "unknown parameter 'threshold'"),
        ({"neighbours": {"gap": 1}}, "unknown parameter 'neighbours.gap'"),
        ({"thresholds": [0.2, 0.25]}, "'thresholds' must be a list of 3 numbers"),
        ({"thresholds": [0.3, 0.25, 0.4]}, "three increasing fractions"),
        ({"prefer_ct": "yes"}, "'prefer_ct' must be bool"),
        ({"hu_core_min_voxels": 2.5}, "'hu_core_min_voxels' must be int"),
        ({"neighbours": 3}, "'neighbours' must be a table"),
    ],
)
def test_bad_parameters_name_the_key(values: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_from_dict(values)


def test_toml_of_the_defaults_round_trips() -> None:
    text = config_to_toml()
    assert "[neighbours]" in text and "[morphometry.regions]" in text
    assert "# Lower RHLV bounds of Genant grades" in text
    assert config_from_dict(tomllib.loads(text)) == GradingConfig()
    changed = GradingConfig(thresholds=(0.15, 0.25, 0.4), refine_frames=False)
    assert config_from_dict(tomllib.loads(config_to_toml(changed))) == changed


def test_read_params_files(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text("thresholds = [0.15, 0.25, 0.4]\n[neighbours]\nmax_level_gap = 2\n")
    expected = {"thresholds": [0.15, 0.25, 0.4], "neighbours": {"max_level_gap": 2}}
    assert read_params(toml) == expected
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"prefer_ct": False}))
    assert read_params(js) == {"prefer_ct": False}
    for name, text, message in [
        ("missing.toml", None, "not found"),
        ("p.yaml", "a: 1", "must be .toml or .json"),
        ("bad.toml", "thresholds = [", "not a valid TOML file"),
        ("bad.json", "{", "not a valid JSON file"),
        ("list.json", "[1, 2]", "must hold a table"),
    ]:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(InputError, match=message) as err:
            read_params(path)
        assert str(path) in str(err.value)


def test_grade_with_a_params_file_records_it(tmp_path: Path) -> None:
    """`vertgrade grade --params`: the thresholds change the grade and land in the provenance;
    a bad file is one line, exit 2, nothing written."""
    from typer.testing import CliRunner

    from vertgrade.cli import app
    from vertgrade.phantom import FractureSpec, make_phantom, write_phantom

    ph = make_phantom("T12-L2", [FractureSpec.parse("L1:wedge:0.17")], spacing=2.0)
    write_phantom(ph, tmp_path / "ph")
    runner = CliRunner()
    args = ["grade", "--labels", str(tmp_path / "ph" / "labels.nii.gz"), "-q"]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "default")])
    assert res.exit_code == 0, res.output
    params = tmp_path / "strict.toml"
    params.write_text("thresholds = [0.12, 0.25, 0.4]\n")
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "strict"), "--params", str(params)])
    assert res.exit_code == 0, res.output
    grades = {}
    for name in ("default", "strict"):
        doc = json.loads((tmp_path / name / "result.json").read_text())
        grades[name] = {v["level"]: v["grade"] for v in doc["vertebrae"]}
        thresholds = doc["provenance"]["parameters"]["thresholds"]
    assert thresholds == [0.12, 0.25, 0.4]
    assert grades["default"]["L1"] == 0 and grades["strict"]["L1"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("threshold = 0.1\n")
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "bad"), "--params", str(bad)])
    assert res.exit_code == 3 and "unknown parameter 'threshold'" in res.stderr
    assert str(bad) in res.stderr and not (tmp_path / "bad").exists()


def test_params_command_prints_a_usable_file() -> None:
    from typer.testing import CliRunner

    from vertgrade.cli import app

    res = CliRunner().invoke(app, ["params"])
    assert res.exit_code == 0
    assert config_from_dict(tomllib.loads(res.stdout)) == GradingConfig()
