"""The networks of the pseudo-healthy synthesis (PyTorch; import only with the ``synthesis`` extra).

Layouts and coordinates
-----------------------
A sample is a 2D slice through the straightened spine, ``(N, C, H, W)``: rows run along the spine
(cranial at row 0), columns across it. Row coordinates ``y`` are in pixels from the image centre,
``y_j = j - (H - 1) / 2``. Two layouts share that grid (see :mod:`vertgrade.synthesis.data`):

- the *input* layout: the target vertebra is cut out and the band ``|y| <= B / 2`` (``B`` = the
  band height in pixels) is empty; the context above and below is moved to the band's edges;
- the *centred* layout: the target of height ``h`` occupies ``|y| <= h / 2`` and the context is
  closed around it.

:func:`compose` turns a generated image (centred layout inside ``|y| <= h/2``) and the input into
a composite in the centred layout: SHRM's adaptive-height composition, with pixel coverage at the
window's edges so that heights stay sub-pixel.

Generator (:class:`Generator`), after DeepFill v1 (Yu et al. 2018) as HealthiVert-GAN uses it:

- *coarse* stage: input = masked image, band mask, slice-position map, orientation map; encoder
  with two stride-2 convolutions and dilated convolutions (rates 2, 4, 8, 16); decoder with the
  HGAM prior concatenated at 1/4 and 1/2 scale; outputs an image, a segmentation of the
  neighbouring bodies (logits) and an SHRM height (global mean pool, linear, sigmoid x B);
- *fine* stage: the coarse composite in, a hallucination branch (dilated convolutions) and a
  contextual-attention branch (:func:`contextual_attention`, with each sample's own mask), merged
  and decoded into the refined image, the target's segmentation (logits) and a second height.

Convolutions use ELU and, optionally, spectral normalisation. Upsampling and pooling are written
as reshapes, whose gradients are deterministic on CUDA as on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vertgrade.errors import InputError
from vertgrade.synthesis.config import SynthesisConfig

__all__ = [
    "Generator",
    "GeneratorOutput",
    "PatchDiscriminator",
    "build_discriminators",
    "compose",
    "contextual_attention",
    "count_parameters",
    "resolve_device",
    "window_weight",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, checked: ``InputError`` if it does not exist on this machine."""

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(None, f"unknown device {device!r} (use cpu or cuda)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device cuda requested, but no CUDA GPU is available here")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(None, f"device {device!r} is not supported (use cpu or cuda)")
    return dev


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (spectral-norm buffers excluded)."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _up2(x: Tensor) -> Tensor:
    """Nearest-neighbour upsampling by 2 (a reshape: deterministic gradient)."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _down(x: Tensor, k: int) -> Tensor:
    """Mean over ``k x k`` blocks."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean(dim=(3, 5))


