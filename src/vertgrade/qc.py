"""Quality control: every flag vertgrade can raise, and the checks that raise them.

Each :class:`QCFlag` carries its name (the string written into ``result.json`` and
``vertebrae.csv``), a sentence for people and its effect on the confidence: the confidence of a
graded vertebra is multiplied by the ``confidence_factor`` of each of its flags. Some flags stop a
vertebra from being graded (``blocks_grading``); a not-gradable vertebra has no confidence.

The checks are functions of measured values (counts, extents, heights), so they can be tested
with literal numbers; :mod:`vertgrade.pipeline` applies them.

Examples
--------
>>> QCFlag.CUT_BY_FOV.value, QCFlag.CUT_BY_FOV.blocks_grading
('cut_by_fov', True)
>>> round(penalised(0.9, ["label_fragments", "mask_ct_disagree"]), 3)
0.504
>>> heights_disagree({"anterior": 20.0}, {"anterior": 22.5}, mm=2.0, fraction=0.10)
True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FACE_NAMES",
    "QCFlag",
    "atypical_spine_shape",
    "axes_deviating",
    "border_contacts",
    "flag_texts",
    "has_fragments",
    "heights_disagree",
    "implausible_sizes",
    "level_order",
    "one_sided",
    "penalised",
    "too_deep",
]


class QCFlag(str, Enum):
    """A quality-control flag: ``value`` is its name in the outputs."""

    text: str
    confidence_factor: float
    blocks_grading: bool

    def __new__(
        cls, value: str, text: str, confidence_factor: float = 1.0, blocks_grading: bool = False
    ) -> QCFlag:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.text = text
        obj.confidence_factor = confidence_factor
        obj.blocks_grading = blocks_grading
        return obj

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    OUTSIDE_CT = (
        "outside_ct",
        "the vertebra's label lies wholly outside the CT's field of view: not measured",
        1.0,
        True,
    )
    CUT_BY_FOV = (
        "cut_by_fov",
        "the vertebral body is cut by the edge of the image (a face of it lies on the border): "
        "heights would be truncated",
        1.0,
        True,
    )
    TOUCHES_FOV_EDGE = (
        "touches_fov_edge",
        "the vertebral body touches the edge of the image without being cut (an image cropped "
        "to the spine): graded",
        0.95,
    )
    POSTERIOR_ELEMENTS_CUT = (
        "posterior_elements_cut",
        "posterior elements touch the edge of the image (body whole)",
        0.95,
    )
    AXIS_FROM_CENTRELINE = (
        "axis_from_centreline",
        "an end vertebra measured along the centreline's end tangent: its own endplates gave no "
        "usable axis",
        0.9,
    )
    AXIS_DEVIATES = (
        "axis_deviates",
        "the vertebra's measurement axis departs from its neighbours' by more than 25 degrees",
        0.9,
    )
    LABEL_FRAGMENTS = (
        "label_fragments",
        "the label has several pieces; pieces far from the main one dropped",
        0.8,
    )
    IMPLAUSIBLE_SIZE = (
        "implausible_size",
        "body size far from what its level and this spine make plausible",
        1.0,
        True,
    )
    BODY_TOO_DEEP = (
        "body_too_deep",
        "the isolated body is much deeper than its neighbours': posterior elements were probably "
        "kept with it",
        1.0,
        True,
    )
    NO_REFERENCE = (
        "no_reference",
        "no healthy vertebra near enough to serve as reference",
        1.0,
        True,
    )
    ONE_SIDED_REFERENCE = (
        "one_sided_reference",
        "reference from healthy vertebrae on one side only",
        0.9,
    )
    SINGLE_SOURCE_REFERENCE = (
        "single_source_reference",
        "reference resting on a single healthy vertebra",
        0.85,
    )
    FEW_HEALTHY_NEIGHBOURS = (
        "few_healthy_neighbours",
        "fewer than half of this spine's vertebrae look healthy: a run of deformities may "
        "lower every reference",
        0.8,
    )
    ATYPICAL_SPINE_SHAPE = (
        "atypical_spine_shape",
        "this spine's vertebrae all depart alike from their levels' typical shape (anterior or "
        "middle height short against the posterior): references from neighbours that look "
        "alike may rest on deformed vertebrae",
        0.8,
    )
    MASK_CT_DISAGREE = (
        "mask_ct_disagree",
        "mask-based and CT-refined heights differ by more than 2 mm and 10 %",
        0.7,
    )
    CT_EDGES_SPARSE = (
        "ct_edges_sparse",
        "CT endplate edges found in under half the columns: mask heights used",
        0.9,
    )
    CANAL_NOT_FOUND = (
        "canal_not_found",
        "no spinal canal in the label: body cut by shape alone",
        0.85,
    )
    LEVEL_ORDER = (
        "level_order",
        "the label is out of head-to-foot order with its neighbour's (a likely mislabel: check "
        "the numbering)",
        1.0,
        True,
    )
    COARSE_SLICES = (
        "coarse_slices",
        "the image's voxels are coarse along the vertebra's axis (over 3 mm): heights less precise",
        0.8,
    )
    TOO_COARSE = (
        "too_coarse",
        "the image's voxels are too coarse along the vertebra's axis (over 5 mm) for its heights "
        "to carry a Genant grade",
        1.0,
        True,
    )
    LABELS_OFF_BONE = (
        "labels_off_bone",
        "the labels do not lie on bone in the CT (little attenuation contrast with the tissue "
        "around them): labels and CT may not match (flipped, shifted or another scan)",
        0.5,
    )
    CENTRE_OFF_CURVE = (
        "centre_off_curve",
        "the label's centre lies far off the centreline through its neighbours' (a broken or "
        "mislabelled label): left out of the centreline",
        0.8,
    )
    LABEL_SPLIT = (
        "label_split",
        "a large part of the label lies far from its largest piece (a label split between two "
        "places): the body measured would be a part of it",
        1.0,
        True,
    )
    LABEL_TOO_SMALL = (
        "label_too_small",
        "the label is too small for a vertebra (a stray piece or a wrong label): not measured",
        1.0,
        True,
    )
    NO_BODY = ("no_body", "no vertebral body could be isolated", 1.0, True)
    LEVEL_NOT_GRADED = (
        "level_not_graded",
        "level outside T1-L6 (cervical or sacral): measured, not graded",
        1.0,
        True,
    )


_BY_NAME: dict[str, QCFlag] = {f.value: f for f in QCFlag}


def flag_texts() -> dict[str, str]:
    """Every flag's name and text, in declaration order (the ``qc_flags`` of ``result.json``)."""
    return {f.value: f.text for f in QCFlag}


