"""Sagittal angles: thoracic kyphosis and lumbar lordosis, and the spans they are measured over
(the standard spans and the fallbacks are in :mod:`vertgrade.alignment`)."""

from __future__ import annotations

from collections.abc import Sequence

from vertgrade.alignment._common import _Angles
from vertgrade.alignment.result import SagittalAngle
from vertgrade.levels import anatomical_order, label_id, level_name, region_of

__all__ = ["lumbar_lordosis_span", "thoracic_kyphosis_span"]

# Labels of the standard ends of the thoracic kyphosis and the lumbar lordosis.
_T4, _T12, _L1, _S1 = 11, 19, 20, 26


def thoracic_kyphosis_span(labels: Sequence[int]) -> tuple[int, int] | None:
    """End vertebrae of the thoracic kyphosis among usable vertebrae ``labels``.

    T4 (superior endplate) to T12 (inferior endplate) where both are there; otherwise the widest
    span of the thoracic vertebrae within T4-T12, and failing two of those, within T1-T13.
    ``None`` with fewer than two thoracic vertebrae.

    >>> [level_name(x) for x in thoracic_kyphosis_span([10, 11, 12, 19, 20])]
    ['T4', 'T12']
    >>> [level_name(x) for x in thoracic_kyphosis_span([17, 18, 19, 20])]
    ['T10', 'T12']
    >>> thoracic_kyphosis_span([19, 20, 21]) is None
    True
    """
    thoracic = [x for x in anatomical_order(list(labels)) if region_of(x) == "thoracic"]
    window = [x for x in thoracic if _T4 <= x <= _T12]
    for group in (window, thoracic):
        if len(group) >= 2:
            return group[0], group[-1]
    return None


def lumbar_lordosis_span(labels: Sequence[int]) -> tuple[int, int] | None:
    """End vertebrae of the lumbar lordosis among usable vertebrae ``labels``.

    The upper end is the most cranial lumbar vertebra (L1 where there) and its superior endplate
    is used; the lower end is S1 (label 26, its superior endplate) where it is among ``labels``,
    else the most caudal lumbar vertebra (its inferior endplate). ``None`` unless the two ends are
    different vertebrae.

    >>> [level_name(x) for x in lumbar_lordosis_span([19, 20, 21, 22, 23, 24])]
    ['L1', 'L5']
    >>> [level_name(x) for x in lumbar_lordosis_span([20, 21, 22, 23, 24, 26])]
    ['L1', 'S1']
    >>> lumbar_lordosis_span([24]) is None
    True
    """
    lumbar = [x for x in anatomical_order(list(labels)) if region_of(x) == "lumbar"]
    if not lumbar:
        return None
    lower = _S1 if _S1 in labels else lumbar[-1]
    return (lumbar[0], lower) if lower != lumbar[0] else None


def _why_missing(level: str, order: list[int], reasons: dict[int, str]) -> str:
    """Why ``level`` cannot be an end: not labelled, or not usable (with the reason)."""
    lab = label_id(level)
    if lab not in order:
        return f"{level} is not in the labels"
    return f"{level} is not usable ({reasons.get(lab, 'unknown reason')})"


def _kyphosis(
    order: list[int],
    usable: list[int],
    angles: _Angles,
    reasons: dict[int, str],
) -> SagittalAngle:
    """The thoracic kyphosis over :func:`thoracic_kyphosis_span` of the ``usable`` vertebrae, or
    ``None`` with the reason; ``order`` (every labelled vertebra) and ``reasons`` explain a span
    other than T4-T12."""
    span = thoracic_kyphosis_span(usable)
    if span is None:
        names = ", ".join(level_name(x) for x in usable if region_of(x) == "thoracic") or "none"
        return SagittalAngle(
            "thoracic_kyphosis",
            None,
            None,
            None,
            None,
            None,
            False,
            f"needs at least two usable thoracic vertebrae; usable: {names}",
        )
    u, low = span
    standard = (u, low) == (_T4, _T12)
    reason = None
    if not standard:
        missing = [
            _why_missing(lv, order, reasons)
            for lv, want, got in (("T4", _T4, u), ("T12", _T12, low))
            if want != got
        ]
        reason = (
            f"T4-T12 not available ({'; '.join(missing)}): measured over "
            f"{level_name(u)}-{level_name(low)} instead, not comparable with T4-T12 norms"
        )
    return SagittalAngle(
        "thoracic_kyphosis",
        angles[u][1] - angles[low][3],
        level_name(u),
        "superior",
        level_name(low),
        "inferior",
        standard,
        reason,
    )


def _lordosis(
    order: list[int],
    usable: list[int],
    angles: _Angles,
    reasons: dict[int, str],
) -> SagittalAngle:
    """The lumbar lordosis over :func:`lumbar_lordosis_span` of the ``usable`` vertebrae, or
    ``None`` with the reason; ``order`` (every labelled vertebra) and ``reasons`` explain a span
    other than L1 to S1 or to the last lumbar vertebra."""
    span = lumbar_lordosis_span(usable)
    if span is None:
        names = ", ".join(x for x in (level_name(y) for y in usable) if x[0] in "LS") or "none"
        return SagittalAngle(
            "lumbar_lordosis",
            None,
            None,
            None,
            None,
            None,
            False,
            f"needs at least two usable vertebrae from L1 to S1; usable: {names}",
        )
    u, low = span
    to_s1 = low == _S1
    lower_deg = angles[low][1] if to_s1 else angles[low][3]
    last_lumbar = 25 if 25 in order else 24
    notes = []
    if u != _L1:
        notes.append(_why_missing("L1", order, reasons))
    if not to_s1 and low != last_lumbar:
        notes.append(_why_missing(level_name(last_lumbar), order, reasons))
    standard = not notes
    if _S1 in order and not to_s1:
        notes.append(_why_missing("S1", order, reasons))
    reason = None
    if notes:
        span_text = f"{level_name(u)}-{level_name(low)}"
        if standard:
            reason = f"{'; '.join(notes)}: measured to the inferior endplate of {level_name(low)}"
        else:
            std = "L1-S1" if _S1 in order else f"L1-{level_name(last_lumbar)}"
            reason = (
                f"{std} not available ({'; '.join(notes)}): measured over {span_text} instead, "
                f"not comparable with {std} norms"
            )
    return SagittalAngle(
        "lumbar_lordosis",
        lower_deg - angles[u][1],
        level_name(u),
        "superior",
        level_name(low),
        "superior" if to_s1 else "inferior",
        standard,
        reason,
    )
