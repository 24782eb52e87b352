"""The cohort table: one row per vertebra of every finished study, in CSV and Parquet.

``OUT/vertebrae.csv`` and ``OUT/vertebrae.parquet`` hold a ``subject`` column first, then the
columns of each study's ``vertebrae.csv`` (:data:`vertgrade.result.CSV_COLUMNS`).
:func:`build_table` gathers them from the finished study folders, :func:`write_table` writes both
files atomically and :func:`read_cohort_table` reads the table back with its column types.
pandas and pyarrow (the ``cohort`` extra) are imported only inside these functions.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertgrade.cohort._extras import require_extra
from vertgrade.errors import InputError
from vertgrade.io.files import atomic_path
from vertgrade.result import CSV_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_table", "read_cohort_table", "write_table"]

# Columns of the per-study vertebrae.csv by type (every other column is numeric).
_TEXT_COLUMNS = frozenset(
    ["level", "status", "type", "heights_source", "flags", "reason", "reference_sources"]
)
# Text columns that ``SpineResult.to_records`` fills with "" rather than None.
_EMPTY_TEXT_COLUMNS = frozenset(["flags", "reference_sources"])


def build_table(studies_dir: Path, subjects: Sequence[str]) -> pd.DataFrame:
    """All vertebrae of the given finished studies, read from their ``vertebrae.csv``.

    Parameters
    ----------
    studies_dir : Path
        The ``OUT/studies`` folder of a cohort run.
    subjects : sequence of str
        The finished studies to gather, in the order of their rows.

    Returns
    -------
    pandas.DataFrame
        One row per vertebra; columns ``subject`` and then :data:`vertgrade.result.CSV_COLUMNS`.
        Column types: ``subject`` and the text columns as strings (missing: NA), ``label``
        int64, ``grade`` nullable Int64 (NA when not gradable), every other column float64
        (missing: NaN).
    """
    import pandas as pd

    columns: dict[str, list[Any]] = {"subject": []}
    for c in CSV_COLUMNS:
        columns[c] = []
    for subject in subjects:
        path = studies_dir / subject / "vertebrae.csv"
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                columns["subject"].append(subject)
                for c in CSV_COLUMNS:
                    value = row.get(c)
                    columns[c].append(None if value in (None, "") else value)
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "subject" or name in _TEXT_COLUMNS:
            if name in _EMPTY_TEXT_COLUMNS:
                values = ["" if v is None else v for v in values]
            data[name] = pd.array(values, dtype="string")
        elif name == "label":
            data[name] = pd.array([int(v) for v in values], dtype="int64")
        elif name == "grade":
            data[name] = pd.array([None if v is None else int(v) for v in values], dtype="Int64")
        else:
            try:
                data[name] = pd.array(
                    [math.nan if v is None else float(v) for v in values], dtype="float64"
                )
            except ValueError:  # a column this module does not know yet that holds text
                data[name] = pd.array(values, dtype="string")
    return pd.DataFrame(data)


#: Beside the table: what it was built from, so that a rerun with nothing to do leaves it alone.
TABLE_STAMP = ".vertebrae-table.json"


def table_stamp(studies_dir: Path, subjects: Sequence[str]) -> str:
    """What the table of ``subjects`` depends on, as text: each study's ``vertebrae.csv``
    size and modification time (ns), in order. Equal stamps: the same table."""
    import json

    parts = []
    for subject in subjects:
        st = (studies_dir / subject / "vertebrae.csv").stat()
        parts.append([subject, st.st_size, st.st_mtime_ns])
    return json.dumps({"format": 1, "studies": parts}, separators=(",", ":"))


def table_is_current(out: Path, stamp: str) -> bool:
    """Whether ``out`` holds both table files, written from what ``stamp`` describes."""
    try:
        recorded = (out / TABLE_STAMP).read_text(encoding="utf-8")
    except OSError:
        return False
    return recorded == stamp and all(
        (out / name).is_file() for name in ("vertebrae.parquet", "vertebrae.csv")
    )


def write_stamp(out: Path, stamp: str) -> None:
    """Record the stamp of the table just written (after both files)."""
    with atomic_path(out / TABLE_STAMP) as tmp:
        tmp.write_text(stamp, encoding="utf-8")


def count_rows(out: Path) -> int:
    """The vertebrae in ``out/vertebrae.csv`` (rows after the header), without pandas."""
    with open(out / "vertebrae.csv", encoding="utf-8", newline="") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """Write ``out/vertebrae.parquet`` and ``out/vertebrae.csv``, each atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        The cohort table (:func:`build_table`).
    out : Path
        The output folder of the cohort run.
    """
    with atomic_path(out / "vertebrae.parquet") as tmp:
        table.to_parquet(tmp, index=False, engine="pyarrow")
    with atomic_path(out / "vertebrae.csv") as tmp:
        table.to_csv(tmp, index=False, na_rep="", lineterminator="\n")


def read_cohort_table(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The cohort table of an output folder, from ``vertebrae.parquet`` (types kept).

    Parameters
    ----------
    out_dir : path-like
        The output folder of a cohort run.

    Returns
    -------
    pandas.DataFrame
        The table as :func:`build_table` built it.

    Raises
    ------
    MissingExtraError
        pandas is not installed.
    InputError
        The folder holds no ``vertebrae.parquet`` or it cannot be read.
    """
    require_extra("pandas", "Reading the cohort table")
    import pandas as pd

    path = Path(out_dir) / "vertebrae.parquet"
    if not path.is_file():
        raise InputError(path, "no such file (not the output folder of a cohort run?)")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as err:
        raise InputError(path, f"cannot be read as Parquet ({err})") from err
