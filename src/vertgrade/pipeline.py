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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.alignment import measure_alignment
from vertgrade.geometry.frames import LocalFrame, fit_spine_curve
from vertgrade.geometry.vertebra import (
    BodyIsolation,
    VertebraVoxels,
    find_objects,
    isolate_body,
    locate_vertebrae,
    spine_frames,
)
from vertgrade.grading import (
    GENANT_THRESHOLDS,
    fracture_type,
    genant_grade,
    grade_probability,
    rhlv,
)
from vertgrade.levels import (
    GRADABLE_LABELS,
    anatomical_order,
    label_id,
    level_name,
    normative_shape,
    order_key,
)
from vertgrade.morphometry import (
    BodyMeasurement,
    MorphometryParams,
    RegionHeights,
    calibrate_ct,
    endplate_axis,
    endplate_planes,
    measure_body,
)
from vertgrade.reference.base import MeasuredVertebra, Reference, ReferenceEstimator
from vertgrade.reference.neighbours import NeighbourReference
from vertgrade.regions import REGIONS
from vertgrade.result import LossMap, SpineResult, VertebraResult
from vertgrade.volume import Study

__all__ = ["GradingConfig", "ProgressEvent", "grade_study"]


@dataclass(frozen=True)
class GradingConfig:
    """All parameters of a grading run; recorded in every result's provenance.

    Attributes
    ----------
    morphometry : MorphometryParams
        Sampling steps, CT edge search, region definition.
    neighbours : NeighbourReference
        Parameters of the default, training-free reference.
    thresholds : (3,) float
        Lower RHLV bounds of Genant grades 1, 2, 3 (Genant 1993: 0.20, 0.25, 0.40).
    prefer_ct : bool
        Grade on CT-refined heights where a CT is given and its edges were found.
    hu_core_erosion_mm : float
        Trabecular core = body voxels at least this far from the body's surface (cortex and
        endplates are ~1 mm thick; 5 mm keeps clear of them and of partial volume).
    disagreement_mm, disagreement_fraction : float
        Mask and CT heights disagree when a regional height differs by more than both.
    measurement_uncertainty_mm : float
        Standard uncertainty of one regional height, for the confidence.
    refine_frames : bool
        Second pass: each sound body measured again perpendicular to its own endplates, each
        deformed one along the axis interpolated from its sound neighbours.
    """

    morphometry: MorphometryParams = field(default_factory=MorphometryParams)
    neighbours: NeighbourReference = field(default_factory=NeighbourReference)
    thresholds: tuple[float, float, float] = GENANT_THRESHOLDS
    prefer_ct: bool = True
    hu_core_erosion_mm: float = 5.0
    disagreement_mm: float = 2.0
    disagreement_fraction: float = 0.10
    measurement_uncertainty_mm: float = 0.5
    refine_frames: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress: ``stage`` name, ``done`` of ``total`` items."""

    stage: str
    done: int
    total: int


_FLAG_PENALTY = {
    "label_fragments": 0.8,
    "canal_not_found": 0.85,
    "mask_ct_disagree": 0.7,
    "implausible_size": 0.6,
    "ct_edges_sparse": 0.9,
    "posterior_elements_cut": 0.95,
}


def grade_study(
    study: Study,
    config: GradingConfig | None = None,
    *,
    reference: ReferenceEstimator | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> SpineResult:
    """Grade every vertebra of a study.

    Parameters
    ----------
    study : Study
        From :func:`vertgrade.load_study`.
    config : GradingConfig, optional
    reference : ReferenceEstimator, optional
        Healthy-reference estimator; default ``config.neighbours``.
    progress : callable, optional
        Called with a :class:`ProgressEvent` after each vertebra of each stage.

    Returns
    -------
    SpineResult
    """
    cfg = config or GradingConfig()
    estimator: ReferenceEstimator = reference if reference is not None else cfg.neighbours
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent(stage, done, total))

    labels = cast("NDArray[np.integer]", study.labels.array)
    affine = study.labels.affine
    objects = find_objects(labels)
    wanted = anatomical_order([i + 1 for i, sl in enumerate(objects) if sl is not None])
    vox = locate_vertebrae(labels, affine, wanted, objects=objects)
    order = anatomical_order(list(vox))

    # --- geometry: two passes, whole-vertebra centres, then body centres -------------------
    frames = spine_frames({k: vox[k].centroid_mm for k in order})
    given = study.bodies.array if study.bodies is not None else None

    def given_body(k: int) -> NDArray[np.bool_] | None:
        return None if given is None else given[vox[k].slices].astype(bool)

    iso = {}
    for i, k in enumerate(order):
        iso[k] = isolate_body(vox[k], affine, frames[k], given_body=given_body(k))
        tick("geometry", i + 1, 2 * len(order))
    frames = spine_frames({k: iso[k].centroid_mm for k in order})
    for i, k in enumerate(order):
        iso[k] = isolate_body(vox[k], affine, frames[k], given_body=given_body(k))
        tick("geometry", len(order) + i + 1, 2 * len(order))
    timings["geometry"] = time.perf_counter() - t0

    # --- measurement, reference ----------------------------------------------------------------
    t1 = time.perf_counter()
    meas = _measure_all(order, vox, iso, frames, study, cfg, tick)
    hu = _hu_all(order, vox, iso, study, cfg)
    timings["measure"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    flags, primary, measured = _assess(order, vox, iso, meas, frames, study, cfg)
    refs = estimator.estimate(measured)
    # The frames so far follow a curve through body centres. Each sound body's own axis is the
    # bisector of its endplates' normals; a fractured body's endplates are deformed, so its axis
    # is interpolated between the sound bodies above and below (or taken from the curve refitted
    # without it). Measure again in these frames.
    if cfg.refine_frames:
        deformed = _deformed(measured, refs, cfg.neighbours.healthy_loss)
        frames = _refined_frames(order, iso, meas, frames, deformed)
        t3 = time.perf_counter()
        meas = _measure_all(order, vox, iso, frames, study, cfg, tick)
        timings["measure"] += time.perf_counter() - t3
        flags, primary, measured = _assess(order, vox, iso, meas, frames, study, cfg)
        refs = estimator.estimate(measured)

    results = []
    for mv in measured:
        k = mv.label
        results.append(
            _grade_one(
                k,
                mv,
                refs.get(k),
                meas.get(k),
                primary[k][1],
                flags[k],
                hu.get(k),
                iso[k].centroid_mm,
                frames.get(k),
                getattr(estimator, "name", "custom"),
                cfg,
            )
        )
    timings["grade"] = time.perf_counter() - t2

    bodies = np.zeros(labels.shape, np.uint8 if max(order, default=0) < 256 else np.uint16)
    for k in order:
        sub = bodies[vox[k].slices]
        sub[iso[k].body] = k
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
        curve = fit_spine_curve(np.stack([frames[k].origin for k in order]))
        centreline = curve.point(np.arange(-20.0, curve.length_mm + 20.0, 2.0))
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
) -> dict[int, BodyMeasurement]:
    """Height maps of every isolated body, CT edges calibrated over the study."""
    affine = study.labels.affine
    spacing = study.labels.spacing
    ct = study.ct.array if study.ct is not None else None
    meas: dict[int, BodyMeasurement] = {}
    ct_margin = np.ceil(12.0 / spacing).astype(int)
    for i, k in enumerate(order):
        v, body = vox[k], iso[k].body
        if not body.any():
            continue
        ct_crop, ct_off = None, None
        if ct is not None:
            lo = np.maximum(np.array(v.offset) - ct_margin, 0)
            hi = np.minimum(np.array(v.offset) + np.array(body.shape) + ct_margin, ct.shape)
            ct_crop = ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            ct_off = (int(lo[0]), int(lo[1]), int(lo[2]))
        meas[k] = measure_body(
            body, v.offset, affine, frames[k], ct=ct_crop, ct_offset=ct_off, params=cfg.morphometry
        )
        tick("measure", i + 1, len(order))
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
) -> dict[int, float | None]:
    if study.ct is None:
        return dict.fromkeys(order)
    ct = study.ct.array
    return {
        k: _trabecular_hu(
            iso[k].body, ct[vox[k].slices], study.labels.spacing, cfg.hu_core_erosion_mm
        )
        if iso[k].body.any()
        else None
        for k in order
    }


def _assess(
    order: list[int],
    vox: dict[int, VertebraVoxels],
    iso: dict[int, BodyIsolation],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    study: Study,
    cfg: GradingConfig,
) -> tuple[
    dict[int, list[str]], dict[int, tuple[RegionHeights | None, str | None]], list[MeasuredVertebra]
]:
    """QC flags, the heights to grade on (CT or mask), and what the reference may use."""
    shape = study.labels.shape
    given = study.bodies is not None
    flags: dict[int, list[str]] = {k: [] for k in order}
    primary: dict[int, tuple[RegionHeights | None, str | None]] = {}
    for k in order:
        f = flags[k]
        v = vox[k]
        if v.n_fragments > 1 or v.dropped_fraction > 0.01:
            f.append("label_fragments")
        if k not in meas:
            f.append("no_body")
            primary[k] = (None, None)
            continue
        body_touch = _body_touches_edge(iso[k].body, v.offset, shape)
        if body_touch:
            f.append("cut_by_fov")
        elif v.touches_edge:
            f.append("posterior_elements_cut")
        fpi = iso[k].footprint
        if not given and not fpi.canal_found and fpi.kept_fraction < 0.9:
            # posterior elements were cut away by shape alone (a label of the body alone, with
            # nothing to cut, is not flagged)
            f.append("canal_not_found")
        m = meas[k]
        chosen, source = m.heights_mask, "mask"
        if m.heights_ct is not None:
            if cfg.prefer_ct and m.ct_valid_fraction >= 0.5 and _complete(m.heights_ct):
                chosen, source = m.heights_ct, "ct"
            elif m.ct_valid_fraction < 0.5:
                f.append("ct_edges_sparse")
            if _disagree(m.heights_mask, m.heights_ct, cfg):
                f.append("mask_ct_disagree")
        primary[k] = (chosen if _complete(chosen) else None, source)
    _flag_implausible(order, primary, flags)

    measured = []
    for k in order:
        h, _ = primary[k]
        usable = (
            h is not None and "cut_by_fov" not in flags[k] and "implausible_size" not in flags[k]
        )
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
    return flags, primary, measured


def _refined_frames(
    order: list[int],
    iso: dict[int, BodyIsolation],
    meas: dict[int, BodyMeasurement],
    frames: dict[int, LocalFrame],
    deformed: set[int],
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
    curve_frames = spine_frames(centres, fit_labels=fit) if interior and len(fit) >= 2 else frames
    out = {}
    for k in order:
        si = curve_frames[k].si
        if k not in deformed and k in meas:
            ax = endplate_axis(meas[k], frames[k])
            # a bisector far from the spine's direction is a measurement problem, not anatomy
            if ax is not None and float(ax @ si) > np.cos(np.radians(15.0)):
                si = ax
        out[k] = LocalFrame.from_axes(curve_frames[k].origin, si=si)
    return out


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
        losses = [rhlv(mv.heights.get(r), ref.heights.get(r)) for r in REGIONS]
        if any(x is not None and x >= healthy_loss for x in losses):
            out.add(mv.label)
    return out


def _versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("vertgrade", "numpy", "scipy", "nibabel", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _complete(h: RegionHeights | None) -> bool:
    return h is not None and all(h.get(r) is not None for r in ("body", *REGIONS))


def _disagree(a: RegionHeights, b: RegionHeights, cfg: GradingConfig) -> bool:
    for r in REGIONS:
        x, y = a.get(r), b.get(r)
        if x is None or y is None:
            continue
        d = abs(x - y)
        if d > cfg.disagreement_mm and d > cfg.disagreement_fraction * max(x, y):
            return True
    return False


def _body_touches_edge(
    body: NDArray[np.bool_], offset: tuple[int, int, int], shape: tuple[int, ...]
) -> bool:
    idx = np.argwhere(body)
    lo = idx.min(axis=0) + np.array(offset)
    hi = idx.max(axis=0) + np.array(offset)
    return bool(np.any(lo == 0) or np.any(hi == np.array(shape) - 1))


def _flag_implausible(
    order: list[int],
    primary: dict[int, tuple[RegionHeights | None, str | None]],
    flags: dict[int, list[str]],
) -> None:
    """Flag bodies whose size is far from their level's, scaled to this spine."""
    ratios = {}
    for k in order:
        h, _ = primary[k]
        if h is None or "cut_by_fov" in flags[k]:
            continue
        ratios[k] = float(h.posterior) / normative_shape(k).posterior_mm  # type: ignore[arg-type]
    if not ratios:
        return
    scale = float(np.median(list(ratios.values())))
    for k, r in ratios.items():
        rel = r / scale
        # the posterior wall survives most fractures; beyond these bounds it is a label problem
        if rel < 0.45 or rel > 1.6 or not (0.35 < scale < 2.5):
            flags[k].append("implausible_size")


