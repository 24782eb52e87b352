"""Per-vertebra geometry: where each vertebra is, its local frame, and its isolated body.

Flow: :func:`locate_vertebrae` finds every label's voxels (one pass over the volume);
:func:`spine_frames` fits the smooth centreline through their centres and gives each a
:class:`~vertgrade.geometry.frames.LocalFrame`; :func:`isolate_body` projects the vertebra along
its ``si`` axis and cuts the body out (see :mod:`vertgrade.geometry.body`). The pipeline does this
twice: first with the centres of whole vertebrae, then, once bodies are known, with the body
centres, which lie on the curve that the endplates are perpendicular to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.config import FRAGMENT_FRACTION, LABEL_MARGIN_MM, BodyParams
from vertgrade.geometry.body import BodyFootprint, body_footprint
from vertgrade.geometry.frames import LocalFrame, fit_spine_curve
from vertgrade.geometry.sampling import LocalGrid, sample, voxels_to_local
from vertgrade.levels import anatomical_order
from vertgrade.study import find_objects

__all__ = [
    "BodyIsolation",
    "VertebraVoxels",
    "centre_offsets",
    "isolate_body",
    "locate_vertebrae",
    "off_curve",
    "spine_frames",
]


@dataclass(frozen=True)
class VertebraVoxels:
    """One label's voxels, cropped.

    ``mask`` is the label's largest piece with the pieces next to it (within the crop margin);
    pieces far from it are dropped (``dropped_fraction``); ``n_fragments`` counts pieces holding
    at least ``fragment_fraction`` (5 %) of the largest;
    ``offset`` is the crop's first voxel in the full grid; ``touches_edge`` lists the volume
    faces the label touches, as ``(axis, side)`` pairs on the canonical grid.
    """

    label: int
    mask: NDArray[np.bool_]
    offset: tuple[int, int, int]
    centroid_mm: NDArray[np.float64]
    n_voxels: int
    n_fragments: int
    dropped_fraction: float
    touches_edge: tuple[tuple[int, int], ...]
    #: the widest gap (mm, between bounding boxes) between the largest piece and another kept
    #: piece of at least a quarter of its size: 0 for a whole label or adjacent pieces
    split_gap_mm: float = 0.0

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.mask.shape, strict=True))  # type: ignore[return-value]


def locate_vertebrae(
    labels: NDArray[np.integer],
    affine: NDArray[np.float64],
    wanted: list[int],
    *,
    objects: list[tuple[slice, slice, slice] | None] | None = None,
    margin_mm: float = LABEL_MARGIN_MM,
    fragment_fraction: float = FRAGMENT_FRACTION,
) -> dict[int, VertebraVoxels]:
    """Crop each wanted label, drop small stray pieces, compute its centroid (world mm).

    ``objects`` are the labels' bounding boxes from :func:`vertgrade.study.find_objects`, if
    already known. Each crop reaches ``margin_mm`` beyond the label's box; pieces of the label
    within that margin of its largest piece are kept, farther ones dropped; a piece holding at
    least ``fragment_fraction`` of the largest counts as a fragment (defaults:
    :class:`vertgrade.config.GradingConfig`'s ``label_margin_mm`` and ``fragment_fraction``).
    """
    spacing = voxel_sizes(affine)
    margin = np.ceil(margin_mm / spacing).astype(int)
    if objects is None:
        objects = find_objects(labels)
    shape = np.array(labels.shape)
    out: dict[int, VertebraVoxels] = {}
    for lab in wanted:
        sl = objects[lab - 1] if lab - 1 < len(objects) else None
        if sl is None:
            continue
        start = np.array([s.start for s in sl])
        stop = np.array([s.stop for s in sl])
        touches = tuple(
            (ax, side)
            for ax in range(3)
            for side, hit in ((0, start[ax] == 0), (1, stop[ax] == shape[ax]))
            if hit
        )
        lo = np.maximum(start - margin, 0)
        hi = np.minimum(stop + margin, shape)
        crop = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == lab
        comp, n = ndimage.label(crop)
        n_frag, dropped, gap = 1, 0.0, 0.0
        if n > 1:
            crop, n_frag, dropped = _main_parts(comp, n, margin, fragment_fraction)
            gap = _split_gap_mm(comp, crop, spacing)
        idx = np.argwhere(crop).mean(axis=0) + lo
        centroid = affine[:3, :3] @ idx + affine[:3, 3]
        out[lab] = VertebraVoxels(
            lab,
            crop,
            (int(lo[0]), int(lo[1]), int(lo[2])),
            centroid,
            int(crop.sum()),
            n_frag,
            dropped,
            touches,
            gap,
        )
    return out


def _split_gap_mm(
    comp: NDArray[np.int32], kept: NDArray[np.bool_], spacing: NDArray[np.float64]
) -> float:
    """Widest gap (mm, nearest voxel to nearest voxel) between the largest kept piece and the
    other kept pieces holding at least a quarter of its voxels (a fracture's pieces touch or
    nearly; a label split between two places does not)."""
    sizes = np.bincount(comp[kept].ravel())
    sizes[0] = 0
    if np.count_nonzero(sizes) < 2:
        return 0.0
    main = int(np.argmax(sizes))
    big = [i for i in np.flatnonzero(sizes) if i != main and sizes[i] >= 0.25 * sizes[main]]
    if not big:
        return 0.0
    dist = ndimage.distance_transform_edt(comp != main, sampling=spacing)
    return float(max(dist[comp == i].min() for i in big))


def _main_parts(
    comp: NDArray[np.int32], n: int, near_voxels: NDArray[np.int64], fragment_fraction: float
) -> tuple[NDArray[np.bool_], int, float]:
    """Keep the largest piece of a label and the pieces touching its neighbourhood (a fracture
    can split a body into adjacent pieces); drop pieces far from it (mislabelled blobs).

    Returns the kept mask, the number of pieces holding at least ``fragment_fraction`` of the
    largest one, and the fraction of the label's voxels dropped.
    """
    sizes = np.bincount(comp.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    boxes = ndimage.find_objects(comp)
    mb = boxes[main - 1]
    keep = [main]
    for i, box in enumerate(boxes, start=1):
        if i == main or box is None:
            continue
        near = all(
            b.start <= m.stop + d and m.start <= b.stop + d
            for b, m, d in zip(box, mb, near_voxels, strict=True)
        )
        if near:
            keep.append(i)
    mask = np.isin(comp, keep)
    n_frag = int(np.count_nonzero(sizes >= fragment_fraction * sizes.max()))
    dropped = 1.0 - float(sizes[np.array(keep) - 1].sum()) / float(sizes.sum())
    return mask, n_frag, dropped


def centre_offsets(
    centres: dict[int, NDArray[np.float64]], *, smoothing_mm: float = 1.5
) -> dict[int, float]:
    """How far (mm) each interior centre lies off the centreline fitted through the others.

    The distance is perpendicular to that curve. The first and last vertebrae are not judged:
    there the curve through the others would be extrapolated, along a tangent that any bent
    neighbour swings. Needs at least five centres (else empty).
    """
    order = anatomical_order(list(centres))
    if len(order) < 5:
        return {}
    out = {}
    for lab in order[1:-1]:
        rest = [k for k in order if k != lab]
        curve = fit_spine_curve(np.stack([centres[k] for k in rest]), smoothing_mm=smoothing_mm)
        c = np.asarray(centres[lab], dtype=float)
        s = curve.nearest_s(c)
        p, t = curve.point(s)[0], curve.tangent(s)[0]
        v = c - p
        out[lab] = float(np.linalg.norm(v - np.dot(v, t) * t))
    return out


def off_curve(
    centres: dict[int, NDArray[np.float64]],
    *,
    max_offset_mm: float,
    smoothing_mm: float = 1.5,
) -> list[int]:
    """Interior centres that do not fit the spine's curve: at most a third of them, the worst
    first, each more than ``max_offset_mm`` from the centreline through the others that remain
    (:func:`centre_offsets`).

    A label split between two places or a mislabelled blob has its centre tens of millimetres
    off the spine; left in the fit, it bends the frames of its neighbours. On the real cases of
    the validation page interior centres lie within about 5 mm of the curve through the others.

    >>> z = np.arange(6) * -30.0
    >>> pts = {19 + i: np.array([0.0, 0.0, z[i]]) for i in range(6)}
    >>> pts[21] = np.array([0.0, 25.0, z[2]])      # L2's centre 25 mm anterior of the line
    >>> off_curve(pts, max_offset_mm=15.0)
    [21]
    """
    kept = dict(centres)
    out: list[int] = []
    while len(out) < len(centres) // 3:
        offs = centre_offsets(kept, smoothing_mm=smoothing_mm)
        if not offs:
            break
        worst = max(offs, key=lambda k: offs[k])
        if offs[worst] <= max_offset_mm:
            break
        out.append(worst)
        del kept[worst]
    return out


def spine_frames(
    centres: dict[int, NDArray[np.float64]],
    *,
    fit_labels: list[int] | None = None,
    smoothing_mm: float = 1.5,
) -> dict[int, LocalFrame]:
    """A frame per vertebra from the smooth centreline through ``centres`` (label -> world mm).

    The curve is fitted through the centres of ``fit_labels`` only (default: all); every
    vertebra then takes its frame at the curve point nearest its centre. Leaving deformed
    (fractured) vertebrae out of the fit keeps their displaced centres from bending the curve.
    With a single centre there is no curve: the ``si`` axis is the patient's superior axis.
    """
    order = anatomical_order(list(centres))
    fit = anatomical_order(fit_labels) if fit_labels is not None else order
    if len(fit) < 2:
        return {lab: LocalFrame.from_axes(centres[lab], si=[0.0, 0.0, 1.0]) for lab in order}
    curve = fit_spine_curve(np.stack([centres[v] for v in fit]), smoothing_mm=smoothing_mm)
    frames = {}
    for lab in order:
        if lab in fit:
            s = float(curve.node_s[fit.index(lab)])
        else:
            s = curve.nearest_s(centres[lab])
        frames[lab] = LocalFrame.from_axes(curve.point(s)[0], si=curve.tangent(s)[0])
    return frames


@dataclass(frozen=True)
class BodyIsolation:
    """The isolated body of one vertebra, on the vertebra's crop."""

    body: NDArray[np.bool_]
    footprint: BodyFootprint
    centroid_mm: NDArray[np.float64]


def isolate_body(
    vox: VertebraVoxels,
    affine: NDArray[np.float64],
    frame: LocalFrame,
    *,
    given_body: NDArray[np.bool_] | None = None,
    params: BodyParams | None = None,
) -> BodyIsolation:
    """Cut the vertebral body out of a vertebra label.

    Parameters
    ----------
    vox : VertebraVoxels
        The vertebra's cropped label.
    affine : (4, 4) ndarray
        Voxel -> world of the full grid.
    frame : LocalFrame
        The vertebra's frame (``si`` along the spine).
    given_body : bool ndarray, optional
        A body mask on the same crop (from a body segmentation); used instead of the projection
        method when given and non-empty.
    params : BodyParams, optional
        The projection's step and the canal search (default: the defaults).
    """
    prm = params or BodyParams()
    step_mm = prm.projection_step_mm
    ijk = np.argwhere(vox.mask).astype(np.float64) + np.array(vox.offset)
    local = voxels_to_local(ijk, affine, frame)
    if given_body is not None and given_body.any():
        body = vox.mask & given_body
        fp = BodyFootprint(np.zeros((1, 1), bool), True, None)
    else:
        spacing = voxel_sizes(affine)
        lo = local.min(axis=0) - spacing.max()
        hi = local.max(axis=0) + spacing.max()
        grid = LocalGrid.covering(
            frame, lo, hi, step_mm=(max(step_mm, 0.5 * spacing.min()), step_mm, step_mm)
        )
        values = sample(vox.mask.astype(np.float32), affine, grid, offset=vox.offset, order=1)
        projection = np.asarray((values >= 0.5).any(axis=0), dtype=bool)
        fp = body_footprint(projection, step_mm=step_mm, params=prm)
        a = np.floor((local[:, 1] - grid.ap[0]) / step_mm + 0.5).astype(int)
        b = np.floor((local[:, 2] - grid.lr[0]) / step_mm + 0.5).astype(int)
        ok = (a >= 0) & (a < projection.shape[0]) & (b >= 0) & (b < projection.shape[1])
        inside = np.zeros(len(local), bool)
        inside[ok] = fp.footprint[a[ok], b[ok]]
        body = np.zeros_like(vox.mask)
        sel = ijk[inside].astype(int) - np.array(vox.offset)
        body[sel[:, 0], sel[:, 1], sel[:, 2]] = True
        # the footprint's grid mm are relative to the grid's first point
        if fp.cut_ap_mm is not None:
            fp = BodyFootprint(fp.footprint, fp.canal_found, fp.cut_ap_mm + grid.ap[0])
    if body.any():
        bidx = np.argwhere(body).mean(axis=0) + np.array(vox.offset)
        centroid = affine[:3, :3] @ bidx + affine[:3, 3]
    else:
        centroid = vox.centroid_mm
    return BodyIsolation(body, fp, centroid)
