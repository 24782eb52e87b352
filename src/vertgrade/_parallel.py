"""Per-vertebra work on a few threads.

The heavy steps of grading (resampling into each body's frame, filtering, distance transforms)
run inside scipy.ndimage and numpy, which release the GIL, and every vertebra's work is
independent of the others': threads share the study's arrays without copying them, and each
vertebra's numbers are the same whatever the number of threads (each is computed by one thread,
in the same order of operations).

``VERTGRADE_THREADS`` sets the default; ``1`` turns threading off (a cohort's Dask workers
already run one study per core).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["MAX_DEFAULT_THREADS", "default_threads", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")

#: The default never takes more than this many cores: beyond it the per-vertebra work is too
#: small to share out (a spine has at most 25 vertebrae) and memory grows with each crop in flight.
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """``VERTGRADE_THREADS`` if set, else the cores this process may use, at most
    :data:`MAX_DEFAULT_THREADS`."""
    env = os.environ.get("VERTGRADE_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"VERTGRADE_THREADS={env!r}: not a whole number") from None
        if n < 1:
            raise ValueError(f"VERTGRADE_THREADS={env!r}: must be 1 or more")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def thread_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    threads: int | None = None,
    *,
    on_done: Callable[[int], None] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, on up to ``threads`` threads (default
    :func:`default_threads`), the results in the order of ``items``.

    ``on_done(i)`` is called in the calling thread once results ``0..i`` are in (for progress
    bars, which then never see a worker thread). The first exception raised by ``fn`` is raised
    here; calls not yet started are cancelled and those running are waited for.
    """
    todo = list(items)
    n = default_threads() if threads is None else max(1, threads)
    out: list[R] = []
    if n == 1 or len(todo) <= 1:
        for i, x in enumerate(todo):
            out.append(fn(x))
            if on_done is not None:
                on_done(i)
        return out
    ex = ThreadPoolExecutor(max_workers=min(n, len(todo)), thread_name_prefix="vertgrade")
    try:
        for i, r in enumerate(ex.map(fn, todo)):
            out.append(r)
            if on_done is not None:
                on_done(i)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return out
