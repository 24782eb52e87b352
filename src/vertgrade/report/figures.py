"""Figures of the report: the spine overview and one panel per vertebra.

Every figure is drawn on its own :class:`matplotlib.figure.Figure` and rendered with the Agg
canvas; pyplot and its global state are never touched, so nothing here depends on a display or
on a backend chosen elsewhere. A figure is made at the size it is drawn at: its ticks are chosen
when it is made (those matplotlib would choose at the draw), and its titles' places are given,
so that a draw lays out less; the study's vertebra panels are drawn on the pixels they
share (:class:`VertebraPanels`).

The figures read the vertebrae as ``result.json`` holds them (``SpineResult.to_dict()``), so that a
report drawn right after grading and one redrawn later from a result folder are the same. The
images are sampled by :mod:`vertgrade.report.reformat`, in world coordinates through each volume's
own affine, so any orientation, spacing or oblique grid gives the same picture; colours and the CT
window come from :mod:`vertgrade.report.style`.

Conventions
-----------
- Sagittal views (the overview and each vertebra's slice) show the patient's anterior on the left
  and superior at the top, as sagittal CT is usually displayed.
- The axial height-loss map shows anterior at the top and the patient's right on the left of the
  image (radiological convention, viewed from the feet).
- Colours by Genant grade: :data:`vertgrade.report.style.GRADE_COLOURS`.

Examples
--------
>>> fig = Figure(figsize=(1, 1), dpi=20)
>>> figure_rgb(fig).shape, figure_png(fig)[:4]
((20, 20, 3), b'\\x89PNG')
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, LinearSegmentedColormap, Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedFormatter, FixedLocator
from numpy.typing import NDArray

from vertgrade.config import GENANT_THRESHOLDS, ThirdsParams
from vertgrade.geometry.frames import LocalFrame
from vertgrade.geometry.thirds import THIRDS, footprint_thirds
from vertgrade.report.reformat import (
    CurvedSheet,
    curved_sheet,
    document_centreline,
    frame_from_dict,
    plane_trace,
    sample_world,
    slice_points,
)
from vertgrade.report.style import (
    CT_WINDOW_HU,
    GRADE_COLOURS,
    LOSS_ABOVE_COLOUR,
    LOSS_BELOW_COLOUR,
    LOSS_RANGE_PCT,
    LOSS_ZERO_COLOUR,
    MEASURED_COLOUR,
    OTHER_BODY_COLOUR,
    REFERENCE_COLOUR,
    grade_colour,
)
from vertgrade.study import Volume

__all__ = [
    "FIGURE_MIN_FONT_PT",
    "FONT_PT",
    "HeightLine",
    "LossMapRegions",
    "OverviewFigure",
    "VertebraFigure",
    "VertebraPanels",
    "figure_png",
    "figure_rgb",
    "loss_colormap",
    "loss_map_regions",
    "overview_figure",
    "panel_extent_mm",
    "vertebra_figure",
]

# --- constants ----------------------------------------------------------------------------------

# Overview: the curved reformat reaches this far anterior and posterior of the centreline (mm):
# the front of a lumbar body lies ~20 mm anterior of its centre, the tip of a spinous process
# ~70 mm posterior.
_OVERVIEW_ANTERIOR_MM = 45.0
_OVERVIEW_POSTERIOR_MM = 80.0
_OVERVIEW_STEP_MM = 0.5
# Vertebra panels: sampling step of the sagittal slice (mm) and the margin around the body.
_PANEL_STEP_MM = 0.25
_PANEL_MARGIN_SI_MM = 11.0
_PANEL_MARGIN_AP_MM = 12.0
# Figure resolution (dots per inch) of the PNGs.
_DPI = 100
# zlib level of the PNGs: 3 packs these figures (CT greys, flat colours, text) within 1 % of the
# default 6, in half the time (~15 ms instead of ~35 ms a figure).
_PNG_COMPRESS_LEVEL = 3
# The overview's largest size (inches): it prints on A4 (186 x 273 mm inside the margins) at its
# own size, so that its text keeps its point size on paper.
_OVERVIEW_MAX_WIDTH_IN = 7.3
_OVERVIEW_MAX_AXES_HEIGHT_IN = 8.6

#: Font sizes (points, at the figure's own size) of the figures' text, by role. The figures are
#: printed at about their own size (the report's print style sheet), so that the smallest,
#: :data:`FIGURE_MIN_FONT_PT`, stays readable on paper.
FONT_PT: dict[str, float] = {
    "tick": 8.0,
    "label": 8.5,
    "title": 9.0,
    "annotation": 8.0,
    "side_label": 8.5,
    "message": 9.0,
}
#: The smallest font of any figure text (points at the figure's size).
FIGURE_MIN_FONT_PT: float = min(FONT_PT.values())
#: The loss map's colour of the footprint's rim, which no grade reads (see ``_draw_loss_map``).
_RIM_COLOUR = "#c8c8c8"
#: Opacity of the loss map's core outside the thirds (the body's RHLV reads it, the grade not).
_FADED_ALPHA = 0.45
#: Colour of the thirds' outlines on the loss map.
_THIRDS_COLOUR = "#222222"

_SHORT = {"anterior": "A", "middle": "M", "posterior": "P"}
#: Where the axes' titles sit (axes fraction: at the top edge, raised by matplotlib's title pad).
#: Given, not left to matplotlib, which would otherwise measure every tick label at each draw to
#: see whether a title must move above ticks on top; these figures have none there.
_TITLE_Y = 1.0


# --- drawing helpers ----------------------------------------------------------------------------


def _window(ct_values: NDArray[np.float32]) -> NDArray[np.float32]:
    lo, hi = CT_WINDOW_HU
    return np.clip((ct_values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _contour(
    ax: Axes,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    mask: NDArray[np.floating[Any]],
    *,
    colour: str,
    width: float,
    style: str = "solid",
) -> bool:
    """Draw the 0.5 contour of ``mask`` (rows along ``y``, columns along ``x``) inside its
    bounding box; nothing (and no warning) where the mask is empty or full."""
    inside = mask > 0.5
    if not inside.any() or inside.all():
        return False
    rows = np.nonzero(inside.any(axis=1))[0]
    cols = np.nonzero(inside.any(axis=0))[0]
    r0, r1 = max(rows[0] - 2, 0), min(rows[-1] + 3, mask.shape[0])
    c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 3, mask.shape[1])
    if r1 - r0 < 2 or c1 - c0 < 2:
        return False
    ax.contour(
        x[c0:c1],
        y[r0:r1],
        mask[r0:r1, c0:c1],
        levels=[0.5],
        colors=[colour],
        linewidths=width,
        linestyles=style,
    )
    return True


def _halo(width: float = 2.5) -> list[patheffects.AbstractPathEffect]:
    return [patheffects.withStroke(linewidth=width, foreground="black")]


def _fix_ticks(figure: Figure) -> None:
    """Fix each axes' ticks to those a draw would choose now, and their labels.

    matplotlib's default locator and formatter run at every draw and make tick objects for
    the ticks just beyond the view too (each a few artists); these figures are drawn at the size
    they are made at, so their ticks are chosen once, here, after the axes' aspect is applied
    (the axis length in points sets how many ticks fit). Only the ticks inside the view are
    kept: those are the ones a draw shows. An axis whose labels need an offset text (none here)
    keeps matplotlib's own.
    """
    for ax in figure.axes:
        if not ax.axison:
            continue
        ax.apply_aspect()
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            locs = [float(x) for x in axis.get_majorticklocs()]
            labels = formatter.format_ticks(locs)
            if formatter.get_offset():
                continue
            lo, hi = sorted(float(x) for x in axis.get_view_interval())
            tol = 1e-10 * (hi - lo)  # as matplotlib decides which ticks are inside the view
            keep = [i for i, x in enumerate(locs) if lo - tol <= x <= hi + tol]
            axis.set_major_locator(FixedLocator([locs[i] for i in keep]))
            axis.set_major_formatter(FixedFormatter([labels[i] for i in keep]))


def figure_png(figure: Figure, *, dpi: int = _DPI) -> bytes:
    """Render a figure with Agg to PNG bytes (no metadata: same figure, same bytes)."""
    buf = io.BytesIO()
    figure.savefig(
        buf,
        format="png",
        dpi=dpi,
        metadata={"Software": None},
        pil_kwargs={"compress_level": _PNG_COMPRESS_LEVEL},
    )
    return buf.getvalue()


def figure_rgb(figure: Figure) -> NDArray[np.uint8]:
    """Render a figure with Agg, at its own size and resolution, to an RGB array.

    Returns
    -------
    (H, W, 3) uint8 ndarray
        H and W are the figure's size in inches times its dpi.
    """
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def _max_rhlv(vertebra: Mapping[str, Any]) -> float | None:
    rh = vertebra.get("rhlv") or {}
    vals = [float(rh[r]) for r in THIRDS if rh.get(r) is not None]
    return max(vals) if vals else None


def _pct(fraction: float) -> str:
    """A fraction as a whole percentage, without "-0"."""
    text = f"{100.0 * fraction:.0f}"
    return "0" if text == "-0" else text


def _overview_label(vertebra: Mapping[str, Any]) -> str:
    level = str(vertebra["level"])
    if vertebra.get("status") != "graded":
        return f"{level}  not gradable"
    text = f"{level}  grade {vertebra.get('grade')}"
    if vertebra.get("type"):
        text += f" {vertebra['type']}"
    worst = _max_rhlv(vertebra)
    if worst is not None:
        text += f"   max RHLV {_pct(worst)} %"
    return text


# --- the overview -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewFigure:
    """The spine overview and what was drawn on it.

    Attributes
    ----------
    figure : Figure
    sheet : CurvedSheet
        Where the reformat was sampled.
    bodies : (S, T) int ndarray
        The body labels sampled on the sheet (0 where none; all 0 without a body volume).
    positions_mm : dict of str to float
        Arc length of each vertebra's frame origin (or centroid), by level.
    outlined : dict of str to str
        Level -> colour of each body outline drawn.
    background : {"ct", "labels", "plain"}
        What the image shows under the outlines.
    """

    figure: Figure
    sheet: CurvedSheet
    bodies: NDArray[np.int64]
    positions_mm: dict[str, float]
    outlined: dict[str, str]
    background: Literal["ct", "labels", "plain"]


def overview_figure(
    document: Mapping[str, Any],
    *,
    ct: Volume | None = None,
    bodies: Volume | None = None,
    labels: Volume | None = None,
) -> OverviewFigure | None:
    """Curved mid-sagittal reformat of the spine with every body outlined in its grade's colour.

    Parameters
    ----------
    document : mapping
        The result as ``result.json`` holds it (``SpineResult.to_dict()``).
    ct : Volume, optional
        The CT in HU; without it the background is the label silhouette or plain.
    bodies : Volume, optional
        The isolated bodies labelled by vertebra (``bodies.nii.gz``): the outlines.
    labels : Volume, optional
        The vertebra labels: the silhouette drawn when there is no CT, and the outlines when there
        are no bodies.

    Returns
    -------
    OverviewFigure or None
        ``None`` when there is no centreline and fewer than two points to make one from.
    """
    centreline = document_centreline(document)
    if centreline is None:
        return None
    verts = list(document.get("vertebrae", []))
    frames = [f for f in (frame_from_dict(v.get("frame")) for v in verts) if f is not None]
    sheet = curved_sheet(
        centreline,
        frames,
        anterior_mm=_OVERVIEW_ANTERIOR_MM,
        posterior_mm=_OVERVIEW_POSTERIOR_MM,
        step_mm=_OVERVIEW_STEP_MM,
    )
    arc, off = sheet.arc_mm, sheet.offsets_mm

    outline_vol = bodies if bodies is not None else labels
    body_img = (
        np.rint(sample_world(outline_vol, sheet.points_mm, order=0)).astype(np.int64)
        if outline_vol is not None
        else np.zeros(sheet.points_mm.shape[:2], np.int64)
    )
    background: Literal["ct", "labels", "plain"]
    if ct is not None:
        image = _window(sample_world(ct, sheet.points_mm, order=1, cval=-1000.0))
        background = "ct"
    else:
        image = np.full(body_img.shape, 0.06, np.float32)
        if labels is not None:
            silhouette = sample_world(labels, sheet.points_mm, order=0) > 0
            image[silhouette] = 0.30
            background = "labels"
        else:
            background = "plain"
        if bodies is not None:
            image[body_img > 0] = 0.45

    span = float(arc[-1] - arc[0]) + _OVERVIEW_STEP_MM
    width_mm = float(off[-1] - off[0]) + _OVERVIEW_STEP_MM
    left, right, bottom, top = 0.75, 3.3, 0.6, 0.4
    ax_h = float(np.clip(span / 40.0, 4.5, _OVERVIEW_MAX_AXES_HEIGHT_IN))
    ax_h = min(ax_h, (_OVERVIEW_MAX_WIDTH_IN - left - right) * span / width_mm)
    ax_w = ax_h * width_mm / span
    fig_w, fig_h = left + ax_w + right, bottom + ax_h + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, ax_w / fig_w, ax_h / fig_h))
    half = 0.5 * _OVERVIEW_STEP_MM
    ax.imshow(
        image,
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=(off[0] - half, off[-1] + half, arc[-1] + half, arc[0] - half),
        origin="upper",
        aspect="auto",
        interpolation="bilinear",
    )
    ax.set_xlim(off[-1] + half, off[0] - half)  # anterior on the left
    ax.set_ylim(arc[-1] + half, arc[0] - half)
    ax.set_xlabel("mm from centreline (anterior left)", fontsize=FONT_PT["label"])
    ax.tick_params(labelsize=FONT_PT["tick"])

    positions: dict[str, float] = {}
    outlined: dict[str, str] = {}
    for v in verts:
        level = str(v["level"])
        f = frame_from_dict(v.get("frame"))
        anchor = f.origin if f is not None else v.get("centroid_mm")
        if anchor is not None:
            positions[level] = sheet.arc_of(anchor)
        colour = grade_colour(v.get("grade") if v.get("status") == "graded" else None)
        where = np.nonzero(body_img == int(v["label"]))
        if outline_vol is None or where[0].size == 0:
            continue
        # the outline at sub-voxel precision: the body's mask interpolated in its bounding box
        r0, r1 = max(int(where[0].min()) - 3, 0), int(where[0].max()) + 4
        c0, c1 = max(int(where[1].min()) - 3, 0), int(where[1].max()) + 4
        mask = sample_world(
            outline_vol, sheet.points_mm[r0:r1, c0:c1], order=1, label=int(v["label"])
        )
        if _contour(ax, off[c0:c1], arc[r0:r1], mask, colour=colour, width=1.6):
            outlined[level] = colour

    ticks = sorted(positions.items(), key=lambda kv: kv[1])
    ax.set_yticks([p for _, p in ticks], [lv for lv, _ in ticks])
    ax.tick_params(axis="y", labelsize=FONT_PT["tick"], length=3)
    # Text beside the image, pushed apart where vertebrae are closer than one line of text.
    px_per_mm = ax_h * _DPI / span
    gap_mm = 15.0 / px_per_mm
    placed: list[float] = []
    by_level = {str(v["level"]): v for v in verts}
    transform = ax.get_yaxis_transform()
    for level, pos in ticks:
        y = pos if not placed else max(pos, placed[-1] + gap_mm)
        placed.append(y)
        v = by_level[level]
        colour = grade_colour(v.get("grade") if v.get("status") == "graded" else None)
        ax.plot([1.0, 1.04], [pos, y], transform=transform, color=colour, lw=1.0, clip_on=False)
        ax.text(
            1.05,
            y,
            _overview_label(v),
            transform=transform,
            va="center",
            ha="left",
            fontsize=FONT_PT["side_label"],
            color="black",
            bbox={
                "boxstyle": "round,pad=0.25",
                "facecolor": colour,
                "alpha": 0.35,
                "edgecolor": colour,
            },
            clip_on=False,
        )
    title = {
        "ct": "curved reformat along the centreline (straightened)",
        "labels": "segmentation along the centreline (no CT)",
        "plain": "body outlines along the centreline (no CT)",
    }[background]
    ax.set_title(title, fontsize=FONT_PT["title"], loc="left", y=_TITLE_Y)
    _fix_ticks(fig)
    return OverviewFigure(fig, sheet, body_img, positions, outlined, background)


# --- one vertebra -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeightLine:
    """One height drawn on a vertebra's sagittal slice: a vertical segment.

    Coordinates are the vertebra's local frame (mm from the frame origin): ``ap_mm`` (anterior
    positive) and ``si_mm`` = (inferior end, superior end).
    """

    region: str
    kind: Literal["measured", "reference"]
    ap_mm: float
    si_mm: tuple[float, float]

    @property
    def length_mm(self) -> float:
        return self.si_mm[1] - self.si_mm[0]

    @property
    def middle_mm(self) -> float:
        return 0.5 * (self.si_mm[0] + self.si_mm[1])


@dataclass(frozen=True)
class VertebraFigure:
    """One vertebra's panel and what was drawn on it.

    Attributes
    ----------
    figure : Figure
    lines : tuple of HeightLine
        Measured and reference heights, in the order drawn.
    background : {"ct", "labels", "plain", "none"}
        What the sagittal slice shows ("none": no frame, no slice).
    loss_map : bool
        Whether the height-loss map was drawn.
    """

    figure: Figure
    lines: tuple[HeightLine, ...]
    background: Literal["ct", "labels", "plain", "none"]
    loss_map: bool


def panel_extent_mm(vertebrae: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Half-extents ``(si, ap)`` (mm) of the sagittal slices, one for the whole study, so that every
    panel has the same scale: half the tallest body plus a margin, half the deepest plus a margin.

    >>> panel_extent_mm([{"heights_mm": {"anterior": 20.0, "posterior": 24.0}, "depth_mm": 30.0}])
    (23.0, 27.0)
    """
    tallest, deepest = 0.0, 0.0
    for v in vertebrae:
        for key in ("heights_mm", "heights_mask_mm"):
            h = v.get(key) or {}
            vals = [float(x) for x in h.values() if x is not None]
            if vals:
                tallest = max(tallest, max(vals))
                break
        if v.get("depth_mm") is not None:
            deepest = max(deepest, float(v["depth_mm"]))
    half_si = 0.5 * (tallest or 30.0) + _PANEL_MARGIN_SI_MM
    half_ap = 0.5 * (deepest or 36.0) + _PANEL_MARGIN_AP_MM
    return float(np.clip(half_si, 15.0, 45.0)), float(np.clip(half_ap, 18.0, 60.0))