def level_order(
    order: Sequence[int], superior_mm: Mapping[int, float]
) -> tuple[bool, list[tuple[int, int]]]:
    """Check that labels run head to foot: each level's centre above the next one's.

    ``order`` lists the labels in anatomical order (cranial first); ``superior_mm`` gives each
    centre's world superior coordinate (RAS+ z: patient coordinates, whatever the scan's
    orientation). Adjacent centres lie 15-40 mm apart along the spine, so even a strongly
    curved spine keeps them in order; an inversion is a numbering or orientation error.

    Returns
    -------
    reversed, pairs
        ``reversed``: at least three labels, all running foot to head (the numbering or the
        image's orientation is flipped); ``pairs``: adjacent labels out of order.

    >>> level_order([19, 20, 21, 22], {19: 100.0, 20: 70.0, 21: 45.0, 22: 15.0})
    (False, [])
    >>> level_order([19, 20, 21, 22], {19: 100.0, 20: 45.0, 21: 70.0, 22: 15.0})
    (False, [(20, 21)])
    >>> level_order([19, 20, 21], {19: 10.0, 20: 40.0, 21: 70.0})[0]
    True
    """
    labs = [k for k in order if k in superior_mm]
    pairs = [(a, b) for a, b in itertools.pairwise(labs) if superior_mm[b] > superior_mm[a]]
    reversed_ = len(labs) >= 3 and len(pairs) == len(labs) - 1
    return reversed_, pairs


