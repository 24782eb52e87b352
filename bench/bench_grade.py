"""Benchmark: a whole spine graded as a user waits for it, beside the floor of reading its files.

A T1-L5 phantom at 1 mm with a 512 x 512 mm field of view (a CT of about 512 x 512 x 500 voxels,
int16, with its uint8 labels) is written as NIfTI once; then, each in a fresh process and timed
from outside (interpreter start, imports, reading, grading, writing):

- the floor: ``python -c`` that imports numpy and nibabel and reads both files' voxels;
- ``vertgrade grade CT --labels LABELS -o OUT`` (the result files, no report);
- ``vertgrade --help`` and ``vertgrade --version``;
- one in-process run split into stages (imports, load, geometry, measure, grade, write).

    python bench/bench_grade.py [--workdir DIR] [--repeat N] [--spacing MM] [--levels T1-L5]
    python bench/bench_grade.py --peer-python PY   # TotalSegmentator's example CT beside the peer
    python bench/bench_grade.py --scaling      # the scaling table (T10-L3 1 mm, T1-L5 1 / 0.7 /
                                               # 0.5 mm, T1-L5 1 mm labels only)

Printed: the median wall time of each over ``--repeat`` runs (runs interleaved, so that a noisy
shared machine affects both alike), the ratio of the grade to the floor, and peak resident
memory. Goals (issue "Speed"): grade <= 3x the floor and under 5 s on a 2-core machine for
T1-L5 at 1 mm; ``--help`` under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = r"""
import sys
import numpy as np, nibabel as nib
for p in sys.argv[1:]:
    np.asanyarray(nib.load(p).dataobj)
"""

STAGES = r"""
import json, resource, sys, tempfile, time
t0 = time.perf_counter()
from pathlib import Path
from vertgrade.workflow import GradeOptions, StudyInputs, grade_to_folder
from vertgrade.io.load import load_study
from vertgrade import grade_study
from vertgrade.report.files import write_result
t_imp = time.perf_counter() - t0
work = Path(sys.argv[1]); ct = None if sys.argv[2] == "-" else work / sys.argv[2]
lab = work / sys.argv[3]
t = time.perf_counter()
study = load_study(ct, lab)
t_load = time.perf_counter() - t
res = grade_study(study)
t_w = time.perf_counter()
write_result(res, Path(tempfile.mkdtemp()) / "out")
t_write = time.perf_counter() - t_w
out = {"imports": t_imp, "load": t_load, **res.timings_s, "write": t_write,
       "shape": list(study.labels.shape), "n_vertebrae": len(res.vertebrae),
       "grades": {v.level: v.grade for v in res.vertebrae}}
