"""The report: one self-contained HTML file (and a PDF) that shows why each vertebra got its grade.

``report.html`` holds everything inline: the figures as base64 PNG data URIs, the style sheet in
a ``<style>`` element; no script, no font, no link to anything outside the file, so it opens
offline, in any browser, years later. It shows

- a header: the subject, the patient and study identifiers of a DICOM input (name, ID, study
  date, accession; left out when anonymised), the date of the analysis, and a one-line
  impression (:func:`vertgrade.report.summary.impression`);
- a summary (fractured levels, worst grade) and the notes of loading and of the report itself
  (an input moved away since grading, for instance);
- the table of all vertebrae: grade, type, RHLV per third, heights, reference heights,
  confidence, trabecular HU, QC flags; a vertebra not gradable shows the reason instead of
  numbers;
- the spine overview: a curved mid-sagittal reformat along the centreline, every body outlined
  in its grade's colour (:func:`vertgrade.report.figures.overview_figure`);
- the alignment: coronal and sagittal views with the endplates of the Cobb angles, kyphosis and
  lordosis drawn (:func:`vertgrade.report.alignment.alignment_figure`), and their values;
- one panel per vertebra: its sagittal slice with the measured and reference heights of each
  third, and its axial height-loss map (:func:`vertgrade.report.figures.vertebra_figure`);
- an appendix: inputs with checksums (and whether they were found again), versions, and the
  parameters that differ from the defaults.

Confidences are written by :func:`vertgrade.report.style.confidence_text`, as every output writes
them.

The report is drawn from the result as ``result.json`` holds it, so that the report written right
after grading (:func:`render_report`) and one rewritten later from the result folder
(:func:`render_result_dir`, :func:`write_report`) show the same numbers.

The PDF is the same HTML printed by headless Chromium (:func:`vertgrade.report.pdf.html_to_pdf`):
one source for both. Chromium must be installed for ``pdf=True``; without it the writer stops
with an :class:`~vertgrade.errors.OutputError` that says so, before writing anything.
"""

from __future__ import annotations

import base64
import datetime
import json
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, cast

import jsonschema
import numpy as np

from vertgrade._version import __version__
from vertgrade.alignment import AlignmentConfig
from vertgrade.config import GENANT_THRESHOLDS, GradingConfig, ThirdsParams
from vertgrade.errors import InputError, OutputError
from vertgrade.geometry.thirds import THIRDS
from vertgrade.io.files import atomic_path
from vertgrade.io.load import load_study, load_study_with_series
from vertgrade.io.memory import is_in_memory_name
from vertgrade.io.nifti import file_sha256, read_volume
from vertgrade.report._workers import run_jobs
from vertgrade.report.alignment import alignment_figure
from vertgrade.report.figures import (
    VertebraPanels,
    figure_png,
    overview_figure,
    panel_extent_mm,
)
from vertgrade.report.files import validate_result
from vertgrade.report.pdf import REPORT_PDF, html_to_pdf, require_browser
from vertgrade.report.style import confidence_text, grade_css_variables
from vertgrade.report.summary import (
    StudyIdentifiers,
    analysis_date,
    changed_parameters,
    impression,
    study_identifiers,
)
from vertgrade.result import QC_FLAGS, SCHEMA_VERSION, SpineResult
from vertgrade.study import Study, Volume

if TYPE_CHECKING:
    from vertgrade.io.dicom import SeriesInfo

__all__ = [
    "REPORT_HTML",
    "InputState",
    "render_document",
    "render_report",
    "render_result_dir",
    "save_report",
    "write_report",
]

#: File name of the report in a result folder (the PDF's: :data:`vertgrade.report.pdf.REPORT_PDF`).
REPORT_HTML = "report.html"
# The style sheet added to the template's (in the package's templates folder).
_LAYOUT_CSS = "layout.css"


# --- inputs and their state -----------------------------------------------------------------


@dataclass(frozen=True)
class InputState:
    """What the report found of one input named in ``result.json``'s provenance.

    Attributes
    ----------
    role : str
        ``ct``, ``labels``, ``bodies`` or ``centroids``.
    path : str
        The path as recorded at grading.
    sha256 : str or None
        The checksum recorded at grading.
    state : str
        What the report found there, in words.
    used : bool
        Whether the report's images were drawn from it.
    """

    role: str
    path: str
    sha256: str | None
    state: str
    used: bool


def _locate_input(
    entry: Mapping[str, Any], result_dir: Path
) -> tuple[Path | None, str, Path | None]:
    """Find a recorded input again: ``(path, state, found_but_changed)``.

    A relative path is tried from the working folder, the result folder and its parent; a file is
    accepted only if its SHA-256 matches the recorded one (when one was recorded). A folder (a
    DICOM series, TotalSegmentator's files) is accepted here and its checksum, computed as
    loading computes it, compared once it is read.
    """
    recorded = Path(str(entry["path"]))
    sha = entry.get("sha256")
    candidates = (
        [recorded]
        if recorded.is_absolute()
        else [recorded, result_dir / recorded, result_dir.parent / recorded]
    )
    seen: set[Path] = set()
    existing = []
    for c in candidates:
        key = c.resolve()
        if key not in seen and c.exists():
            seen.add(key)
            existing.append(c)
    if not existing:
        return None, "not found (moved or deleted since grading)", None
    for c in existing:
        if c.is_dir():
            return c, f"found at {c}", None
        if sha is None:
            return c, f"found at {c} (no checksum recorded)", None
        if file_sha256(c) == sha:
            return c, f"found at {c}, checksum matches", None
    return None, f"changed since grading: {existing[0]} has another SHA-256", existing[0]


