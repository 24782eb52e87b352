"""Faults while results are written: a run is one transaction (all of its files or none), a
killed run's leftovers are cleaned by the next, two runs cannot write one folder at once,
``--force`` replaces a folder's vertgrade files as a whole, and a folder that cannot be
written is refused before any work."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vertgrade.errors import OutputError
from vertgrade.io.files import STAGING_PREFIX, output_transaction
from vertgrade.workflow import GradeOptions, StudyInputs, grade_to_folder

AFFINE = np.eye(4)


def _inputs(tmp_path: Path) -> StudyInputs:
    ct = np.full((30, 30, 40), -1000, np.int16)
    ct[5:25, 5:25, 5:35] = 40
    ct[10:20, 10:20, 8:32] = 300
    lab = np.zeros((30, 30, 40), np.uint8)
    lab[10:20, 10:20, 8:18] = 21
    lab[10:20, 10:20, 21:31] = 20
    nib.save(nib.Nifti1Image(ct, AFFINE), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, AFFINE), tmp_path / "seg.nii.gz")
    return StudyInputs(ct=tmp_path / "ct.nii.gz", labels=tmp_path / "seg.nii.gz")


def test_a_killed_runs_staging_is_cleaned_and_not_content(tmp_path: Path) -> None:
    """A process killed (SIGKILL) while writing leaves a hidden staging folder with a partial
    file; the next run into the folder, without --force, is not refused and removes it."""
    out = tmp_path / "out"
    code = (
        "import os, signal, sys\n"
        "from vertgrade.io.files import output_transaction\n"
        f"with output_transaction({str(out)!r}) as stage:\n"
        "    (stage / 'result.json').write_text('{\"partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    leftovers = list(out.glob(f"{STAGING_PREFIX}*"))
    assert leftovers and (leftovers[0] / "result.json").exists()
    assert not (out / "result.json").exists()
    grade_to_folder(_inputs(tmp_path), out)
    assert (out / "result.json").is_file()
    assert not list(out.glob(f"{STAGING_PREFIX}*"))


@pytest.mark.slow
def test_disk_full_while_the_report_is_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report fails (disk full) after the result files are written into staging: no file
    of the run appears; an earlier run's files stay as they were."""
    import vertgrade.report.html as html

    def full(*args: object, **kwargs: object) -> list[Path]:
        raise OSError(errno.ENOSPC, "No space left on device")

    inputs = _inputs(tmp_path)
    monkeypatch.setattr(html, "save_report", full)
    out = tmp_path / "new"
    with pytest.raises(OSError, match="No space"):
        grade_to_folder(inputs, out, GradeOptions(report=True))
    assert not out.exists()
    kept = tmp_path / "kept"
    monkeypatch.undo()
    grade_to_folder(inputs, kept)
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    monkeypatch.setattr(html, "save_report", full)
    with pytest.raises(OSError, match="No space"):
        grade_to_folder(inputs, kept, GradeOptions(report=True), force=True)
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_transaction(out) as stage:
        (stage / "result.json").write_text("{}")
        with pytest.raises(OutputError, match="another vertgrade run"):
            grade_to_folder(_inputs(tmp_path), out, force=True)
    assert (out / "result.json").read_text() == "{}"  # the first run's file, whole


def test_force_replaces_the_vertgrade_files_as_a_whole(tmp_path: Path) -> None:
    """An earlier run's report and synthesis features do not survive a --force run that does
    not write them; a file of the user's stays."""
    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    grade_to_folder(inputs, out, GradeOptions(report=True))
    assert (out / "report.html").exists()
    (out / "synthesis.json").write_text("{}")
    (out / "my-notes.txt").write_text("mine")
    grade_to_folder(inputs, out, force=True)
    names = {p.name for p in out.iterdir()}
    assert names == {
        "result.json",
        "vertebrae.csv",
        "alignment.csv",
        "bodies.nii.gz",
        "my-notes.txt",
    }


@pytest.mark.parametrize("case", ["parent_is_file", "dangling_link"])
def test_an_unwritable_output_is_refused_before_grading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    import vertgrade.workflow as wf

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("graded before the output was checked")

    monkeypatch.setattr(wf, "grade_study", never)
    if case == "parent_is_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
        match = "cannot write here"
    else:
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
        match = "dangling"
    with pytest.raises(OutputError, match=match):
        grade_to_folder(_inputs(tmp_path), out)


def test_outputs_have_normal_permissions(tmp_path: Path) -> None:
    """Result files are readable by others as the umask allows (mkstemp and mkdtemp make 0600
    and 0700)."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        grade_to_folder(_inputs(tmp_path), out)
        for p in out.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        assert stat.S_IMODE(out.stat().st_mode) == 0o755
    finally:
        os.umask(old)


@pytest.mark.slow
def test_reruns_give_byte_identical_files(tmp_path: Path) -> None:
    """The same inputs twice: every file the same bytes, the PDF's dates included (where a
    browser is installed to print it)."""
    from vertgrade.report.pdf import find_browser

    inputs = _inputs(tmp_path)
    pdf = find_browser() is not None
    a, b = tmp_path / "a", tmp_path / "b"
    grade_to_folder(inputs, a, GradeOptions(report=True, pdf=pdf))
    import time

    time.sleep(1.1)  # a PDF printed a second later would carry another date
    grade_to_folder(inputs, b, GradeOptions(report=True, pdf=pdf))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert ("report.pdf" in names) == pdf
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_out_of_memory_says_how_big_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vertgrade.workflow as wf
    from vertgrade.errors import InputError

    def oom(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(wf, "grade_study", oom)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"ran out of memory .*30 x 30 x 40.*crop the CT") as info:
        grade_to_folder(_inputs(tmp_path), out)
    assert "ct.nii.gz" in str(info.value)
    assert not out.exists()
