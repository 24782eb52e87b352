"""The report's alignment figure: a coronal and a sagittal view with the endplates the angles are
taken between.

The angles of :mod:`vertgrade.alignment` are measured between endplate planes projected onto the
patient's coronal (``x-z``) and sagittal (``y-z``) world planes, as a Cobb angle is drawn on a
radiograph. The views here are sampled in those same planes (:func:`~vertgrade.report.reformat.
plane_view`: rows are the world height, columns world ``x`` or ``y``, and each row's depth follows
the spine's centreline so that every body is cut through its centre), at equal scale on both
axes, so that an endplate line drawn with its projected angle lies on the endplate in the image
and the angle between two drawn lines is the angle reported:

- coronal (left): each coronal curve's two end endplates (the upper end vertebra's superior
  endplate, the lower end vertebra's inferior one), extended across the image, with the Cobb
  angle, the end vertebrae, the apex and the convex side in the title; viewed from the front,
  the patient's right on the left;
- sagittal (right): the endplates thoracic kyphosis and lumbar lordosis are measured between,
  anterior on the left (as the overview).

Every body is outlined in its grade's colour (:data:`vertgrade.report.style.GRADE_COLOURS`).
The figure reads the result as ``result.json`` holds it (its ``alignment`` object).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import NDArray

from vertgrade.report.figures import _TITLE_Y, FONT_PT, _contour, _fix_ticks, _halo, _window
from vertgrade.report.reformat import PlaneView, document_centreline, plane_view, sample_world
from vertgrade.report.style import ALIGNMENT_COLOURS, grade_colour
from vertgrade.study import Volume

__all__ = ["AlignmentFigure", "EndplateLine", "alignment_figure"]

# --- constants ----------------------------------------------------------------------------------

# Sampling step of both views (mm), and how far they reach above the first and below the last
# body centre (half a lumbar body plus its disc).
_STEP_MM = 1.0
_MARGIN_MM = 25.0
# Coronal view: at least this far left and right of the centreline's median (mm); a lumbar body
# is ~50 mm wide, the transverse processes reach ~45 mm from the midline.
_CORONAL_HALF_MM = 70.0
_CORONAL_BEYOND_MM = 55.0
# Sagittal view: anterior and posterior reach from the centreline (as the overview's).
_SAGITTAL_ANTERIOR_MM = 45.0
_SAGITTAL_POSTERIOR_MM = 80.0
# Depths averaged into each view (mm from the centreline): a slab through the bodies, thinner in
# the sagittal view, where the spinal canal and the processes are narrow.
_CORONAL_SLAB_MM = (-8.0, -4.0, 0.0, 4.0, 8.0)
_SAGITTAL_SLAB_MM = (-2.0, 0.0, 2.0)
# Half-length of a drawn endplate line (mm): past both sides of a lumbar body.
_LINE_HALF_MM = 45.0
# Lines stop this far inside the view's edges (mm), so that their labels stay inside.
_INSET_MM = 3.0
# The figure's largest size (inches): printed on A4 (186 x 273 mm inside the margins) at its own
# size, so that its text keeps its point size on paper, with the section's table on one page.
_MAX_WIDTH_IN = 7.2
_MAX_AXES_HEIGHT_IN = 6.8
_DPI = 100


# --- what was drawn -------------------------------------------------------------------------


@dataclass(frozen=True)
class EndplateLine:
    """One endplate drawn on a view, in the view's world coordinates (mm).

    ``endplate`` is ``"superior"`` or ``"inferior"``; ``centre_mm`` is ``(across, z)``;
    ``angle_deg`` is the line's angle to the horizontal in the view's plane, measured with
    ``across`` increasing to the right (x for the coronal view, y for the sagittal one), before
    the view is mirrored for display: the difference of two lines' angles is the angle between
    their endplates in that plane.
    """

    view: Literal["coronal", "sagittal"]
    role: str
    level: str
    endplate: str
    centre_mm: tuple[float, float]
    angle_deg: float
    colour: str


@dataclass(frozen=True)
class AlignmentFigure:
    """The alignment figure and what was drawn on it.

    Attributes
    ----------
    figure : Figure
    coronal, sagittal : PlaneView
        Where the views were sampled.
    lines : tuple of EndplateLine
        The endplates drawn, Cobb curves first.
    background : {"ct", "labels", "plain"}
    """

    figure: Figure
    coronal: PlaneView
    sagittal: PlaneView
    lines: tuple[EndplateLine, ...]
    background: Literal["ct", "labels", "plain"]


def _endplate(vertebra: Mapping[str, Any] | None, which: str) -> Mapping[str, Any] | None:
    if vertebra is None:
        return None
    planes = vertebra.get("endplates") or {}
    plane = planes.get(which)
    return plane if plane and plane.get("normal") and plane.get("point_mm") else None


def _line(
    view: Literal["coronal", "sagittal"],
    plane: Mapping[str, Any],
    role: str,
    level: str,
    which: str,
    colour: str,
) -> EndplateLine | None:
    """An endplate's trace in a view: through its point, perpendicular to its projected normal."""
    axis = 0 if view == "coronal" else 1
    n = np.asarray(plane["normal"], dtype=np.float64)
    p = np.asarray(plane["point_mm"], dtype=np.float64)
    n_across, n_z = float(n[axis]), float(n[2])
    if math.hypot(n_across, n_z) < 1e-6:
        return None
    # the trace runs along (n_z, -n_across): its angle to the horizontal
    angle = math.degrees(math.atan2(-n_across, n_z))
    return EndplateLine(view, role, level, which, (float(p[axis]), float(p[2])), angle, colour)


