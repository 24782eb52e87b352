"""Writing a result folder: ``result.json``, ``vertebrae.csv``, ``alignment.csv`` and
``bodies.nii.gz``.

All files are first written into a hidden staging folder beside their destination and only then
moved into place, each with an atomic rename: an interrupted run leaves no half-written file,
and an existing result folder is never touched without ``force``.

``result.json`` follows the JSON schema ``vertgrade/report/schema/result.schema.json``
(:func:`load_schema`); :func:`validate_result` checks a document against it, with one validator
built the first time it is needed and reused after that. The documents vertgrade writes are
checked by its tests (which set ``VERTGRADE_VALIDATE_OUTPUT=1``, so that every result any test
writes is validated before it is written); a user's run does not check them again unless that
variable is set or ``write_result(..., validate=True)`` asks for it: importing jsonschema and
checking a document takes about 0.17 s, a tenth of grading a small CT.

Examples
--------
>>> import jsonschema
>>> schema = load_schema()
>>> schema["type"], "vertebrae" in schema["properties"]
('object', True)
>>> try:
...     validate_result({"schema_version": "1.2"})
... except jsonschema.ValidationError as err:
...     print(err.validator)
required
"""

from __future__ import annotations

import csv
import io
import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertgrade.alignment import ALIGNMENT_COLUMNS
from vertgrade.io.files import check_output_dir, staged_files
from vertgrade.io.nifti import save_nifti
from vertgrade.result import CSV_COLUMNS, SpineResult

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "OUTPUT_FILES",
    "VALIDATE_ENV",
    "load_schema",
    "validate_on_write",
    "validate_result",
    "write_result",
]

#: Set to 1 (or true / yes) to validate every ``result.json`` before it is written.
VALIDATE_ENV = "VERTGRADE_VALIDATE_OUTPUT"

#: The files a result folder holds.
OUTPUT_FILES = ("result.json", "vertebrae.csv", "alignment.csv", "bodies.nii.gz")

# The schema file, relative to the ``vertgrade.report`` package (shipped in the wheel).
_SCHEMA_FILE = "schema/result.schema.json"


def load_schema() -> dict[str, Any]:
    """The JSON schema of ``result.json`` (a fresh dict on each call).

    Returns
    -------
    dict
        The schema (JSON Schema 2020-12), alignment object included.
    """
    path = resources.files("vertgrade.report").joinpath(_SCHEMA_FILE)
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return schema


@cache
def _validator() -> Validator:
    """The validator of :func:`load_schema`, built once per process. The schema itself is not
    checked against its meta-schema here (a tenth of a second per process): it ships with the
    package, and the tests check it."""
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator: Validator = cls(schema)
    return validator


def validate_result(document: dict[str, Any]) -> None:
    """Check a ``result.json`` document against the schema.

    Parameters
    ----------
    document : dict
        ``SpineResult.to_dict()`` or a loaded ``result.json``.

    Raises
    ------
    jsonschema.ValidationError
        The document does not follow the schema; the error is the most relevant one
        (``jsonschema.exceptions.best_match``), as :func:`jsonschema.validate` reports it.
    """
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        raise error


def _csv_text(result: SpineResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in result.to_records():
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def _alignment_csv(result: SpineResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ALIGNMENT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    rows = result.alignment.to_records() if result.alignment is not None else []
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in ALIGNMENT_COLUMNS})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for ``None``, ``true`` / ``false`` for booleans.

    >>> _cell(None), _cell(True), _cell(2.5)
    ('', 'true', 2.5)
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def validate_on_write() -> bool:
    """Whether :data:`VALIDATE_ENV` asks for every written ``result.json`` to be validated."""
    return os.environ.get(VALIDATE_ENV, "").strip().lower() in ("1", "true", "yes")


def write_result(
    result: SpineResult,
    out_dir: str | Path,
    *,
    force: bool = False,
    validate: bool | None = None,
) -> list[Path]:
    """Write the result folder.

    ``bodies.nii.gz`` holds the isolated bodies labelled by vertebra, on the input CT's grid
    and affine (or the labels' where there is no CT); ``alignment.csv`` the per-vertebra and
    per-segment angles of :mod:`vertgrade.alignment`.

    Parameters
    ----------
    result : SpineResult
        From :func:`vertgrade.grade_study`.
    out_dir : path
        The result folder (created if missing).
    force : bool
        Overwrite the files of an existing result folder.
    validate : bool, optional
        Check ``result.json`` against the schema before anything is written (default: where
        :data:`VALIDATE_ENV` asks for it, see :func:`validate_on_write`).

    Returns
    -------
    list of Path
        The files written, in the order of :data:`OUTPUT_FILES`.

    Raises
    ------
    OutputError
        The folder exists and is not empty (without ``force``), or is a file.
    jsonschema.ValidationError
        Validating, the result does not follow the schema (nothing is written then).
    """
    out = check_output_dir(out_dir, force=force)
    document = result.to_dict()
    if validate_on_write() if validate is None else validate:
        validate_result(document)
    with staged_files(out, OUTPUT_FILES) as staging:
        (staging / "result.json").write_text(
            json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (staging / "vertebrae.csv").write_text(_csv_text(result), encoding="utf-8", newline="")
        (staging / "alignment.csv").write_text(_alignment_csv(result), encoding="utf-8", newline="")
        # Fortran order: NIfTI's own, so nibabel writes it without a slice-by-slice transpose
        bodies = result.grid.to_input_grid(result.bodies, order="F")
        save_nifti(bodies, result.grid.affine, staging / "bodies.nii.gz")
    return [out / name for name in OUTPUT_FILES]
