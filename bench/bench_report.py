"""Benchmark: what ``--report`` adds to ``vertgrade grade``, timed as a user waits for it.

Each run is a fresh process timed from outside (interpreter start, imports, reading, grading,
writing, and with ``--report`` the figures and the page):

- ``vertgrade grade CT --labels LABELS -o OUT --force -q`` (the result files, no report);
- the same with ``--report``.

The two are run alternately (``--repeat`` times each), so that a noisy shared machine affects both
alike. The input is a real case from the test data (``$VERTGRADE_TEST_DATA/verse012`` by default,
``--case NAME`` for another) or, with ``--phantom`` or without the test data, a T10-L3 phantom at
1 mm written once into ``--workdir``.

    python bench/bench_report.py [--repeat N] [--case verse012] [--phantom] [--workdir DIR]

Printed: the median (and best) wall time of each, its CPU time (user + system: less sensitive to
other load on the machine), the report's added time (median of the differences of each
interleaved pair) and its ratio to the plain grade, and peak resident memory.
Goal (issue "Speed"): ``--report`` adds less than the grading itself (ratio < 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one command, run to
    completion."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def vertgrade_cmd() -> list[str]:
    exe = shutil.which("vertgrade")
    return [exe] if exe else [sys.executable, "-m", "vertgrade"]


def real_case(name: str) -> tuple[Path, Path] | None:
    """The CT and vertebra labels of a test-data case, or None where there is no test data."""
    root = os.environ.get("VERTGRADE_TEST_DATA")
    folder = Path(root) / name if root else None
    if folder is None or not folder.is_dir():
        return None
    cts = sorted(folder.glob("*_ct.nii.gz"))
    labels = sorted(folder.glob("*_seg-vert_msk.nii.gz"))
    if not cts or not labels:
        raise SystemExit(f"{folder}: no *_ct.nii.gz with a *_seg-vert_msk.nii.gz")
    return cts[0], labels[0]


def phantom_case(work: Path) -> tuple[Path, Path]:
    """A T10-L3 phantom at 1 mm with two fractures, written once into ``work``."""
    from vertgrade.phantom import FractureSpec, make_phantom, write_phantom

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "ct.nii.gz").exists():
        specs = [FractureSpec.parse(s) for s in ("T12:crush:0.35", "L1:wedge:0.3")]
        write_phantom(make_phantom("T10-L3", specs, seed=0), work, force=True)
    return work / "ct.nii.gz", work / "labels.nii.gz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--case", default="verse012", help="a case folder of the test data")
    ap.add_argument("--phantom", action="store_true", help="a phantom instead of the test data")
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vertgrade-bench-report"
    )
    args = ap.parse_args(argv)

    case = None if args.phantom else real_case(args.case)
    ct, labels = case if case is not None else phantom_case(args.workdir)
    out = Path(tempfile.mkdtemp())
    grade = [*vertgrade_cmd(), "grade", str(ct), "--labels", str(labels), "--force", "-q"]
    plain_cmd = [*grade, "-o", str(out / "plain")]
    report_cmd = [*grade, "-o", str(out / "report"), "--report"]
    timed(plain_cmd)  # warm the file cache and the font cache
    runs: dict[str, list[tuple[float, float, float]]] = {"plain": [], "report": []}
    for _ in range(args.repeat):
        runs["plain"].append(timed(plain_cmd))
        runs["report"].append(timed(report_cmd))
    shutil.rmtree(out, ignore_errors=True)

    def median(name: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[name])

    def added(k: int) -> float:
        pairs = zip(runs["report"], runs["plain"], strict=True)
        return statistics.median(r[k] - p[k] for r, p in pairs)

    print(f"{ct.name}: whole process, median of {args.repeat} interleaved runs each")
    print(f"{'':28s} {'wall':>8s} {'(best)':>8s} {'CPU':>8s} {'peak RSS':>10s}")
    for name, label in (("plain", "vertgrade grade"), ("report", "vertgrade grade --report")):
        best = min(r[0] for r in runs[name])
        peak = max(r[2] for r in runs[name])
        print(
            f"{label:28s} {median(name, 0):6.2f} s {best:6.2f} s {median(name, 1):6.2f} s "
            f"{peak:7.0f} MB"
        )
    wall, cpu = added(0), added(1)
    print(
        f"{'added by --report':28s} {wall:6.2f} s {'':8s} {cpu:6.2f} s   "
        f"({wall / median('plain', 0):.2f} x the grade's wall time, "
        f"{cpu / median('plain', 1):.2f} x its CPU time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
