"""Endplate angles: an endplate's normal projected onto the patient's coronal and sagittal planes,
which vertebrae can take part, and the angles of each vertebra and of each pair of adjacent
vertebrae (signs in :mod:`vertgrade.alignment`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vertgrade.alignment._common import _Angles, _ByLabel
from vertgrade.alignment.config import AlignmentConfig
from vertgrade.alignment.result import SegmentAngles, VertebraAngles
from vertgrade.levels import level_name

__all__ = ["endplate_angles"]

# The standard sequence of levels, T13 (28) and L6 (25) optional: two labelled vertebrae are
# adjacent when no standard level lies between them.
_SEQUENCE: tuple[int, ...] = (*range(1, 20), 28, *range(20, 25), 25, 26)
_OPTIONAL = frozenset({25, 28})


def endplate_angles(normal: ArrayLike) -> tuple[float, float]:
    """Coronal and sagittal angles (degrees) of an endplate plane with the given normal.

    Parameters
    ----------
    normal : (3,) array-like
        The plane's normal in world RAS+ coordinates, pointing to the head (``n_z > 0`` for any
        plausible endplate); need not be unit length.

    Returns
    -------
    coronal_deg, sagittal_deg : float
        ``atan2(n_x, n_z)``, positive when the endplate descends towards the patient's right;
        ``atan2(n_y, n_z)``, positive when it descends anteriorly.

    Examples
    --------
    >>> endplate_angles([0.0, 0.0, 1.0])
    (0.0, 0.0)
    >>> [round(a, 6) for a in endplate_angles([0.1, -0.2, 1.0])]
    [5.710593, -11.309932]
    """
    n = np.asarray(normal, dtype=float)
    if n.shape != (3,) or not np.all(np.isfinite(n)) or not np.any(n):
        raise ValueError(f"an endplate normal must be a finite non-zero 3-vector, got {normal!r}")
    return (
        math.degrees(math.atan2(float(n[0]), float(n[2]))),
        math.degrees(math.atan2(float(n[1]), float(n[2]))),
    )


def _unit(v: ArrayLike) -> NDArray[np.float64]:
    """``v`` scaled to unit length; a finite non-zero 3-vector, else ``ValueError``."""
    a = np.asarray(v, dtype=float)
    norm = float(np.linalg.norm(a))
    if a.shape != (3,) or not math.isfinite(norm) or norm == 0:
        raise ValueError(f"an endplate normal must be a finite non-zero 3-vector, got {v!r}")
    return a / norm


def _usable_angles(
    order: list[int],
    by_label: _ByLabel,
    excluded: Mapping[int, str],
    cfg: AlignmentConfig,
) -> tuple[_Angles, dict[int, str]]:
    """The endplate angles of the usable vertebrae of ``order``, and why each other one is not
    usable (excluded by the caller, endplates not fitted, a normal not pointing to the head, or
    endplates more than ``cfg.max_wedge_deg`` apart)."""
    angles: _Angles = {}
    reasons: dict[int, str] = {}
    for lab in order:
        s, i, _ = by_label[lab]
        if lab in excluded:
            reasons[lab] = excluded[lab]
            continue
        if s is None or i is None:
            reasons[lab] = "its endplate planes could not be fitted"
            continue
        ns, ni = _unit(s), _unit(i)
        if ns[2] <= 0 or ni[2] <= 0:
            reasons[lab] = "an endplate normal does not point to the head: implausible fit"
            continue
        between = math.degrees(math.acos(float(np.clip(ns @ ni, -1.0, 1.0))))
        if between > cfg.max_wedge_deg:
            reasons[lab] = (
                f"its endplate planes are {between:.0f} deg apart (more than "
                f"{cfg.max_wedge_deg:g}): implausible fit"
            )
            continue
        angles[lab] = (*endplate_angles(ns), *endplate_angles(ni))
    return angles, reasons


def _adjacent(a: int, b: int) -> bool:
    """Whether no standard level lies between labels ``a`` and ``b`` (``a`` the upper)."""
    ia, ib = _SEQUENCE.index(a), _SEQUENCE.index(b)
    return all(x in _OPTIONAL for x in _SEQUENCE[ia + 1 : ib])


def _vertebra_angles(
    order: list[int], angles: _Angles, reasons: dict[int, str]
) -> tuple[VertebraAngles, ...]:
    """The angles of each vertebra of ``order``: its endplates, its wedge and, between usable
    adjacent neighbours, the regional kyphosis."""
    vertebrae = []
    for idx, lab in enumerate(order):
        if lab not in angles:
            vertebrae.append(VertebraAngles(lab, level_name(lab), False, reasons[lab]))
            continue
        sc, ss, ic, is_ = angles[lab]
        regional = None
        if 0 < idx < len(order) - 1:
            up, lo = order[idx - 1], order[idx + 1]
            if up in angles and lo in angles and _adjacent(up, lab) and _adjacent(lab, lo):
                regional = angles[up][1] - angles[lo][3]
        vertebrae.append(
            VertebraAngles(
                lab,
                level_name(lab),
                True,
                None,
                superior_coronal_deg=sc,
                superior_sagittal_deg=ss,
                inferior_coronal_deg=ic,
                inferior_sagittal_deg=is_,
                wedge_coronal_deg=ic - sc,
                wedge_sagittal_deg=ss - is_,
                regional_kyphosis_deg=regional,
            )
        )
    return tuple(vertebrae)


def _segment_angles(
    order: list[int], angles: _Angles, reasons: dict[int, str]
) -> tuple[SegmentAngles, ...]:
    """The segmental and disc angles of each pair of adjacent vertebrae of ``order``."""
    segments = []
    for up, lo in itertools.pairwise(order):
        if not _adjacent(up, lo):
            continue
        name_up, name_lo = level_name(up), level_name(lo)
        if up in angles and lo in angles:
            a, b = angles[up], angles[lo]
            segments.append(
                SegmentAngles(name_up, name_lo, b[0] - a[0], a[1] - b[1], b[0] - a[2], a[3] - b[1])
            )
        else:
            bad = up if up not in angles else lo
            segments.append(
                SegmentAngles(
                    name_up,
                    name_lo,
                    None,
                    None,
                    None,
                    None,
                    f"{level_name(bad)} not usable: {reasons[bad]}",
                )
            )
    return tuple(segments)
