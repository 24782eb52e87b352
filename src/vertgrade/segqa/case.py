"""One case: a predicted vertebra labelling against the truth, vertebra by vertebra.

:func:`compare_case` takes the two sides of a case (:class:`CaseSide`: a label map, centroids,
or both) and returns a :class:`CaseQA`: one :class:`VertebraQA` per label present in either side
and the study's :class:`CaseSummary`. The prediction is brought onto the truth's grid by
nearest-neighbour resampling in physical space where the grids differ; centroids are taken on
each map's own grid. ``docs/seg-qa.md`` defines every field.

Examples
--------
Two vertebrae along ``k``, the prediction one voxel short at the bottom of the second:

>>> truth = np.zeros((4, 4, 12), np.uint8); truth[:, :, 1:5] = 19; truth[:, :, 6:10] = 20
>>> pred = truth.copy(); pred[:, :, 6] = 0
>>> qa = compare_case(
...     CaseSide(labels=Volume(pred, np.eye(4), "labels")),
...     CaseSide(labels=Volume(truth, np.eye(4), "labels")),
...     subject="demo",
... )
>>> [(v.level, v.status, round(v.dice, 3), v.hd_mm, v.identified) for v in qa.vertebrae]
[('T12', 'matched', 1.0, 0.0, True), ('L1', 'matched', 0.857, 1.0, True)]
>>> qa.summary.id_rate, round(qa.summary.mean_dice, 4), qa.summary.label_shift
(1.0, 0.9286, 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.labels import present_labels, resample_nearest, same_grid, world_box
from vertgrade.levels import VERSE_LABELS, order_key
from vertgrade.segqa.config import SegQAConfig
from vertgrade.segqa.metrics import (
    Identification,
    OverlapCounts,
    SurfaceDistances,
    identify,
    label_centroids,
    level_sequence,
    level_steps,
    level_text,
    overlap_counts,
    shift_label,
    surface_distances,
)
from vertgrade.study import Volume

__all__ = ["CSV_COLUMNS", "CaseQA", "CaseSide", "CaseSummary", "VertebraQA", "compare_case"]

Status = Literal["matched", "missing", "extra"]


@dataclass(frozen=True)
class CaseSide:
    """One side of a case, the prediction or the truth.

    Attributes
    ----------
    labels : Volume or None
        Vertebra instance labels (VerSe numbering), any grid.
    centroids : mapping of int to (3,) float ndarray, or None
        Label -> centroid in world mm (RAS+), e.g. from a VerSe ``*_ctd.json``; ``None``: the
        centres of mass of ``labels``.
    inputs : mapping of str to str
        What the side was read from (file names, checksums), for the outputs.
    notes : tuple of str
        What the reading had to say (label format, resampling of the centroid grid).
    """

    labels: Volume | None = None
    centroids: Mapping[int, NDArray[np.float64]] | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.labels is None and self.centroids is None:
            raise ValueError("a CaseSide needs labels, centroids or both")


@dataclass(frozen=True)
class VertebraQA:
    """One vertebra (one label present in the truth, the prediction or both).

    ``None`` means "not measured": a distance without both masks, a Dice without a label map on
    both sides. See ``docs/seg-qa.md`` for each field.
    """

    label: int
    level: str
    status: Status
    in_truth: bool
    in_pred: bool
    truth_volume_mm3: float | None
    pred_volume_mm3: float | None
    dice: float | None
    hd_mm: float | None
    hd95_mm: float | None
    assd_mm: float | None
    identified: bool
    localisation_mm: float | None
    nearest_truth_label: int | None
    best_truth_label: int | None
    best_truth_fraction: float | None
    level_offset: int | None
    best_pred_label: int | None
    best_pred_fraction: float | None
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The vertebra, JSON-ready (``flags`` a list)."""
        out = {k: getattr(self, k) for k in _FIELDS}
        out["flags"] = list(self.flags)
        return out

    def to_record(self, subject: str) -> dict[str, Any]:
        """One ``seg_qa.csv`` row: :data:`CSV_COLUMNS` (``flags`` joined by ``;``)."""
        out: dict[str, Any] = {"subject": subject, **self.to_dict()}
        out["flags"] = ";".join(self.flags)
        return out


_FIELDS = tuple(f for f in VertebraQA.__dataclass_fields__)
#: Columns of ``seg_qa.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = ("subject", *_FIELDS)