def _draw_line(ax: Axes, view: PlaneView, line: EndplateLine, label: str) -> None:
    a = math.radians(line.angle_deg)
    d = np.array([math.cos(a), math.sin(a)])
    c = np.asarray(line.centre_mm)
    # the line reaches _LINE_HALF_MM either side, cut where it would leave the view
    lo = np.array([view.across_mm[0], view.z_mm[-1]]) + _INSET_MM
    hi = np.array([view.across_mm[-1], view.z_mm[0]]) - _INSET_MM
    t0, t1 = -_LINE_HALF_MM, _LINE_HALF_MM
    for k in range(2):
        if abs(d[k]) > 1e-9:
            ta, tb = sorted(((lo[k] - c[k]) / d[k], (hi[k] - c[k]) / d[k]))
            t0, t1 = max(t0, ta), min(t1, tb)
    if t1 <= t0:
        return
    ends = np.stack([c + t0 * d, c + t1 * d])
    ax.plot(ends[:, 0], ends[:, 1], color=line.colour, lw=1.6, path_effects=_halo(3.0))
    # a superior endplate's label above its line at the viewer's right end, an inferior one's
    # below its line at the left end, both reaching inwards: the labels of one disc's two
    # endplates do not overlap (the views are mirrored: the viewer's right is the lower across)
    superior = line.endplate == "superior"
    end = ends[int(np.argmin(ends[:, 0]) if superior else np.argmax(ends[:, 0]))]
    ax.text(
        end[0],
        end[1],
        label,
        color="white",
        fontsize=FONT_PT["annotation"],
        ha="right" if superior else "left",
        va="bottom" if superior else "top",
        bbox={"boxstyle": "round,pad=0.15", "facecolor": line.colour, "alpha": 0.8, "lw": 0},
        clip_on=True,
    )


def _view_image(
    view: PlaneView,
    ct: Volume | None,
    bodies: Volume | None,
    labels: Volume | None,
) -> tuple[NDArray[np.float32], NDArray[np.int64], Literal["ct", "labels", "plain"]]:
    """The view's grey image (0-1), the body labels at its middle sheet, and what it shows."""
    middle = view.points_mm[int(np.argmin(np.abs(view.slab_mm)))]
    outline_vol = bodies if bodies is not None else labels
    body_img = (
        np.rint(sample_world(outline_vol, middle, order=0)).astype(np.int64)
        if outline_vol is not None
        else np.zeros(middle.shape[:2], np.int64)
    )
    if ct is not None:
        hu = sample_world(ct, view.points_mm, order=1, cval=-1000.0).mean(axis=0)
        return _window(hu.astype(np.float32)), body_img, "ct"
    image = np.full(body_img.shape, 0.06, np.float32)
    background: Literal["ct", "labels", "plain"] = "plain"
    if labels is not None:
        image[sample_world(labels, middle, order=0) > 0] = 0.30
        background = "labels"
    if bodies is not None:
        image[body_img > 0] = 0.45
    return image, body_img, background


