"""The training-free healthy reference: from the nearest healthy vertebrae above and below.

A vertebra's healthy heights are not its neighbours' heights: levels differ in size and in shape
(thoracic bodies are wedged, anterior shorter than posterior; lumbar bodies are taller anteriorly,
L5 most of all). So each vertebra's regional heights are first divided by the level's typical
heights (:func:`vertgrade.levels.normative_shape`), giving a per-region *scale* that is about the
same for all healthy vertebrae of one patient. The target's expected height in each region is its
level's typical height times the scale interpolated (by position along the spine) between the
nearest healthy vertebra above and the nearest below; with healthy vertebrae on one side only, the
mean scale of the two nearest on that side.

Which vertebrae are healthy is decided iteratively, so that fractured neighbours, several of them
adjacent, do not drag the reference down:

1. start from every usable vertebra, less those whose own shape departs from their level's shape
   by more than ``shape_tolerance`` (anterior or middle height short relative to the posterior:
   wedge and biconcave deformities) and those with a third more than ``initial_screen`` smaller,
   relative to its level, than the study's 75th percentile (fractures only take height away, so
   the healthy level is read high); this is a first guess only, which step 3 revises;
2. compute every vertebra's reference from the current healthy set (itself excluded) and its
   largest regional height loss;
3. the healthy set becomes the vertebrae whose loss is below ``healthy_loss``; repeat until it
   stops changing.

A vertebra with no healthy vertebra within ``max_level_gap`` levels on either side has no usable
reference: it is reported as such, never silently compared with something far away.

The reference height *map* is the reference heights, interpolated across the thirds, times the
healthy neighbours' own relative height pattern (endplate concavity, lateral rounding), sampled at
the same normalised position of the footprint.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from vertgrade.config import NeighbourParams
from vertgrade.geometry.thirds import THIRDS
from vertgrade.levels import level_name, normative_shape, order_key
from vertgrade.morphometry import RegionHeights
from vertgrade.qc import QCFlag
from vertgrade.reference.base import MeasuredVertebra, Reference, ReferenceContext

__all__ = ["NeighbourReference"]

_KEYS = ("body", *THIRDS)


def _norm(label: int) -> dict[str, float]:
    s = normative_shape(label)
    d = {"anterior": s.anterior_mm, "middle": s.middle_mm, "posterior": s.posterior_mm}
    d["body"] = float(np.mean(list(d.values())))
    return d


@dataclass(frozen=True)
class NeighbourReference:
    """Healthy reference from healthy neighbours, aware of level-typical shape.

    Implements :class:`~vertgrade.reference.base.ReferenceEstimator`; it needs nothing of the
    study beyond the measured vertebrae, so it ignores the context.

    Parameters
    ----------
    params : NeighbourParams
        Screen, reach and uncertainty (documented in :class:`vertgrade.config.NeighbourParams`).
    """

    params: NeighbourParams = field(default_factory=NeighbourParams)
    name: ClassVar[str] = "neighbours"

    def estimate(
        self, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext | None = None
    ) -> dict[int, Reference]:
        """Reference per label, for every vertebra in ``vertebrae`` (see the module docstring)."""
        prm = self.params
        scales: dict[int, dict[str, float]] = {}
        for v in vertebrae:
            if not v.usable or v.heights is None:
                continue
            h = v.heights.as_dict()
            vals = {k: h[k] for k in _KEYS}
            if any(x is None or not np.isfinite(x) or x <= 0 for x in vals.values()):
                continue
            n = _norm(v.label)
            scales[v.label] = {k: float(x or 0.0) / n[k] for k, x in vals.items()}
        by_label = {v.label: v for v in vertebrae}

        shape_ok = {
            lab: min(s["anterior"], s["middle"]) / s["posterior"] >= 1.0 - prm.shape_tolerance
            for lab, s in scales.items()
        }
        healthy = {lab for lab in scales if shape_ok[lab]}
        if scales:
            # Fractures only ever take height away, so the level of healthy vertebrae is read
            # high in the distribution (75th percentile), which holds with half of them fractured.
            level = {k: float(np.percentile([s[k] for s in scales.values()], 75)) for k in THIRDS}
            healthy = {
                lab
                for lab in healthy
                if min(scales[lab][k] / level[k] for k in THIRDS) >= 1.0 - prm.initial_screen
            }

        refs: dict[int, tuple[dict[str, float], tuple[int, ...], float] | str] = {}
        for _ in range(prm.max_iterations):
            refs = {lab: self._scale_for(lab, healthy - {lab}, scales) for lab in by_label}
            new = set()
            for lab in scales:
                cur = refs[lab]
                if isinstance(cur, str):
                    if lab in healthy:
                        new.add(lab)  # nothing to compare it with: it keeps its standing
                    continue
                loss = max(1.0 - scales[lab][k] / cur[0][k] for k in THIRDS)
                if loss < prm.healthy_loss:
                    new.add(lab)
            if new == healthy:
                break
            healthy = new

        # a spine most of whose vertebrae fail the healthy screen (a run of mild deformities, or
        # a spine whose shape departs from the level-typical one) gives references that rest on
        # few vertebrae and may all be low: say so
        study_flags: tuple[str, ...] = ()
        if len(scales) >= 3 and 2 * len(healthy) < len(scales):
            study_flags = (QCFlag.FEW_HEALTHY_NEIGHBOURS.value,)
        out: dict[int, Reference] = {}
        for lab, v in by_label.items():
            r: tuple[dict[str, float], tuple[int, ...], float] | str | None = refs.get(lab)
            if r is None or isinstance(r, str):
                reason = r if isinstance(r, str) else "not measured"
                out[lab] = Reference(None, None, (), float("nan"), reason)
                continue
            sc, sources, unc = r
            n = _norm(lab)
            heights = RegionHeights(**{k: n[k] * sc[k] for k in _KEYS})
            hmap = _reference_map(v, heights, [by_label[s] for s in sources])
            flags = list(study_flags)
            if len(sources) == 1:
                flags.append(QCFlag.SINGLE_SOURCE_REFERENCE.value)
            out[lab] = Reference(
                heights, hmap, tuple(level_name(s) for s in sources), unc, None, flags=tuple(flags)
            )
        return out

    def _scale_for(
        self, lab: int, pool: set[int], scales: dict[int, dict[str, float]]
    ) -> tuple[dict[str, float], tuple[int, ...], float] | str:
        p = order_key(lab)
        above = sorted(
            (n for n in pool if 0 < p - order_key(n) <= self.params.max_level_gap),
            key=lambda n: p - order_key(n),
        )
        below = sorted(
            (n for n in pool if 0 < order_key(n) - p <= self.params.max_level_gap),
            key=lambda n: order_key(n) - p,
        )
        if not above and not below:
            return f"no healthy vertebra within {self.params.max_level_gap:g} levels above or below"
        if above and below:
            a, b = above[0], below[0]
            pa, pb = order_key(a), order_key(b)
            wa = (pb - p) / (pb - pa)
            sc = {k: wa * scales[a][k] + (1 - wa) * scales[b][k] for k in _KEYS}
            spread = abs(float(np.mean([scales[a][k] - scales[b][k] for k in THIRDS]))) / max(
                float(np.mean([sc[k] for k in THIRDS])), 1e-9
            )
            dist = min(p - pa, pb - p)
            unc = float(np.hypot(self._distance_uncertainty(dist), 0.5 * spread))
            return sc, (a, b), unc
        side = (above or below)[:2]
        weights = np.array([2.0, 1.0][: len(side)])
        weights /= weights.sum()
        sc = {
            k: float(sum(w * scales[n][k] for w, n in zip(weights, side, strict=True)))
            for k in _KEYS
        }
        dist = abs(order_key(side[0]) - p)
        return sc, tuple(side), 1.5 * self._distance_uncertainty(dist)

    def _distance_uncertainty(self, levels: float) -> float:
        """Uncertainty of a reference taken ``levels`` away: healthy heights drift apart with
        distance along the spine (a random-walk model: variance grows linearly)."""
        return self.params.base_uncertainty * float(np.sqrt(max(1.0, levels)))


def _normalised_coords(v: MeasuredVertebra) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """u (0 posterior .. 1 anterior) per row and w (-1 left .. 1 right) per column."""
    assert v.regions is not None and v.height_map is not None
    hm, rg = v.height_map, v.regions
    step = hm.step_mm
    centres_a = (np.arange(hm.ap_mm.size) + 0.5) * step
    centres_l = (np.arange(hm.lr_mm.size) + 0.5) * step
    lo, hi = rg.ap_extent_mm
    u = (centres_a - lo) / max(hi - lo, 1e-9)
    cols = np.flatnonzero(hm.footprint.any(axis=0))
    l0, l1 = cols[0] * step, (cols[-1] + 1) * step
    w = (centres_l - 0.5 * (l0 + l1)) / max(0.5 * (l1 - l0), 1e-9)
    return np.asarray(u, dtype=np.float64), np.asarray(w, dtype=np.float64)


def _profile(heights: RegionHeights, u: NDArray[np.float64]) -> NDArray[np.float64]:
    """Regional heights interpolated across the thirds (centres at u = 1/6, 1/2, 5/6)."""
    xs = np.array([1 / 6, 0.5, 5 / 6])
    ys = np.array([heights.posterior, heights.middle, heights.anterior], dtype=float)
    return np.interp(u, xs, ys)


def _reference_map(
    target: MeasuredVertebra, ref: RegionHeights, neighbours: list[MeasuredVertebra]
) -> NDArray[np.float64] | None:
    if (
        target.height_map is None
        or target.regions is None
        or target.heights_map_mm is None
        or not target.height_map.footprint.any()
    ):
        return None
    u, w = _normalised_coords(target)
    base = _profile(ref, u)[:, None] * np.ones((1, w.size))
    patterns = []
    for nb in neighbours:
        if (
            nb.height_map is None
            or nb.regions is None
            or nb.heights is None
            or nb.heights_map_mm is None
            or not nb.height_map.footprint.any()
        ):
            continue
        nu, nw = _normalised_coords(nb)
        rel = nb.heights_map_mm / _profile(nb.heights, nu)[:, None]
        ia = np.clip(np.searchsorted(nu, u), 0, nu.size - 1)
        il = np.clip(np.searchsorted(nw, w), 0, nw.size - 1)
        patterns.append(rel[np.ix_(ia, il)])
    pattern = np.ones_like(base)
    if patterns:
        stack = np.stack(patterns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # columns no neighbour covers
            pm = np.nanmean(stack, axis=0)
        pattern = np.where(np.isfinite(pm), pm, 1.0)
    out = base * pattern
    return np.where(target.height_map.footprint, out, np.nan)
