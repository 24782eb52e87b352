"""``grade_study``: from a loaded study to graded vertebrae.

Stages (each a function of arrays and millimetres; no file access here):

1. geometry: locate each vertebra, fit the spine centreline, isolate each body, then refit the
   centreline through the body centres and take each body's local frame from it;
2. measure: height map and regional heights of each body (mask-based, CT-refined where a CT is
   given), trabecular attenuation;
3. reference: the expected healthy heights of each vertebra (neighbours by default);
4. grade: RHLV, Genant grade, type, confidence and QC flags.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade._parallel import default_threads, thread_map
from vertgrade.alignment import Alignment, AlignmentConfig, alignment_from_endplates
from vertgrade.config import GradingConfig
from vertgrade.errors import InputError
from vertgrade.geometry.frames import LocalFrame, fit_spine_curve
from vertgrade.geometry.thirds import THIRDS
from vertgrade.geometry.vertebra import (
    BodyIsolation,
    VertebraVoxels,
    isolate_body,
    locate_vertebrae,
    off_curve,
    spine_frames,
)
from vertgrade.grading import CentralLoss, grade_vertebra, rhlv, shape_evidence
from vertgrade.levels import anatomical_order, level_name, normative_shape, order_key
from vertgrade.morphometry import (
    BodyMeasurement,
    RegionHeights,
    calibrate_ct,
    endplate_axis,
    endplate_planes,
    measure_body,
    wall_heights,
)
from vertgrade.qc import (
    QCFlag,
    atypical_spine_shape,
    axes_deviating,
    border_contacts,
    has_fragments,
    heights_disagree,
    implausible_sizes,
    level_order,
    too_deep,
)
from vertgrade.reference.base import (
    MeasuredVertebra,
    Reference,
    ReferenceContext,
    ReferenceEstimator,
)
from vertgrade.reference.neighbours import NeighbourReference
from vertgrade.result import RegionValues, SpineResult, VertebraResult
from vertgrade.study import Study

__all__ = ["ProgressEvent", "grade_study", "measure_alignment"]

#: The centreline written into the result is sampled every this many mm, and reaches this far
#: beyond the first and last vertebra (for drawing; it does not enter any measurement).
CENTRELINE_STEP_MM = 2.0
CENTRELINE_MARGIN_MM = 20.0


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress: ``stage`` name, ``done`` of ``total`` items."""

    stage: str
    done: int
    total: int