def loss_colormap(thresholds: Sequence[float] = GENANT_THRESHOLDS) -> Colormap:
    """Colour map of the height-loss map (%) over
    :data:`~vertgrade.report.style.LOSS_RANGE_PCT`: blue below 0 (taller than the reference),
    white at 0, then the grade colours at the grade thresholds.

    NaN (outside the footprint) is transparent.
    """
    lo, hi = LOSS_RANGE_PCT

    def at(pct: float) -> float:
        return float(np.clip((pct - lo) / (hi - lo), 0.0, 1.0))

    t1, t2, t3 = (100.0 * float(t) for t in thresholds)
    stops = [
        (0.0, LOSS_BELOW_COLOUR),
        (at(0.0), LOSS_ZERO_COLOUR),
        (at(t1), GRADE_COLOURS[1]),
        (at(t2), GRADE_COLOURS[2]),
        (at(t3), GRADE_COLOURS[3]),
        (1.0, LOSS_ABOVE_COLOUR),
    ]
    cleaned: list[tuple[float, str]] = []
    for pos, col in stops:
        if cleaned and pos <= cleaned[-1][0]:
            pos = min(1.0, cleaned[-1][0] + 1e-3)
        cleaned.append((pos, col))
    cleaned[-1] = (1.0, cleaned[-1][1])
    cmap = LinearSegmentedColormap.from_list("vertgrade_loss", cleaned)
    return cmap.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def _height_lines(
    vertebra: Mapping[str, Any], frame: LocalFrame
) -> tuple[list[HeightLine], list[HeightLine]]:
    thirds = vertebra.get("thirds") or {}
    ref = ((vertebra.get("reference") or {}).get("heights_mm")) or {}
    measured, reference = [], []
    for r in THIRDS:
        t = thirds.get(r)
        if not t:
            continue
        loc = frame.to_local(np.asarray([t["inferior_mm"], t["superior_mm"]], dtype=np.float64))
        ap = float(loc[:, 1].mean())
        line = HeightLine(r, "measured", ap, (float(loc[0, 0]), float(loc[1, 0])))
        measured.append(line)
        if ref.get(r) is not None:
            h = float(ref[r])
            mid = line.middle_mm
            reference.append(HeightLine(r, "reference", ap, (mid - 0.5 * h, mid + 0.5 * h)))
    return measured, reference


