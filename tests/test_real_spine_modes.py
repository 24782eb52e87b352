"""Phantoms of the failure modes real spines show and phantoms did not: an image cropped to the
spine, a vertebra cut by the field of view, a tilted lumbosacral end vertebra with no S1 label, a
run of mild deformities. Each knows its true grades."""

from __future__ import annotations

import numpy as np
import pytest

from vertgrade import grade_study
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom
from vertgrade.qc import border_contacts


def _crop_to_labels(ph, margin: int = 0):  # type: ignore[no-untyped-def]
    """The phantom cropped to its labels' bounding box, as some data sets ship them."""
    idx = np.argwhere(ph.labels > 0)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = idx.max(axis=0) + 1 + margin
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = lo
    return ph.labels[sl], ph.affine @ shift, ph.ct[sl]


@pytest.mark.slow
def test_an_image_cropped_to_the_spine_is_graded() -> None:
    """Cropped to the labels' box, bodies touch the image's edges without being cut: every
    vertebra is graded as in the whole image, with a flag where its body touches."""
    ph = make_phantom("T12-L4", ["L2:wedge:0.32"], spacing=1.5, fov_mm=(150.0, 150.0), seed=3)
    labels, affine, ct = _crop_to_labels(ph)
    res = grade_study(study_from_arrays(labels, affine, ct=ct))
    truth = {t.level: t.grade for t in ph.truth}
    assert all(v.status == "graded" for v in res.vertebrae), [v.reason for v in res.vertebrae]
    assert {v.level: v.grade for v in res.vertebrae} == truth
    assert not any("cut_by_fov" in v.flags for v in res.vertebrae)
    assert any("touches_fov_edge" in v.flags for v in res.vertebrae)


@pytest.mark.slow
def test_a_top_vertebra_cut_by_the_field_of_view_says_where() -> None:
    ph = make_phantom("T12-L3", [], spacing=1.5, fov_mm=(150.0, 150.0), seed=5)
    t12 = int(np.argwhere(ph.bodies == 19)[:, 2].mean())  # through the middle of T12's body
    labels, ct = ph.labels[:, :, :t12], ph.ct[:, :, :t12]
    res = grade_study(study_from_arrays(labels, ph.affine, ct=ct))
    v = res["T12"]
    assert v.status == "not_gradable" and "cut_by_fov" in v.flags
    assert v.reason is not None and "superior side" in v.reason
    assert all(res[lv].status == "graded" for lv in ("L1", "L2", "L3"))


@pytest.mark.slow
def test_a_tilted_l5_without_s1_is_not_a_fracture() -> None:
    """A strongly lordotic lumbar spine ending at L5 (no S1 label): the centreline's end tangent
    is off L5's own axis; L5 is measured perpendicular to its own endplates and graded normal."""
    ph = make_phantom("L1-L5", [], spacing=1.5, fov_mm=(170.0, 170.0), lordosis_deg=70.0, seed=2)
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    l5 = res["L5"]
    assert l5.status == "graded" and l5.grade == 0, (l5.rhlv, l5.flags)
    assert l5.rhlv is not None and max(l5.rhlv[k] or 0 for k in ("anterior", "posterior")) < 0.1
    assert "axis_from_centreline" not in l5.flags


@pytest.mark.slow
def test_a_run_of_mild_deformities_is_flagged() -> None:
    """Five adjacent mild wedges between two healthy vertebrae: each is graded from the healthy
    ones at the ends of the run, and every reference says it rests on a mostly deformed spine."""
    run = [f"{lv}:wedge:0.24" for lv in ("T11", "T12", "L1", "L2", "L3")]
    ph = make_phantom("T10-L4", run, spacing=1.5, fov_mm=(150.0, 150.0), seed=7)
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    for lv in ("T11", "T12", "L1", "L2", "L3"):
        v = res[lv]
        assert v.grade is not None and v.grade >= 1, (lv, v.rhlv, v.reference_sources)
        assert "few_healthy_neighbours" in v.flags
    # the spine's vertebrae depart alike from their levels' shape: said on every vertebra
    assert all("atypical_spine_shape" in v.flags for v in res.vertebrae)


