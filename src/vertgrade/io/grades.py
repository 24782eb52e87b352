"""The grades file: one reference Genant grade per subject and vertebra, read and validated.

This is vertgrade's one reader of grades files. The evaluation (:mod:`vertgrade.evaluation`)
takes its rows as they are (:class:`GradeRow`, which remembers the file and line it came from);
the synthesis training and the SVM grader take the ``{subject: {label: grade}}`` view of
:func:`grades_by_subject`. ``docs/evaluation.md`` describes the format.

Examples
--------
>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "g.csv").write_text("subject,level,grade\\np1,L1,3\\np1,L2,0\\np2,T12,1\\n")
>>> rows = read_grades(d / "g.csv")
>>> [(r.subject, r.level, r.grade, r.line) for r in rows]
[('p1', 'L1', 3, 2), ('p1', 'L2', 0, 3), ('p2', 'T12', 1, 4)]
>>> grades_by_subject(rows)
{'p1': {20: 3, 21: 0}, 'p2': {19: 1}}
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vertgrade.errors import InputError
from vertgrade.levels import VERSE_LABELS, label_id, level_name

__all__ = ["GRADES", "GradeRow", "grades_by_subject", "read_grades"]

logger = logging.getLogger(__name__)

#: The Genant semi-quantitative grades (Genant et al., J Bone Miner Res 1993): 0 normal,
#: 1 mild (20-25 % height loss), 2 moderate (25-40 %), 3 severe (> 40 %).
GRADES: tuple[int, ...] = (0, 1, 2, 3)

#: Columns accepted for the true grade, in the grades file (lower case).
_GRADE_COLUMNS = ("grade", "genant_grade")


@dataclass(frozen=True)
class GradeRow:
    """One true Genant grade: a row of the grades file.

    Parameters
    ----------
    subject : str
        Subject id, as in ``result.json`` ``"subject"`` (e.g. ``"sub-verse012"``).
    label : int
        VerSe label id of the vertebra (20 = L1).
    grade : int
        True Genant grade, 0-3.
    source : Path or None
        The grades file the row came from.
    line : int or None
        Its line number in that file (the header is line 1).
    """

    subject: str
    label: int
    grade: int
    source: Path | None = None
    line: int | None = None

    @property
    def level(self) -> str:
        """Level name of :attr:`label` (``"L1"``)."""
        return level_name(self.label)


def _parse_int(text: str) -> int | None:
    """An integer written as ``"2"`` or ``"2.0"``; ``None`` for anything else."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def read_grades(path: str | Path) -> list[GradeRow]:
    """Read a grades file: CSV with columns ``subject``, ``label`` and ``grade``.

    The grade column may be called ``genant_grade`` instead of ``grade``. Column names are
    case-insensitive and surrounding spaces are ignored; other columns are ignored. ``label`` is
    the VerSe label id (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13). A ``level``
    column (``"L1"``) may stand in for ``label``, as a whole column or in a row whose label is
    empty; where a row has both, they must name the same vertebra.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8, a byte-order mark is accepted).

    Returns
    -------
    list of GradeRow
        In file order.

    Raises
    ------
    InputError
        The file is missing or empty, lacks a column, a value is not valid (a grade outside 0-3,
        an unknown label, an empty subject), or a vertebra is graded twice. The message names the
        file, the line and the value.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "g.csv").write_text("subject,label,level,genant_grade\\np1,20,L1,3\\n")
    >>> read_grades(d / "g.csv")[0].grade
    3
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "grades file not found" if not path.exists() else "not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read as UTF-8 text: {err}") from err
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(path, "is empty; expected a header subject,label,grade") from None
    except csv.Error as err:
        raise InputError(path, f"is not valid CSV: {err}") from err
    names = [h.strip().lower() for h in header]
    dup = sorted({n for n in names if n and names.count(n) > 1})
    if dup:
        raise InputError(path, f"column {dup[0]!r} appears more than once in the header")
    col = {n: i for i, n in enumerate(names)}
    grade_cols = [c for c in _GRADE_COLUMNS if c in col]
    if len(grade_cols) > 1:
        raise InputError(path, "has both a 'grade' and a 'genant_grade' column; keep one of them")
    missing = [
        need
        for need, ok in (
            ("subject", "subject" in col),
            ("label (or level)", "label" in col or "level" in col),
            ("grade (or genant_grade)", bool(grade_cols)),
        )
        if not ok
    ]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'} "
            "(expected a header such as subject,label,grade)",
        )
    grade_col = grade_cols[0]
    rows: list[GradeRow] = []
    seen: dict[tuple[str, int], int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if len(record) != len(names):
                raise InputError(
                    path, f"line {line}: {len(record)} fields, the header has {len(names)}"
                )

            def cell(name: str, rec: list[str] = record) -> str:
                return rec[col[name]].strip() if name in col else ""

            subject = cell("subject")
            if not subject:
                raise InputError(path, f"line {line}: empty subject")
            label = _row_label(path, line, cell("label"), cell("level"))
            grade_text = cell(grade_col)
            grade = _parse_int(grade_text)
            if grade not in GRADES:
                raise InputError(
                    path,
                    f"line {line}: {grade_col} {grade_text!r} is not a Genant grade 0, 1, 2 or 3"
                    + ("" if grade_text else " (remove the rows of vertebrae not graded)"),
                )
            key = (subject, label)
            if key in seen:
                raise InputError(
                    path,
                    f"line {line}: {subject} {level_name(label)} (label {label}) is graded "
                    f"again; first on line {seen[key]}",
                )
            seen[key] = line
            rows.append(GradeRow(subject, label, int(grade), path, line))
    except csv.Error as err:
        raise InputError(path, f"is not valid CSV near line {reader.line_num}: {err}") from err
    if not rows:
        raise InputError(path, "has a header but no grades")
    logger.debug("read %d grades from %s", len(rows), path)
    return rows


def _row_label(path: Path, line: int, label_text: str, level_text: str) -> int:
    """The VerSe label of a grades row, from its label and/or level cells."""
    label: int | None = None
    if label_text:
        label = _parse_int(label_text)
        if label is None or label not in VERSE_LABELS:
            raise InputError(
                path,
                f"line {line}: label {label_text!r} is not a VerSe label id (1-7 C1-C7, 8-19 "
                "T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13)",
            )
    if level_text:
        try:
            from_level = label_id(level_text)
        except ValueError:
            raise InputError(
                path, f"line {line}: level {level_text!r} is not a vertebra level such as L1"
            ) from None
        if label is None:
            return from_level
        if from_level != label:
            raise InputError(
                path,
                f"line {line}: label {label} is {level_name(label)} but level says "
                f"{level_text!r}; correct one of them",
            )
    if label is None:
        raise InputError(path, f"line {line}: no label (and no level)")
    return label


def grades_by_subject(rows: Iterable[GradeRow]) -> dict[str, dict[int, int]]:
    """The grades as ``{subject: {label: grade}}``: the view that training and the grader take.

    Parameters
    ----------
    rows : iterable of GradeRow
        From :func:`read_grades` (which refuses a vertebra graded twice).

    Returns
    -------
    dict of str to dict of int to int
        Subjects in order of their first row; each subject's labels in file order.

    Examples
    --------
    >>> grades_by_subject([GradeRow("p1", 20, 3), GradeRow("p2", 19, 0), GradeRow("p1", 21, 1)])
    {'p1': {20: 3, 21: 1}, 'p2': {19: 0}}
    """
    out: dict[str, dict[int, int]] = {}
    for row in rows:
        out.setdefault(row.subject, {})[row.label] = row.grade
    return out
