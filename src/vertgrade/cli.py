"""The ``vertgrade`` command line: a thin layer over the Python API.

Every failure ends with one line ``error: <file>: <problem>`` on stderr and an exit status that
says what kind of failure it was (:data:`EXIT_CODES`; ``--debug`` shows the traceback of an
internal error):

====  ==========================================================================================
0     done
1     done, but some studies of a cohort failed (listed in its ``failures.csv``)
2     usage error: an unknown option, a bad value, options that do not go together
3     input error: a file or folder that cannot be used (named in the message), an output
      folder in the way, a bad parameters, model or grader file
4     setup error: an optional package, a segmenter's weights or the browser is missing (the
      message names the command that installs it)
5     internal error (a bug: please report it with the ``--debug`` traceback)
130   interrupted (Ctrl-C)
====  ==========================================================================================

Logging goes to stderr: warnings by default, ``-v`` adds each step, ``-vv`` debug detail,
``-q`` only errors (and no progress bars). Progress bars are drawn on stderr when it is a
terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from vertgrade.errors import InputError, SetupError, VertgradeError

if TYPE_CHECKING:
    from vertgrade.config import GradingConfig
    from vertgrade.result import SpineResult
    from vertgrade.workflow import GradeOptions

T = TypeVar("T")

#: Exit status -> meaning (the module docstring's table; ``vertgrade --help`` shows it).
EXIT_CODES = {
    0: "done",
    1: "done, some studies of a cohort failed",
    2: "usage error",
    3: "input error (a file or folder that cannot be used)",
    4: "setup error (an optional package, model weights or the browser missing)",
    5: "internal error",
    130: "interrupted",
}
EXIT_USAGE, EXIT_INPUT, EXIT_SETUP, EXIT_INTERNAL = 2, 3, 4, 5


def _help_types() -> None:
    """Make ``--help`` show flags as flags and lists as repeated values.

    Typer 0.29 prints every option's Python type beside it in ``--help``: a flag reads
    ``--force <bool>``, as if it took a value, and a list argument ``<list[Path]>``. A flag takes
    no value, so no type is shown for it, and a list reads ``<path>...``. Earlier typer shows
    neither (vertgrade requires typer < 0.29 for its start-up time; this keeps ``--help`` right
    where 0.29 is installed all the same).
    """
    import re

    from typer.core import TyperArgument, TyperOption

    for cls in (TyperOption, TyperArgument):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_vertgrade", False):
            continue  # typer < 0.29 shows no Python types; or patched already

        def display_type_rich(self: Any, ctx: Any, _original: Any = original) -> str | None:
            if getattr(self, "is_flag", False) and not getattr(self, "metavar", None):
                return None
            shown = _original(self, ctx)
            if isinstance(shown, str):
                shown = re.sub(r"<list\[(\w+)\]>", lambda m: f"<{m.group(1).lower()}>...", shown)
            return shown if isinstance(shown, str) or shown is None else str(shown)

        display_type_rich._vertgrade = True  # type: ignore[attr-defined]
        setattr(cls, "display_type_rich", display_type_rich)  # noqa: B010 (absent before 0.29)


_help_types()

app = typer.Typer(
    name="vertgrade",
    help="Grade osteoporotic vertebral compression fractures on spine CT, interpretably: "
    "height of every vertebral body over its whole footprint, healthy reference from its "
    "neighbours, relative height loss (RHLV), Genant grade and type.",
    epilog="Exit status: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + ".",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
_out = Console()
_err = Console(stderr=True)
_DEBUG = {"on": False}
#: The global verbosity: -1 quiet, 0 default, 1 ``-v``, 2 ``-vv``.
_VERBOSITY = {"level": 0}


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _import_nibabel_without_pydicom() -> None:
    """Import nibabel with pydicom hidden from it, in this process (a tenth of a second).

    nibabel imports pydicom, where it is installed (the ``dicom`` extra), only to parse DICOM
    headers embedded in NIfTI extensions, which vertgrade never reads: without it such an
    extension stays raw bytes, as nibabel keeps every other kind. vertgrade's own DICOM reading
    and writing import pydicom when they need it, as before. Only the command line does this;
    a program that imports vertgrade keeps nibabel as it loads it.
    """
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # import pydicom -> ImportError
    try:
        import nibabel  # noqa: F401
    finally:
        del sys.modules["pydicom"]


def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``, turning vertgrade's errors into one line and an exit status."""
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except SetupError as err:
        _fail(str(err), EXIT_SETUP)
    except (InputError, VertgradeError) as err:
        _fail(str(err), EXIT_INPUT)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:
        if _DEBUG["on"]:
            raise
        _fail(
            f"internal error: {type(err).__name__}: {err} (rerun with --debug for details)",
            EXIT_INTERNAL,
        )


def _configure_logging(verbosity: int) -> None:
    """Log vertgrade's messages to stderr at the level ``verbosity`` asks for."""
    import logging

    from rich.logging import RichHandler

    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = RichHandler(
        console=_err, show_time=False, show_path=verbosity >= 2, markup=False, rich_tracebacks=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("vertgrade")
    log.handlers[:] = [handler]
    log.setLevel(level)
    # propagating would print each message twice wherever the root logger has a handler of
    # its own; the CLI's handler is the only one vertgrade's messages need
    log.propagate = False


def _quiet(local: bool = False) -> bool:
    """Whether a command prints only errors (its own ``--quiet`` or the global one)."""
    return local or _VERBOSITY["level"] < 0


@contextmanager
def _progress_bar(description: str, *, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr for one long step; yields ``update(done, total, text)``.

    Drawn only where stderr is a terminal and the command is not quiet; it disappears when the
    step ends. It is redrawn on each update, not by a refresh thread: with no thread but the
    main one, the report's figures can be drawn on forked workers (``report/_workers.py``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    shown = not _quiet(quiet) and _err.is_terminal
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_err,
        transient=True,
        disable=not shown,
        auto_refresh=False,
    ) as bar:
        task = bar.add_task(description, total=None)
        bar.refresh()

        def update(done: float, total: float | None, text: str | None = None) -> None:
            bar.update(task, completed=done, total=total, description=text or description)
            bar.refresh()

        yield update


def _version(value: bool) -> None:
    if value:
        from vertgrade._version import __version__

        _out.print(f"vertgrade {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Say each step (-vv: debug detail) on stderr."
        ),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only errors on stderr: no warnings, no progress bars."),
    ] = False,
) -> None:
    _DEBUG["on"] = debug
    _VERBOSITY["level"] = -1 if quiet else min(verbose, 2)
    _configure_logging(_VERBOSITY["level"])


