"""Writing a comparison: ``comparison.json``, ``comparison.csv`` and ``comparison.html``.

The files are one transaction (:func:`vertgrade.io.files.output_transaction`): written into a
staging folder and moved into place together, so a reader never sees half of them.
``comparison.json`` is validated against its schema (``vertgrade/compare/comparison.schema.json``,
loaded through :mod:`importlib.resources`) before anything is written.

Examples
--------
>>> schema = load_schema()
>>> schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
True
"""

from __future__ import annotations

import csv
import io
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

from vertgrade.compare.comparison import CSV_COLUMNS, SCHEMA_VERSION, Comparison
from vertgrade.io.files import output_transaction

__all__ = [
    "COMPARISON_FILES",
    "SCHEMA_VERSION",
    "load_schema",
    "validate_comparison",
    "write_comparison",
]

#: Every file a comparison writes into its folder (``--force`` replaces them as a whole).
COMPARISON_FILES = ("comparison.json", "comparison.csv", "comparison.html")

_SCHEMA_FILE = "comparison.schema.json"


def load_schema() -> dict[str, Any]:
    """The JSON schema of ``comparison.json`` (a fresh dict on each call)."""
    path = resources.files("vertgrade.compare").joinpath(_SCHEMA_FILE)
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return schema


@cache
def _validator() -> Validator:
    """Built once per process; the schema is checked against its meta-schema by the tests."""
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator: Validator = cls(schema)
    return validator


def validate_comparison(document: dict[str, Any]) -> None:
    """Check a ``comparison.json`` document against the schema.

    Raises
    ------
    jsonschema.ValidationError
        The most relevant error (:func:`jsonschema.exceptions.best_match`).
    """
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        raise error


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def comparison_csv(comparison: Comparison) -> str:
    """The text of ``comparison.csv``: a header of :data:`CSV_COLUMNS`, one row per vertebra,
    empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in comparison.to_records():
        writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def write_comparison(
    comparison: Comparison,
    out_dir: str | Path,
    *,
    html: bool = True,
    force: bool = False,
) -> list[Path]:
    """Write ``comparison.json``, ``comparison.csv`` (and ``comparison.html``) into ``out_dir``.

    Parameters
    ----------
    comparison : Comparison
        From :func:`vertgrade.compare.compare_scans`.
    out_dir : path
        The folder (created if missing).
    html : bool
        Also write the page with each vertebra's heights over time.
    force : bool
        Write into a folder that holds something; an earlier comparison's files are replaced
        (and its ``comparison.html`` removed where this one writes none). Other files stay.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    OutputError
        The folder is not empty (without ``force``), is a file, or is being written by another
        run.
    jsonschema.ValidationError
        The document does not follow the schema (nothing is written then).
    """
    document = comparison.to_dict()
    validate_comparison(document)
    names = ["comparison.json", "comparison.csv"]
    page = None
    if html:
        from vertgrade.compare.html import render_comparison_html  # matplotlib: only when asked

        page = render_comparison_html(comparison)
        names.append("comparison.html")
    out = Path(out_dir)
    with output_transaction(out, force=force, owned=COMPARISON_FILES) as stage:
        with open(stage / "comparison.json", "w", encoding="utf-8", newline="\n") as fh:
            fh.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
        with open(stage / "comparison.csv", "w", encoding="utf-8", newline="") as fh:
            fh.write(comparison_csv(comparison))
        if page is not None:
            with open(stage / "comparison.html", "w", encoding="utf-8", newline="\n") as fh:
                fh.write(page)
    return [out / n for n in names]