def _show(
    ax: Axes,
    view: PlaneView,
    image: NDArray[np.float32],
    body_img: NDArray[np.int64],
    outline_vol: Volume | None,
    verts: Sequence[Mapping[str, Any]],
) -> None:
    half = 0.5 * _STEP_MM
    a, z = view.across_mm, view.z_mm
    ax.imshow(
        image,
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=(a[0] - half, a[-1] + half, z[-1] - half, z[0] + half),
        origin="upper",
        interpolation="bilinear",
    )
    middle = view.points_mm[int(np.argmin(np.abs(view.slab_mm)))]
    ticks: list[tuple[float, str]] = []
    for v in verts:
        colour = grade_colour(v.get("grade") if v.get("status") == "graded" else None)
        centre = v.get("centroid_mm")
        if centre is not None:
            ticks.append((float(centre[2]), str(v["level"])))
        where = np.nonzero(body_img == int(v["label"]))
        if outline_vol is None or where[0].size == 0:
            continue
        r0, r1 = max(int(where[0].min()) - 3, 0), int(where[0].max()) + 4
        c0, c1 = max(int(where[1].min()) - 3, 0), int(where[1].max()) + 4
        mask = sample_world(outline_vol, middle[r0:r1, c0:c1], order=1, label=int(v["label"]))
        _contour(ax, a[c0:c1], z[r0:r1], mask, colour=colour, width=1.2)
    ax.set_xlim(a[-1] + half, a[0] - half)  # mirrored: patient's right (coronal), anterior left
    ax.set_ylim(z[-1] - half, z[0] + half)
    ax.set_aspect("equal")
    ticks.sort(reverse=True)
    ax.set_yticks([t for t, _ in ticks], [lv for _, lv in ticks])
    ax.tick_params(labelsize=FONT_PT["tick"], length=3)


def _coronal_title(alignment: Mapping[str, Any]) -> str:
    coronal = alignment.get("coronal") or {}
    curves = coronal.get("curves") or []
    if not curves:
        largest = coronal.get("largest_angle_deg")
        return "coronal: no curve to report" + (
            f"\n(largest angle {float(largest):.1f}°)" if largest is not None else ""
        )
    lines = []
    for i, c in enumerate(curves, start=1):
        mark = "" if c.get("complete", True) else "*"
        lines.append(
            f"{i}: Cobb {float(c['cobb_deg']):.1f}° {c['upper_end']}-{c['lower_end']}{mark}, "
            f"convex {c['convex']}"
        )
    return "coronal\n" + "\n".join(lines)


def _sagittal_title(alignment: Mapping[str, Any]) -> str:
    sagittal = alignment.get("sagittal") or {}
    lines = []
    for key, name in (("thoracic_kyphosis", "kyphosis"), ("lumbar_lordosis", "lordosis")):
        a = sagittal.get(key) or {}
        if a.get("angle_deg") is None:
            lines.append(f"{name}: not measured")
        else:
            mark = "" if a.get("standard") else "*"
            lines.append(f"{name} {float(a['angle_deg']):.1f}° {a['upper']}-{a['lower']}{mark}")
    return "sagittal\n" + "\n".join(lines)