#: The order in which columns are dropped to fit a narrow terminal (first dropped first): a
#: level and its grade always stay.
_DROP_ORDER = ("HU", "height a/m/p mm", "conf", "type", "flags / reason", "RHLV a/m/p %")
_SHOWN_ORDER = (
    "level",
    "grade",
    "type",
    "RHLV a/m/p %",
    "height a/m/p mm",
    "conf",
    "HU",
    "flags / reason",
)


def _no_minus_zero(text: str) -> str:
    """``-0`` / ``-0.0`` as ``0`` / ``0.0``: a loss that rounds to zero has no sign.

    >>> _no_minus_zero("-0"), _no_minus_zero("-0.0"), _no_minus_zero("-0.4")
    ('0', '0.0', '-0.4')
    """
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _table_rows(
    result: SpineResult, truth: dict[int, dict[str, int]] | None
) -> list[dict[str, str]]:
    def trio(d: Any, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        if d is None:
            return "-"
        vals = [d.get(k) for k in ("anterior", "middle", "posterior")]
        return "/".join("-" if v is None else _no_minus_zero(fmt.format(v * scale)) for v in vals)

    colours = {0: "green", 1: "yellow", 2: "dark_orange", 3: "red"}
    rows = []
    for v in result.vertebrae:
        # a vertebra that is not gradable shows why, not numbers that would read as measured
        measured = v.status == "graded"
        row = {
            "level": v.level,
            "grade": "n/a" if v.grade is None else f"[{colours[v.grade]}]{v.grade}[/]",
            "type": v.fracture_type or "",
            "RHLV a/m/p %": trio(v.rhlv, 100, "{:.0f}") if measured else "-",
            "height a/m/p mm": trio(v.heights_mm) if measured else "-",
            # rounded once, as result.json and the report round it
            "conf": "-" if v.confidence is None else f"{round(v.confidence, 2):.2f}",
            "HU": "-" if v.hu_trabecular is None else f"{v.hu_trabecular:.0f}",
            "flags / reason": v.reason or ", ".join(v.flags),
        }
        if truth is not None:
            tr = truth.get(v.label)
            row["true grade"] = "-" if tr is None else str(tr["grade"])
        rows.append(row)
    return rows


def _table(
    result: SpineResult,
    truth: dict[int, dict[str, int]] | None = None,
    *,
    drop: tuple[str, ...] = (),
) -> Table:
    """The per-vertebra table. Numbers are never cut: their columns do not wrap and are as wide
    as their widest value; the flags column wraps instead."""
    t = Table(title=f"vertgrade - {result.subject}", header_style="bold")
    rows = _table_rows(result, truth)
    cols = [c for c in _SHOWN_ORDER if c not in drop] + (["true grade"] if truth else [])
    for col in cols:
        if col == "flags / reason":
            t.add_column(col, justify="left", overflow="fold", min_width=12)
        else:
            width = max([len(col)] + [len(_plain(r[col])) for r in rows])
            t.add_column(
                col,
                justify="left" if col in ("level", "type") else "right",
                no_wrap=True,
                min_width=width,
            )
    for r in rows:
        t.add_row(*(r[c] for c in cols))
    return t


def _min_width(table: Table) -> int:
    """The narrowest the table can be without cutting a number: its columns' minimum widths,
    their padding (one space each side) and the borders between them."""
    return sum((c.min_width or 1) + 2 for c in table.columns) + len(table.columns) + 1


def _plain(text: str) -> str:
    """``text`` without Rich markup (the grade's colour tags), for its width."""
    from rich.text import Text

    return Text.from_markup(text).plain


def _print_table(
    console: Console, result: SpineResult, truth: dict[int, dict[str, int]] | None = None
) -> None:
    """Print the table whole. Not on a terminal (piped, redirected), it is printed as wide as it
    needs; on a terminal too narrow for it, columns are dropped in a fixed order (HU first) until
    it fits, with a note naming them, never a number cut short."""
    if not console.is_terminal:
        wide = _table(result, truth)
        width = max(Console(width=100_000).measure(wide).maximum, 80)
        Console(file=console.file, width=width, no_color=True, highlight=False).print(wide)
        return
    dropped: tuple[str, ...] = ()
    table = _table(result, truth)
    for col in _DROP_ORDER:
        if _min_width(table) <= console.width:
            break
        dropped += (col,)
        table = _table(result, truth, drop=dropped)
    console.print(table)
    if dropped:
        console.print(
            f"[dim]columns left out to fit {console.width} columns: {', '.join(dropped)} "
            "(all of them are in vertebrae.csv)[/]"
        )


@app.command()
def grade(
    input: Annotated[
        Path | None,
        typer.Argument(
            help="CT (NIfTI, MHA, NRRD or MGZ in HU, or a DICOM series folder) or a VerSe / "
            "SPINEPS subject folder. Without --labels, the CT's vertebrae are segmented with "
            "TotalSegmentator (the totalseg extra). Omit for labels only."
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            "-l",
            help="Vertebra instance labels (VerSe numbering or "
            "TotalSegmentator output: multilabel file or folder of vertebrae_*.nii.gz; "
            "with a DICOM CT also a DICOM SEG).",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Result folder.")] = Path(
        "vertgrade-out"
    ),
    bodies: Annotated[
        Path | None,
        typer.Option(
            "--bodies",
            help="Vertebral body mask: TotalSegmentator vertebrae_body (1 = body) or a "
            "SPINEPS / TPTBox subregion mask (49 + 50 = body), told apart by its labels; "
            "replaces vertgrade's own body isolation.",
        ),
    ] = None,
    label_format: Annotated[
        str, typer.Option("--label-format", help="auto, verse or totalseg-total.")
    ] = "auto",
    subject: Annotated[
        str | None, typer.Option("--subject", help="Subject id for the outputs.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing result folder.")
    ] = False,
    series: Annotated[
        str | None,
        typer.Option("--series", help="SeriesInstanceUID to read from a DICOM folder."),
    ] = None,
    dicom_out: Annotated[
        bool,
        typer.Option(
            "--dicom-out",
            help="Also write DICOM outputs in OUTPUT/dicom/: a TID 1500 SR of the "
            "measurements, a SEG of the bodies, the overview as Secondary Capture.",
        ),
    ] = False,
    anonymize: Annotated[
        bool,
        typer.Option(
            "--anonymize",
            help="Leave patient and study identifiers out of the report; replace them in "
            "DICOM outputs.",
        ),
    ] = False,
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            help="Healthy reference: neighbours (training-free) or synthesis (needs --model).",
        ),
    ] = "neighbours",
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Synthesis model file (generator.safetensors)."),
    ] = None,
    grader: Annotated[
        Path | None,
        typer.Option(
            "--grader",
            help="SVM grader file (grader.json from train-grader; pickles are refused): grade "
            "from it (grade_method svm, its probabilities in result.json), the threshold grade "
            "kept beside it.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu or cuda (segmentation, synthesis).")
    ] = "cpu",
    segment_task: Annotated[
        str,
        typer.Option(
            "--segment-task",
            help="Without --labels: TotalSegmentator's 'total' task (its vertebrae) or "
            "'vertebrae' (vertebrae_pp_refined, VerSe numbering).",
        ),
    ] = "total",
    segment_bodies: Annotated[
        bool,
        typer.Option(
            "--segment-bodies",
            help="Without --labels: also segment the bodies (TotalSegmentator vertebrae_body) "
            "and use them as --bodies.",
        ),
    ] = False,
    segment_fast: Annotated[
        bool,
        typer.Option("--segment-fast", help="Without --labels: the 3 mm 'total' model (faster)."),
    ] = False,
    report: Annotated[
        bool,
        typer.Option("--report", help="Also write report.html (figures of every vertebra)."),
    ] = False,
    pdf: Annotated[
        bool,
        typer.Option("--pdf", help="Also write report.pdf (implies --report; needs Chromium)."),
    ] = False,
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="Grading parameters file (TOML or JSON; `vertgrade params` prints the "
            "defaults): thresholds, reference, QC bounds. Recorded in result.json.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the table.")] = False,
) -> None:
    """Grade every vertebra of a spine CT.

    Writes result.json, vertebrae.csv, alignment.csv and bodies.nii.gz (report.html with
    --report, DICOM outputs with --dicom-out; segmentation/ when the labels were made from the
    CT).
    """
    import warnings

    from vertgrade.io._inflate import prefetch

    # start inflating the images now, in a thread, while the rest of vertgrade is imported
    for path in (input, labels):
        if path is not None:
            prefetch(path)
    _import_nibabel_without_pydicom()

    from vertgrade.segment import SegmentOptions
    from vertgrade.workflow import StudyInputs, grade_to_folder

    options = _options(
        params,
        label_format=label_format,
        reference=reference,
        model=model,
        grader=grader,
        device=device,
        report=report,
        pdf=pdf,
        dicom_out=dicom_out,
        anonymize=anonymize,
        segment=SegmentOptions(
            task=segment_task,  # type: ignore[arg-type]  # checked by _options
            bodies=segment_bodies,
            fast=segment_fast,
            device=device,
        ),
    )
    if input is None and labels is None:
        _fail("give a CT, a VerSe folder, or --labels", EXIT_USAGE)
    inputs = StudyInputs(ct=input, labels=labels, bodies=bodies, subject=subject, series_uid=series)
    with (
        warnings.catch_warnings(record=True) as caught,
        _progress_bar("grading", quiet=quiet) as update,
    ):
        warnings.simplefilter("always")
        outcome = _run(
            grade_to_folder,
            inputs,
            output,
            options,
            force=force,
            progress=lambda ev: update(ev.done, ev.total, _STAGE_TEXT.get(ev.stage, ev.stage)),
        )
    if not _quiet():
        for w in caught:
            _err.print(f"warning: {w.message}", markup=False, highlight=False, soft_wrap=True)
    result = outcome.result
    if not _quiet(quiet):
        _print_table(_out, result)
        if result.alignment is not None:
            for line in result.alignment.describe():
                _out.print(f"alignment: {line}", markup=False, highlight=False)
        for note in result.notes:
            _out.print(f"[dim]note: {note}[/]")
        seg = " and segmentation/" if "segmentation" in result.provenance else ""
        _out.print(
            f"results in {output}/ (result.json, vertebrae.csv, alignment.csv, bodies.nii.gz{seg})"
        )


