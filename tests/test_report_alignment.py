"""The report's alignment section, its height-loss maps and its words.

A scoliotic phantom with fractures: the endplate lines drawn on the coronal and sagittal views
make the Cobb angles, kyphosis and lordosis that the result reports (the views keep the world's
angles); every figure's text is at least the size the print checks assume; the loss map shows in
colour only the core of the footprint that grading reads, and greys the rim; the impression and
the parameter appendix say what the result holds.
"""

from __future__ import annotations

from html import unescape
from typing import Any

import numpy as np
import pytest
from matplotlib.text import Text
from scipy import ndimage

from vertgrade import grade_study
from vertgrade.config import ThirdsParams
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom
from vertgrade.report.alignment import alignment_figure
from vertgrade.report.figures import (
    FIGURE_MIN_FONT_PT,
    figure_png,
    loss_map_regions,
    overview_figure,
    vertebra_figure,
)
from vertgrade.report.html import _parameters_html, render_report
from vertgrade.report.summary import changed_parameters, impression
from vertgrade.result import SpineResult
from vertgrade.study import Study, Volume


@pytest.fixture(scope="module")
def graded() -> tuple[SpineResult, Study]:
    ph = make_phantom(
        "T6-L4",
        ("L1:wedge:0.35",),
        spacing=2.0,
        fov_mm=(160.0, 150.0),
        scoliosis="T5-T11:right:30,T11-L4:left:25",
        kyphosis_deg=40.0,
        lordosis_deg=45.0,
        seed=11,
    )
    study = study_from_arrays(ph.labels, ph.affine, ct=ph.ct, subject="scoliosis")
    return grade_study(study), study


@pytest.fixture(scope="module")
def document(graded: tuple[SpineResult, Study]) -> dict[str, Any]:
    return graded[0].to_dict()


def _bodies(result: SpineResult) -> Volume:
    return Volume(result.bodies, result.bodies_affine, "labels")


# --- the alignment figure -------------------------------------------------------------------


def test_drawn_endplates_make_the_reported_angles(
    graded: tuple[SpineResult, Study], document: dict[str, Any]
) -> None:
    result, study = graded
    drawn = alignment_figure(document, ct=study.ct, bodies=_bodies(result))
    assert drawn is not None and drawn.background == "ct"
    curves = document["alignment"]["coronal"]["curves"]
    assert len(curves) == 2  # the phantom's two curves
    by_role: dict[str, list[Any]] = {}
    for line in drawn.lines:
        by_role.setdefault(line.role, []).append(line)
    by_level = {v["level"]: v for v in document["vertebrae"]}
    for i, c in enumerate(curves, start=1):
        upper, lower = by_role[f"cobb {i}"]
        assert (upper.level, upper.endplate) == (c["upper_end"], "superior")
        assert (lower.level, lower.endplate) == (c["lower_end"], "inferior")
        # the angle between the two lines drawn is the Cobb angle, and its sign the convexity
        assert abs(upper.angle_deg - lower.angle_deg) == pytest.approx(c["cobb_deg"], abs=0.02)
        assert (upper.angle_deg > lower.angle_deg) == (c["convex"] == "right")
        # drawn through the endplate's point, in the coronal plane (x, z)
        point = by_level[c["upper_end"]]["endplates"]["superior"]["point_mm"]
        assert upper.centre_mm == pytest.approx((point[0], point[2]))
    sagittal = document["alignment"]["sagittal"]
    kyphosis, lordosis = sagittal["thoracic_kyphosis"], sagittal["lumbar_lordosis"]
    assert kyphosis["angle_deg"] > 10 and lordosis["angle_deg"] > 10
    up, low = by_role["kyphosis"]
    assert (up.level, low.level) == (kyphosis["upper"], kyphosis["lower"])
    assert low.angle_deg - up.angle_deg == pytest.approx(kyphosis["angle_deg"], abs=0.02)
    up, low = by_role["lordosis"]
    assert up.angle_deg - low.angle_deg == pytest.approx(lordosis["angle_deg"], abs=0.02)