def alignment_figure(
    document: Mapping[str, Any],
    *,
    ct: Volume | None = None,
    bodies: Volume | None = None,
    labels: Volume | None = None,
) -> AlignmentFigure | None:
    """The coronal and sagittal views with the endplates of the Cobb angles, kyphosis and
    lordosis drawn (see the module docstring).

    Parameters
    ----------
    document : mapping
        The result as ``result.json`` holds it, with its ``alignment`` object.
    ct, bodies, labels : Volume, optional
        As for :func:`vertgrade.report.figures.overview_figure`.

    Returns
    -------
    AlignmentFigure or None
        ``None`` when the result has no alignment or no centreline to follow.
    """
    alignment = document.get("alignment")
    centreline = document_centreline(document)
    if not alignment or centreline is None:
        return None
    verts: list[Mapping[str, Any]] = list(document.get("vertebrae") or [])
    by_level = {str(v["level"]): v for v in verts}
    mid_x = float(np.median(centreline[:, 0]))
    half_x = max(
        _CORONAL_HALF_MM, float(np.abs(centreline[:, 0] - mid_x).max()) + _CORONAL_BEYOND_MM
    )
    coronal = plane_view(
        centreline,
        "coronal",
        across_mm=(mid_x - half_x, mid_x + half_x),
        margin_mm=_MARGIN_MM,
        step_mm=_STEP_MM,
        slab_mm=_CORONAL_SLAB_MM,
    )
    sagittal = plane_view(
        centreline,
        "sagittal",
        across_mm=(
            float(centreline[:, 1].min()) - _SAGITTAL_POSTERIOR_MM,
            float(centreline[:, 1].max()) + _SAGITTAL_ANTERIOR_MM,
        ),
        margin_mm=_MARGIN_MM,
        step_mm=_STEP_MM,
        slab_mm=_SAGITTAL_SLAB_MM,
    )

    # the size: both views at one scale, as tall as fits the page's width and height
    span = float(coronal.z_mm[0] - coronal.z_mm[-1]) + _STEP_MM
    w_c = float(coronal.across_mm[-1] - coronal.across_mm[0]) + _STEP_MM
    w_s = float(sagittal.across_mm[-1] - sagittal.across_mm[0]) + _STEP_MM
    left, gap, right, bottom, top = 0.55, 0.75, 0.15, 0.45, 0.85
    scale = min(_MAX_AXES_HEIGHT_IN / span, (_MAX_WIDTH_IN - left - gap - right) / (w_c + w_s))
    ax_h, ax_wc, ax_ws = span * scale, w_c * scale, w_s * scale
    fig_w, fig_h = left + ax_wc + gap + ax_ws + right, bottom + ax_h + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI)
    ax_c = fig.add_axes((left / fig_w, bottom / fig_h, ax_wc / fig_w, ax_h / fig_h))
    ax_s = fig.add_axes(((left + ax_wc + gap) / fig_w, bottom / fig_h, ax_ws / fig_w, ax_h / fig_h))

    outline_vol = bodies if bodies is not None else labels
    background: Literal["ct", "labels", "plain"] = "plain"
    for ax, view in ((ax_c, coronal), (ax_s, sagittal)):
        image, body_img, background = _view_image(view, ct, bodies, labels)
        _show(ax, view, image, body_img, outline_vol, verts)
    ax_c.set_xlabel("x (mm), patient's right on the left", fontsize=FONT_PT["label"])
    ax_s.set_xlabel("y (mm), anterior on the left", fontsize=FONT_PT["label"])
    ax_c.set_title(_coronal_title(alignment), fontsize=FONT_PT["title"], loc="left", y=_TITLE_Y)
    ax_s.set_title(_sagittal_title(alignment), fontsize=FONT_PT["title"], loc="left", y=_TITLE_Y)

    drawn: list[EndplateLine] = []
    curves = (alignment.get("coronal") or {}).get("curves") or []
    for i, c in enumerate(curves, start=1):
        colour = ALIGNMENT_COLOURS[(i - 1) % len(ALIGNMENT_COLOURS)]
        for level, which in ((c["upper_end"], "superior"), (c["lower_end"], "inferior")):
            plane = _endplate(by_level.get(str(level)), which)
            line = (
                None
                if plane is None
                else _line("coronal", plane, f"cobb {i}", level, which, colour)
            )
            if line is not None:
                drawn.append(line)
                _draw_line(
                    ax_c, coronal, line, f"{level} {'sup.' if which == 'superior' else 'inf.'}"
                )
    sag = alignment.get("sagittal") or {}
    for k, key in enumerate(("thoracic_kyphosis", "lumbar_lordosis")):
        a = sag.get(key) or {}
        if a.get("angle_deg") is None:
            continue
        colour = ALIGNMENT_COLOURS[k % len(ALIGNMENT_COLOURS)]
        role = "kyphosis" if key == "thoracic_kyphosis" else "lordosis"
        for end in ("upper", "lower"):
            level, which = str(a.get(end)), str(a.get(f"{end}_endplate"))
            plane = _endplate(by_level.get(level), which)
            if plane is None:
                continue
            line = _line("sagittal", plane, role, level, which, colour)
            if line is not None:
                drawn.append(line)
                _draw_line(
                    ax_s, sagittal, line, f"{level} {'sup.' if which == 'superior' else 'inf.'}"
                )
    _fix_ticks(fig)
    return AlignmentFigure(fig, coronal, sagittal, tuple(drawn), background)
