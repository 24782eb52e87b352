"""Training the synthesis model (``vertgrade train-synthesis``).

The loop follows HealthiVert-GAN: per batch, the three discriminators are updated on the detached
composites, then the generator on the sum of its weighted losses
(:func:`vertgrade.synthesis.losses.generator_losses`); Adam with the configured learning rate and
betas; the learning rate is constant for ``epochs`` and decays linearly to zero over
``decay_epochs``. Only vertebrae graded at most ``healthy_max_grade`` with a vertebra above and
below are targets (:func:`vertgrade.synthesis.data.eligible_targets`).

The output folder holds ``generator.safetensors`` (:mod:`.modelfile`, rewritten at every
checkpoint, so that an interrupted run leaves a usable model), ``checkpoint.pt`` (everything
needed to resume: networks, optimisers, random states, history) and ``training.json`` (losses per
epoch, throughput, the subjects trained on). A rerun on the same folder resumes from the
checkpoint; with the same data and seed the result equals an uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vertgrade.errors import InputError, OutputError
from vertgrade.io.files import atomic_path, write_text_atomic
from vertgrade.synthesis.config import SynthesisConfig, named_config
from vertgrade.synthesis.crops import StraightenedSpine
from vertgrade.synthesis.data import SliceBatch, SliceDataset, load_samples
from vertgrade.synthesis.losses import TrainingTargets, discriminator_loss, generator_losses
from vertgrade.synthesis.model import (
    Generator,
    build_discriminators,
    count_parameters,
    resolve_device,
)
from vertgrade.synthesis.modelfile import save_generator

__all__ = ["TrainProgress", "TrainingSummary", "batch_tensors", "train_synthesis"]

logger = logging.getLogger(__name__)

MODEL_NAME = "generator.safetensors"
CHECKPOINT_NAME = "checkpoint.pt"
SUMMARY_NAME = "training.json"


@dataclass(frozen=True)
class TrainProgress:
    """One training step: ``epoch`` (1-based) of ``total_epochs``, ``step`` of ``steps`` in the
    epoch, the step's generator and discriminator losses, the throughput so far, the generator's
    parameter count and the training slices per epoch."""

    epoch: int
    total_epochs: int
    step: int
    steps: int
    generator_loss: float
    discriminator_loss: float
    slices_per_s: float
    parameters: int = 0
    n_slices: int = 0


@dataclass(frozen=True)
class TrainingSummary:
    """What a training run produced."""

    model_path: Path
    epochs_done: int
    total_epochs: int
    parameters: int
    n_slices: int
    trained_subjects: tuple[str, ...]
    slices_per_s: float
    resumed_from_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def batch_tensors(
    b: SliceBatch, device: torch.device
) -> tuple[dict[str, torch.Tensor], TrainingTargets | None]:
    """Generator inputs (``image``, ``ratio``, ``orientation``, ``prior``) and, when the batch has
    them, training targets, as tensors on ``device``."""

    def t(a: np.ndarray[Any, Any], image: bool = True) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return (x[:, None] if image else x).to(device)

    inputs = {
        "image": t(b.image),
        "ratio": t(b.ratio, False),
        "orientation": t(b.orientation, False),
        "prior": t(b.prior),
    }
    targets = None
    if b.truth is not None and b.target_seg is not None and b.neighbour_seg is not None:
        targets = TrainingTargets(
            inputs["image"], t(b.truth), t(b.target_seg), t(b.neighbour_seg), t(b.height_px, False)
        )
    return inputs, targets


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration (restores the previous settings after)."""
    prev = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[:2]
        torch.use_deterministic_algorithms(prev[2])


