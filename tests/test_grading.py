"""Grading of one vertebra from literal heights: RHLV, Genant grade, type, confidence, reasons.

No phantom and no pipeline: every number here is worked out by hand from the definitions
(Genant et al. 1993: grade 1 from 20 %, 2 from 25 %, 3 from 40 % loss of the worst third).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vertgrade.config import GradingConfig
from vertgrade.grading import (
    fracture_type,
    genant_grade,
    grade_probability,
    grade_vertebra,
    loss_map,
    rhlv,
    type_for_grade,
)
from vertgrade.morphometry import HeightMap, RegionHeights
from vertgrade.reference.base import Reference

L1 = 20
HEALTHY = RegionHeights(body=25.0, anterior=25.0, middle=25.0, posterior=25.0)
REF = Reference(HEALTHY, None, ("T12", "L2"), 0.03)


def _h(anterior: float, middle: float, posterior: float) -> RegionHeights:
    return RegionHeights((anterior + middle + posterior) / 3, anterior, middle, posterior)


@pytest.mark.parametrize(
    ("measured", "reference", "expected"),
    [(20.0, 25.0, 0.2), (25.0, 25.0, 0.0), (30.0, 25.0, -0.2), (None, 25.0, None),
     (20.0, None, None), (20.0, 0.0, None)],
)  # fmt: skip
def test_rhlv(measured: float | None, reference: float | None, expected: float | None) -> None:
    got = rhlv(measured, reference)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("loss", "grade"),
    [(-0.1, 0), (0.0, 0), (0.1999, 0), (0.20, 1), (0.2499, 1), (0.25, 2), (0.3999, 2),
     (0.40, 3), (0.9, 3)],
)  # fmt: skip
def test_genant_grade_bounds(loss: float, grade: int) -> None:
    assert genant_grade(loss) == grade


def test_genant_grade_other_thresholds() -> None:
    assert genant_grade(0.22, (0.15, 0.2, 0.3)) == 2


@pytest.mark.parametrize(
    ("a", "m", "p", "kind"),
    [(0.35, 0.20, 0.05, "wedge"), (0.10, 0.30, 0.05, "biconcave"), (0.30, 0.31, 0.28, "crush"),
     (0.30, 0.20, 0.24, "crush"),  # posterior >= 0.8 x worst (0.24 = 0.8 x 0.30)
     (0.30, 0.20, 0.23, "wedge"), (0.2, 0.2, 0.0, "wedge")],  # a tie is a wedge
)  # fmt: skip
def test_fracture_type(a: float, m: float, p: float, kind: str) -> None:
    assert fracture_type(anterior=a, middle=m, posterior=p) == kind


def test_fracture_type_share_is_a_parameter() -> None:
    assert fracture_type(anterior=0.3, middle=0.1, posterior=0.2, crush_posterior_share=0.6) == (
        "crush"
    )


def test_grade_probability_is_a_normal_integral() -> None:
    # loss 0.30 in grade 2 [0.25, 0.40); sigma 0.05: P = Phi(2) - Phi(-1)
    def phi(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    assert grade_probability(0.30, 0.05) == pytest.approx(phi(2.0) - phi(-1.0))
    assert grade_probability(0.30, 0.0) == 1.0
    assert grade_probability(0.05, 1e-9) == pytest.approx(1.0)


def test_a_wedge_is_graded_with_its_losses() -> None:
    g = grade_vertebra(L1, _h(16.0, 22.0, 25.0), REF)
    assert g.status == "graded" and g.reason is None
    assert g.rhlv is not None
    assert g.rhlv["anterior"] == pytest.approx(0.36)
    assert g.rhlv["middle"] == pytest.approx(0.12)
    assert g.rhlv["posterior"] == pytest.approx(0.0)
    assert g.grade == 2 and g.fracture_type == "wedge"
    # sigma = (1 - 0.36) * hypot(0.03, 0.5 / 16); the grade's band is [0.25, 0.40)
    sigma = 0.64 * math.hypot(0.03, 0.5 / 16.0)
    assert g.confidence == pytest.approx(grade_probability(0.36, sigma))


def test_normal_vertebra_has_no_type() -> None:
    g = grade_vertebra(L1, _h(24.0, 24.5, 25.0), REF)
    assert (g.grade, g.fracture_type) == (0, None)


def test_qc_flags_lower_the_confidence_in_order() -> None:
    clean = grade_vertebra(L1, _h(16.0, 22.0, 25.0), REF)
    flagged = grade_vertebra(
        L1, _h(16.0, 22.0, 25.0), REF, flags=("label_fragments", "mask_ct_disagree")
    )
    assert clean.confidence is not None and flagged.confidence is not None
    assert flagged.confidence == pytest.approx(clean.confidence * 0.8 * 0.7)
    assert flagged.grade == clean.grade  # flags never change the grade itself
    assert flagged.flags == ("label_fragments", "mask_ct_disagree")


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (("cut_by_fov",), "cut by the edge of the field of view"),
        (("no_body",), "no vertebral body"),
        (("implausible_size",), "implausible"),
    ],
)
def test_blocking_flags_make_it_not_gradable(flags: tuple[str, ...], reason: str) -> None:
    g = grade_vertebra(L1, _h(16.0, 22.0, 25.0), REF, flags=flags)
    assert g.status == "not_gradable" and g.grade is None and g.confidence is None
    assert g.reason is not None and reason in g.reason
    assert g.rhlv is not None  # the losses are still reported


def test_levels_outside_t1_l6_are_measured_not_graded() -> None:
    g = grade_vertebra(26, _h(16.0, 22.0, 25.0), REF)  # S1
    assert g.status == "not_gradable" and "S1 is not graded" in (g.reason or "")
    assert "level_not_graded" in g.flags


def test_no_reference_is_not_grade_zero() -> None:
    g = grade_vertebra(L1, _h(25.0, 25.0, 25.0), Reference(None, None, (), math.nan, "too far"))
    assert g.status == "not_gradable" and g.grade is None
    assert g.reason == "no usable reference: too far" and "no_reference" in g.flags
    g = grade_vertebra(L1, None, None)
    assert g.reason == "heights could not be measured"


def test_missing_third_is_not_gradable() -> None:
    h = RegionHeights(body=22.0, anterior=None, middle=22.0, posterior=25.0)
    g = grade_vertebra(L1, h, REF)
    assert g.status == "not_gradable" and g.reason == "regional heights incomplete"


@pytest.mark.parametrize(
    ("sources", "one_sided"),
    [(("T12", "L2"), False), (("T11", "T12"), True), (("L2", "L3"), True),
     (("synthesis-tiny-ab12",), False)],  # a model, not levels
)  # fmt: skip
def test_one_sided_reference_flag(sources: tuple[str, ...], one_sided: bool) -> None:
    g = grade_vertebra(L1, _h(24.0, 24.0, 25.0), Reference(HEALTHY, None, sources, 0.03))
    assert ("one_sided_reference" in g.flags) is one_sided


def test_thresholds_come_from_the_config() -> None:
    h = _h(21.0, 24.0, 25.0)  # 16 % anterior loss
    assert grade_vertebra(L1, h, REF).grade == 0
    cfg = GradingConfig(thresholds=(0.15, 0.25, 0.40))
    assert grade_vertebra(L1, h, REF, config=cfg).grade == 1


def test_loss_map_per_column() -> None:
    fp = np.array([[True, True], [True, False]])
    hm = HeightMap(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.full((2, 2), 20.0),
                   np.zeros((2, 2)), fp)  # fmt: skip
    measured = np.array([[15.0, 30.0], [-5.0, 20.0]])
    lm = loss_map(measured, np.full((2, 2), 20.0), hm)
    assert lm.values[0, 0] == pytest.approx(0.25)
    assert lm.values[0, 1] == pytest.approx(-0.5)
    assert lm.values[1, 0] == pytest.approx(1.0)  # clipped at total loss
    assert np.isnan(lm.values[1, 1])  # outside the footprint


def test_type_for_a_classifier_grade() -> None:
    losses = {"anterior": 0.12, "middle": 0.18, "posterior": 0.02}
    assert type_for_grade(0, "wedge", losses) is None
    assert type_for_grade(2, "crush", losses) == "crush"  # the thresholds' type is kept
    assert type_for_grade(1, None, losses) == "biconcave"  # formed from the losses
    assert type_for_grade(1, None, {"anterior": None, "middle": 0.1, "posterior": 0.0}) is None


def test_a_central_depression_grades_by_its_deepest_point() -> None:
    """A focal central endplate depression: the middle third's mean loses under 20 %, its
    deepest few millimetres 30 %: graded 2, biconcave, where the third's mean alone gives 0."""
    from vertgrade.geometry.thirds import footprint_thirds

    fp = np.zeros((34, 44), bool)
    fp[2:32, 2:42] = True
    regions = footprint_thirds(fp, step_mm=1.0)
    ap = np.arange(34, dtype=float)
    hm = HeightMap(ap, np.arange(44, dtype=float), np.full((34, 44), 25.0), np.zeros((34, 44)), fp)
    yy, xx = np.mgrid[:34, :44]
    dip = 0.45 * np.exp(-((yy - 17.0) ** 2 + (xx - 22.0) ** 2) / 12.0)
    measured = np.where(fp, 25.0 * (1.0 - dip), np.nan)
    middle_mean = float(np.mean(1.0 - measured[regions.middle] / 25.0))
    assert middle_mean < 0.20
    h = RegionHeights(
        body=float(np.mean(measured[regions.body])),
        anterior=float(np.mean(measured[regions.anterior])),
        middle=float(np.mean(measured[regions.middle])),
        posterior=float(np.mean(measured[regions.posterior])),
    )
    ref = Reference(HEALTHY, np.where(fp, 25.0, np.nan), ("T12", "L2"), 0.03)
    thirds_only = grade_vertebra(L1, h, ref)
    g = grade_vertebra(L1, h, ref, height_map=hm, measured_map_mm=measured, regions=regions)
    assert thirds_only.grade == 0 and thirds_only.central is None
    assert g.central is not None and 0.25 <= g.central.loss < 0.40
    assert g.central.index == (17, 22)
    assert (g.grade, g.fracture_type) == (2, "biconcave")
    assert g.rhlv is not None and g.rhlv["middle"] == pytest.approx(middle_mean)  # thirds kept


