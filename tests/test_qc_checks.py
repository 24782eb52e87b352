"""The QC flags and their checks, on literal values (the phantom cases are in test_qc.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vertgrade.qc import (
    QCFlag,
    border_contacts,
    flag_texts,
    has_fragments,
    heights_disagree,
    implausible_sizes,
    one_sided,
    penalised,
)
from vertgrade.result import QC_FLAGS


def test_every_flag_has_a_name_a_text_and_an_effect() -> None:
    names = [f.value for f in QCFlag]
    assert len(names) == len(set(names))
    for f in QCFlag:
        assert f.text and not f.text.endswith(".")  # a phrase, shown after the name
        assert 0.0 < f.confidence_factor <= 1.0
        # a flag that stops grading has nothing to lower
        assert not (f.blocks_grading and f.confidence_factor != 1.0)
    assert QC_FLAGS == flag_texts()  # what result.json lists


def test_flags_are_their_names_as_strings() -> None:
    assert QCFlag.CUT_BY_FOV == "cut_by_fov"
    assert f"{QCFlag.NO_BODY}" == "no_body" and str(QCFlag.NO_BODY) == "no_body"
    assert QCFlag("mask_ct_disagree") is QCFlag.MASK_CT_DISAGREE


def test_penalised_in_order_and_unknown_names_refused() -> None:
    assert penalised(1.0, []) == 1.0
    assert penalised(0.5, ["label_fragments"]) == pytest.approx(0.4)
    assert penalised(0.5, [QCFlag.CANAL_NOT_FOUND, "ct_edges_sparse"]) == pytest.approx(
        0.5 * 0.85 * 0.9
    )
    with pytest.raises(KeyError):
        penalised(1.0, ["not_a_flag"])


@pytest.mark.parametrize(
    ("n", "dropped", "expected"), [(1, 0.0, False), (1, 0.01, False), (1, 0.011, True),
                                   (2, 0.0, True)]
)  # fmt: skip
def test_fragments(n: int, dropped: float, expected: bool) -> None:
    assert has_fragments(n, dropped) is expected


def test_border_contacts_tell_a_cut_from_a_touch() -> None:
    body = np.zeros((12, 12, 12), bool)
    body[2:10, 2:10, 0:8] = True  # cut flat by the bottom face
    one = (1.0, 1.0, 1.0)
    assert border_contacts(body, (0, 0, 0), (12, 12, 30), one) == {"inferior": 1.0}
    # the same body in a larger image, not at its border: no contact
    assert border_contacts(body, (0, 0, 5), (12, 12, 30), one) == {}
    # a rounded body cropped tight: it reaches every face in a few voxels only
    ball = np.linalg.norm(np.indices((15, 15, 15)) - 7.0, axis=0) <= 7.0
    contacts = border_contacts(ball, (0, 0, 0), (15, 15, 15), one)
    assert set(contacts) == {"left", "right", "posterior", "anterior", "inferior", "superior"}
    assert max(contacts.values()) < 0.1


def test_heights_disagree_needs_both_bounds() -> None:
    a = {"anterior": 20.0, "middle": 20.0, "posterior": 20.0}
    assert not heights_disagree(a, {**a, "middle": 21.9}, mm=2.0, fraction=0.10)  # < 2 mm
    assert not heights_disagree(  # 2.5 mm but under 10 % of 30 mm
        {"anterior": 30.0}, {"anterior": 27.5}, mm=2.0, fraction=0.10
    )
    assert heights_disagree(a, {**a, "posterior": 23.0}, mm=2.0, fraction=0.10)
    assert not heights_disagree(a, {"anterior": None}, mm=2.0, fraction=0.10)


def test_implausible_sizes_relative_to_this_spine() -> None:
    bounds = {"relative_bounds": (0.45, 1.6), "scale_bounds": (0.35, 2.5)}
    # a small patient: every ratio 0.7, one label half that again (a label problem)
    ratios = {17: 0.7, 18: 0.71, 19: 0.69, 20: 0.3}
    assert implausible_sizes(ratios, **bounds) == {20}
    # a spine 3 times the normative size is a units problem: every vertebra
    assert implausible_sizes({17: 3.0, 18: 3.1}, **bounds) == {17, 18}
    assert implausible_sizes({}, **bounds) == set()
    # even count: the median is the mean of the middle two (0.7 and 0.9 -> 0.8)
    assert implausible_sizes({1: 0.5, 2: 0.7, 3: 0.9, 4: 1.4}, **bounds) == {4}


def test_one_sided() -> None:
    assert one_sided(20, [18, 19]) and one_sided(20, [21])
    assert not one_sided(20, [19, 21])