def grade_study(
    study: Study,
    config: GradingConfig | None = None,
    *,
    reference: ReferenceEstimator | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    threads: int | None = None,
) -> SpineResult:
    """Grade every vertebra of a study.

    Parameters
    ----------
    study : Study
        From :func:`vertgrade.load_study`.
    config : GradingConfig, optional
        Every parameter (default: the defaults); recorded in the provenance.
    reference : ReferenceEstimator, optional
        Healthy-reference estimator (default: the neighbour reference with
        ``config.neighbours``). Called once, on the final measurement, with a
        :class:`~vertgrade.reference.base.ReferenceContext`. The frames do not depend on it:
        which vertebrae anchor the second-pass frames is decided by the neighbour screen.
    progress : callable, optional
        Called with a :class:`ProgressEvent` after each vertebra of each stage (in the calling
        thread).
    threads : int, optional
        Vertebrae isolated and measured at once (default: ``VERTGRADE_THREADS``, else the
        cores this process may use, at most 4). The result is the same for every value.

    Returns
    -------
    SpineResult
    """
    cfg = config or GradingConfig()
    screen = NeighbourReference(cfg.neighbours)
    estimator: ReferenceEstimator = reference if reference is not None else screen
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent(stage, done, total))

    labels = cast("NDArray[np.integer]", study.labels.array)
    affine = study.labels.affine
    objects = study.labels.label_boxes()  # scanned once: the loader's scan when it made one
    wanted = anatomical_order([i + 1 for i, sl in enumerate(objects) if sl is not None])
    vox = locate_vertebrae(
        labels,
        affine,
        wanted,
        objects=objects,
        margin_mm=cfg.label_margin_mm,
        fragment_fraction=cfg.fragment_fraction,
    )
    order = anatomical_order(list(vox))

    # --- geometry: two passes, whole-vertebra centres, then body centres -------------------
    smoothing = cfg.centreline_smoothing_mm
    voxel_ml = float(np.prod(study.labels.spacing)) / 1000.0
    small = {k for k in order if vox[k].n_voxels * voxel_ml < cfg.min_label_ml}
    flipped, pairs = level_order(
        [k for k in order if k not in small],
        {k: float(vox[k].centroid_mm[2]) for k in order if k not in small},
    )
    if flipped:
        raise InputError(
            study.labels.source,
            "the labels run foot to head (each level's centre lies above the one before it): "
            "the numbering is reversed or the image's orientation is wrong",
        )
    misordered = {k for pair in pairs for k in pair}
    # neither too small nor out-of-order labels, nor centres far off the spine's curve (a label
    # split between two places, a mislabelled blob), bend the centreline
    fit = fit0 = [k for k in order if k not in small and k not in misordered]
    off = set(
        off_curve(
            {k: vox[k].centroid_mm for k in fit},
            max_offset_mm=cfg.max_centre_offset_mm,
            smoothing_mm=smoothing,
        )
    )
    fit = [k for k in fit if k not in off]
    frames = spine_frames(
        {k: vox[k].centroid_mm for k in order}, fit_labels=fit or None, smoothing_mm=smoothing
    )
    given = study.bodies.array if study.bodies is not None else None

    def given_body(k: int) -> NDArray[np.bool_] | None:
        return None if given is None else given[vox[k].slices].astype(bool) & vox[k].mask

    if given is not None and study.bodies is not None:
        # a body mask has no posterior elements: no spinal canal in its axial projection
        with_canal = [
            k
            for k in order
            if (gb := given_body(k)) is not None
            and gb.any()
            and isolate_body(
                replace(vox[k], mask=gb), affine, frames[k], params=cfg.body
            ).footprint.canal_found
        ]
        if order and len(with_canal) > len(order) / 2:
            raise InputError(
                study.bodies.source,
                f"the bodies mask holds the spinal canal of {len(with_canal)} of {len(order)} "
                "vertebrae: a whole-vertebra mask (posterior elements included), not vertebral "
                "bodies; give a body mask, or leave --bodies out",
            )

    def isolate(k: int) -> BodyIsolation:
        b = isolate_body(vox[k], affine, frames[k], given_body=given_body(k), params=cfg.body)
        # a label too small for a vertebra is not measured (no body: QC label_too_small)
        return replace(b, body=np.zeros_like(b.body)) if k in small else b

    n_threads = default_threads() if threads is None else max(1, threads)
    iso = dict(
        zip(
            order,
            thread_map(
                isolate, order, n_threads, on_done=lambda i: tick("geometry", i + 1, 2 * len(order))
            ),
            strict=True,
        )
    )
    off |= set(
        off_curve(
            {k: iso[k].centroid_mm for k in fit0 if iso[k].body.any()},
            max_offset_mm=cfg.max_centre_offset_mm,
            smoothing_mm=smoothing,
        )
    )
    fit = [k for k in fit0 if k not in off]
    frames = spine_frames(
        {k: iso[k].centroid_mm for k in order}, fit_labels=fit or None, smoothing_mm=smoothing
    )
    iso = dict(
        zip(
            order,
            thread_map(
                isolate,
                order,
                n_threads,
                on_done=lambda i: tick("geometry", len(order) + i + 1, 2 * len(order)),
            ),
            strict=True,
        )
    )
    timings["geometry"] = time.perf_counter() - t0

    # --- measurement ---------------------------------------------------------------------------
    t1 = time.perf_counter()
    # each body's measurement in each frame it is measured in: a later pass re-measures only
    # the bodies whose frame changed
    measured_in: dict[int, tuple[LocalFrame, BodyMeasurement]] = {}
    meas = _measure_all(order, vox, iso, frames, study, cfg, tick, measured_in, n_threads)
    hu = _hu_all(order, vox, iso, study, cfg, n_threads)
    timings["measure"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    off_bone = _labels_off_bone(order, vox, study, cfg)
    extra = {k: _pre_flags(k, small, misordered, off_bone, off) for k in order}
    flags, primary, measured, cut_faces = _assess(order, vox, iso, meas, frames, study, cfg, extra)
    # The frames so far follow a curve through body centres. Each sound body's own axis is the
    # bisector of its endplates' normals; a fractured body's endplates are deformed, so its axis
    # is interpolated between the sound bodies above and below (or taken from the curve refitted
    # without it). Which bodies are sound is the neighbour screen's call. Measure again in these
    # frames.
    remeasure = 0.0
    if cfg.refine_frames:
        deformed = _deformed(measured, screen.estimate(measured), cfg.neighbours.healthy_loss)
        frames = _refined_frames(order, iso, meas, frames, deformed, cfg)
        t3 = time.perf_counter()
        meas = _measure_all(order, vox, iso, frames, study, cfg, tick, measured_in, n_threads)
        # the end vertebrae: the centreline extrapolates there, so their own endplates decide
        for _ in range(cfg.end_axis_iterations):
            frames, moved = _end_frames(order, meas, frames, cfg)
            if not moved:
                break
            meas = _measure_all(order, vox, iso, frames, study, cfg, tick, measured_in, n_threads)
        remeasure = time.perf_counter() - t3
        timings["measure"] += remeasure
        flags, primary, measured, cut_faces = _assess(
            order, vox, iso, meas, frames, study, cfg, extra
        )
        _flag_axes(order, meas, frames, flags, cfg)

    # --- reference and grading -------------------------------------------------------------------
    bodies = np.zeros(labels.shape, np.uint8 if max(order, default=0) < 256 else np.uint16)
    for k in order:
        sub = bodies[vox[k].slices]
        sub[iso[k].body] = k
    screened = screen.estimate(measured)
    if estimator is screen:
        refs = screened
    else:
        refs = estimator.estimate(measured, ReferenceContext(study, bodies, screened))
    method = getattr(estimator, "name", "custom")
    results = [
        _vertebra_result(
            mv,
            refs.get(mv.label),
            meas.get(mv.label),
            primary[mv.label][1],
            flags[mv.label],
            hu.get(mv.label),
            iso[mv.label].centroid_mm,
            frames.get(mv.label),
            method,
            cfg,
            cut_faces.get(mv.label, ()),
        )
        for mv in measured
    ]
    # every labelled vertebra appears: those wholly outside the CT, as not gradable
    for k, centre in study.outside_ct.items():
        if k not in vox:
            results.append(_outside_result(k, centre, method))
    results.sort(key=lambda v: order_key(v.label))
    # the grading stage without the second-pass measurement, which counts as measurement
    timings["grade"] = time.perf_counter() - t2 - remeasure

    provenance = {
        "inputs": {
            role: {"path": str(path), "sha256": study.checksums.get(role)}
            for role, path in sorted(study.inputs.items())
        },
        "parameters": cfg.to_dict(),
        "reference_estimator": getattr(estimator, "name", type(estimator).__name__),
        "versions": _versions(),
    }
    centreline = np.zeros((0, 3))
    if len(order) >= 2:
        curve = fit_spine_curve(
            np.stack([frames[k].origin for k in order]), smoothing_mm=cfg.centreline_smoothing_mm
        )
        centreline = curve.point(
            np.arange(
                -CENTRELINE_MARGIN_MM, curve.length_mm + CENTRELINE_MARGIN_MM, CENTRELINE_STEP_MM
            )
        )
    result = SpineResult(
        subject=study.subject,
        centreline_mm=centreline,
        vertebrae=tuple(results),
        provenance=provenance,
        notes=study.notes,
        bodies=bodies,
        bodies_affine=affine,
        grid=study.grid,
        timings_s=timings,
    )
    t4 = time.perf_counter()
    result = replace(result, alignment=measure_alignment(result))
    timings["alignment"] = time.perf_counter() - t4
    return result


def _measure_all(
    order: list[int],
    vox: dict[int, VertebraVoxels],
    iso: dict[int, BodyIsolation],
    frames: dict[int, LocalFrame],
    study: Study,
    cfg: GradingConfig,
    tick: Callable[[str, int, int], None],
    measured_in: dict[int, tuple[LocalFrame, BodyMeasurement]],
    threads: int,
) -> dict[int, BodyMeasurement]:
    """Height maps of every isolated body, CT edges calibrated over the study.

    ``measured_in`` holds each body's last frame and its measurement there, before the study's
    calibration; a body whose frame has not changed since is not measured again (the same
    inputs give the same numbers), and the others' entries are replaced.
    """
    affine = study.labels.affine
    spacing = study.labels.spacing
    ct = study.ct.array if study.ct is not None else None
    ct_margin = np.ceil(cfg.ct_margin_mm / spacing).astype(int)
    present = [k for k in order if iso[k].body.any()]

    def one(k: int) -> BodyMeasurement:
        last = measured_in.get(k)
        if last is not None and _same_frame(last[0], frames[k]):
            return last[1]
        v, body = vox[k], iso[k].body
        ct_crop, ct_off = None, None
        if ct is not None:
            lo = np.maximum(np.array(v.offset) - ct_margin, 0)
            hi = np.minimum(np.array(v.offset) + np.array(body.shape) + ct_margin, ct.shape)
            ct_crop = ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            ct_off = (int(lo[0]), int(lo[1]), int(lo[2]))
        return measure_body(
            body, v.offset, affine, frames[k], ct=ct_crop, ct_offset=ct_off, params=cfg.morphometry
        )

    done = thread_map(one, present, threads, on_done=lambda i: tick("measure", i + 1, len(order)))
    meas = dict(zip(present, done, strict=True))
    measured_in.update({k: (frames[k], m) for k, m in meas.items()})
    # the CT edge detector's bias, calibrated over all endplates of the study
    offs = [m.ct_edge_offset_mm for m in meas.values() if m.ct_edge_offset_mm is not None]
    offs = [o for o in offs if all(np.isfinite(o))]
    if offs:
        top_off = float(np.median([o[0] for o in offs]))
        bottom_off = float(np.median([o[1] for o in offs]))
        meas = {k: calibrate_ct(m, top_off, bottom_off) for k, m in meas.items()}
    return meas


def _hu_all(
    order: list[int],
    vox: dict[int, VertebraVoxels],
    iso: dict[int, BodyIsolation],
    study: Study,
    cfg: GradingConfig,
    threads: int,
) -> dict[int, float | None]:
    if study.ct is None:
        return dict.fromkeys(order)
    ct = study.ct.array

    def one(k: int) -> float | None:
        if not iso[k].body.any():
            return None
        return _trabecular_hu(iso[k].body, ct[vox[k].slices], study.labels.spacing, cfg)

    return dict(zip(order, thread_map(one, order, threads), strict=True))


def _same_frame(a: LocalFrame, b: LocalFrame) -> bool:
    pairs = ((a.origin, b.origin), (a.si, b.si), (a.ap, b.ap), (a.lr, b.lr))
    return all(np.array_equal(x, y) for x, y in pairs)


def _pre_flags(
    k: int, small: set[int], misordered: set[int], off_bone: bool, off_curve: set[int]
) -> list[str]:
    """Flags decided before measurement: from the labels alone and the labels against the CT."""
    out = []
    if k in off_curve:
        out.append(QCFlag.CENTRE_OFF_CURVE.value)
    if k in small:
        out.append(QCFlag.LABEL_TOO_SMALL.value)
    if k in misordered:
        out.append(QCFlag.LEVEL_ORDER.value)
    if off_bone:
        out.append(QCFlag.LABELS_OFF_BONE.value)
    return out


def _labels_off_bone(
    order: list[int], vox: dict[int, VertebraVoxels], study: Study, cfg: GradingConfig
) -> bool:
    """True where the labels do not lie on bone in the CT.

    A vertebra's label ends at its cortex: the voxel layer just inside its surface is bright
    bone, the layer just outside disc, muscle or fat. Each label's contrast is the median HU of
    its inner surface layer less that of its outer one; the study's is the median over
    vertebrae, compared with ``cfg.min_label_contrast_hu``."""
    if study.ct is None:
        return False
    ct = study.ct.array
    contrasts = []
    for k in order:
        v = vox[k]
        if v.n_voxels < 50:
            continue
        region = np.asarray(ct[v.slices], dtype=np.float32)
        inner = v.mask & ~ndimage.binary_erosion(v.mask)
        outer = ndimage.binary_dilation(v.mask) & ~v.mask
        if inner.sum() < 20 or outer.sum() < 20:
            continue
        contrasts.append(float(np.median(region[inner])) - float(np.median(region[outer])))
    return bool(contrasts) and float(np.median(contrasts)) < cfg.min_label_contrast_hu


def _assess(
    order: list[int],
    vox: dict[int, VertebraVoxels],
    iso: dict[int, BodyIsolation],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    study: Study,
    cfg: GradingConfig,
    extra: dict[int, list[str]] | None = None,
) -> tuple[
    dict[int, list[str]],
    dict[int, tuple[RegionHeights | None, str | None]],
    list[MeasuredVertebra],
    dict[int, tuple[str, ...]],
]:
    """QC flags, the heights to grade on (CT or mask), and what the reference may use; the faces
    of the image that cut each body (``cut_faces``) are added to its flags' list as the last
    item of the returned tuple."""
    shape = study.labels.shape
    given = study.bodies is not None
    flags: dict[int, list[str]] = {k: list((extra or {}).get(k, ())) for k in order}
    cut_faces: dict[int, tuple[str, ...]] = {}
    primary: dict[int, tuple[RegionHeights | None, str | None]] = {}
    for k in order:
        f = flags[k]
        v = vox[k]
        if has_fragments(
            v.n_fragments, v.dropped_fraction, max_dropped_fraction=cfg.max_dropped_fraction
        ):
            f.append(QCFlag.LABEL_FRAGMENTS.value)
        if v.dropped_fraction >= cfg.max_split_fraction or v.split_gap_mm > cfg.max_split_gap_mm:
            f.append(QCFlag.LABEL_SPLIT.value)
        if k not in meas:
            f.append(QCFlag.NO_BODY.value)
            primary[k] = (None, None)
            continue
        contacts = border_contacts(iso[k].body, v.offset, shape, study.labels.spacing.tolist())
        cut = [face for face, share in contacts.items() if share >= cfg.cut_min_contact]
        if cut:
            f.append(QCFlag.CUT_BY_FOV.value)
            cut_faces[k] = tuple(cut)
        elif contacts:
            f.append(QCFlag.TOUCHES_FOV_EDGE.value)
        elif v.touches_edge:
            f.append(QCFlag.POSTERIOR_ELEMENTS_CUT.value)
        fpi = iso[k].footprint
        if (
            not given
            and not fpi.canal_found
            and fpi.kept_fraction < cfg.body.canal_not_found_kept_fraction
        ):
            # posterior elements were cut away by shape alone (a label of the body alone, with
            # nothing to cut, is not flagged)
            f.append(QCFlag.CANAL_NOT_FOUND.value)
        m = meas[k]
        # a 3 mm slice along a 3 mm bound is not beyond it, whatever the last bits of the frame
        if m.si_voxel_mm > cfg.max_axis_voxel_mm + 1e-6:
            f.append(QCFlag.TOO_COARSE.value)
        elif m.si_voxel_mm > cfg.coarse_axis_voxel_mm + 1e-6:
            f.append(QCFlag.COARSE_SLICES.value)
        chosen, source = m.heights_mask, "mask"
        if m.heights_ct is not None:
            enough = m.ct_valid_fraction >= cfg.min_ct_valid_fraction
            if cfg.prefer_ct and enough and _complete(m.heights_ct):
                chosen, source = m.heights_ct, "ct"
            elif not enough:
                f.append(QCFlag.CT_EDGES_SPARSE.value)
            if heights_disagree(
                m.heights_mask.as_dict(),
                m.heights_ct.as_dict(),
                mm=cfg.disagreement_mm,
                fraction=cfg.disagreement_fraction,
                regions=THIRDS,
            ):
                f.append(QCFlag.MASK_CT_DISAGREE.value)
        primary[k] = (chosen if _complete(chosen) else None, source)
    ratios = {
        k: float(h.posterior) / normative_shape(k).posterior_mm  # type: ignore[arg-type]
        for k in order
        if (h := primary[k][0]) is not None
        and QCFlag.CUT_BY_FOV not in flags[k]
        and QCFlag.LEVEL_ORDER not in flags[k]
    }
    for k in sorted(
        implausible_sizes(
            ratios, relative_bounds=cfg.implausible_relative, scale_bounds=cfg.implausible_scale
        ),
        key=order.index,
    ):
        flags[k].append(QCFlag.IMPLAUSIBLE_SIZE.value)
    depths = {k: meas[k].depth_mm for k in order if k in meas and primary[k][0] is not None}
    for k in too_deep([k for k in order if k in depths], depths, max_ratio=cfg.max_depth_ratio):
        flags[k].append(QCFlag.BODY_TOO_DEEP.value)
    blocking = (
        QCFlag.LABEL_SPLIT,
        QCFlag.CUT_BY_FOV,
        QCFlag.IMPLAUSIBLE_SIZE,
        QCFlag.BODY_TOO_DEEP,
        QCFlag.LEVEL_ORDER,
        QCFlag.TOO_COARSE,
    )
    shapes = {
        k: max(e.wedge, e.biconcave)
        for k in order
        if not any(f in flags[k] for f in blocking)
        and (e := shape_evidence(k, primary[k][0])) is not None
    }
    if atypical_spine_shape(shapes, threshold=cfg.atypical_spine_shape):
        for k in order:
            flags[k].append(QCFlag.ATYPICAL_SPINE_SHAPE.value)

    measured = []
    for k in order:
        h, _ = primary[k]
        usable = h is not None and not any(f in flags[k] for f in blocking)
        mk = meas.get(k)
        hmap_mm = None
        if mk is not None:
            src = primary[k][1]
            hmap_mm = mk.height_map_ct_mm if src == "ct" else mk.height_map.heights_mm
        measured.append(
            MeasuredVertebra(
                k,
                h,
                mk.height_map if mk else None,
                hmap_mm,
                mk.regions if mk else None,
                usable,
                frames.get(k),
            )
        )
    return flags, primary, measured, cut_faces


def _refined_frames(
    order: list[int],
    iso: dict[int, BodyIsolation],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    deformed: set[int],
    cfg: GradingConfig,
) -> dict[int, LocalFrame]:
    """Second-pass frames.

    A sound body's ``si`` is its own endplate axis (:func:`endplate_axis`). A deformed body's
    endplates say little about its axis, and its centre is displaced: it takes the tangent of
    the centreline refitted through the other bodies, where that curve interpolates (a deformed
    body at either end of the spine stays in the fit: beyond the last sound body the curve
    would extrapolate).
    """
    centres = {k: iso[k].centroid_mm for k in order}
    sound_idx = [i for i, k in enumerate(order) if k not in deformed and k in meas]
    interior = {
        k
        for i, k in enumerate(order)
        if k in deformed and sound_idx and sound_idx[0] < i < sound_idx[-1]
    }
    fit = [k for k in order if k not in interior]
    if interior and len(fit) >= 2:
        curve_frames = spine_frames(
            centres, fit_labels=fit, smoothing_mm=cfg.centreline_smoothing_mm
        )
    else:
        curve_frames = frames
    out = {}
    for k in order:
        si = curve_frames[k].si
        if k not in deformed and k in meas:
            ax = endplate_axis(meas[k], frames[k])
            # a bisector far from the spine's direction is a measurement problem, not anatomy
            if ax is not None and float(ax @ si) > np.cos(np.radians(cfg.max_axis_deviation_deg)):
                si = ax
        out[k] = LocalFrame.from_axes(curve_frames[k].origin, si=si)
    return out


def _ends(order: list[int]) -> list[int]:
    return [order[0], order[-1]] if len(order) >= 2 else []


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(float(a @ b)), 0.0, 1.0))))