def test_shape_evidence_grades_a_wedge_the_reference_underestimates() -> None:
    """A reference 10 % too small (a neighbour of another size) hides a wedge from the RHLV; the
    vertebra's own shape (anterior against posterior, against L1's typical 0.97) does not."""
    h = _h(18.0, 23.0, 25.0)
    small = Reference(RegionHeights(20.0, 20.0, 22.0, 22.0), None, ("T12", "L2"), 0.03)
    g = grade_vertebra(20, h, small)
    assert g.rhlv is not None and g.rhlv["anterior"] == pytest.approx(0.1)
    assert g.shape is not None
    assert g.shape.wedge == pytest.approx(1 - (18.0 / 25.0) / (24.3 / 25.0))
    assert g.grade == 2 and g.fracture_type == "wedge" and g.basis == "shape_wedge"
    off = grade_vertebra(20, h, small, config=GradingConfig(shape_evidence=False))
    assert off.grade == 0 and off.shape is None and off.basis == "anterior"


def test_a_healthy_shape_adds_nothing() -> None:
    """A vertebra of its level's typical shape: the shape losses are zero, the RHLV grades."""
    t12 = _h(22.6, 0.96 * 0.5 * (22.6 + 23.6), 23.6)
    ref = Reference(RegionHeights(30.0, 30.0, 30.0, 30.0), None, ("T11", "L1"), 0.03)
    g = grade_vertebra(19, t12, ref)
    assert g.shape is not None
    assert g.shape.wedge == pytest.approx(0.0, abs=1e-9)
    assert g.shape.biconcave == pytest.approx(0.0, abs=1e-9)
    assert g.basis == "middle" and g.grade == 2