def _trabecular_hu(
    body: NDArray[np.bool_],
    ct: NDArray[np.generic],
    spacing: NDArray[np.float64],
    erosion_mm: float,
) -> float | None:
    dist = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    for depth in (erosion_mm, 0.6 * erosion_mm):
        core = dist > depth
        if core.sum() >= 20:
            return float(np.median(ct[core]))
    return None


def _grade_one(
    k: int,
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
) -> VertebraResult:
    level = level_name(k)
    h = mv.heights
    reason: str | None = None
    if k not in GRADABLE_LABELS:
        flags.append("level_not_graded")
        reason = f"{level} is not graded (vertgrade grades T1-L6)"
    elif "no_body" in flags:
        reason = "no vertebral body could be isolated from the label"
    elif "cut_by_fov" in flags:
        reason = "the vertebral body is cut by the edge of the field of view"
    elif h is None:
        reason = "heights could not be measured"
    elif "implausible_size" in flags:
        reason = "body size implausible for its level: check the label"
    if ref is None or ref.heights is None:
        if reason is None:
            flags.append("no_reference")
            reason = "no usable reference: " + (ref.reason if ref and ref.reason else "none")
    elif len(ref.sources) and "one_sided_reference" not in flags and _one_sided(k, ref):
        flags.append("one_sided_reference")

    ratios: dict[str, float | None] = {"anterior_posterior": None, "middle_posterior": None}
    if h is not None and h.posterior:
        ratios = {
            "anterior_posterior": (h.anterior / h.posterior) if h.anterior else None,
            "middle_posterior": (h.middle / h.posterior) if h.middle else None,
        }
    ref_h = ref.heights if ref is not None else None
    losses: dict[str, float | None] | None = None
    loss_map = None
    if h is not None and ref_h is not None:
        losses = {r: rhlv(h.get(r), ref_h.get(r)) for r in ("body", *REGIONS)}
        if (
            m is not None
            and ref is not None
            and ref.height_map_mm is not None
            and mv.heights_map_mm is not None
        ):
            with np.errstate(invalid="ignore", divide="ignore"):
                lm = 1.0 - mv.heights_map_mm / ref.height_map_mm
            lm = np.where(m.height_map.footprint, np.clip(lm, -1.0, 1.0), np.nan)
            loss_map = LossMap(lm, m.height_map.ap_mm, m.height_map.lr_mm)

    planes = thirds = None
    if m is not None and frame is not None:
        src = source if source in ("ct", "mask") else "mask"
        planes = endplate_planes(m, frame, source=src)
        thirds = _thirds_geometry(m, frame, src)

    grade = ftype = conf = None
    status = "not_gradable"
    if reason is None and losses is not None:
        regional = {r: losses[r] for r in REGIONS}
        if ref is not None and h is not None and all(x is not None for x in regional.values()):
            l_ant, l_mid, l_post = (float(regional[r] or 0.0) for r in REGIONS)
            worst = max(l_ant, l_mid, l_post)
            grade = genant_grade(worst, cfg.thresholds)
            if grade >= 1:
                ftype = fracture_type(anterior=l_ant, middle=l_mid, posterior=l_post)
            hr = max(1e-6, min(float(h.get(r) or 0) for r in REGIONS))
            sigma = (1.0 - worst) * float(
                np.hypot(ref.uncertainty, cfg.measurement_uncertainty_mm / hr)
            )
            conf = grade_probability(worst, sigma, cfg.thresholds)
            for f in flags:
                conf *= _FLAG_PENALTY.get(f, 1.0)
            status = "graded"
        else:
            reason = "regional heights incomplete"
    return VertebraResult(
        label=k,
        level=level,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        grade=grade,
        fracture_type=ftype,
        confidence=conf,
        rhlv=losses,
        heights_mm=h,
        heights_source=source if h is not None else None,  # type: ignore[arg-type]
        heights_mask_mm=m.heights_mask if m else None,
        heights_ct_mm=m.heights_ct if m else None,
        reference_mm=ref_h,
        reference_method=method,
        reference_sources=ref.sources if ref else (),
        reference_uncertainty=ref.uncertainty if ref and ref.heights is not None else None,
        ratios=ratios,
        flags=tuple(dict.fromkeys(flags)),
        hu_trabecular=hu,
        volume_ml=m.volume_ml if m else None,
        width_mm=m.width_mm if m else None,
        depth_mm=m.depth_mm if m else None,
        centroid_mm=tuple(float(x) for x in centroid),  # type: ignore[arg-type]
        frame=frame,
        loss_map=loss_map,
        endplates=planes,
        thirds=thirds,
        threshold_grade=grade,
    )


def _thirds_geometry(
    m: BodyMeasurement, frame: LocalFrame, source: str
) -> dict[str, dict[str, list[float]]] | None:
    """World points of each third's mean superior and inferior endplate at its centre."""
    top, bottom = m.endplates(source)
    hm = m.height_map
    out = {}
    for r in REGIONS:
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


def _one_sided(k: int, ref: Reference) -> bool:
    """True when every level the reference came from lies on one side of ``k``."""
    try:
        pos = [order_key(label_id(s)) for s in ref.sources]
    except ValueError:  # a reference from a model, not from levels
        return False
    p = order_key(k)
    return all(x < p for x in pos) or all(x > p for x in pos)