def _end_frames(
    order: list[int],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    cfg: GradingConfig,
) -> tuple[dict[int, LocalFrame], bool]:
    """The end vertebrae's frames turned onto their own endplate axes (within
    ``cfg.max_end_axis_deviation_deg`` of the current axis); whether any moved by a degree."""
    out = dict(frames)
    moved = False
    for k in _ends(order):
        if k not in meas:
            continue
        ax = endplate_axis(meas[k], frames[k])
        if ax is None:
            continue
        dev = _angle_deg(ax, frames[k].si)
        if 1.0 < dev <= cfg.max_end_axis_deviation_deg:
            out[k] = LocalFrame.from_axes(frames[k].origin, si=ax)
            moved = True
    return out, moved


def _flag_axes(
    order: list[int],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    flags: dict[int, list[str]],
    cfg: GradingConfig,
) -> None:
    """QC flags on the measurement axes: an end vertebra left on the centreline's tangent, and a
    vertebra whose axis departs from its neighbours'."""
    for k in _ends(order):
        if k not in meas:
            continue
        ax = endplate_axis(meas[k], frames[k])
        if ax is None or _angle_deg(ax, frames[k].si) > max(1.5, cfg.max_end_axis_deviation_deg):
            flags[k].append(QCFlag.AXIS_FROM_CENTRELINE.value)
    present = [k for k in order if k in meas]
    axes = {k: frames[k].si for k in present}
    for k in axes_deviating(present, axes, max_deg=cfg.max_neighbour_axis_deg):
        flags[k].append(QCFlag.AXIS_DEVIATES.value)