def vertebra_figure(
    vertebra: Mapping[str, Any],
    *,
    ct: Volume | None = None,
    bodies: Volume | None = None,
    labels: Volume | None = None,
    extent_mm: tuple[float, float] = (30.0, 32.0),
    thresholds: Sequence[float] = GENANT_THRESHOLDS,
    regions: ThirdsParams | None = None,
) -> VertebraFigure:
    """One vertebra's panel: its sagittal slice with the heights, and its axial height-loss map.

    Left: the slice ``lr = 0`` of the vertebra's local frame (``si`` up, ``ap`` across, anterior
    on the left), resampled from the CT (or from the labels), the body outlined in its grade's
    colour and neighbouring bodies in grey, the fitted endplate planes dashed. Each third's
    measured height is a vertical line between the third's mean superior and inferior endplate
    points (``thirds``, projected onto the slice); its reference height is a pale wider line of
    the reference's length centred on the measured line's middle, so that what is missing shows
    at both ends. Right: the height-loss map (%) over the body's axial footprint, anterior at the
    top, patient's right on the left: the footprint's rim that no grade reads in grey, the core
    outside the thirds' central band faded (only the body's RHLV reads it) and the three thirds
    the grade reads outlined, in full colour (:func:`loss_map_regions`). A vertebra not graded gets
    neither heights nor map, and the reason instead: its heights may be truncated or
    implausible, and drawn they would read as a measurement.

    Parameters
    ----------
    vertebra : mapping
        One entry of ``result.json``'s ``vertebrae``.
    ct, bodies, labels : Volume, optional
        As for :func:`overview_figure`.
    extent_mm : (float, float)
        Half-extents ``(si, ap)`` of the slice (see :func:`panel_extent_mm`).
    thresholds : (3,) float
        The grade thresholds (for the loss map's colours).
    regions : ThirdsParams, optional
        The rim and central band the thirds were cut with (the run's
        ``morphometry.regions`` parameters; default: the defaults).

    Returns
    -------
    VertebraFigure
    """
    # fixed axes positions (figure fractions): no layout engine, which would cost a second draw
    fig = Figure(figsize=(7.8, 3.3), dpi=_DPI)
    ax_s = fig.add_axes((0.075, 0.14, 0.38, 0.78))
    ax_m = fig.add_axes((0.545, 0.14, 0.33, 0.78))
    cax = fig.add_axes((0.9, 0.18, 0.016, 0.7))
    graded = vertebra.get("status") == "graded"
    colour = grade_colour(vertebra.get("grade") if graded else None)
    frame = frame_from_dict(vertebra.get("frame"))
    lines: list[HeightLine] = []
    background: Literal["ct", "labels", "plain", "none"] = "none"
    if frame is None:
        ax_s.set_axis_off()
        ax_s.text(
            0.5,
            0.5,
            "no body: nothing to show",
            ha="center",
            va="center",
            transform=ax_s.transAxes,
            fontsize=FONT_PT["message"],
        )
    else:
        background = _draw_slice(ax_s, vertebra, frame, ct, bodies, labels, extent_mm, colour)
        measured, reference = _height_lines(vertebra, frame) if graded else ([], [])
        if not graded:
            ax_s.text(
                0.03,
                0.03,
                "not gradable: heights not shown",
                transform=ax_s.transAxes,
                ha="left",
                va="bottom",
                fontsize=FONT_PT["annotation"],
                color="white",
                path_effects=_halo(),
            )
        rh = vertebra.get("rhlv") or {}
        for line in reference:
            ax_s.plot(
                [line.ap_mm] * 2,
                line.si_mm,
                color=REFERENCE_COLOUR,
                alpha=0.55,
                lw=7,
                solid_capstyle="butt",
            )
        for line in measured:
            ax_s.plot(
                [line.ap_mm] * 2,
                line.si_mm,
                color=MEASURED_COLOUR,
                lw=2.0,
                marker="_",
                markersize=9,
                markeredgewidth=2.0,
            )
            loss = rh.get(line.region)
            text = _SHORT[line.region] + ("" if loss is None else f"\n{_pct(loss)}%")
            ax_s.text(
                line.ap_mm,
                line.si_mm[0] - 1.5,
                text,
                ha="center",
                va="top",
                fontsize=FONT_PT["annotation"],
                color="white",
                path_effects=_halo(),
            )
        lines = reference + measured
    _draw_loss_map(ax_m, cax, vertebra, thresholds, regions or ThirdsParams())
    _fix_ticks(fig)
    return VertebraFigure(fig, tuple(lines), background, bool(ax_m.images))