#: What the progress bar says during each stage of ``grade``.
_STAGE_TEXT = {
    "segment": "segmenting the vertebrae (TotalSegmentator)",
    "geometry": "frames of the vertebrae",
    "measure": "measuring the bodies",
    "write": "writing the results",
    "report": "drawing the report",
    "dicom": "writing the DICOM outputs",
}


def _options(params: Path | None, **options: Any) -> GradeOptions:
    """The grade options of a command (``grade``, ``cohort``), checked: a usage error exits 2."""
    from vertgrade.workflow import GradeOptions

    opts = GradeOptions(config=_grading_config(params), **options)
    try:
        opts.check()
    except ValueError as err:
        _fail(str(err), EXIT_USAGE)
    return opts


def _grading_config(params: Path | None) -> GradingConfig:
    """The grading parameters: the defaults, changed by a ``--params`` file."""
    from vertgrade.config import GradingConfig, config_from_dict, read_params

    if params is None:
        return GradingConfig()
    values = _run(read_params, params)
    try:
        return config_from_dict(values)
    except ValueError as err:
        _fail(f"{params}: {err}", EXIT_INPUT)


@app.command("params")
def params_command() -> None:
    """Print the default grading parameters as a TOML file for --params.

    Each parameter comes with a comment saying what it does; keep only the ones you change.
    """
    from vertgrade.config import config_to_toml

    print(config_to_toml(), end="")


