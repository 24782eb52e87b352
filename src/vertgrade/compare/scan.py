"""One graded study as a follow-up comparison reads it: :class:`Scan`.

A scan is a ``result.json`` document (``SpineResult.to_dict()``) with what the comparison needs
beside it: the study date and the DICOM Patient ID where they are known, and the height
uncertainty of its measurement (the grading's own ``measurement_uncertainty_mm``, or a quarter
of the largest voxel size where that is larger, :mod:`vertgrade.compare.config`).

Where the date and the Patient ID come from, first found first:

1. given by the caller (``--prior-date`` / ``--current-date``; the Patient ID is never given);
2. the DICOM series the study was graded from, when :func:`vertgrade.compare.compare_studies`
   graded it;
3. any key ``study_date`` / ``StudyDate`` and ``patient_id`` / ``PatientID`` in the result's
   provenance, or a note ``StudyDate: 20230517`` / ``PatientID: 123`` among its notes;
4. the DICOM series named in the provenance's CT input, where that folder still exists and
   pydicom is installed.

vertgrade's own ``result.json`` records neither (the identifiers stay out of it), so a result
folder graded from NIfTI files has no date unless one is given: the per-year changes are then
``null`` and the comparison says why.

Examples
--------
>>> parse_study_date("20230517"), parse_study_date("2023-05-17"), parse_study_date("")
(datetime.date(2023, 5, 17), datetime.date(2023, 5, 17), None)
>>> _find_keys({"a": {"StudyDate": "20200101"}, "b": [{"study_date": "x"}]}, "studydate")
['20200101', 'x']
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import nibabel as nib

from vertgrade.compare.config import VOXEL_UNCERTAINTY_FRACTION
from vertgrade.config import GradingConfig
from vertgrade.errors import InputError

if TYPE_CHECKING:
    from vertgrade.io.dicom import SeriesInfo

__all__ = ["Scan", "parse_study_date", "read_scan", "scan_from_document"]

logger = logging.getLogger(__name__)

_NOTE_DATE = re.compile(r"study\s*_?date\W*(\d{8}|\d{4}-\d{2}-\d{2})", re.IGNORECASE)
_NOTE_PATIENT = re.compile(r"patient\s*_?id\W*([^\s,;]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Scan:
    """One graded study of a follow-up pair.

    Attributes
    ----------
    document : dict
        Its ``result.json`` (``SpineResult.to_dict()``).
    source : Path or None
        What it was read or graded from (a result folder, a CT, a labels file).
    result_dir : Path or None
        The result folder.
    graded_here : bool
        Graded by this comparison (into ``out/prior`` or ``out/current``).
    study_date : datetime.date or None
        The study (acquisition) date, where known.
    date_source : str or None
        Where the date came from (``"given"``, ``"dicom series"``, ``"provenance"``,
        ``"notes"``, ``"dicom folder"``).
    patient_id : str or None
        The DICOM Patient ID, where known; it is compared, never written to the outputs.
    patient_id_source : str or None
        Where it came from.
    voxel_mm : (3,) float or None
        Voxel sizes of the graded grid, from the result folder's ``bodies.nii.gz``.
    grading_uncertainty_mm : float
        The grading's ``measurement_uncertainty_mm`` (from the result's provenance): the
        standard uncertainty of one regional height, before the voxel size is considered
        (:meth:`height_uncertainty_mm`).
    notes : tuple of str
        What reading the scan found that a reader should know.
    """

    document: dict[str, Any] = field(repr=False)
    source: Path | None
    result_dir: Path | None
    graded_here: bool = False
    study_date: datetime.date | None = None
    date_source: str | None = None
    patient_id: str | None = field(default=None, repr=False)
    patient_id_source: str | None = None
    voxel_mm: tuple[float, float, float] | None = None
    grading_uncertainty_mm: float = GradingConfig().measurement_uncertainty_mm
    notes: tuple[str, ...] = ()

    def height_uncertainty_mm(self, voxel_fraction: float = VOXEL_UNCERTAINTY_FRACTION) -> float:
        """Standard uncertainty of one regional height of this scan (mm): the grading's, or
        ``voxel_fraction`` of the largest voxel size where that is larger.

        >>> Scan({}, None, None, voxel_mm=(1.0, 1.0, 3.0)).height_uncertainty_mm()
        0.75
        >>> Scan({}, None, None, voxel_mm=None).height_uncertainty_mm()
        0.5
        """
        if self.voxel_mm is None:
            return self.grading_uncertainty_mm
        return max(self.grading_uncertainty_mm, voxel_fraction * max(self.voxel_mm))

    @property
    def subject(self) -> str:
        """The subject id of the result."""
        return str(self.document.get("subject", ""))

    @property
    def vertebrae(self) -> dict[int, dict[str, Any]]:
        """The result's vertebrae by VerSe label id."""
        return {int(v["label"]): v for v in self.document.get("vertebrae", [])}

    def info(self, voxel_fraction: float = VOXEL_UNCERTAINTY_FRACTION) -> dict[str, Any]:
        """The scan as ``comparison.json`` describes it (no Patient ID: only whether one was
        recorded)."""
        return {
            "subject": self.subject,
            "source": None if self.source is None else str(self.source),
            "result_dir": None if self.result_dir is None else str(self.result_dir),
            "graded_here": self.graded_here,
            "study_date": None if self.study_date is None else self.study_date.isoformat(),
            "date_source": self.date_source,
            "patient_id_recorded": self.patient_id is not None,
            "voxel_mm": None if self.voxel_mm is None else [round(x, 4) for x in self.voxel_mm],
            "height_uncertainty_mm": round(self.height_uncertainty_mm(voxel_fraction), 4),
            "n_vertebrae": len(self.document.get("vertebrae", [])),
        }