def atypical_spine_shape(
    shape_losses: Mapping[int, float], *, threshold: float, min_vertebrae: int = 3
) -> bool:
    """True when a spine's vertebrae depart alike from their levels' typical shape.

    ``shape_losses`` maps each measured vertebra to its within-vertebra shape loss (the larger
    of its wedge and biconcave losses against the level's typical ratios). Fractures are a
    minority of a spine's vertebrae, so the median stays near zero however deep they are; a
    median of at least ``threshold`` means most vertebrae look deformed, or the spine's shape
    is not the level-typical one, and a reference from neighbours cannot tell which.

    >>> atypical_spine_shape({20: 0.3, 21: 0.02, 22: 0.0, 23: -0.01}, threshold=0.1)
    False
    >>> atypical_spine_shape({18: 0.12, 19: 0.15, 20: 0.3, 21: 0.11}, threshold=0.1)
    True
    """
    if len(shape_losses) < min_vertebrae:
        return False
    return float(np.median(list(shape_losses.values()))) >= threshold


def penalised(confidence: float, flags: Iterable[str]) -> float:
    """``confidence`` multiplied by the confidence factor of each flag, in the order given
    (names or :class:`QCFlag` members)."""
    out = confidence
    for f in flags:
        out *= _BY_NAME[f.value if isinstance(f, QCFlag) else f].confidence_factor
    return out


def has_fragments(
    n_fragments: int, dropped_fraction: float, *, max_dropped_fraction: float = 0.01
) -> bool:
    """A label in several pieces, or one that lost more than ``max_dropped_fraction`` of its
    voxels to far stray pieces.

    >>> has_fragments(1, 0.0), has_fragments(2, 0.0), has_fragments(1, 0.02)
    (False, True, True)
    """
    return n_fragments > 1 or dropped_fraction > max_dropped_fraction


#: Names of the faces of the canonical (RAS+) grid: axis -> (low side, high side).
FACE_NAMES: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("posterior", "anterior"),
    ("inferior", "superior"),
)


def border_contacts(
    body: NDArray[np.bool_],
    offset: Sequence[int],
    shape: Sequence[int],
    spacing: Sequence[float],
    *,
    probe_mm: float = 3.0,
) -> dict[str, float]:
    """Each image face a body reaches, with how flat the body meets it: its section on the face
    over its section ``probe_mm`` inside.

    A body the border cuts meets it with a whole face: its section there is about its section a
    few millimetres in (ratio about 1). A body that merely touches the border of an image cropped
    to the spine meets it with the tip of its rounded surface: the section on the face is a small
    part of the section a few millimetres in.

    Parameters
    ----------
    body : (I, J, K) bool ndarray
        The body, on a crop of the canonical grid that starts at voxel ``offset``.
    offset : (3,) int
    shape : (3,) int
        The full image's shape.
    spacing : (3,) float
        Voxel size (mm).
    probe_mm : float
        How far inside the second section is taken.

    Returns
    -------
    dict of str to float
        Face name (:data:`FACE_NAMES`) -> section ratio, for the faces the body reaches.

    Examples
    --------
    >>> b = np.zeros((10, 10, 10), bool); b[2:8, 2:8, 0:6] = True   # a box on the bottom face
    >>> border_contacts(b, (0, 0, 0), (10, 10, 10), (1.0, 1.0, 1.0))
    {'inferior': 1.0}
    >>> ball = np.linalg.norm(np.indices((15, 15, 15)) - 7.0, axis=0) <= 7.0   # tangent
    >>> c = border_contacts(ball, (0, 0, 0), (15, 15, 40), (1.0, 1.0, 1.0))
    >>> sorted(c), round(c["left"], 2)
    (['anterior', 'inferior', 'left', 'posterior', 'right'], 0.01)
    """
    out: dict[str, float] = {}
    for ax in range(3):
        profile = body.sum(axis=tuple(a for a in range(3) if a != ax)).astype(np.float64)
        if not profile.any():
            continue
        depth = max(1, int(np.ceil(probe_mm / float(spacing[ax]))))
        last = body.shape[ax] - 1
        for side, local in ((0, 0), (1, last)):
            full = 0 if side == 0 else shape[ax] - 1
            if offset[ax] + local != full or profile[local] == 0:
                continue
            inner = (
                profile[min(local + depth, last)] if side == 0 else profile[max(local - depth, 0)]
            )
            out[FACE_NAMES[ax][side]] = float(profile[local] / max(inner, profile[local]))
    return out


