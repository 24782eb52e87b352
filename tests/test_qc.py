"""QC flags and not-gradable reasons, on phantoms altered the way real inputs go wrong; and the
reference-estimator interface."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vertgrade import grade_study
from vertgrade.cli import app
from vertgrade.io.load import study_from_arrays
from vertgrade.morphometry import RegionHeights
from vertgrade.phantom import FractureSpec, Phantom, make_phantom
from vertgrade.reference import (
    MeasuredVertebra,
    NeighbourReference,
    Reference,
    ReferenceContext,
    ReferenceEstimator,
)


@cache
def _ph() -> Phantom:
    return make_phantom("T11-L4", [FractureSpec.parse("L2:wedge:0.3")], seed=4)


def _levels(ph: Phantom, level: str) -> int:
    return next(t.label for t in ph.truth if t.level == level)


@pytest.mark.slow
def test_cut_by_field_of_view_is_not_gradable() -> None:
    ph = _ph()
    lab = _levels(ph, "L4")
    # cut the image through the middle of L4's body, along the superior-inferior image axis
    zs = np.nonzero((ph.bodies == lab).any(axis=(0, 1)))[0]
    cut = int(zs.mean())
    res = grade_study(
        study_from_arrays(ph.labels[:, :, cut:], ph.affine @ _shift(2, cut), ct=ph.ct[:, :, cut:])
    )
    l4 = res["L4"]
    assert l4.status == "not_gradable" and l4.grade is None
    assert "cut_by_fov" in l4.flags and "field of view" in l4.reason
    assert "L4" not in res["L3"].reference_sources


def _shift(axis: int, n: int) -> np.ndarray:
    m = np.eye(4)
    m[axis, 3] = n
    return m


@pytest.mark.slow
def test_label_fragments_flagged_and_dropped() -> None:
    ph = _ph()
    lab = _levels(ph, "L1")
    labels = ph.labels.copy()
    # a stray piece of L1's label far away (10 % of its size): a mislabelled blob
    n = int(np.count_nonzero(labels == lab) * 0.1)
    side = round(n ** (1 / 3))
    labels[2 : 2 + side, 2 : 2 + side, 2 : 2 + side] = lab
    base = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    res = grade_study(study_from_arrays(labels, ph.affine, ct=ph.ct))
    assert "label_fragments" in res["L1"].flags
    assert res["L1"].heights_mm == base["L1"].heights_mm  # the stray piece did not move it
    assert res["L1"].confidence < base["L1"].confidence


def test_single_vertebra_has_no_reference() -> None:
    ph = make_phantom("L2-L2", seed=1)
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct))
    (v,) = res.vertebrae
    assert v.status == "not_gradable" and v.grade is None
    assert "no_reference" in v.flags and v.reason.startswith("no usable reference")
    assert v.heights_mm is not None  # still measured


def test_implausible_size_flagged() -> None:
    ph = _ph()
    lab = _levels(ph, "T12")
    labels = ph.labels.copy()
    body = ph.bodies == lab
    zs = np.nonzero(body.any(axis=(0, 1)))[0]
    keep = slice(zs[0], zs[0] + max(2, len(zs) // 4))
    drop = body.copy()
    drop[:, :, keep] = False
    labels[drop] = 0  # most of the body unlabelled: a segmentation failure, not a fracture
    res = grade_study(study_from_arrays(labels, ph.affine, ct=ph.ct))
    assert "implausible_size" in res["T12"].flags
    assert res["T12"].status == "not_gradable"


@pytest.mark.slow
def test_mask_smoothing_over_a_depression_disagrees_with_ct() -> None:
    """A segmentation that fills a deep central endplate depression: the CT finds the real
    endplate, the flag says the two disagree, and the grade follows the CT."""
    ph = make_phantom("T11-L4", [FractureSpec.parse("L2:biconcave:0.30")], seed=4)
    lab = _levels(ph, "L2")
    labels = ph.labels.copy()
    # fill the depression: every column of L2's body gets the label up to its rim height
    body = ph.bodies == lab
    filled = np.zeros_like(body)
    zs = np.nonzero(body.any(axis=(0, 1)))[0]
    cols = body.any(axis=2)
    filled[:, :, zs[0] : zs[-1] + 1] = cols[:, :, None]
    labels[filled & (labels == 0)] = lab
    res = grade_study(study_from_arrays(labels, ph.affine, ct=ph.ct))
    v = res["L2"]
    assert "mask_ct_disagree" in v.flags
    assert v.heights_source == "ct"
    assert v.heights_mask_mm.middle - v.heights_ct_mm.middle > 2.0
    assert v.grade == next(t.grade for t in ph.truth if t.label == lab)


class _TruthReference:
    """An oracle estimator from the phantom's pre-fracture heights: the interface in use."""

    name = "oracle"

    def __init__(self, ph: Phantom) -> None:
        self.truth = {t.label: t for t in ph.truth}

    def estimate(
        self, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext | None = None
    ) -> dict[int, Reference]:
        assert context is not None  # grade_study hands every estimator its context
        out = {}
        for v in vertebrae:
            t = self.truth[v.label]
            h = RegionHeights(
                *(
                    getattr(t, f"height_{r}_before_mm")
                    for r in ("body", "anterior", "middle", "posterior")
                )
            )
            out[v.label] = Reference(h, None, ("truth",), 0.01)
        return out


@pytest.mark.parametrize("make", [lambda ph: NeighbourReference(), _TruthReference])
def test_reference_estimators_share_one_contract(make) -> None:  # type: ignore[no-untyped-def]
    ph = _ph()
    est = make(ph)
    assert isinstance(est, ReferenceEstimator)
    res = grade_study(study_from_arrays(ph.labels, ph.affine, ct=ph.ct), reference=est)
    assert res.provenance["reference_estimator"] == est.name
    assert [v.grade for v in res.vertebrae] == [t.grade for t in ph.truth]
    for v in res.vertebrae:
        assert v.reference_method == est.name and v.reference_mm is not None


@pytest.mark.slow
def test_second_run_gives_identical_files(tmp_path: Path) -> None:
    from vertgrade.phantom import write_phantom

    write_phantom(_ph(), tmp_path / "ph")
    runner = CliRunner()
    for out in ("a", "b"):
        res = runner.invoke(
            app,
            [
                "grade",
                str(tmp_path / "ph" / "ct.nii.gz"),
                "--labels",
                str(tmp_path / "ph" / "labels.nii.gz"),
                "-o",
                str(tmp_path / out),
                "-q",
            ],
        )
        assert res.exit_code == 0, res.output
    for name in ("result.json", "vertebrae.csv", "bodies.nii.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_labels_resampled_from_another_grid() -> None:
    """Labels stored on a coarser grid in the same physical space are resampled onto the CT."""
    from vertgrade.io.labels import resample_onto as _resample_onto
    from vertgrade.study import Volume

    ph = _ph()
    coarse = ph.labels[::2, ::2, ::2]
    aff = ph.affine.copy()
    aff[:3, :3] *= 2
    src = Volume(coarse, aff, "labels")
    ref = Volume(ph.ct, ph.affine, "ct")
    back = _resample_onto(src, ref, "labels")
    inside = ph.labels > 0
    agree = np.count_nonzero(back.array[inside] == ph.labels[inside]) / np.count_nonzero(inside)
    assert agree > 0.85
