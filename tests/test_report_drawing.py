"""The report's figures drawn sooner are the same figures.

Forked workers give back the jobs' results in order, their errors as raised, and are not used
beside another thread; a dead worker costs only time. The panels drawn on the pixels they share
(:class:`~vertgrade.report.figures.VertebraPanels`) are, byte for byte, the figures drawn whole;
ticks fixed when a figure is made are those matplotlib would choose at its draw; the voxel
coordinates of the report's sampling are the affine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from functools import partial
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from vertgrade import grade_study
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom
from vertgrade.report import _workers
from vertgrade.report._workers import default_workers, run_jobs
from vertgrade.report.figures import (
    VertebraPanels,
    _fix_ticks,
    figure_png,
    panel_extent_mm,
    vertebra_figure,
)
from vertgrade.report.reformat import _voxel_coords
from vertgrade.result import SpineResult
from vertgrade.study import Study, Volume


def _pid_times(k: int) -> tuple[int, int]:
    return k * k, os.getpid()


# --- the workers ------------------------------------------------------------------------------

# Forking is tried in a fresh interpreter: this one may run other tests' threads by now (a Dask
# cluster's event loop), beside which the workers are rightly not forked.
_FORKED = r"""
import logging, os, sys
from functools import partial
from vertgrade.report._workers import _can_fork, run_jobs

def pid_times(k):
    return k * k, os.getpid()

def fails(k):
    if k == 2:
        raise ValueError(f"job {k} failed")
    return k

def dies_in_a_worker(parent, k):
    if os.getpid() != parent:
        os._exit(3)  # as a worker killed for its memory
    return k, os.getpid()

assert _can_fork()
jobs = [partial(pid_times, k) for k in range(7)]
here, there = run_jobs(jobs, workers=1), run_jobs(jobs, workers=2)
assert [r for r, _ in here] == [r for r, _ in there] == [k * k for k in range(7)]
assert {p for _, p in here} == {os.getpid()} and os.getpid() not in {p for _, p in there}
try:
    run_jobs([partial(fails, k) for k in range(4)], workers=2)
except ValueError as err:
    assert str(err) == "job 2 failed", err
else:
    raise AssertionError("no error")
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
out = run_jobs([partial(dies_in_a_worker, os.getpid(), k) for k in range(3)], workers=2)
assert out == [(k, os.getpid()) for k in range(3)], out
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is used on Linux only")
def test_forked_workers_give_back_results_errors_and_survive_a_death() -> None:
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", _FORKED], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    # the results in order, from other processes; a job's error as raised; a dead worker said,
    # and the jobs run here instead
    *said, last = run.stdout.splitlines()
    assert last == "ok"
    assert len(said) == 1 and said[0].startswith("could not draw the report's figures on 2 ")
    assert said[0].endswith(": drawn here")


def test_no_fork_beside_another_thread() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert default_workers(8) == 1
        pids = [p for _, p in run_jobs([partial(_pid_times, k) for k in range(3)], workers=2)]
        assert set(pids) == {os.getpid()}
    finally:
        stop.set()
        other.join()


def test_one_job_or_one_core_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_workers(1) == 1
    monkeypatch.setattr(_workers, "_usable_cores", lambda: 1)
    assert default_workers(8) == 1


# --- the panels, drawn on their shared pixels -------------------------------------------------


@pytest.fixture(scope="module")
def graded() -> tuple[SpineResult, Study]:
    ph = make_phantom("T12-L2", ("L1:wedge:0.35",), spacing=2.0, fov_mm=(120.0, 120.0), seed=5)
    study = study_from_arrays(ph.labels, ph.affine, ct=ph.ct, subject="panels")
    return grade_study(study), study


@pytest.mark.parametrize("background", ["ct", "labels"])
def test_panels_are_the_figures_byte_for_byte(
    graded: tuple[SpineResult, Study], background: str
) -> None:
    result, study = graded
    doc = result.to_dict()
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    volumes: dict[str, Any] = {"bodies": bodies, "labels": study.labels}
    if background == "ct":
        volumes["ct"] = study.ct
    extent = panel_extent_mm(doc["vertebrae"])
    panels = VertebraPanels(**volumes, extent_mm=extent)
    first, *rest = doc["vertebrae"]
    cases = [
        first,  # draws the shared pixels
        dict(rest[0], status="not_gradable", reason="test", loss_map=None),  # no colour bar
        dict(rest[0], frame=None),  # no slice
        *rest,  # drawn on the shared pixels
    ]
    for v in cases:
        whole = figure_png(vertebra_figure(v, **volumes, extent_mm=extent).figure)
        assert panels.png(v) == whole, v["level"]


def test_fixed_ticks_are_those_of_the_draw() -> None:
    def figure() -> Figure:
        fig = Figure(figsize=(4.0, 3.0), dpi=50)
        ax = fig.add_axes((0.15, 0.15, 0.8, 0.75))
        ax.imshow(np.arange(12.0).reshape(3, 4), extent=(-13.0, 27.0, -4.5, 21.0))
        ax.set_xlim(27.0, -13.0)
        ax.set_title("t", y=1.0)
        return fig

    free, fixed = figure(), figure()
    _fix_ticks(fixed)
    assert figure_png(fixed) == figure_png(free)
    lo, hi = sorted(fixed.axes[0].get_xlim())
    assert all(lo <= t <= hi for t in fixed.axes[0].get_xticks())


def test_voxel_coords_are_the_affine() -> None:
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    affine[:3, :3] = rng.normal(size=(3, 3))
    affine[:3, 3] = rng.normal(size=3) * 50.0
    inv = np.linalg.inv(affine)
    points = rng.uniform(-100.0, 100.0, size=(1000, 3))
    np.testing.assert_allclose(
        _voxel_coords(inv, points), (points @ inv[:3, :3].T + inv[:3, 3]).T, rtol=1e-12, atol=1e-9
    )


@pytest.mark.slow
def test_report_drawn_on_workers_is_the_report_drawn_here(
    graded: tuple[SpineResult, Study], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vertgrade.report import html

    result, study = graded
    default = html.render_report(result, study)
    monkeypatch.setattr(html, "run_jobs", partial(run_jobs, workers=1))
    assert html.render_report(result, study) == default