@dataclass(frozen=True)
class _Loaded:
    """What a result folder gave: the document, the volumes found, and what happened."""

    document: dict[str, Any]
    ct: Volume | None
    bodies: Volume | None
    labels: Volume | None
    inputs: list[InputState]
    notes: list[str]
    alerts: list[str]
    series: SeriesInfo | None = None
    graded_on: datetime.date | None = None


def _read_document(result_dir: Path) -> dict[str, Any]:
    if not result_dir.exists():
        raise InputError(result_dir, "no such result folder")
    if not result_dir.is_dir():
        raise InputError(result_dir, "is not a folder (expected a vertgrade result folder)")
    path = result_dir / "result.json"
    if not path.is_file():
        raise InputError(path, "no such file: not a vertgrade result folder (run vertgrade grade)")
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"is not a readable JSON file ({err})") from err
    try:
        validate_result(document)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        raise InputError(
            path,
            f"does not follow the result schema {SCHEMA_VERSION} at {where}: {err.message} "
            "(written by another vertgrade version? grade again)",
        ) from err
    return document


def _load_result_dir(result_dir: Path) -> _Loaded:
    """Read a result folder: ``result.json``, ``bodies.nii.gz``, and the CT (else the labels)
    named in its provenance where they can still be found unchanged."""
    document = _read_document(result_dir)
    notes: list[str] = []
    alerts: list[str] = []
    states: list[InputState] = []
    bodies: Volume | None = None
    bodies_path = result_dir / "bodies.nii.gz"
    if bodies_path.exists():
        bodies, _ = read_volume(bodies_path, kind="labels")
    else:
        alerts.append(f"{bodies_path} is missing: body outlines drawn from the vertebra labels.")

    inputs: dict[str, Any] = document["provenance"]["inputs"]
    located: dict[str, tuple[Path | None, str, Path | None]] = {
        r: _locate_input(inputs[r], result_dir) for r in ("ct", "labels") if r in inputs
    }
    ct_path = located["ct"][0] if "ct" in located else None
    labels_path = located["labels"][0] if "labels" in located else None
    problems: dict[str, str] = {}
    ct: Volume | None = None
    labels: Volume | None = None
    series: SeriesInfo | None = None

    def changed_folder(role: str, study: Study) -> bool:
        """A folder read again whose checksum is not the one recorded: not shown."""
        recorded = inputs[role].get("sha256")
        if recorded is None or study.checksums.get(role) in (None, recorded):
            return False
        path = located[role][0]
        located[role] = (None, f"changed since grading: {path} has another SHA-256", path)
        return True

    if ct_path is not None:
        try:
            if ct_path.is_dir():  # a DICOM series: read as grading read it, with its labels
                if labels_path is None:
                    raise InputError(ct_path, "a CT folder is read with its labels, not found")
                both, read_series = load_study_with_series(ct_path, labels_path)
                if not changed_folder("ct", both):
                    ct, labels, series = both.ct, both.labels, read_series
            else:
                ct, _ = read_volume(ct_path, kind="ct")
        except InputError as err:
            problems["ct"] = err.problem
    if labels_path is not None and labels is None and (ct is None or bodies is None):
        try:
            alone = load_study(None, labels_path)
            if not (labels_path.is_dir() and changed_folder("labels", alone)):
                labels = alone.labels
        except InputError as err:
            problems["labels"] = err.problem

    needed = {"ct": True, "labels": ct is None or bodies is None}
    for role in sorted(inputs):
        entry = inputs[role]
        sha = entry.get("sha256")
        used = (role == "ct" and ct is not None) or (role == "labels" and labels is not None)
        if role not in located:
            states.append(InputState(role, str(entry["path"]), sha, "not needed", False))
            continue
        found, state, changed = located[role]
        what = "CT" if role == "ct" else "label file"
        if role in problems:
            state = f"found at {found} but not readable: {problems[role]}"
            alerts.append(f"The {what} {entry['path']}: {state}; not shown.")
        elif not needed[role]:
            state += "; not needed (CT and bodies shown)"
        elif changed is not None:
            alerts.append(
                f"The {what} {entry['path']} has changed since grading (its SHA-256 differs "
                "from the one in result.json): not shown."
            )
        elif found is None and is_in_memory_name(entry["path"]):
            state = "given in memory at grading: no file to show"
            alerts.append(
                f"The {what} was given in memory at grading (no file to read again): not shown."
            )
        elif found is None:
            alerts.append(
                f"The {what} {entry['path']} named in result.json was not found (moved or "
                "deleted since grading): not shown."
            )
        states.append(InputState(role, str(entry["path"]), sha, state, used))
    if ct is None:
        notes.append(
            "No CT shown: the images show the segmentation"
            + (" (vertebra labels and bodies)." if labels is not None else " (bodies).")
            if bodies is not None or labels is not None
            else "No CT and no segmentation found: the panels show the measurements only."
        )
    # the date of the analysis: when result.json was written
    stamp = (result_dir / "result.json").stat().st_mtime
    graded_on = datetime.datetime.fromtimestamp(stamp).date()
    return _Loaded(document, ct, bodies, labels, states, notes, alerts, series, graded_on)


# --- rendering --------------------------------------------------------------------------------