def _parse_spacing(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) <= 0:
        _fail(f"--spacing: {text!r} is not one or three positive numbers such as 3,1,1", EXIT_USAGE)
    return (parts[0], parts[1], parts[2])


@app.command()
def phantom(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for ct.nii.gz, labels.nii.gz, truth.csv.")
    ],
    levels: Annotated[str, typer.Option("--levels", help="Level range, e.g. T10-L3.")] = "T10-L3",
    fracture: Annotated[
        list[str] | None,
        typer.Option(
            "--fracture",
            help="LEVEL:TYPE:SEVERITY, e.g. L1:wedge:0.35 (type wedge, "
            "biconcave or crush; severity = height loss of the worst third). Repeatable.",
        ),
    ] = None,
    orientation: Annotated[
        str, typer.Option("--orientation", help="Axis codes, e.g. RAS, LPS, PIR.")
    ] = "RAS",
    spacing: Annotated[
        str, typer.Option("--spacing", help="Voxel size in mm per array axis, e.g. 3,1,1.")
    ] = "1,1,1",
    scoliosis: Annotated[
        list[str] | None,
        typer.Option(
            "--scoliosis",
            help="UPPER-LOWER:SIDE:DEGREES, e.g. T5-T11:right:40: a coronal curve of that Cobb "
            "angle between those end vertebrae, convex to that side. Repeatable (consecutive "
            "curves share an end vertebra and bend to opposite sides).",
        ),
    ] = None,
    kyphosis: Annotated[
        float,
        typer.Option(
            "--kyphosis",
            help="Rotation of the spine's axis over T1-T12, degrees (the true T4-T12 kyphosis "
            "between endplates is written to truth.csv).",
        ),
    ] = 40.0,
    lordosis: Annotated[
        float,
        typer.Option(
            "--lordosis",
            help="Rotation of the spine's axis over L1-L5, degrees (the true L1-L5 lordosis is "
            "written to truth.csv).",
        ),
    ] = 45.0,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed.")] = 0,
    follow_up: Annotated[
        list[str] | None,
        typer.Option(
            "--follow-up",
            help="Write a pair, OUTPUT/prior and OUTPUT/current: the same spine scanned again "
            "with this fracture (LEVEL:TYPE:SEVERITY; at a level already fractured it "
            "progresses, elsewhere it is new). Repeatable; for `vertgrade compare`.",
        ),
    ] = None,
    follow_up_orientation: Annotated[
        str | None,
        typer.Option("--follow-up-orientation", help="Axis codes of the second scan (a pair)."),
    ] = None,
    follow_up_spacing: Annotated[
        str | None,
        typer.Option("--follow-up-spacing", help="Voxel size of the second scan (a pair)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing folder.")] = False,
) -> None:
    """Write a synthetic spine CT with known fractures and curves, and its truth table.

    With --follow-up: a pair of scans of the same spine (OUTPUT/prior, OUTPUT/current), for
    `vertgrade compare`.
    """
    from vertgrade.phantom import FractureSpec, ScoliosisSpec, make_phantom, write_phantom

    sp = _parse_spacing(spacing)
    pair = bool(follow_up) or follow_up_orientation is not None or follow_up_spacing is not None
    try:
        later = [FractureSpec.parse(f) for f in (follow_up or [])]
    except ValueError as err:
        _fail(f"--follow-up: {err}", EXIT_USAGE)
    try:
        specs = [FractureSpec.parse(f) for f in (fracture or [])]
    except ValueError as err:
        _fail(f"--fracture: {err}", EXIT_USAGE)
    try:
        curves = [ScoliosisSpec.parse(c) for c in (scoliosis or [])]
    except ValueError as err:
        _fail(f"--scoliosis: {err}", EXIT_USAGE)
    try:
        ph = make_phantom(
            levels,
            specs,
            orientation=orientation.upper(),
            spacing=sp,
            seed=seed,
            kyphosis_deg=kyphosis,
            lordosis_deg=lordosis,
            scoliosis=curves,
        )
    except ValueError as err:
        _fail(str(err), EXIT_USAGE)
    if not pair:
        _run(_write_phantom_checked, write_phantom, ph, output, force)
        _out.print(f"phantom {levels} ({orientation.upper()}, {spacing} mm) written to {output}/")
        return
    # the same spine (levels, curves, seed) scanned again: the prior's fractures, each one
    # named again replaced by its later state, and the new ones
    fractures = {f.level: f for f in specs}
    fractures.update({f.level: f for f in later})
    orient2 = (follow_up_orientation or orientation).upper()
    sp2 = _parse_spacing(follow_up_spacing) if follow_up_spacing is not None else sp
    try:
        current = make_phantom(
            levels,
            list(fractures.values()),
            orientation=orient2,
            spacing=sp2,
            seed=seed,
            kyphosis_deg=kyphosis,
            lordosis_deg=lordosis,
            scoliosis=curves,
        )
    except ValueError as err:
        _fail(str(err), EXIT_USAGE)
    from vertgrade.io.files import check_output_dir

    for sub in ("prior", "current"):  # both checked before either is written
        _run(check_output_dir, output / sub, force=force)
    _run(_write_phantom_checked, write_phantom, ph, output / "prior", force)
    _run(_write_phantom_checked, write_phantom, current, output / "current", force)
    _out.print(
        f"phantom pair {levels}: {output}/prior ({orientation.upper()}, {spacing} mm) and "
        f"{output}/current ({orient2}, {follow_up_spacing or spacing} mm)",
        highlight=False,
    )


