"""The learned healthy reference: each vertebra's pseudo-healthy synthesis (HealthiVert-GAN).

:class:`SynthesisReference` implements :class:`~vertgrade.reference.base.ReferenceEstimator`, so
``grade_study(study, reference=SynthesisReference(synthesiser, study))`` grades with it and
everything after the reference (RHLV, height-loss map, grade, type, confidence) is the same code
as with the neighbour reference.

What it does, once per study (cached; ``grade_study`` asks twice):

1. grade the study with the core pipeline and the neighbour reference, for the vertebrae's
   frames, isolated bodies and the height-loss maps that feed the HGAM prior;
2. straighten the spine (:func:`vertgrade.synthesis.crops.straighten_spine`) and synthesise every
   vertebra that has a vertebra above and below (:class:`vertgrade.synthesis.infer.Synthesiser`):
   per pass, a pseudo-healthy height map over the straightened cross-section.

Then, per vertebra, the reference height map is the synthesised map sampled at the columns of the
vertebra's *own* footprint grid (``MeasuredVertebra.height_map``): each column's mid-point is
mapped to the world through the vertebra's frame and into the straightened spine through its
exact inverse transform. The reference heights are the regional robust means of that map over the
vertebra's own regions (:func:`vertgrade.morphometry.region_heights`), exactly as the measured
heights are formed, so ``RHLV = (H_syn - H_ori) / H_syn`` compares like with like. The map is
the mean of the passes; :meth:`SynthesisReference.pass_references` gives each pass apart (the
grader's features).

The frame used for a vertebra is ``MeasuredVertebra.frame``, the one ``grade_study`` measured it
in; an estimator called by other code with vertebrae that carry no frame falls back to the core
run's final frame of that vertebra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.errors import InputError
from vertgrade.geometry.frames import LocalFrame
from vertgrade.morphometry import RegionHeights, region_heights
from vertgrade.reference.base import MeasuredVertebra, Reference, ReferenceEstimator
from vertgrade.regions import REGIONS
from vertgrade.volume import Study

if TYPE_CHECKING:
    from vertgrade.pipeline import GradingConfig
    from vertgrade.result import SpineResult
    from vertgrade.synthesis.crops import StraightenedSpine
    from vertgrade.synthesis.infer import Synthesiser, VertebraSynthesis

__all__ = ["SynthesisReference"]

_SENTINEL = -1e3


class SynthesisReference:
    """Healthy reference from a trained synthesis model.

    Parameters
    ----------
    synthesiser : Synthesiser
        ``Synthesiser.from_file("model/generator.safetensors", device="cpu")``.
    study : Study
        The study being graded (with its CT).
    config : GradingConfig, optional
        For the core run that gives frames and bodies (default: the defaults).
    base_uncertainty : float
        Relative standard uncertainty of a synthesised reference; half the relative difference
        between the passes is added in quadrature.
    fallback : ReferenceEstimator, optional
        Used for vertebrae the synthesis cannot do (no vertebra above or below); without it they
        have no reference and are reported as not gradable, with the reason.
    progress : callable, optional
        ``progress(done, total)`` after each generator call.
    """

    def __init__(
        self,
        synthesiser: Synthesiser,
        study: Study,
        *,
        config: GradingConfig | None = None,
        base_uncertainty: float = 0.035,
        fallback: ReferenceEstimator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.synthesiser = synthesiser
        self.study = study
        self.config = config
        self.base_uncertainty = float(base_uncertainty)
        self.fallback = fallback
        self.progress = progress
        self._core: SpineResult | None = None
        self._spine: StraightenedSpine | None = None
        self._synth: dict[int, VertebraSynthesis] | None = None
        self._last: list[MeasuredVertebra] = []

    @property
    def name(self) -> str:
        """``synthesis-<config>-<model sha256 prefix>``."""
        return self.synthesiser.name

    # --- the per-study work, done once -------------------------------------------------------
    def prepare(self) -> None:
        """Run the core grading, straighten and synthesise (idempotent)."""
        if self._synth is not None:
            return
        from vertgrade.pipeline import grade_study
        from vertgrade.synthesis.crops import straighten_spine

        if self.study.ct is None:
            raise InputError(
                self.study.inputs.get("labels"),
                "the synthesis reference needs a CT; grade labels alone with the neighbour "
                "reference",
            )
        cfg = self.synthesiser.config
        self._core = grade_study(self.study, self.config)
        half = max(cfg.image_width_mm, 2 * cfg.slice_half_mm) / 2.0 + 2 * cfg.spacing_mm
        # straightened as the training samples were (the model file records their spacing)
        step = float(self.synthesiser.model.training.get("samples_step_mm", cfg.spacing_mm))
        self._spine = straighten_spine(
            self.study,
            self._core,
            step_mm=step,
            half_width_mm=half,
            window_hu=cfg.window_hu,
        )
        self._synth = self.synthesiser.synthesise(self._spine, progress=self.progress)

    @property
    def core(self) -> SpineResult:
        """The core run (neighbour reference) behind the frames and bodies."""
        self.prepare()
        assert self._core is not None
        return self._core

    @property
    def spine(self) -> StraightenedSpine:
        self.prepare()
        assert self._spine is not None
        return self._spine

    @property
    def syntheses(self) -> dict[int, VertebraSynthesis]:
        """label -> its synthesis (vertebrae with a vertebra above and below)."""
        self.prepare()
        assert self._synth is not None
        return self._synth

    # --- the estimator --------------------------------------------------------------------
    def estimate(self, vertebrae: Sequence[MeasuredVertebra]) -> dict[int, Reference]:
        """Reference per label (see the module docstring)."""
        self.prepare()
        self._last = list(vertebrae)
        out: dict[int, Reference] = {}
        fallback_refs: dict[int, Reference] = {}
        if self.fallback is not None:
            fallback_refs = self.fallback.estimate(vertebrae)
        for mv in vertebrae:
            maps = self._maps(mv)
            if isinstance(maps, str):
                fb = fallback_refs.get(mv.label)
                if fb is not None and fb.heights is not None:
                    fb_name = getattr(self.fallback, "name", "fallback")
                    out[mv.label] = Reference(
                        fb.heights,
                        fb.height_map_mm,
                        (*fb.sources, fb_name),
                        fb.uncertainty,
                        None,
                    )
                else:
                    out[mv.label] = Reference(None, None, (), float("nan"), maps)
                continue
            assert mv.regions is not None
            combined = _nanmean(list(maps.values()))
            heights = region_heights(combined, mv.regions)
            if any(heights.get(k) is None for k in ("body", *REGIONS)):
                out[mv.label] = Reference(
                    None, None, (), float("nan"), "synthesised body does not cover the footprint"
                )
                continue
            per_pass = [region_heights(m, mv.regions).body for m in maps.values()]
            spread = 0.0
            if len(per_pass) > 1 and all(p is not None for p in per_pass):
                vals = [float(p) for p in per_pass if p is not None]
                spread = (max(vals) - min(vals)) / max(float(np.mean(vals)), 1e-6)
            unc = float(np.hypot(self.base_uncertainty, 0.5 * spread))
            out[mv.label] = Reference(heights, combined, (self.name,), unc, None)
        return out

    def pass_references(
        self, vertebrae: Sequence[MeasuredVertebra]
    ) -> dict[int, dict[str, RegionHeights]]:
        """Per vertebra and pass, the reference heights of that pass alone."""
        self.prepare()
        out: dict[int, dict[str, RegionHeights]] = {}
        for mv in vertebrae:
            maps = self._maps(mv)
            if isinstance(maps, str) or mv.regions is None:
                continue
            out[mv.label] = {p: region_heights(m, mv.regions) for p, m in maps.items()}
        return out

    def last_pass_references(self) -> dict[int, dict[str, RegionHeights]]:
        """:meth:`pass_references` of the vertebrae of the last :meth:`estimate` call (in
        ``grade_study``: the final measurement)."""
        return self.pass_references(self._last)

    def frame_of(self, label: int, mv: MeasuredVertebra | None = None) -> LocalFrame | None:
        """The frame the vertebra's footprint grid is in (see the module docstring)."""
        if mv is not None and mv.frame is not None:
            return mv.frame
        for v in self.core.vertebrae:
            if v.label == label:
                return v.frame
        return None

    def _maps(self, mv: MeasuredVertebra) -> dict[str, NDArray[np.float64]] | str:
        """Each pass's synthesised height map on ``mv``'s footprint grid, or why there is none."""
        synth = self.syntheses.get(mv.label)
        if synth is None:
            if mv.label in self.spine.vertebrae:
                return "the synthesis needs a vertebra above and below"
            return "vertebra not in the straightened spine"
        if mv.height_map is None or mv.regions is None:
            return "not measured"
        frame = self.frame_of(mv.label, mv)
        if frame is None:
            return "no frame"
        hm = mv.height_map
        ap, lr = np.meshgrid(hm.ap_mm, hm.lr_mm, indexing="ij")
        mid = 0.5 * (hm.top_mm + hm.bottom_mm)
        si = np.where(np.isfinite(mid), mid, 0.0)
        world = frame.to_world(np.stack([si.ravel(), ap.ravel(), lr.ravel()], axis=1))
        spine = self.spine
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
    it was trained on, and the synthesis time."""
    mf = reference.synthesiser.model
    return {
        "model": mf.name,
        "path": str(mf.path),
        "sha256": mf.sha256,
        "config": mf.config.name,
        "vertgrade_version": mf.vertgrade_version,
        "trained_subjects": list(mf.trained_subjects),
        "device": str(reference.synthesiser.device),
        "timings_s": {k: round(v, 3) for k, v in reference.synthesiser.timings_s.items()},
    }
