"""The command line's contract: exit codes by kind of failure, logging levels, completion."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from vertgrade import cli
from vertgrade.cli import EXIT_CODES, app
from vertgrade.phantom import make_phantom, write_phantom

runner = CliRunner()


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ph")
    write_phantom(make_phantom(levels="T12-L2", spacing=(1.5, 1.5, 1.5)), out)
    return out


def _grade_args(phantom_dir: Path, out: Path) -> list[str]:
    return ["grade", str(phantom_dir / "ct.nii.gz"), "-l", str(phantom_dir / "labels.nii.gz"),
            "-o", str(out)]  # fmt: skip


def test_exit_codes_are_documented_in_help_and_module() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    flat = " ".join(res.stdout.split())
    for code, what in EXIT_CODES.items():
        assert f"{code} {what}" in flat
        assert f"\n{code} " in cli.__doc__ or f"\n{code}  " in cli.__doc__


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    unknown = runner.invoke(app, ["grade", "--no-such-flag"])
    assert unknown.exit_code == 2
    bad_value = runner.invoke(app, ["grade", str(tmp_path), "--label-format", "x"])
    assert bad_value.exit_code == 2 and "--label-format" in bad_value.stderr
    nothing = runner.invoke(app, ["grade"])
    assert nothing.exit_code == 2 and "give a CT" in nothing.stderr


def test_input_errors_exit_3(tmp_path: Path) -> None:
    res = runner.invoke(app, ["grade", str(tmp_path / "none.nii.gz"), "-l", str(tmp_path / "x")])
    assert res.exit_code == 3 and "none.nii.gz: no such file or folder" in res.stderr


def test_internal_errors_exit_5_with_one_line(
    tmp_path: Path, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vertgrade.workflow as wf

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(wf, "grade_to_folder", boom)
    res = runner.invoke(app, _grade_args(phantom_dir, tmp_path / "o"))
    assert res.exit_code == 5
    assert res.stderr.strip() == (
        "error: internal error: ZeroDivisionError: a bug (rerun with --debug for details)"
    )


def test_verbose_says_each_step_and_quiet_says_nothing(tmp_path: Path, phantom_dir: Path) -> None:
    loud = runner.invoke(app, ["-v", *_grade_args(phantom_dir, tmp_path / "a")])
    assert loud.exit_code == 0, loud.output
    assert "loaded ct: RAS grid" in loud.stderr
    assert "graded ct: 3 of 3 vertebrae graded" in loud.stderr
    assert "wrote 4 files into" in loud.stderr
    default = runner.invoke(app, _grade_args(phantom_dir, tmp_path / "b"))
    assert default.exit_code == 0 and "loaded ct" not in default.stderr
    assert "T12" in default.stdout  # the table
    quiet = runner.invoke(app, ["-q", *_grade_args(phantom_dir, tmp_path / "c")])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    assert (tmp_path / "c" / "result.json").is_file()
    logging.getLogger("vertgrade").setLevel(logging.WARNING)


def test_progress_is_not_drawn_when_stderr_is_not_a_terminal(
    tmp_path: Path, phantom_dir: Path
) -> None:
    res = runner.invoke(app, _grade_args(phantom_dir, tmp_path / "o"))
    assert res.exit_code == 0
    assert "measuring the bodies" not in res.stderr and "\x1b[" not in res.stderr


@pytest.mark.slow
def test_progress_bar_reports_each_stage(
    tmp_path: Path, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stage of grade reaches the bar with its text (the bar itself is rich's)."""
    seen: list[tuple[float, float | None, str | None]] = []
    from contextlib import contextmanager

    @contextmanager
    def recording(description: str, *, quiet: bool = False):  # type: ignore[no-untyped-def]
        yield lambda done, total, text=None: seen.append((done, total, text))

    monkeypatch.setattr(cli, "_progress_bar", recording)
    res = runner.invoke(app, [*_grade_args(phantom_dir, tmp_path / "o"), "--report"])
    assert res.exit_code == 0, res.output
    texts = [t for _, _, t in seen]
    for stage in ("frames of the vertebrae", "measuring the bodies", "writing the results",
                  "drawing the report"):  # fmt: skip
        assert stage in texts
    last_measure = [d for d, _, t in seen if t == "measuring the bodies"][-1]
    assert last_measure == 3


def test_a_terminal_progress_bar_runs_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar is redrawn on each update, so no refresh thread keeps the report's figures from
    being drawn on forked workers (report/_workers.py forks only with one thread)."""
    import io
    import threading

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(cli, "_err", Console(file=screen, force_terminal=True, width=80))
    before = threading.active_count()
    with cli._progress_bar("grading") as update:
        update(2, 5, "measuring the bodies")
        assert threading.active_count() == before
    assert "measuring the bodies" in screen.getvalue() and "2/5" in screen.getvalue()


def test_completion_is_offered() -> None:
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout


def test_segmenter_options_are_checked_before_anything(tmp_path: Path) -> None:
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), ct)
    res = runner.invoke(
        app, ["grade", str(ct), "--segment-task", "vertebrae", "--segment-fast", "-o",
              str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 2 and "fast model for 'total' only" in res.stderr
    assert not (tmp_path / "o").exists()


def test_help_and_version_import_nothing_heavy() -> None:
    """--help and --version load the command line only: not numpy, scipy or nibabel (which
    take most of a second), so they answer at once (the timing is bench/'s, not a test's)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vertgrade.cli import app\n"
        "for args in (['--version'], ['--help'], ['grade', '--help']):\n"
        "    try:\n"
        "        app(args, prog_name='vertgrade')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "mods = ('numpy', 'scipy', 'nibabel', 'matplotlib')\n"
        "heavy = sorted(m for m in mods if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]


def test_the_package_imports_its_api_on_first_use() -> None:
    import vertgrade

    assert vertgrade.grade_study.__module__ == "vertgrade.pipeline"
    assert set(vertgrade.__all__) <= set(dir(vertgrade))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vertgrade.nope  # noqa: B018
