"""Benchmark: time and peak memory to grade a whole phantom spine.

A T1-L5 phantom at 1 mm with a 512 x 512 mm field of view (a CT of about 512 x 512 x 500
voxels, int16, with its uint8 labels) is written as NIfTI once, then graded in a fresh process:

    python bench/bench_grade.py [--workdir DIR] [--repeat N]

Printed: seconds to load the two files with nibabel alone (the floor), and vertgrade's load /
geometry / measure / grade / write stages, the total, its ratio to the load floor, and the peak
resident memory of the grading process. Goals (issue "The core"): total under 5 s on a 2-core
machine and no more than 3x the time to just load the two files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, tempfile
from pathlib import Path
import numpy as np
import nibabel as nib
work = Path(sys.argv[1]); mode = sys.argv[2]
ct, lab = work / "ct.nii.gz", work / "labels.nii.gz"
if mode == "floor":
    t = time.perf_counter()
    a = np.asanyarray(nib.load(ct).dataobj); b = np.asanyarray(nib.load(lab).dataobj)
    print(json.dumps({"load_files": time.perf_counter() - t}))
    raise SystemExit
from vertgrade import grade_study, load_study
from vertgrade.report.files import write_result
t = time.perf_counter()
study = load_study(ct, lab)
t_load = time.perf_counter() - t
res = grade_study(study)
t_w = time.perf_counter()
write_result(res, Path(tempfile.mkdtemp()) / "out")
t_write = time.perf_counter() - t_w
out = {"load": t_load, **res.timings_s, "write": t_write, "total": time.perf_counter() - t,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "shape": list(study.labels.shape), "n_vertebrae": len(res.vertebrae),
       "grades": {v.level: v.grade for v in res.vertebrae}}
print(json.dumps(out))
"""


def make_input(work: Path) -> None:
    from vertgrade.phantom import FractureSpec, make_phantom, write_phantom

    if (work / "ct.nii.gz").exists():
        return
    specs = [FractureSpec.parse(s) for s in ("T7:wedge:0.3", "T12:crush:0.35", "L1:biconcave:0.28")]
    t = time.perf_counter()
    ph = make_phantom(
        "T1-L5", specs, orientation="LPS", spacing=(1.0, 1.0, 1.0), fov_mm=(512.0, 512.0), seed=0
    )
    write_phantom(ph, work, force=True)
    print(f"phantom T1-L5 {ph.ct.shape} written in {time.perf_counter() - t:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vertgrade-bench")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    make_input(args.workdir)

    def child(mode: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.workdir), mode],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    floors = [child("floor")["load_files"] for _ in range(args.repeat)]
    runs = [child("grade") for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["total"])
    floor = min(floors)
    print(f"CT shape {best['shape']}, {best['n_vertebrae']} vertebrae; best of {args.repeat} runs")
    print(f"{'load files only (nibabel)':28s} {floor:6.2f} s")
    for k in ("load", "geometry", "measure", "grade"):
        print(f"{'vertgrade ' + k:28s} {best[k]:6.2f} s")
    graded = best["total"] - best["write"]
    print(f"{'load to graded result':28s} {graded:6.2f} s  ({graded / floor:.2f} x load-only)")
    print(f"{'+ write outputs':28s} {best['write']:6.2f} s")
    print(f"{'total with outputs':28s} {best['total']:6.2f} s  ({best['total'] / floor:.2f} x)")
    print(f"{'peak memory (RSS)':28s} {best['peak_rss_mb']:6.0f} MB")
    print("grades:", " ".join(f"{k}={v}" for k, v in best["grades"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
