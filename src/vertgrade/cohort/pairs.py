"""Follow-up comparisons of many patients: ``vertgrade compare-cohort PAIRS.csv -o out/``.

The cohort form of :func:`vertgrade.compare.compare_studies`. A CSV lists one pair of studies of
one patient per row; every pair is compared on Dask (the local cluster or a scheduler, as
``vertgrade cohort`` grades) into ``out/pairs/<subject>/`` (its ``comparison.json``,
``comparison.csv``, ``comparison.html`` and the studies graded there), and the rows of all pairs
go into one table, ``out/comparisons.csv`` (``subject`` first, then
:data:`vertgrade.compare.CSV_COLUMNS`), with ``out/failures.csv`` for the pairs that could not be
compared and why (a study that cannot be read, two scans that do not look like one patient).

The CSV: a header row with the columns ``subject``, ``prior`` and ``current`` (a result folder
or a study: a CT, a DICOM series, a VerSe folder), and optionally ``prior_labels``,
``current_labels`` (vertebra labels of a CT given as a file), ``prior_date`` and
``current_date`` (ISO dates, for the change per year where the studies carry no date). Relative
paths are relative to the CSV's folder.

A rerun skips the pairs whose folder already holds a ``comparison.json``; ``force`` compares
every pair again. (Unlike ``vertgrade cohort``, a changed input is not noticed by itself: rerun
with ``force`` after changing a study.)
"""

from __future__ import annotations

import csv
import datetime
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vertgrade.cohort._extras import require_extra
from vertgrade.cohort.discover import check_subject
from vertgrade.cohort.run import _dask_client, _one_line
from vertgrade.compare import CSV_COLUMNS, compare_studies
from vertgrade.errors import InputError
from vertgrade.io.files import check_output_dir, write_text_atomic
from vertgrade.workflow import GradeOptions, StudyInputs

__all__ = [
    "PAIR_FAILURE_COLUMNS",
    "PairOutcome",
    "PairSpec",
    "PairsSummary",
    "read_pairs",
    "run_pairs",
]

#: Columns of ``failures.csv``.
PAIR_FAILURE_COLUMNS = ("subject", "prior", "current", "error")


@dataclass(frozen=True)
class PairSpec:
    """One row of the pairs CSV, paths absolute."""

    subject: str
    prior: Path
    current: Path
    prior_labels: Path | None = None
    current_labels: Path | None = None
    prior_date: datetime.date | None = None
    current_date: datetime.date | None = None

    def study(self, which: Literal["prior", "current"]) -> Path | StudyInputs:
        """The argument :func:`compare_studies` takes for one side."""
        path = self.prior if which == "prior" else self.current
        labels = self.prior_labels if which == "prior" else self.current_labels
        return path if labels is None else StudyInputs(ct=path, labels=labels)


@dataclass(frozen=True)
class PairOutcome:
    subject: str
    status: Literal["compared", "skipped", "failed"]
    error: str | None = None


@dataclass(frozen=True)
class PairsSummary:
    """What :func:`run_pairs` did."""

    out_dir: Path
    compared: tuple[str, ...]
    skipped: tuple[str, ...]
    failures: tuple[tuple[str, str], ...]
    n_rows: int
    table_csv: Path
    failures_csv: Path


def read_pairs(path: str | os.PathLike[str]) -> list[PairSpec]:
    """The pairs of a CSV (see the module docstring), checked: every file exists, every subject
    can name a folder and appears once, every date is an ISO date.

    Raises
    ------
    InputError
        Naming the CSV, the line and the problem.
    """
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(src, f"cannot be read as a UTF-8 CSV file ({err})") from err
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(src, "is empty; expected a header row 'subject,prior,current'")
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("subject", "prior", "current") if c not in header]
    if missing:
        raise InputError(
            src,
            f"has no {', '.join(missing)} column (header: {rows[0]}); expected "
            "subject, prior, current (and optionally prior_labels, current_labels, prior_date, "
            "current_date)",
        )
    base = src.parent.resolve()
    specs: list[PairSpec] = []
    seen: set[str] = set()
    for number, row in enumerate(rows[1:], start=2):
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        where = f"line {number}"
        subject = cells["subject"]
        check_subject(subject, src, where)
        if subject in seen:
            raise InputError(src, f"{where}: subject {subject!r} is listed twice")
        seen.add(subject)

        prior = _csv_file(cells, "prior", src, base, where, required=True)
        current = _csv_file(cells, "current", src, base, where, required=True)
        assert prior is not None and current is not None
        specs.append(
            PairSpec(
                subject,
                prior,
                current,
                _csv_file(cells, "prior_labels", src, base, where),
                _csv_file(cells, "current_labels", src, base, where),
                _csv_date(cells, "prior_date", src, where),
                _csv_date(cells, "current_date", src, where),
            )
        )
    if not specs:
        raise InputError(src, "lists no pairs (a header row only)")
    return specs