@dataclass(frozen=True)
class CaseSummary:
    """The study's figures. Means are ``None`` where nothing was measured; see
    ``docs/seg-qa.md``."""

    segmentation: bool
    n_truth: int
    n_pred: int
    n_matched: int
    missing: tuple[int, ...]
    extra: tuple[int, ...]
    hits: int
    id_rate: float
    precision: float | None
    mean_localisation_mm: float | None
    mean_dice: float | None
    global_dice: float | None
    foreground_dice: float | None
    mean_hd_mm: float | None
    mean_hd95_mm: float | None
    mean_assd_mm: float | None
    label_shift: int
    shift_share: float | None
    id_rate_if_relabelled: float | None
    mean_dice_if_relabelled: float | None
    merged: tuple[tuple[int, tuple[int, ...]], ...]
    split: tuple[tuple[int, tuple[int, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["missing"] = list(self.missing)
        out["extra"] = list(self.extra)
        out["merged"] = [{"pred_label": p, "truth_labels": list(t)} for p, t in self.merged]
        out["split"] = [{"truth_label": t, "pred_labels": list(p)} for t, p in self.split]
        return out


@dataclass(frozen=True)
class CaseQA:
    """A compared case: its vertebrae (cranial to caudal) and summary."""

    subject: str
    patient: str
    vertebrae: tuple[VertebraQA, ...]
    summary: CaseSummary
    inputs: dict[str, dict[str, str]]
    grid: dict[str, Any] | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "patient": self.patient,
            "inputs": self.inputs,
            "grid": self.grid,
            "notes": list(self.notes),
            "summary": self.summary.to_dict(),
            "vertebrae": [v.to_dict() for v in self.vertebrae],
        }

    def records(self) -> list[dict[str, Any]]:
        """The ``seg_qa.csv`` rows of this case."""
        return [v.to_record(self.subject) for v in self.vertebrae]


# ---------------------------------------------------------------------------------------------
# Segmentation: on the truth's grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segmentation:
    counts: OverlapCounts
    distances: dict[int, SurfaceDistances]
    voxel_mm3: float
    global_dice: float | None
    foreground_dice: float | None
    lost: tuple[int, ...]  # predicted labels that left the truth's grid in the resampling


def _onto_truth(pred: Volume, truth: Volume, notes: list[str]) -> Volume:
    if same_grid(pred, truth):
        return pred
    box_p, box_t = world_box(pred), world_box(truth)
    if np.any(box_p[1] < box_t[0]) or np.any(box_t[1] < box_p[0]):
        raise InputError(
            pred.source,
            "predicted labels do not overlap the truth in physical space (prediction spans "
            f"{np.round(box_p[0]).tolist()}..{np.round(box_p[1]).tolist()} mm, truth "
            f"{np.round(box_t[0]).tolist()}..{np.round(box_t[1]).tolist()} mm)",
        )
    sp_p = "x".join(f"{s:.3g}" for s in pred.spacing)
    sp_t = "x".join(f"{s:.3g}" for s in truth.spacing)
    notes.append(
        f"prediction resampled onto the truth's grid (nearest neighbour, in physical space): "
        f"{pred.shape} at {sp_p} mm -> {truth.shape} at {sp_t} mm"
    )
    return resample_nearest(pred, truth)


def _union_box(
    boxes: Sequence[tuple[slice, ...] | None],
) -> tuple[slice, ...] | None:
    have = [b for b in boxes if b is not None]
    if not have:
        return None
    return tuple(
        slice(min(b[d].start for b in have), max(b[d].stop for b in have)) for d in range(3)
    )


def _label_box(boxes: Sequence[tuple[slice, ...] | None], label: int) -> tuple[slice, ...] | None:
    return boxes[label - 1] if 0 < label <= len(boxes) else None


def _segmentation(truth: Volume, pred: Volume, config: SegQAConfig) -> _Segmentation:
    """Overlaps and surface distances of ``pred`` (already on the truth's grid)."""
    t_boxes = truth.label_boxes()
    p_boxes = pred.label_boxes()
    box = _union_box([*t_boxes, *p_boxes])
    t_arr = np.asarray(truth.array)
    p_arr = np.asarray(pred.array)
    if box is None:
        counts = overlap_counts(t_arr[:0, :0, :0], p_arr[:0, :0, :0])
    else:
        counts = overlap_counts(t_arr[box], p_arr[box])
    spacing = truth.spacing
    distances: dict[int, SurfaceDistances] = {}
    for lab in sorted(set(counts.truth_labels.tolist()) & set(counts.pred_labels.tolist())):
        lbox = _union_box([_label_box(t_boxes, lab), _label_box(p_boxes, lab)])
        assert lbox is not None  # the label is present on both sides
        d = surface_distances(
            t_arr[lbox] == lab,
            p_arr[lbox] == lab,
            spacing_mm=spacing,
            percentile=config.hd_percentile,
        )
        if d is not None:
            distances[int(lab)] = d
    total = int(counts.truth_sizes.sum() + counts.pred_sizes.sum())
    same = sum(counts.count(int(lab), int(lab)) for lab in counts.truth_labels)
    return _Segmentation(
        counts=counts,
        distances=distances,
        voxel_mm3=abs(float(np.linalg.det(truth.affine[:3, :3]))),
        global_dice=2.0 * same / total if total else None,
        foreground_dice=2.0 * int(counts.counts.sum()) / total if total else None,
        lost=(),
    )


# ---------------------------------------------------------------------------------------------
# The case
# ---------------------------------------------------------------------------------------------


def _centroids(side: CaseSide) -> dict[int, NDArray[np.float64]]:
    if side.centroids is not None:
        return {int(k): np.asarray(v, dtype=float) for k, v in side.centroids.items()}
    assert side.labels is not None  # CaseSide checks it has one or the other
    vol = side.labels
    return label_centroids(np.asarray(vol.array), vol.affine, boxes=vol.label_boxes())


def _sort_key(label: int) -> tuple[int, float]:
    return (0, order_key(label)) if label in VERSE_LABELS else (1, float(label))


def _mean(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return float(np.mean(have)) if have else None


def _best(
    counts: OverlapCounts, label: int, *, of: Literal["truth", "pred"]
) -> tuple[int | None, float | None]:
    """For a predicted label (``of="pred"``): the true label holding most of its voxels that lie
    in a true vertebra, and that share. For a true label (``of="truth"``): the predicted label
    covering most of it, and the covered fraction of the whole true vertebra."""
    if of == "pred":
        pj = int(np.searchsorted(counts.pred_labels, label))
        if pj >= counts.pred_labels.size or counts.pred_labels[pj] != label:
            return None, None
        col = counts.counts[:, pj]
        inside = int(col.sum())
        if inside == 0:
            return None, None
        ti = int(np.argmax(col))
        return int(counts.truth_labels[ti]), float(col[ti]) / inside
    i = int(np.searchsorted(counts.truth_labels, label))
    if i >= counts.truth_labels.size or counts.truth_labels[i] != label:
        return None, None
    row = counts.counts[i]
    if row.size == 0 or int(row.max()) == 0:
        return None, 0.0
    j = int(np.argmax(row))
    return int(counts.pred_labels[j]), float(row[j]) / int(counts.truth_sizes[i])


def compare_case(
    pred: CaseSide,
    truth: CaseSide,
    *,
    subject: str = "case",
    patient: str | None = None,
    config: SegQAConfig | None = None,
) -> CaseQA:
    """Compare a predicted vertebra labelling with the truth.

    Labelling (every case): each predicted centroid is identified or not against the true
    centroids (:func:`~vertgrade.segqa.metrics.identify`); the localisation distance is the
    distance between the centroids of one label. Segmentation (where both sides have a label
    map): the prediction is resampled onto the truth's grid (nearest neighbour, in physical
    space) where the grids differ, then Dice, Hausdorff distance (maximum and percentile) and
    average surface distance per vertebra, the study's Dice over all labels and over the
    foreground, and merged and split vertebrae. Label shifts (the whole map off by ``k``
    levels) come from the overlaps where there are masks, else from the centroids.

    Parameters
    ----------
    pred, truth : CaseSide
    subject : str
        The case's name in the outputs.
    patient : str, optional
        The patient the case belongs to (bootstrap unit of a cohort); default ``subject``.
    config : SegQAConfig, optional

    Returns
    -------
    CaseQA

    Raises
    ------
    InputError
        The truth holds no vertebra, or the two label maps do not overlap in physical space.
    """
    cfg = config or SegQAConfig()
    notes: list[str] = [*(f"truth: {n}" for n in truth.notes)]
    notes += [f"prediction: {n}" for n in pred.notes]

    seg: _Segmentation | None = None
    grid: dict[str, Any] | None = None
    pred_mask_labels: set[int] = set()
    truth_mask_labels: set[int] = set()
    if truth.labels is not None:
        truth_mask_labels = set(present_labels(truth.labels).tolist())
    if pred.labels is not None:
        pred_mask_labels = set(present_labels(pred.labels).tolist())
    if truth.labels is not None and pred.labels is not None:
        on_truth = _onto_truth(pred.labels, truth.labels, notes)
        seg = _segmentation(truth.labels, on_truth, cfg)
        lost = tuple(sorted(pred_mask_labels - set(seg.counts.pred_labels.tolist())))
        if lost:
            notes.append(
                "predicted labels outside the truth's grid after resampling (no Dice or "
                f"distance): {', '.join(level_text(x) for x in lost)}"
            )
            seg = dataclasses.replace(seg, lost=lost)
        grid = {
            "shape": list(truth.labels.shape),
            "spacing_mm": [float(s) for s in truth.labels.spacing],
            "orientation": truth.labels.orientation,
            "resampled": not same_grid(pred.labels, truth.labels),
        }

    t_ctd = _centroids(truth)
    p_ctd = _centroids(pred)
    truth_present = truth_mask_labels | set(t_ctd)
    pred_present = pred_mask_labels | set(p_ctd)
    if not truth_present:
        where = truth.labels.source if truth.labels is not None else None
        raise InputError(where, "the truth holds no vertebra (no label, no centroid)")
    ids = identify(t_ctd, p_ctd, radius_mm=cfg.identification_radius_mm)
    seq = level_sequence(truth_present | pred_present)

    # --- overlaps: best partners, merges, splits -------------------------------------------
    best_truth: dict[int, tuple[int | None, float | None]] = {}
    best_pred: dict[int, tuple[int | None, float | None]] = {}
    merged: list[tuple[int, tuple[int, ...]]] = []
    split: list[tuple[int, tuple[int, ...]]] = []
    if seg is not None:
        c = seg.counts
        for lab in c.pred_labels.tolist():
            best_truth[lab] = _best(c, lab, of="pred")
        for lab in c.truth_labels.tolist():
            best_pred[lab] = _best(c, lab, of="truth")
        groups: dict[int, list[int]] = {}
        for t_lab, (p_lab, frac) in best_pred.items():
            if p_lab is not None and frac is not None and frac > cfg.majority_fraction:
                groups.setdefault(p_lab, []).append(t_lab)
        for p_lab, t_labs in groups.items():
            if len(t_labs) > 1:
                merged.append((p_lab, tuple(sorted(t_labs, key=_sort_key))))
        for i, t_lab in enumerate(c.truth_labels.tolist()):
            share = c.counts[i] / max(int(c.truth_sizes[i]), 1)
            parts = [int(c.pred_labels[j]) for j in np.flatnonzero(share >= cfg.split_fraction)]
            if len(parts) > 1:
                split.append((t_lab, tuple(sorted(parts, key=_sort_key))))
    merged.sort(key=lambda m: _sort_key(m[0]))
    split.sort(key=lambda s: _sort_key(s[0]))
    merged_truth = {t for _, ts in merged for t in ts}
    merge_targets = {p for p, _ in merged}
    split_truth = {t for t, _ in split}

    # --- level offsets of the predicted vertebrae --------------------------------------------
    offsets: dict[int, int | None] = {}
    for lab in pred_present:
        if seg is not None:
            bt, frac = best_truth.get(lab, (None, None))
            ok = bt is not None and frac is not None and frac > cfg.majority_fraction
            offsets[lab] = level_steps(lab, bt, seq) if ok and bt is not None else None
        else:
            found = ids.get(lab)
            near = found.nearest_truth_label if found is not None else None
            close = (
                found is not None
                and found.nearest_distance_mm is not None
                and found.nearest_distance_mm <= cfg.identification_radius_mm
            )
            offsets[lab] = level_steps(lab, near, seq) if close and near is not None else None
    voting = [off for lab, off in offsets.items() if off is not None and lab not in merge_targets]
    label_shift, shift_share = 0, None
    if voting:
        tally = Counter(voting)
        k, n = max(
            ((k, n) for k, n in tally.items() if k != 0), key=lambda kn: kn[1], default=(0, 0)
        )
        if k != 0 and n / len(voting) > cfg.shift_share:
            label_shift, shift_share = k, n / len(voting)
        else:
            shift_share = tally.get(0, 0) / len(voting)

    # --- rows ------------------------------------------------------------------------------
    rows: list[VertebraQA] = []
    lost_labels = set(seg.lost) if seg is not None else set()
    for lab in sorted(truth_present | pred_present, key=_sort_key):
        in_t, in_p = lab in truth_present, lab in pred_present
        status: Status = "matched" if in_t and in_p else ("missing" if in_t else "extra")
        ident: Identification | None = ids.get(lab)
        dice = hd = hd95 = assd = t_vol = p_vol = None
        if seg is not None:
            c = seg.counts
            t_vol = c.truth_size(lab) * seg.voxel_mm3 if in_t else None
            p_vol = c.pred_size(lab) * seg.voxel_mm3 if in_p else None
            total = c.truth_size(lab) + c.pred_size(lab)
            dice = 2.0 * c.count(lab, lab) / total if total else None
            dist = seg.distances.get(lab)
            if dist is not None:
                hd, hd95, assd = dist.hd_mm, dist.hd_percentile_mm, dist.assd_mm
        flags = []
        if lab in merged_truth:
            flags.append("merged")
        if lab in split_truth:
            flags.append("split")
        off = offsets.get(lab)
        if off not in (None, 0) and lab not in merge_targets:
            flags.append("shifted")
        if lab in lost_labels:
            flags.append("outside_truth_grid")
        bt, btf = best_truth.get(lab, (None, None)) if in_p else (None, None)
        bp, bpf = best_pred.get(lab, (None, None)) if in_t else (None, None)
        rows.append(
            VertebraQA(
                label=int(lab),
                level=level_text(lab),
                status=status,
                in_truth=in_t,
                in_pred=in_p,
                truth_volume_mm3=t_vol,
                pred_volume_mm3=p_vol,
                dice=dice,
                hd_mm=hd,
                hd95_mm=hd95,
                assd_mm=assd,
                identified=bool(in_t and ident is not None and ident.identified),
                localisation_mm=ident.distance_mm if ident is not None else None,
                nearest_truth_label=ident.nearest_truth_label if ident is not None else None,
                best_truth_label=bt,
                best_truth_fraction=btf,
                level_offset=off if in_p else None,
                best_pred_label=bp,
                best_pred_fraction=bpf,
                flags=tuple(flags),
            )
        )

    # --- summary ---------------------------------------------------------------------------
    truth_rows = [r for r in rows if r.in_truth]
    hits = sum(r.identified for r in truth_rows)
    n_pred = len(pred_present)
    id_relabelled = dice_relabelled = None
    if label_shift != 0:
        moved = {}
        for lab, point in p_ctd.items():
            new = shift_label(lab, label_shift, seq)
            if new is not None:
                moved[new] = point
        again = identify(t_ctd, moved, radius_mm=cfg.identification_radius_mm)
        id_relabelled = sum(1 for t in truth_present if t in again and again[t].identified) / len(
            truth_present
        )
        if seg is not None:
            c = seg.counts
            scores = []
            for t_lab in c.truth_labels.tolist():
                src = shift_label(t_lab, -label_shift, seq)
                both = c.count(t_lab, src) if src is not None else 0
                size_p = c.pred_size(src) if src is not None else 0
                scores.append(2.0 * both / (c.truth_size(t_lab) + size_p))
            dice_relabelled = _mean(scores)
    summary = CaseSummary(
        segmentation=seg is not None,
        n_truth=len(truth_rows),
        n_pred=n_pred,
        n_matched=sum(r.status == "matched" for r in rows),
        missing=tuple(r.label for r in rows if r.status == "missing"),
        extra=tuple(r.label for r in rows if r.status == "extra"),
        hits=int(hits),
        id_rate=hits / len(truth_rows),
        precision=hits / n_pred if n_pred else None,
        mean_localisation_mm=_mean([r.localisation_mm for r in rows]),
        mean_dice=_mean([r.dice for r in rows if r.label in truth_mask_labels])
        if seg is not None
        else None,
        global_dice=seg.global_dice if seg is not None else None,
        foreground_dice=seg.foreground_dice if seg is not None else None,
        mean_hd_mm=_mean([r.hd_mm for r in rows]),
        mean_hd95_mm=_mean([r.hd95_mm for r in rows]),
        mean_assd_mm=_mean([r.assd_mm for r in rows]),
        label_shift=label_shift,
        shift_share=shift_share,
        id_rate_if_relabelled=id_relabelled,
        mean_dice_if_relabelled=dice_relabelled,
        merged=tuple(merged),
        split=tuple(split),
    )
    if label_shift:
        way = "caudally" if label_shift > 0 else "cranially"
        notes.append(
            f"labels shifted: {100 * (shift_share or 0):.0f} % of the predicted vertebrae lie "
            f"{abs(label_shift)} level{'s' if abs(label_shift) > 1 else ''} {way} of the level "
            f"they are named; relabelled so, the identification rate would be "
            f"{_pct(id_relabelled)}"
            + (f" and the mean Dice {dice_relabelled:.3f}" if dice_relabelled is not None else "")
        )
    inputs = {"pred": dict(pred.inputs), "truth": dict(truth.inputs)}
    return CaseQA(
        subject=subject,
        patient=patient if patient is not None else subject,
        vertebrae=tuple(rows),
        summary=summary,
        inputs=inputs,
        grid=grid,
        notes=tuple(notes),
    )


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"
