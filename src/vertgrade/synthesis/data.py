"""Samples of the synthesis: 2D slices through the straightened spine with the target cut out.

One function, :func:`make_slices`, builds every sample, at training and at inference alike, so
that the band, the shifting of the neighbours and the handling of tall targets cannot differ
between the two (the published code used a 40-row band in training and 41 at inference, skipped
tall vertebrae in training and truncated them at inference).

For a target vertebra whose body spans ``[t_top, t_bottom]`` (mm along the straightened spine,
height ``H``) and a slice at in-plane position ``p`` (``lr`` for a sagittal slice, ``ap`` for a
coronal one), with pixel rows at ``y`` mm from the image centre and a band of ``B`` mm:

- *input layout*: rows ``|y| <= B/2`` are the empty band; a row above it, ``y < -B/2``, shows the
  straightened spine at ``t = t_top + (y + B/2) / s`` and a row below at
  ``t = t_bottom + (y - B/2) / s``: the neighbours sit at the band's edges whatever the target's
  height, so the gap says nothing about it;
- *centred layout* (the training target): ``t = t_mid + y / s``, the target of height ``s H``
  centred in the image and its context closed around it;
- ``s = min(1, band_fill * B / H)``: a target taller than ``band_fill * B`` has its whole sample
  (context included) shrunk along the spine, in training and at inference by the same rule, and
  heights measured on the synthesis are divided by ``s``.

In the iterative synthesis the target's context can show its neighbours' syntheses instead of the
neighbours themselves (:class:`Replacement`): the rows of the neighbour are replaced by its
synthesised body, of its synthesised height, and the spine beyond it moves accordingly.

Samples on disk (:func:`build_samples`) are straightened spines (:mod:`.crops`), one ``.npz`` per
study, plus ``samples.json`` (the subjects, their vertebrae and known grades); slices are cut on
the fly (:class:`SliceDataset`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade._version import __version__
from vertgrade.errors import InputError
from vertgrade.io.files import check_output_dir, staged_files
from vertgrade.io.grades import grades_by_subject, read_grades
from vertgrade.io.load import load_study
from vertgrade.pipeline import grade_study
from vertgrade.synthesis.config import Pass, SynthesisConfig
from vertgrade.synthesis.crops import (
    SpineGeometry,
    StraightenedSpine,
    VertebraExtent,
    spine_summary,
    straighten_spine,
)

__all__ = [
    "SAMPLES_FORMAT",
    "Replacement",
    "SliceBatch",
    "SliceDataset",
    "band_scale",
    "build_samples",
    "eligible_targets",
    "held_out_subjects",
    "load_samples",
    "make_slices",
    "samples_subjects",
    "slice_positions",
    "spine_from_study",
    "subject_folds",
]

logger = logging.getLogger(__name__)

#: Version of ``samples.json``.
SAMPLES_FORMAT = 1


def band_scale(height_mm: float, cfg: SynthesisConfig) -> float:
    """Shrink factor along the spine for a target of (measured) ``height_mm``.

    >>> from vertgrade.synthesis.config import named_config
    >>> cfg = named_config("paper")
    >>> band_scale(30.0, cfg), round(band_scale(40.0, cfg), 3)
    (1.0, 0.9)
    """
    return float(min(1.0, cfg.band_fill * cfg.band_mm / max(height_mm, 1e-6)))


def slice_positions(cfg: SynthesisConfig) -> NDArray[np.float64]:
    """In-plane positions (mm, about the centreline) of the slices synthesised per pass.

    >>> from vertgrade.synthesis.config import named_config
    >>> slice_positions(named_config("tiny")).tolist()
    [-12.0, -6.0, 0.0, 6.0, 12.0]
    """
    n = int(np.floor(cfg.slice_half_mm / cfg.slice_step_mm + 1e-9))
    return cfg.slice_step_mm * np.arange(-n, n + 1, dtype=np.float64)


@dataclass(frozen=True)
class Replacement:
    """A neighbour shown as its synthesis in a target's context.

    ``images`` and ``priors`` are ``(S, H, W)`` composites of the neighbour's slices (centred
    layout, same positions as the target's); ``height_px`` ``(S,)`` their synthesised heights in
    pixels; ``scale`` the neighbour's :func:`band_scale`.
    """

    label: int
    images: NDArray[np.float32]
    height_px: NDArray[np.float32]
    scale: float


@dataclass
class SliceBatch:
    """Slices of one or more targets, ready for the generator (float32 arrays).

    ``image`` / ``prior`` ``(N, H, W)`` in the input layout; ``ratio`` ``(N,)`` the slice's
    position relative to the body (-1 .. 1); ``orientation`` ``(N,)`` 0 sagittal, 1 coronal;
    ``height_px`` ``(N,)`` the target's measured height in pixels after scaling; ``scale`` ``(N,)``.
    Training targets (``None`` at inference): ``truth`` (centred layout image),
    ``target_seg`` (centred layout, soft), ``neighbour_seg`` (input layout, soft).
    """

    image: NDArray[np.float32]
    prior: NDArray[np.float32]
    ratio: NDArray[np.float32]
    orientation: NDArray[np.float32]
    height_px: NDArray[np.float32]
    scale: NDArray[np.float32]
    labels: NDArray[np.int64]
    positions_mm: NDArray[np.float64]
    truth: NDArray[np.float32] | None = None
    target_seg: NDArray[np.float32] | None = None
    neighbour_seg: NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @staticmethod
    def concatenate(batches: Sequence[SliceBatch]) -> SliceBatch:
        def cat(name: str) -> Any:
            vals = [getattr(b, name) for b in batches]
            if any(v is None for v in vals):
                return None
            return np.concatenate(vals)

        return SliceBatch(**{k: cat(k) for k in SliceBatch.__dataclass_fields__})


def _rows_mm(cfg: SynthesisConfig) -> NDArray[np.float64]:
    n = cfg.image_rows
    return np.asarray((np.arange(n) - (n - 1) / 2.0) * cfg.spacing_mm, dtype=np.float64)


def _cols_mm(cfg: SynthesisConfig) -> NDArray[np.float64]:
    n = cfg.image_cols
    return np.asarray((np.arange(n) - (n - 1) / 2.0) * cfg.spacing_mm, dtype=np.float64)


def _sample_plane(
    spine: StraightenedSpine,
    volume: NDArray[np.uint8],
    t: NDArray[np.float64],
    cols: NDArray[np.float64],
    position: float,
    pass_: Pass,
    *,
    order: int = 1,
) -> NDArray[np.float32]:
    """Values at rows ``t`` (mm, (H,)) and in-plane columns ``cols`` of one slice, 0..1."""
    step = spine.step_mm
    ti = (t - spine.t_mm[0]) / step
    ci = (cols - spine.ap_mm[0]) / step if pass_ == "sagittal" else (cols - spine.lr_mm[0]) / step
    pi = (position - (spine.lr_mm[0] if pass_ == "sagittal" else spine.ap_mm[0])) / step
    tt, cc = np.meshgrid(ti, ci, indexing="ij")
    pp = np.full_like(tt, pi)
    coords = np.stack([tt, cc, pp] if pass_ == "sagittal" else [tt, pp, cc])
    out = ndimage.map_coordinates(
        volume, coords, order=order, mode="constant", cval=0, output=np.float32, prefilter=False
    )
    return out if volume.dtype != np.uint8 or order == 0 else out / np.float32(255.0)


def _source_rows(
    ext_top: float,
    ext_bottom: float,
    y_mm: NDArray[np.float64],
    half_band: float,
    scale: float,
) -> NDArray[np.float64]:
    """Straightened ``t`` of each input-layout row (NaN inside the band)."""
    t = np.full(y_mm.shape, np.nan)
    above, below = y_mm < -half_band, y_mm > half_band
    t[above] = ext_top + (y_mm[above] + half_band) / scale
    t[below] = ext_bottom + (y_mm[below] - half_band) / scale
    return t


def make_slices(
    spine: StraightenedSpine,
    label: int,
    pass_: Pass,
    positions_mm: Sequence[float] | NDArray[np.float64],
    cfg: SynthesisConfig,
    *,
    with_truth: bool = False,
    above: Replacement | None = None,
    below: Replacement | None = None,
) -> SliceBatch:
    """The samples of one target vertebra at the given slice positions.

    Parameters
    ----------
    spine : StraightenedSpine
    label : int
        The target.
    pass_ : {"sagittal", "coronal"}
    positions_mm : (S,) float
        In-plane positions about the centreline (``lr`` for sagittal, ``ap`` for coronal).
    cfg : SynthesisConfig
    with_truth : bool
        Also the training targets (centred-layout image and segmentations).
    above, below : Replacement, optional
        Neighbours to show as their syntheses (iterative synthesis).

    Returns
    -------
    SliceBatch
        ``S`` samples of ``(cfg.image_rows, cfg.image_cols)``.
    """
    ext = spine.vertebrae[label]
    s = band_scale(ext.height_mm, cfg)
    y = _rows_mm(cfg)
    cols = _cols_mm(cfg)
    half = 0.5 * cfg.band_mm
    t_in = _source_rows(ext.t_top_mm, ext.t_bottom_mm, y, half, s)
    band = ~np.isfinite(t_in)
    if pass_ == "sagittal":
        lo, hi = ext.lr_range_mm
    else:
        lo, hi = ext.ap_range_mm
    centre, half_extent = 0.5 * (lo + hi), max(0.5 * (hi - lo), 1.0)
    positions = np.asarray(positions_mm, dtype=np.float64).ravel()
    n = positions.size
    shape = (n, cfg.image_rows, cfg.image_cols)
    image = np.zeros(shape, np.float32)
    prior = np.ones(shape, np.float32)
    truth = np.zeros(shape, np.float32) if with_truth else None
    tseg = np.zeros(shape, np.float32) if with_truth else None
    nseg = np.zeros(shape, np.float32) if with_truth else None

    # Where the context shows a neighbour's synthesis: rows of the synthesised body replace the
    # neighbour's rows, and the spine beyond it moves by the difference in height.
    t_src = np.where(band, 0.0, t_in)
    reps: list[tuple[Replacement, VertebraExtent, int, float]] = []
    for rep, side in ((above, -1), (below, 1)):
        if rep is not None and rep.label in spine.vertebrae:
            nb = spine.vertebrae[rep.label]
            gap = (ext.t_top_mm - nb.t_bottom_mm) if side < 0 else (nb.t_top_mm - ext.t_bottom_mm)
            reps.append((rep, nb, side, max(gap, 0.0)))
    for j, p in enumerate(positions):
        t_row = t_src.copy()
        use_synth: list[tuple[NDArray[np.bool_], NDArray[np.float32]]] = []
        from_synth = np.zeros(y.shape, bool)
        for rep, nb, side, gap in reps:
            rows = (y < -half) if side < 0 else (y > half)
            # distance (straightened mm) from the target's edge into the context
            d = (ext.t_top_mm - t_in) if side < 0 else (t_in - ext.t_bottom_mm)
            h_img = float(rep.height_px[j]) * cfg.spacing_mm  # in the neighbour's image, mm
            hn = h_img / rep.scale  # in straightened mm
            inside = rows & (d > gap) & (d <= gap + hn)
            beyond = rows & (d > gap + hn)
            if side < 0:
                t_row[beyond] = nb.t_top_mm - (d[beyond] - gap - hn)
                y_n = 0.5 * h_img - (d[inside] - gap) * rep.scale
            else:
                t_row[beyond] = nb.t_bottom_mm + (d[beyond] - gap - hn)
                y_n = -0.5 * h_img + (d[inside] - gap) * rep.scale
            rows_n = y_n / cfg.spacing_mm + (cfg.image_rows - 1) / 2.0
            grid = np.meshgrid(rows_n, np.arange(cfg.image_cols), indexing="ij")
            vals = ndimage.map_coordinates(
                rep.images[j], np.stack(grid), order=1, mode="nearest", prefilter=False
            ).astype(np.float32)
            use_synth.append((inside, vals))
            from_synth |= inside
        img = _sample_plane(spine, spine.ct, t_row, cols, p, pass_)
        pri = _sample_plane(spine, spine.prior, t_row, cols, p, pass_)
        for inside, vals in use_synth:
            img[inside] = vals
        pri[from_synth] = 1.0
        img[band] = 0.0
        pri[band] = 1.0
        image[j] = img
        prior[j] = pri
        if with_truth and truth is not None and tseg is not None and nseg is not None:
            t_c = ext.t_mid_mm + y / s
            truth[j] = _sample_plane(spine, spine.ct, t_c, cols, p, pass_)
            body_c = _sample_plane(spine, spine.body, t_c, cols, p, pass_)
            own_c = _sample_plane(spine, spine.owner, t_c, cols, p, pass_, order=0)
            tseg[j] = body_c * (own_c == label)
            body_i = _sample_plane(spine, spine.body, t_row, cols, p, pass_)
            own_i = _sample_plane(spine, spine.owner, t_row, cols, p, pass_, order=0)
            nb_i = body_i * ((own_i != label) & (own_i != 0))
            nb_i[band] = 0.0
            nseg[j] = nb_i
    ratio = np.clip((positions - centre) / half_extent, -1.5, 1.5).astype(np.float32)
    return SliceBatch(
        image=image,
        prior=prior,
        ratio=ratio,
        orientation=np.full(n, 0.0 if pass_ == "sagittal" else 1.0, np.float32),
        height_px=np.full(n, s * ext.height_mm / cfg.spacing_mm, np.float32),
        scale=np.full(n, s, np.float32),
        labels=np.full(n, label, np.int64),
        positions_mm=positions,
        truth=truth,
        target_seg=tseg,
        neighbour_seg=nseg,
    )


def eligible_targets(spine: StraightenedSpine, cfg: SynthesisConfig) -> list[int]:
    """Vertebrae trained on as healthy targets: usable, graded at most
    ``cfg.healthy_max_grade``, with a vertebra above and below in the study."""
    out = []
    for k in spine.order():
        v = spine.vertebrae[k]
        up, down = spine.neighbours(k)
        if (
            v.usable
            and v.grade is not None
            and v.grade <= cfg.healthy_max_grade
            and up is not None
            and down is not None
        ):
            out.append(k)
    return out


@dataclass
class SliceDataset:
    """Every training slice of a set of spines: (spine, target, pass, position) items.

    ``batch(indices, rng)`` cuts the slices; with ``rng`` each position is jittered by up to
    half a slice step (augmentation).
    """

    spines: Sequence[StraightenedSpine]
    cfg: SynthesisConfig
    items: list[tuple[int, int, Pass, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.items:
            pos = slice_positions(self.cfg)
            for i, sp in enumerate(self.spines):
                for k in eligible_targets(sp, self.cfg):
                    for p in self.cfg.passes:
                        self.items.extend((i, k, p, float(x)) for x in pos)

    def __len__(self) -> int:
        return len(self.items)

    def subjects(self) -> list[str]:
        return sorted({sp.subject for sp in self.spines})

    def batch(
        self, indices: Sequence[int] | NDArray[np.integer], rng: np.random.Generator | None = None
    ) -> SliceBatch:
        parts = []
        for i in indices:
            si, k, p, x = self.items[int(i)]
            if rng is not None:
                x = x + float(rng.uniform(-0.5, 0.5)) * self.cfg.slice_step_mm
            parts.append(make_slices(self.spines[si], k, p, [x], self.cfg, with_truth=True))
        return SliceBatch.concatenate(parts)


# --- samples on disk ------------------------------------------------------------------------


def spine_from_study(
    study: Any,
    *,
    grades: Mapping[int, int] | None = None,
    step_mm: float = 1.0,
    half_width_mm: float = 64.0,
    window_hu: tuple[float, float] = (-300.0, 800.0),
) -> StraightenedSpine:
    """Grade a study with the core pipeline (frames, bodies, height-loss maps) and straighten
    it (:func:`vertgrade.synthesis.crops.straighten_spine`)."""
    core = grade_study(study)
    return straighten_spine(
        study,
        SpineGeometry.from_result(core),
        step_mm=step_mm,
        half_width_mm=half_width_mm,
        window_hu=window_hu,
        grades=dict(grades) if grades is not None else None,
    )


StudySpec = str | Path | tuple[str | Path, str | Path]


def build_samples(
    studies: Sequence[StudySpec],
    grades: str | Path | Mapping[str, Mapping[int, int]],
    out_dir: str | Path,
    *,
    step_mm: float = 1.0,
    half_width_mm: float = 64.0,
    window_hu: tuple[float, float] = (-300.0, 800.0),
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> Path:
    """Straighten every study and write the samples folder (``vertgrade synthesis-data``).

    Parameters
    ----------
    studies : sequence
        VerSe subject folders, CT files with labels found by :func:`vertgrade.load_study`, or
        ``(ct, labels)`` pairs.
    grades : path or mapping
        A grades CSV (:func:`vertgrade.io.grades.read_grades`) or subject -> {label: grade}.
        Only graded vertebrae can be training targets; the others are context.
    out_dir : path
        The samples folder: ``<subject>.npz`` per study and ``samples.json``.
    force : bool
        Allow a non-empty ``out_dir``.
    progress : callable, optional
        ``progress(subject, done, total)`` after each study.
    on_skip : callable, optional
        ``on_skip(study, reason)`` for each study that cannot be used (no CT, unreadable): it is
        left out and listed under ``skipped`` in ``samples.json``; without ``on_skip`` each is
        logged as a warning.

    Returns
    -------
    Path
        ``out_dir / "samples.json"``.

    Raises
    ------
    InputError
        No study could be used, or one subject is given twice; nothing is written.
    """

    out = check_output_dir(out_dir, force=force)
    created = not out.exists()
    table = grades_by_subject(read_grades(grades)) if isinstance(grades, (str, Path)) else grades
    entries: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    # Every file is written to a staging folder and moved into place only when all studies
    # have been read: a bad study (unreadable, a subject given twice) leaves the folder as it was.
    names: list[str] = []
    try:
        with staged_files(out, names) as staging:
            for n, spec in enumerate(studies, start=1):
                where = str(spec[0] if isinstance(spec, tuple) else spec)
                try:
                    study = load_study(*spec) if isinstance(spec, tuple) else load_study(spec)
                    if study.ct is None:
                        raise InputError(where, "has no CT: a training sample needs one")
                except InputError as err:
                    skipped[where] = err.problem
                    if on_skip is not None:
                        on_skip(where, err.problem)
                    else:
                        logger.warning("skipped %s: %s", where, err.problem)
                    if progress is not None:
                        progress(where, n, len(studies))
                    continue
                if study.subject in entries:
                    raise InputError(
                        where,
                        f"subject {study.subject} given twice (rename one of the inputs or "
                        "give them as folders named after their subjects)",
                    )
                g = dict(table.get(study.subject, {}))
                if not g:
                    logger.warning(
                        "no grades for %s: its vertebrae are context only", study.subject
                    )
                spine = spine_from_study(
                    study,
                    grades=g,
                    step_mm=step_mm,
                    half_width_mm=half_width_mm,
                    window_hu=window_hu,
                )
                name = f"{study.subject}.npz"
                spine.save(staging / name)
                names.append(name)
                entries[study.subject] = {"file": name, **spine_summary(spine)}
                if progress is not None:
                    progress(study.subject, n, len(studies))
            if not entries:
                raise InputError(
                    None,
                    f"none of the {len(studies)} studies could be used: "
                    + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                )
            manifest = {
                "format": SAMPLES_FORMAT,
                "vertgrade": __version__,
                "step_mm": step_mm,
                "half_width_mm": half_width_mm,
                "window_hu": list(window_hu),
                "subjects": entries,
                "skipped": skipped,
            }
            (staging / "samples.json").write_text(
                json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
            )
            names.append("samples.json")  # last: the manifest appears once the samples are in
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return out / "samples.json"


def load_samples(
    folder: str | Path,
    *,
    subjects: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[StraightenedSpine]:
    """The straightened spines of a samples folder (optionally only / without some subjects)."""
    root = Path(folder)
    path = root / "samples.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            path, "no samples.json: build the samples first (synthesis-data)"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the samples manifest ({err})") from err
    if manifest.get("format") != SAMPLES_FORMAT:
        raise InputError(path, f"samples format {manifest.get('format')} is not {SAMPLES_FORMAT}")
    names = list(manifest["subjects"])
    if subjects is not None:
        missing = sorted(set(subjects) - set(names))
        if missing:
            raise InputError(path, f"subjects not in the samples: {', '.join(missing)}")
        names = [s for s in names if s in set(subjects)]
    names = [s for s in names if s not in set(exclude)]
    return [StraightenedSpine.load(root / manifest["subjects"][s]["file"]) for s in names]


def samples_subjects(folder: str | Path) -> list[str]:
    """The subjects of a samples folder, in its manifest's order."""
    path = Path(folder) / "samples.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return [str(s) for s in manifest["subjects"]]
    except FileNotFoundError:
        raise InputError(
            path, "no samples.json: build the samples first (synthesis-data)"
        ) from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot read the samples manifest ({err})") from err


def subject_folds(subjects: Sequence[str], folds: int, *, seed: int = 0) -> list[list[str]]:
    """Split subjects into ``folds`` disjoint groups of near-equal size (cross-fitting).

    The split depends only on the set of subjects and the seed.

    >>> subject_folds(["a", "b", "c", "d", "e"], 2, seed=0)
    [['b', 'c', 'd'], ['a', 'e']]
    """
    names = sorted(set(subjects))
    if not 2 <= folds <= len(names):
        raise ValueError(f"need 2 <= folds <= {len(names)} subjects, got {folds}")
    order = np.random.default_rng(seed).permutation(len(names))
    groups: list[list[str]] = [[] for _ in range(folds)]
    for i, j in enumerate(order):
        groups[i % folds].append(names[int(j)])
    return [sorted(g) for g in groups]


def held_out_subjects(folder: str | Path, fold: int, folds: int, *, seed: int = 0) -> list[str]:
    """The subjects of a samples folder that cross-fitting fold ``fold`` (0-based) of
    ``folds`` leaves out of training (``train-synthesis --fold``)."""
    if not 0 <= fold < folds:
        raise InputError(None, f"fold {fold} is not in 0..{folds - 1}")
    try:
        return subject_folds(samples_subjects(folder), folds, seed=seed)[fold]
    except ValueError as err:
        raise InputError(folder, str(err)) from err