@pytest.mark.slow
def test_a_healthy_phantom_has_its_levels_typical_shape() -> None:
    """A healthy spine has the level-typical within-vertebra ratios, so its own shape adds no
    height loss and the spine is not flagged; a wedge's shape loss is close to its anterior
    third's loss (its posterior wall barely moves), and the wall heights read the wedge."""
    ph = make_phantom("T11-L3", ["L1:wedge:0.32"], spacing=1.0, fov_mm=(130.0, 130.0), seed=3)
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    for v in res.vertebrae:
        assert "atypical_spine_shape" not in v.flags
        assert v.shape is not None and v.walls_mm is not None
        if v.level != "L1":
            assert abs(v.shape.wedge) < 0.05 and abs(v.shape.biconcave) < 0.05, (v.level, v.shape)
            assert v.grade == 0
    l1 = res["L1"]
    assert l1.grade == 2 and l1.fracture_type == "wedge"
    assert l1.rhlv is not None and l1.rhlv["anterior"] is not None
    assert 0.8 * l1.rhlv["anterior"] < l1.shape.wedge <= l1.rhlv["anterior"] + 0.02
    w = l1.walls_mm
    assert w.anterior / w.posterior < l1.ratios["anterior_posterior"]  # the wall is lower still


@pytest.mark.slow
def test_stray_label_fragments_do_not_bend_the_frames() -> None:
    """A few voxels of L2's label far from its body (a segmentation's stray island) change
    nothing: the same frames, heights and grades as without them."""
    ph = make_phantom("T12-L3", ["L1:wedge:0.32"], spacing=1.0, fov_mm=(130.0, 130.0), seed=5)
    clean = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    labels = ph.labels.copy()
    labels[2:4, 2:4, 2:4] = 21  # an island 8 voxels big, tens of mm from L2
    stray = grade_study(study_from_arrays(labels, ph.affine, ct=ph.ct))
    for a, b in zip(clean.vertebrae, stray.vertebrae, strict=True):
        assert (a.level, a.grade, a.fracture_type) == (b.level, b.grade, b.fracture_type)
        assert a.heights_mm is not None and b.heights_mm is not None
        for k in ("anterior", "middle", "posterior"):
            assert abs((a.heights_mm.get(k) or 0) - (b.heights_mm.get(k) or 0)) < 0.05, (a.level, k)
        assert a.frame is not None and b.frame is not None
        assert float(np.dot(a.frame.si, b.frame.si)) > np.cos(np.radians(0.5))
    assert stray["L1"].grade == 2


@pytest.mark.slow
def test_a_label_of_a_few_voxels_loses_only_itself() -> None:
    """L3's label reduced to 4 voxels (a mislabel): L3 is not gradable with the reason, the
    others are graded as they are without it, and nothing crashes."""
    ph = make_phantom("T12-L3", ["L1:wedge:0.32"], spacing=1.0, fov_mm=(130.0, 130.0), seed=5)
    labels = ph.labels.copy()
    centre = np.argwhere(labels == 22).mean(axis=0).astype(int)
    labels[labels == 22] = 0
    labels[centre[0] : centre[0] + 2, centre[1] : centre[1] + 2, centre[2]] = 22
    res = grade_study(study_from_arrays(labels, ph.affine, ct=ph.ct))
    l3 = res["L3"]
    assert l3.status == "not_gradable" and "label_too_small" in l3.flags
    assert l3.reason is not None and "too small" in l3.reason
    assert {v.level: v.grade for v in res.vertebrae if v.level != "L3"} == {
        "T12": 0,
        "L1": 2,
        "L2": 0,
    }


def test_border_contact_of_a_cropped_phantom_body_is_small() -> None:
    ph = make_phantom("L2", [], spacing=2.0, fov_mm=(120.0, 120.0), seed=1)
    labels, _, _ = _crop_to_labels(ph)
    body = ph.bodies[tuple(slice(int(a), int(b) + 1) for a, b in zip(
        np.argwhere(ph.labels > 0).min(axis=0), np.argwhere(ph.labels > 0).max(axis=0),
        strict=True))] > 0  # fmt: skip
    contacts = border_contacts(body, (0, 0, 0), labels.shape, (2.0, 2.0, 2.0))
    assert contacts and max(contacts.values()) < 0.7
