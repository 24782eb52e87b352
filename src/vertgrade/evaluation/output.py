"""The outputs of an evaluation: its folder of files and its terminal tables.

:func:`write_evaluation` writes ``metrics.json``, ``metrics.csv``, ``confusion.csv``,
``matches.csv`` and ``confusion.png`` (:data:`EVALUATION_FILES`) through a staging folder, so that
an interrupted run leaves no half-written file; :func:`evaluation_table` and
:func:`confusion_table` are the Rich tables ``vertgrade evaluate`` prints. ``docs/evaluation.md``
describes every file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vertgrade.evaluation.metrics import Metric, metric_names
from vertgrade.evaluation.scoring import Evaluation, Match
from vertgrade.io.files import check_output_dir, staged_files
from vertgrade.io.grades import GRADES

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["EVALUATION_FILES", "confusion_table", "evaluation_table", "write_evaluation"]

#: The files :func:`write_evaluation` writes.
EVALUATION_FILES: tuple[str, ...] = (
    "metrics.json",
    "metrics.csv",
    "confusion.csv",
    "matches.csv",
    "confusion.png",
)


def _fmt(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _metrics_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "metric", "value", "ci_low", "ci_high", "n", "n_boot_valid"])
    for s in ev.scopes:
        for m in s.metrics:
            values = (m.value, m.ci_low, m.ci_high)
            w.writerow([s.name, m.name, *(_fmt(x) for x in values), m.n, m.n_boot_valid])
    return buf.getvalue()


def _confusion_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "true_grade", *(f"predicted_{g}" for g in GRADES)])
    for s in ev.scopes:
        for g, row in zip(GRADES, s.confusion, strict=True):
            w.writerow([s.name, g, *row])
    return buf.getvalue()


def _matches_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    cols = list(Match("", 1, "evaluated", None, None, None).to_dict())
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for m in ev.matches:
        w.writerow({k: "" if v is None else v for k, v in m.to_dict().items()})
    return buf.getvalue()


def _confusion_png(ev: Evaluation, path: Path) -> None:
    """Draw the overall confusion matrix with its counts (matplotlib's object API, no pyplot)."""
    from matplotlib.figure import Figure

    scope = ev.scope("all")
    conf = np.array(scope.confusion, dtype=float)
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    fig = Figure(figsize=(4.8, 4.2), dpi=120)
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for t in GRADES:
        for p in GRADES:
            ax.text(
                p,
                t,
                str(int(conf[t, p])),
                ha="center",
                va="center",
                color="white" if frac[t, p] > 0.6 else "black",
                fontsize=11,
            )
    ax.set_xticks(list(GRADES))
    ax.set_yticks(list(GRADES))
    ax.set_xlabel("predicted Genant grade")
    ax.set_ylabel("true Genant grade")
    ax.set_title(f"{scope.n_vertebrae} vertebrae, {scope.n_patients} patients", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true grade")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def write_evaluation(ev: Evaluation, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write the evaluation folder: metrics, confusion matrix, matches and a confusion plot.

    The files are written into a hidden staging folder inside ``out_dir`` and renamed into place
    one by one: an interrupted run leaves no half-written file.

    Parameters
    ----------
    ev : Evaluation
    out_dir : str or Path
        Output folder; created if missing.
    force : bool, optional
        Write into an existing non-empty folder (files of the same names are replaced).

    Returns
    -------
    list of Path
        The files written, in :data:`EVALUATION_FILES` order.

    Raises
    ------
    OutputError
        ``out_dir`` is a file, or a non-empty folder without ``force``.
    """
    out = check_output_dir(out_dir, force=force)
    with staged_files(out, EVALUATION_FILES) as staging:
        texts = {
            "metrics.json": json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n",
            "metrics.csv": _metrics_csv(ev),
            "confusion.csv": _confusion_csv(ev),
            "matches.csv": _matches_csv(ev),
        }
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8", newline="")
        _confusion_png(ev, staging / "confusion.png")
    return [out / name for name in EVALUATION_FILES]


def _cell(m: Metric) -> str:
    if m.value is None:
        return "-"
    if m.ci_low is None or m.ci_high is None:
        return f"{m.value:.2f}"
    return f"{m.value:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"


def evaluation_table(ev: Evaluation) -> Table:
    """A terminal summary: one row per metric, one column per scope, with intervals.

    Parameters
    ----------
    ev : Evaluation

    Returns
    -------
    rich.table.Table
        Cells read ``value [ci_low, ci_high]``; ``-`` where undefined. The caption gives the
        counts of not-gradable and unmatched vertebrae and the bootstrap's settings.
    """
    from rich.table import Table

    pct = f"{100 * ev.ci_level:g} %"
    t = Table(
        title=f"evaluation - {ev.n_patients} patients, {ev.n_vertebrae} vertebrae",
        header_style="bold",
    )
    t.add_column("metric", justify="left")
    for s in ev.scopes:
        t.add_column(f"{s.name} (n={s.n_vertebrae})", justify="right")
    for name in metric_names():
        t.add_row(name, *(_cell(s.metric(name)) for s in ev.scopes))
    c = ev.counts
    t.caption = (
        f"{pct} intervals: bootstrap over patients, {ev.n_boot} resamples, seed {ev.seed}; "
        f"score: {ev.score_source}. Not gradable: {c['not_gradable']}; true grade without "
        f"prediction: {c['truth_without_prediction']}; prediction without true grade: "
        f"{c['prediction_without_truth']}."
    )
    if ev.caution:
        t.caption += f" Caution: {ev.caution}."
    return t


def confusion_table(ev: Evaluation, scope: str = "all") -> Table:
    """The confusion matrix of one scope as a terminal table (rows: true grade)."""
    from rich.table import Table

    s = ev.scope(scope)
    t = Table(title=f"confusion matrix - {scope}", header_style="bold")
    t.add_column("true \\ predicted", justify="right")
    for g in GRADES:
        t.add_column(str(g), justify="right")
    for g, row in zip(GRADES, s.confusion, strict=True):
        t.add_row(str(g), *(str(x) for x in row))
    return t