def heights_disagree(
    a: Mapping[str, float | None],
    b: Mapping[str, float | None],
    *,
    mm: float,
    fraction: float,
    regions: Sequence[str] = ("anterior", "middle", "posterior"),
) -> bool:
    """True when a regional height of ``a`` and ``b`` differs by more than ``mm`` AND by more
    than ``fraction`` of the larger one (both thresholds: a small body's 2 mm is a lot, a
    large body's 10 % is too)."""
    for r in regions:
        x, y = a.get(r), b.get(r)
        if x is None or y is None:
            continue
        d = abs(x - y)
        if d > mm and d > fraction * max(x, y):
            return True
    return False


def implausible_sizes(
    size_ratios: Mapping[int, float],
    *,
    relative_bounds: tuple[float, float],
    scale_bounds: tuple[float, float],
) -> set[int]:
    """Labels whose size is implausible for their level on this spine.

    ``size_ratios`` maps each label to its measured posterior height over its level's normative
    height. The spine's own scale is their median; a vertebra is implausible when its ratio to
    that scale lies outside ``relative_bounds`` (the posterior wall survives most fractures:
    beyond these bounds it is a label problem), and every vertebra is when the scale itself lies
    outside ``scale_bounds`` (a spine that small or large is a units or labelling problem).

    >>> sorted(implausible_sizes({1: 1.0, 2: 1.02, 3: 0.3}, relative_bounds=(0.45, 1.6),
    ...                          scale_bounds=(0.35, 2.5)))
    [3]
    """
    if not size_ratios:
        return set()
    ordered = sorted(size_ratios.values())
    n = len(ordered)
    scale = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    lo, hi = relative_bounds
    scale_ok = scale_bounds[0] < scale < scale_bounds[1]
    return {k for k, r in size_ratios.items() if not (lo <= r / scale <= hi) or not scale_ok}


def _neighbours(order: Sequence[int], i: int) -> list[int]:
    return [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)]


def too_deep(
    order: Sequence[int], depths_mm: Mapping[int, float], *, max_ratio: float
) -> list[int]:
    """Labels whose body is more than ``max_ratio`` times as deep (antero-posterior extent) as
    the mean of its neighbours in ``order``: its isolation kept the posterior elements.

    >>> too_deep([22, 23, 24], {22: 33.0, 23: 34.0, 24: 69.0}, max_ratio=1.5)
    [24]
    """
    out = []
    for i, k in enumerate(order):
        near = _neighbours(order, i)
        if near:
            mean = sum(depths_mm[n] for n in near) / len(near)
            if mean > 0 and depths_mm[k] > max_ratio * mean:
                out.append(k)
    return out


def axes_deviating(
    order: Sequence[int], axes: Mapping[int, NDArray[np.float64]], *, max_deg: float
) -> list[int]:
    """Labels whose unit axis departs by more than ``max_deg`` from the mean of its neighbours'.

    >>> tilt = np.array([np.sin(np.radians(30)), 0.0, np.cos(np.radians(30))])
    >>> z = np.array([0.0, 0.0, 1.0])
    >>> axes_deviating([1, 2, 3], {1: z, 2: z, 3: tilt}, max_deg=25.0)
    [3]
    """
    out = []
    for i, k in enumerate(order):
        near = _neighbours(order, i)
        if not near:
            continue
        mean = np.sum([axes[n] for n in near], axis=0)
        mean = mean / np.linalg.norm(mean)
        cos = float(np.clip(abs(float(axes[k] @ mean)), 0.0, 1.0))
        if np.degrees(np.arccos(cos)) > max_deg:
            out.append(k)
    return out


def one_sided(position: float, source_positions: Sequence[float]) -> bool:
    """True when every source lies on one side of ``position`` (positions along the spine).

    >>> one_sided(20.0, [18.0, 19.0]), one_sided(20.0, [19.0, 21.0])
    (True, False)
    """
    return all(x < position for x in source_positions) or all(
        x > position for x in source_positions
    )