print(json.dumps(out))
"""


def make_input(work: Path, levels: str, spacing: float, fov_mm: float = 512.0) -> None:
    from vertgrade.phantom import FractureSpec, make_phantom, write_phantom

    if (work / "ct.nii.gz").exists():
        return
    specs = [FractureSpec.parse(s) for s in ("T7:wedge:0.3", "T12:crush:0.35", "L1:biconcave:0.28")]
    specs = [s for s in specs if s.level in _levels(levels)]
    t = time.perf_counter()
    ph = make_phantom(
        levels, specs, orientation="LPS", spacing=(spacing,) * 3, fov_mm=(fov_mm, fov_mm), seed=0
    )
    write_phantom(ph, work, force=True)
    print(
        f"phantom {levels} {ph.ct.shape} at {spacing} mm written in {time.perf_counter() - t:.1f} s"
    )


#: The scaling table's axial field of view (mm): at 0.5 mm a T1-L5 CT of 600 x 600 x 1000 voxels
#: (360 M), the size the speed issue measured; the same at every spacing, so that the rows
#: differ only in voxel size and anatomy.
SCALING_FOV = 300.0


def _levels(span: str) -> set[str]:
    from vertgrade.levels import label_id, level_name

    a, b = (label_id(x) for x in span.split("-"))
    return {level_name(k) for k in range(a, b + 1)}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, run to completion."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def vertgrade_cmd() -> list[str]:
    exe = shutil.which("vertgrade")
    return [exe] if exe else [sys.executable, "-m", "vertgrade"]


def bench_one(work: Path, repeat: int, labels_only: bool = False) -> dict[str, float]:
    """Median figures of the floor, the grade, --help and --version for the files in ``work``."""
    files = (
        [work / "labels.nii.gz"] if labels_only else [work / "ct.nii.gz", work / "labels.nii.gz"]
    )
    out = Path(tempfile.mkdtemp())
    grade = [*vertgrade_cmd(), "grade"]
    grade += [] if labels_only else [str(work / "ct.nii.gz")]
    grade += ["--labels", str(work / "labels.nii.gz"), "-o", str(out / "r"), "--force", "-q"]
    floors, grades, rss, rss_floor = [], [], [], []
    for _ in range(repeat):
        w, m = timed([sys.executable, "-c", FLOOR, *map(str, files)])
        floors.append(w)
        rss_floor.append(m)
        w, m = timed(grade)
        grades.append(w)
        rss.append(m)
    helps = [timed([*vertgrade_cmd(), "--help"])[0] for _ in range(repeat)]
    versions = [timed([*vertgrade_cmd(), "--version"])[0] for _ in range(repeat)]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "floor": statistics.median(floors),
        "grade": statistics.median(grades),
        "grade_min": min(grades),
        "floor_min": min(floors),
        "rss_mb": max(rss),
        "rss_floor_mb": max(rss_floor),
        "help": statistics.median(helps),
        "version": statistics.median(versions),
    }


def stages(work: Path, labels_only: bool = False) -> dict:
    args = [sys.executable, "-c", STAGES, str(work), "-" if labels_only else "ct.nii.gz"]
    out = subprocess.run([*args, "labels.nii.gz"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    return tuple(int(n) for n in nib.load(path).shape)


def report(name: str, fig: dict[str, float]) -> None:
    print(
        f"{name:44s} floor {fig['floor']:6.2f} s   grade {fig['grade']:6.2f} s   "
        f"{fig['grade'] / fig['floor']:4.2f} x   peak {fig['rss_mb']:5.0f} MB "
        f"(floor {fig['rss_floor_mb']:.0f} MB)"
    )


PEER_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "tools" / "peer-spine-report.py"


def bench_peer(ct: Path, labels: Path, peer_python: str, repeat: int) -> dict[str, float]:
    """Whole-process medians on one real CT: the floor, ``vertgrade grade`` and the peer's
    measurement (TotalSegmentator's spine report, ``../shared/tools/peer-spine-report.py``
    run with ``peer_python``), interleaved."""
    out = Path(tempfile.mkdtemp())
    grade = [*vertgrade_cmd(), "grade", str(ct), "--labels", str(labels)]
    grade += ["-o", str(out / "r"), "--force", "-q"]
    peer = [peer_python, str(PEER_SCRIPT), str(ct), str(labels), str(out / "peer.json")]
    runs: dict[str, list[float]] = {"floor": [], "grade": [], "peer": [], "rss": [], "peer_rss": []}
    for i in range(repeat):
        runs["floor"].append(timed([sys.executable, "-c", FLOOR, str(ct), str(labels)])[0])
        # each pair in turn order, so that neither side always runs on a warmer machine
        for side in ("grade", "peer") if i % 2 == 0 else ("peer", "grade"):
            w, m = timed(grade if side == "grade" else peer)
            runs[side].append(w)
            runs["rss" if side == "grade" else "peer_rss"].append(m)
    shutil.rmtree(out, ignore_errors=True)
    fig = {k: statistics.median(v) for k, v in runs.items() if k in ("floor", "grade", "peer")}
    # the machine's speed drifts between runs; a pair, run back to back, shares the drift
    pairs = [g / p for g, p in zip(runs["grade"], runs["peer"], strict=True)]
    return fig | {
        "rss_mb": max(runs["rss"]),
        "peer_rss_mb": max(runs["peer_rss"]),
        "pair_ratio": statistics.median(pairs),
        "pairs_faster": sum(r < 1 for r in pairs) / len(pairs),
    }


def compile_package() -> None:
    """Write vertgrade's bytecode caches, as ``pip install`` does: an editable install (or a
    shell with ``PYTHONDONTWRITEBYTECODE`` set) would otherwise compile every module on every
    run, a cost no installed user pays (a fifth of a second, measured). The dependencies'
    caches were written when pip installed them."""
    import compileall

    import vertgrade

    compileall.compile_dir(Path(vertgrade.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vertgrade-bench")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--levels", default="T1-L5")
    ap.add_argument("--spacing", type=float, default=1.0)
    ap.add_argument("--scaling", action="store_true", help="the scaling table (slow)")
    ap.add_argument(
        "--peer-python",
        help="a Python with TotalSegmentator 2.18 installed (--no-deps): time its spine report "
        "beside vertgrade on TotalSegmentator's example CT (../shared/data/totalseg-example)",
    )
    args = ap.parse_args(argv)
    compile_package()

    if args.peer_python:
        data = Path(os.environ.get("VERTGRADE_TEST_DATA", PEER_SCRIPT.parents[1] / "data"))
        ex = data / "totalseg-example"
        ct, labels = ex / "example_ct.nii.gz", ex / "totalseg_vertebrae_pp_refined.nii.gz"
        if not ct.is_file() or not labels.is_file():
            raise SystemExit(f"{ex}: TotalSegmentator's example CT and labels are not there")
        fig = bench_peer(ct, labels, args.peer_python, args.repeat)
        print(f"TotalSegmentator's example CT, whole process, median of {args.repeat} runs each")
        print(f"{'floor: python, numpy, nibabel, read':38s} {fig['floor']:6.2f} s")
        print(f"{'vertgrade grade':38s} {fig['grade']:6.2f} s   peak {fig['rss_mb']:.0f} MB")
        peer_mb = fig["peer_rss_mb"]
        print(f"{'peer (spine report)':38s} {fig['peer']:6.2f} s   peak {peer_mb:.0f} MB")
        print(f"{'vertgrade / peer':38s} {fig['grade'] / fig['peer']:6.2f} x")
        print(
            f"{'vertgrade / peer, median of pairs':38s} {fig['pair_ratio']:6.2f} x   "
            f"(vertgrade faster in {fig['pairs_faster']:.0%} of pairs)"
        )
        return 0

    if args.scaling:
        print("whole process, median of", args.repeat, "runs each")
        for levels, spacing, labels_only in (
            ("T10-L3", 1.0, False),
            ("T1-L5", 1.0, False),
            ("T1-L5", 0.7, False),
            ("T1-L5", 0.5, False),
            ("T1-L5", 1.0, True),
        ):
            tag = f"{levels}-{spacing:g}-fov{SCALING_FOV:g}"
            work = args.workdir.parent / f"{args.workdir.name}-{tag}"
            work.mkdir(parents=True, exist_ok=True)
            make_input(work, levels, spacing, SCALING_FOV)
            fig = bench_one(work, args.repeat, labels_only)
            shape = _shape(work / "labels.nii.gz")
            name = f"{levels} {spacing:g} mm{' labels only' if labels_only else ''}"
            report(f"{name} ({math.prod(shape) / 1e6:.0f} M voxels)", fig)
        return 0

    work = args.workdir
    if (args.levels, args.spacing) != ("T1-L5", 1.0):
        work = work.parent / f"{work.name}-{args.levels}-{args.spacing:g}"
    work.mkdir(parents=True, exist_ok=True)
    make_input(work, args.levels, args.spacing)
    fig = bench_one(work, args.repeat)
    st = stages(work)
    print(f"CT shape {st['shape']}, {st['n_vertebrae']} vertebrae; median of {args.repeat} runs")
    best_floor, best_grade = fig["floor_min"], fig["grade_min"]
    print(
        f"{'floor: python, numpy, nibabel, read':38s} {fig['floor']:6.2f} s (best {best_floor:.2f})"
    )
    print(f"{'vertgrade grade (whole process)':38s} {fig['grade']:6.2f} s (best {best_grade:.2f})")
    print(f"{'ratio':38s} {fig['grade'] / fig['floor']:6.2f} x")
    print(f"{'peak memory (RSS)':38s} {fig['rss_mb']:6.0f} MB (floor {fig['rss_floor_mb']:.0f} MB)")
    print(f"{'vertgrade --help':38s} {fig['help']:6.2f} s")
    print(f"{'vertgrade --version':38s} {fig['version']:6.2f} s")
    print("one run in process, by stage:")
    for k in ("imports", "load", "geometry", "measure", "grade", "write"):
        if k in st:
            print(f"  {k:36s} {st[k]:6.2f} s")
    print("grades:", " ".join(f"{k}={v}" for k, v in st["grades"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
