"""The neighbour reference on literal heights: scales, healthy set, reach and uncertainty.

Each vertebra's heights are its level's normative heights (:func:`vertgrade.levels.normative_shape`)
times a patient scale, so the expected reference of every vertebra is known exactly.
"""

from __future__ import annotations

import pytest

from vertgrade.config import NeighbourParams
from vertgrade.levels import label_id, normative_shape
from vertgrade.morphometry import RegionHeights
from vertgrade.reference import MeasuredVertebra, NeighbourReference, ReferenceEstimator

SCALE = 1.1


def _heights(level: str, scale: float = SCALE, anterior: float = 1.0) -> RegionHeights:
    n = normative_shape(label_id(level))
    a, m, p = scale * anterior * n.anterior_mm, scale * n.middle_mm, scale * n.posterior_mm
    return RegionHeights((a + m + p) / 3, a, m, p)


def _mv(level: str, heights: RegionHeights | None = None, usable: bool = True) -> MeasuredVertebra:
    h = heights if heights is not None else _heights(level)
    return MeasuredVertebra(label_id(level), h, None, None, None, usable)


def _expected(level: str, scale: float = SCALE) -> RegionHeights:
    return _heights(level, scale)


def test_is_a_reference_estimator() -> None:
    assert isinstance(NeighbourReference(), ReferenceEstimator)
    assert NeighbourReference().name == "neighbours"


def test_fracture_between_healthy_neighbours() -> None:
    spine = [_mv("T11"), _mv("T12"), _mv("L1", _heights("L1", anterior=0.6)), _mv("L2"), _mv("L3")]
    refs = NeighbourReference().estimate(spine)
    r = refs[label_id("L1")]
    assert r.sources == ("T12", "L2")
    assert r.heights is not None
    for k in ("anterior", "middle", "posterior"):
        assert r.heights.get(k) == pytest.approx(_expected("L1").get(k))
    assert r.uncertainty == pytest.approx(NeighbourParams().base_uncertainty)
    assert r.height_map_mm is None  # no footprint grid given


def test_two_adjacent_fractures_reach_past_each_other() -> None:
    spine = [
        _mv("T10"),
        _mv("T11"),
        _mv("T12", _heights("T12", anterior=0.65)),
        _mv("L1", _heights("L1", anterior=0.6)),
        _mv("L2"),
        _mv("L3"),
    ]
    refs = NeighbourReference().estimate(spine)
    assert refs[label_id("T12")].sources == ("T11", "L2")
    assert refs[label_id("L1")].sources == ("T11", "L2")  # past the fractured T12
    r = refs[label_id("L1")].heights
    assert r is not None and r.anterior == pytest.approx(_expected("L1").anterior)
    # the nearer source is one level away: the uncertainty of adjacent levels
    assert refs[label_id("L1")].uncertainty == pytest.approx(NeighbourParams().base_uncertainty)


def test_end_vertebra_is_one_sided_with_more_uncertainty() -> None:
    spine = [_mv("T12"), _mv("L1"), _mv("L2"), _mv("L3")]
    r = NeighbourReference().estimate(spine)[label_id("T12")]
    assert r.sources == ("L1", "L2")
    assert r.uncertainty == pytest.approx(1.5 * NeighbourParams().base_uncertainty)
    assert r.heights is not None and r.heights.posterior == pytest.approx(
        _expected("T12").posterior
    )


def test_unusable_vertebrae_are_never_neighbours() -> None:
    spine = [_mv("T12"), _mv("L1", usable=False), _mv("L2"), _mv("L3")]
    refs = NeighbourReference().estimate(spine)
    assert "L1" not in refs[label_id("L2")].sources
    assert refs[label_id("L1")].sources == ("T12", "L2")  # it still gets a reference


def test_no_healthy_vertebra_within_reach() -> None:
    spine = [_mv("T12"), _mv("L3")]
    refs = NeighbourReference(NeighbourParams(max_level_gap=2)).estimate(spine)
    r = refs[label_id("T12")]
    assert r.heights is None and r.reason == "no healthy vertebra within 2 levels above or below"
    assert NeighbourReference().estimate([_mv("L1", None)])[label_id("L1")].reason


def test_a_deformed_vertebra_does_not_drag_its_neighbours_down() -> None:
    # a biconcave L1 (middle 30 % short) next to healthy L2: L2's reference is not lowered
    n = normative_shape(label_id("L1"))
    biconcave = RegionHeights(
        SCALE * n.middle_mm,
        SCALE * n.anterior_mm,
        0.7 * SCALE * n.middle_mm,
        SCALE * n.posterior_mm,
    )
    spine = [_mv("T12"), _mv("L1", biconcave), _mv("L2"), _mv("L3")]
    r = NeighbourReference().estimate(spine)[label_id("L2")]
    assert "L1" not in r.sources
    assert r.heights is not None and r.heights.middle == pytest.approx(_expected("L2").middle)


def test_a_reference_on_one_vertebra_says_so() -> None:
    spine = [_mv("L2"), _mv("L3")]
    r = NeighbourReference().estimate(spine)[label_id("L2")]
    assert r.sources == ("L3",) and "single_source_reference" in r.flags
    both = NeighbourReference().estimate([_mv("L1"), _mv("L2"), _mv("L3")])[label_id("L2")]
    assert "single_source_reference" not in both.flags


def test_a_run_of_deformities_is_flagged_not_called_normal() -> None:
    """Most vertebrae mildly wedged: the few healthy ones carry every reference; every
    reference says that it rests on a spine that mostly does not look healthy."""
    wedged = [_mv(lv, _heights(lv, anterior=0.82)) for lv in ("T11", "T12", "L1", "L2")]
    spine = [_mv("T10"), *wedged, _mv("L3")]
    refs = NeighbourReference().estimate(spine)
    assert all("few_healthy_neighbours" in r.flags for r in refs.values())
    healthy = NeighbourReference().estimate([_mv(lv) for lv in ("T11", "T12", "L1", "L2")])
    assert not any("few_healthy_neighbours" in r.flags for r in healthy.values())
