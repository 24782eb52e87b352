"""vertgrade's predictions, read from the ``result.json`` files that ``vertgrade grade`` writes.

:func:`collect_predictions` takes result folders, folders that hold them at any depth (a cohort
output) or ``result.json`` files, and returns one :class:`Prediction` per vertebra: its status,
its Genant grade and its continuous fracture score (the largest regional RHLV), for
:func:`vertgrade.evaluation.evaluate` to match against the true grades.

Examples
--------
>>> import json, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> vertebra = {"label": 20, "status": "graded", "grade": 2,
...             "rhlv": {"anterior": 0.31, "middle": 0.2, "posterior": 0.02}}
>>> _ = (d / "result.json").write_text(json.dumps({"subject": "s1", "vertebrae": [vertebra]}))
>>> (p,) = collect_predictions([d])
>>> p.subject, p.level, p.grade, p.score
('s1', 'L1', 2, 0.31)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vertgrade.errors import InputError
from vertgrade.io.grades import GRADES
from vertgrade.levels import VERSE_LABELS, level_name

__all__ = ["Prediction", "collect_predictions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """vertgrade's grade of one vertebra, read from a ``result.json``.

    Parameters
    ----------
    subject : str
        Subject id of the result.
    label : int
        VerSe label id.
    status : {"graded", "not_gradable"}
        Whether vertgrade graded the vertebra.
    grade : int or None
        Predicted Genant grade 0-3; ``None`` when not gradable.
    score : float or None
        Continuous fracture score: the largest of the anterior, middle and posterior RHLV
        (fraction, 0.25 = 25 % height loss); ``None`` where ``result.json`` has none.
    reason : str or None
        Why the vertebra is not gradable.
    source : Path or None
        The ``result.json`` it was read from.
    """

    subject: str
    label: int
    status: Literal["graded", "not_gradable"]
    grade: int | None
    score: float | None = None
    reason: str | None = None
    source: Path | None = None

    @property
    def level(self) -> str:
        """Level name of :attr:`label` (``"L1"``)."""
        return level_name(self.label)


def _result_files(path: Path) -> list[Path]:
    """The ``result.json`` files named by one argument: the file, or those in a folder tree."""
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InputError(path, "expected a result folder or a result.json file")
        return [path]
    found = sorted(
        p
        for p in path.rglob("result.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise InputError(
            path, "no result.json in this folder or below (is it a `vertgrade grade` output?)"
        )
    return found


def _score(rhlv: Any) -> float | None:
    """Largest of the anterior, middle and posterior RHLV of a ``result.json`` vertebra."""
    if not isinstance(rhlv, dict):
        return None
    values = [rhlv.get(r) for r in ("anterior", "middle", "posterior")]
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return max(finite) if finite else None


def _read_result(path: Path) -> tuple[str, list[Prediction]]:
    """Subject and per-vertebra predictions of one ``result.json``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read: {err}") from err
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise InputError(path, "is not a vertgrade result.json (not a JSON object)")
    subject = document.get("subject")
    vertebrae = document.get("vertebrae")
    if not isinstance(subject, str) or not subject:
        raise InputError(path, "is not a vertgrade result.json: no 'subject'")
    if not isinstance(vertebrae, list):
        raise InputError(path, "is not a vertgrade result.json: no 'vertebrae' list")
    preds: list[Prediction] = []
    seen: set[int] = set()
    for i, v in enumerate(vertebrae):
        where = f"vertebrae[{i}]"
        if not isinstance(v, dict):
            raise InputError(path, f"{where} is not an object")
        label = v.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or label not in VERSE_LABELS:
            raise InputError(path, f"{where}: label {label!r} is not a VerSe label id")
        if label in seen:
            raise InputError(path, f"{where}: label {label} appears twice")
        seen.add(label)
        status = v.get("status")
        grade = v.get("grade")
        if status not in ("graded", "not_gradable"):
            raise InputError(path, f"{where}: status {status!r} is not graded or not_gradable")
        if status == "graded" and (
            not isinstance(grade, int) or isinstance(grade, bool) or grade not in GRADES
        ):
            raise InputError(path, f"{where}: graded but grade {grade!r} is not 0-3")
        reason = v.get("reason")
        preds.append(
            Prediction(
                subject=subject,
                label=label,
                status=status,
                grade=grade if status == "graded" else None,
                score=_score(v.get("rhlv")),
                reason=str(reason) if reason is not None else None,
                source=path,
            )
        )
    return subject, preds


def collect_predictions(paths: Iterable[str | Path]) -> list[Prediction]:
    """Read the predictions of ``vertgrade grade`` result folders.

    Parameters
    ----------
    paths : iterable of str or Path
        Result folders (holding ``result.json``), folders that hold result folders at any depth
        (a cohort output), or ``result.json`` files. Hidden folders are not searched. A file
        reached twice is read once.

    Returns
    -------
    list of Prediction
        One per vertebra of every result, subjects in the order found.

    Raises
    ------
    InputError
        A path does not exist or holds no ``result.json``, a ``result.json`` is not valid, or two
        files hold the same subject (the message names both).
    """
    files: list[Path] = []
    seen_files: set[Path] = set()
    for p in paths:
        for f in _result_files(Path(p)):
            key = f.resolve()
            if key not in seen_files:
                seen_files.add(key)
                files.append(f)
    if not files:
        raise InputError(None, "no result folders given")
    subjects: dict[str, Path] = {}
    out: list[Prediction] = []
    for f in files:
        subject, preds = _read_result(f)
        if subject in subjects:
            raise InputError(
                f,
                f"subject {subject!r} is also the subject of {subjects[subject]}; "
                "give each study once",
            )
        subjects[subject] = f
        out.extend(preds)
    logger.debug("read %d vertebrae of %d subjects", len(out), len(subjects))
    return out