def _deformed(
    measured: list[MeasuredVertebra], refs: dict[int, Reference], healthy_loss: float
) -> set[int]:
    """Vertebrae that cannot anchor the centreline: unusable, or losing >= ``healthy_loss``."""
    out = set()
    for mv in measured:
        ref = refs.get(mv.label)
        if not mv.usable or mv.heights is None:
            out.add(mv.label)
            continue
        if ref is None or ref.heights is None:
            continue
        losses = [rhlv(mv.heights.get(r), ref.heights.get(r)) for r in THIRDS]
        if any(x is not None and x >= healthy_loss for x in losses):
            out.add(mv.label)
    return out


def _versions() -> dict[str, str]:
    """The versions that made a result (the modules' own ``__version__``, as their installed
    metadata gives it, without the cost of reading that metadata)."""
    import platform

    import nibabel
    import scipy

    from vertgrade._version import __version__

    return {
        "python": platform.python_version(),
        "vertgrade": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
    }


def _complete(h: RegionHeights | None) -> bool:
    return h is not None and all(h.get(r) is not None for r in ("body", *THIRDS))


def _trabecular_hu(
    body: NDArray[np.bool_],
    ct: NDArray[np.generic],
    spacing: NDArray[np.float64],
    cfg: GradingConfig,
) -> float | None:
    # the body's own box, padded by one background voxel, gives the same distances as the whole
    # crop (the nearest background voxel is never beyond the pad) at a fraction of the cost
    boxes = ndimage.find_objects(body.view(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    box = boxes[0]
    body, ct = body[box], ct[box]
    dist = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    erosion = cfg.hu_core_erosion_mm
    for depth in (erosion, cfg.hu_core_fallback_fraction * erosion):
        core = dist > depth
        if core.sum() >= cfg.hu_core_min_voxels:
            return float(np.median(ct[core]))
    return None


def _outside_result(label: int, centre: NDArray[np.float64], method: str) -> VertebraResult:
    """The result of a labelled vertebra that lies wholly outside the CT."""
    return VertebraResult(
        label=label,
        level=level_name(label),
        status="not_gradable",
        reason="the vertebra lies outside the CT's field of view (its label does not overlap it)",
        grade=None,
        type=None,
        confidence=None,
        rhlv=None,
        heights_mm=None,
        heights_source=None,
        heights_mask_mm=None,
        heights_ct_mm=None,
        reference_mm=None,
        reference_method=method,
        reference_sources=(),
        reference_uncertainty=None,
        ratios={"anterior_posterior": None, "middle_posterior": None},
        flags=(QCFlag.OUTSIDE_CT.value,),
        hu_trabecular=None,
        volume_ml=None,
        width_mm=None,
        depth_mm=None,
        centroid_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        frame=None,
    )


def _vertebra_result(
    mv: MeasuredVertebra,
    ref: Reference | None,
    m: BodyMeasurement | None,
    source: str | None,
    flags: list[str],
    hu: float | None,
    centroid: NDArray[np.float64],
    frame: LocalFrame | None,
    method: str,
    cfg: GradingConfig,
    cut_faces: tuple[str, ...] = (),
) -> VertebraResult:
    """Grade one vertebra (:func:`vertgrade.grading.grade_vertebra`) and gather its result."""
    h = mv.heights
    g = grade_vertebra(
        mv.label,
        h,
        ref,
        flags=tuple(flags),
        cut_faces=cut_faces,
        height_map=m.height_map if m is not None else None,
        measured_map_mm=mv.heights_map_mm,
        regions=mv.regions,
        config=cfg,
    )
    ratios: dict[str, float | None] = {"anterior_posterior": None, "middle_posterior": None}
    if h is not None and h.posterior:
        ratios = {
            "anterior_posterior": (h.anterior / h.posterior) if h.anterior else None,
            "middle_posterior": (h.middle / h.posterior) if h.middle else None,
        }
    planes = thirds = walls = None
    central: dict[str, Any] = {}
    if m is not None and mv.heights_map_mm is not None and mv.regions is not None:
        walls = wall_heights(
            mv.heights_map_mm,
            mv.regions,
            step_mm=m.height_map.step_mm,
            band_mm=cfg.wall_band_mm,
            central_radius_mm=cfg.central_radius_mm,
        )
    if m is not None and frame is not None:
        src = source if source in ("ct", "mask") else "mask"
        planes = endplate_planes(m, frame, source=src)
        thirds = _thirds_geometry(m, frame, src)
        if g.central is not None and ref is not None and ref.height_map_mm is not None:
            central = _central_geometry(g.central, m, mv, ref.height_map_mm, frame, src)
    return VertebraResult(
        label=mv.label,
        level=level_name(mv.label),
        status=g.status,
        reason=g.reason,
        grade=g.grade,
        type=g.fracture_type,
        confidence=g.confidence,
        rhlv=RegionValues.of(g.rhlv),
        heights_mm=RegionValues.of(h),
        heights_source=source if h is not None else None,  # type: ignore[arg-type]
        heights_mask_mm=RegionValues.of(m.heights_mask) if m else None,
        heights_ct_mm=RegionValues.of(m.heights_ct) if m else None,
        reference_mm=RegionValues.of(ref.heights) if ref is not None else None,
        reference_method=method,
        reference_sources=ref.sources if ref else (),
        reference_uncertainty=ref.uncertainty if ref and ref.heights is not None else None,
        ratios=ratios,
        flags=g.flags,
        hu_trabecular=hu,
        volume_ml=m.volume_ml if m else None,
        width_mm=m.width_mm if m else None,
        depth_mm=m.depth_mm if m else None,
        centroid_mm=tuple(float(x) for x in centroid),  # type: ignore[arg-type]
        frame=frame,
        loss_map=g.loss_map,
        endplates=planes,
        thirds=thirds,
        threshold_grade=g.grade,
        reference_parts=dict(ref.parts) if ref is not None else {},
        walls_mm=walls,
        shape=g.shape,
        grade_basis=g.basis,
        **central,
    )


def _central_geometry(
    c: CentralLoss,
    m: BodyMeasurement,
    mv: MeasuredVertebra,
    reference_map_mm: NDArray[np.float64],
    frame: LocalFrame,
    source: str,
) -> dict[str, Any]:
    """The central loss's heights (mean measured and reference height over its columns) and its
    point (world mm, mid-way between the endplates), as :class:`VertebraResult` fields."""
    measured = mv.heights_map_mm if mv.heights_map_mm is not None else m.height_map.heights_mm
    top, bottom = m.endplates(source)
    a, b = c.index
    si = 0.5 * float(top[a, b] + bottom[a, b])
    point = frame.to_world(np.array([[si, m.height_map.ap_mm[a], m.height_map.lr_mm[b]]]))[0]
    return {
        "central_rhlv": c.loss,
        "central_height_mm": float(np.mean(measured[c.columns])),
        "central_reference_mm": float(np.mean(reference_map_mm[c.columns])),
        "central_point_mm": tuple(float(x) for x in point),
    }


def _thirds_geometry(
    m: BodyMeasurement, frame: LocalFrame, source: str
) -> dict[str, dict[str, list[float]]] | None:
    """World points of each third's mean superior and inferior endplate at its centre."""
    top, bottom = m.endplates(source)
    hm = m.height_map
    out = {}
    for r in THIRDS:
        mask = m.regions.mask(r) & np.isfinite(top) & np.isfinite(bottom)
        if not mask.any():
            return None
        a_idx, l_idx = np.nonzero(mask)
        ap, lr = float(hm.ap_mm[a_idx].mean()), float(hm.lr_mm[l_idx].mean())
        sup = frame.to_world(np.array([[float(np.mean(top[mask])), ap, lr]]))[0]
        inf = frame.to_world(np.array([[float(np.mean(bottom[mask])), ap, lr]]))[0]
        out[r] = {
            "superior_mm": [round(float(x), 2) for x in sup],
            "inferior_mm": [round(float(x), 2) for x in inf],
        }
    return out


def measure_alignment(result: SpineResult, config: AlignmentConfig | None = None) -> Alignment:
    """Measure the alignment of a graded study from its endplate planes.

    Parameters
    ----------
    result : SpineResult
        From :func:`grade_study` (which runs this as its last stage); each vertebra's
        ``endplates``, ``flags`` and ``centroid_mm`` are used.
    config : AlignmentConfig, optional

    Returns
    -------
    Alignment
    """
    cfg = config or AlignmentConfig()
    labels: list[int] = []
    sup: list[NDArray[np.float64] | None] = []
    inf: list[NDArray[np.float64] | None] = []
    cents: list[NDArray[np.float64]] = []
    excluded: dict[int, str] = {}
    for v in result.vertebrae:
        labels.append(v.label)
        cents.append(np.asarray(v.centroid_mm, dtype=float))
        flags = set(v.flags)
        if v.endplates is None:
            sup.append(None)
            inf.append(None)
            if QCFlag.NO_BODY in flags:
                excluded[v.label] = "no vertebral body could be isolated"
            else:
                excluded[v.label] = "its endplate planes could not be fitted"
            continue
        sup.append(np.asarray(v.endplates[0].normal, dtype=float))
        inf.append(np.asarray(v.endplates[1].normal, dtype=float))
        if QCFlag.CUT_BY_FOV in flags:
            excluded[v.label] = (
                "its body is cut by the edge of the field of view: the cut face would pass for "
                "an endplate"
            )
        elif QCFlag.IMPLAUSIBLE_SIZE in flags or QCFlag.BODY_TOO_DEEP in flags:
            excluded[v.label] = "its body size is implausible for its level (check the label)"
    return alignment_from_endplates(
        labels,
        superior=sup,
        inferior=inf,
        centroids_mm=cents,
        excluded=excluded,
        subject=result.subject,
        config=cfg,
    )