def _lr_factor(epoch: int, cfg: SynthesisConfig) -> float:
    """Learning-rate factor of 0-based ``epoch``: 1, then linear to 0 (pix2pix's rule)."""
    if epoch < cfg.epochs:
        return 1.0
    return max(0.0, 1.0 - (epoch - cfg.epochs + 1) / float(cfg.decay_epochs + 1))


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    skip = {"epochs", "decay_epochs", "checkpoint_every"}
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def train_synthesis(
    samples: str | Path | Sequence[StraightenedSpine],
    out_dir: str | Path,
    *,
    config: str | SynthesisConfig = "tiny",
    device: str = "cpu",
    epochs: int | None = None,
    subjects: Sequence[str] | None = None,
    exclude_subjects: Sequence[str] = (),
    force: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    max_steps: int | None = None,
) -> TrainingSummary:
    """Train (or resume training) a synthesis model.

    Parameters
    ----------
    samples : path or sequence of StraightenedSpine
        A samples folder (``vertgrade synthesis-data``) or spines in memory.
    out_dir : path
        Model folder; resumed from its checkpoint when it has one.
    config : str or SynthesisConfig
        ``"tiny"``, ``"paper"`` or a configuration.
    device : {"cpu", "cuda"}
    epochs : int, optional
        Total epochs, replacing the configuration's (keeping its constant : decay proportion).
    subjects, exclude_subjects : sequence of str, optional
        Train on these subjects only / not on these (cross-fitting folds).
    force : bool
        Start afresh in a non-empty folder (an existing checkpoint is discarded).
    progress : callable, optional
        Called with a :class:`TrainProgress` after every step.
    max_steps : int, optional
        Stop after this many optimisation steps in this call (the checkpoint allows resuming).

    Returns
    -------
    TrainingSummary
    """
    cfg = named_config(config) if isinstance(config, str) else config
    if epochs is not None:
        cfg = cfg.with_total_epochs(int(epochs))
    dev = resolve_device(device)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "model location is a file, not a folder")
    ckpt_path = out / CHECKPOINT_NAME
    if force and ckpt_path.exists():
        ckpt_path.unlink()
    if out.is_dir() and any(out.iterdir()) and not ckpt_path.exists() and not force:
        raise OutputError(
            out,
            "model folder exists, is not empty and has no checkpoint (use --force to start afresh)",
        )
    if isinstance(samples, (str, Path)):
        spines = load_samples(samples, subjects=subjects, exclude=exclude_subjects)
    else:
        keep = set(subjects) if subjects is not None else None
        spines = [
            s
            for s in samples
            if (keep is None or s.subject in keep) and s.subject not in set(exclude_subjects)
        ]
    steps = sorted({sp.step_mm for sp in spines})
    where = samples if isinstance(samples, (str, Path)) else None
    if len(steps) > 1:
        raise InputError(where, f"samples of different spacings {steps}: rebuild them alike")
    if steps and steps[0] > cfg.spacing_mm + 1e-6:
        raise InputError(
            where,
            f"samples are {steps[0]:g} mm, coarser than the configuration's "
            f"{cfg.spacing_mm:g} mm: rebuild them with --spacing {cfg.spacing_mm:g}",
        )
    ds = SliceDataset(spines, cfg)
    if len(ds) < 2:
        raise InputError(
            samples if isinstance(samples, (str, Path)) else None,
            "fewer than two training slices: no vertebra graded "
            f"<= {cfg.healthy_max_grade} with neighbours above and below",
        )
    trained_subjects = tuple(sorted({spines[i].subject for i, *_ in ds.items}))

    with deterministic(dev):
        torch.manual_seed(cfg.seed)
        gen = Generator(cfg).to(dev)
        discs = build_discriminators(cfg).to(dev)
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas)
        opt_d = torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=cfg.betas)
        rng = np.random.default_rng(cfg.seed)
        start_epoch, history = 0, []
        if ckpt_path.exists():
            state = _load_checkpoint(ckpt_path)
            if not _same_setup(state["config"], cfg.to_dict()):
                raise OutputError(
                    out,
                    "its checkpoint was made with another configuration "
                    "(use another folder, or --force to start afresh)",
                )
            if tuple(state["subjects"]) != trained_subjects:
                raise OutputError(
                    out,
                    "its checkpoint was trained on other subjects "
                    "(use another folder, or --force to start afresh)",
                )
            gen.load_state_dict(state["generator"])
            discs.load_state_dict(state["discriminators"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            rng.bit_generator.state = json.loads(state["numpy_rng"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch = int(state["epoch"])
            history = json.loads(state["history"])
        out.mkdir(parents=True, exist_ok=True)

        n_params = count_parameters(gen)
        logger.info("generator parameters: %d", n_params)
        total = cfg.total_epochs
        steps_per_epoch = max(1, len(ds) // cfg.batch_size)
        slices_done, t_run, steps_run = 0, 0.0, 0
        stopped = False
        epoch = start_epoch
        for epoch in range(start_epoch, total):
            factor = _lr_factor(epoch, cfg)
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * factor
            perm = rng.permutation(len(ds))
            sums: dict[str, float] = {}
            n_steps = 0
            gen.train()
            discs.train()
            for step in range(steps_per_epoch):
                t0 = time.perf_counter()
                idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                inputs, targets = batch_tensors(ds.batch(idx, rng), dev)
                assert targets is not None  # training batches always carry them
                out_g = gen(**inputs, true_height=targets.height)
                opt_d.zero_grad(set_to_none=True)
                d_terms = discriminator_loss(out_g, targets, discs, cfg)
                d_terms["total"].backward()
                opt_d.step()
                for p in discs.parameters():
                    p.requires_grad_(False)
                opt_g.zero_grad(set_to_none=True)
                g_terms = generator_losses(out_g, targets, discs, cfg)
                g_terms["total"].backward()
                opt_g.step()
                for p in discs.parameters():
                    p.requires_grad_(True)
                t_run += time.perf_counter() - t0
                slices_done += len(idx)
                steps_run += 1
                n_steps += 1
                for k, v in g_terms.items():
                    sums[f"g_{k}"] = sums.get(f"g_{k}", 0.0) + float(v.detach())
                sums["d_total"] = sums.get("d_total", 0.0) + float(d_terms["total"].detach())
                if progress is not None:
                    progress(
                        TrainProgress(
                            epoch + 1,
                            total,
                            step + 1,
                            steps_per_epoch,
                            float(g_terms["total"].detach()),
                            float(d_terms["total"].detach()),
                            slices_done / max(t_run, 1e-9),
                            n_params,
                            len(ds),
                        )
                    )
                if max_steps is not None and steps_run >= max_steps:
                    stopped = step + 1 < steps_per_epoch
                    break
            if stopped:
                break  # mid-epoch: not checkpointed, the epoch reruns on resume
            history.append({k: v / max(1, n_steps) for k, v in sums.items()} | {"epoch": epoch + 1})
            last = epoch + 1 == total
            if (epoch + 1) % max(1, cfg.checkpoint_every) == 0 or last or max_steps is not None:
                _save_all(
                    steps[0],
                    out,
                    gen,
                    discs,
                    opt_g,
                    opt_d,
                    rng,
                    epoch + 1,
                    history,
                    cfg,
                    trained_subjects,
                    n_params,
                    len(ds),
                    slices_done / max(t_run, 1e-9),
                )
            if max_steps is not None and steps_run >= max_steps:
                break
        epochs_done = len(history)
    return TrainingSummary(
        model_path=out / MODEL_NAME,
        epochs_done=epochs_done,
        total_epochs=total,
        parameters=n_params,
        n_slices=len(ds),
        trained_subjects=trained_subjects,
        slices_per_s=slices_done / max(t_run, 1e-9),
        resumed_from_epoch=start_epoch,
        history=history,
    )


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True`` (tensors and plain containers
    only: a checkpoint that holds other objects is refused, never unpickled)."""
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            path,
            "checkpoint holds objects other than tensors, refused (loading them could run "
            "code); not a vertgrade checkpoint: use --force to restart",
        ) from err
    except (OSError, RuntimeError, ValueError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            path, f"checkpoint cannot be read ({first}); use --force to restart"
        ) from err
    if not isinstance(state, dict):
        raise InputError(path, "not a vertgrade checkpoint; use --force to restart")
    return state


def _save_all(
    samples_step_mm: float,
    out: Path,
    gen: Generator,
    discs: torch.nn.ModuleDict,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch: int,
    history: list[dict[str, float]],
    cfg: SynthesisConfig,
    subjects: tuple[str, ...],
    n_params: int,
    n_slices: int,
    speed: float,
) -> None:
    summary = {
        "config": cfg.name,
        "epochs_done": epoch,
        "total_epochs": cfg.total_epochs,
        "parameters": n_params,
        "training_slices": n_slices,
        "samples_step_mm": samples_step_mm,
        "slices_per_s": round(speed, 2),
        "final_losses": {k: round(v, 5) for k, v in history[-1].items()} if history else {},
    }
    save_generator(out / MODEL_NAME, gen, cfg, trained_subjects=subjects, training=summary)
    state = {
        "config": cfg.to_dict(),
        "subjects": list(subjects),
        "epoch": epoch,
        "generator": gen.state_dict(),
        "discriminators": discs.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
    }
    with atomic_path(out / CHECKPOINT_NAME) as tmp:
        torch.save(state, tmp)
    write_text_atomic(
        out / SUMMARY_NAME,
        json.dumps(summary | {"history": history, "trained_subjects": list(subjects)}, indent=2)
        + "\n",
    )