def _csv_file(
    cells: dict[str, str], role: str, src: Path, base: Path, where: str, *, required: bool = False
) -> Path | None:
    """The absolute path in a row's ``role`` cell (relative to ``base``), checked to exist."""
    value = cells.get(role, "")
    if not value:
        if required:
            raise InputError(src, f"{where}: no {role} given")
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise InputError(src, f"{where}: {role} {p} does not exist")
    return p.resolve()


def _csv_date(cells: dict[str, str], role: str, src: Path, where: str) -> datetime.date | None:
    value = cells.get(role, "")
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise InputError(
            src, f"{where}: {role} {value!r} is not an ISO date (2023-03-01)"
        ) from None


def _process_pair(
    spec: PairSpec, pairs_dir: Path, options: GradeOptions, force: bool
) -> PairOutcome:
    """One pair, into ``pairs_dir/<subject>/``; every failure becomes an outcome, not an error."""
    out = pairs_dir / spec.subject
    if not force and (out / "comparison.json").is_file():
        return PairOutcome(spec.subject, "skipped")
    try:
        compare_studies(
            spec.study("prior"),
            spec.study("current"),
            out,
            options=options,
            prior_date=spec.prior_date,
            current_date=spec.current_date,
            force=True,
        )
    except Exception as err:  # recorded in failures.csv; the other pairs go on
        return PairOutcome(spec.subject, "failed", _one_line(err))
    return PairOutcome(spec.subject, "compared")


def run_pairs(
    specs: Sequence[PairSpec],
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    options: GradeOptions | None = None,
    force: bool = False,
    progress: Callable[[PairOutcome, int, int], None] | None = None,
) -> PairsSummary:
    """Compare every pair (see the module docstring).

    Parameters
    ----------
    specs : sequence of PairSpec
        From :func:`read_pairs`.
    out_dir : path
        The cohort's comparison folder.
    scheduler : str, optional
        A Dask scheduler's address; ``"synchronous"`` compares in this process, one pair after
        the other; default: a local cluster of ``workers`` processes.
    options : GradeOptions, optional
        How studies given as studies are graded.
    force : bool
        Compare every pair again, and write into a folder that holds something else.
    progress : callable, optional
        ``progress(outcome, done, total)`` after each pair.

    Raises
    ------
    InputError
        No pairs; the output folder in the way; options that do not go together.
    MissingExtraError
        Dask is not installed (a local cluster or a scheduler).
    """
    if not specs:
        raise InputError(None, "no pairs to compare")
    local = scheduler == "synchronous"
    if not local:
        require_extra("distributed", "Comparing pairs in parallel")
    opts = options or GradeOptions()
    try:
        opts.check()
    except ValueError as err:
        raise InputError(None, str(err)) from err
    out = Path(out_dir).absolute()
    if out.exists() and not (out / "pairs").is_dir():
        check_output_dir(out, force=force)  # a folder of something else
    pairs_dir = out / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, PairOutcome] = {}

    def record(outcome: PairOutcome) -> None:
        outcomes[outcome.subject] = outcome
        if progress is not None:
            progress(outcome, len(outcomes), len(specs))

    if local:
        for spec in specs:
            record(_process_pair(spec, pairs_dir, opts, force))
    else:
        from distributed import as_completed

        with _dask_client(scheduler, workers, len(specs)) as client:
            futures = [
                client.submit(_process_pair, spec, pairs_dir, opts, force, pure=False)
                for spec in specs
            ]
            by_key = {f.key: spec.subject for f, spec in zip(futures, specs, strict=True)}
            for fut in as_completed(futures):
                try:
                    record(fut.result())
                except Exception as err:  # a worker died
                    record(PairOutcome(by_key[fut.key], "failed", _one_line(err)))
    failures = tuple(
        (s.subject, outcomes[s.subject].error or "failed")
        for s in specs
        if outcomes[s.subject].status == "failed"
    )
    n_rows = _write_table(
        out, pairs_dir, [s.subject for s in specs if s.subject not in dict(failures)]
    )
    _write_failures(out, specs, dict(failures))
    return PairsSummary(
        out_dir=out,
        compared=tuple(s.subject for s in specs if outcomes[s.subject].status == "compared"),
        skipped=tuple(s.subject for s in specs if outcomes[s.subject].status == "skipped"),
        failures=failures,
        n_rows=n_rows,
        table_csv=out / "comparisons.csv",
        failures_csv=out / "failures.csv",
    )


def _write_table(out: Path, pairs_dir: Path, subjects: Sequence[str]) -> int:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["subject", *CSV_COLUMNS])
    n = 0
    for subject in subjects:
        with open(pairs_dir / subject / "comparison.csv", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                writer.writerow([subject, *(row.get(c, "") for c in CSV_COLUMNS)])
                n += 1
    write_text_atomic(out / "comparisons.csv", buf.getvalue())
    return n


def _write_failures(out: Path, specs: Sequence[PairSpec], failures: dict[str, str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PAIR_FAILURE_COLUMNS)
    for s in specs:
        if s.subject in failures:
            writer.writerow([s.subject, s.prior, s.current, failures[s.subject]])
    write_text_atomic(out / "failures.csv", buf.getvalue())
