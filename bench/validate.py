"""Regenerate docs/validation.md: accuracy on phantoms and on the real cases.

Usage::

    python bench/validate.py                 # writes docs/validation.md
    python bench/validate.py --out -         # prints it instead
    python bench/validate.py --skip-synthesis   # without the learned synthesis (minutes)

Real cases are read from ``$VERTGRADE_TEST_DATA`` or ``../shared/data``; their sections say so
where the data is absent. Every number in the file is computed by this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from vertgrade import grade_study, load_study
from vertgrade.io.grades import read_grades
from vertgrade.io.load import study_from_arrays
from vertgrade.io.nifti import read_volume
from vertgrade.phantom import FractureSpec, make_phantom
from vertgrade.study import Study

REPO = Path(__file__).resolve().parents[1]
THIRDS = ("anterior", "middle", "posterior")


def data_dir() -> Path | None:
    env = os.environ.get("VERTGRADE_TEST_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


def phantom_study(ph, name: str) -> Study:  # type: ignore[no-untyped-def]
    """A Study straight from phantom arrays (the same as writing and reading the files)."""
    return study_from_arrays(ph.labels, ph.affine, ct=ph.ct, subject=name)


# ----------------------------------------------------------------------------- phantoms
FRACTURE_SETS = [
    ("T9-L4", ["T12:wedge:0.32", "L1:crush:0.45", "L3:biconcave:0.23"]),
    ("T6-L2", ["T8:wedge:0.50", "T9:wedge:0.30", "T11:crush:0.28", "L1:biconcave:0.35"]),
    ("T10-L5", ["T11:biconcave:0.45", "L2:crush:0.21", "L3:crush:0.33", "L4:wedge:0.10"]),
    ("T4-T11", ["T5:crush:0.36", "T7:biconcave:0.28", "T8:wedge:0.22", "T10:wedge:0.60"]),
    ("T11-L5", ["L1:wedge:0.42", "L2:wedge:0.26", "L3:wedge:0.16", "L5:biconcave:0.30"]),
    ("T3-T10", ["T4:wedge:0.27", "T6:crush:0.52", "T7:crush:0.24", "T9:biconcave:0.21"]),
]
GEOMETRIES = [
    ("RAS", (1.0, 1.0, 1.0)),
    ("PIR", (3.0, 1.0, 1.0)),
    ("LPS", (1.0, 1.0, 1.0)),
    ("IPL", (1.0, 1.0, 3.0)),
]


def run_phantoms() -> tuple[list[dict], float]:
    rows = []
    t0 = time.perf_counter()
    for i, (levels, fracs) in enumerate(FRACTURE_SETS):
        orient, spacing = GEOMETRIES[i % len(GEOMETRIES)]
        specs = [FractureSpec.parse(f) for f in fracs]
        ph = make_phantom(levels, specs, orientation=orient, spacing=spacing, seed=i)
        res = grade_study(phantom_study(ph, f"phantom{i}"))
        truth = {t.label: t for t in ph.truth}
        for v in res.vertebrae:
            t = truth[v.label]
            row = {
                "set": i,
                "geometry": f"{orient} {'x'.join(f'{s:g}' for s in spacing)}",
                "level": v.level,
                "true_grade": t.grade,
                "grade": v.grade,
                "true_type": t.type or "",
                "type": v.fracture_type or "",
                "true_loss": max(t.loss_central, *(getattr(t, f"loss_{r}") for r in THIRDS)),
                "loss": None
                if v.rhlv is None
                else max(v.central_rhlv or -1.0, *(v.rhlv[r] for r in THIRDS)),
            }
            for r in THIRDS:
                row[f"true_{r}"] = getattr(t, f"height_{r}_after_mm")
                row[f"mask_{r}"] = v.heights_mask_mm.get(r) if v.heights_mask_mm else None
                row[f"ct_{r}"] = v.heights_ct_mm.get(r) if v.heights_ct_mm else None
            rows.append(row)
    return rows, time.perf_counter() - t0


def _near_threshold(loss: float, margin: float = 0.03) -> bool:
    return any(abs(loss - t) < margin for t in (0.20, 0.25, 0.40))


def phantom_section(rows: list[dict], seconds: float) -> str:
    out = ["## Phantoms", ""]
    out.append(
        f"{len(FRACTURE_SETS)} synthetic spines ({len(rows)} vertebrae; graded in "
        f"{seconds:.0f} s including phantom generation), orientations and spacings "
        "RAS 1 mm, PIR 3x1x1 mm, LPS 1 mm, IPL 1x1x3 mm, fractures of every type and grade, "
        "adjacent ones included (`bench/validate.py` lists them).\n"
    )
    out.append("### Height error (measured - true, mm)\n")
    out.append("| geometry | source | n | mean | mean abs | max abs |")
    out.append("|---|---|---|---|---|---|")
    for geom in dict.fromkeys(r["geometry"] for r in rows):
        for src in ("mask", "ct"):
            errs = [
                r[f"{src}_{reg}"] - r[f"true_{reg}"]
                for r in rows
                if r["geometry"] == geom
                for reg in THIRDS
                if r[f"{src}_{reg}"] is not None
            ]
            e = np.array(errs)
            out.append(
                f"| {geom} | {src} | {e.size} | {e.mean():+.2f} | {np.abs(e).mean():.2f} | "
                f"{np.abs(e).max():.2f} |"
            )
    out.append("")
    clear = [r for r in rows if not _near_threshold(r["true_loss"])]
    exact = sum(r["grade"] == r["true_grade"] for r in clear)
    all_exact = sum(r["grade"] == r["true_grade"] for r in rows)
    out.append("### Grades\n")
    out.append(f"- exact grade, all vertebrae: {all_exact} / {len(rows)}")
    out.append(
        f"- exact grade, true loss at least 3 points from a threshold: {exact} / {len(clear)}"
    )
    typed = [r for r in rows if r["true_grade"] >= 1 and r["grade"] and r["grade"] >= 1]
    out.append(
        f"- type correct among fractures found: "
        f"{sum(r['type'] == r['true_type'] for r in typed)} / {len(typed)}\n"
    )
    cm = np.zeros((4, 4), int)
    for r in rows:
        if r["grade"] is not None:
            cm[r["true_grade"], r["grade"]] += 1
    out.append("| true \\ predicted | 0 | 1 | 2 | 3 |")
    out.append("|---|---|---|---|---|")
    for g in range(4):
        out.append(f"| {g} | " + " | ".join(str(x) for x in cm[g]) + " |")
    misses = [r for r in rows if r["grade"] != r["true_grade"]]
    if misses:
        out.append("\nMisgraded vertebrae (all near a threshold unless said otherwise):\n")
        out.append("| set | level | true loss | measured loss | true grade | grade |")
        out.append("|---|---|---|---|---|---|")
        for r in misses:
            loss = "-" if r["loss"] is None else f"{r['loss']:.3f}"
            out.append(
                f"| {r['set']} | {r['level']} | {r['true_loss']:.3f} | {loss} | "
                f"{r['true_grade']} | {r['grade']} |"
            )
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- real cases
def real_section(root: Path | None) -> str:
    out = ["## Real cases (`../shared/data`)", ""]
    if root is None:
        out.append("Real data not found (set `VERTGRADE_TEST_DATA`): section not computed.\n")
        return "\n".join(out)
    # body isolation
    d = root / "tptbox-l3"
    study = load_study(d / "sub-ct_label-22_ct.nii.gz", d / "sub-ct_seg-vert_label-22_msk.nii.gz")
    sub, _ = read_volume(d / "sub-ct_seg-subreg_label-22_msk.nii.gz", kind="labels")
    res = grade_study(study)
    out.append("### Body isolation (tptbox-l3, ground truth = subregion labels 49 + 50)\n")
    out.append("| level | Dice | note |")
    out.append("|---|---|---|")
    for lab in (21, 22, 23):
        ours = res.bodies == lab
        gt = np.isin(sub.array, [49, 50]) & (study.labels.array == lab)
        dice = 2 * np.count_nonzero(ours & gt) / (np.count_nonzero(ours) + np.count_nonzero(gt))
        v = next(x for x in res.vertebrae if x.label == lab)
        out.append(f"| {v.level} | {dice:.3f} | {v.reason or ''} |")
    out.append("")

    rows = read_grades(root / "grades.csv")
    grades = {(r.subject, r.label): r.grade for r in rows}
    # every subject of grades.csv whose folder is here (sub-verse012 -> verse012/)
    subjects = list(dict.fromkeys(r.subject for r in rows))
    folders = [root / s.removeprefix("sub-") for s in subjects]
    missing = [f.name for f in folders if not f.is_dir()]
    folders = [f for f in folders if f.is_dir()]
    out.append("### Expert Genant grades (VerSe 2019)\n")
    out.append(
        f"Every subject of `grades.csv` with its folder present: {len(folders)} "
        f"({', '.join(f.name for f in folders)})"
        + (f"; not present: {', '.join(missing)}" if missing else "")
        + ".\n"
    )
    out.append(
        "| subject | level | true | predicted | type | conf | RHLV a / m / p | "
        "height a / m / p mm | reference a / m / p mm | source | flags |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in folders:
        r = grade_study(load_study(folder))
        for v in r.vertebrae:
            t = grades.get((r.subject, v.label))
            rh = "-" if v.rhlv is None else " / ".join(f"{100 * v.rhlv[k]:.0f}%" for k in THIRDS)
            hh = (
                "-"
                if v.heights_mm is None
                else " / ".join(f"{v.heights_mm.get(k):.1f}" for k in THIRDS)
            )
            ref = (
                "-"
                if v.reference_mm is None
                else " / ".join(f"{v.reference_mm.get(k):.1f}" for k in THIRDS)
            )
            conf = "-" if v.confidence is None else f"{v.confidence:.2f}"
            out.append(
                f"| {r.subject} | {v.level} | {'-' if t is None else t} | "
                f"{'n/a' if v.grade is None else v.grade} | {v.fracture_type or ''} | {conf} "
                f"| {rh} | {hh} | {ref} | {v.heights_source} | {', '.join(v.flags)} |"
            )
    out.append("")
    return "\n".join(out)


PEER_SCRIPT = REPO.parent / "shared" / "tools" / "peer-spine-report.py"


def _peer_results(root: Path, folder: Path, python: str) -> dict | None:  # type: ignore[type-arg]
    """The peer's measurement of one subject (TotalSegmentator's spine report, run by
    ../shared/tools/peer-spine-report.py with ``python``), or None where it cannot run."""
    import subprocess
    import tempfile

    ct = sorted(folder.glob("*_ct.nii.gz"))
    lab = sorted(folder.glob("*seg-vert_msk.nii.gz"))
    if not lab or not PEER_SCRIPT.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [python, str(PEER_SCRIPT), str((ct or lab)[0]), str(lab[0]), str(Path(tmp) / "p.json")],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["results"]


def _border_contact(res, label: int) -> float:  # type: ignore[no-untyped-def]
    """Largest share of a body's cross-section that lies on an image face it touches."""
    body = res.bodies == label
    best = 0.0
    for ax in range(3):
        profile = body.sum(axis=tuple(a for a in range(3) if a != ax))
        for pos in (0, body.shape[ax] - 1):
            on_face = int(np.take(body, pos, axis=ax).sum())
            if on_face and profile.max():
                best = max(best, on_face / float(profile.max()))
    return best


