"""The report's figures drawn on a few processes forked from this one, where that is safe.

Drawing a figure with matplotlib is Python work that holds the GIL, so threads do not share it
out; processes do. A forked process starts with everything this one has: matplotlib imported,
the study's volumes and the result in memory, and nothing to copy or import again (a process
started afresh, as ``spawn`` and ``forkserver`` start one, spends longer importing numpy, SciPy
and matplotlib than a report takes to draw). Each job is a callable that draws one figure and
returns its PNG bytes; only those bytes travel back.

Forking is used only where it is known to be safe and worth it (:func:`default_workers`): on
Linux, with at least two cores for this process, and while this process runs no other Python
thread, which could hold a lock (a file's, a logger's) at the moment of the fork and leave the
child to wait on it forever. Native threads of numerical libraries (the BLAS thread pool) hold
none of Python's locks and are ignored. Everywhere else (macOS, Windows, one core, a program
with threads of its own: a cohort's Dask worker with its event loop, the command line while it
draws a progress bar on a terminal; a daemonic process) the jobs run here, one after the other.
The figures are the same either way (the same code draws them, with the same fonts). Measured
on a 2-core machine (``bench/bench_report.py``), two workers take the report's figures from
about 1.5 s to 0.8 s.

Examples
--------
>>> run_jobs([lambda: 1, lambda: 2], workers=1)
[1, 2]
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["MAX_WORKERS", "default_workers", "run_jobs"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: At most this many worker processes: a report has a few to a few dozen figures, and each
#: worker pays for its first figure's font and cache set-up.
MAX_WORKERS = 4

# The jobs, in each worker process: inherited through the fork (the fork start method does not
# pickle the initializer's arguments, so the jobs may hold the volumes at no cost).
_JOBS: Sequence[Callable[[], Any]] = ()


def _can_fork() -> bool:
    """Linux, no Python thread but this one, and not a daemonic process (which may not have
    children)."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and not multiprocessing.current_process().daemon
    )


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(n_jobs: int) -> int:
    """How many processes to run ``n_jobs`` jobs on: one per core this process may use, at most
    :data:`MAX_WORKERS` and ``n_jobs``, where forking is safe (see the module docstring); else 1
    (the jobs run here, one after the other)."""
    if n_jobs < 2 or not _can_fork():
        return 1
    return max(1, min(_usable_cores(), MAX_WORKERS, n_jobs))


def run_jobs(jobs: Sequence[Callable[[], T]], *, workers: int | None = None) -> list[T]:
    """``[job() for job in jobs]``, on up to ``workers`` forked processes.

    Parameters
    ----------
    jobs : sequence of callables
        Each takes no argument and returns a picklable value (a figure's PNG bytes).
    workers : int, optional
        Default :func:`default_workers`; 1 runs the jobs here. More than 1 is honoured only
        where forking is safe (else the jobs run here).

    Returns
    -------
    list
        The jobs' results, in their order.

    Raises
    ------
    Exception
        The first exception a job raised, as it raised it (from a worker: with the worker's
        traceback as its cause). A worker that could not be started, or that died (killed for
        memory), costs only time: the jobs are then run here.
    """
    n = default_workers(len(jobs)) if workers is None else max(1, workers)
    if n > 1 and len(jobs) > 1 and _can_fork():
        logger.debug("%d jobs on %d forked processes", len(jobs), min(n, len(jobs)))
        results = _run_forked(jobs, min(n, len(jobs)))
        if results is not None:
            return results
    else:
        logger.debug("%d jobs in this process", len(jobs))
    return [job() for job in jobs]


def _receive(jobs: Sequence[Callable[[], Any]]) -> None:
    global _JOBS
    _JOBS = jobs


def _run_one(i: int) -> Any:
    return _JOBS[i]()


def _run_forked(jobs: Sequence[Callable[[], Any]], n: int) -> list[Any] | None:
    """The jobs' results from ``n`` forked workers; None where a worker could not be started or
    died."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=n,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_receive,
        initargs=(jobs,),
    )
    try:
        with warnings.catch_warnings():
            # The workers are forked at the first submit, before the pool starts its own
            # thread. Python 3.12+ warns at every fork of a process with more than one OS
            # thread; the others here are native library threads (no other Python thread
            # runs: _can_fork), which hold none of the locks a child uses.
            warnings.filterwarnings(
                "ignore",
                message=r".*use of fork\(\) may lead to deadlocks",
                category=DeprecationWarning,
            )
            futures = [pool.submit(_run_one, 0)]
        futures += [pool.submit(_run_one, i) for i in range(1, len(jobs))]
        return [f.result() for f in futures]
    except (BrokenProcessPool, OSError) as err:
        logger.warning(
            "could not draw the report's figures on %d processes (%s): drawn here", n, err
        )
        return None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
