"""Benchmark: a cohort of phantom studies graded on Dask, against grading them one by one.

    python bench/bench_cohort.py [--workdir DIR] [--studies 20] [--workers 1,2] [--levels T10-L3]

Writes ``--studies`` phantom studies (1 mm, the given levels, a fracture in every other one)
into ``DIR/inputs`` once, then times

1. grading them sequentially in this process, exactly as ``vertgrade grade`` does each one
   (``load_study`` + ``grade_study`` + ``write_result``);
2. ``run_cohort`` on a fresh ``LocalCluster`` with each number of workers (cluster start,
   worker imports and the cohort table included), and a second run on the same output folder,
   where every study is already done (the cost of resuming);

(vertgrade, pandas and pyarrow are imported in this process before anything is timed)

and prints studies per minute, the speed-up over one worker, and the cohort's overhead per
study relative to the sequential per-study time, in wall-clock time and in CPU time (this
process and its children, the worker processes: a figure that other load on the machine does
not change much). It also checks that every cohort table equals the sequential results.
Goals (issue "cohort"): near-linear scaling on 2 cores, overhead under 10 % of the per-study
time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

FRACTURES = ("L1:wedge:0.35", "L2:crush:0.45", "T12:biconcave:0.3", "L3:wedge:0.25")


def make_inputs(folder: Path, n: int, levels: str) -> None:
    """``n`` phantom studies ``folder/s00 ...`` (kept between runs when already there)."""
    from vertgrade.phantom import make_phantom, write_phantom

    for i in range(n):
        out = folder / f"s{i:02d}"
        if (out / "labels.nii.gz").exists():
            continue
        fractures = [FRACTURES[(i // 2) % len(FRACTURES)]] if i % 2 else []
        write_phantom(make_phantom(levels, fractures, seed=i), out, force=True)


def sequential(specs: list[Any], out: Path) -> tuple[float, list[float], list[dict[str, Any]]]:
    """Grade each study in this process; seconds in all, per study, and the records."""
    from vertgrade import grade_study, load_study
    from vertgrade.report.files import write_result

    per_study, rows = [], []
    t0 = time.perf_counter()
    for s in specs:
        t = time.perf_counter()
        study = load_study(s.ct, s.labels, bodies=s.bodies, subject=s.subject)
        result = grade_study(study)
        write_result(result, out / s.subject)
        per_study.append(time.perf_counter() - t)
        rows += [{"subject": s.subject, **r} for r in result.to_records()]
    return time.perf_counter() - t0, per_study, rows


def same_table(out: Path, rows: list[dict[str, Any]]) -> bool:
    """Whether the cohort table holds exactly the sequential records."""
    import pandas as pd

    from vertgrade.cohort import read_cohort_table

    def plain(v: Any) -> Any:
        if pd.api.types.is_scalar(v) and pd.isna(v):
            return None
        v = v.item() if hasattr(v, "item") else v
        return None if v == "" else v

    table = [{k: plain(v) for k, v in r.items()} for r in read_cohort_table(out).to_dict("records")]
    return table == [{k: plain(v) for k, v in r.items()} for r in rows]


def cluster_start_stop(workers: int) -> float:
    """Seconds to start and close an idle LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    from vertgrade.cohort.run import _local_cluster_config, _local_cluster_options

    t = time.perf_counter()
    with (
        _local_cluster_config(),
        LocalCluster(**_local_cluster_options(workers)) as cluster,
        Client(cluster),
    ):
        pass
    return time.perf_counter() - t


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (Linux ``/proc/stat``; else 0).

    Its growth minus :func:`cpu_seconds`' growth over a phase is the CPU time other programs
    took meanwhile: on a shared machine, the reason a phase ran slower than it should.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="inputs kept here between runs")
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--levels", default="T10-L3")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    from vertgrade.cohort import discover_studies, run_cohort

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vertgrade-bench-cohort-"))
    inputs = work / "inputs"
    t = time.perf_counter()
    make_inputs(inputs, args.studies, args.levels)
    specs = [s for s in discover_studies(inputs) if s.subject < f"s{args.studies:02d}"]
    print(f"{len(specs)} phantom studies ({args.levels}, 1 mm) in {inputs} ", end="")
    print(f"({time.perf_counter() - t:.1f} s to write)")

    import pandas  # noqa: F401  imported before timing, as vertgrade is: the table needs them
    import pyarrow  # noqa: F401

    n = len(specs)
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    c0, m0 = cpu_seconds(), machine_busy_seconds()
    t_seq, per_study, rows = sequential(specs, runs / "sequential")
    cpu_seq = cpu_seconds() - c0
    others = machine_busy_seconds() - m0 - cpu_seq
    mean = t_seq / n
    print(
        f"sequential, one process: {t_seq:6.1f} s  {60 * n / t_seq:5.1f} studies/min  "
        f"{mean:.2f} s/study (min {min(per_study):.2f}, max {max(per_study):.2f})  "
        f"CPU {cpu_seq:.1f} s; other programs took {others:.1f} CPU s meanwhile"
    )
    t_one = None
    for w in workers:
        out = runs / f"cohort-{w}"
        events: list[Any] = []
        c0, m0 = cpu_seconds(), machine_busy_seconds()
        summary = run_cohort(specs, out, workers=w, progress=events.append)
        cpu_run = cpu_seconds() - c0
        others = machine_busy_seconds() - m0 - cpu_run
        t_run = summary.seconds
        assert len(summary.graded) == n, summary.failures
        again = run_cohort(specs, out, workers=w)
        assert len(again.skipped) == n
        on_worker = sum(e.seconds for e in events)
        t_one = t_run if w == 1 else t_one
        print(
            f"cohort, {w} worker{'s' if w > 1 else ' '}:        {t_run:6.1f} s  "
            f"{60 * n / t_run:5.1f} studies/min; other programs took {others:.1f} CPU s meanwhile"
        )
        print(
            f"    per study on a worker {on_worker / n:.2f} s "
            f"({(on_worker / n - mean) / mean:+.1%} against sequential)"
        )
        print(
            f"    fixed, not in any study (cluster start/stop, worker imports, queueing, table): "
            f"{t_run - on_worker / w:.1f} s"
        )
        if w == 1:
            over = (t_run - t_seq) / n
            print(
                f"    overhead {over:+.3f} s/study = {over / mean:+.1%} of the per-study time "
                f"(the fixed part spread over {n} studies)"
            )
        elif t_one is not None:
            print(
                f"    speed-up {t_one / t_run:.2f}x over 1 worker, {t_seq / t_run:.2f}x over "
                f"sequential (efficiency {t_one / (w * t_run):.0%})"
            )
        print(
            f"    CPU {cpu_run:.1f} s ({(cpu_run - cpu_seq) / cpu_seq:+.1%} over sequential); "
            f"resume with all done {again.seconds:.2f} s; table equals sequential: "
            f"{same_table(out, rows)}"
        )
    # measured last: the CPU time of its worker processes must not fall into a run's
    for w in workers:
        print(f"an idle LocalCluster of {w} worker(s) starts and stops in ", end="")
        print(f"{cluster_start_stop(w):.2f} s (part of each cohort run above)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # guard: Dask's worker processes re-import this module
    main()