class VertebraPanels:
    """The vertebra panels of one study as PNG bytes, the parts they all share drawn once.

    Every panel of a study shows its sagittal slice at the study's scale (``extent_mm``) and the
    same colour bar (``thresholds``): the slice's axes (ticks, tick labels, axis labels, title)
    and the colour bar are the same pixels in every panel, and drawing them is about a quarter
    of a panel's drawing. They are drawn once, with the first panel that has both, and kept; each
    panel after it starts from a copy of those pixels and draws only its own parts on them:
    the slice's image, outlines, lines and labels, its frame, and the height-loss map. A panel
    without a slice or without a loss map (nothing to show, or not graded) is drawn whole. The
    bytes are those of ``figure_png(vertebra_figure(...).figure)`` either way.

    Parameters
    ----------
    ct, bodies, labels : Volume, optional
    extent_mm, thresholds, regions
        As for :func:`vertebra_figure`, the same for every panel of the study.
    """

    def __init__(
        self,
        *,
        ct: Volume | None = None,
        bodies: Volume | None = None,
        labels: Volume | None = None,
        extent_mm: tuple[float, float] = (30.0, 32.0),
        thresholds: Sequence[float] = GENANT_THRESHOLDS,
        regions: ThirdsParams | None = None,
    ) -> None:
        self._volumes = {"ct": ct, "bodies": bodies, "labels": labels}
        self._extent_mm = extent_mm
        self._thresholds = tuple(float(t) for t in thresholds)
        self._regions = regions
        self._shared: Any = None  # the shared pixels: an Agg buffer region

    def figure(self, vertebra: Mapping[str, Any]) -> VertebraFigure:
        """:func:`vertebra_figure` of one vertebra of the study."""
        return vertebra_figure(
            vertebra,
            **self._volumes,
            extent_mm=self._extent_mm,
            thresholds=self._thresholds,
            regions=self._regions,
        )

    def png(self, vertebra: Mapping[str, Any]) -> bytes:
        """The PNG of one vertebra's panel (see the class docstring)."""
        figure = self.figure(vertebra).figure
        ax_s, ax_m, cax = figure.axes
        if not (ax_s.axison and cax.axison):
            return figure_png(figure)
        shared = [figure.patch, ax_s.xaxis, ax_s.yaxis, ax_s.title, cax]
        canvas = FigureCanvasAgg(figure)
        if self._shared is None:
            kept = {id(a) for a in shared}
            own = [a for a in ax_s.get_children() if id(a) not in kept]
            with _hidden([*own, ax_m]):
                canvas.draw()
            self._shared = canvas.copy_from_bbox(figure.bbox)
        renderer = canvas.get_renderer()
        renderer.clear()
        canvas.restore_region(self._shared)
        with _hidden(shared):
            figure.draw(renderer)
        buf = io.BytesIO()
        no_metadata: dict[str, Any] = {"Software": None}
        # as Figure.savefig writes it (figure_png): the same bytes for the same pixels
        imsave(
            buf,
            canvas.buffer_rgba(),
            format="png",
            dpi=figure.dpi,
            metadata=no_metadata,
            pil_kwargs={"compress_level": _PNG_COMPRESS_LEVEL},
        )
        return buf.getvalue()