class _Conv(nn.Module):
    """Convolution (same padding) with ELU, optionally spectrally normalised."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        act: bool = True,
        sn: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation)
        self.conv: nn.Module = spectral_norm(conv) if sn else conv
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.conv(x)
        return F.elu(y) if self.act else y


def window_weight(h: Tensor, rows: int) -> Tensor:
    """Coverage of each row by the window ``|y| <= h / 2``.

    Parameters
    ----------
    h : (N,) tensor
        Window heights in pixels.
    rows : int
        Image rows ``H``.

    Returns
    -------
    (N, 1, H, 1) tensor in [0, 1]
        1 inside, 0 outside, the covered fraction on the two edge rows.
    """
    y = torch.arange(rows, device=h.device, dtype=h.dtype) - (rows - 1) / 2.0
    w = (h[:, None] / 2.0 - y.abs()[None, :] + 0.5).clamp(0.0, 1.0)
    return w[:, None, :, None]


def compose(raw: Tensor, inputs: Tensor, h: Tensor, band: float) -> Tensor:
    """SHRM composition: the generated window of height ``h`` with the context closed around it.

    Parameters
    ----------
    raw : (N, C, H, W) tensor
        Generated image (centred layout; only ``|y| <= h/2`` is used).
    inputs : (N, C, H, W) tensor
        The input layout (band of ``band`` pixels); not differentiated.
    h : (N,) tensor
        Heights in pixels, at most ``band``.
    band : float
        Band height in pixels.

    Returns
    -------
    (N, C, H, W) tensor
        Row ``y`` outside the window takes the input's row ``y + sign(y) (band - h) / 2``
        (linear interpolation; zero beyond the image; never a row of the empty band).
    """
    n, c, rows, cols = raw.shape
    hd = h.detach().clamp(max=band)
    y = torch.arange(rows, device=raw.device, dtype=raw.dtype) - (rows - 1) / 2.0
    shift = (band - hd)[:, None] / 2.0
    # context rows move outwards by `shift`, never into the (empty) band: the rows nearest to
    # it are the last ones of the context
    last_above = float(y[y < -band / 2].max()) if bool((y < -band / 2).any()) else -band / 2
    first_below = float(y[y > band / 2].min()) if bool((y > band / 2).any()) else band / 2
    above = torch.clamp(y[None, :] - shift, max=last_above)
    below = torch.clamp(y[None, :] + shift, min=first_below)
    src = torch.where(y[None, :] < 0, above, below) + (rows - 1) / 2.0  # (N, H) source rows
    i0 = torch.floor(src)
    frac = (src - i0)[:, None, :, None]
    i0 = i0.long()
    x = inputs.detach()

    def take(idx: Tensor) -> Tensor:
        ok = ((idx >= 0) & (idx < rows))[:, None, :, None].to(raw.dtype)
        index = idx.clamp(0, rows - 1)[:, None, :, None].expand(n, c, rows, cols)
        return torch.gather(x, 2, index) * ok

    shifted = take(i0) * (1.0 - frac) + take(i0 + 1) * frac
    w = window_weight(hd, rows)
    return w * raw + (1.0 - w) * shifted


def contextual_attention(
    features: Tensor, hole: Tensor, *, rate: int = 2, scale: float = 10.0
) -> Tensor:
    """Fill the hole with features copied from outside it (DeepFill's contextual attention).

    Each position is matched (cosine similarity of 3 x 3 patches, at ``1/rate`` resolution) to
    every patch of the same sample that lies wholly outside *that sample's* hole; the softmax of
    the similarities weighs ``2 rate x 2 rate`` patches of the full-resolution features, pasted
    back by a transposed convolution written as fold.

    Parameters
    ----------
    features : (N, C, H, W) tensor
        H and W divisible by ``rate``.
    hole : (N, 1, H, W) tensor
        1 inside the region to fill, per sample.
    rate : int
    scale : float
        Softmax temperature.

    Returns
    -------
    (N, C, H, W) tensor
    """
    n, _, h, w = features.shape
    fd = features[:, :, ::rate, ::rate]
    hd, wd = fd.shape[2:]
    patches = F.unfold(fd, 3, padding=1)  # (N, C*9, L)
    keys = patches / patches.norm(dim=1, keepdim=True).clamp(min=1e-4)
    scores = torch.bmm(keys.transpose(1, 2), patches)  # (N, L_key, L_query)
    md = hole.reshape(n, 1, hd, rate, wd, rate).amax(dim=(3, 5))
    touched = F.unfold(md, 3, padding=1).amax(dim=1)  # (N, L): patch touches the hole
    valid = (touched < 0.5)[:, :, None]
    scores = torch.where(valid, scores * scale, torch.full_like(scores, -1e4))
    attn = torch.softmax(scores, dim=1) * valid.to(scores.dtype)
    k = 2 * rate
    raw = F.unfold(features, k, stride=rate, padding=rate // 2)  # (N, C*k*k, L)
    cols = torch.bmm(raw, attn)
    out = F.fold(cols, (h, w), k, stride=rate, padding=rate // 2)
    return out / float((k // rate) ** 2)


class _HeightHead(nn.Module):
    """SHRM: pool, linear, sigmoid, times the band height.

    ``pool="global"`` (HealthiVert-GAN) averages the features over the whole image;
    ``pool="rows"`` averages them across the columns only and keeps their profile along the
    spine (``rows`` of them), where the neighbours' endplates lie: the height is then a linear
    read-out of where things are along the spine rather than of how much of them there is.
    """

    def __init__(self, channels: int, band: float, *, pool: str = "global", rows: int = 1) -> None:
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(channels * (rows if pool == "rows" else 1), 1)
        self.band = band

    def forward(self, x: Tensor) -> Tensor:
        z = x.mean(dim=3).flatten(1) if self.pool == "rows" else x.mean(dim=(2, 3))
        out: Tensor = torch.sigmoid(self.fc(z))[:, 0] * self.band
        return out


class _Coarse(nn.Module):
    def __init__(self, cfg: SynthesisConfig) -> None:
        super().__init__()
        c, sn = cfg.cnum, cfg.spectral_norm
        p = 1 if cfg.hgam else 0
        self.hgam = cfg.hgam
        self.enc = nn.Sequential(
            _Conv(4, c, 5, sn=sn),
            _Conv(c, 2 * c, stride=2, sn=sn),
            _Conv(2 * c, 2 * c, sn=sn),
            _Conv(2 * c, 4 * c, stride=2, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
            *(_Conv(4 * c, 4 * c, dilation=d, sn=sn) for d in (2, 4, 8, 16)),
            _Conv(4 * c, 4 * c, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
        )
        self.height = _HeightHead(
            4 * c, cfg.band_rows, pool=cfg.shrm_pool, rows=cfg.image_rows // 4
        )
        self.dec1 = _Conv(4 * c + p, 2 * c, sn=sn)
        self.dec2 = _Conv(2 * c, 2 * c, sn=sn)
        self.dec3 = _Conv(2 * c + p, c, sn=sn)
        self.dec4 = _Conv(c, c // 2, sn=sn)
        self.out = _Conv(c // 2, 2, act=False, sn=sn)

    def forward(self, x: Tensor, prior: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        f = self.enc(x)
        h = self.height(f)
        if self.hgam and prior is not None:
            f = torch.cat([f, _down(prior, 4)], dim=1)
        f = self.dec2(self.dec1(_up2(f)))
        if self.hgam and prior is not None:
            f = torch.cat([f, _down(prior, 2)], dim=1)
        o = self.out(self.dec4(self.dec3(_up2(f))))
        return torch.sigmoid(o[:, :1]), o[:, 1:], h


class _Fine(nn.Module):
    def __init__(self, cfg: SynthesisConfig) -> None:
        super().__init__()
        c, sn = cfg.cnum, cfg.spectral_norm
        self.rate, self.scale = cfg.attention_rate, cfg.attention_scale
        self.halluc = nn.Sequential(
            _Conv(4, c, 5, sn=sn),
            _Conv(c, c, stride=2, sn=sn),
            _Conv(c, 2 * c, sn=sn),
            _Conv(2 * c, 2 * c, stride=2, sn=sn),
            _Conv(2 * c, 4 * c, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
            *(_Conv(4 * c, 4 * c, dilation=d, sn=sn) for d in (2, 4, 8, 16)),
        )
        self.att_in = nn.Sequential(
            _Conv(4, c, 5, sn=sn),
            _Conv(c, c, stride=2, sn=sn),
            _Conv(c, 2 * c, sn=sn),
            _Conv(2 * c, 4 * c, stride=2, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
            _Conv(4 * c, 4 * c, sn=sn),
        )
        self.att_out = nn.Sequential(_Conv(4 * c, 4 * c, sn=sn), _Conv(4 * c, 4 * c, sn=sn))
        self.merge = nn.Sequential(_Conv(8 * c, 4 * c, sn=sn), _Conv(4 * c, 4 * c, sn=sn))
        self.height = _HeightHead(
            4 * c, cfg.band_rows, pool=cfg.shrm_pool, rows=cfg.image_rows // 4
        )
        self.dec1 = _Conv(4 * c, 2 * c, sn=sn)
        self.dec2 = _Conv(2 * c, 2 * c, sn=sn)
        self.dec3 = _Conv(2 * c, c, sn=sn)
        self.dec4 = _Conv(c, c // 2, sn=sn)
        self.out = _Conv(c // 2, 2, act=False, sn=sn)

    def forward(self, x: Tensor, hole: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.halluc(x)
        b = self.att_in(x)
        b = contextual_attention(b, _down(hole, 4).ceil(), rate=self.rate, scale=self.scale)
        b = self.att_out(b)
        f = self.merge(torch.cat([a, b], dim=1))
        h = self.height(f)
        f = self.dec2(self.dec1(_up2(f)))
        o = self.out(self.dec4(self.dec3(_up2(f))))
        return torch.sigmoid(o[:, :1]), o[:, 1:], h


@dataclass
class GeneratorOutput:
    """Everything one generator pass produces (tensors ``(N, 1, H, W)`` unless noted).

    ``coarse`` / ``fine`` are the raw generated images, ``coarse_composite`` /
    ``fine_composite`` the SHRM compositions; ``neighbour_logits`` segments the neighbouring
    bodies in the input layout; ``target_logits`` the target (centred layout) and
    ``target_soft`` is its sigmoid composed into the window; ``height_coarse`` /
    ``height_fine`` are ``(N,)`` SHRM heights in pixels; ``window`` the heights ``(N,)`` the
    final composition used.
    """

    coarse: Tensor
    coarse_composite: Tensor
    neighbour_logits: Tensor
    height_coarse: Tensor
    fine: Tensor
    fine_composite: Tensor
    target_logits: Tensor
    target_soft: Tensor
    height_fine: Tensor
    window: Tensor


class Generator(nn.Module):
    """HealthiVert-GAN's two-stage generator with SHRM heads and optional HGAM prior."""

    def __init__(self, cfg: SynthesisConfig) -> None:
        super().__init__()
        self.band = float(cfg.band_rows)
        self.coarse = _Coarse(cfg)
        self.fine = _Fine(cfg)
        self.teacher_forcing = cfg.teacher_forcing

    def forward(
        self,
        image: Tensor,
        ratio: Tensor,
        orientation: Tensor,
        prior: Tensor | None = None,
        true_height: Tensor | None = None,
    ) -> GeneratorOutput:
        """One synthesis.

        Parameters
        ----------
        image : (N, 1, H, W) tensor
            Input layout, values in [0, 1], the band zeroed.
        ratio : (N,) tensor
            Slice position relative to the body, -1 .. 1.
        orientation : (N,) tensor
            0 sagittal, 1 coronal.
        prior : (N, 1, H, W) tensor, optional
            HGAM prior (1 = trustworthy context), input layout.
        true_height : (N,) tensor, optional
            Target heights in pixels; used for the compositions in training mode when teacher
            forcing is on, ignored otherwise.
        """
        n, _, rows, cols = image.shape
        ones = torch.ones((n, 1, rows, cols), device=image.device, dtype=image.dtype)
        band = torch.full((n,), self.band, device=image.device, dtype=image.dtype)
        hole = window_weight(band, rows).expand(n, 1, rows, cols)
        rmap = ratio[:, None, None, None] * ones
        omap = orientation[:, None, None, None] * ones
        x = torch.cat([image * (1.0 - hole), hole, rmap, omap], dim=1)
        img1, nb_logits, h1 = self.coarse(x, prior)
        force = self.training and self.teacher_forcing and true_height is not None
        hc = true_height if force and true_height is not None else h1.detach()
        comp1 = compose(img1, image, hc, self.band)
        hole2 = window_weight(hc, rows).expand(n, 1, rows, cols)
        img2, t_logits, h2 = self.fine(torch.cat([comp1, hole2, rmap, omap], dim=1), hole2)
        hf = true_height if force and true_height is not None else h2.detach()
        comp2 = compose(img2, image, hf, self.band)
        soft = torch.sigmoid(t_logits) * window_weight(hf, rows)
        return GeneratorOutput(img1, comp1, nb_logits, h1, img2, comp2, t_logits, soft, h2, hf)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): 4 x 4 convolutions, ``layers`` of stride 2, batch norm,
    LeakyReLU 0.2; three layers give a 70 x 70 receptive field. Outputs logits per patch."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        mods: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for i in range(1, layers):
            prev, mult = mult, min(2**i, 8)
            mods += [
                nn.Conv2d(channels * prev, channels * mult, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2),
            ]
        prev, mult = mult, min(2**layers, 8)
        mods += [
            nn.Conv2d(channels * prev, channels * mult, 4, 1, 1, bias=False),
            nn.BatchNorm2d(channels * mult),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels * mult, 1, 4, 1, 1),
        ]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def build_discriminators(cfg: SynthesisConfig) -> nn.ModuleDict:
    """The three discriminators: whole composite image, target segmentation, local band patch."""
    return nn.ModuleDict(
        {
            name: PatchDiscriminator(cfg.disc_channels, cfg.disc_layers)
            for name in ("image", "segmentation", "local")
        }
    )