def render_report(
    result: SpineResult,
    study: Study | None = None,
    *,
    series: SeriesInfo | None = None,
    anonymize: bool = False,
) -> str:
    """The report of a result just graded, as an HTML string.

    Parameters
    ----------
    result : SpineResult
        From :func:`vertgrade.grade_study`.
    study : Study, optional
        The study it was graded from; its CT (if any) is the images' background. Without it, or
        without a CT in it, the images show the segmentation.
    series : SeriesInfo, optional
        The DICOM series of the CT (:func:`vertgrade.io.load.load_study_with_series`): its
        patient name and ID, study date and accession number go in the header.
    anonymize : bool
        Leave the patient and study identifiers out (the header says so).

    Returns
    -------
    str
        A complete, self-contained HTML document. The date of the analysis is today's (or
        ``SOURCE_DATE_EPOCH``'s, :func:`vertgrade.report.summary.analysis_date`).
    """
    document = result.to_dict()
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    ct = study.ct if study is not None else None
    labels = study.labels if study is not None else None
    states = [
        InputState(role, e["path"], e.get("sha256"), "in memory, as graded", role == "ct")
        for role, e in sorted(document["provenance"]["inputs"].items())
    ]
    notes = [] if ct is not None else ["No CT: the images show the segmentation."]
    return render_document(
        document,
        ct=ct,
        bodies=bodies,
        labels=labels,
        inputs=states,
        notes=notes,
        identifiers=None if series is None else study_identifiers(series),
        anonymized=anonymize,
        analysed=analysis_date(),
    )


def render_result_dir(result_dir: str | Path, *, anonymize: bool = False) -> str:
    """The report of a result folder, as an HTML string.

    Reads ``result.json`` (validated against the schema), ``bodies.nii.gz``, and the CT named in
    the provenance where it can still be found with the same SHA-256 (else the labels, else the
    bodies alone); every fallback is written in the report's notes. A DICOM CT found again gives
    the header its patient and study identifiers (left out with ``anonymize``); the date of the
    analysis is ``result.json``'s modification date.

    Raises
    ------
    InputError
        The folder or its ``result.json`` is missing, unreadable or not a vertgrade result, or
        its ``bodies.nii.gz`` is unreadable.
    """
    d = _load_result_dir(Path(result_dir))
    return render_document(
        d.document,
        ct=d.ct,
        bodies=d.bodies,
        labels=d.labels,
        inputs=d.inputs,
        notes=d.notes,
        alerts=d.alerts,
        identifiers=None if d.series is None else study_identifiers(d.series),
        anonymized=anonymize,
        analysed=d.graded_on,
    )


def render_document(
    document: Mapping[str, Any],
    *,
    ct: Volume | None = None,
    bodies: Volume | None = None,
    labels: Volume | None = None,
    inputs: Sequence[InputState] = (),
    notes: Sequence[str] = (),
    alerts: Sequence[str] = (),
    identifiers: StudyIdentifiers | None = None,
    anonymized: bool = False,
    analysed: datetime.date | None = None,
) -> str:
    """Render the report of a result document (the content of ``result.json``).

    Parameters
    ----------
    document : mapping
        ``SpineResult.to_dict()`` or a loaded ``result.json``.
    ct : Volume, optional
        The CT (HU) behind the images.
    bodies : Volume, optional
        The isolated bodies labelled by vertebra: the outlines.
    labels : Volume, optional
        The vertebra labels: the background without a CT, the outlines without bodies.
    inputs : sequence of InputState
        What was found of each recorded input (shown under provenance).
    notes : sequence of str
        What the images are drawn from (shown at the top, with the loading notes).
    alerts : sequence of str
        What the report had to do without that it would have shown: an input moved or changed
        since grading (shown at the top, marked).
    identifiers : StudyIdentifiers, optional
        The patient and study identifiers of a DICOM input, for the header.
    anonymized : bool
        Leave ``identifiers`` out; the header says that they were left out.
    analysed : date, optional
        The date of the analysis, for the header.

    Returns
    -------
    str
        The HTML document.
    """

    verts: list[Mapping[str, Any]] = list(document["vertebrae"])
    params = document["provenance"].get("parameters") or {}
    thresholds = tuple(float(t) for t in params.get("thresholds", GENANT_THRESHOLDS))
    regions = _thirds_params(params)
    volumes = {"ct": ct, "bodies": bodies, "labels": labels}
    painter = VertebraPanels(
        **volumes, extent_mm=panel_extent_mm(verts), thresholds=thresholds, regions=regions
    )
    # each figure drawn by one job, the jobs shared out over forked processes where that is
    # safe (vertgrade.report._workers): the same figures, sooner
    jobs: list[Callable[[], bytes | None]] = [
        partial(_overview_png, document, **volumes),
        partial(_alignment_png, document, **volumes),
        *(partial(painter.png, v) for v in verts),
    ]
    overview_png, alignment_png, *panel_pngs = run_jobs(jobs)
    panels = [_panel_html(v, cast(bytes, png)) for v, png in zip(verts, panel_pngs, strict=True)]

    subject = str(document["subject"])
    rim = _fmt(regions.rim_mm, 0)
    parts = [
        _header_html(
            document, ct is not None, notes, alerts, thresholds, identifiers, anonymized, analysed
        ),
        _table_html(verts, document.get("qc_flags") or QC_FLAGS),
        _overview_html(overview_png, ct is not None, verts),
        _alignment_html(document.get("alignment"), alignment_png),
        '<h2 id="panels">Vertebrae one by one</h2>',
        '<p class="sub">Left: sagittal slice through the body centre in the vertebra\'s own frame '
        "(anterior left). Cyan lines: the measured anterior, middle and posterior heights, "
        "between each third's mean endplates; pale bands: the expected (reference) heights, "
        "centred on the measured ones, so that the missing height shows at both ends; dashed: "
        "the fitted endplate planes. Right: the height loss of every column of the body's "
        "axial footprint, anterior at the top, patient's right on the left; in grey its rim "
        f"({rim} mm), where the endplates round off, which no grade reads; faded: the sides, "
        "which only the whole body's RHLV reads; dashed boxes: the anterior, middle and "
        "posterior thirds the grade is read from. A vertebra not gradable shows no heights and "
        "no map.</p>",
        '<div class="panels">',
        *panels,
        "</div>",
        _provenance_html(document, inputs),
        f"<footer>Report written by vertgrade {escape(__version__)} from result schema "
        f"{escape(str(document.get('schema_version')))}. Heights in mm, losses in % of the "
        "reference height. Not a diagnosis: a measurement to be read by a radiologist.</footer>",
    ]
    templates = resources.files("vertgrade.report").joinpath("templates")
    template = Template(templates.joinpath("report.html").read_text(encoding="utf-8"))
    page = template.substitute(
        title=escape(f"vertgrade report: {subject}"),
        generator=escape(f"vertgrade {__version__}"),
        grade_colours=grade_css_variables(),
        body="\n".join(parts),
    )
    # the second style sheet (header, alignment, appendix, narrow screens, print at A4), after
    # the template's so that its rules win where both set one
    layout = templates.joinpath(_LAYOUT_CSS).read_text(encoding="utf-8")
    return page.replace("</style>", f"</style>\n<style>\n{layout}</style>", 1)


