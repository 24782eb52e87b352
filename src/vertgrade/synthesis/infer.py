"""Synthesising pseudo-healthy vertebrae with a trained generator.

:class:`Synthesiser` runs the iterative synthesis of HealthiVert-GAN on a straightened spine,
efficiently:

1. every vertebra with a vertebra above and below is synthesised from its original context, all
   its slices of one pass in one batch, once (stage 1, cached);
2. a vertebra whose neighbour's stage-1 synthesis shows that the neighbour lost height (largest
   regional loss at least ``context_loss``) is synthesised again with that neighbour shown as its
   synthesis (:class:`vertgrade.synthesis.data.Replacement`), so that a fractured neighbour does
   not contaminate the context; with no such neighbour, stage 1 is the result.

This replaces the published code's ~133 generator calls per vertebra (every slice apart, every
target re-synthesising its neighbours) by one batched call per vertebra and pass (two where a
neighbour is fractured).

Each pass gives the synthesised target's soft segmentation on its slices (centred layout); its
0.5 crossings along the spine give a height per column (divided by the sample's shrink factor),
interpolated between slices onto the spine's in-plane grid: the pseudo-healthy height map
(:attr:`PassSynthesis.heights_mm`). :meth:`VertebraSynthesis.body_volume` maps the synthesised body
back onto any voxel grid through the straightened spine's exact transform.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.geometry.thirds import THIRDS, footprint_thirds
from vertgrade.morphometry import height_map_from_profiles, region_heights
from vertgrade.synthesis.config import Pass, SynthesisConfig
from vertgrade.synthesis.crops import StraightenedSpine
from vertgrade.synthesis.data import Replacement, SliceBatch, make_slices, slice_positions
from vertgrade.synthesis.model import Generator, resolve_device
from vertgrade.synthesis.modelfile import ModelFile, load_generator

__all__ = ["PassSynthesis", "Synthesiser", "VertebraSynthesis", "original_height_map"]

logger = logging.getLogger(__name__)

#: A neighbour whose stage-1 synthesis shows a largest regional loss at or above this is shown
#: as its synthesis in its neighbours' context (below Genant grade 1's 20 %, above the natural
#: variation of healthy heights).
CONTEXT_LOSS = 0.10


@dataclass(frozen=True)
class PassSynthesis:
    """One pass's synthesis of one vertebra.

    Attributes
    ----------
    pass_ : {"sagittal", "coronal"}
    positions_mm : (S,) float64
        Slice positions (``lr`` for sagittal, ``ap`` for coronal; spine in-plane mm).
    images, target : (S, H, W) float32
        Composite images and the target's soft segmentation (centred layout).
    height_px : (S,) float32
        SHRM heights of the fine stage (pixels of the sample).
    scale : float
        The sample's shrink factor along the spine.
    t_mid_mm : float
        Arc position of the sample's centre row.
    iterated : bool
        True when the context showed a neighbour's synthesis.
    heights_mm : (A, L) float64
        Pseudo-healthy height per column on the spine's in-plane grid (straightened mm), NaN
        where the synthesised body is absent.
    """

    pass_: Pass
    positions_mm: NDArray[np.float64]
    images: NDArray[np.float32] = field(repr=False)
    target: NDArray[np.float32] = field(repr=False)
    height_px: NDArray[np.float32]
    scale: float
    t_mid_mm: float
    iterated: bool
    heights_mm: NDArray[np.float64] = field(repr=False)


@dataclass(frozen=True)
class VertebraSynthesis:
    """All passes of one vertebra, with the geometry to map them back."""

    label: int
    passes: dict[str, PassSynthesis]
    spine: StraightenedSpine = field(repr=False)
    config: SynthesisConfig = field(repr=False)

    def heights_mm(self, pass_: str | None = None) -> NDArray[np.float64]:
        """(A, L) pseudo-healthy height map of one pass, or the mean of all passes (where any
        pass has a value)."""
        if pass_ is not None:
            return self.passes[pass_].heights_mm
        stack = np.stack([p.heights_mm for p in self.passes.values()])
        valid = np.isfinite(stack)
        n = valid.sum(axis=0)
        total = np.where(valid, stack, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def body_grid(
        self, pass_: str
    ) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """The synthesised body of one pass as a straightened sub-volume.

        Returns
        -------
        values : (T, A', L') float32
            Soft segmentation.
        t_mm, ap_mm, lr_mm : 1D float64
            Its straightened coordinates (evenly spaced, increasing).
        """
        p = self.passes[pass_]
        cfg = self.config
        y = (np.arange(cfg.image_rows) - (cfg.image_rows - 1) / 2.0) * cfg.spacing_mm
        cols = np.asarray(
            (np.arange(cfg.image_cols) - (cfg.image_cols - 1) / 2.0) * cfg.spacing_mm, np.float64
        )
        t = np.asarray(p.t_mid_mm + y / p.scale, dtype=np.float64)
        if pass_ == "sagittal":
            vals = np.transpose(p.target, (1, 2, 0))  # (T, ap=cols, lr=positions)
            return vals, t, cols, p.positions_mm
        vals = np.transpose(p.target, (1, 0, 2))  # (T, ap=positions, lr=cols)
        return vals, t, p.positions_mm, cols

    def body_volume(
        self, shape: tuple[int, int, int], affine: NDArray[np.float64], *, pass_: str | None = None
    ) -> NDArray[np.float32]:
        """The synthesised body's soft mask on a voxel grid (mean of the passes by default).

        Parameters
        ----------
        shape, affine
            The grid, e.g. ``study.labels.shape`` and ``study.labels.affine`` (canonical), or
            the input CT's own ``grid.shape`` and ``grid.affine``.
        """
        names = [pass_] if pass_ is not None else list(self.passes)
        out = np.zeros(shape, np.float32)
        for name in names:
            vals, t, ap, lr = self.body_grid(name)
            out += self.spine.to_grid(vals, t, ap, lr, shape, affine, order=1)
        return out / float(len(names))


def original_height_map(spine: StraightenedSpine, label: int) -> NDArray[np.float64]:
    """(A, L) height per column of a vertebra's own (measured) body in the straightened spine
    (straightened mm; NaN outside its footprint)."""
    v = spine.vertebrae[label]
    t = spine.t_mm
    r0 = int(np.clip(np.searchsorted(t, v.t_top_mm - 4.0), 0, t.size))
    r1 = int(np.clip(np.searchsorted(t, v.t_bottom_mm + 4.0), 0, t.size))
    soft = spine.body[r0:r1].astype(np.float32) / 255.0
    soft = soft * (spine.owner[r0:r1] == label)
    top, bottom, fp = height_map_from_profiles(soft, t[r0:r1])
    return np.where(fp, top - bottom, np.nan)


def largest_loss(
    measured: NDArray[np.float64], reference: NDArray[np.float64], step_mm: float
) -> float | None:
    """Largest regional relative loss of ``measured`` against ``reference`` (both (A, L) maps
    on one grid), over the thirds of the measured footprint; None if not measurable."""
    fp = np.isfinite(measured)
    if fp.sum() < 20:
        return None
    regions = footprint_thirds(fp, step_mm=step_mm)
    hm = region_heights(measured, regions)
    hr = region_heights(np.where(fp, reference, np.nan), regions)
    losses = []
    for r in THIRDS:
        m, ref = hm.get(r), hr.get(r)
        if m is None or ref is None or ref <= 0:
            return None
        losses.append(1.0 - m / ref)
    return float(max(losses))


class Synthesiser:
    """A trained generator ready to synthesise (CPU or CUDA).

    Parameters
    ----------
    generator : Generator
        In evaluation mode.
    model : ModelFile
        Where it came from (configuration, subjects it was trained on, checksum).
    device : str
    context_loss : float
        See :data:`CONTEXT_LOSS`; ``-math.inf`` re-synthesises every vertebra with its
        neighbours' syntheses (the published scheme), ``math.inf`` never does.
    """

    def __init__(
        self,
        generator: Generator,
        model: ModelFile,
        *,
        device: str = "cpu",
        context_loss: float = CONTEXT_LOSS,
    ) -> None:
        self.generator = generator
        self.model = model
        self.device = resolve_device(device)
        self.context_loss = float(context_loss)
        self.timings_s: dict[str, float] = {}

    @classmethod
    def from_file(
        cls, path: str | Path, *, device: str = "cpu", context_loss: float = CONTEXT_LOSS
    ) -> Synthesiser:
        """Load a model file (:func:`vertgrade.synthesis.modelfile.load_generator`)."""
        gen, mf = load_generator(path, device=device)
        return cls(gen, mf, device=device, context_loss=context_loss)

    @property
    def config(self) -> SynthesisConfig:
        return self.model.config

    @property
    def name(self) -> str:
        return self.model.name

    def _run(self, batch: SliceBatch) -> tuple[NDArray[np.float32], ...]:
        from vertgrade.synthesis.train import batch_tensors

        inputs, _ = batch_tensors(batch, self.device)
        if not self.config.hgam:
            inputs["prior"] = None  # type: ignore[assignment]
        with torch.inference_mode():
            out = self.generator(**inputs)
        return (
            out.fine_composite[:, 0].float().cpu().numpy(),
            out.target_soft[:, 0].float().cpu().numpy(),
            out.height_fine.float().cpu().numpy(),
        )

    def _vertebra(
        self,
        spine: StraightenedSpine,
        label: int,
        contexts: dict[Pass, tuple[Replacement | None, Replacement | None]],
    ) -> dict[Pass, PassSynthesis]:
        """Synthesise one vertebra in the given passes, all their slices in one batch."""
        cfg = self.config
        pos = slice_positions(cfg)
        batches = {
            p: make_slices(spine, label, p, pos, cfg, above=above, below=below)
            for p, (above, below) in contexts.items()
        }
        images, target, hpx = self._run(SliceBatch.concatenate(list(batches.values())))
        ext = spine.vertebrae[label]
        out: dict[Pass, PassSynthesis] = {}
        for i, (p, batch) in enumerate(batches.items()):
            sl = slice(i * pos.size, (i + 1) * pos.size)
            scale = float(batch.scale[0])
            above, below = contexts[p]
            out[p] = PassSynthesis(
                p,
                pos,
                images[sl],
                target[sl],
                hpx[sl],
                scale,
                ext.t_mid_mm,
                above is not None or below is not None,
                _height_map(spine, target[sl], pos, p, scale, cfg),
            )
        return out

    def synthesise(
        self,
        spine: StraightenedSpine,
        *,
        labels: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[int, VertebraSynthesis]:
        """Synthesise every vertebra of ``spine`` that has a vertebra above and below.

        Parameters
        ----------
        spine : StraightenedSpine
        labels : sequence of int, optional
            Only these targets (their neighbours are synthesised too, for the context).
        progress : callable, optional
            ``progress(done, total)`` after each vertebra's first synthesis.

        Returns
        -------
        dict
            label -> :class:`VertebraSynthesis`.
        """
        cfg = self.config
        order = spine.order()
        possible = [k for k in order if all(n is not None for n in spine.neighbours(k))]
        wanted = set(possible if labels is None else [k for k in labels if k in possible])
        stage1_needed = set(wanted)
        for k in wanted:
            stage1_needed.update(n for n in spine.neighbours(k) if n in possible)
        total = len(stage1_needed)
        done = 0
        t0 = time.perf_counter()
        none: tuple[Replacement | None, Replacement | None] = (None, None)
        stage1: dict[int, dict[Pass, PassSynthesis]] = {}
        for k in [k for k in order if k in stage1_needed]:
            stage1[k] = self._vertebra(spine, k, dict.fromkeys(cfg.passes, none))
            done += 1
            if progress is not None:
                progress(done, total)
        damaged: dict[tuple[int, str], bool] = {}
        for k, passes1 in stage1.items():
            orig = original_height_map(spine, k)
            for pname, s1 in passes1.items():
                loss = largest_loss(orig, s1.heights_mm, spine.step_mm)
                # -inf: every neighbour is shown as its synthesis (the published scheme)
                value = loss if loss is not None else -math.inf
                damaged[(k, pname)] = value >= self.context_loss
        out: dict[int, VertebraSynthesis] = {}
        for k in [k for k in order if k in wanted]:
            up, down = spine.neighbours(k)
            again: dict[Pass, tuple[Replacement | None, Replacement | None]] = {}
            for p in cfg.passes:
                reps: list[Replacement | None] = []
                for n in (up, down):
                    if n is not None and damaged.get((n, p), False):
                        s1 = stage1[n][p]
                        reps.append(Replacement(n, s1.images, s1.height_px, s1.scale))
                    else:
                        reps.append(None)
                if reps[0] is not None or reps[1] is not None:
                    again[p] = (reps[0], reps[1])
            passes: dict[str, PassSynthesis] = {str(q): v for q, v in stage1[k].items()}
            if again:
                passes.update({str(q): v for q, v in self._vertebra(spine, k, again).items()})
            out[k] = VertebraSynthesis(k, passes, spine, cfg)
        self.timings_s = {
            "synthesis": time.perf_counter() - t0,
            "per_vertebra": (time.perf_counter() - t0) / max(1, len(out)),
        }
        return out


def _height_map(
    spine: StraightenedSpine,
    target: NDArray[np.float32],
    positions: NDArray[np.float64],
    pass_: Pass,
    scale: float,
    cfg: SynthesisConfig,
) -> NDArray[np.float64]:
    """Column heights of the synthesised body, interpolated onto the spine's in-plane grid."""
    s, rows, ncols = target.shape
    y = (np.arange(rows) - (rows - 1) / 2.0) * cfg.spacing_mm
    cols = (np.arange(ncols) - (ncols - 1) / 2.0) * cfg.spacing_mm
    vals = np.transpose(target, (1, 0, 2)).reshape(rows, s * ncols)
    top, bottom, fp = height_map_from_profiles(vals, y)
    h = np.where(fp, (top - bottom) / scale, np.nan).reshape(s, ncols)  # (slice, column)
    # onto the spine's grid: columns linearly, slices linearly (nearest beyond the outer ones)
    if pass_ == "sagittal":
        q_col, q_pos = np.meshgrid(spine.ap_mm, spine.lr_mm, indexing="ij")
    else:
        q_pos, q_col = np.meshgrid(spine.ap_mm, spine.lr_mm, indexing="ij")
    fi = np.clip((q_pos - positions[0]) / (positions[1] - positions[0] if s > 1 else 1.0), 0, s - 1)
    fj = (q_col - cols[0]) / cfg.spacing_mm
    out = ndimage.map_coordinates(
        np.nan_to_num(h, nan=-1e3), np.stack([fi, fj]), order=1, mode="constant", cval=-1e3
    )
    return np.where(out > 0.5, out, np.nan)