@contextmanager
def _hidden(artists: Sequence[Artist]) -> Iterator[None]:
    """Hide artists for the time of a draw."""
    shown = [a.get_visible() for a in artists]
    for a in artists:
        a.set_visible(False)
    try:
        yield
    finally:
        for a, was in zip(artists, shown, strict=True):
            a.set_visible(was)


def _draw_slice(
    ax: Axes,
    vertebra: Mapping[str, Any],
    frame: LocalFrame,
    ct: Volume | None,
    bodies: Volume | None,
    labels: Volume | None,
    extent_mm: tuple[float, float],
    colour: str,
) -> Literal["ct", "labels", "plain"]:
    half_si, half_ap = extent_mm
    n_si = round(half_si / _PANEL_STEP_MM)
    n_ap = round(half_ap / _PANEL_STEP_MM)
    si = _PANEL_STEP_MM * np.arange(n_si, -n_si - 1, -1, dtype=np.float64)  # top row superior
    ap = _PANEL_STEP_MM * np.arange(-n_ap, n_ap + 1, dtype=np.float64)
    pts = slice_points(frame, si, ap)
    label = int(vertebra["label"])
    outline_vol = bodies if bodies is not None else labels
    others = (
        np.rint(sample_world(outline_vol, pts, order=0)).astype(np.int64)
        if outline_vol is not None
        else None
    )
    background: Literal["ct", "labels", "plain"]
    if ct is not None:
        image = _window(sample_world(ct, pts, order=1, cval=-1000.0))
        background = "ct"
    else:
        image = np.full(pts.shape[:2], 0.06, np.float32)
        background = "plain"
        if labels is not None:
            image[sample_world(labels, pts, order=0) > 0] = 0.30
            background = "labels"
        if bodies is not None and others is not None:
            image[others > 0] = 0.45
    half = 0.5 * _PANEL_STEP_MM
    ax.imshow(
        image,
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=(ap[0] - half, ap[-1] + half, si[-1] - half, si[0] + half),
        origin="upper",
        interpolation="bilinear",
    )
    if outline_vol is not None and others is not None:
        for other in np.unique(others):
            if other not in (0, label):
                _contour(
                    ax,
                    ap,
                    si,
                    (others == other).astype(np.float32),
                    colour=OTHER_BODY_COLOUR,
                    width=0.8,
                    style="dotted",
                )
        own = sample_world(outline_vol, pts, order=1, label=label)
        _contour(ax, ap, si, own, colour=colour, width=1.6)
    planes = vertebra.get("endplates") or {}
    for key in ("superior", "inferior"):
        if planes.get(key):
            trace = plane_trace(planes[key], frame, ap)
            if trace is not None:
                ok = (trace > si[-1]) & (trace < si[0])
                ax.plot(
                    np.where(ok, ap, np.nan),
                    np.where(ok, trace, np.nan),
                    color="white",
                    lw=0.8,
                    ls=(0, (4, 3)),
                    alpha=0.7,
                )
    ax.set_xlim(ap[-1] + half, ap[0] - half)  # anterior on the left
    ax.set_ylim(si[-1] - half, si[0] + half)
    ax.set_aspect("equal")
    ax.set_xlabel("ap (mm), anterior left", fontsize=FONT_PT["label"])
    ax.set_ylabel("si (mm)", fontsize=FONT_PT["label"])
    ax.tick_params(labelsize=FONT_PT["tick"])
    ax.set_title("sagittal slice, local frame", fontsize=FONT_PT["title"], y=_TITLE_Y)
    return background