def parse_study_date(text: str | None) -> datetime.date | None:
    """A DICOM date (``YYYYMMDD``) or an ISO date (``YYYY-MM-DD``); ``None`` for empty.

    Raises
    ------
    ValueError
        Any other text.
    """
    value = (text or "").strip()
    if not value:
        return None
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a date: write YYYY-MM-DD (or DICOM's YYYYMMDD)")


def _walk(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield str(k), v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _find_keys(obj: Any, key: str) -> list[str]:
    """The string values of every key of ``obj`` (at any depth) that reads ``key`` once
    lower-cased and stripped of underscores."""
    return [
        v.strip()
        for k, v in _walk(obj)
        if k.lower().replace("_", "") == key and isinstance(v, str) and v.strip()
    ]


def _voxel_mm(result_dir: Path | None) -> tuple[float, float, float] | None:
    """Voxel sizes of ``bodies.nii.gz`` in a result folder (its header only)."""
    if result_dir is None:
        return None
    path = result_dir / "bodies.nii.gz"
    if not path.is_file():
        return None
    try:
        img = cast(nib.Nifti1Image, nib.load(path))  # a NIfTI file: write_result wrote it
        zooms = nib.affines.voxel_sizes(img.affine)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None
    return float(zooms[0]), float(zooms[1]), float(zooms[2])


def _dicom_folder_ids(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(Patient ID, StudyDate) of the DICOM folder named as the CT input, where it still exists
    and all its series agree; ``(None, None)`` otherwise (pydicom missing included)."""
    ct = ((document.get("provenance") or {}).get("inputs") or {}).get("ct") or {}
    path = Path(str(ct.get("path", ""))) if ct.get("path") else None
    if path is None or not path.is_dir():
        return None, None
    try:
        from vertgrade.io.dicom import is_dicom_path, list_series

        if not is_dicom_path(path):
            return None, None
        series = list_series(path)
    except (ImportError, InputError, OSError) as err:
        logger.info("%s: could not read its DICOM identifiers (%s)", path, err)
        return None, None
    ids = {s.patient_id.strip() for s in series} - {""}
    dates = {s.study_date.strip() for s in series} - {""}
    return (ids.pop() if len(ids) == 1 else None), (dates.pop() if len(dates) == 1 else None)


def scan_from_document(
    document: dict[str, Any],
    *,
    source: Path | None = None,
    result_dir: Path | None = None,
    graded_here: bool = False,
    series: SeriesInfo | None = None,
    study_date: datetime.date | None = None,
) -> Scan:
    """A :class:`Scan` of a ``result.json`` document, its date and Patient ID looked up as the
    module docstring says.

    Parameters
    ----------
    document : dict
        ``SpineResult.to_dict()`` or a loaded ``result.json``.
    source, result_dir : Path, optional
        What it came from; ``result_dir`` holds ``bodies.nii.gz``, whose voxel sizes set the
        height uncertainty.
    graded_here : bool
        Graded by the comparison.
    series : SeriesInfo, optional
        The DICOM series it was graded from.
    study_date : datetime.date, optional
        The study date, given by the caller: it wins over any recorded one (a note says when
        they differ).

    Raises
    ------
    InputError
        A recorded study date that is not a date.
    """
    where = result_dir or source
    notes: list[str] = []
    provenance = document.get("provenance") or {}
    doc_notes = [str(n) for n in document.get("notes") or []]

    date_found: list[tuple[str, str]] = []
    pid_found: list[tuple[str, str]] = []
    if series is not None:
        date_found += [("dicom series", series.study_date.strip())]
        pid_found += [("dicom series", series.patient_id.strip())]
    date_found += [("provenance", v) for v in _find_keys(provenance, "studydate")]
    pid_found += [("provenance", v) for v in _find_keys(provenance, "patientid")]
    for note in doc_notes:
        if m := _NOTE_DATE.search(note):
            date_found.append(("notes", m.group(1)))
        if m := _NOTE_PATIENT.search(note):
            pid_found.append(("notes", m.group(1)))
    date_found = [(s, v) for s, v in date_found if v]
    pid_found = [(s, v) for s, v in pid_found if v]
    if not date_found or not pid_found:
        folder_pid, folder_date = _dicom_folder_ids(document)
        if folder_date:
            date_found.append(("dicom folder", folder_date))
        if folder_pid:
            pid_found.append(("dicom folder", folder_pid))

    recorded: datetime.date | None = None
    recorded_source: str | None = None
    if date_found:
        recorded_source, text = date_found[0]
        try:
            recorded = parse_study_date(text)
        except ValueError as err:
            raise InputError(where, f"its recorded study date ({recorded_source}): {err}") from None
    date: datetime.date | None = recorded
    date_source: str | None = recorded_source
    if study_date is not None:
        if recorded is not None and recorded != study_date:
            notes.append(
                f"the study date given ({study_date.isoformat()}) replaces the one recorded "
                f"({recorded.isoformat()}, {recorded_source})"
            )
        date, date_source = study_date, "given"
    pids = {v for _, v in pid_found}
    patient_id, pid_source = (pid_found[0][1], pid_found[0][0]) if pid_found else (None, None)
    if len(pids) > 1:
        notes.append("its records name more than one Patient ID: the first found is compared")

    params = provenance.get("parameters") or {}
    meas = params.get("measurement_uncertainty_mm")
    default_u = GradingConfig().measurement_uncertainty_mm
    u = float(meas) if isinstance(meas, (int, float)) else default_u
    voxel = _voxel_mm(result_dir)
    if voxel is None:
        notes.append(
            "voxel size unknown (no bodies.nii.gz in the result folder): the height "
            f"uncertainty is the grading's {u:g} mm"
        )
    return Scan(
        document=document,
        source=source,
        result_dir=result_dir,
        graded_here=graded_here,
        study_date=date,
        date_source=date_source,
        patient_id=patient_id,
        patient_id_source=pid_source,
        voxel_mm=voxel,
        grading_uncertainty_mm=float(u),
        notes=tuple(notes),
    )


def read_scan(path: str | Path, *, study_date: datetime.date | None = None) -> Scan:
    """Read a result folder (or its ``result.json``), checked against the result schema.

    Raises
    ------
    InputError
        No such folder, no ``result.json``, not JSON, or not a vertgrade result.
    """
    import jsonschema

    from vertgrade.report.files import validate_result

    p = Path(path)
    file = p / "result.json" if p.is_dir() else p
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if not file.is_file():
        raise InputError(p, "holds no result.json: not a vertgrade result folder")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(file, f"is not a readable JSON file ({err})") from err
    if not isinstance(document, dict):
        raise InputError(file, "is not a vertgrade result.json (not a JSON object)")
    try:
        validate_result(document)
    except jsonschema.ValidationError as err:
        where = "/".join(str(x) for x in err.absolute_path) or "top level"
        raise InputError(
            file,
            f"does not follow the result schema at {where}: {err.message} (written by another "
            "vertgrade version? grade it again)",
        ) from err
    return scan_from_document(document, source=p, result_dir=file.parent, study_date=study_date)
