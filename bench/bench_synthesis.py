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

    python bench/bench_synthesis.py --validation [--epochs 100] [--train 16] [--test 6]
        [--shrm-pool rows global] [--scale-min 0.8 --scale-max 1.2]

trains the ``tiny`` configuration (once per SHRM pooling) on healthy phantom spines and
synthesises held-out phantoms with known fractures, then prints a markdown section for
``docs/validation.md`` (``bench/validate.py`` runs it with these defaults): the mean absolute
error of the healthy (pre-fracture) height estimated by the measured height itself ("before
synthesis": what a method without reference assumes), by the level's mean height (what a model
that ignores the context would give), by the neighbour reference and by the synthesis, per
third, over the fractured vertebrae and over the healthy ones, and how closely each estimate
follows the spine's size. About 15 minutes on a 2-core CPU.

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
    # end to end: grade_study with the synthesis reference (measurement, straightening,
    # synthesis and grading), per synthesised vertebra
    from vertgrade.pipeline import grade_study
    from vertgrade.synthesis.reference import SynthesisReference

    t = time.perf_counter()
    ref = SynthesisReference(synth)
    graded = grade_study(subj.study, reference=ref)
    n_synthesised = sum(v.reference_sources == (synth.name,) for v in graded.vertebrae)
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
        "grade_study_s_per_synthesised_vertebra": round(t_study / max(1, n_synthesised), 3),
        "graded_vertebrae": n_graded,
        "train_slices_per_s": round(n_done / max(t_train, 1e-9), 2),
        "train_batch": cfg.batch_size,
    }