def _write_phantom_checked(
    writer: Callable[..., object], ph: object, output: Path, force: bool
) -> None:
    from vertgrade.errors import OutputError

    try:
        writer(ph, output, force=force)
    except (ValueError, FileExistsError) as err:
        if isinstance(err, VertgradeError):
            raise
        raise OutputError(output, str(err)) from err


@app.command()
def demo(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Demo folder (default: vertgrade-demo/ in the current folder)."
        ),
    ] = Path("vertgrade-demo"),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing demo folder.")
    ] = False,
) -> None:
    """Grade a synthetic spine CT with known fractures and compare with the truth."""
    from vertgrade import grade_study, load_study
    from vertgrade.io.files import check_output_dir
    from vertgrade.phantom import FractureSpec, make_phantom, write_phantom
    from vertgrade.report.files import write_result

    _run(check_output_dir, output, force=force)
    specs = [
        FractureSpec.parse(s) for s in ("T12:wedge:0.32", "L1:crush:0.45", "L3:biconcave:0.23")
    ]
    _out.print(f"demo folder: {output.absolute()} (choose another with -o)", highlight=False)
    _out.print(
        "[bold]1.[/] synthetic spine T9-L4, 1 mm, LPS; fractures T12 wedge 32 %, "
        "L1 crush 45 %, L3 biconcave 23 %"
    )
    ph = make_phantom("T9-L4", specs, orientation="LPS", spacing=(1.0, 1.0, 1.0), seed=1)
    ph_dir = output / "phantom"
    _run(_write_phantom_checked, write_phantom, ph, ph_dir, True)
    _out.print(f"[bold]2.[/] grading {ph_dir}/ct.nii.gz with {ph_dir}/labels.nii.gz")
    study = _run(load_study, ph_dir / "ct.nii.gz", ph_dir / "labels.nii.gz", subject="phantom")
    result = _run(grade_study, study)
    res_dir = output / "result"
    _run(write_result, result, res_dir, force=True)
    truth = {t.label: {"grade": t.grade} for t in ph.truth}
    _print_table(_out, result, truth)
    agree = sum(1 for v in result.vertebrae if v.grade == truth[v.label]["grade"])
    _out.print(f"grades agree with the truth for {agree} of {len(result.vertebrae)} vertebrae")
    _out.print(
        f"results in {res_dir}/ (result.json, vertebrae.csv, alignment.csv, bodies.nii.gz); "
        f"truth in {ph_dir}/truth.csv"
    )


@app.command()
def evaluate(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Result folders of `vertgrade grade`, or folders holding them (a cohort output)."
        ),
    ],
    grades: Annotated[
        Path,
        typer.Option(
            "--grades", "-g", help="CSV with columns subject, label, grade (or genant_grade)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Evaluation folder.")] = Path(
        "vertgrade-eval"
    ),
    n_boot: Annotated[
        int,
        typer.Option("--n-boot", min=0, help="Bootstrap resamples of patients (0: no intervals)."),
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing evaluation folder.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the tables.")] = False,
) -> None:
    """Compare graded results with reference Genant grades, with patient-bootstrap intervals.

    Confusion matrix, macro P/R/F1, detection of grade >= 1 and >= 2, by region, each with a
    95 % interval that resamples patients (a caution with fewer than 20 patients).
    """
    from vertgrade import evaluation as ev_mod
    from vertgrade.io.files import check_output_dir
    from vertgrade.io.grades import read_grades

    _run(check_output_dir, output, force=force)
    truth = _run(read_grades, grades)
    predictions = _run(ev_mod.collect_predictions, results)
    ev = _run(ev_mod.evaluate, predictions, truth, n_boot=n_boot, seed=seed)
    _run(ev_mod.write_evaluation, ev, output, force=force)
    if not _quiet(quiet):
        _out.print(ev_mod.evaluation_table(ev))
        _out.print(ev_mod.confusion_table(ev))
    elif ev.caution:
        _err.print(f"caution: {ev.caution}", markup=False, highlight=False, soft_wrap=True)
    _out.print(f"evaluation in {output}/ ({', '.join(ev_mod.EVALUATION_FILES)})")


@app.command()
def report(
    result_dir: Annotated[Path, typer.Argument(help="A result folder written by vertgrade grade.")],
    pdf: Annotated[
        bool, typer.Option("--pdf", help="Also write report.pdf (needs Chromium).")
    ] = False,
    anonymize: Annotated[
        bool,
        typer.Option("--anonymize", help="Leave patient and study identifiers out of the report."),
    ] = False,
) -> None:
    """(Re)write report.html (and report.pdf) of a result folder."""
    from vertgrade.report.html import write_report

    written = _run(write_report, result_dir, pdf=pdf, force=True, anonymize=anonymize)
    _out.print("written: " + ", ".join(str(p) for p in written))