def test_views_are_world_planes_through_the_bodies(
    graded: tuple[SpineResult, Study], document: dict[str, Any]
) -> None:
    result, study = graded
    drawn = alignment_figure(document, ct=study.ct, bodies=_bodies(result))
    assert drawn is not None
    for view, across, depth in ((drawn.coronal, 0, 1), (drawn.sagittal, 1, 0)):
        pts = view.points_mm
        # rows are world heights, columns one world axis: angles are the world's
        np.testing.assert_allclose(
            pts[..., 2], np.broadcast_to(view.z_mm[None, :, None], pts.shape[:3])
        )
        np.testing.assert_allclose(
            pts[..., across], np.broadcast_to(view.across_mm[None, None, :], pts.shape[:3])
        )
        # the middle sheet's depth passes through every body centre
        middle = pts[int(np.argmin(np.abs(view.slab_mm)))]
        for v in result.vertebrae:
            row = int(np.argmin(np.abs(view.z_mm - v.centroid_mm[2])))
            assert abs(middle[row, 0, depth] - v.centroid_mm[depth]) < 3.0, (view.view, v.level)
    # the coronal view is seen from the front: the patient's right on the left
    ax_c = drawn.figure.axes[0]
    left, right = ax_c.get_xlim()
    assert left > right


@pytest.mark.slow
def test_alignment_section_lists_the_angles(graded: tuple[SpineResult, Study]) -> None:
    text = unescape(render_report(*graded))
    section = text.split('id="alignment"')[1].split('id="panels"')[0]
    alignment = graded[0].alignment
    assert alignment is not None
    for c in alignment.curves:
        assert f"{c.cobb_deg:.1f}°" in section and f"{c.upper_end}–{c.lower_end}" in section
    assert alignment.kyphosis.angle_deg is not None and alignment.lordosis.angle_deg is not None
    assert f"{alignment.kyphosis.angle_deg:.1f}°" in section
    assert f"{alignment.lordosis.angle_deg:.1f}°" in section
    assert section.count("<img") == 1


def test_figure_text_is_at_least_the_smallest_print_size(
    graded: tuple[SpineResult, Study], document: dict[str, Any]
) -> None:
    result, study = graded
    bodies = _bodies(result)
    figures = [
        overview_figure(document, ct=study.ct, bodies=bodies),
        alignment_figure(document, ct=study.ct, bodies=bodies),
        vertebra_figure(document["vertebrae"][0], ct=study.ct, bodies=bodies),
    ]
    for drawn in figures:
        assert drawn is not None
        figure_png(drawn.figure)  # drawn: the tick labels exist
        sizes = [
            t.get_fontsize()
            for t in drawn.figure.findobj(Text)
            if t.get_visible() and t.get_text().strip()
        ]
        assert sizes and min(sizes) >= FIGURE_MIN_FONT_PT, type(drawn).__name__
        # and each figure fits A4's width (7.3 in inside the margins) at its own size
        assert drawn.figure.get_size_inches()[0] <= 7.85


# --- the loss map's rim ---------------------------------------------------------------------