def validation(args: argparse.Namespace) -> str:
    from vertgrade.pipeline import grade_study
    from vertgrade.synthesis.config import named_config
    from vertgrade.synthesis.infer import Synthesiser
    from vertgrade.synthesis.phantoms import phantom_subject
    from vertgrade.synthesis.reference import SynthesisReference
    from vertgrade.synthesis.train import train_synthesis

    regions = ("anterior", "middle", "posterior")
    sizes = (args.scale_min, args.scale_max)
    t0 = time.perf_counter()
    train_subjects = [phantom_subject(i, seed=1, scale_range=sizes) for i in range(args.train)]
    train = [t.spine for t in train_subjects]
    # the level-mean baseline: each level's and third's mean true height over the training
    # phantoms, what a model that ignores the context would predict
    pop: dict[tuple[int, str], float] = {}
    for r in regions:
        by_level: dict[int, list[float]] = {}
        for t in train_subjects:
            for v in t.phantom.truth:
                by_level.setdefault(v.label, []).append(getattr(v, f"height_{r}_before_mm"))
        pop.update({(k, r): float(np.mean(h)) for k, h in by_level.items()})
    t_prep = time.perf_counter() - t0

    kinds = ["wedge", "biconcave", "crush"]
    tests = []
    for i in range(args.test):
        level = ["T11", "T12", "L1"][i % 3]
        sev = [0.25, 0.35, 0.45][(i // 3) % 3]
        subj = phantom_subject(
            1000 + i, seed=2, fractures=[f"{level}:{kinds[i % 3]}:{sev}"], scale_range=sizes
        )
        tests.append((subj, grade_study(subj.study)))

    # estimates per (group, method): absolute errors and deviations from the level mean
    methods = [
        "measured",
        "level mean",
        "neighbours",
        *(f"synthesis ({p})" for p in args.shrm_pool),
    ]
    errs = {(g, m): [] for g in ("fractured", "healthy") for m in methods}
    devs: dict[str, list[float]] = {m: [] for m in ["true", *methods]}
    trained = []
    n_missing = 0
    for pool in args.shrm_pool:
        name = f"synthesis ({pool})"
        cfg = replace(named_config("tiny"), shrm_pool=pool)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            summary = train_synthesis(
                train, Path(work) / "model", config=cfg, device=args.device, epochs=args.epochs
            )
            synth = Synthesiser.from_file(summary.model_path, device=args.device)
        trained.append((pool, summary, time.perf_counter() - t1))
        first = pool == args.shrm_pool[0]
        for subj, base in tests:
            truth = {t.label: t for t in subj.phantom.truth}
            res = grade_study(subj.study, reference=SynthesisReference(synth))
            for v, b in zip(res.vertebrae, base.vertebrae, strict=True):
                inner = v.label not in (res.vertebrae[0].label, res.vertebrae[-1].label)
                if v.reference_mm is None or v.heights_mm is None or b.reference_mm is None:
                    n_missing += int(inner)
                    continue
                t = truth[v.label]
                group = "fractured" if t.fractured else "healthy"
                for r in regions:
                    before = getattr(t, f"height_{r}_before_mm")
                    mean = pop[(v.label, r)]
                    est = {name: float(v.reference_mm.get(r) or 0)}
                    if first:  # the baselines once
                        est["measured"] = float(v.heights_mm.get(r) or 0)
                        est["level mean"] = mean
                        est["neighbours"] = float(b.reference_mm.get(r) or 0)
                        devs["true"].append(before - mean)
                    for m, x in est.items():
                        errs[(group, m)].append(abs(x - before))
                        devs[m].append(x - mean)

    def tracking(m: str) -> str:
        x, y = np.asarray(devs["true"]), np.asarray(devs[m])
        if x.size < 3 or x.size != y.size or np.std(x) == 0 or np.std(y) == 0:
            return f"{m}: n/a"
        r = float(np.corrcoef(x, y)[0, 1])
        slope = float(np.polyfit(x, y, 1)[0])
        return f"{m} r = {r:.2f}, slope {slope:.2f}"

    runs = "; ".join(
        f"SHRM pooling '{pool}': {s.epochs_done} epochs in {sec / 60:.1f} min"
        for pool, s, sec in trained
    )
    pools = " ".join(args.shrm_pool)
    lines = [
        "## Learned synthesis on phantoms",
        "",
        f"Regenerated by `python bench/bench_synthesis.py --validation --epochs {args.epochs} "
        f"--train {args.train} --test {args.test} --shrm-pool {pools} --scale-min "
        f"{args.scale_min:g} --scale-max {args.scale_max:g} --device {args.device}` "
        f"({time.strftime('%Y-%m-%d')}, {_device_name(args.device)}; phantoms "
        f"{t_prep / 60:.1f} min). The `tiny` configuration was trained on {args.train} healthy "
        f"phantom spines (T10-L2, 2 mm, sizes {args.scale_min:g}-{args.scale_max:g} x the "
        f"typical adult, {trained[0][1].n_slices} slices per epoch; {runs}) and applied to "
        f"{args.test} other phantoms with one wedge, biconcave or crush fracture each (25-45 %). "
        "Error of the estimated healthy (pre-fracture) height of each third against the "
        "phantom's true one, mean absolute over vertebrae and thirds. 'measured' is the "
        "vertebra's own height (what no reference at all assumes: before synthesis); 'level "
        "mean' the training phantoms' mean height of that level and third (what a model that "
        "ignores the context would give); 'neighbours' vertgrade's default reference:",
        "",
        "| vertebrae | n | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for group in ("fractured", "healthy"):
        n = len(errs[(group, "measured")]) // 3
        lines.append(
            f"| {group} | {n} | " + " | ".join(_mean(errs[(group, m)]) for m in methods) + " |"
        )
    lines += [
        "",
        "Does an estimate follow each spine's size, or only its level's mean? Correlation and "
        "slope of the estimated against the true deviation from the level mean, over the "
        f"{len(devs['true'])} thirds above (0 for an estimate that ignores the context, 1 for a "
        "perfect one): "
        + "; ".join(tracking(m) for m in methods if m not in ("measured", "level mean"))
        + f". Inner vertebrae without a synthesised reference: {n_missing}.",
        "",
        _pooling_sentence(errs, [m for m in methods if m.startswith("synthesis")])
        + " Phantom heights follow their level's typical shape times one "
        "scale per spine, which is exactly the neighbour reference's model, so the comparison "
        "favours the neighbours; the measured heights themselves carry about 0.8 mm of error "
        "at 2 mm spacing, a floor for every column. These are phantoms: the learned reference "
        "has not been trained or validated on real CT here (no GPU and no VerSe training set "
        "on this machine; docs/verse2019.md gives the commands).",
        "",
    ]
    return "\n".join(lines)


def _pooling_sentence(errs: dict[tuple[str, str], list[float]], pools: list[str]) -> str:
    """Which SHRM pooling did better in this run, in numbers, and how far that can be trusted."""
    if len(pools) < 2:
        return ""
    frac = {m: float(np.mean(errs[("fractured", m)])) for m in pools if errs[("fractured", m)]}
    if len(frac) < 2:
        return ""
    best = min(frac, key=lambda m: frac[m])
    others = ", ".join(f"{m} {frac[m]:.2f} mm" for m in pools if m != best and m in frac)
    return (
        f"In this run {best} estimated fractured vertebrae best ({frac[best]:.2f} mm; {others}). "
        "Which pooling comes first has changed between runs of a few minutes of CPU training "
        "(earlier runs put 'rows' ahead, this code's default for `tiny`), so neither is "
        "established on phantoms, and the neighbour reference stays vertgrade's default."
    )


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
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--test", type=int, default=6)
    ap.add_argument(
        "--shrm-pool",
        nargs="+",
        default=["rows", "global"],
        choices=["global", "rows"],
        help="SHRM pooling of the models to train and compare (validation)",
    )
    ap.add_argument("--scale-min", type=float, default=0.8, help="smallest phantom size")
    ap.add_argument("--scale-max", type=float, default=1.2, help="largest phantom size")
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