@app.command()
def cohort(
    input: Annotated[
        Path,
        typer.Argument(
            help="Folder of studies (VerSe, TotalSegmentator, ct + labels folders) or a CSV "
            "with the columns subject, ct, labels (and optionally bodies)."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Cohort folder; an earlier run there is resumed."),
    ] = Path("vertgrade-cohort"),
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Address of a running Dask scheduler (tcp://host:8786); default: a local cluster.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="Worker processes of the local cluster (default: cores)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Grade every study again; write into a non-empty folder."),
    ] = False,
    label_format: Annotated[
        str, typer.Option("--label-format", help="auto, verse or totalseg-total.")
    ] = "auto",
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            help="Healthy reference: neighbours (training-free) or synthesis (needs --model).",
        ),
    ] = "neighbours",
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Synthesis model file (generator.safetensors)."),
    ] = None,
    grader: Annotated[
        Path | None,
        typer.Option("--grader", help="SVM grader file (train-grader), as for grade."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (synthesis).")] = "cpu",
    report: Annotated[
        bool, typer.Option("--report", help="Also write each study's report.html.")
    ] = False,
    params: Annotated[
        Path | None,
        typer.Option("--params", help="Grading parameters file (TOML or JSON), as for grade."),
    ] = None,
) -> None:
    """Grade every study of a cohort in parallel on Dask, resumably, into one table.

    One result folder per study, each graded as `grade` grades it with the same options; one
    table of all vertebrae (vertebrae.csv, vertebrae.parquet) and failures.csv. Body masks come
    from the CSV's bodies column or are found beside the labels (vertebrae_body).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from vertgrade.cohort import CohortProgress, discover_studies, run_cohort, skipped_folders

    options = _options(
        params,
        label_format=label_format,
        reference=reference,
        model=model,
        grader=grader,
        device=device,
        report=report,
    )
    specs = _run(discover_studies, input)
    for folder, why in skipped_folders(input, specs):
        _err.print(f"skipped: {folder}: {why}", markup=False, highlight=False, soft_wrap=True)
    try:  # Ctrl-C anywhere here (the progress display included) is one line and exit 130
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=_err,
            transient=True,
        ) as bar:
            task = bar.add_task("grading", total=len(specs))

            def on_progress(ev: CohortProgress) -> None:
                bar.update(task, completed=ev.done, description=f"{ev.subject} {ev.status}")

            summary = _run(
                run_cohort,
                specs,
                output,
                scheduler=scheduler,
                workers=workers,
                options=options,
                force=force,
                progress=on_progress,
            )
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    _out.print(
        f"{len(summary.graded)} graded, {len(summary.skipped)} already done, "
        f"{len(summary.failures)} failed; {summary.n_vertebrae} vertebrae in "
        f"{summary.table_csv} and {summary.table_parquet}"
    )
    if summary.failures:
        for f in summary.failures[:5]:
            _err.print(f"failed: {f.subject}: {f.error}", markup=False, highlight=False)
        _err.print(f"all failures in {summary.failures_csv}", markup=False, highlight=False)
        raise typer.Exit(1)


@app.command("seg-qa")
def seg_qa(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predicted vertebra labels: a label map (NIfTI, MGH, MHA, NRRD) or a VerSe "
            "centroid file (*_ctd.json); or a folder of cases, paired with TRUTH's by name."
        ),
    ],
    truth: Annotated[
        Path,
        typer.Option(
            "--truth", "-t", help="True labels: a label map, a centroid file or a folder, as PRED."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (seg_qa.json, seg_qa.csv).")
    ] = Path("vertgrade-seg-qa"),
    pred_grid: Annotated[
        Path | None,
        typer.Option(
            "--pred-grid", help="For a centroid file PRED: the vertebra mask it refers to."
        ),
    ] = None,
    truth_grid: Annotated[
        Path | None,
        typer.Option(
            "--truth-grid", help="For a centroid file TRUTH: the vertebra mask it refers to."
        ),
    ] = None,
    label_format: Annotated[
        str, typer.Option("--label-format", help="auto, verse or totalseg-total (both maps).")
    ] = "auto",
    n_boot: Annotated[
        int,
        typer.Option("--n-boot", min=0, help="Bootstrap resamples of patients (0: no intervals)."),
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into an existing non-empty output folder.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the tables.")] = False,
) -> None:
    """Score vertebra labels against the truth with the VerSe benchmark's metrics.

    Identification rate, localisation distance, Dice and Hausdorff distance per vertebra,
    missing, extra, merged and shifted labels; for folders, means with patient-bootstrap
    intervals (docs/seg-qa.md).
    """
    from vertgrade import segqa
    from vertgrade.io.files import check_output_dir

    if label_format not in ("auto", "verse", "totalseg-total"):
        _fail(
            f"--label-format must be auto, verse or totalseg-total, got {label_format!r}",
            EXIT_USAGE,
        )
    fmt: Any = label_format  # checked above: one of LabelFormat's values
    _run(check_output_dir, output, force=force)
    with _progress_bar("comparing", quiet=quiet) as update:
        report = _run(
            segqa.seg_qa_files,
            pred,
            truth,
            pred_grid=pred_grid,
            truth_grid=truth_grid,
            label_format=fmt,
            n_boot=n_boot,
            seed=seed,
            progress=lambda ev: update(ev.done, ev.total, ev.subject),
        )
    _run(segqa.write_seg_qa, report, output, force=force)
    if not _quiet(quiet):
        if len(report.cases) == 1:
            _out.print(segqa.vertebrae_table(report.cases[0]))
        else:
            _out.print(segqa.cases_table(report))
            _out.print(segqa.cohort_table(report))
        for case, note in ((c, n) for c in report.cases for n in c.notes if "shifted" in n):
            where = f"{case.subject}: " if len(report.cases) > 1 else ""
            _out.print(f"{where}{note}", markup=False, highlight=False)
    pairing = report.pairing
    if pairing is not None and (pairing.pred_only or pairing.truth_only):
        alone = ", ".join((*pairing.pred_only, *pairing.truth_only))
        _err.print(
            f"not compared (on one side only): {alone}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _out.print(f"seg-qa of {len(report.cases)} case(s) in {output}/ (seg_qa.json, seg_qa.csv)")


@app.command("synthesis-data")
def synthesis_data(
    studies: Annotated[
        list[str],
        typer.Argument(help="VerSe subject folders, or CT:LABELS pairs of NIfTI files."),
    ],
    grades: Annotated[Path, typer.Option("--grades", "-g", help="Genant grades CSV.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Samples folder.")] = Path(
        "samples"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the samples folder.")] = False,
) -> None:
    """Straighten studies into training samples for the synthesis model.

    A study that cannot be used (no CT, an unreadable file) is skipped with a line saying why,
    and listed under "skipped" in samples.json; none usable is an error.
    """
    from vertgrade.synthesis.data import build_samples

    specs: list[str | tuple[str, str]] = [
        (s.split(":", 1)[0], s.split(":", 1)[1]) if ":" in s else s for s in studies
    ]
    skipped: list[tuple[str, str]] = []
    with _progress_bar("straightening") as update:
        _run(
            build_samples,
            specs,
            grades,
            output,
            force=force,
            progress=lambda subject, done, total: update(done, total, f"{subject}"),
            on_skip=lambda where, why: skipped.append((where, why)),
        )
    for where, why in skipped:
        _err.print(f"skipped: {where}: {why}", markup=False, highlight=False, soft_wrap=True)
    used = len(specs) - len(skipped)
    _out.print(f"samples of {used} of {len(specs)} studies in {output}/", highlight=False)


@app.command("train-synthesis")
def train_synthesis_cmd(
    samples: Annotated[Path, typer.Argument(help="Samples folder (synthesis-data).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder.")] = Path("model"),
    config: Annotated[str, typer.Option("--config", help="tiny or paper.")] = "tiny",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs.")] = None,
    fold: Annotated[
        int | None, typer.Option("--fold", help="Cross-fitting fold left out (0-based).")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-fitting folds.")] = 5,
    shrm_pool: Annotated[
        str | None,
        typer.Option(
            "--shrm-pool",
            help="SHRM height-head pooling, global (the paper's) or rows; default: the "
            "configuration's (paper: global, tiny: rows).",
        ),
    ] = None,
    healthy_max_grade: Annotated[
        int | None,
        typer.Option(
            "--healthy-max-grade",
            min=0,
            max=1,
            help="Highest Genant grade trained on as healthy: 0 (default: mild fractures left "
            "out) or 1 (as the published code).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Start again, not resume.")] = False,
) -> None:
    """Train (or resume) the synthesis generator; checkpoints in the model folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from vertgrade.synthesis.data import held_out_subjects
    from vertgrade.synthesis.train import TrainProgress, train_synthesis

    exclude = _run(held_out_subjects, samples, fold, folds) if fold is not None else []
    cfg: Any = config
    if shrm_pool is not None or healthy_max_grade is not None:
        from dataclasses import replace

        from vertgrade.synthesis.config import named_config

        cfg = _run(named_config, config)
        if shrm_pool is not None:
            if shrm_pool not in ("global", "rows"):
                _fail(f"--shrm-pool must be global or rows, not {shrm_pool!r}", EXIT_USAGE)
            cfg = replace(cfg, shrm_pool=shrm_pool)
        if healthy_max_grade is not None:
            cfg = replace(cfg, healthy_max_grade=healthy_max_grade)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_err,
        transient=True,
    ) as bar:
        task = bar.add_task("training", total=None)

        def on_progress(ev: TrainProgress) -> None:
            bar.update(
                task,
                completed=ev.epoch - 1 + ev.step / max(ev.steps, 1),
                total=ev.total_epochs,
                description=f"epoch {ev.epoch}/{ev.total_epochs}, G {ev.generator_loss:.3g}, "
                f"D {ev.discriminator_loss:.3g}",
            )

        summary = _run(
            train_synthesis,
            samples,
            output,
            config=cfg,
            device=device,
            epochs=epochs,
            exclude_subjects=exclude,
            force=force,
            progress=on_progress,
        )
    resumed = (
        f", resumed from epoch {summary.resumed_from_epoch}" if summary.resumed_from_epoch else ""
    )
    _out.print(
        f"model in {summary.model_path}: {summary.epochs_done}/{summary.total_epochs} epochs"
        f"{resumed}, {summary.parameters:,} generator parameters, {summary.n_slices} slices "
        f"per epoch from {len(summary.trained_subjects)} subjects, "
        f"{summary.slices_per_s:.1f} slices/s",
        markup=False,
        highlight=False,
    )