@dataclass(frozen=True)
class LossMapRegions:
    """Where on a loss map the grade reads: the footprint's core and the thirds' boxes.

    The loss map of ``result.json`` is the footprint's per-column loss, downsampled (2 mm);
    the regions are cut again on it as grading cut them on the full grid
    (:func:`vertgrade.geometry.thirds.footprint_thirds`): the core is the footprint less its rim
    (``rim_mm``), where the endplates round off and every column is short, so that a healthy
    body's rim reads as a large loss (and one taller than the reference's as a gain). Neither the
    thirds' RHLV, nor the central depression, nor the body's RHLV read the rim; the thirds are
    the core's central band cut in three.

    Attributes
    ----------
    footprint, core : (A, L) bool ndarray
        On the map's grid (axis 0 posterior -> anterior, axis 1 left -> right).
    thirds : dict of str to (float, float, float, float)
        ``(lr_lo, lr_hi, ap_lo, ap_hi)`` in the map's mm of each third's box.
    """

    footprint: NDArray[np.bool_]
    core: NDArray[np.bool_]
    thirds: dict[str, tuple[float, float, float, float]]


def loss_map_regions(
    values: NDArray[np.float64],
    ap_mm: NDArray[np.float64],
    lr_mm: NDArray[np.float64],
    params: ThirdsParams | None = None,
) -> LossMapRegions:
    """The core and the thirds of a loss map (see :class:`LossMapRegions`).

    Parameters
    ----------
    values : (A, L) float ndarray
        The loss map, NaN outside the footprint.
    ap_mm, lr_mm : (A,), (L,) float ndarray
        The map's cell centres (mm), equally spaced.
    params : ThirdsParams, optional

    Examples
    --------
    >>> v = np.full((12, 14), np.nan); v[1:11, 1:13] = 0.0      # 20 x 24 mm at 2 mm
    >>> r = loss_map_regions(v, 2.0 * np.arange(12), 2.0 * np.arange(14))
    >>> int(r.footprint.sum()), int(r.core.sum()), [round(x, 1) for x in r.thirds["anterior"]]
    (120, 80, [8.2, 17.8, 14.3, 21.0])
    """
    params = params or ThirdsParams()
    footprint = np.isfinite(values)
    step = float(ap_mm[1] - ap_mm[0]) if len(ap_mm) > 1 else 2.0
    cut = footprint_thirds(footprint, step_mm=step, params=params)
    # footprint_thirds' mm start at the grid's edge: cell i covers [i * step, (i + 1) * step)
    ap0, lr0 = float(ap_mm[0]) - 0.5 * step, float(lr_mm[0]) - 0.5 * step
    ap_lo, ap_hi = cut.ap_extent_mm
    lr_lo, lr_hi = cut.lr_band_mm
    third = (ap_hi - ap_lo) / 3.0
    boxes: dict[str, tuple[float, float, float, float]] = {}
    if cut.body.any() and ap_hi > ap_lo:
        for k, name in enumerate(("posterior", "middle", "anterior")):
            boxes[name] = (
                lr0 + lr_lo,
                lr0 + lr_hi,
                ap0 + ap_lo + k * third,
                ap0 + ap_lo + (k + 1) * third,
            )
    return LossMapRegions(footprint, cut.body, boxes)


