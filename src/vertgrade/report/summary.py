"""What the report says in words: the one-line impression, the study's identifiers and the
parameters that differ from the defaults.

Everything here reads the result as ``result.json`` holds it (``SpineResult.to_dict()``), so that
the report written right after grading and one rewritten later from a result folder say the same.

- :func:`impression` is the report's one line a radiologist reads first: the fractures by grade
  and type, whether any other vertebra is fractured, and why a vertebra could not be graded.
- :class:`StudyIdentifiers` holds the patient and study identifiers of a DICOM input (from
  :class:`vertgrade.io.dicom.SeriesInfo`, :func:`study_identifiers`) and the date of the
  analysis; anonymised, the identifiers are left out (:meth:`StudyIdentifiers.rows`).
- :func:`changed_parameters` lists, as dotted names, the parameters of a run that are not the
  defaults (the report's appendix shows those, not the whole configuration).

Examples
--------
>>> doc = {"vertebrae": [
...     {"level": "T12", "status": "not_gradable", "grade": None, "type": None,
...      "reason": "the vertebral body is cut by the edge of the field of view"},
...     {"level": "L1", "status": "graded", "grade": 2, "type": "wedge", "reason": None},
...     {"level": "L2", "status": "graded", "grade": 0, "type": None, "reason": None}]}
>>> impression(doc)
'moderate wedge fracture of L1; no other fracture; T12 not gradable: cut by the field of view'
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vertgrade.io.dicom import SeriesInfo

__all__ = [
    "GRADE_WORDS",
    "StudyIdentifiers",
    "analysis_date",
    "changed_parameters",
    "dicom_date_text",
    "dicom_name_text",
    "impression",
    "short_reason",
    "study_identifiers",
]

# --- constants ----------------------------------------------------------------------------------

#: Genant's words for grades 1-3 (Genant et al., J Bone Miner Res 1993;8:1137-48).
GRADE_WORDS: dict[int, str] = {1: "mild", 2: "moderate", 3: "severe"}

# Reasons a vertebra is not gradable, as grading words them (vertgrade.grading), and the short
# form the impression uses; the first match wins, others are kept as they are.
_SHORT_REASONS: tuple[tuple[str, str], ...] = (
    ("cut by the edge of the field of view", "cut by the field of view"),
    ("lies outside the CT's field of view", "outside the CT's field of view"),
    ("out of head-to-foot order", "label out of order (a likely mislabel)"),
    ("label is split", "label split between far-apart places"),
    ("too small for a vertebra", "label too small for a vertebra"),
    ("no vertebral body could be isolated", "no vertebral body isolated"),
    ("voxels are over 5 mm", "voxels too coarse along its axis"),
    ("heights could not be measured", "heights not measured"),
    ("body size implausible", "body size implausible for its level"),
    ("much deeper than its neighbours", "posterior elements not cut away"),
    ("no usable reference", "no usable reference"),
    ("regional heights incomplete", "regional heights incomplete"),
)
# The reason of a level outside T1-L6 (grading's "C7 is not graded (vertgrade grades T1-L6)").
_NOT_GRADED_LEVEL = "is not graded (vertgrade grades"


# --- the impression -----------------------------------------------------------------------------


def short_reason(reason: str | None) -> str:
    """The impression's short form of a not-gradable reason (the reason itself where it has
    none).

    >>> short_reason("the vertebral body is cut by the edge of the field of view (its inferior "
    ...              "side)")
    'cut by the field of view'
    >>> short_reason("something new"), short_reason(None)
    ('something new', 'no reason given')
    """
    if not reason:
        return "no reason given"
    for phrase, short in _SHORT_REASONS:
        if phrase in reason:
            return short
    return reason


def _join_levels(levels: Sequence[str]) -> str:
    """``"L1"``, ``"L1 and L2"``, ``"T7, T8 and T9"``."""
    if len(levels) <= 1:
        return "".join(levels)
    return ", ".join(levels[:-1]) + " and " + levels[-1]


def impression(document: Mapping[str, Any]) -> str:
    """The report's one-line impression of a result document.

    Fractures come first, worst first, as Genant's words for the grade with the type and the
    levels (``"moderate wedge fracture of L1"``; vertebrae of one grade and type together:
    ``"mild wedge fractures of T7 and T8"``); then ``"no other fracture"`` (or ``"no
    fracture"``) where the other graded vertebrae are grade 0; then each group of vertebrae not
    gradable for one reason, with the reason in short (:func:`short_reason`). Levels outside
    T1-L6 are named as not graded.

    Parameters
    ----------
    document : mapping
        The result as ``result.json`` holds it.

    Returns
    -------
    str
        Clauses joined by ``"; "``.

    Examples
    --------
    >>> v = lambda lv, g, t=None: {"level": lv, "status": "graded", "grade": g, "type": t}
    >>> impression({"vertebrae": [v("T7", 1, "wedge"), v("T8", 1, "wedge"), v("L1", 3, "crush")]})
    'severe crush fracture of L1; mild wedge fractures of T7 and T8'
    >>> impression({"vertebrae": [v("L1", 0), v("L2", 0)]})
    'no fracture (L1-L2 graded)'
    >>> impression({"vertebrae": []})
    'no vertebra in the result'
    """
    verts: list[Mapping[str, Any]] = list(document.get("vertebrae") or [])
    if not verts:
        return "no vertebra in the result"
    graded = [v for v in verts if v.get("status") == "graded" and v.get("grade") is not None]
    fractured = [v for v in graded if int(v["grade"]) >= 1]
    clauses: list[str] = []
    groups: dict[tuple[int, str], list[str]] = {}
    for v in sorted(fractured, key=lambda v: -int(v["grade"])):
        groups.setdefault((int(v["grade"]), str(v.get("type") or "")), []).append(str(v["level"]))
    for (grade, ftype), levels in groups.items():
        noun = "fracture" if len(levels) == 1 else "fractures"
        words = " ".join(w for w in (GRADE_WORDS.get(grade, f"grade {grade}"), ftype, noun) if w)
        clauses.append(f"{words} of {_join_levels(levels)}")
    if fractured and len(fractured) < len(graded):
        clauses.append("no other fracture")
    elif graded and not fractured:
        clauses.append(f"no fracture ({graded[0]['level']}-{graded[-1]['level']} graded)")
    elif not graded:
        clauses.append("no vertebra could be graded")
    outside: list[str] = []
    why: dict[str, list[str]] = {}
    for v in verts:
        if v.get("status") == "graded":
            continue
        reason = str(v.get("reason") or "")
        if _NOT_GRADED_LEVEL in reason:
            outside.append(str(v["level"]))
        else:
            why.setdefault(short_reason(reason), []).append(str(v["level"]))
    for reason, levels in why.items():
        clauses.append(f"{_join_levels(levels)} not gradable: {reason}")
    if outside:
        clauses.append(f"{_join_levels(outside)} not graded (outside T1-L6)")
    return "; ".join(clauses)


# --- identifiers and dates ----------------------------------------------------------------------


def dicom_date_text(value: str | None) -> str | None:
    """A DICOM date (DA, ``YYYYMMDD``) as ISO 8601; other text as it is; ``None`` for empty.

    >>> dicom_date_text("20230517"), dicom_date_text("2023.05.17"), dicom_date_text("")
    ('2023-05-17', '2023.05.17', None)
    """
    text = (value or "").strip()
    if not text:
        return None
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def dicom_name_text(value: str | None) -> str | None:
    """A DICOM person name (PN, ``family^given^middle^prefix^suffix``) as ``"family, given
    middle"``; ``None`` for empty.

    >>> dicom_name_text("Doe^Jane^Q"), dicom_name_text("DOE"), dicom_name_text("^")
    ('Doe, Jane Q', 'DOE', None)
    """
    alphabetic = (value or "").split("=")[0]  # the alphabetic group of a multi-group name
    parts = [p.strip() for p in alphabetic.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    text = ", ".join(p for p in (family, given) if p)
    return text or None


def analysis_date(when: datetime.datetime | None = None) -> datetime.date:
    """The date written as the analysis' date: ``when``'s, else ``SOURCE_DATE_EPOCH``'s where set
    (the reproducible-builds convention, as the PDF's dates), else today's.

    >>> analysis_date(datetime.datetime(2024, 3, 1, 12, 0))
    datetime.date(2024, 3, 1)
    """
    if when is not None:
        return when.date()
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc).date()
    return datetime.date.today()


@dataclass(frozen=True)
class StudyIdentifiers:
    """The patient and study identifiers of a DICOM input, for the report's header.

    Attributes
    ----------
    patient_name : str or None
        As :func:`dicom_name_text` writes it.
    patient_id, accession_number : str or None
    study_date : str or None
        ISO 8601 (``2023-05-17``).
    """

    patient_name: str | None = None
    patient_id: str | None = None
    study_date: str | None = None
    accession_number: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` of every identifier known, in the order a header lists them.

        >>> StudyIdentifiers("Doe, Jane", "12345", None, "A-7").rows()
        [('patient', 'Doe, Jane'), ('patient ID', '12345'), ('accession', 'A-7')]
        """
        pairs = (
            ("patient", self.patient_name),
            ("patient ID", self.patient_id),
            ("study date", self.study_date),
            ("accession", self.accession_number),
        )
        return [(k, v) for k, v in pairs if v]


def study_identifiers(series: SeriesInfo) -> StudyIdentifiers:
    """The identifiers of a DICOM series (:class:`vertgrade.io.dicom.SeriesInfo`) as the report
    shows them; empty DICOM values become ``None``."""
    return StudyIdentifiers(
        patient_name=dicom_name_text(series.patient_name),
        patient_id=series.patient_id.strip() or None,
        study_date=dicom_date_text(series.study_date),
        accession_number=series.accession_number.strip() or None,
    )


# --- parameters ---------------------------------------------------------------------------------


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def changed_parameters(
    parameters: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """The parameters that differ from the defaults: ``(dotted name, value, default)``, sorted by
    name. A parameter the defaults do not have (from another version) is listed with default
    ``None``; one missing from ``parameters`` is not listed.

    Values are compared as JSON holds them (a tuple equals the list of its items).

    >>> changed_parameters({"a": 1, "b": {"c": [1, 2], "d": 3}}, {"a": 1, "b": {"c": (1, 2),
    ...                    "d": 4}})
    [('b.d', 3, 4)]
    """
    ours = _flatten(json.loads(json.dumps(parameters)))
    base = _flatten(json.loads(json.dumps(defaults)))
    return [(k, ours[k], base.get(k)) for k in sorted(ours) if ours[k] != base.get(k)]
