"""Per-vertebra threads: the same numbers on any number of threads, errors and progress in order,
and a second measurement pass that re-measures only the bodies whose frame changed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vertgrade import grade_study
from vertgrade._parallel import MAX_DEFAULT_THREADS, default_threads, thread_map
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom


def test_thread_map_keeps_the_order_and_reports_each_result_in_the_calling_thread() -> None:
    caller = threading.get_ident()
    seen: list[tuple[int, int]] = []

    def slow_square(x: int) -> int:
        time.sleep(0.02 * (5 - x))  # the first items end last
        return x * x

    out = thread_map(
        slow_square, range(5), 3, on_done=lambda i: seen.append((i, threading.get_ident()))
    )
    assert out == [0, 1, 4, 9, 16]
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert {t for _, t in seen} == {caller}


def test_thread_map_runs_on_several_threads_and_on_one() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(2, timeout=5)

    def work(x: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # only returns if two calls run at once
        return x

    assert thread_map(work, [1, 2], 2) == [1, 2]
    assert len(names) == 2 and all(n.startswith("vertgrade") for n in names)
    names.clear()
    assert thread_map(lambda x: names.add(threading.current_thread().name) or x, [1, 2, 3], 1) == [
        1,
        2,
        3,
    ]
    assert names == {threading.current_thread().name}


def test_thread_map_raises_the_first_error_and_starts_nothing_more() -> None:
    started: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        if x == 0:
            raise ValueError("bad vertebra 0")
        time.sleep(0.05)
        return x

    with pytest.raises(ValueError, match="bad vertebra 0"):
        thread_map(work, range(40), 2)
    assert len(started) < 40  # the rest were cancelled


def test_default_threads_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERTGRADE_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("VERTGRADE_THREADS", "0")
    with pytest.raises(ValueError, match="VERTGRADE_THREADS='0': must be 1 or more"):
        default_threads()
    monkeypatch.setenv("VERTGRADE_THREADS", "two")
    with pytest.raises(ValueError, match="not a whole number"):
        default_threads()
    monkeypatch.delenv("VERTGRADE_THREADS")
    assert 1 <= default_threads() <= MAX_DEFAULT_THREADS


def _numbers(result):  # type: ignore[no-untyped-def]
    doc = result.to_dict()
    doc.pop("provenance")
    return json.dumps(doc, sort_keys=True)


def test_grades_and_heights_do_not_depend_on_the_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vertgrade.pipeline as pipeline

    ph = make_phantom("T11-L3", ["L1:wedge:0.3"], orientation="PIR", spacing=(2.0, 1.5, 1.5))
    study = study_from_arrays(ph.labels, ph.affine, ct=ph.ct)
    calls: list[int] = []
    real = pipeline.measure_body

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "measure_body", counted)
    one = grade_study(study, threads=1)
    n_one = len(calls)
    three = grade_study(study, threads=3)
    assert _numbers(one) == _numbers(three)
    assert np.array_equal(one.bodies, three.bodies)
    # 5 bodies in the first pass; the second re-measures those whose frame moved, the end
    # vertebrae's pass only the ends that turned: fewer than three full passes
    assert 2 * 5 <= n_one < 3 * 5
    assert len(calls) == 2 * n_one


def test_command_line_imports_nibabel_without_pydicom() -> None:
    pytest.importorskip("pydicom")
    code = (
        "import sys\n"
        "from vertgrade.cli import _import_nibabel_without_pydicom as lean\n"
        "lean()\n"
        "assert 'nibabel' in sys.modules and 'pydicom' not in sys.modules\n"
        "import nibabel.nifti1\n"
        "assert not nibabel.nifti1.have_dicom\n"
        "import pydicom\n"  # vertgrade's own DICOM reading still finds it
        "print(pydicom.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pydicom"
