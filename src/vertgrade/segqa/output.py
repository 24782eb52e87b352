"""The outputs of segmentation QA: ``seg_qa.json`` and ``seg_qa.csv``, and the terminal tables.

:func:`write_seg_qa` writes both files as one transaction (:func:`vertgrade.io.files.
output_transaction`): into a staging folder, then moved into place together, so that an
interrupted run leaves the folder as it was; a non-empty folder is refused without ``force``.
``docs/seg-qa.md`` describes every field.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertgrade.io.files import output_transaction, prepare_output_dir
from vertgrade.segqa.case import CSV_COLUMNS, CaseQA
from vertgrade.segqa.metrics import level_text
from vertgrade.segqa.run import SegQAReport

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "SEG_QA_FILES",
    "cases_table",
    "cohort_table",
    "seg_qa_document",
    "vertebrae_table",
    "write_seg_qa",
]

#: The files :func:`write_seg_qa` writes.
SEG_QA_FILES: tuple[str, ...] = ("seg_qa.json", "seg_qa.csv")

#: Decimals written: volumes (mm3) to 0.1, every other number to 1e-4 (mm, Dice, fractions).
_VOLUME_DECIMALS = 1
_DECIMALS = 4


def _round(value: Any, key: str = "") -> Any:
    """Round the floats of a JSON-ready document (never ``-0.0``, never NaN)."""
    if isinstance(value, dict):
        return {k: _round(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, key) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        nd = _VOLUME_DECIMALS if key.endswith("_mm3") else _DECIMALS
        return round(value, nd) + 0.0
    return value


def _cell(value: Any, key: str) -> Any:
    value = _round(value, key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _csv_text(report: SegQAReport) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for case in report.cases:
        for row in case.records():
            writer.writerow({k: _cell(row[k], k) for k in CSV_COLUMNS})
    return buf.getvalue()


def seg_qa_document(report: SegQAReport) -> dict[str, Any]:
    """``seg_qa.json``'s content: :meth:`SegQAReport.to_dict`, rounded."""
    out: dict[str, Any] = _round(report.to_dict())
    return out


def write_seg_qa(report: SegQAReport, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write ``seg_qa.json`` and ``seg_qa.csv`` (:data:`SEG_QA_FILES`) into ``out_dir``.

    Parameters
    ----------
    report : SegQAReport
    out_dir : str or Path
        The output folder; created if missing.
    force : bool
        Write into a folder that holds something (the two files are replaced).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    OutputError
        ``out_dir`` is a file, cannot be written, or is a non-empty folder without ``force``.
    """
    out = Path(out_dir)
    created = prepare_output_dir(out, force=force)
    with output_transaction(out, force=force, owned=SEG_QA_FILES, created=created) as stage:
        text = json.dumps(seg_qa_document(report), indent=2, allow_nan=False) + "\n"
        (stage / "seg_qa.json").write_text(text, encoding="utf-8")
        (stage / "seg_qa.csv").write_text(_csv_text(report), encoding="utf-8", newline="")
    return [out / name for name in SEG_QA_FILES]


# ---------------------------------------------------------------------------------------------
# Terminal tables
# ---------------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None or not math.isfinite(x) else fmt.format(x)


def _labels(labels: tuple[int, ...]) -> str:
    return ", ".join(level_text(x) for x in labels) or "-"


def vertebrae_table(case: CaseQA) -> Table:
    """One case, one row per vertebra."""
    from rich.table import Table

    t = Table(title=f"seg-qa - {case.subject}", header_style="bold")
    for col in ("level", "status", "Dice", "HD mm", "HD95 mm", "loc. mm", "identified", "flags"):
        t.add_column(col, justify="left" if col in ("level", "status", "flags") else "right")
    for v in case.vertebrae:
        ident = "-" if not v.in_truth else ("yes" if v.identified else "[red]no[/]")
        t.add_row(
            v.level,
            v.status if v.status == "matched" else f"[yellow]{v.status}[/]",
            _num(v.dice, "{:.3f}"),
            _num(v.hd_mm, "{:.1f}"),
            _num(v.hd95_mm, "{:.1f}"),
            _num(v.localisation_mm, "{:.1f}"),
            ident,
            ", ".join(v.flags),
        )
    s = case.summary
    t.caption = (
        f"id rate {_num(s.id_rate)}, mean Dice {_num(s.mean_dice, '{:.3f}')}; missing: "
        f"{_labels(s.missing)}; extra: {_labels(s.extra)}"
        + (f"; labels shifted by {s.label_shift:+d} level(s)" if s.label_shift else "")
    )
    return t


def cases_table(report: SegQAReport) -> Table:
    """One row per case."""
    from rich.table import Table

    t = Table(title=f"seg-qa - {len(report.cases)} cases", header_style="bold")
    cols = (
        "case",
        "truth",
        "missing",
        "extra",
        "id rate",
        "loc. mm",
        "Dice",
        "HD mm",
        "HD95 mm",
        "shift",
    )
    for col in cols:
        t.add_column(col, justify="left" if col in ("case", "missing", "extra") else "right")
    for c in report.cases:
        s = c.summary
        t.add_row(
            c.subject,
            str(s.n_truth),
            _labels(s.missing),
            _labels(s.extra),
            _num(s.id_rate),
            _num(s.mean_localisation_mm, "{:.1f}"),
            _num(s.mean_dice, "{:.3f}"),
            _num(s.mean_hd_mm, "{:.1f}"),
            _num(s.mean_hd95_mm, "{:.1f}"),
            f"{s.label_shift:+d}" if s.label_shift else "0",
        )
    return t


def cohort_table(report: SegQAReport) -> Table:
    """The cohort's means with their patient-bootstrap intervals."""
    from rich.table import Table

    pct = f"{100 * report.config.ci_level:g} %"
    t = Table(
        title=f"seg-qa - means over {len(report.cases)} cases, {report.n_patients} patients",
        header_style="bold",
    )
    for col in ("metric", "value", f"{pct} interval", "n"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m in report.cohort:
        interval = (
            "-" if m.ci_low is None or m.ci_high is None else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
        )
        t.add_row(m.name, _num(m.value, "{:.3f}"), interval, str(m.n))
    t.caption = f"intervals: bootstrap over patients, {report.n_boot} resamples, seed {report.seed}"
    return t
