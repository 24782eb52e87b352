"""Losses of the synthesis (HealthiVert-GAN's terms; weights in
:class:`vertgrade.synthesis.config.LossWeights`).

Every term that trains the generator is differentiable with respect to its parameters. In
particular the EEM edge loss and the segmentation discriminator see the *soft* (sigmoid) target
segmentation: the published code thresholded it first, so neither carried any gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vertgrade.synthesis.config import SynthesisConfig
from vertgrade.synthesis.model import GeneratorOutput, compose, window_weight

__all__ = [
    "TrainingTargets",
    "discriminator_loss",
    "edge_loss",
    "gan_loss",
    "generator_losses",
    "height_loss",
    "local_rows",
    "sobel_edges",
    "soft_dice_loss",
]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass
class TrainingTargets:
    """Tensors of a training batch (``(N, 1, H, W)`` unless noted).

    ``image`` input layout; ``truth`` centred layout; ``target_seg`` centred layout (soft);
    ``neighbour_seg`` input layout (soft); ``height`` ``(N,)`` pixels.
    """

    image: Tensor
    truth: Tensor
    target_seg: Tensor
    neighbour_seg: Tensor
    height: Tensor

    def real_composite(self, band: float) -> Tensor:
        """The true image composed exactly like the generated one (same context rows)."""
        return compose(self.truth, self.image, self.height, band)

    def real_segmentation(self) -> Tensor:
        return self.target_seg * window_weight(self.height, self.target_seg.shape[2])


def soft_dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - Dice`` of soft masks, averaged over the batch (``(N, 1, H, W)`` in [0, 1])."""
    p = pred.flatten(1)
    t = target.flatten(1)
    dice = (2.0 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return 1.0 - dice.mean()


def sobel_edges(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of ``(N, 1, H, W)`` maps (zero padding: segmentations are empty
    at the image's edges, and the gradient of replicate padding is not deterministic on CUDA)."""
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)[None, None]
    ky = kx.transpose(2, 3)
    gx = F.conv2d(x, kx, padding=1)
    gy = F.conv2d(x, ky, padding=1)
    return torch.sqrt(gx * gx + gy * gy + 1e-6)


def edge_loss(pred_soft: Tensor, target: Tensor) -> Tensor:
    """EEM: mean squared difference of the Sobel edge maps of two soft segmentations."""
    return F.mse_loss(sobel_edges(pred_soft), sobel_edges(target))


def height_loss(pred: Tensor, true: Tensor) -> Tensor:
    """SHRM: mean relative height error ``|pred - true| / true`` (``(N,)``)."""
    return ((pred - true).abs() / true.clamp(min=1e-3)).mean()


def gan_loss(logits: Tensor, real: bool) -> Tensor:
    """Vanilla GAN loss: binary cross-entropy of patch logits against 1 (real) or 0 (fake)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def local_rows(cfg: SynthesisConfig) -> slice:
    """Rows of the local discriminator's patch: the band plus ``local_margin_mm``, made a
    multiple of 8 rows, centred."""
    rows = cfg.image_rows
    want = (cfg.band_mm + 2 * cfg.local_margin_mm) / cfg.spacing_mm
    n = min(rows, int(8 * round(want / 8)))
    start = (rows - n) // 2
    return slice(start, start + n)


def _band_l1(a: Tensor, b: Tensor, band: float) -> Tensor:
    """L1 per band pixel: summed over the image, divided by the band's pixel count."""
    n, _, _, cols = a.shape
    area = band * cols * n
    return (a - b).abs().sum() / area


def generator_losses(
    out: GeneratorOutput,
    t: TrainingTargets,
    discriminators: nn.ModuleDict,
    cfg: SynthesisConfig,
) -> dict[str, Tensor]:
    """Every weighted term of the generator's loss, and their sum under ``"total"``.

    Terms: ``adversarial_image``, ``adversarial_segmentation``, ``adversarial_local``,
    ``l1_coarse``, ``l1_fine``, ``dice_target``, ``dice_neighbours``, ``edge``,
    ``height_coarse``, ``height_fine``.
    """
    w = cfg.losses
    band = float(cfg.band_rows)
    real = t.real_composite(band)
    rows = local_rows(cfg)
    terms = {
        "adversarial_image": w.adversarial
        * gan_loss(discriminators["image"](out.fine_composite), True),
        "adversarial_segmentation": w.adversarial
        * gan_loss(discriminators["segmentation"](out.target_soft), True),
        "adversarial_local": w.adversarial
        * gan_loss(discriminators["local"](out.fine_composite[:, :, rows]), True),
        "l1_coarse": w.l1 * _band_l1(out.coarse_composite, real, band),
        "l1_fine": w.l1 * _band_l1(out.fine_composite, real, band),
        "dice_target": w.dice_target * soft_dice_loss(out.target_soft, t.real_segmentation()),
        "dice_neighbours": w.dice_neighbours
        * soft_dice_loss(torch.sigmoid(out.neighbour_logits), t.neighbour_seg),
        "edge": w.edge * edge_loss(out.target_soft, t.real_segmentation()),
        "height_coarse": w.height * height_loss(out.height_coarse, t.height),
        "height_fine": w.height * height_loss(out.height_fine, t.height),
    }
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms


def discriminator_loss(
    out: GeneratorOutput,
    t: TrainingTargets,
    discriminators: nn.ModuleDict,
    cfg: SynthesisConfig,
) -> dict[str, Tensor]:
    """Each discriminator's loss (mean of its real and fake terms) and their sum ``"total"``;
    the generated inputs are detached."""
    band = float(cfg.band_rows)
    rows = local_rows(cfg)
    real_img = t.real_composite(band)
    fake_img = out.fine_composite.detach()
    pairs = {
        "image": (real_img, fake_img),
        "segmentation": (t.real_segmentation(), out.target_soft.detach()),
        "local": (real_img[:, :, rows], fake_img[:, :, rows]),
    }
    terms = {}
    for name, (r, f) in pairs.items():
        d = discriminators[name]
        terms[name] = 0.5 * (gan_loss(d(r), True) + gan_loss(d(f), False))
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms
