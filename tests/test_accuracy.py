"""Accuracy of the whole pipeline on phantoms whose true heights and grades are known."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from vertgrade import grade_study
from vertgrade.config import GENANT_THRESHOLDS
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import FractureSpec, Phantom, make_phantom
from vertgrade.result import SpineResult

THIRDS = ("anterior", "middle", "posterior")
FRACTURES = ("T12:wedge:0.32", "L1:crush:0.45", "L3:biconcave:0.30")


@cache
def _phantom(
    orientation: str,
    spacing: tuple[float, float, float],
    levels: str = "T10-L4",
    fractures: tuple[str, ...] = FRACTURES,
    oblique: float = 0.0,
) -> Phantom:
    specs = [FractureSpec.parse(f) for f in fractures]
    return make_phantom(
        levels, specs, orientation=orientation, spacing=spacing, seed=3, oblique_deg=oblique
    )


def _grade(ph: Phantom, *, with_ct: bool = True) -> SpineResult:
    return grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct if with_ct else None))


def _errors(ph: Phantom, res: SpineResult, source: str) -> np.ndarray:
    truth = {t.label: t for t in ph.truth}
    errs = []
    for v in res.vertebrae:
        h = v.heights_ct_mm if source == "ct" else v.heights_mask_mm
        assert h is not None, v.level
        for r in THIRDS:
            errs.append(h.get(r) - getattr(truth[v.label], f"height_{r}_after_mm"))
    return np.array(errs)


GEOMETRIES = [
    ("RAS", (1.0, 1.0, 1.0), 0.5),
    ("LPS", (1.0, 1.0, 1.0), 0.5),
    ("IPL", (1.0, 1.0, 1.0), 0.5),
    ("PIR", (3.0, 1.0, 1.0), 1.0),
    ("LPS", (3.0, 1.0, 1.0), 1.0),
]


@pytest.mark.parametrize(("orientation", "spacing", "tol"), GEOMETRIES)
@pytest.mark.slow
def test_ct_refined_heights_within_tolerance(orientation: str, spacing: tuple, tol: float) -> None:
    """Within 0.5 mm of truth at 1 mm spacing, within 1 mm at 3 x 1 x 1 mm, every third of
    every vertebra, fractured ones included."""
    ph = _phantom(orientation, spacing)
    res = _grade(ph)
    assert all(v.heights_source == "ct" for v in res.vertebrae)
    err = _errors(ph, res, "ct")
    assert np.abs(err).max() <= tol, np.round(err, 2)
    assert abs(err.mean()) <= 0.25 * tol


@pytest.mark.slow
@pytest.mark.parametrize(("orientation", "spacing", "tol"), GEOMETRIES)
def test_mask_heights_labels_only(orientation: str, spacing: tuple, tol: float) -> None:
    """Labels only: the mask carries no sub-voxel information where an endplate lies along the
    grid, so single regions may miss by a bit more; on average they are as close."""
    ph = _phantom(orientation, spacing)
    res = _grade(ph, with_ct=False)
    assert all(v.hu_trabecular is None and v.heights_source == "mask" for v in res.vertebrae)
    err = _errors(ph, res, "mask")
    assert np.abs(err).mean() <= 0.5 * tol, np.round(err, 2)
    assert np.abs(err).max() <= 1.25 * tol, np.round(err, 2)


@pytest.mark.slow
def test_oblique_affine() -> None:
    ph = _phantom("RAS", (1.0, 1.0, 1.0), oblique=12.0)
    assert not np.allclose(ph.affine[:3, :3], np.diag(np.diag(ph.affine[:3, :3])))
    res = _grade(ph)
    assert np.abs(_errors(ph, res, "ct")).max() <= 0.5
    assert [v.grade for v in res.vertebrae] == [t.grade for t in ph.truth]


def _reoriented(ph: Phantom, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]):  # type: ignore[no-untyped-def]
    """The same voxels in another array order, with the affine that keeps them in place."""
    ct, lab, aff = ph.ct, ph.labels, ph.affine.copy()
    for ax, flip in enumerate(flips):
        if flip:
            n = ct.shape[ax]
            ct, lab = np.flip(ct, ax), np.flip(lab, ax)
            shift = np.eye(4)
            shift[ax, ax], shift[ax, 3] = -1.0, n - 1
            aff = aff @ shift
    ct, lab = np.transpose(ct, perm), np.transpose(lab, perm)
    p = np.eye(4)
    p[:3, :3] = np.eye(3)[:, perm]
    return ct, lab, aff @ p


@pytest.mark.slow
def test_invariant_to_voxel_order() -> None:
    """Permuting and flipping the voxel grid (affine updated to match) changes no number."""
    ph = _phantom("RAS", (1.0, 1.0, 1.0))
    base = _grade(ph)
    ct, lab, aff = _reoriented(ph, (2, 0, 1), (True, False, True))
    other = grade_study(study_from_arrays(lab, aff, ct=ct))
    for a, b in zip(base.vertebrae, other.vertebrae, strict=True):
        assert a.grade == b.grade
        for r in ("body", *THIRDS):
            assert a.heights_mm.get(r) == pytest.approx(b.heights_mm.get(r), abs=1e-6)


@pytest.mark.slow
def test_same_phantom_in_two_orientations_gives_the_same_numbers() -> None:
    """Two phantoms of the same body on differently ordered grids (PIR vs RAS; the voxel
    centres may differ by a fraction of a voxel) give the same heights to within 0.3 mm."""
    a = _grade(_phantom("RAS", (1.0, 1.0, 1.0)))
    b = _grade(_phantom("PIR", (1.0, 1.0, 1.0)))
    for va, vb in zip(a.vertebrae, b.vertebrae, strict=True):
        assert va.grade == vb.grade
        for r in THIRDS:
            assert va.heights_mm.get(r) == pytest.approx(vb.heights_mm.get(r), abs=0.3)


@pytest.mark.slow
def test_heights_scale_with_the_spine() -> None:
    """A phantom scaled by 1.2 in every length measures 1.2 times taller."""
    small = make_phantom("L1-L3", seed=1)
    big = make_phantom("L1-L3", seed=1, scale=1.2)
    hs = _grade(small)["L2"].heights_mm
    hb = _grade(big)["L2"].heights_mm
    for r in THIRDS:
        assert hb.get(r) / hs.get(r) == pytest.approx(1.2, abs=0.02)


def _random_spines(n_spines: int, seed: int) -> list[tuple[str, list[str], str, tuple]]:
    rng = np.random.default_rng(seed)
    spans = ["T4-T12", "T8-L3", "T10-L5", "T6-L1", "T11-L5", "T3-T11", "T9-L4"]
    geoms = [("RAS", (1.0, 1.0, 1.0)), ("LPS", (3.0, 1.0, 1.0)), ("PIR", (1.0, 1.0, 1.0))]
    spines = []
    for i in range(n_spines):
        levels = spans[i % len(spans)]
        from vertgrade.levels import level_name, parse_level_range

        names = [level_name(v) for v in parse_level_range(levels)]
        # fractures at about a third of the levels, adjacent ones allowed, never the end ones
        inner = names[1:-1]
        k = int(rng.integers(3, 5))
        start = int(rng.integers(0, len(inner) - k))
        chosen = (
            inner[start : start + k]
            if rng.random() < 0.5
            else list(rng.choice(inner, size=k, replace=False))
        )
        fr = [
            f"{lv}:{rng.choice(['wedge', 'biconcave', 'crush'])}:{rng.uniform(0.08, 0.6):.3f}"
            for lv in chosen
        ]
        orient, spacing = geoms[i % len(geoms)]
        spines.append((levels, fr, orient, spacing))
    return spines


@pytest.mark.slow
def test_grades_exact_away_from_thresholds() -> None:
    """Over >= 50 generated vertebrae of all types and grades, adjacent fractures included,
    the grade is exact wherever the true loss is at least 3 points from a threshold, and the
    type is right for every fracture found. Grade 1 spans only 5 points (20-25 %), so no
    grade-1 loss is 3 points from both its thresholds: those are held to 1.5 points."""
    n_checked = n_fractured = 0
    kinds = set()
    misses = []
    for i, (levels, fr, orient, spacing) in enumerate(_random_spines(8, seed=2026)):
        specs = [FractureSpec.parse(f) for f in fr]
        ph = make_phantom(levels, specs, orientation=orient, spacing=spacing, seed=i)
        res = _grade(ph)
        truth = {t.label: t for t in ph.truth}
        for v in res.vertebrae:
            t = truth[v.label]
            loss = max(t.loss_central, *(getattr(t, f"loss_{r}") for r in THIRDS))
            margin = 0.015 if t.grade == 1 else 0.03
            if min(abs(loss - th) for th in GENANT_THRESHOLDS) < margin:
                continue
            n_checked += 1
            if v.grade != t.grade:
                misses.append((levels, v.level, round(loss, 3), t.grade, v.grade))
            if t.grade >= 1:
                n_fractured += 1
                kinds.add((t.type, t.grade))
                if v.grade is not None and v.grade >= 1:
                    assert v.fracture_type == t.type, (levels, v.level, t.type, v.fracture_type)
    assert n_checked >= 50
    assert n_fractured >= 12
    assert {k for k, _ in kinds} == {"wedge", "biconcave", "crush"}
    assert {g for _, g in kinds} == {1, 2, 3}
    assert not misses, misses


@pytest.mark.slow
def test_adjacent_crush_fractures_keep_their_reference() -> None:
    """Three adjacent crush fractures (uniform loss, invisible to within-vertebra ratios) are
    each graded against healthy vertebrae further away."""
    ph = make_phantom(
        "T9-L5",
        [FractureSpec.parse(f) for f in ("T12:crush:0.30", "L1:crush:0.45", "L2:crush:0.30")],
        seed=5,
    )
    res = _grade(ph)
    assert [v.grade for v in res.vertebrae] == [t.grade for t in ph.truth]
    for lv in ("T12", "L1", "L2"):
        assert res[lv].fracture_type == "crush"
        assert not set(res[lv].reference_sources) & {"T12", "L1", "L2"}


def test_body_isolation_on_phantom() -> None:
    ph = _phantom("LPS", (1.0, 1.0, 1.0))
    res = _grade(ph)
    bodies = res.grid.to_input_grid(res.bodies)
    for t in ph.truth:
        ours, gt = bodies == t.label, ph.bodies == t.label
        dice = 2 * np.count_nonzero(ours & gt) / (np.count_nonzero(ours) + np.count_nonzero(gt))
        assert dice >= 0.95, (t.level, dice)


def test_body_centroid_and_frame_follow_the_spine() -> None:
    ph = _phantom("IPL", (1.0, 1.0, 1.0))
    res = _grade(ph)
    truth = {t.label: t for t in ph.truth}
    for v in res.vertebrae:
        t = truth[v.label]
        centre = np.array([t.centre_x_mm, t.centre_y_mm, t.centre_z_mm])
        assert np.linalg.norm(np.array(v.centroid_mm) - centre) < 2.0
        angle = np.degrees(np.arccos(np.clip(v.frame.si @ ph.frames[v.label].si, -1, 1)))
        assert angle < 4.0, (v.level, angle)
        assert v.frame.ap @ ph.frames[v.label].ap > 0.99


def test_trabecular_hu_is_the_core_not_the_cortex() -> None:
    ph = make_phantom("L1-L3", trabecular_hu=120.0, seed=2)
    res = _grade(ph)
    for v in res.vertebrae:
        assert v.hu_trabecular == pytest.approx(120.0, abs=10.0)


def test_endplate_planes_and_thirds_geometry() -> None:
    """Healthy phantom endplates are symmetric about the frame: both fitted planes are tilted
    equally and oppositely, so their bisector is the true axis; each third's drawn points are
    its measured height apart."""
    ph = _phantom("LPS", (1.0, 1.0, 1.0))
    res = _grade(ph)
    truth = {t.label: t for t in ph.truth}
    for v in res.vertebrae:
        if truth[v.label].fractured:
            continue
        sup, inf = v.endplates
        axis = (sup.normal + inf.normal) / np.linalg.norm(sup.normal + inf.normal)
        assert axis @ ph.frames[v.label].si > np.cos(np.radians(2.0))
        assert sup.normal @ v.frame.si > 0.9 and inf.normal @ v.frame.si > 0.9
        for r in THIRDS:
            pts = v.thirds[r]
            d = np.linalg.norm(np.subtract(pts["superior_mm"], pts["inferior_mm"]))
            assert d == pytest.approx(v.heights_mm.get(r), abs=0.6)
    assert res.centreline_mm.shape[1] == 3 and len(res.centreline_mm) > 50


def test_skewed_endplate_residuals_keep_a_plane() -> None:
    """A phantom (cohort subject 20 of seed 1: scale, curvature and noise drawn by
    ``vertgrade.synthesis.phantoms``) where one endplate's residuals after the first plane fit
    were so skewed that none lay within the outlier bound: the refit must keep its columns
    rather than fit an empty set (which warned, and fitted a plane through nothing)."""
    import warnings

    from vertgrade.synthesis.phantoms import phantom_subject

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subj = phantom_subject(20, seed=1)
    res = grade_study(subj.study)
    truth = {t.label: t for t in subj.phantom.truth}
    for v in res.vertebrae:
        if v.status == "graded":
            assert v.endplates is not None
            assert v.grade == truth[v.label].grade