def _draw_loss_map(
    ax: Axes,
    cax: Axes,
    vertebra: Mapping[str, Any],
    thresholds: Sequence[float],
    params: ThirdsParams,
) -> None:
    # A vertebra not graded gets no map: its heights may be truncated (cut by the field of
    # view) or implausible, and a map of them would read as a fracture.
    lm = vertebra.get("loss_map") if vertebra.get("status") == "graded" else None
    values = None
    if lm:
        values = np.array(
            [[np.nan if x is None else float(x) for x in row] for row in lm["values"]],
            dtype=np.float64,
        ).reshape(len(lm["ap_mm"]), len(lm["lr_mm"]))
        if not np.isfinite(values).any():
            values = None
    if lm is None or values is None:
        ax.set_axis_off()
        cax.set_axis_off()
        why = vertebra.get("reason") or "no reference height map for this vertebra"
        ax.text(
            0.5,
            0.5,
            "no height-loss map\n" + _wrap(str(why), 42),
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=FONT_PT["message"],
            color="#444444",
        )
        return
    ap_mm = np.asarray(lm["ap_mm"], dtype=np.float64)
    lr_mm = np.asarray(lm["lr_mm"], dtype=np.float64)
    d_ap = float(ap_mm[1] - ap_mm[0]) if len(ap_mm) > 1 else 2.0
    d_lr = float(lr_mm[1] - lr_mm[0]) if len(lr_mm) > 1 else 2.0
    regions = loss_map_regions(values, ap_mm, lr_mm, params)
    cmap, norm = loss_colormap(thresholds), Normalize(*LOSS_RANGE_PCT)
    extent = (
        lr_mm[0] - d_lr / 2,
        lr_mm[-1] + d_lr / 2,
        ap_mm[0] - d_ap / 2,
        ap_mm[-1] + d_ap / 2,
    )
    # the rim (footprint less core) in flat grey: no grade reads it
    rim = regions.footprint & ~regions.core
    rim_rgba = np.zeros((*rim.shape, 4), dtype=np.float64)
    rim_rgba[rim] = to_rgba(_RIM_COLOUR)
    ax.imshow(rim_rgba, origin="lower", extent=extent, interpolation="nearest")
    # the core outside the thirds' central band, faded: only the body's RHLV (and the edge of
    # the central depression's disc) reads it; the thirds in full colour
    graded = np.zeros_like(regions.core)
    for x0, x1, y0, y1 in regions.thirds.values():
        graded |= (
            (lr_mm[None, :] >= x0)
            & (lr_mm[None, :] <= x1)
            & (ap_mm[:, None] >= y0)
            & (ap_mm[:, None] <= y1)
        )
    graded &= regions.core
    for where, alpha in ((regions.core & ~graded, _FADED_ALPHA), (graded, 1.0)):
        ax.imshow(
            100.0 * np.where(where, values, np.nan),
            cmap=cmap,
            norm=norm,
            origin="lower",  # row 0 = most posterior at the bottom: anterior at the top
            extent=extent,
            interpolation="nearest",
            alpha=alpha,
        )
    for name, (x0, x1, y0, y1) in regions.thirds.items():
        ax.add_patch(
            Rectangle(
                (x0, y0), x1 - x0, y1 - y0, fill=False, ec=_THIRDS_COLOUR, lw=0.9, ls=(0, (3, 2))
            )
        )
        ax.text(
            x0,
            0.5 * (y0 + y1),
            f" {_SHORT[name]}",
            ha="left",  # the x axis is mirrored: right of the box on screen
            va="center",
            fontsize=FONT_PT["annotation"],
            color=_THIRDS_COLOUR,
        )
    ax.set_xlim(lr_mm[-1] + d_lr / 2, lr_mm[0] - d_lr / 2)  # patient's right on the left
    ax.set_facecolor("#ffffff")
    ax.set_xlabel("lr (mm), patient's right on the left", fontsize=FONT_PT["label"])
    ax.set_ylabel("ap (mm), anterior up", fontsize=FONT_PT["label"])
    ax.tick_params(labelsize=FONT_PT["tick"])
    ax.set_title("axial height-loss map (grey: rim)", fontsize=FONT_PT["title"], y=_TITLE_Y)
    # the colour bar: a gradient image (a third of the cost of matplotlib's Colorbar)
    lo, hi = LOSS_RANGE_PCT
    cax.imshow(
        np.linspace(lo, hi, 256)[:, None],
        cmap=cmap,
        norm=norm,
        origin="lower",
        aspect="auto",
        extent=(0.0, 1.0, lo, hi),
    )
    cax.set_xticks([])
    cax.yaxis.tick_right()
    cax.yaxis.set_label_position("right")
    # the locator alone, not set_yticks, which makes the ticks at once (a panel that shares
    # its colour bar with the study's other panels never draws them: VertebraPanels)
    cax.yaxis.set_major_locator(
        FixedLocator([lo, 0.0, *(100.0 * float(t) for t in thresholds), hi])
    )
    cax.set_ylabel("height loss (%)", fontsize=FONT_PT["label"])
    cax.tick_params(labelsize=FONT_PT["tick"])


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return "\n".join(lines[:4])