@app.command("train-grader")
def train_grader_cmd(
    results: Annotated[
        list[Path], typer.Argument(help="Result folders graded with --reference synthesis.")
    ],
    grades: Annotated[Path, typer.Option("--grades", "-g", help="Genant grades CSV.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Grader file (JSON).")] = Path(
        "grader.json"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the grader file.")] = False,
) -> None:
    """Train the SVM grader on the synthesis RHLV features (never on the generator's subjects)."""
    from vertgrade.synthesis.grader import train_grader

    g = _run(train_grader, results, grades, output, force=force)
    s = g.summary
    counts = ", ".join(f"grade {k}: {n}" for k, n in sorted(s["class_counts"].items()))
    f1 = s.get("cv_macro_f1")
    cv = f"{f1:.3f}" if f1 is not None else "not estimated"
    _out.print(
        f"grader in {output}: {s['n_vertebrae']} vertebrae of {s['n_subjects']} subjects "
        f"({counts}); grouped {s['cv_folds']}-fold cross-validation macro-F1 {cv}",
        markup=False,
        highlight=False,
    )


@app.command()
def compare(
    prior: Annotated[
        Path,
        typer.Argument(
            help="The prior study: a result folder of `vertgrade grade`, or a study to grade "
            "(CT, DICOM series, VerSe folder; with --labels-only, a label map)."
        ),
    ],
    current: Annotated[Path, typer.Argument(help="The current (follow-up) study, the same way.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Comparison folder.")] = Path(
        "vertgrade-compare"
    ),
    prior_labels: Annotated[
        Path | None, typer.Option("--prior-labels", help="Vertebra labels of a prior CT.")
    ] = None,
    current_labels: Annotated[
        Path | None, typer.Option("--current-labels", help="Vertebra labels of a current CT.")
    ] = None,
    labels_only: Annotated[
        bool,
        typer.Option(
            "--labels-only",
            help="PRIOR and CURRENT are label maps without CT (heights from the masks).",
        ),
    ] = False,
    prior_date: Annotated[
        str | None,
        typer.Option("--prior-date", help="Study date of PRIOR (YYYY-MM-DD) if not recorded."),
    ] = None,
    current_date: Annotated[
        str | None,
        typer.Option("--current-date", help="Study date of CURRENT (YYYY-MM-DD) if not recorded."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing comparison folder.")
    ] = False,
    force_mismatch: Annotated[
        bool,
        typer.Option(
            "--force-mismatch",
            help="Compare two scans that do not look like one patient (Patient ID or the "
            "spine's shape differ).",
        ),
    ] = False,
    html: Annotated[
        bool,
        typer.Option("--html/--no-html", help="Write comparison.html (heights over time)."),
    ] = True,
    label_format: Annotated[
        str, typer.Option("--label-format", help="auto, verse or totalseg-total.")
    ] = "auto",
    params: Annotated[
        Path | None,
        typer.Option("--params", help="Grading parameters file for the studies graded here."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the table.")] = False,
) -> None:
    """New and worsening vertebral fractures between two CTs of one patient.

    A vertebra whose Genant grade rises by at least one (Genant 1993), or whose height falls by
    at least 20 % and 4 mm (FIT, Black 1996), beyond the measurement's uncertainty, is incident
    (normal before) or worsening (fractured before). Writes comparison.json, comparison.csv and
    comparison.html; studies given as studies are graded into OUTPUT/prior and OUTPUT/current.
    """
    from vertgrade.compare import compare_studies, parse_study_date
    from vertgrade.workflow import StudyInputs

    dates = []
    for option, text in (("--prior-date", prior_date), ("--current-date", current_date)):
        try:
            dates.append(parse_study_date(text))
        except ValueError as err:
            _fail(f"{option}: {err}", EXIT_USAGE)
    options = _options(params, label_format=label_format)

    def study(path: Path, labels: Path | None, option: str) -> Path | StudyInputs:
        if labels_only:
            if labels is not None:
                _fail(f"{option} does not go with --labels-only", EXIT_USAGE)
            return StudyInputs(labels=path)
        return path if labels is None else StudyInputs(ct=path, labels=labels)

    with _progress_bar("grading", quiet=quiet) as update:
        outcome = _run(
            compare_studies,
            study(prior, prior_labels, "--prior-labels"),
            study(current, current_labels, "--current-labels"),
            output,
            options=options,
            prior_date=dates[0],
            current_date=dates[1],
            force=force,
            force_mismatch=force_mismatch,
            html=html,
            progress=lambda ev: update(ev.done, ev.total, _STAGE_TEXT.get(ev.stage, ev.stage)),
        )
    c = outcome.comparison
    summary = c.summary
    if not _quiet(quiet):
        table = Table(show_edge=False, pad_edge=False)
        for name in ("level", "status", "grade then/now", "largest change", "conf", "note"):
            table.add_column(name)
        for v in c.vertebrae:
            grades = "/".join(
                "-" if s is None or s.grade is None else str(s.grade) for s in (v.prior, v.current)
            )
            loss = (
                ""
                if v.largest_loss_mm is None
                else f"{v.largest_loss_region} {-v.largest_loss_mm:+.1f} mm"
                + ("" if v.largest_loss_percent is None else f" ({-v.largest_loss_percent:+.0f} %)")
            )
            conf = "" if v.confidence is None else f"{round(v.confidence, 2):.2f}"
            note = v.reason or (v.notes[0] if v.notes else "")
            table.add_row(v.level, v.status.replace("_", " "), grades, loss, conf, note)
        _out.print(table)
    years = c.interval_years
    interval = (
        f"{c.interval_days} days ({years:.2f} years)"
        if c.interval_days is not None and years is not None
        else "unknown (no study dates)"
    )
    lines = [
        f"incident: {', '.join(summary['incident_levels']) or 'none'}; "
        f"worsening: {', '.join(summary['worsening_levels']) or 'none'}",
        f"interval: {interval}",
        f"one patient: {c.identity.status}" + (" (forced)" if c.identity.forced else ""),
    ]
    if summary["only_in_prior"]:
        lines.append(f"only in the prior scan: {', '.join(summary['only_in_prior'])}")
    if summary["only_in_current"]:
        lines.append(f"only in the current scan: {', '.join(summary['only_in_current'])}")
    written = [p.name for p in outcome.files if p.name.startswith("comparison.")]
    lines.append(f"comparison in {output}/ ({', '.join(written)})")
    if not _quiet():  # the global --quiet: nothing on stdout
        for line in lines:
            _out.print(line, markup=False, highlight=False)


@app.command("compare-cohort")
def compare_cohort(
    pairs: Annotated[
        Path,
        typer.Argument(
            help="CSV with the columns subject, prior, current (result folders or studies) and "
            "optionally prior_labels, current_labels, prior_date, current_date."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder of the comparisons.")
    ] = Path("vertgrade-compare-cohort"),
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Address of a running Dask scheduler; default: local."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes of the local cluster."),
    ] = None,
    label_format: Annotated[
        str, typer.Option("--label-format", help="auto, verse or totalseg-total.")
    ] = "auto",
    params: Annotated[
        Path | None,
        typer.Option("--params", help="Grading parameters file, as for grade."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Compare every pair again.")] = False,
) -> None:
    """Compare many patients' pairs of studies on Dask (the cohort form of compare).

    One comparison folder per pair in OUTPUT/pairs/, all rows in OUTPUT/comparisons.csv, the
    pairs that could not be compared in OUTPUT/failures.csv.
    """
    from vertgrade.cohort.pairs import read_pairs, run_pairs

    options = _options(params, label_format=label_format)
    specs = _run(read_pairs, pairs)
    with _progress_bar("comparing") as update:
        summary = _run(
            run_pairs,
            specs,
            output,
            scheduler=scheduler,
            workers=workers,
            options=options,
            force=force,
            progress=lambda ev, done, total: update(done, total, f"{ev.subject} {ev.status}"),
        )
    _out.print(
        f"{len(summary.compared)} compared, {len(summary.skipped)} already done, "
        f"{len(summary.failures)} failed; {summary.n_rows} vertebrae in {summary.table_csv}",
        markup=False,
        highlight=False,
    )
    if summary.failures:
        for subject, error in summary.failures[:5]:
            _err.print(f"failed: {subject}: {error}", markup=False, highlight=False)
        _err.print(f"all failures in {summary.failures_csv}", markup=False, highlight=False)
        raise typer.Exit(1)


def run() -> None:  # pragma: no cover - console entry for `python -m vertgrade`
    app(prog_name="vertgrade")


if __name__ == "__main__":  # pragma: no cover
    run()
