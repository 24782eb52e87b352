"""Inputs that used to give a wrong answer with no warning: each now gives a flag, a stated
reason or a refusal (the trust issue's list). Phantoms know their true grades."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vertgrade import grade_study
from vertgrade.errors import InputError
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom
from vertgrade.qc import level_order
from vertgrade.study import Volume


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return make_phantom("T11-L3", ["L1:wedge:0.32"], spacing=1.5, fov_mm=(150.0, 150.0), seed=2)


def _grades(res) -> dict[str, int | None]:  # type: ignore[no-untyped-def]
    return {v.level: v.grade for v in res.vertebrae}


def test_labels_flipped_against_the_ct_are_flagged(phantom) -> None:  # type: ignore[no-untyped-def]
    """Labels flipped front to back against the CT (same affine) read false fractures; every
    vertebra says the labels do not lie on bone, and its confidence is lowered. The labels on
    their CT carry no such flag."""
    clean = grade_study(study_from_arrays(phantom.labels, phantom.affine, ct=phantom.ct))
    assert _grades(clean) == {"T11": 0, "T12": 0, "L1": 2, "L2": 0, "L3": 0}
    assert not any("labels_off_bone" in v.flags for v in clean.vertebrae)
    ap = int(np.argmax(np.abs(phantom.affine[:3, :3])[1]))  # the voxel axis running P-A
    flipped = np.flip(phantom.labels, ap).copy()
    res = grade_study(study_from_arrays(flipped, phantom.affine, ct=phantom.ct))
    for v in res.vertebrae:
        assert "labels_off_bone" in v.flags, v.level
        if v.confidence is not None:
            assert v.confidence <= 0.5


def test_swapped_levels_are_not_graded(phantom) -> None:  # type: ignore[no-untyped-def]
    """T12 and L1 swapped: the fracture would be reported at T12; both are not gradable with
    the reason, and the others are graded as before."""
    lab = phantom.labels.copy()
    t12, l1 = lab == 19, lab == 20
    lab[t12], lab[l1] = 20, 19
    res = grade_study(study_from_arrays(lab, phantom.affine, ct=phantom.ct))
    for level in ("T12", "L1"):
        v = res[level]
        assert v.status == "not_gradable" and "level_order" in v.flags
        assert v.reason is not None and "head-to-foot order" in v.reason
    assert {k: g for k, g in _grades(res).items() if k in ("T11", "L2", "L3")} == {
        "T11": 0,
        "L2": 0,
        "L3": 0,
    }


def test_a_reversed_numbering_is_refused(phantom) -> None:  # type: ignore[no-untyped-def]
    lab = np.zeros_like(phantom.labels)
    for a, b in zip((18, 19, 20, 21, 22), (22, 21, 20, 19, 18), strict=True):
        lab[phantom.labels == a] = b
    with pytest.raises(InputError, match="foot to head"):
        grade_study(study_from_arrays(lab, phantom.affine, ct=phantom.ct))


@pytest.mark.parametrize(
    ("order", "z", "expected"),
    [
        ([19, 20, 21], {19: 90.0, 20: 60.0, 21: 30.0}, (False, [])),
        ([19, 20, 21], {19: 60.0, 20: 90.0, 21: 30.0}, (False, [(19, 20)])),
        (
            [19, 20, 21, 22],
            {19: 0.0, 20: 25.0, 21: 50.0, 22: 80.0},
            (True, [(19, 20), (20, 21), (21, 22)]),
        ),
        ([19, 20], {19: 0.0, 20: 25.0}, (False, [(19, 20)])),  # two labels: a pair, not a reversal
    ],
)
def test_level_order_check(order, z, expected) -> None:  # type: ignore[no-untyped-def]
    assert level_order(order, z) == expected


@pytest.mark.slow
def test_slices_too_coarse_for_a_height_are_not_graded() -> None:
    """10 mm slices: every vertebra is not gradable with the limit in the reason; at 4 mm the
    grades hold, each flagged coarse."""
    ph = make_phantom(
        "T12-L3", ["L1:wedge:0.32"], spacing=(1.0, 1.0, 10.0), fov_mm=(130.0, 130.0), seed=2
    )
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    for v in res.vertebrae:
        assert v.status == "not_gradable" and "too_coarse" in v.flags
        assert v.reason is not None and "5 mm" in v.reason
    ph = make_phantom(
        "T12-L3", ["L1:wedge:0.32"], spacing=(1.0, 1.0, 4.0), fov_mm=(130.0, 130.0), seed=2
    )
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    assert _grades(res) == {"T12": 0, "L1": 2, "L2": 0, "L3": 0}
    assert all("coarse_slices" in v.flags for v in res.vertebrae)


def test_a_whole_vertebra_mask_given_as_bodies_is_refused(phantom) -> None:  # type: ignore[no-untyped-def]
    """``--bodies`` given the vertebra labels themselves (posterior elements and all) read three
    false crush fractures; it is refused, and the phantom's true body mask is accepted."""
    study = study_from_arrays(phantom.labels, phantom.affine, ct=phantom.ct)
    whole = Volume((phantom.labels > 0).astype(np.uint8), study.labels.affine, "bodies")
    with pytest.raises(InputError, match="spinal canal of 5 of 5 vertebrae"):
        grade_study(dataclasses.replace(study, bodies=whole))
    bodies = Volume(phantom.bodies.astype(np.uint8), study.labels.affine, "bodies")
    res = grade_study(dataclasses.replace(study, bodies=bodies))
    assert _grades(res) == {"T11": 0, "T12": 0, "L1": 2, "L2": 0, "L3": 0}


