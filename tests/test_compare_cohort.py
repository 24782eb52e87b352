"""The cohort form of compare (vertgrade.cohort.pairs): a CSV of pairs, each compared into its
folder, all rows in one table, the pairs that fail listed with the reason."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vertgrade.cli import app
from vertgrade.cohort.pairs import read_pairs, run_pairs
from vertgrade.errors import InputError

runner = CliRunner()


def _pair(root: Path, name: str, levels: str, *, later: str) -> Path:
    res = runner.invoke(
        app,
        ["phantom", "-o", str(root / name), "--levels", levels, "--spacing", "1.5",
         "--fracture", "L1:wedge:0.22", "--follow-up", later],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / name


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    a = _pair(root, "a", "T12-L3", later="L3:crush:0.30")
    b = _pair(root, "b", "T12-L3", later="L1:wedge:0.40")
    text = "subject,prior,current,prior_labels,current_labels,prior_date,current_date\n"
    for s, d in (("pa", a), ("pb", b)):
        text += (
            f"{s},{d.name}/prior/ct.nii.gz,{d.name}/current/ct.nii.gz,"
            f"{d.name}/prior/labels.nii.gz,{d.name}/current/labels.nii.gz,2021-03-01,2023-03-01\n"
        )
    # a pair that cannot be compared: its current study is a folder holding no study
    c = root / "c"
    c.mkdir()
    (c / "notes.txt").write_text("not a study")
    text += "pc,a/prior/ct.nii.gz,c,a/prior/labels.nii.gz,,,\n"
    path = root / "pairs.csv"
    path.write_text(text)
    return path


def test_bad_csv_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("subject,prior\nx,a\n")
    with pytest.raises(InputError, match="no current column"):
        read_pairs(bad)
    (tmp_path / "a").mkdir()
    bad.write_text("subject,prior,current\nx,a,missing\n")
    with pytest.raises(InputError, match=r"line 2: current .*missing does not exist"):
        read_pairs(bad)
    bad.write_text("subject,prior,current,prior_date\nx,a,a,1 March\n")
    with pytest.raises(InputError, match="not an ISO date"):
        read_pairs(bad)
    bad.write_text("subject,prior,current\nx,a,a\nx,a,a\n")
    with pytest.raises(InputError, match="listed twice"):
        read_pairs(bad)


@pytest.mark.slow
def test_every_pair_compared_into_one_table(pairs_csv: Path, tmp_path: Path) -> None:
    specs = read_pairs(pairs_csv)
    assert [s.subject for s in specs] == ["pa", "pb", "pc"]
    out = tmp_path / "out"
    summary = run_pairs(specs, out, scheduler="synchronous")
    assert summary.compared == ("pa", "pb") and [f[0] for f in summary.failures] == ["pc"]
    assert (
        "neither a VerSe" in summary.failures[0][1]
        and str(pairs_csv.parent / "c") in (summary.failures[0][1])
    )
    rows = _rows(out / "comparisons.csv")
    status = {(r["subject"], r["level"]): r["status"] for r in rows}
    assert status[("pa", "L3")] == "incident" and status[("pa", "L1")] == "stable"
    assert status[("pb", "L1")] == "worsening" and status[("pb", "L3")] == "stable"
    assert summary.n_rows == len(rows) == 8
    assert [r["subject"] for r in _rows(out / "failures.csv")] == ["pc"]
    again = run_pairs(specs, out, scheduler="synchronous")  # a rerun skips the compared pairs
    assert again.skipped == ("pa", "pb") and again.compared == ()
    assert _rows(out / "comparisons.csv") == rows


@pytest.mark.slow
def test_cli_on_a_local_dask_cluster(pairs_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "cli"
    res = runner.invoke(app, ["compare-cohort", str(pairs_csv), "-o", str(out), "-w", "2"])
    assert res.exit_code == 1, res.output  # one pair failed: listed, the others done
    assert "2 compared, 0 already done, 1 failed; 8 vertebrae" in res.stdout
    assert "failed: pc:" in res.stderr
    assert {r["subject"] for r in _rows(out / "comparisons.csv")} == {"pa", "pb"}