def _overview_png(
    document: Mapping[str, Any],
    *,
    ct: Volume | None,
    bodies: Volume | None,
    labels: Volume | None,
) -> bytes | None:
    overview = overview_figure(document, ct=ct, bodies=bodies, labels=labels)
    return figure_png(overview.figure) if overview is not None else None


def _alignment_png(
    document: Mapping[str, Any],
    *,
    ct: Volume | None,
    bodies: Volume | None,
    labels: Volume | None,
) -> bytes | None:
    aligned = alignment_figure(document, ct=ct, bodies=bodies, labels=labels)
    return figure_png(aligned.figure) if aligned is not None else None


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _img(png: bytes, alt: str) -> str:
    w, h = _png_size(png)
    return f'<img src="{_data_uri(png)}" width="{w}" height="{h}" alt="{escape(alt)}">'


def _grade_class(v: Mapping[str, Any]) -> str:
    return f"g{v['grade']}" if v.get("status") == "graded" and v.get("grade") is not None else "gna"


def _grade_badge(v: Mapping[str, Any]) -> str:
    if v.get("status") != "graded":
        return '<span class="badge gna">not gradable</span>'
    return f'<span class="badge {_grade_class(v)}">grade {int(v["grade"])}</span>'


def _fmt(x: Any, nd: int = 1, scale: float = 1.0) -> str:
    if x is None:
        return "–"
    f = float(x) * scale
    if not np.isfinite(f):
        return "–"
    text = f"{f:.{nd}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0"


def _trio(d: Mapping[str, Any] | None, nd: int = 1, scale: float = 1.0) -> str:
    if not d:
        return "–"
    return " / ".join(_fmt(d.get(r), nd, scale) for r in THIRDS)


def _flags(v: Mapping[str, Any], meanings: Mapping[str, str]) -> str:
    # a flag's name may break after its underscores (<wbr>): a long one does not widen the
    # table beyond a printed page
    return " ".join(
        f'<span class="flag" title="{escape(meanings.get(f, ""))}">'
        f"{escape(f).replace('_', '_<wbr>')}</span>"
        for f in v.get("flags") or []
    )


def _thirds_params(params: Mapping[str, Any]) -> ThirdsParams:
    """The run's ``morphometry.regions`` parameters (the defaults where not recorded)."""
    recorded = (params.get("morphometry") or {}).get("regions") or {}
    default = ThirdsParams()
    return ThirdsParams(
        rim_mm=float(recorded.get("rim_mm", default.rim_mm)),
        central_fraction=float(recorded.get("central_fraction", default.central_fraction)),
    )


def _identity_html(
    subject: str,
    identifiers: StudyIdentifiers | None,
    anonymized: bool,
    analysed: datetime.date | None,
) -> str:
    """The header's identification line: subject, DICOM identifiers, date of the analysis."""
    items: list[tuple[str, str]] = [("subject", subject)]
    if anonymized:
        items.append(("identifiers", "left out (anonymised)"))
    elif identifiers is not None:
        items += identifiers.rows()
    if analysed is not None:
        items.append(("analysed", analysed.isoformat()))
    cells = "".join(
        f'<div><span class="k">{escape(k)}</span> <span class="v">{escape(v)}</span></div>'
        for k, v in items
    )
    return f'<div class="identity">{cells}</div>'


