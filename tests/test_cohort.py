"""Cohort runs: discovery, parallel grading on Dask, failures, the cohort table, resuming.

The cohort is six small phantoms (L1-L4, 1.5 mm, 130 mm field of view) with known grades, one of
them with a truncated CT. One real ``LocalCluster`` run (two worker processes) is shared by
several tests; the tests that change inputs or parameters work on copies of its folders.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from vertgrade import GradingConfig, grade_study, load_study
from vertgrade.cohort import (
    FAILURE_COLUMNS,
    MANIFEST_NAME,
    CohortProgress,
    CohortSummary,
    MissingExtraError,
    StudySpec,
    discover_studies,
    read_cohort_table,
    run_cohort,
    skipped_folders,
)
from vertgrade.errors import InputError, OutputError
from vertgrade.phantom import make_phantom, write_phantom
from vertgrade.report.files import OUTPUT_FILES
from vertgrade.result import CSV_COLUMNS
from vertgrade.workflow import GradeOptions

#: options that change one parameter (every study must be graded again)
CHANGED = GradeOptions(config=GradingConfig(hu_core_erosion_mm=4.0))

# subject -> fractures; "p3" gets a truncated CT
COHORT: dict[str, list[str]] = {
    "p0": [],
    "p1": ["L2:wedge:0.35"],
    "p2": ["L3:crush:0.45"],
    "p3": ["L2:wedge:0.35"],
    "p4": ["L1:biconcave:0.30"],
    "p5": [],
}
BROKEN = "p3"
GOOD = tuple(s for s in COHORT if s != BROKEN)
LEVELS = ("L1", "L2", "L3", "L4")


def _phantom(fractures: list[str], seed: int) -> Any:
    return make_phantom("L1-L4", fractures, spacing=1.5, fov_mm=(130.0, 130.0), seed=seed)


def _truth_grades(ph: Any) -> dict[str, int]:
    return {t.level: t.grade for t in ph.truth}


@pytest.fixture(scope="module")
def cohort_extra() -> None:
    for module in ("distributed", "pandas", "pyarrow"):
        pytest.importorskip(module, reason="the cohort extra (pip install 'vertgrade[cohort]')")


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Six phantom studies in ``root/<subject>/{ct,labels}.nii.gz``; truth grades per subject."""
    root = tmp_path_factory.mktemp("cohort-in")
    truth = {}
    for seed, (subject, fractures) in enumerate(COHORT.items()):
        ph = _phantom(fractures, seed)
        write_phantom(ph, root / subject)
        truth[subject] = _truth_grades(ph)
    ct = root / BROKEN / "ct.nii.gz"
    data = ct.read_bytes()
    ct.write_bytes(data[: len(data) // 2])  # a truncated gzip stream
    return root, truth


@pytest.fixture(scope="module")
def first_run(
    cohort_extra: None,
    phantom_cohort: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, CohortSummary, list[CohortProgress]]:
    """The cohort graded on a real distributed LocalCluster: 2 worker processes."""
    root, _ = phantom_cohort
    out = tmp_path_factory.mktemp("cohort-out") / "out"
    events: list[CohortProgress] = []
    summary = run_cohort(discover_studies(root), out, workers=2, progress=events.append)
    return out, summary, events


def _plain(value: Any) -> Any:
    """A table cell as Python: NaN, NA and "" -> None; numpy scalars -> int / float / str."""
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return None if value == "" else value


def _rows(df: Any) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def _studies_state(out: Path) -> dict[str, tuple[str, int, int]]:
    """Finished study folders: subject -> (manifest text, folder mtime, result.json mtime)."""
    state = {}
    for d in sorted((out / "studies").iterdir()):
        if d.name.startswith(".") or not (d / MANIFEST_NAME).is_file():
            continue
        state[d.name] = (
            (d / MANIFEST_NAME).read_text(encoding="utf-8"),
            d.stat().st_mtime_ns,
            (d / "result.json").stat().st_mtime_ns,
        )
    return state


# --- the cohort run ------------------------------------------------------------------------


@pytest.mark.slow
def test_cohort_grades_every_study_and_records_the_corrupt_one(
    first_run: tuple[Path, CohortSummary, list[CohortProgress]],
    phantom_cohort: tuple[Path, dict[str, Any]],
) -> None:
    out, summary, events = first_run
    root, truth = phantom_cohort
    assert summary.graded == GOOD and summary.skipped == ()
    assert [f.subject for f in summary.failures] == [BROKEN]
    failure = summary.failures[0]
    assert failure.ct == root / BROKEN / "ct.nii.gz"
    assert str(failure.ct) in failure.error and "truncated" in failure.error
    assert "\n" not in failure.error

    # failures.csv: the subject, its inputs and the one-line error
    import csv

    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == FAILURE_COLUMNS
    assert rows == [
        {
            "subject": BROKEN,
            "ct": str(root / BROKEN / "ct.nii.gz"),
            "labels": str(root / BROKEN / "labels.nii.gz"),
            "bodies": "",
            "error": failure.error,
        }
    ]

    # progress: one event per study, counting up to the total
    assert [e.done for e in events] == list(range(1, 7))
    assert {e.total for e in events} == {6}
    assert all(e.seconds > 0 for e in events)  # time on the worker
    assert sorted((e.subject, e.status) for e in events) == sorted(
        [(s, "graded") for s in GOOD] + [(BROKEN, "failed")]
    )

    # finished folders hold the result and a manifest; the failed study has none
    assert sorted(p.name for p in (out / "studies").iterdir()) == sorted(GOOD)
    for s in GOOD:
        files = {p.name for p in (out / "studies" / s).iterdir()}
        assert files == {*OUTPUT_FILES, MANIFEST_NAME}
        manifest = json.loads((out / "studies" / s / MANIFEST_NAME).read_text())
        assert manifest["subject"] == s
        assert manifest["inputs"]["ct"]["path"] == str(root / s / "ct.nii.gz")
        assert len(manifest["inputs"]["labels"]["sha256"]) == 64
    assert not (out / ".vertgrade-cohort.lock").exists()

    # the cohort table: every vertebra of the five studies, graded as the phantoms' truth
    table = read_cohort_table(out)
    assert list(table.columns) == ["subject", *CSV_COLUMNS]
    assert summary.n_vertebrae == len(table) == 4 * len(GOOD)
    got: dict[str, dict[str, int]] = {}
    for row in _rows(table):
        got.setdefault(row["subject"], {})[row["level"]] = row["grade"]
    assert got == {s: truth[s] for s in GOOD}
    assert {truth[s][lv] for s in GOOD for lv in LEVELS} == {0, 2, 3}  # fractures among them

    # the CSV holds the same table as the Parquet file
    import pandas as pd

    from_csv = pd.read_csv(out / "vertebrae.csv", keep_default_na=False, na_values=[""])
    assert _rows(from_csv) == _rows(table)


@pytest.mark.slow
def test_cohort_results_equal_grading_each_study_alone(
    first_run: tuple[Path, CohortSummary, list[CohortProgress]],
    phantom_cohort: tuple[Path, dict[str, Any]],
) -> None:
    out, _, _ = first_run
    root, _ = phantom_cohort
    table = _rows(read_cohort_table(out))
    for s in GOOD:
        study = load_study(root / s / "ct.nii.gz", root / s / "labels.nii.gz", subject=s)
        alone = grade_study(study)
        # the whole result document, provenance included, is the one written by the cohort
        doc = json.loads((out / "studies" / s / "result.json").read_text())
        assert doc == json.loads(json.dumps(alone.to_dict()))
        # and the cohort table's rows are the study's records
        rows = [{k: v for k, v in r.items() if k != "subject"} for r in table if r["subject"] == s]
        assert rows == [{k: _plain(v) for k, v in r.items()} for r in alone.to_records()]


# --- resuming ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_without_recomputing_finished_studies(
    cohort_extra: None, phantom_cohort: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, truth = phantom_cohort
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        from vertgrade.cohort import discover_studies, run_cohort
        run_cohort(discover_studies({str(root)!r}), {str(out)!r}, workers=1)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,  # its own process group: the cluster dies with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ((out / "studies").is_dir() and len(_studies_state(out)) >= 2):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no study finished within 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    before = _studies_state(out)
    assert 2 <= len(before) < len(GOOD), "the run was not killed midway"
    assert (out / ".vertgrade-cohort.lock").exists()  # left behind by the killed run
    assert not (out / "vertebrae.csv").exists()
    for name in before:  # what is visible is whole
        assert (out / "studies" / name / "bodies.nii.gz").is_file()

    summary = run_cohort(discover_studies(root), out, workers=2)
    assert set(summary.skipped) == set(before)
    assert set(summary.graded) == set(GOOD) - set(before)
    assert [f.subject for f in summary.failures] == [BROKEN]
    after = _studies_state(out)
    assert {s: after[s] for s in before} == before  # not rewritten: same manifests and mtimes
    assert sorted(after) == sorted(GOOD)
    assert not [p.name for p in (out / "studies").iterdir() if p.name.startswith(".")]
    table = _rows(read_cohort_table(out))
    assert len(table) == 4 * len(GOOD)  # earlier studies included
    assert {(r["subject"], r["level"]): r["grade"] for r in table} == {
        (s, lv): truth[s][lv] for s in GOOD for lv in LEVELS
    }


@pytest.mark.slow
def test_changed_inputs_or_parameters_regrade_exactly_the_affected_studies(
    first_run: tuple[Path, CohortSummary, list[CohortProgress]],
    phantom_cohort: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    src_out, _, _ = first_run
    src_root, truth = phantom_cohort
    root, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(src_root, root)  # moved inputs, same bytes: nothing to redo
    shutil.copytree(src_out, out)
    specs = discover_studies(root)
    before = _studies_state(out)

    summary = run_cohort(specs, out, scheduler="synchronous")
    assert summary.graded == () and summary.skipped == GOOD
    assert [f.subject for f in summary.failures] == [BROKEN]  # tried again, fails again
    state = _studies_state(out)
    for s in GOOD:  # results not rewritten; the manifest now names the inputs' new paths
        old_manifest, new_manifest = json.loads(before[s][0]), json.loads(state[s][0])
        assert state[s][2] == before[s][2]  # result.json (the folder's mtime follows the manifest)
        assert new_manifest["key"] == old_manifest["key"]
        assert new_manifest["inputs"]["ct"]["path"] == str(root / s / "ct.nii.gz")
    summary = run_cohort(specs, out, scheduler="synchronous")  # quick check: nothing read
    assert summary.skipped == GOOD and _studies_state(out) == state

    # one input changes: that study only is graded again, with its new numbers
    changed = _phantom(["L3:crush:0.45"], seed=11)
    write_phantom(changed, root / "p1", force=True)
    summary = run_cohort(specs, out, scheduler="synchronous")
    assert summary.graded == ("p1",)
    assert summary.skipped == tuple(s for s in GOOD if s != "p1")
    new_state = _studies_state(out)
    assert {s: new_state[s] for s in GOOD if s != "p1"} == {s: state[s] for s in GOOD if s != "p1"}
    assert new_state["p1"] != state["p1"]
    table = _rows(read_cohort_table(out))
    assert {r["level"]: r["grade"] for r in table if r["subject"] == "p1"} == _truth_grades(changed)
    assert truth["p1"] != _truth_grades(changed)
    assert len(table) == 4 * len(GOOD)

    # an input rewritten with other bytes but its size and mtime kept (cp -p, touch -r): its
    # status-change time moved, so it is read, found changed and graded again
    ct = root / "p2" / "ct.nii.gz"
    st = ct.stat()
    data = bytearray(ct.read_bytes())
    data[4] ^= 0x01  # the gzip header's timestamp: other bytes, the same image, the same size
    ct.write_bytes(bytes(data))
    os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ct.stat().st_size == st.st_size and ct.stat().st_mtime_ns == st.st_mtime_ns
    summary = run_cohort(specs, out, scheduler="synchronous")
    assert summary.graded == ("p2",)

    # a parameter changes: every study is graded again
    summary = run_cohort(specs, out, scheduler="synchronous", options=CHANGED)
    assert summary.graded == GOOD and summary.skipped == ()
    # unchanged again: all skipped; force: all graded
    summary = run_cohort(specs, out, scheduler="synchronous", options=CHANGED)
    assert summary.skipped == GOOD
    summary = run_cohort(
        specs[:1],
        out,
        scheduler="synchronous",
        options=CHANGED,
        force=True,
    )
    assert summary.graded == ("p0",)
    assert len(read_cohort_table(out)) == 4  # the table is the cohort of this run


# --- output folder, lock, dependencies -----------------------------------------------------


@pytest.fixture()
def one_study(phantom_cohort: tuple[Path, dict[str, Any]]) -> list[StudySpec]:
    root, _ = phantom_cohort
    return [s for s in discover_studies(root) if s.subject == "p0"]


def test_an_output_folder_in_use_or_of_something_else_is_refused(
    cohort_extra: None, one_study: list[StudySpec], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        run_cohort(one_study, other, scheduler="synchronous")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file"):
        run_cohort(one_study, tmp_path / "file", scheduler="synchronous")

    out = tmp_path / "out"
    (out / "studies").mkdir(parents=True)
    lock = out / ".vertgrade-cohort.lock"
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(OutputError, match="another cohort run"):
        run_cohort(one_study, out, scheduler="synchronous")
    assert lock.exists() and not (out / "vertebrae.csv").exists()

    # a lock left by a process that is gone is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    summary = run_cohort(one_study, out, scheduler="synchronous")
    assert summary.graded == ("p0",) and not lock.exists()

    # --force writes into a folder of something else
    summary = run_cohort(one_study, other, scheduler="synchronous", force=True)
    assert summary.n_vertebrae == 4 and (other / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_the_grade_options_reach_every_study(
    cohort_extra: None, one_study: list[StudySpec], tmp_path: Path
) -> None:
    """A cohort grades each study as `vertgrade grade` does with the same options (one
    workflow): here the report; a changed option regrades; bad options fail before any work."""
    out = tmp_path / "out"
    summary = run_cohort(one_study, out, scheduler="synchronous")
    assert not (out / "studies" / "p0" / "report.html").exists()
    summary = run_cohort(one_study, out, scheduler="synchronous", options=GradeOptions(report=True))
    assert summary.graded == ("p0",)  # the outputs asked for are part of the manifest's key
    html = (out / "studies" / "p0" / "report.html").read_text()
    assert "<html" in html and "L1" in html
    summary = run_cohort(one_study, out, scheduler="synchronous", options=GradeOptions(report=True))
    assert summary.skipped == ("p0",)
    with pytest.raises(InputError, match="--grader works on the synthesis features"):
        run_cohort(
            one_study,
            tmp_path / "bad",
            scheduler="synchronous",
            options=GradeOptions(grader=tmp_path / "g.json"),
        )
    assert not (tmp_path / "bad").exists()


def test_missing_dask_and_bad_arguments_give_clear_errors(
    cohort_extra: None,
    one_study: list[StudySpec],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingExtraError, match=r"vertgrade\[cohort\]"):
        run_cohort(one_study, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()  # nothing started
    monkeypatch.undo()
    with pytest.raises(InputError, match="workers"):
        run_cohort(one_study, tmp_path / "out", scheduler="tcp://127.0.0.1:1", workers=2)
    with pytest.raises(InputError, match="twice"):
        run_cohort(one_study * 2, tmp_path / "out", scheduler="synchronous")
    with pytest.raises(InputError, match="no studies"):
        run_cohort([], tmp_path / "out", scheduler="synchronous")
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InputError, match="cannot reach the Dask scheduler"),
    ):
        run_cohort(one_study, tmp_path / "out", scheduler="tcp://127.0.0.1:9")
    bad = StudySpec("../escape", None, one_study[0].labels)
    with pytest.raises(InputError, match="cannot name a folder"):
        run_cohort([bad], tmp_path / "out", scheduler="synchronous")


# --- discovery -----------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _table(specs: list[StudySpec], root: Path) -> list[tuple[str, str | None, str, str | None]]:
    def rel(p: Path | None) -> str | None:
        return None if p is None else p.relative_to(root.resolve()).as_posix()

    return [(s.subject, rel(s.ct), rel(s.labels) or "", rel(s.bodies)) for s in specs]


def test_discovery_finds_verse_totalsegmentator_and_phantom_layouts(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        # VerSe: CT in rawdata/, mask in derivatives/; a labels-only subject; a CT without mask
        "verse/rawdata/sub-a/sub-a_ct.nii.gz",
        "verse/derivatives/sub-a/sub-a_seg-vert_msk.nii.gz",
        "verse/derivatives/sub-a/sub-a_seg-subreg_ctd.json",
        "verse/derivatives/sub-b/sub-b_seg-vert_msk.nii.gz",
        "verse/rawdata/sub-c/sub-c_ct.nii.gz",
        "verse20/sub-gl003_dir-ax_ct.nii.gz",
        "verse20/sub-gl003_dir-ax_seg-vert_msk.nii.gz",
        # SPINEPS / TPTBox: entities after seg-vert, the subregion mask as bodies
        "tpt/sub-ct_label-22_ct.nii.gz",
        "tpt/sub-ct_seg-vert_label-22_msk.nii.gz",
        "tpt/sub-ct_seg-subreg_label-22_msk.nii.gz",
        # TotalSegmentator: CT beside a per-structure folder, with the vertebrae_body mask
        "ts1/ct.nii.gz",
        "ts1/seg/vertebrae_L1.nii.gz",
        "ts1/seg/vertebrae_L2.nii.gz",
        "ts1/seg/vertebrae_body.nii.gz",
        "ts1/seg/liver.nii.gz",
        # TotalSegmentator multilabel files with prefixes
        "ts2/example_ct.nii.gz",
        "ts2/totalseg_vertebrae_pp_refined.nii.gz",
        "ts2/totalseg_vertebrae_body.nii.gz",
        # labels only, TotalSegmentator's usual output folder name
        "ts3/segmentations/vertebrae_T12.nii.gz",
        # per-structure files beside their CT
        "ts4/ct.nii.gz",
        "ts4/vertebrae_L3.nii.gz",
        # vertgrade phantom pairs, nested; hidden folders are not searched
        "site/p01/ct.nii.gz",
        "site/p01/labels.nii.gz",
        "site/p01/truth.csv",
        "site/.cache/ct.nii.gz",
        "site/.cache/labels.nii.gz",
        # no labels: not a study
        "orphan/ct.nii.gz",
    )
    (tmp_path / "site" / "loop").symlink_to(tmp_path / "site")  # followed once, no endless walk
    specs = discover_studies(tmp_path)
    assert _table(specs, tmp_path) == [
        ("site_p01", "site/p01/ct.nii.gz", "site/p01/labels.nii.gz", None),
        ("sub-a", "verse/rawdata/sub-a/sub-a_ct.nii.gz",
         "verse/derivatives/sub-a/sub-a_seg-vert_msk.nii.gz", None),
        ("sub-b", None, "verse/derivatives/sub-b/sub-b_seg-vert_msk.nii.gz", None),
        ("sub-ct_label-22", "tpt/sub-ct_label-22_ct.nii.gz",
         "tpt/sub-ct_seg-vert_label-22_msk.nii.gz", "tpt/sub-ct_seg-subreg_label-22_msk.nii.gz"),
        ("sub-gl003_dir-ax", "verse20/sub-gl003_dir-ax_ct.nii.gz",
         "verse20/sub-gl003_dir-ax_seg-vert_msk.nii.gz", None),
        ("ts1", "ts1/ct.nii.gz", "ts1/seg", "ts1/seg/vertebrae_body.nii.gz"),
        ("ts2", "ts2/example_ct.nii.gz", "ts2/totalseg_vertebrae_pp_refined.nii.gz",
         "ts2/totalseg_vertebrae_body.nii.gz"),
        ("ts3", None, "ts3/segmentations", None),
        ("ts4", "ts4/ct.nii.gz", "ts4", None),
    ]  # fmt: skip
    # one study folder given directly: the subject is the folder's name
    assert _table(discover_studies(tmp_path / "site" / "p01"), tmp_path) == [
        ("p01", "site/p01/ct.nii.gz", "site/p01/labels.nii.gz", None)
    ]


def test_folders_with_images_but_no_study_are_listed_with_the_reason(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "site/p01/ct.nii.gz",
        "site/p01/labels.nii.gz",
        "ts1/ct.nii.gz",
        "ts1/seg/vertebrae_L1.nii.gz",
        "ts1/seg/liver.nii.gz",  # in the labels folder: part of the study
        "orphan/ct.nii.gz",
        "odd/scan.mha",
        "odd/mask.nrrd",
        "docs/notes.txt",  # no image: not listed
        ".hidden/ct.nii.gz",
    )
    specs = discover_studies(tmp_path)
    skipped = [(str(p.relative_to(tmp_path)), why) for p, why in skipped_folders(tmp_path, specs)]
    assert [p for p, _ in skipped] == ["odd", "orphan"]
    assert "not recognised as a study (mask.nrrd, scan.mha)" in skipped[0][1]
    assert "a CT (ct.nii.gz) without vertebra labels" in skipped[1][1]
    # a CSV names its studies: nothing is skipped
    assert skipped_folders(tmp_path / "x.csv", specs) == []
    from typer.testing import CliRunner

    from vertgrade.cli import app

    res = CliRunner().invoke(app, ["cohort", str(tmp_path / "nothing-here")])
    assert res.exit_code == 3 and "no such file or folder" in res.stderr


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "no studies found"),
        (("a/ct.nii.gz", "a/notes.txt"), "no studies found"),
        (("a/labels.nii.gz", "a/vertebrae_pp.nii.gz"), "several vertebra label sources"),
        (("a/labels.nii.gz", "a/vertebrae_L1.nii.gz"), "several vertebra label sources"),
        (("a/labels.nii.gz", "a/ct.nii.gz", "a/x_ct.nii.gz"), "several CT files"),
        (
            ("a/sub-1_seg-vert_msk.nii.gz", "b/sub-1_seg-vert_msk.nii.gz"),
            "several vertebra masks",
        ),
        (("x/y/labels.nii.gz", "x_y/labels.nii.gz"), "found twice"),
        (("sub-1/labels.nii.gz", "v/sub-1_seg-vert_msk.nii.gz"), "found twice"),
    ],
)
def test_discovery_refuses_empty_ambiguous_and_duplicate_inputs(
    tmp_path: Path, names: tuple[str, ...], message: str
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    _touch(root, *names)
    with pytest.raises(InputError, match=message) as info:
        discover_studies(root)
    assert info.value.path is not None and str(root) in str(info.value.path)


def test_discovery_reads_a_csv_with_relative_paths(tmp_path: Path) -> None:
    _touch(tmp_path, "d/a_ct.nii.gz", "d/a_seg.nii.gz", "d/b_seg.nii.gz", "d/b_body.nii.gz")
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "cohort.csv"
    listing.write_text(
        "\ufeffSubject, CT ,labels,bodies,age\n"
        "b,,../d/b_seg.nii.gz,../d/b_body.nii.gz,71\n"
        f"a,{tmp_path / 'd' / 'a_ct.nii.gz'},../d/a_seg.nii.gz,,64\n"
        ",,,,\n",
        encoding="utf-8",
    )
    assert _table(discover_studies(listing), tmp_path) == [
        ("a", "d/a_ct.nii.gz", "d/a_seg.nii.gz", None),
        ("b", None, "d/b_seg.nii.gz", "d/b_body.nii.gz"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("subject,ct,labels\n", "lists no studies"),
        ("subject,ct,label\na,,x.nii.gz\n", "no 'labels' column"),
        ("subject,ct,labels\na,,x.nii.gz\n", r"line 2: labels .*x\.nii\.gz does not exist"),
        ("subject,ct,labels\na,,seg.nii.gz\n\nb,missing.nii.gz,seg.nii.gz\n", "line 4: ct"),
        ("subject,ct,labels\na,,seg.nii.gz\na,,seg.nii.gz\n", "listed twice"),
        ("subject,ct,labels\n../a,,seg.nii.gz\n", "cannot name a folder"),
        ("subject,ct,labels\n.a,,seg.nii.gz\n", "cannot name a folder"),
        ("subject,ct,labels\na,,\n", "line 2: no labels file"),
    ],
)
def test_discovery_refuses_bad_csv_files(tmp_path: Path, text: str, message: str) -> None:
    _touch(tmp_path, "seg.nii.gz")
    listing = tmp_path / "cohort.csv"
    listing.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        discover_studies(listing)
    assert info.value.path == listing


def test_discovery_refuses_missing_and_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        discover_studies(tmp_path / "missing")
    (tmp_path / "list.txt").write_text("subject,ct,labels\n")
    with pytest.raises(InputError, match="neither a folder"):
        discover_studies(tmp_path / "list.txt")


def _expected_real_cases(data_dir: Path) -> dict[str, tuple[Path | None, Path, Path | None]]:
    """subject -> (ct, labels, bodies) of every case folder in ``data_dir``, from its files.

    An oracle independent of discovery's rules, for the layouts the shared data uses: a VerSe
    or SPINEPS mask ``sub-*_seg-vert[_label-N]_msk.nii.gz`` is a subject (with its
    ``sub-*[_label-N]_ct.nii.gz`` beside it if there, and a ``seg-subreg`` mask of the same
    name as bodies), a TotalSegmentator ``*vertebrae_pp*.nii.gz`` makes its folder a subject
    (with its ``*ct.nii.gz`` and ``*vertebrae_body.nii.gz``); a folder with neither is no study.
    """
    expected: dict[str, tuple[Path | None, Path, Path | None]] = {}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name[0] != "."):
        for mask in sorted(folder.glob("sub-*_seg-vert*_msk.nii.gz")):
            subject = mask.name.removesuffix("_msk.nii.gz").replace("_seg-vert", "")
            ct = folder / f"{subject}_ct.nii.gz"
            sub = folder / mask.name.replace("_seg-vert", "_seg-subreg")
            expected[subject] = (
                ct.resolve() if ct.is_file() else None,
                mask.resolve(),
                sub.resolve() if sub.is_file() else None,
            )
        for labels in sorted(folder.glob("*vertebrae_pp*.nii.gz")):
            cts = sorted(folder.glob("*ct.nii.gz"))
            bodies = sorted(folder.glob("*vertebrae_body.nii.gz"))
            expected[folder.name] = (
                cts[0].resolve() if cts else None,
                labels.resolve(),
                bodies[0].resolve() if bodies else None,
            )
    return expected


@pytest.mark.realdata
def test_discovery_of_the_shared_real_cases(data_dir: Path) -> None:
    """Every case of ../shared/data is found (the set grows: nothing here names a case)."""
    specs = {s.subject: s for s in discover_studies(data_dir)}
    expected = _expected_real_cases(data_dir)
    assert expected, f"no case folders found in {data_dir}"
    # tptbox-l3 (SPINEPS names) is found with its subregion mask as the bodies
    assert {s: (v.ct, v.labels, v.bodies) for s, v in specs.items()} == expected
    # every subject with expert grades is among them, labels-only where its CT is missing
    import csv

    with open(data_dir / "grades.csv", encoding="utf-8", newline="") as fh:
        graded = {row["subject"] for row in csv.DictReader(fh)}
    assert graded, f"{data_dir / 'grades.csv'} lists no subjects"
    assert graded <= set(specs), f"graded subjects not discovered: {sorted(graded - set(specs))}"
    for subject in graded:
        assert specs[subject].labels.name == f"{subject}_seg-vert_msk.nii.gz"


@pytest.mark.slow
def test_ctrl_c_ends_a_cohort_at_once_with_one_line_and_the_rerun_resumes(
    cohort_extra: None, phantom_cohort: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """SIGINT to the whole process group (what Ctrl-C in a terminal sends) once a study is
    done: exit 130 within seconds, one line on stderr (no worker's traceback), no process left,
    and the next run finishes the cohort."""
    root, _ = phantom_cohort
    out = tmp_path / "out"
    exe = [sys.executable, "-m", "vertgrade", "cohort", str(root), "-o", str(out), "--workers", "2"]
    proc = subprocess.Popen(
        exe,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # as a terminal's foreground command: SIGINT at its default, whatever this process
        # inherited (a shell's background job, as CI may run the tests, ignores it, and a
        # Python started with it ignored keeps ignoring it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 90
    while not ((out / "studies").is_dir() and _studies_state(out)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the cohort did not end within 30 s of Ctrl-C")
    assert time.monotonic() - t0 < 10
    said = err.decode().strip().splitlines()
    assert proc.returncode == 130, said
    assert said == ["error: interrupted"]
    gone = time.monotonic() + 5
    while True:  # the group empties: no worker left behind
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < gone, "worker processes outlived the cohort by 5 s"
        time.sleep(0.1)
    summary = run_cohort(discover_studies(root), out, workers=2)
    assert set(summary.graded) | set(summary.skipped) == set(GOOD)


@pytest.mark.slow
def test_local_workers_grade_on_one_thread_each(
    cohort_extra: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker per core already: the per-vertebra threads are off in the workers (unless
    VERTGRADE_THREADS is set here), and this process's environment is left as it was."""
    import os

    from vertgrade.cohort.run import _dask_client

    monkeypatch.delenv("VERTGRADE_THREADS", raising=False)
    with _dask_client(None, 1, 1) as client:
        seen = client.run(lambda: os.environ.get("VERTGRADE_THREADS"))
    assert list(seen.values()) == ["1"]
    assert "VERTGRADE_THREADS" not in os.environ
    monkeypatch.setenv("VERTGRADE_THREADS", "2")
    with _dask_client(None, 1, 1) as client:
        seen = client.run(lambda: os.environ.get("VERTGRADE_THREADS"))
    assert list(seen.values()) == ["2"]
