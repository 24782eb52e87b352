"""The learned healthy reference: each vertebra's pseudo-healthy synthesis (HealthiVert-GAN).

:class:`SynthesisReference` implements :class:`~vertgrade.reference.base.ReferenceEstimator`, so
``grade_study(study, reference=SynthesisReference(synthesiser))`` grades with it and everything
after the reference (RHLV, height-loss map, grade, type, confidence) is the same code as with the
neighbour reference.

What :meth:`SynthesisReference.estimate` does with the measured vertebrae and the context that
``grade_study`` hands it (it runs no pipeline of its own and keeps nothing between calls):

1. straighten the spine (:func:`vertgrade.synthesis.crops.straighten_spine`) along the
   vertebrae's own frames, with the isolated bodies of the context and, as the HGAM prior, the
   height-loss maps against the context's training-free (neighbour) references;
2. synthesise every vertebra that has a vertebra above and below
   (:class:`vertgrade.synthesis.infer.Synthesiser`): per pass, a pseudo-healthy height map over
   the straightened cross-section.

Then, per vertebra, the reference height map is the synthesised map sampled at the columns of the
vertebra's *own* footprint grid (``MeasuredVertebra.height_map``): each column's mid-point is
mapped to the world through the vertebra's frame and into the straightened spine through its
exact inverse transform. The reference heights are the regional robust means of that map over the
vertebra's own thirds (:func:`vertgrade.morphometry.region_heights`), exactly as the measured
heights are formed, so ``RHLV = (H_syn - H_ori) / H_syn`` compares like with like. The map is
the mean of the passes; each pass's heights go into ``Reference.parts`` (and from there into the
result, where the SVM grader reads its features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.errors import InputError
from vertgrade.geometry.thirds import THIRDS
from vertgrade.morphometry import region_heights
from vertgrade.reference.base import MeasuredVertebra, Reference, ReferenceContext
from vertgrade.synthesis.crops import SpineGeometry, StraightenedSpine, straighten_spine

if TYPE_CHECKING:
    from vertgrade.synthesis.infer import Synthesiser, VertebraSynthesis

__all__ = ["SynthesisReference", "describe"]

_SENTINEL = -1e3


class SynthesisReference:
    """Healthy reference from a trained synthesis model.

    Parameters
    ----------
    synthesiser : Synthesiser
        ``Synthesiser.from_file("model/generator.safetensors", device="cpu")``.
    base_uncertainty : float
        Relative standard uncertainty of a synthesised reference; half the relative difference
        between the passes is added in quadrature.
    fallback : bool
        Give vertebrae the synthesis cannot do (no vertebra above or below) the context's
        training-free (neighbour) reference; without it they have no reference and are reported
        as not gradable, with the reason.
    progress : callable, optional
        ``progress(done, total)`` after each generator call.
    """

    def __init__(
        self,
        synthesiser: Synthesiser,
        *,
        base_uncertainty: float = 0.035,
        fallback: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.synthesiser = synthesiser
        self.base_uncertainty = float(base_uncertainty)
        self.fallback = bool(fallback)
        self.progress = progress

    @property
    def name(self) -> str:
        """``synthesis-<config>-<model sha256 prefix>``."""
        return self.synthesiser.name

    def straighten(
        self, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext
    ) -> StraightenedSpine:
        """The study straightened as the model's training samples were (the model file records
        their spacing)."""
        study = context.study
        if study.ct is None:
            raise InputError(
                study.inputs.get("labels"),
                "the synthesis reference needs a CT; grade labels alone with the neighbour "
                "reference",
            )
        cfg = self.synthesiser.config
        half = max(cfg.image_width_mm, 2 * cfg.slice_half_mm) / 2.0 + 2 * cfg.spacing_mm
        step = float(self.synthesiser.model.training.get("samples_step_mm", cfg.spacing_mm))
        return straighten_spine(
            study,
            SpineGeometry.from_measurement(vertebrae, context),
            step_mm=step,
            half_width_mm=half,
            window_hu=cfg.window_hu,
        )

    def estimate(
        self, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext | None = None
    ) -> dict[int, Reference]:
        """Reference per label (see the module docstring).

        Raises
        ------
        ValueError
            Without a context (call it through :func:`vertgrade.grade_study`).
        InputError
            A study without a CT.
        """
        if context is None:
            raise ValueError("the synthesis reference needs the study's context (grade_study)")
        spine = self.straighten(vertebrae, context)
        syntheses = self.synthesiser.synthesise(spine, progress=self.progress)
        out: dict[int, Reference] = {}
        for mv in vertebrae:
            maps = _maps(mv, spine, syntheses)
            if isinstance(maps, str):
                fb = context.neighbour_references.get(mv.label) if self.fallback else None
                if fb is not None and fb.heights is not None:
                    out[mv.label] = Reference(
                        fb.heights,
                        fb.height_map_mm,
                        (*fb.sources, "neighbours"),
                        fb.uncertainty,
                        None,
                    )
                else:
                    out[mv.label] = Reference(None, None, (), float("nan"), maps)
                continue
            assert mv.regions is not None
            combined = _nanmean(list(maps.values()))
            heights = region_heights(combined, mv.regions)
            if any(heights.get(k) is None for k in ("body", *THIRDS)):
                out[mv.label] = Reference(
                    None, None, (), float("nan"), "synthesised body does not cover the footprint"
                )
                continue
            parts = {p: region_heights(m, mv.regions) for p, m in maps.items()}
            per_pass = [h.body for h in parts.values()]
            spread = 0.0
            if len(per_pass) > 1 and all(p is not None for p in per_pass):
                vals = [float(p) for p in per_pass if p is not None]
                spread = (max(vals) - min(vals)) / max(float(np.mean(vals)), 1e-6)
            unc = float(np.hypot(self.base_uncertainty, 0.5 * spread))
            out[mv.label] = Reference(heights, combined, (self.name,), unc, None, parts)
        return out


def _maps(
    mv: MeasuredVertebra, spine: StraightenedSpine, syntheses: dict[int, VertebraSynthesis]
) -> dict[str, NDArray[np.float64]] | str:
    """Each pass's synthesised height map on ``mv``'s footprint grid, or why there is none."""
    synth = syntheses.get(mv.label)
    if synth is None:
        if mv.label in spine.vertebrae:
            return "the synthesis needs a vertebra above and below"
        return "vertebra not in the straightened spine"
    if mv.height_map is None or mv.regions is None:
        return "not measured"
    frame = mv.frame
    if frame is None:
        return "no frame"
    hm = mv.height_map
    ap, lr = np.meshgrid(hm.ap_mm, hm.lr_mm, indexing="ij")
    mid = 0.5 * (hm.top_mm + hm.bottom_mm)
    si = np.where(np.isfinite(mid), mid, 0.0)
    world = frame.to_world(np.stack([si.ravel(), ap.ravel(), lr.ravel()], axis=1))
    ext = spine.vertebrae[mv.label]
    r0 = int(np.clip(np.floor((ext.t_top_mm - 10 - spine.t_mm[0]) / spine.step_mm), 0, None))
    r1 = int(
        np.clip(
            np.ceil((ext.t_bottom_mm + 10 - spine.t_mm[0]) / spine.step_mm) + 1,
            0,
            spine.t_mm.size,
        )
    )
    loc = spine.from_world(world, rows=slice(r0, r1))
    ia = (loc[:, 1] - spine.ap_mm[0]) / spine.step_mm
    il = (loc[:, 2] - spine.lr_mm[0]) / spine.step_mm
    coords = np.stack([np.where(np.isfinite(ia), ia, -10), np.where(np.isfinite(il), il, -10)])
    out = {}
    for name in synth.passes:
        src = np.nan_to_num(synth.heights_mm(name), nan=_SENTINEL)
        vals = ndimage.map_coordinates(src, coords, order=1, mode="constant", cval=_SENTINEL)
        m = np.where(vals > 0.5, vals, np.nan).reshape(hm.footprint.shape)
        out[name] = _fill_footprint(m, hm.footprint)
    return out


def _fill_footprint(
    values: NDArray[np.float64], footprint: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Values inside the footprint, gaps filled from the nearest valid column; NaN outside."""
    valid = np.isfinite(values)
    if not valid.any():
        return np.full(values.shape, np.nan)
    _, (ia, il) = ndimage.distance_transform_edt(~valid, return_indices=True)
    filled = values[ia, il]
    return np.where(footprint, filled, np.nan)


def _nanmean(maps: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    stack = np.stack(maps)
    valid = np.isfinite(stack)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(valid, stack, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def describe(reference: SynthesisReference) -> dict[str, Any]:
    """Provenance of a synthesis reference: model name, checksum, configuration, the subjects
    it was trained on and the device. No timings: they differ run to run, and the files that
    carry this provenance are byte-identical when rerun (timings are in
    ``Synthesiser.timings_s``)."""
    mf = reference.synthesiser.model
    return {
        "model": mf.name,
        "path": str(mf.path),
        "sha256": mf.sha256,
        "config": mf.config.name,
        "vertgrade_version": mf.vertgrade_version,
        "trained_subjects": list(mf.trained_subjects),
        "device": str(reference.synthesiser.device),
    }