def _header_html(
    document: Mapping[str, Any],
    has_ct: bool,
    notes: Sequence[str],
    alerts: Sequence[str],
    thresholds: Sequence[float],
    identifiers: StudyIdentifiers | None = None,
    anonymized: bool = False,
    analysed: datetime.date | None = None,
) -> str:
    s = document["summary"]
    verts = document["vertebrae"]
    by_level = {v["level"]: v for v in verts}
    subject = str(document["subject"])
    span = f"{verts[0]['level']}–{verts[-1]['level']}" if verts else "none"
    fractured = [by_level[lv] for lv in s.get("fractured_levels", []) if lv in by_level]
    frac_html = (
        " ".join(
            f'<a href="#v-{escape(v["level"])}"><span class="badge {_grade_class(v)}">'
            f"{escape(v['level'])} {int(v['grade'])}"
            f"{(' ' + escape(str(v['type']))) if v.get('type') else ''}</span></a>"
            for v in fractured
        )
        or '<span class="badge g0">none</span>'
    )
    worst = s.get("worst_grade")
    worst_html = (
        f'<span class="badge g{int(worst)}">grade {int(worst)}</span>'
        if worst is not None
        else '<span class="badge gna">none graded</span>'
    )
    not_gradable = [v["level"] for v in verts if v.get("status") != "graded"]
    cards = [
        f'<div class="card"><div class="k">fractured levels (grade &ge; 1)</div>'
        f'<div class="n">{frac_html}</div></div>',
        f'<div class="card"><div class="k">worst grade</div>'
        f'<div class="n">{worst_html}</div></div>',
        f'<div class="card"><div class="k">graded</div><div class="n">{s["n_graded"]} of '
        f"{s['n_vertebrae']}</div></div>",
        f'<div class="card"><div class="k">not gradable</div><div class="n">'
        f"{s['n_not_gradable']}</div>"
        f'<div class="k">{escape(", ".join(not_gradable))}</div></div>',
    ]
    t1, t2, t3 = (_fmt(t, 0, 100.0) for t in thresholds)
    legend = (
        '<div class="legend">Outline colours: '
        f'<span class="badge g0">grade 0 (&lt; {t1} %)</span>'
        f'<span class="badge g1">grade 1 ({t1}-{t2} %)</span>'
        f'<span class="badge g2">grade 2 ({t2}-{t3} %)</span>'
        f'<span class="badge g3">grade 3 (&ge; {t3} %)</span>'
        '<span class="badge gna">not gradable</span>'
        " &nbsp;Grade from the largest height loss of the three thirds (Genant).</div>"
    )
    out = [
        f"<h1>vertgrade report: {escape(subject)}</h1>",
        _identity_html(subject, identifiers, anonymized, analysed),
        f'<p class="impression" id="impression"><strong>Impression:</strong> '
        f"{escape(impression(document))}.</p>",
        f'<p class="sub">{len(verts)} vertebrae ({escape(span)}), '
        f"{'CT and segmentation' if has_ct else 'segmentation only (no CT)'}; relative height "
        "loss (RHLV) of each vertebral body against the healthy reference from its neighbours, "
        "Genant grade and type.</p>",
        f'<div class="summary">{"".join(cards)}</div>',
        legend,
    ]
    if alerts:
        items = "".join(f"<li>{escape(n)}</li>" for n in alerts)
        out.append(f'<div class="notes alert"><strong>Attention</strong><ul>{items}</ul></div>')
    loading = [*notes, *(str(n) for n in document.get("notes") or [])]
    if loading:
        items = "".join(f"<li>{escape(n)}</li>" for n in loading)
        out.append(f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>')
    return "\n".join(out)


def _overview_html(png: bytes | None, has_ct: bool, verts: Sequence[Mapping[str, Any]]) -> str:
    head = '<h2 id="overview">Spine overview</h2>'
    if png is None:
        return head + "<p>No overview: fewer than two points to draw the spine's centreline.</p>"
    what = (
        "the CT resampled on a curved surface that follows the spine's centreline (each row a "
        "line along the local anterior direction), so that the spine appears straightened"
        if has_ct
        else "the segmentation (no CT) on a curved surface that follows the spine's centreline"
    )
    caption = (
        f"Curved mid-sagittal reformat: {what}. Anterior on the left; each body outlined in "
        "the colour of its grade and labelled with level, grade, type and its largest regional "
        "RHLV. Distances across are in mm from the centreline."
    )
    rows = "".join(
        f"<tr><td><a href='#v-{escape(v['level'])}'>{escape(v['level'])}</a></td>"
        f"<td>{_grade_badge(v)}</td><td>{escape(str(v.get('type') or ''))}</td></tr>"
        for v in verts
    )
    side = (
        '<div class="side"><table><tr><th>level</th><th>grade</th><th>type</th></tr>'
        f"{rows}</table></div>"
    )
    return (
        f'{head}<div class="overview"><figure style="max-width: {_png_size(png)[0] + 2}px">'
        f"{_img(png, 'spine overview')}"
        f"<figcaption>{escape(caption)}</figcaption></figure>{side}</div>"
    )


def _method_note(v: Mapping[str, Any]) -> str:
    """Under an SVM grade: that it is the classifier's, and the threshold grade beside it."""
    if v.get("grade_method") != "svm":
        return ""
    return f"<div><small>SVM; thresholds: {escape(str(v.get('threshold_grade')))}</small></div>"


#: The vertebra table's columns (the header repeated on each printed page).
_TABLE_COLUMNS: tuple[str, ...] = (
    "level",
    "status / grade",
    "type",
    "RHLV A / M / P (%)",
    "RHLV body (%)",
    "height A / M / P (mm)",
    "reference A / M / P (mm)",
    "from",
    "confidence",
    "HU",
    "QC flags",
)


def _table_html(verts: Sequence[Mapping[str, Any]], meanings: Mapping[str, str]) -> str:
    head = "<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in _TABLE_COLUMNS)
    head += "</tr></thead>"
    rows = []
    used_flags: dict[str, None] = {}
    for v in verts:
        for f in v.get("flags") or []:
            used_flags[f] = None
        ref = v.get("reference") or {}
        rh = v.get("rhlv") or {}
        level = escape(str(v["level"]))
        cells = [
            f'<td><a href="#v-{level}">{level}</a></td>',
            f"<td>{_grade_badge(v)}{_method_note(v)}</td>",
        ]
        if v.get("status") != "graded":
            # no numbers: they were not used, and shown they would read as measured
            reason = escape(str(v.get("reason") or "no reason given"))
            cells.append(
                f'<td class="reason" colspan="{len(_TABLE_COLUMNS) - 3}">'
                f"<strong>not gradable:</strong> {reason}</td>"
            )
        else:
            cells += [
                f"<td>{escape(str(v.get('type') or ''))}</td>",
                f'<td class="num trio">{_trio(v.get("rhlv"), 0, 100.0)}</td>',
                f'<td class="num">{_fmt(rh.get("body"), 0, 100.0)}</td>',
                f'<td class="num trio">{_trio(v.get("heights_mm"))}</td>',
                f'<td class="num trio">{_trio(ref.get("heights_mm"))}</td>',
                f"<td>{escape(', '.join(ref.get('sources') or []))}</td>",
                f'<td class="num">{confidence_text(v.get("confidence"))}</td>',
                f'<td class="num">{_fmt(v.get("hu_trabecular"), 0)}</td>',
            ]
        cells.append(f"<td>{_flags(v, meanings)}</td>")
        rows.append(f'<tr class="row-{_grade_class(v)}">{"".join(cells)}</tr>')
    legend = ""
    if used_flags:
        items = "".join(
            f"<dt>{escape(f)}</dt><dd>{escape(meanings.get(f, 'unknown flag'))}</dd>"
            for f in used_flags
        )
        legend = f'<h3>QC flags raised in this study</h3><dl class="flags">{items}</dl>'
    return (
        '<h2 id="table">All vertebrae</h2>'
        '<p class="sub">RHLV = (reference - measured) / reference height. A / M / P: anterior, '
        "middle, posterior third. Heights from the CT where its endplate edges were found, "
        "else from the mask. HU: median of the trabecular core. A vertebra not gradable shows "
        "why instead of its numbers.</p>"
        f'<table id="vertebrae">{head}<tbody>{"".join(rows)}</tbody></table>{legend}'
    )


def _alignment_html(alignment: Mapping[str, Any] | None, png: bytes | None) -> str:
    head = '<h2 id="alignment">Alignment</h2>'
    if not alignment:
        return head + "<p>No alignment in this result.</p>"
    coronal = alignment.get("coronal") or {}
    sagittal = alignment.get("sagittal") or {}
    rows = []
    for i, c in enumerate(coronal.get("curves") or [], start=1):
        note = (
            "" if c.get("complete", True) or c.get("note") else " (may continue beyond the image)"
        )
        rows.append(
            f"<tr><td>coronal curve {i} (Cobb)</td>"
            f'<td class="num">{_fmt(c.get("cobb_deg"), 1)}&deg;</td>'
            f"<td>{escape(str(c.get('upper_end')))}–{escape(str(c.get('lower_end')))}</td>"
            f"<td>apex {escape(str(c.get('apex')))}, convex {escape(str(c.get('convex')))}, "
            f"apex {_fmt(c.get('apex_deviation_mm'), 0)} mm off the line of the end vertebrae"
            f"{escape(note)}{(': ' + escape(str(c['note']))) if c.get('note') else ''}</td></tr>"
        )
    if not coronal.get("curves"):
        largest = coronal.get("largest_angle_deg")
        rows.append(
            "<tr><td>coronal (Cobb)</td>"
            f'<td class="num">{"–" if largest is None else _fmt(largest, 1) + "&deg;"}</td>'
            f"<td></td><td>{escape(str(coronal.get('reason') or 'no curve'))}</td></tr>"
        )
    for key, name in (
        ("thoracic_kyphosis", "thoracic kyphosis"),
        ("lumbar_lordosis", "lumbar lordosis"),
    ):
        a = sagittal.get(key) or {}
        angle = a.get("angle_deg")
        span = (
            f"{escape(str(a.get('upper')))} {escape(str(a.get('upper_endplate') or ''))} – "
            f"{escape(str(a.get('lower')))} {escape(str(a.get('lower_endplate') or ''))}"
            if a.get("upper")
            else ""
        )
        what = a.get("reason") or ("standard span" if a.get("standard") else "")
        rows.append(
            f"<tr><td>{name}</td>"
            f'<td class="num">{"–" if angle is None else _fmt(angle, 1) + "&deg;"}</td>'
            f"<td>{span}</td><td>{escape(str(what))}</td></tr>"
        )
    table = (
        '<table class="alignment"><thead><tr><th>angle</th><th>value</th><th>between</th>'
        f"<th>notes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    notes = "".join(f"<li>{escape(str(n))}</li>" for n in alignment.get("notes") or [])
    notes_html = f'<ul class="alignment-notes">{notes}</ul>' if notes else ""
    caption = (
        "Left: coronal view, seen from the front (the patient's right on the left); right: "
        "sagittal view, anterior on the left. Both are sampled in the patient's coronal and "
        "sagittal planes at one scale, following the spine in depth, so that the lines drawn "
        "make the angles reported: each coronal curve's end endplates (Cobb), and the endplates "
        "kyphosis and lordosis are measured between. * marks a curve that may continue beyond "
        "the image, or an angle over another span than the standard one. Signs: coronal "
        "positive convex right; kyphosis positive kyphotic, lordosis positive lordotic."
    )
    figure = (
        f'<figure class="alignment-figure">{_img(png, "alignment: coronal and sagittal views")}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        if png is not None
        else "<p>No alignment figure: no centreline to draw the views along.</p>"
    )
    return f"{head}{table}{notes_html}{figure}"


def _panel_html(v: Mapping[str, Any], png: bytes) -> str:
    level = escape(str(v["level"]))
    heights = v.get("heights_mm") or {}
    ref = v.get("reference") or {}
    ref_h = ref.get("heights_mm") or {}
    rh = v.get("rhlv") or {}
    rows = "".join(
        f"<tr><td>{name}</td><td class='num'>{_fmt(heights.get(key))}</td>"
        f"<td class='num'>{_fmt(ref_h.get(key))}</td>"
        f"<td class='num'>{_fmt(rh.get(key), 0, 100.0)}</td></tr>"
        for key, name in (
            ("anterior", "anterior"),
            ("middle", "middle"),
            ("posterior", "posterior"),
            ("body", "whole body"),
        )
    )
    facts = []
    graded = v.get("status") == "graded"
    if not graded:
        # the reason, not the numbers: truncated or implausible, they would read as measured
        facts.append(f"<p><strong>Not gradable:</strong> {escape(str(v.get('reason') or ''))}</p>")
    if graded and ref.get("sources"):
        unc = ref.get("uncertainty")
        facts.append(
            f"<p>Reference ({escape(str(ref.get('method')))}) from "
            f"{escape(', '.join(ref['sources']))}"
            + (f", uncertainty &plusmn;{_fmt(unc, 1, 100.0)} %" if unc is not None else "")
            + ".</p>"
        )
    if graded and v.get("heights_source"):
        mask = v.get("heights_mask_mm")
        facts.append(
            f"<p>Heights from the {'CT' if v['heights_source'] == 'ct' else 'mask'}"
            + (
                f" (mask-based A / M / P: {_trio(mask)} mm)"
                if v["heights_source"] == "ct" and mask
                else ""
            )
            + ".</p>"
        )
    ratios = v.get("ratios") or {}
    morph = v.get("morphometry") or {}
    shape = morph.get("shape") or {}
    if graded and ratios.get("anterior_posterior") is not None:
        typical = (
            f" (typical of {escape(str(v['level']))}: "
            f"{_fmt(shape.get('typical_anterior_posterior'), 2)} and "
            f"{_fmt(shape.get('typical_middle_posterior'), 2)})"
            if shape
            else ""
        )
        facts.append(
            f"<p>Height ratios A/P {_fmt(ratios.get('anterior_posterior'), 2)}, M/P "
            f"{_fmt(ratios.get('middle_posterior'), 2)}{typical}.</p>"
        )
    walls = morph.get("walls_mm") or {}
    if graded and walls.get("anterior") is not None:
        facts.append(
            f"<p>Morphometric heights: anterior wall {_fmt(walls.get('anterior'), 1)} mm, "
            f"centre {_fmt(walls.get('middle'), 1)} mm, posterior wall "
            f"{_fmt(walls.get('posterior'), 1)} mm.</p>"
        )
    basis = v.get("grade_basis")
    if basis and v.get("grade"):
        said = {
            "anterior": "the anterior third against the reference",
            "middle": "the middle third against the reference",
            "posterior": "the posterior third against the reference",
            "central": "the centre of the body against the reference (a central depression)",
            "shape_wedge": "its own shape: the anterior height against the posterior",
            "shape_biconcave": "its own shape: the middle height against the posterior",
        }.get(str(basis), str(basis))
        facts.append(f"<p>Graded from {escape(said)}.</p>")
    if v.get("grade_method") == "svm":
        facts.append(
            f"<p>Grade from the SVM grader (probability {confidence_text(v.get('confidence'))}); "
            f"the RHLV thresholds give grade {escape(str(v.get('threshold_grade')))}.</p>"
        )
    if graded and v.get("hu_trabecular") is not None:
        facts.append(f"<p>Trabecular bone {_fmt(v['hu_trabecular'], 0)} HU.</p>")
    if v.get("flags"):
        facts.append(f"<p>QC flags: {_flags(v, QC_FLAGS)}</p>")
    conf = v.get("confidence")
    title_bits = [level, _grade_badge(v)]
    if v.get("type"):
        title_bits.append(escape(str(v["type"])))
    if conf is not None:
        title_bits.append(f"confidence {confidence_text(conf)}")
    alt = f"{v['level']}: sagittal slice with heights, and axial height-loss map"
    table = (
        "<table><thead><tr><th>region</th><th>height (mm)</th><th>reference (mm)</th>"
        f"<th>RHLV (%)</th></tr></thead><tbody>{rows}</tbody></table>"
        if graded
        else ""
    )
    return (
        f'<section class="vertebra" id="v-{level}"><h3>{" &middot; ".join(title_bits)}</h3>'
        f'<div class="body">{_img(png, alt)}<div class="facts">'
        f'{table}<div class="text">{"".join(facts)}</div></div></div></section>'
    )


def _value_text(value: Any) -> str:
    return "–" if value is None else json.dumps(value)


def _parameters_html(document: Mapping[str, Any]) -> str:
    """The parameters as an appendix: those that differ from this version's defaults (grading
    and alignment), the grade thresholds always; the whole set on screen only, folded."""
    prov = document["provenance"]
    params = prov.get("parameters") or {}
    alignment = document.get("alignment") or {}
    changed = changed_parameters(params, GradingConfig().to_dict())
    changed += [
        (f"alignment.{k}", v, d)
        for k, v, d in changed_parameters(
            alignment.get("parameters") or {}, AlignmentConfig().to_dict()
        )
    ]
    thresholds = params.get("thresholds", GENANT_THRESHOLDS)
    key_rows = (
        f"<tr><td>grade thresholds (RHLV)</td><td>{_value_text(list(thresholds))}</td></tr>"
        f"<tr><td>reference estimator</td><td><code>"
        f"{escape(str(prov.get('reference_estimator')))}</code></td></tr>"
    )
    if changed:
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td>{escape(_value_text(v))}</td>"
            f"<td>{escape(_value_text(d))}</td></tr>"
            for k, v, d in changed
        )
        diff = (
            f"<p>{len(changed)} parameter{'s' if len(changed) != 1 else ''} differ from the "
            f"defaults of vertgrade {escape(__version__)}:</p>"
            '<table class="params"><thead><tr><th>parameter</th><th>value</th><th>default</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        diff = f"<p>Every other parameter is the default of vertgrade {escape(__version__)}.</p>"
    full = escape(json.dumps(params, indent=2, sort_keys=True))
    return (
        '<h3 id="parameters">Parameters</h3>'
        f'<table class="params">{key_rows}</table>{diff}'
        '<p class="sub">All parameters are in <code>result.json</code> '
        "(<code>provenance.parameters</code>).</p>"
        f'<details class="screen-only"><summary>All parameters</summary><pre>{full}</pre>'
        "</details>"
    )


def _provenance_html(document: Mapping[str, Any], inputs: Sequence[InputState]) -> str:
    prov = document["provenance"]
    states = {s.role: s for s in inputs}
    rows = []
    for role, e in sorted((prov.get("inputs") or {}).items()):
        st = states.get(role)
        rows.append(
            f"<tr><td>{escape(role)}</td><td><code>{escape(str(e.get('path')))}</code></td>"
            f'<td class="hash">{escape(str(e.get("sha256") or "–"))}</td>'
            f"<td>{escape(st.state if st else 'not checked')}</td></tr>"
        )
    inputs_html = (
        "<table><thead><tr><th>role</th><th>path at grading</th><th>SHA-256</th>"
        f"<th>at report time</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No input files recorded (graded from arrays in memory).</p>"
    )
    versions = ", ".join(
        f"{escape(str(k))} {escape(str(val))}"
        for k, val in sorted((prov.get("versions") or {}).items())
    )
    flags = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{escape(str(val))}</dd>"
        for k, val in (document.get("qc_flags") or QC_FLAGS).items()
    )
    return (
        '<section class="appendix"><h2 id="provenance">Appendix: provenance</h2>'
        f"<h3>Inputs</h3>{inputs_html}"
        f'<p class="versions"><strong>Versions:</strong> {versions}.</p>'
        f"{_parameters_html(document)}"
        '<details class="screen-only"><summary>QC flags and their meaning</summary>'
        f'<dl class="flags">{flags}</dl></details></section>'
    )


# --- writing ----------------------------------------------------------------------------------


def _check_targets(out: Path, *, pdf: bool, force: bool) -> list[Path]:
    """The report files to write into ``out``; an error if one exists without ``force``."""
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    targets = [out / REPORT_HTML, out / REPORT_PDF] if pdf else [out / REPORT_HTML]
    if not force:
        for t in targets:
            if t.exists():
                raise OutputError(t, "exists (use --force to overwrite)")
    return targets


def save_report(
    html_text: str,
    out_dir: str | Path,
    *,
    pdf: bool = False,
    force: bool = True,
    browser: str | Path | None = None,
) -> list[Path]:
    """Write ``report.html`` (and ``report.pdf``) into a folder, atomically.

    Both files are written to temporary files beside their targets and renamed into place only
    when both are complete. The PDF is printed from a copy of the HTML whose ``<details>``
    sections are open, so that the PDF holds everything.

    Parameters
    ----------
    html_text : str
        From :func:`render_report` or :func:`render_result_dir`.
    out_dir : path
        The result folder (created if missing).
    pdf : bool
        Also write ``report.pdf`` (needs Chromium, see :func:`~vertgrade.report.pdf.html_to_pdf`).
    force : bool
        Overwrite existing report files; without it an existing one is an error.
    browser : path, optional
        The Chromium executable for the PDF.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    OutputError
        A report file exists and ``force`` is false, the folder is a file, or the PDF cannot be
        printed (nothing is written then).
    """
    out = Path(out_dir)
    targets = _check_targets(out, pdf=pdf, force=force)
    html_path, pdf_path = out / REPORT_HTML, out / REPORT_PDF
    exe = require_browser(browser, target=pdf_path) if pdf else None
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(html_path) as tmp_html:
        tmp_html.write_text(html_text, encoding="utf-8", newline="\n")
        if pdf:
            with (
                tempfile.TemporaryDirectory(prefix="vertgrade-print-") as tmp,
                atomic_path(pdf_path) as tmp_pdf,
            ):
                printable = Path(tmp) / REPORT_HTML
                printable.write_text(
                    html_text.replace("<details>", "<details open>"), encoding="utf-8"
                )
                html_to_pdf(printable, tmp_pdf, browser=exe)
    return targets


def write_report(
    result_dir: str | Path,
    *,
    pdf: bool = False,
    force: bool = True,
    browser: str | Path | None = None,
    anonymize: bool = False,
) -> list[Path]:
    """(Re)write the report of a result folder: ``report.html`` and, with ``pdf``, ``report.pdf``.

    See :func:`render_result_dir` for what is read (and ``anonymize``), and :func:`save_report`
    for how it is written.

    Returns
    -------
    list of Path
        The files written.
    """
    # the checks that can fail do so before the seconds of rendering
    _check_targets(Path(result_dir), pdf=pdf, force=force)
    if pdf:
        require_browser(browser, target=Path(result_dir) / REPORT_PDF)
    text = render_result_dir(result_dir, anonymize=anonymize)
    return save_report(text, result_dir, pdf=pdf, force=force, browser=browser)
