"""Benchmark: segmentation QA of a whole spine at 1 mm, beside the floor of reading its files.

A T1-L5 phantom's labels at 1 mm (``make_phantom("T1-L5", spacing=(1, 1, 1))``, about
340 x 260 x 500 voxels, uint8) are written as NIfTI with a perturbed copy: every vertebra eroded
by one voxel (so that every vertebra has surface distances to compute), T5 merged into T4 and
L5 left out. Then, each in a fresh process and timed from outside (interpreter start, imports,
reading, comparing, writing):

- the floor: ``python -c`` that imports numpy and nibabel and reads both files' voxels;
- ``vertgrade seg-qa PRED --truth TRUTH -o OUT`` (2000 bootstrap resamples, the default);
- for comparison, ``vertgrade grade --labels TRUTH -o OUT`` (grading the same labels);
- one in-process run split into stages (imports, read, compare, summarise, write).

    python bench/bench_segqa.py [--workdir DIR] [--repeat N] [--no-grade]

Printed: the median wall time of each over ``--repeat`` runs (interleaved, so that a noisy
shared machine affects all alike), the ratio of seg-qa to the floor, and peak resident memory.
Goal (issue 14): a few seconds, no slower than grading.
"""

from __future__ import annotations

import argparse
import json
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
import json, sys, tempfile, time
t0 = time.perf_counter()
from pathlib import Path
from vertgrade.segqa import compare_case, summarise, write_seg_qa
from vertgrade.segqa.inputs import SideFiles, read_side
t_imp = time.perf_counter() - t0
t = time.perf_counter()
truth = read_side(SideFiles(labels=Path(sys.argv[2])), truth=True)
pred = read_side(SideFiles(labels=Path(sys.argv[1])), truth=False)
t_read = time.perf_counter() - t
t = time.perf_counter()
qa = compare_case(pred, truth, subject="bench")
t_cmp = time.perf_counter() - t
t = time.perf_counter()
report = summarise([qa], n_boot=2000)
t_sum = time.perf_counter() - t
t = time.perf_counter()
write_seg_qa(report, Path(tempfile.mkdtemp()) / "out")
t_write = time.perf_counter() - t
s = qa.summary
print(json.dumps({"imports": t_imp, "read": t_read, "compare": t_cmp, "summarise": t_sum,
                  "write": t_write, "shape": list(truth.labels.shape), "n_truth": s.n_truth,
                  "mean_dice": s.mean_dice, "mean_hd95_mm": s.mean_hd95_mm,
                  "missing": list(s.missing), "merged": [list(m[1]) for m in s.merged]}))
"""


def make_input(work: Path) -> None:
    """Write ``truth.nii.gz`` and ``pred.nii.gz`` into ``work`` (once)."""
    import numpy as np
    from scipy import ndimage

    from vertgrade.io.nifti import save_nifti
    from vertgrade.levels import label_id
    from vertgrade.phantom import make_phantom

    if (work / "truth.nii.gz").exists() and (work / "pred.nii.gz").exists():
        return
    t = time.perf_counter()
    ph = make_phantom("T1-L5", spacing=(1.0, 1.0, 1.0), noise_hu=0.0)
    truth = ph.labels
    fg = truth > 0
    inner = np.zeros_like(fg)
    for lab in np.unique(truth[fg]):  # erode each vertebra alone: boundaries between stay
        m = truth == lab
        inner |= ndimage.binary_erosion(m)
    pred = np.where(inner, truth, 0).astype(np.uint8)
    pred[pred == label_id("T5")] = label_id("T4")
    pred[pred == label_id("L5")] = 0
    save_nifti(truth, ph.affine, work / "truth.nii.gz")
    save_nifti(pred, ph.affine, work / "pred.nii.gz")
    print(f"phantom T1-L5 {truth.shape} at 1 mm written in {time.perf_counter() - t:.1f} s")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vertgrade-bench-segqa"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-grade", action="store_true", help="do not time `vertgrade grade`")
    ap.add_argument("--make-input", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.make_input:
        make_input(work)
        return 0
    # in a child: a large parent inflates its children's peak memory (Linux keeps the
    # high-water mark across fork and exec)
    subprocess.run([sys.executable, __file__, "--make-input", "--workdir", str(work)], check=True)
    truth, pred = work / "truth.nii.gz", work / "pred.nii.gz"
    out = Path(tempfile.mkdtemp())
    qa_cmd = [*vertgrade_cmd(), "seg-qa", str(pred), "--truth", str(truth)]
    qa_cmd += ["-o", str(out / "qa"), "--force", "-q"]
    grade_cmd = [*vertgrade_cmd(), "grade", "--labels", str(truth)]
    grade_cmd += ["-o", str(out / "grade"), "--force", "-q"]
    figs: dict[str, list[tuple[float, float]]] = {"floor": [], "seg-qa": [], "grade": []}
    for _ in range(args.repeat):
        figs["floor"].append(timed([sys.executable, "-c", FLOOR, str(truth), str(pred)]))
        figs["seg-qa"].append(timed(qa_cmd))
        if not args.no_grade:
            figs["grade"].append(timed(grade_cmd))
    shutil.rmtree(out, ignore_errors=True)
    st = json.loads(
        subprocess.run(
            [sys.executable, "-c", STAGES, str(pred), str(truth)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()[-1]
    )

    def med(name: str) -> float:
        return statistics.median(w for w, _ in figs[name])

    def peak(name: str) -> float:
        return max(m for _, m in figs[name])

    print(
        f"labels {st['shape']}, {st['n_truth']} true vertebrae; median of {args.repeat} runs "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"{'floor: python, numpy, nibabel, read both':48s} {med('floor'):6.2f} s")
    print(
        f"{'vertgrade seg-qa (whole process)':48s} {med('seg-qa'):6.2f} s   "
        f"{med('seg-qa') / med('floor'):4.2f} x floor   peak {peak('seg-qa'):5.0f} MB "
        f"(floor {peak('floor'):.0f} MB)"
    )
    if figs["grade"]:
        print(
            f"{'vertgrade grade --labels TRUTH (whole process)':48s} {med('grade'):6.2f} s   "
            f"seg-qa / grade {med('seg-qa') / med('grade'):4.2f}   peak {peak('grade'):5.0f} MB"
        )
    print("one seg-qa run in process, by stage:")
    for k in ("imports", "read", "compare", "summarise", "write"):
        print(f"  {k:46s} {st[k]:6.2f} s")
    print(
        f"result: mean Dice {st['mean_dice']:.3f}, mean HD95 {st['mean_hd95_mm']:.2f} mm, "
        f"missing {st['missing']}, merged {st['merged']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
