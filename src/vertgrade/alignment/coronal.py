"""Coronal curves: where they turn, their Cobb angles and end vertebrae, and their apex (the
method is in :mod:`vertgrade.alignment`)."""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vertgrade.alignment._common import _Angles, _ByLabel
from vertgrade.alignment.config import AlignmentConfig
from vertgrade.alignment.result import Convexity, CoronalCurve
from vertgrade.levels import level_name

__all__ = ["coronal_apex"]

# Labels never used for coronal Cobb angles: C1, C2 (no body / dens) and the sacrum.
_NO_COBB_LABELS = frozenset({1, 2, 26})
# The apex is a disc when the parabola through the three most deviated vertebrae peaks more than
# this many levels from the most deviated one.
_DISC_APEX_OFFSET = 0.25


def coronal_apex(centres_mm: ArrayLike, convex: Convexity) -> tuple[int, int, float]:
    """Apex of a coronal curve from the centres of its vertebrae, end vertebrae included.

    Each centre's distance from the line through the first and last centres is taken in the
    coronal projection (world ``x``, ``z``), positive towards the convex side. The apex is the
    vertebra farthest out; when the parabola through it and its two neighbours peaks more than a
    quarter of a level away, the apex is the disc on that side. With only the two end vertebrae,
    it is the disc between them.

    Parameters
    ----------
    centres_mm : (N, 3) array-like
        World RAS+ centres (mm) of the curve's vertebrae, cranial first, ``N >= 2``.
    convex : {"left", "right"}

    Returns
    -------
    first, last : int
        Indices into ``centres_mm`` of the apex: equal for a vertebra, consecutive for a disc.
    deviation_mm : float
        The apex's distance from the line (a disc's: the mean of its two vertebrae).

    Examples
    --------
    >>> pts = [[0, 0, 0], [6, 0, -30], [8, 0, -60], [6, 0, -90], [0, 0, -120]]
    >>> coronal_apex(pts, "right")
    (2, 2, 8.0)
    >>> coronal_apex(pts[:3] + [[8, 0, -90], [6, 0, -120], [0, 0, -150]], "right")
    (2, 3, 8.0)
    """
    p = np.asarray(centres_mm, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 2:
        raise ValueError(f"need at least two 3D centres, got shape {p.shape}")
    xz = p[:, [0, 2]]
    d = xz[-1] - xz[0]
    length = float(np.hypot(*d))
    if length == 0:
        raise ValueError("the end vertebrae's centres coincide")
    right = np.array([-d[1], d[0]]) / length  # perpendicular; flipped below to point to +x
    if right[0] < 0 or (right[0] == 0 and right[1] > 0):
        right = -right
    dev = (xz - xz[0]) @ right * (1.0 if convex == "right" else -1.0)
    n = len(p)
    if n == 2:
        return 0, 1, float(dev.mean())
    k = 1 + int(np.argmax(dev[1:-1]))
    a, b, c = float(dev[k - 1]), float(dev[k]), float(dev[k + 1])
    curvature = a - 2.0 * b + c
    offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    if offset > _DISC_APEX_OFFSET:
        return k, k + 1, 0.5 * (b + c)
    if offset < -_DISC_APEX_OFFSET:
        return k - 1, k, 0.5 * (a + b)
    return k, k, b


def _zigzag(values: NDArray[np.float64], threshold: float) -> list[int]:
    """Indices of the alternating extremes of ``values``, each at least ``threshold`` from the
    previous one (a turning point counts once the values have come back by ``threshold``)."""
    pivots: list[int] = []
    if len(values) < 2:
        return pivots
    lo = hi = ext = 0
    trend = 0
    for i in range(1, len(values)):
        x = values[i]
        if trend == 0:
            if x < values[lo]:
                lo = i
            if x > values[hi]:
                hi = i
            if values[hi] - values[lo] >= threshold:
                trend = 1 if lo < hi else -1
                pivots.append(min(lo, hi))
                ext = max(lo, hi)
        elif trend > 0:
            if x > values[ext]:
                ext = i
            elif values[ext] - x >= threshold:
                pivots.append(ext)
                trend, ext = -1, i
        else:
            if x < values[ext]:
                ext = i
            elif x - values[ext] >= threshold:
                pivots.append(ext)
                trend, ext = 1, i
    if trend != 0:
        pivots.append(ext)
    return pivots


def _coronal_curves(
    usable: list[int],
    angles: _Angles,
    by_label: _ByLabel,
    cfg: AlignmentConfig,
) -> tuple[tuple[CoronalCurve, ...], str | None, float | None]:
    """The coronal curves among the ``usable`` vertebrae (cranial first) of at least
    ``cfg.min_cobb_deg``; the reason where there is none; the largest coronal angle between a
    superior endplate and the inferior endplate of a lower vertebra (``None`` with fewer than two
    vertebrae that can take part)."""
    seq = [lab for lab in usable if lab not in _NO_COBB_LABELS]
    if len(seq) < 2:
        names = ", ".join(level_name(x) for x in seq) or "none"
        return (
            (),
            f"coronal curves need at least two usable vertebrae between C3 and L6; usable: {names}",
            None,
        )
    sup = np.array([angles[x][0] for x in seq])
    inf = np.array([angles[x][2] for x in seq])
    # Largest angle between a superior endplate and the inferior endplate of a lower vertebra.
    diff = inf[None, :] - sup[:, None]
    upper_tri = np.triu(np.ones_like(diff, dtype=bool), k=1)
    largest = float(np.abs(diff[upper_tri]).max())

    values = np.column_stack([sup, inf]).ravel()  # S0, I0, S1, I1, ...
    pivots = _zigzag(values, cfg.min_cobb_deg)
    n = len(seq)
    curves = []
    for p, q in itertools.pairwise(pivots):
        sign = 1.0 if values[q] > values[p] else -1.0
        vp, vq = p // 2, q // 2
        # The largest angle between a superior endplate from one level above the upper turning
        # point and an inferior endplate down to one level below the lower one; of equally
        # tilted candidates (a flat run of tilt), the ones nearest the curve's apex.
        best: tuple[float, int, int] | None = None
        for u in range(max(vp - 1, 0), min(vq + 1, n - 1)):
            for low in range(u + 1, min(vq + 1, n - 1) + 1):
                cobb = sign * (inf[low] - sup[u])
                if (
                    best is None
                    or cobb > best[0] + 1e-9
                    or (cobb > best[0] - 1e-9 and (u > best[1] or (u == best[1] and low < best[2])))
                ):
                    best = (cobb, u, low)
        if best is None or best[0] < cfg.min_cobb_deg:
            continue
        cobb, u, low = best
        convex: Convexity = "right" if sign > 0 else "left"
        centres = np.stack([by_label[x][2] for x in seq[u : low + 1]])
        a, b, dev = coronal_apex(centres, convex)
        apex = (
            level_name(seq[u + a])
            if a == b
            else f"{level_name(seq[u + a])}/{level_name(seq[u + b])}"
        )
        open_ends = []
        if u == 0:
            open_ends.append(f"upper end {level_name(seq[u])} is the first usable vertebra")
        if low == n - 1:
            open_ends.append(f"lower end {level_name(seq[low])} is the last usable vertebra")
        note = None
        if open_ends:
            note = (
                "; ".join(open_ends)
                + ": the curve may continue beyond it, and the Cobb angle be underestimated"
            )
        curves.append(
            CoronalCurve(
                upper_end=level_name(seq[u]),
                lower_end=level_name(seq[low]),
                apex=apex,
                convex=convex,
                cobb_deg=float(cobb),
                upper_endplate_deg=float(sup[u]),
                lower_endplate_deg=float(inf[low]),
                apex_deviation_mm=float(dev),
                complete=not open_ends,
                note=note,
            )
        )
    reason = None
    if not curves:
        reason = (
            f"no coronal curve of {cfg.min_cobb_deg:g} deg or more over "
            f"{level_name(seq[0])}-{level_name(seq[-1])} (largest angle between two endplates "
            f"{largest:.1f} deg)"
        )
    return tuple(curves), reason, largest
