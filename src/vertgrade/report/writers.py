"""Writing a result folder: ``result.json``, ``vertebrae.csv`` and ``bodies.nii.gz``.

All files are first written into a hidden staging folder beside their destination and only then
moved into place, each with an atomic rename: an interrupted run leaves no half-written file,
and an existing result folder is never touched without ``force``.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from vertgrade.errors import OutputError
from vertgrade.io._atomic import staged_files
from vertgrade.io.nifti import save_nifti
from vertgrade.result import CSV_COLUMNS, SpineResult

__all__ = ["OUTPUT_FILES", "check_output_dir", "load_schema", "validate_result", "write_result"]

#: The files a result folder holds.
OUTPUT_FILES = ("result.json", "vertebrae.csv", "alignment.csv", "bodies.nii.gz")


def load_schema() -> dict[str, Any]:
    """The JSON schema of ``result.json``."""
    text = resources.files("vertgrade.report").joinpath("result.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_result(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``document`` does not follow the schema."""
    jsonschema.validate(document, load_schema())


def check_output_dir(out_dir: str | Path, *, force: bool = False) -> Path:
    """Refuse an output location that is a file, or a non-empty folder without ``force``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(out, "output folder exists and is not empty (use --force to overwrite)")
    return out


def _csv_text(result: SpineResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in result.to_records():
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def _alignment_csv(result: SpineResult) -> str:
    from vertgrade.alignment import ALIGNMENT_COLUMNS

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ALIGNMENT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    rows = result.alignment.to_records() if result.alignment is not None else []
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in ALIGNMENT_COLUMNS})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_result(result: SpineResult, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write the result folder; returns the files written.

    ``bodies.nii.gz`` holds the isolated bodies labelled by vertebra, on the input CT's grid
    and affine (or the labels' where there is no CT); ``alignment.csv`` the per-vertebra and
    per-segment angles of :mod:`vertgrade.alignment`.
    """
    out = check_output_dir(out_dir, force=force)
    document = result.to_dict()
    validate_result(document)
    with staged_files(out, OUTPUT_FILES) as staging:
        (staging / "result.json").write_text(
            json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (staging / "vertebrae.csv").write_text(_csv_text(result), encoding="utf-8", newline="")
        (staging / "alignment.csv").write_text(_alignment_csv(result), encoding="utf-8", newline="")
        bodies = result.grid.to_input_grid(result.bodies)
        save_nifti(bodies, result.grid.affine, staging / "bodies.nii.gz")
    return [out / name for name in OUTPUT_FILES]