def _split_l2(ph, shift: tuple[int, int]):  # type: ignore[no-untyped-def]
    """L2's label with its upper half moved ``shift`` voxels (x, y) away."""
    lab = ph.labels.copy()
    idx = np.argwhere(lab == 21)
    top = idx[idx[:, 2] > np.median(idx[:, 2])]
    lab[tuple(top.T)] = 0
    moved = top + np.array([shift[0], shift[1], 0])
    assert moved.min() >= 0 and np.all(moved < lab.shape)
    assert not lab[tuple(moved.T)].any()
    lab[tuple(moved.T)] = 21
    return lab


@pytest.mark.slow
def test_a_label_split_between_two_places_is_not_graded() -> None:
    """A healthy L2 whose label is split in two far-apart halves read a grade-3 crush; it is
    not gradable with the reason, its centre is kept out of the centreline, and the other
    vertebrae keep their true grades."""
    ph = make_phantom("T11-L3", ["L1:wedge:0.32"], spacing=1.5, fov_mm=(220.0, 150.0), seed=2)
    res = grade_study(study_from_arrays(_split_l2(ph, (40, 30)), ph.affine, ct=ph.ct))
    l2 = res["L2"]
    assert l2.status == "not_gradable" and "label_split" in l2.flags
    assert l2.reason is not None and "split" in l2.reason
    assert "centre_off_curve" in l2.flags
    assert {k: g for k, g in _grades(res).items() if k != "L2"} == {
        "T11": 0,
        "T12": 0,
        "L1": 2,
        "L3": 0,
    }


@pytest.mark.slow
def test_a_displaced_label_does_not_bend_its_neighbours_frames(phantom) -> None:  # type: ignore[no-untyped-def]
    """L2's label with half of it moved 37 mm forward (one piece, its centre 18 mm off the
    spine): L2 is left out of the centreline and is not graded; L3, the end vertebra whose
    frame the bent curve used to tilt into a false crush, keeps grade 0."""
    res = grade_study(study_from_arrays(_split_l2(phantom, (0, 25)), phantom.affine, ct=phantom.ct))
    assert "centre_off_curve" in res["L2"].flags and res["L2"].status == "not_gradable"
    assert {k: g for k, g in _grades(res).items() if k != "L2"} == {
        "T11": 0,
        "T12": 0,
        "L1": 2,
        "L3": 0,
    }
