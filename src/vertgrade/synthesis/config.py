"""Configurations of the pseudo-healthy synthesis: geometry of the samples, network sizes, losses
and training schedule, as frozen dataclasses.

Two named configurations are provided:

- ``"paper"``: HealthiVert-GAN's published network (a two-stage DeepFill-style generator of about
  1.0 M parameters, ``cnum=16``; three 70 x 70 PatchGAN discriminators with 64 base channels and
  batch norm), its losses and weights, its optimiser and schedule (Adam 2e-4, betas (0.5, 0.999),
  batch 12, 200 epochs constant then 800 of linear decay), its 40 mm band and its CT window
  ([-300, 800] HU). Samples are 1 mm; the field of view of a slice is 128 mm along the spine
  and 64 mm across it, which holds the target's 40 mm band, both neighbours and the discs (the
  paper's 256 x 256 mm crops hold two more vertebrae on each side that the band never uses, at
  four times the cost).
- ``"tiny"``: the same architecture and losses, narrower (``cnum=6``), on 2 mm samples and
  smaller discriminators, so that a CPU trains it in minutes (tests, demonstrations). Its SHRM
  heads pool across the columns only (``shrm_pool="rows"``), which read the spine's size from the
  neighbours better than the paper's global pooling on phantoms (``docs/validation.md``).

Loss weights (:class:`LossWeights`) follow the public code, which fixes what the paper leaves
open: L1 on the coarse and the fine image, each a mean over the band's pixels, weight 200;
soft Dice of the fine target segmentation 15 and of the coarse neighbour segmentation 10; edge
loss (mean squared difference of Sobel edge maps) 800; relative height error of each SHRM head
40; adversarial (vanilla GAN) 1/6 per discriminator, i.e. half the mean over the three.

Examples
--------
>>> cfg = named_config("tiny")
>>> cfg.name, cfg.image_rows, cfg.image_cols, cfg.band_rows
('tiny', 64, 32, 20.0)
>>> config_from_dict(cfg.to_dict()) == cfg
True
>>> ten = named_config("paper").with_total_epochs(10)
>>> ten.epochs, ten.decay_epochs
(2, 8)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = [
    "CONFIG_NAMES",
    "LossWeights",
    "Pass",
    "SynthesisConfig",
    "config_from_dict",
    "named_config",
]

Pass = Literal["sagittal", "coronal"]
CONFIG_NAMES: tuple[str, ...] = ("tiny", "paper")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (defaults: HealthiVert-GAN's public code)."""

    #: adversarial term of each of the three discriminators (vanilla GAN)
    adversarial: float = 1.0 / 6.0
    #: L1 of the coarse and of the fine composite, each a mean over the band's pixels
    l1: float = 200.0
    #: soft Dice of the fine stage's target segmentation
    dice_target: float = 15.0
    #: soft Dice of the coarse stage's neighbour segmentation
    dice_neighbours: float = 10.0
    #: EEM: mean squared difference of Sobel edge maps of the soft target segmentation
    edge: float = 800.0
    #: SHRM: relative error of each stage's predicted height
    height: float = 40.0