def test_loss_map_greys_the_rim_the_grade_does_not_read(
    graded: tuple[SpineResult, Study], document: dict[str, Any]
) -> None:
    result, study = graded
    params = ThirdsParams()
    for v in document["vertebrae"]:
        lm = v["loss_map"]
        values = np.array(
            [[np.nan if x is None else x for x in row] for row in lm["values"]], dtype=float
        )
        ap, lr = np.asarray(lm["ap_mm"]), np.asarray(lm["lr_mm"])
        regions = loss_map_regions(values, ap, lr, params)
        step = float(ap[1] - ap[0])
        rim = regions.footprint & ~regions.core
        assert not (regions.core & ~regions.footprint).any() and rim.any() and regions.core.any()
        # the rim is the footprint's edge: every rim cell within rim_mm (and a cell) of outside
        outside = ndimage.distance_transform_edt(np.pad(regions.footprint, 1))[1:-1, 1:-1]
        assert (outside[rim] * step <= params.rim_mm + step + 1e-9).all()
        assert set(regions.thirds) == {"anterior", "middle", "posterior"}
        # what the figure shows: the rim in one flat grey, colour only on the core
        fig = vertebra_figure(v, ct=study.ct, bodies=_bodies(result), regions=params)
        rim_img, *coloured = fig.figure.axes[1].images
        rgba = np.asarray(rim_img.get_array())
        assert (rgba[..., 3] > 0).sum() == rim.sum()
        assert len(np.unique(rgba[rim].round(6), axis=0)) == 1
        for img in coloured:
            shown = np.isfinite(np.ma.filled(img.get_array(), np.nan))
            assert not (shown & rim).any()
        union = np.logical_or.reduce(
            [np.isfinite(np.ma.filled(i.get_array(), np.nan)) for i in coloured]
        )
        np.testing.assert_array_equal(union, regions.core)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_case_saturated_rim_is_greyed(data_dir: Any) -> None:
    """verse012: the healthy vertebrae's loss maps saturate at the footprint's edge (the rounded
    endplates); in colour, where the grade reads (the thirds), they stay near zero."""
    from vertgrade import load_study

    study = load_study(data_dir / "verse012")
    doc = grade_study(study).to_dict()
    rim_extreme = 0
    for v in doc["vertebrae"]:
        if v["status"] != "graded" or v["grade"] != 0:
            continue
        lm = v["loss_map"]
        values = np.array(
            [[np.nan if x is None else x for x in row] for row in lm["values"]], dtype=float
        )
        ap, lr = np.asarray(lm["ap_mm"]), np.asarray(lm["lr_mm"])
        regions = loss_map_regions(values, ap, lr)
        rim = regions.footprint & ~regions.core
        rim_extreme += int((np.abs(values[rim]) >= 0.5).sum())
        inside = np.zeros_like(regions.core)
        for x0, x1, y0, y1 in regions.thirds.values():
            in_lr = (lr[None, :] >= x0) & (lr[None, :] <= x1)
            inside |= in_lr & (ap[:, None] >= y0) & (ap[:, None] <= y1)
        inside &= regions.core
        assert np.nanpercentile(np.abs(values[inside]), 95) < 0.3, v["level"]
    assert rim_extreme > 10  # the rim the report greys out does saturate


# --- words ----------------------------------------------------------------------------------


def test_impression_names_fractures_and_what_was_not_graded() -> None:
    def v(level: str, grade: int | None, ftype: str | None = None, reason: str = "") -> Any:
        status = "graded" if grade is not None else "not_gradable"
        return {"level": level, "status": status, "grade": grade, "type": ftype, "reason": reason}

    doc = {
        "vertebrae": [
            v("C7", None, reason="C7 is not graded (vertgrade grades T1-L6)"),
            v("T1", None, reason="the vertebral body is cut by the edge of the field of view"),
            v("T2", None, reason="the vertebral body is cut by the edge of the field of view"),
            v("T7", 1, "wedge"),
            v("T12", 3, "biconcave"),
            v("L1", 0),
        ]
    }
    assert impression(doc) == (
        "severe biconcave fracture of T12; mild wedge fracture of T7; no other fracture; "
        "T1 and T2 not gradable: cut by the field of view; C7 not graded (outside T1-L6)"
    )
    assert impression({"vertebrae": [v("L1", None, reason="no usable reference: none")]}) == (
        "no vertebra could be graded; L1 not gradable: no usable reference"
    )


def test_parameter_appendix_lists_what_differs_from_the_defaults(
    document: dict[str, Any],
) -> None:
    same = _parameters_html(document)
    assert "Every other parameter is the default" in same and "<pre>" in same
    changed = {**document, "provenance": dict(document["provenance"])}
    params = dict(changed["provenance"]["parameters"])
    params["central_radius_mm"] = 4.5
    params["morphometry"] = {**params["morphometry"], "step_si_mm": 0.25}
    changed["provenance"]["parameters"] = params
    text = unescape(_parameters_html(changed))
    assert "2 parameters differ from the defaults" in text
    assert "central_radius_mm" in text and "morphometry.step_si_mm" in text
    assert changed_parameters(params, document["provenance"]["parameters"]) == [
        ("central_radius_mm", 4.5, document["provenance"]["parameters"]["central_radius_mm"]),
        ("morphometry.step_si_mm", 0.25, 0.5),
    ]
