"""``comparison.html``: one self-contained page with each vertebra's heights over time.

The page holds the study-level findings (the incident fractures, the interval, the identity
check), one figure with a panel per vertebra (its anterior, middle and posterior heights in the
prior and the current scan, each with its 95 % interval ``+-1.96 u``) and the table of
``comparison.csv``. The figure is drawn on its own :class:`matplotlib.figure.Figure` with the
Agg canvas (:func:`vertgrade.report.figures.figure_png`) and embedded as a base64 PNG, so the
page needs no other file and no network. The colours are the report's
(:data:`vertgrade.report.style.GRADE_COLOURS`): each point is coloured by its grade.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from matplotlib.figure import Figure

from vertgrade.compare.changes import REGIONS
from vertgrade.compare.comparison import Comparison
from vertgrade.report.figures import figure_png
from vertgrade.report.style import confidence_text, grade_colour

__all__ = ["comparison_figure", "render_comparison_html"]

#: Colour of each status in the page's table (CSS).
_STATUS_COLOURS = {
    "incident": "#d7263d",
    "worsening": "#f07f13",
    "stable": "#2e9d45",
    "improved": "#2b6cb0",
    "not_comparable": "#9a9a9a",
}
_MARKERS = {"anterior": "o", "middle": "s", "posterior": "^"}


def comparison_figure(comparison: Comparison) -> Figure:
    """One panel per vertebra in both scans: its three heights then and now (mm)."""
    shown = [v for v in comparison.vertebrae if v.prior is not None and v.current is not None]
    n = max(1, len(shown))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.4 * rows), layout="constrained")
    frac = comparison.config.voxel_uncertainty_fraction
    u = {
        "prior": comparison.prior.height_uncertainty_mm(frac),
        "current": comparison.current.height_uncertainty_mm(frac),
    }
    k = comparison.config.change_coverage
    dates = [comparison.prior.study_date, comparison.current.study_date]
    xlabels = [
        d.isoformat() if d is not None else name
        for d, name in zip(dates, ("prior", "current"), strict=True)
    ]
    for i, v in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        assert v.prior is not None and v.current is not None
        for j, r in enumerate(REGIONS):
            hp, hc = v.prior.heights_mm.get(r), v.current.heights_mm.get(r)
            if hp is None or hc is None:
                continue
            dx = (j - 1) * 0.06
            ax.plot([dx, 1 + dx], [hp, hc], color="#555555", lw=1.0, zorder=1)
            points = ((dx, hp, v.prior, "prior"), (1 + dx, hc, v.current, "current"))
            for x, h, state, scan in points:
                ax.errorbar(
                    x,
                    h,
                    yerr=k * u[scan],
                    fmt=_MARKERS[r],
                    color=grade_colour(state.grade),
                    markeredgecolor="black",
                    markersize=5,
                    ecolor="#777777",
                    capsize=2,
                    zorder=2,
                )
        ax.set_xlim(-0.4, 1.4)
        ax.set_xticks([0, 1], xlabels, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(
            f"{v.level}: {v.status.replace('_', ' ')}",
            fontsize=9,
            color=_STATUS_COLOURS.get(v.status, "black"),
        )
        if i % cols == 0:
            ax.set_ylabel("height (mm)", fontsize=8)
    if not shown:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no vertebra in both scans", ha="center", va="center")
        ax.set_axis_off()
    else:
        fig.suptitle(
            "heights then and now: anterior o, middle s, posterior ^ "
            f"(bars: +-{k:g} u; colour: grade)",
            fontsize=8,
        )
    return fig


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return html.escape(str(value))


_COLUMNS = (
    ("level", "level"),
    ("status", "status"),
    ("basis", "basis"),
    ("confidence", "conf"),
    ("grade_prior", "grade then"),
    ("grade_current", "grade now"),
    ("type_current", "type now"),
    ("largest_loss_region", "largest loss"),
    ("largest_loss_mm", "loss mm"),
    ("largest_loss_pct", "loss %"),
    ("height_tolerance_mm", "tolerance mm"),
    ("reason", "reason"),
    ("notes", "notes"),
)


def render_comparison_html(comparison: Comparison) -> str:
    """The page (UTF-8 text)."""
    doc = comparison.to_dict()
    s = doc["summary"]
    png = base64.b64encode(figure_png(comparison_figure(comparison))).decode("ascii")
    interval = doc["interval"]
    if interval["days"] is not None:
        when = f"{interval['days']} days ({interval['years']:.2f} years)"
    else:
        when = html.escape(interval["note"] or "unknown")
    ident = doc["identity"]
    rows = []
    for rec in comparison.to_records():
        colour = _STATUS_COLOURS.get(rec["status"], "black")
        cells = []
        for key, _ in _COLUMNS:
            value = rec[key]
            if key == "confidence":
                value = confidence_text(value) if value is not None else ""
                cells.append(f"<td>{value}</td>")
            elif key == "status":
                cells.append(f'<td style="color:{colour};font-weight:bold">{_cell(value)}</td>')
            else:
                cells.append(f"<td>{_cell(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in _COLUMNS)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"])
    reasons = "".join(f"<li>{html.escape(n)}</li>" for n in ident["reasons"])
    incident = ", ".join(s["incident_levels"]) or "none"
    worsening = ", ".join(s["worsening_levels"]) or "none"
    only = []
    if s["only_in_prior"]:
        only.append(f"only in the prior scan: {', '.join(s['only_in_prior'])}")
    if s["only_in_current"]:
        only.append(f"only in the current scan: {', '.join(s['only_in_current'])}")
    title = f"vertgrade follow-up: {html.escape(str(doc['subject']))}"
    forced = " (compared anyway: --force-mismatch)" if ident["forced"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<p><b>Incident fractures:</b> {html.escape(incident)}. <b>Worsening:</b> {html.escape(worsening)}.
{html.escape("; ".join(only))}</p>
<p><b>Interval:</b> {when}.</p>
<p><b>One patient?</b> {html.escape(ident["status"])}{forced}</p><ul>{reasons}</ul>
<img alt="heights over time" src="data:image/png;base64,{png}">
<table><thead><tr>{head}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p style="font-size:0.8em;color:#666">Definitions: {html.escape(_definitions(doc))}.
vertgrade {html.escape(doc["versions"]["vertgrade"])}; research software, not for diagnosis.</p>
</body></html>
"""


def _definitions(doc: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {d['rule']} ({d['source']})" for k, d in doc["definitions"].items())