@dataclass(frozen=True)
class SynthesisConfig:
    """Everything that defines a synthesis model and how it is trained.

    Geometry (mm unless noted)
    --------------------------
    spacing_mm : pixel size of the 2D samples, both axes.
    image_si_mm, image_width_mm : field of view of a sample along the spine and across it
        (antero-posterior for sagittal slices, left-right for coronal ones).
    band_mm : height of the band that replaces the target; the SHRM heads predict heights up
        to this.
    band_fill : a target taller than ``band_fill * band_mm`` (measured extent) has its whole
        sample shrunk along the spine by ``band_fill * band_mm / height``, at training and at
        inference alike (the published code skipped such vertebrae in training and truncated
        them at inference); heights are scaled back after synthesis.
    window_hu : CT window mapped to [0, 1].
    passes : orientations synthesised (each gives three RHLV features).
    slice_step_mm : distance between the slices synthesised per vertebra and pass.
    slice_half_mm : slices cover +-this about the body's centre (sagittal: left-right;
        coronal: antero-posterior, scaled by the body's depth / width ratio).

    Network
    -------
    cnum : base channel count of the generator (the paper's 16 gives ~1.0 M parameters).
    spectral_norm : spectral normalisation of the generator's convolutions.
    hgam : HGAM attention prior injected into the coarse decoder (off: no prior input).
    shrm_pool : pooling of the SHRM height heads: ``"global"`` (the paper's global mean) or
        ``"rows"`` (mean across the columns, the profile along the spine kept).
    attention_rate : contextual attention matches patches at 1/rate of the 1/4 feature scale.
    attention_scale : softmax temperature of contextual attention.
    disc_channels, disc_layers : PatchGAN base channels and stride-2 layers (3: 70 x 70).
    local_margin_mm : the local discriminator sees the band plus this above and below.

    Training
    --------
    healthy_max_grade : vertebrae with a Genant grade up to this are trained on as healthy
        targets (default 0: mild fractures, grade 1, are left out; the published code trained on
        grades 0 and 1; see ``docs/verse2019.md``). Vertebrae without a grade are never targets.
    batch_size, lr, betas, epochs, decay_epochs : Adam and the linear-decay schedule.
    teacher_forcing : compose the generated band with the true height during training (the
        heads are trained by their own loss); inference always uses the predicted height.
    seed : seeds Python, NumPy and torch; the same data and seed give the same model on CPU.
    checkpoint_every : epochs between checkpoints (training can resume from the last one).
    """

    name: str = "paper"
    spacing_mm: float = 1.0
    image_si_mm: float = 128.0
    image_width_mm: float = 64.0
    band_mm: float = 40.0
    band_fill: float = 0.9
    window_hu: tuple[float, float] = (-300.0, 800.0)
    passes: tuple[Pass, ...] = ("sagittal", "coronal")
    slice_step_mm: float = 4.0
    slice_half_mm: float = 16.0
    cnum: int = 16
    spectral_norm: bool = True
    hgam: bool = True
    shrm_pool: Literal["global", "rows"] = "global"
    attention_rate: int = 2
    attention_scale: float = 10.0
    disc_channels: int = 64
    disc_layers: int = 3
    local_margin_mm: float = 8.0
    losses: LossWeights = field(default_factory=LossWeights)
    healthy_max_grade: int = 0
    batch_size: int = 12
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 200
    decay_epochs: int = 800
    teacher_forcing: bool = True
    seed: int = 0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "image_si_mm", "image_width_mm", "band_mm", "slice_step_mm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name, n in (("image_rows", self.image_rows), ("image_cols", self.image_cols)):
            if n % 8:
                raise ValueError(
                    f"{name} ({n}) must be a multiple of 8 (two stride-2 stages and the "
                    "attention's downsampling): adjust the field of view or the spacing"
                )
        if not self.band_rows < self.image_rows:
            raise ValueError("the band must be shorter than the image")
        if not 0.5 <= self.band_fill <= 1.0:
            raise ValueError(f"band_fill must lie in [0.5, 1], got {self.band_fill}")
        if not self.window_hu[0] < self.window_hu[1]:
            raise ValueError(f"window_hu must be increasing, got {self.window_hu}")
        if not self.passes or any(p not in ("sagittal", "coronal") for p in self.passes):
            raise ValueError(f"passes must be 'sagittal' and/or 'coronal', got {self.passes}")
        if self.cnum < 4 or self.cnum % 2:
            raise ValueError(f"cnum must be an even number >= 4, got {self.cnum}")
        if self.shrm_pool not in ("global", "rows"):
            raise ValueError(f"shrm_pool must be 'global' or 'rows', got {self.shrm_pool!r}")
        if self.healthy_max_grade not in (0, 1):
            raise ValueError("healthy_max_grade must be 0 or 1")
        if self.epochs < 0 or self.decay_epochs < 0 or self.epochs + self.decay_epochs < 1:
            raise ValueError("need at least one epoch")

    # --- derived sizes ---------------------------------------------------------------------
    @property
    def image_rows(self) -> int:
        """Rows of a sample (along the spine)."""
        return round(self.image_si_mm / self.spacing_mm)

    @property
    def image_cols(self) -> int:
        """Columns of a sample (across the spine)."""
        return round(self.image_width_mm / self.spacing_mm)

    @property
    def band_rows(self) -> float:
        """Band height in pixels (may be fractional)."""
        return self.band_mm / self.spacing_mm

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def with_total_epochs(self, total: int) -> SynthesisConfig:
        """The same configuration trained for ``total`` epochs, keeping the constant : decay
        proportion (the paper's 200 : 800)."""
        if total < 1:
            raise ValueError(f"need at least one epoch, got {total}")
        share = self.epochs / max(1, self.total_epochs)
        constant = min(total, max(1 if total > 1 else total, round(total * share)))
        return replace(self, epochs=constant, decay_epochs=total - constant)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paper() -> SynthesisConfig:
    return SynthesisConfig()


def _tiny() -> SynthesisConfig:
    return SynthesisConfig(
        name="tiny",
        spacing_mm=2.0,
        image_si_mm=128.0,
        image_width_mm=64.0,
        slice_step_mm=6.0,
        slice_half_mm=15.0,
        cnum=6,
        spectral_norm=False,
        shrm_pool="rows",
        disc_channels=12,
        disc_layers=2,
        batch_size=16,
        lr=1e-3,
        epochs=20,
        decay_epochs=10,
    )


def named_config(name: str) -> SynthesisConfig:
    """The ``"tiny"`` or ``"paper"`` configuration."""
    if name == "tiny":
        return _tiny()
    if name == "paper":
        return _paper()
    raise ValueError(f"unknown configuration {name!r}: choose one of {', '.join(CONFIG_NAMES)}")


def config_from_dict(data: dict[str, Any]) -> SynthesisConfig:
    """Inverse of :meth:`SynthesisConfig.to_dict`; ``ValueError`` on unknown or missing keys."""
    known = {f.name for f in fields(SynthesisConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    d = dict(data)
    if "losses" in d:
        lk = {f.name for f in fields(LossWeights)}
        if not isinstance(d["losses"], dict) or set(d["losses"]) - lk:
            raise ValueError("bad 'losses' entry in configuration")
        d["losses"] = LossWeights(**d["losses"])
    for key in ("window_hu", "betas", "passes"):
        if key in d:
            d[key] = tuple(d[key])
    return SynthesisConfig(**d)
