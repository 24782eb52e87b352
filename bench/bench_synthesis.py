"""Benchmark and validation of the learned pseudo-healthy synthesis.

Speed (``--speed``, default)::

    python bench/bench_synthesis.py [--device cpu|cuda] [--config paper] [--vertebrae 6]

- synthesis time per vertebra with the chosen configuration (default ``paper``: ~1.0 M parameter
  generator, both passes, all slices of a vertebra in one batch; weights untrained: the time does
  not depend on them). A T9-L4 phantom at 1 mm is straightened once; the time covers the
  generator calls, the height maps and the iterative second stage for vertebrae whose
  neighbours the first stage finds fractured (``--stage2 all`` forces it for every vertebra,
  the worst case; ``--stage2 none`` is a spine without fractures). Goal: under 2 s per
  vertebra on a 2-core CPU (the public code takes about 31 s);
- the whole ``grade_study`` with the synthesis reference on that phantom (core run,
  straightening, synthesis, measurement, grading), per synthesised vertebra;
- training throughput in slices per second (a few optimisation steps, batch of the
  configuration, discriminators included).

Validation (``--validation``)::

    python bench/bench_synthesis.py --validation [--epochs 150] [--train 8] [--test 6]

trains the ``tiny`` configuration on healthy phantom spines and synthesises held-out phantoms
with known fractures, then prints a markdown section for ``docs/validation.md``: the mean
absolute error of the healthy (pre-fracture) height estimated by the measured height itself
("before synthesis": what a method without reference assumes), by the neighbour reference, and
by the synthesis, per third, over the fractured vertebrae and over the healthy ones.

Runs unchanged on a CUDA machine (``--device cuda``); prints the device it used.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.2f} mm" if values else "n/a"


def speed(args: argparse.Namespace) -> dict[str, object]:
    import torch

    from vertgrade.synthesis.config import named_config
    from vertgrade.synthesis.data import SliceDataset
    from vertgrade.synthesis.infer import Synthesiser
    from vertgrade.synthesis.losses import discriminator_loss, generator_losses
    from vertgrade.synthesis.model import Generator, build_discriminators, count_parameters
    from vertgrade.synthesis.modelfile import load_generator, save_generator
    from vertgrade.synthesis.phantoms import phantom_subject
    from vertgrade.synthesis.train import batch_tensors

    cfg = named_config(args.config)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    gen = Generator(cfg)
    n_params = count_parameters(gen)
    work = Path(tempfile.mkdtemp())
    path = save_generator(work / "generator.safetensors", gen, cfg, trained_subjects=[])
    t = time.perf_counter()
    subj = phantom_subject(
        0,
        levels="T9-L4",
        fractures=["T12:wedge:0.35", "L2:crush:0.3"],
        spacing_mm=1.0,
        fov_mm=160.0,
        spine_step_mm=1.0,
        spine_half_width_mm=max(cfg.image_width_mm, 2 * cfg.slice_half_mm) / 2 + 2,
    )
    t_prep = time.perf_counter() - t
    g, mf = load_generator(path, device=args.device)
    context = {"auto": 0.1, "all": -float("inf"), "none": float("inf")}[args.stage2]
    synth = Synthesiser(g, mf, device=args.device, context_loss=context)
    synth.synthesise(subj.spine)  # warm-up (kernels, allocations)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        res = synth.synthesise(subj.spine)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / len(res))
    n_iter = sum(any(p.iterated for p in v.passes.values()) for v in res.values())
    # end to end: grade_study with the synthesis reference (core run, straightening, synthesis,
    # final measurement and grading), per synthesised vertebra
    from vertgrade.pipeline import grade_study
    from vertgrade.reference.synthesis import SynthesisReference

    t = time.perf_counter()
    ref = SynthesisReference(synth, subj.study)
    graded = grade_study(subj.study, reference=ref)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_study = time.perf_counter() - t
    n_graded = sum(v.status == "graded" for v in graded.vertebrae)
    slices = sum(len(p.positions_mm) for p in next(iter(res.values())).passes.values())

    # training throughput: discriminator + generator steps on healthy phantom slices
    train_cfg = replace(cfg, healthy_max_grade=1)
    healthy = phantom_subject(
        1,
        levels="T9-L4",
        spacing_mm=1.0,
        fov_mm=160.0,
        spine_half_width_mm=max(cfg.image_width_mm, 2 * cfg.slice_half_mm) / 2 + 2,
    ).spine
    ds = SliceDataset([healthy], train_cfg)
    gen_t = Generator(cfg).to(dev).train()
    discs = build_discriminators(cfg).to(dev).train()
    opt_g = torch.optim.Adam(gen_t.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=cfg.betas)
    rng = np.random.default_rng(0)
    n_done, t_train = 0, 0.0
    for step in range(args.train_steps + 1):
        idx = rng.choice(len(ds), size=cfg.batch_size, replace=len(ds) < cfg.batch_size)
        t = time.perf_counter()
        inputs, targets = batch_tensors(ds.batch(idx, rng), dev)
        assert targets is not None
        out = gen_t(**inputs, true_height=targets.height)
        opt_d.zero_grad()
        discriminator_loss(out, targets, discs, cfg)["total"].backward()
        opt_d.step()
        opt_g.zero_grad()
        generator_losses(out, targets, discs, cfg)["total"].backward()
        opt_g.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:  # the first step warms up
            t_train += time.perf_counter() - t
            n_done += cfg.batch_size
    return {
        "config": cfg.name,
        "device": args.device,
        "device_name": _device_name(args.device),
        "generator_parameters": n_params,
        "image": [cfg.image_rows, cfg.image_cols],
        "slices_per_vertebra": slices,
        "vertebrae": len(res),
        "vertebrae_iterated": n_iter,
        "stage2": args.stage2,
        "synthesis_s_per_vertebra": round(float(np.median(times)), 3),
        "phantom_and_straightening_s": round(t_prep, 2),
        "grade_study_with_synthesis_s": round(t_study, 2),
        "grade_study_s_per_synthesised_vertebra": round(t_study / max(1, len(ref.syntheses)), 3),
        "graded_vertebrae": n_graded,
        "train_slices_per_s": round(n_done / max(t_train, 1e-9), 2),
        "train_batch": cfg.batch_size,
    }


def validation(args: argparse.Namespace) -> str:
    from vertgrade.pipeline import grade_study
    from vertgrade.reference.synthesis import SynthesisReference
    from vertgrade.synthesis.config import named_config
    from vertgrade.synthesis.infer import Synthesiser
    from vertgrade.synthesis.phantoms import phantom_subject
    from vertgrade.synthesis.train import train_synthesis

    t0 = time.perf_counter()
    train_subjects = [phantom_subject(i, seed=1) for i in range(args.train)]
    train = [t.spine for t in train_subjects]
    # population baseline: the mean true height of each level and third over the training
    # phantoms, what a model that ignores the context would predict
    pop: dict[tuple[int, str], float] = {}
    for r in ("anterior", "middle", "posterior"):
        by_level: dict[int, list[float]] = {}
        for t in train_subjects:
            for v in t.phantom.truth:
                by_level.setdefault(v.label, []).append(getattr(v, f"height_{r}_before_mm"))
        pop.update({(k, r): float(np.mean(h)) for k, h in by_level.items()})
    cfg = replace(named_config("tiny"), shrm_pool=args.shrm_pool)
    with tempfile.TemporaryDirectory() as work:
        summary = train_synthesis(
            train, Path(work) / "model", config=cfg, device=args.device, epochs=args.epochs
        )
        t_train = time.perf_counter() - t0
        synth = Synthesiser.from_file(summary.model_path, device=args.device)
    kinds = ["wedge", "biconcave", "crush"]
    errs: dict[str, dict[str, list[float]]] = {
        k: {"measured": [], "population": [], "neighbours": [], "synthesis": []}
        for k in ("fractured", "healthy")
    }
    per_region: dict[str, list[float]] = {}
    n_missing = 0
    for i in range(args.test):
        level = ["T11", "T12", "L1"][i % 3]
        sev = [0.25, 0.35, 0.45][(i // 3) % 3]
        frac = f"{level}:{kinds[i % 3]}:{sev}"
        subj = phantom_subject(1000 + i, seed=2, fractures=[frac])
        truth = {t.label: t for t in subj.phantom.truth}
        base = grade_study(subj.study)
        ref = SynthesisReference(synth, subj.study)
        res = grade_study(subj.study, reference=ref)
        for v, b in zip(res.vertebrae, base.vertebrae, strict=True):
            inner = v.label not in (res.vertebrae[0].label, res.vertebrae[-1].label)
            if v.reference_mm is None or v.heights_mm is None or b.reference_mm is None:
                n_missing += int(inner)
                continue
            t = truth[v.label]
            group = "fractured" if t.fractured else "healthy"
            for r in ("anterior", "middle", "posterior"):
                before = getattr(t, f"height_{r}_before_mm")
                errs[group]["measured"].append(abs(float(v.heights_mm.get(r) or 0) - before))
                errs[group]["population"].append(abs(pop[(v.label, r)] - before))
                errs[group]["neighbours"].append(abs(float(b.reference_mm.get(r) or 0) - before))
                e = abs(float(v.reference_mm.get(r) or 0) - before)
                errs[group]["synthesis"].append(e)
                if group == "fractured":
                    per_region.setdefault(r, []).append(e)
    lines = [
        "## Learned synthesis on phantoms",
        "",
        f"Regenerated by `python bench/bench_synthesis.py --validation --epochs {args.epochs} "
        f"--train {args.train} --test {args.test} --shrm-pool {args.shrm_pool} --device "
        f"{args.device}` ({time.strftime('%Y-%m-%d')}, {_device_name(args.device)}). The `tiny` "
        f"configuration (SHRM pooling '{args.shrm_pool}') was trained for {summary.epochs_done} "
        f"epochs ({t_train / 60:.1f} min, {summary.n_slices} slices per epoch) on "
        f"{args.train} healthy phantom spines (T10-L2, 2 mm) and applied to {args.test} other "
        "phantoms with one wedge, biconcave or crush fracture each (25-45 %). Error of the "
        "healthy (pre-fracture) height of each third, mean absolute over vertebrae and thirds:",
        "",
        "| vertebrae | n | measured height (before synthesis) | level's training mean "
        "| neighbour reference | synthesised (after synthesis) |",
        "|---|---|---|---|---|---|",
    ]
    for group in ("fractured", "healthy"):
        e = errs[group]
        n = len(e["measured"]) // 3
        lines.append(
            f"| {group} | {n} | {_mean(e['measured'])} | {_mean(e['population'])} | "
            f"{_mean(e['neighbours'])} | "
            f"{_mean(e['synthesis'])} |"
        )
    lines += [
        "",
        "Synthesised minus true, fractured vertebrae, per third (mean absolute): "
        + (", ".join(f"{r} {_mean(v)}" for r, v in per_region.items()) or "none synthesised")
        + f". Vertebrae without a synthesised reference: {n_missing}.",
        "",
        "The phantoms' healthy heights follow their level's typical heights and one scale per "
        "spine, which the neighbour reference models exactly; the tiny model learns it from "
        "the images alone, at 2 mm. These numbers check the mechanics (training, iterative "
        "synthesis, mapping back, one code path to the RHLV); the published accuracy needs the "
        "`paper` configuration trained on real CT (docs/verse2019.md).",
        "",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default="paper", choices=["tiny", "paper"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument(
        "--stage2",
        default="auto",
        choices=["auto", "all", "none"],
        help="second (iterative) stage: where a neighbour looks fractured (auto), for every "
        "vertebra (all: the worst case), or never (none: a spine without fractures)",
    )
    ap.add_argument("--validation", action="store_true")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=6)
    ap.add_argument("--shrm-pool", default="global", choices=["global", "rows"])
    ap.add_argument("--json", type=Path, help="also write the speed numbers here")
    return ap


def validation_args() -> argparse.Namespace:
    """The validation's default settings (what ``bench/validate.py`` runs)."""
    return _parser().parse_args(["--validation"])


def main() -> None:
    args = _parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tempfile.tempdir = tmp  # the benchmark's model files go there and are removed after
        try:
            if args.validation:
                print(validation(args))
                return
            out = speed(args)
        finally:
            tempfile.tempdir = None
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