def peer_section(root: Path | None, peer_python: str | None) -> str:
    """Every graded VerSe vertebra: the expert grade, ours and the peer's call, side by side."""
    out = ["## Real cases beside the peer (TotalSegmentator's spine report)", ""]
    if root is None:
        out.append("Real data not found: section not computed.\n")
        return "\n".join(out)
    rows = read_grades(root / "grades.csv")
    truth = {(r.subject, r.label): r.grade for r in rows}
    subjects = list(dict.fromkeys(r.subject for r in rows))
    folders = [root / sj.removeprefix("sub-") for sj in subjects]
    folders = [f for f in folders if f.is_dir()]
    out.append(
        "The peer's rule: a fracture where `1 - min/max` of its three heights (lines at about 15 / "
        "50 / 85 % of the body's depth) exceeds 0.2; it skips vertebrae that touch the image's "
        "edge. Ours: the Genant grade of the largest loss, against the neighbour reference (thirds "
        "and the central depression) or of the vertebra's own shape (anterior and middle thirds "
        "against the posterior, beside the level's typical ratios: the `shape` column gives its "
        "wedge / biconcave losses). `-` = not graded (with our reason in the last column).\n"
    )
    if peer_python is None:
        out.append(
            "The peer is not installed here (`pip install --no-deps TotalSegmentator==2.18.0` "
            "and its few imports, then `python bench/validate.py --peer-python PYTHON`): its "
            "column is empty.\n"
        )
    columns = ("subject", "level", "expert", "ours", "ours largest loss", "shape")
    out.append("| " + " | ".join((*columns, "peer 1 - min/max", "peer call", "note")) + " |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    counts = {"ours": [0, 0, 0, 0], "peer": [0, 0, 0, 0]}  # found, missed, false, not graded
    misses: list[str] = []
    for folder in folders:
        res = grade_study(load_study(folder))
        peer = _peer_results(root, folder, peer_python) if peer_python else None
        for v in res.vertebrae:
            t = truth.get((res.subject, v.label))
            if t is None:
                continue
            worst = None
            if v.rhlv is not None:
                vals = [v.rhlv[k] for k in THIRDS if v.rhlv[k] is not None]
                if v.central_rhlv is not None:
                    vals.append(v.central_rhlv)
                if v.shape is not None:
                    vals += [v.shape.wedge, v.shape.biconcave]
                worst = max(vals) if vals else None
            shape = (
                "-"
                if v.shape is None
                else f"{100 * v.shape.wedge:.0f}% / {100 * v.shape.biconcave:.0f}%"
            )
            hd = None if peer is None else peer.get(f"vertebrae_{v.level}_height_difference")
            call = None if hd is None else int(hd > 0.2)
            for who, got in (
                ("ours", None if v.grade is None else int(v.grade >= 1)),
                ("peer", call),
            ):
                c = counts[who]
                if who == "peer" and peer is None:
                    continue
                if got is None:
                    c[3] += 1
                elif got and t >= 1:
                    c[0] += 1
                elif t >= 1:
                    c[1] += 1
                elif got:
                    c[2] += 1
            note = v.reason or ", ".join(v.flags)
            out.append(
                f"| {res.subject} | {v.level} | {t} | {'-' if v.grade is None else v.grade} | "
                f"{'-' if worst is None else f'{100 * worst:.0f}%'} | {shape} | "
                f"{'-' if hd is None else f'{hd:.2f}'} | "
                f"{'-' if call is None else ('fracture' if call else 'normal')} | {note} |"
            )
            if v.grade is None:
                line = f"- {res.subject} {v.level} (expert {t}): not graded: {v.reason}"
                if "cut_by_fov" in v.flags:
                    contact = 100 * _border_contact(res, v.label)
                    line += (
                        f"; the body's contact with the border is {contact:.1f} % "
                        "of its largest cross-section there (a tangent touch of an image "
                        "cropped to the spine, not a cut). Fix: tell a cut from a touch"
                    )
                    if worst is not None and worst >= 0.2:
                        line += (
                            f"; graded as measured now it would be a false call (largest loss "
                            f"{100 * worst:.0f} %), so its frame must first come from its own "
                            "endplates (an end vertebra measured along the centreline's end "
                            "tangent)"
                        )
                if "body_too_deep" in v.flags:
                    line += (
                        f" (graded as measured it would read a {100 * (worst or 0):.0f} % loss). "
                        "Fix: isolate an end vertebra's body again in its own frame: its first "
                        "frame follows the centreline's end tangent, along which the canal of a "
                        "tilted L5 does not show in the axial projection"
                    )
                misses.append(line + ".")
            elif (v.grade >= 1) != (t >= 1) or (t >= 2 and v.grade < 1):
                kind = "missed" if t >= 1 else "false call"
                line = (
                    f"- {res.subject} {v.level} (expert {t}, ours {v.grade}): {kind}; largest "
                    f"loss {100 * (worst or 0):.0f}% against the reference "
                    f"({', '.join(v.reference_sources) or 'none'})"
                )
                if t >= 1 and (worst or 0) < 0.15:
                    line += (
                        ": its heights are within 15 % of its neighbours' everywhere, and its own "
                        "shape is within 15 % of its level's typical ratios, so the expert's call "
                        "rests on more than height (a subtle endplate change). Fix: not a height "
                        "rule; an endplate-texture or learned grader trained on real fractures"
                    )
                misses.append(line + ".")
    n = sum(1 for (sj, _) in truth if sj.removeprefix("sub-") in {f.name for f in folders})
    out.append("")
    for who in ("ours", "peer"):
        if who == "peer" and peer_python is None:
            continue
        f, m, fa, ng = counts[who]
        out.append(
            f"- {who}: {f} of the {f + m} fractures it graded found (grade >= 1), {fa} normal "
            f"vertebrae called fractured, {ng} of {n} vertebrae not graded."
        )
    if misses:
        out.append("\nWhere ours misses, and why (from the measurement):\n")
        out += misses
    out.append("")
    return "\n".join(out)


def totalseg_section(root: Path | None) -> str:
    out = ["## Comparison with TotalSegmentator's spine report (totalseg-example)", ""]
    if root is None:
        out.append("Real data not found: section not computed.\n")
        return "\n".join(out)
    d = root / "totalseg-example"
    ref = json.loads((d / "reference_spine_report.json").read_text())["results"]
    res = grade_study(
        load_study(d / "example_ct.nii.gz", d / "totalseg_vertebrae_pp_refined.nii.gz")
    )
    out.append(
        "| level | peer a / m / p mm | ours mask a / m / p | ours CT a / m / p | "
        "peer 1 - min/max | ours RHLV a / m / p | grade |"
    )
    out.append("|---|---|---|---|---|---|---|")
    diffs = []
    by_region: dict[str, list[float]] = {r: [] for r in THIRDS}
    for v in res.vertebrae:
        key = f"vertebrae_{v.level}_height_"
        if key + "anterior_mm" not in ref:
            continue
        peer = [ref[key + f"{k}_mm"] for k in THIRDS]
        mk = [v.heights_mask_mm.get(k) for k in THIRDS] if v.heights_mask_mm else [None] * 3
        ck = [v.heights_ct_mm.get(k) for k in THIRDS] if v.heights_ct_mm else [None] * 3
        diffs += [m - p for m, p in zip(mk, peer, strict=True) if m is not None]
        for r, m, p in zip(THIRDS, mk, peer, strict=True):
            if m is not None:
                by_region[r].append(m - p)
        fmt = lambda xs: " / ".join("-" if x is None else f"{x:.1f}" for x in xs)  # noqa: E731
        rh = "-" if v.rhlv is None else " / ".join(f"{100 * v.rhlv[k]:.0f}%" for k in THIRDS)
        out.append(
            f"| {v.level} | {fmt(peer)} | {fmt(mk)} | {fmt(ck)} | "
            f"{ref[f'vertebrae_{v.level}_height_difference']:.2f} | {rh} | "
            f"{'n/a: ' + (v.reason or '') if v.grade is None else v.grade} |"
        )
    e = np.array(diffs)
    out.append(
        f"\nOurs (mask) minus peer over {e.size} heights: mean {e.mean():+.2f} mm, "
        f"mean absolute {np.abs(e).mean():.2f} mm; by region: "
        + ", ".join(
            f"{r} {np.mean(d):+.2f} mm ({min(d):+.1f} to {max(d):+.1f})"
            for r, d in by_region.items()
        )
        + ".\n"
    )
    return "\n".join(out)


def _alignment_section() -> str:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_alignment import alignment_section

    return alignment_section(figure=REPO / "docs" / "alignment_phantoms.png") + "\n"


def _synthesis_section(skip: bool) -> str:
    """The learned synthesis on phantoms (bench/bench_synthesis.py --validation, its defaults):
    trains the tiny model, so it takes minutes; needs the synthesis extra."""
    import importlib.util

    if skip or importlib.util.find_spec("torch") is None:
        why = "skipped (--skip-synthesis)" if skip else "PyTorch is not installed here"
        return (
            "## Learned synthesis on phantoms\n\nNot regenerated in this run: "
            f"{why}. Run `python bench/validate.py` with the synthesis extra installed.\n"
        )
    sys.path.insert(0, str(REPO / "bench"))
    from bench_synthesis import validation, validation_args

    return validation(validation_args()) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "validation.md"))
    ap.add_argument(
        "--skip-synthesis",
        action="store_true",
        help="leave out the learned synthesis (it trains a small model: several minutes)",
    )
    ap.add_argument(
        "--peer-python",
        default=None,
        help="a Python with TotalSegmentator installed, to run the peer's spine report beside "
        "ours (default: this Python if it has it)",
    )
    args = ap.parse_args(argv)
    if args.peer_python is None and importlib.util.find_spec("totalsegmentator") is not None:
        args.peer_python = sys.executable
    root = data_dir()
    rows, secs = run_phantoms()
    parts = [
        "# Validation\n",
        "Generated by `python bench/validate.py`; do not edit by hand. Heights are in mm; RHLV "
        "is the relative height loss against the healthy reference (the neighbour estimator).\n",
        phantom_section(rows, secs),
        real_section(root),
        peer_section(root, args.peer_python),
        totalseg_section(root),
        _alignment_section(),
        _synthesis_section(args.skip_synthesis),
        (REPO / "bench" / "validation_notes.md").read_text(encoding="utf-8")
        if (REPO / "bench" / "validation_notes.md").exists()
        else "",
    ]
    text = "\n".join(parts)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
