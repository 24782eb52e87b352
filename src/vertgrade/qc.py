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

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum

__all__ = [
    "QCFlag",
    "flag_texts",
    "has_fragments",
    "heights_disagree",
    "implausible_sizes",
    "one_sided",
    "penalised",
    "touches_edge",
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

    CUT_BY_FOV = (
        "cut_by_fov",
        "the vertebral body touches the edge of the image: heights would be truncated",
        1.0,
        True,
    )
    POSTERIOR_ELEMENTS_CUT = (
        "posterior_elements_cut",
        "posterior elements touch the edge of the image (body whole)",
        0.95,
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


def touches_edge(lo: Sequence[int], hi: Sequence[int], shape: Sequence[int]) -> bool:
    """True when a box from voxel ``lo`` to voxel ``hi`` (inclusive) reaches the image's border.

    >>> touches_edge((0, 5, 5), (9, 9, 9), (20, 20, 20))
    True
    >>> touches_edge((1, 1, 1), (18, 18, 18), (20, 20, 20))
    False
    """
    return any(a == 0 for a in lo) or any(b == n - 1 for b, n in zip(hi, shape, strict=True))


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


def one_sided(position: float, source_positions: Sequence[float]) -> bool:
    """True when every source lies on one side of ``position`` (positions along the spine).

    >>> one_sided(20.0, [18.0, 19.0]), one_sided(20.0, [19.0, 21.0])
    (True, False)
    """
    return all(x < position for x in source_positions) or all(
        x > position for x in source_positions
    )
