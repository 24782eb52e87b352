"""Results: one :class:`VertebraResult` per vertebra, gathered in a :class:`SpineResult`.

``SpineResult.to_dict()`` is the content of ``result.json`` (schema
``vertgrade/report/schema/result.schema.json``, version :data:`SCHEMA_VERSION`);
``SpineResult.to_records()`` gives one flat row per vertebra (``vertebrae.csv``), so that
``pandas.DataFrame(result.to_records())`` works unchanged (``result.to_frame()`` builds it, with
pandas installed).

A :class:`SpineResult` is a read-only collection of its vertebrae in spine order (cranial
first): ``for v in result``, ``len(result)``, ``result[20]`` (VerSe label id: 20 is L1) and
``result["L1"]`` (level name, any case) work, and ``"L1" in result`` says whether a vertebra is
there. ``result.summary`` is the summary of ``result.json`` (a property, not a method).

Per-region values, the heights as much as the relative height losses, are
:class:`RegionValues`: ``v.rhlv.anterior`` and ``v.rhlv["anterior"]`` give the same number, and
``dict(v.heights_mm)`` has the keys ``body``, ``anterior``, ``middle``, ``posterior``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from vertgrade.geometry.frames import LocalFrame
from vertgrade.grading import FractureType, LossMap, ShapeEvidence
from vertgrade.levels import label_id, order_key
from vertgrade.morphometry import EndplatePlane, RegionHeights, WallHeights
from vertgrade.qc import flag_texts
from vertgrade.study import GridInfo

if TYPE_CHECKING:
    import pandas as pd

    from vertgrade.alignment import Alignment

__all__ = [
    "CONFIDENCE_DECIMALS",
    "CSV_COLUMNS",
    "QC_FLAGS",
    "SCHEMA_VERSION",
    "RegionValues",
    "SpineResult",
    "VertebraResult",
    "reference_support",
]

SCHEMA_VERSION = "1.4"

#: Every QC flag vertgrade can raise, with what it means (from :class:`vertgrade.qc.QCFlag`).
QC_FLAGS: dict[str, str] = flag_texts()

_REGION_KEYS = ("body", "anterior", "middle", "posterior")

#: Decimals of the confidence in ``result.json`` and ``vertebrae.csv``: ``round(value, 2)``,
#: once, so that the files, the terminal and the report show the same number (0.30, not 0.295
#: in one place and 0.29 in another).
CONFIDENCE_DECIMALS = 2


@dataclass(frozen=True, eq=False)
class RegionValues(Mapping[str, "float | None"]):
    """One value per region of the body: ``body`` (the whole footprint less its rim) and the
    ``anterior``, ``middle`` and ``posterior`` thirds; ``None`` where not measured.

    The shape of every per-region value of a :class:`VertebraResult`: the heights (mm: the
    ``_mm`` of the attribute's name) and the relative height losses (``rhlv``, fractions). Read
    by attribute or as a read-only mapping, in the order above; it equals any mapping or
    :class:`vertgrade.morphometry.RegionHeights` with the same four values.

    Examples
    --------
    >>> r = RegionValues(body=0.1, anterior=0.31, middle=0.2, posterior=None)
    >>> r.anterior, r["anterior"], r.get("posterior"), list(r)
    (0.31, 0.31, None, ['body', 'anterior', 'middle', 'posterior'])
    >>> r == {"body": 0.1, "anterior": 0.31, "middle": 0.2, "posterior": None}
    True
    >>> RegionValues.of({"body": 1.0, "anterior": 2.0, "middle": 3.0, "posterior": 4.0}).middle
    3.0
    """

    body: float | None
    anterior: float | None
    middle: float | None
    posterior: float | None

    @overload
    @classmethod
    def of(cls, values: None) -> None: ...

    @overload
    @classmethod
    def of(cls, values: RegionHeights | Mapping[str, float | None]) -> RegionValues: ...

    @classmethod
    def of(cls, values: RegionHeights | Mapping[str, float | None] | None) -> RegionValues | None:
        """The values of a :class:`~vertgrade.morphometry.RegionHeights` or of a mapping with
        the four region keys (a missing key is ``None``); ``None`` for ``None``."""
        if values is None:
            return None
        if isinstance(values, RegionValues):
            return values
        if isinstance(values, RegionHeights):
            return cls(values.body, values.anterior, values.middle, values.posterior)
        return cls(*(values.get(k) for k in _REGION_KEYS))

    def __getitem__(self, region: str) -> float | None:
        if region not in _REGION_KEYS:
            raise KeyError(f"no region {region!r}: the regions are {', '.join(_REGION_KEYS)}")
        value: float | None = getattr(self, region)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_REGION_KEYS)

    def __len__(self) -> int:
        return len(_REGION_KEYS)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RegionHeights):
            other = RegionValues.of(other)
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.values()))

    def as_dict(self) -> dict[str, float | None]:
        """A plain dict, as :meth:`vertgrade.morphometry.RegionHeights.as_dict` gives."""
        return dict(self)


@dataclass(frozen=True)
class VertebraResult:
    """Everything vertgrade found about one vertebra.

    ``status`` is ``"graded"`` or ``"not_gradable"`` (then ``grade`` is None and ``reason``
    says why); a vertebra that cannot be graded is never reported as grade 0. ``endplates`` are
    the (superior, inferior) planes fitted to the graded endplates; ``thirds`` gives, per third,
    the world points (mm) of its mean superior and inferior endplate at its central column, for
    drawing the heights.

    ``grade_method`` says where ``grade`` came from: ``"thresholds"`` (Genant's 20/25/40 % on the
    largest regional RHLV; ``confidence`` is the probability of the same grade under the
    reference and measurement uncertainty) or a trained classifier (``"svm"``, see
    :mod:`vertgrade.synthesis.grader`; ``confidence`` is then the classifier's probability of its
    grade,
    ``grade_probabilities`` its probability of every grade). ``threshold_grade`` is always the
    thresholds' grade, so the two can be compared.

    ``type`` is the fracture's type (``"wedge"``, ``"biconcave"``, ``"crush"``; None for grade
    0 and not gradable), the name ``result.json`` and ``vertebrae.csv`` use; ``fracture_type`` is
    the same value under its former name, read-only. ``rhlv`` and the heights are
    :class:`RegionValues` (given a :class:`~vertgrade.morphometry.RegionHeights` or a dict, they
    are stored as one).
    """

    label: int
    level: str
    status: Literal["graded", "not_gradable"]
    reason: str | None
    grade: int | None
    type: FractureType | None
    confidence: float | None
    rhlv: RegionValues | None
    heights_mm: RegionValues | None
    heights_source: Literal["ct", "mask"] | None
    heights_mask_mm: RegionValues | None
    heights_ct_mm: RegionValues | None
    reference_mm: RegionValues | None
    reference_method: str
    reference_sources: tuple[str, ...]
    reference_uncertainty: float | None
    ratios: dict[str, float | None]
    flags: tuple[str, ...]
    hu_trabecular: float | None
    volume_ml: float | None
    width_mm: float | None
    depth_mm: float | None
    centroid_mm: tuple[float, float, float]
    frame: LocalFrame | None
    loss_map: LossMap | None = None
    endplates: tuple[EndplatePlane, EndplatePlane] | None = None
    thirds: dict[str, dict[str, list[float]]] | None = None
    grade_method: str = "thresholds"
    threshold_grade: int | None = None
    grade_probabilities: dict[int, float] | None = None
    #: reference heights of each part a learned reference combined (one per synthesis pass):
    #: the features a trained grader reads; not written to result.json
    reference_parts: Mapping[str, RegionHeights] = field(default_factory=dict)
    #: the central height loss (:func:`vertgrade.grading.central_loss`): where a biconcave
    #: depression is deepest, over a few millimetres of columns; its mean measured and reference
    #: heights there, and the point (world mm, between the endplates)
    central_rhlv: float | None = None
    central_height_mm: float | None = None
    central_reference_mm: float | None = None
    central_point_mm: tuple[float, float, float] | None = None
    #: the standard morphometric heights at the walls and the centre
    #: (:func:`vertgrade.morphometry.wall_heights`)
    walls_mm: WallHeights | None = None
    #: the within-vertebra evidence: ratios of the thirds' heights against the level's typical
    #: ones (:func:`vertgrade.grading.shape_evidence`)
    shape: ShapeEvidence | None = None
    #: what decided the grade (:attr:`vertgrade.grading.VertebraGrade.basis`)
    grade_basis: str | None = None

    def __post_init__(self) -> None:
        for name in ("rhlv", "heights_mm", "heights_mask_mm", "heights_ct_mm", "reference_mm"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, RegionValues):
                object.__setattr__(self, name, RegionValues.of(value))

    @property
    def fracture_type(self) -> FractureType | None:
        """The former name of :attr:`type` (read-only)."""
        return self.type

    def __repr__(self) -> str:
        head = f"VertebraResult({self.level}, label {self.label}"
        if self.status != "graded":
            reason = self.reason or "no reason given"
            if len(reason) > 60:
                reason = reason[:59] + "…"
            return f"{head}, not gradable: {reason})"
        grade = f"grade {self.grade}" + (f" {self.type}" if self.type else "")
        out = f"{head}, {grade}"
        if self.confidence is not None:
            out += f", confidence {round(self.confidence, CONFIDENCE_DECIMALS):.2f}"
        if self.rhlv is not None:
            thirds = (self.rhlv.anterior, self.rhlv.middle, self.rhlv.posterior)
            out += ", rhlv a/m/p " + "/".join("-" if x is None else f"{x:.2f}" for x in thirds)
        return out + ")"

    @property
    def grade_probability(self) -> float | None:
        """The classifier's probability of ``grade`` (None for threshold grades)."""
        if self.grade_probabilities is None or self.grade is None:
            return None
        return self.grade_probabilities.get(self.grade)

    def to_dict(self) -> dict[str, Any]:
        def heights(h: RegionValues | None) -> dict[str, float | None] | None:
            return None if h is None else {k: _r(v, 3) for k, v in h.as_dict().items()}

        return {
            "label": self.label,
            "level": self.level,
            "status": self.status,
            "reason": self.reason,
            "grade": self.grade,
            "type": self.type,
            "confidence": _r(self.confidence, CONFIDENCE_DECIMALS),
            "rhlv": None if self.rhlv is None else {k: _r(v, 4) for k, v in self.rhlv.items()},
            "heights_mm": heights(self.heights_mm),
            "heights_source": self.heights_source,
            "heights_mask_mm": heights(self.heights_mask_mm),
            "heights_ct_mm": heights(self.heights_ct_mm),
            "reference": {
                "method": self.reference_method,
                "heights_mm": heights(self.reference_mm),
                "sources": list(self.reference_sources),
                "uncertainty": _r(self.reference_uncertainty, 4),
                "support": reference_support(self.label, self.reference_sources),
            },
            "ratios": {k: _r(v, 4) for k, v in self.ratios.items()},
            "flags": list(self.flags),
            "hu_trabecular": _r(self.hu_trabecular, 1),
            "volume_ml": _r(self.volume_ml, 2),
            "width_mm": _r(self.width_mm, 1),
            "depth_mm": _r(self.depth_mm, 1),
            "centroid_mm": [round(float(x), 2) for x in self.centroid_mm],
            "frame": None if self.frame is None else self.frame.to_dict(),
            "loss_map": None if self.loss_map is None else self.loss_map.to_dict(),
            "endplates": None
            if self.endplates is None
            else {"superior": self.endplates[0].to_dict(), "inferior": self.endplates[1].to_dict()},
            "thirds": self.thirds,
            "grade_method": self.grade_method,
            "threshold_grade": self.threshold_grade,
            "grade_probabilities": None
            if self.grade_probabilities is None
            else {str(g): _r(p, 4) for g, p in sorted(self.grade_probabilities.items())},
            "morphometry": self._morphometry(),
            "grade_basis": self.grade_basis,
            "central": None
            if self.central_rhlv is None
            else {
                "rhlv": _r(self.central_rhlv, 4),
                "height_mm": _r(self.central_height_mm, 3),
                "reference_mm": _r(self.central_reference_mm, 3),
                "point_mm": None
                if self.central_point_mm is None
                else [round(float(x), 2) for x in self.central_point_mm],
            },
        }

    def _morphometry(self) -> dict[str, Any] | None:
        w, e = self.walls_mm, self.shape
        if w is None and e is None:
            return None
        out: dict[str, Any] = {"walls_mm": None, "wall_ratios": None, "shape": None}
        if w is not None:
            out["walls_mm"] = {k: _r(v, 3) for k, v in w.as_dict().items()}
            out["wall_ratios"] = {
                "anterior_posterior": _r(w.anterior / w.posterior, 4) if w.posterior else None,
                "middle_posterior": _r(w.middle / w.posterior, 4) if w.posterior else None,
            }
        if e is not None:
            out["shape"] = {k: _r(v, 4) for k, v in e.to_dict().items()}
        return out

    def to_record(self) -> dict[str, Any]:
        """One flat row (see :data:`CSV_COLUMNS`); missing values are ``None``."""
        h = self.heights_mm.as_dict() if self.heights_mm else dict.fromkeys(_REGION_KEYS)
        hm = self.heights_mask_mm.as_dict() if self.heights_mask_mm else dict.fromkeys(_REGION_KEYS)
        hc = self.heights_ct_mm.as_dict() if self.heights_ct_mm else dict.fromkeys(_REGION_KEYS)
        ref = self.reference_mm.as_dict() if self.reference_mm else dict.fromkeys(_REGION_KEYS)
        loss: Mapping[str, float | None] = self.rhlv or dict.fromkeys(_REGION_KEYS)
        row: dict[str, Any] = {
            "label": self.label,
            "level": self.level,
            "status": self.status,
            "grade": self.grade,
            "type": self.type,
            "rhlv": _r(loss["body"], 4),
            "rhlv_anterior": _r(loss["anterior"], 4),
            "rhlv_middle": _r(loss["middle"], 4),
            "rhlv_posterior": _r(loss["posterior"], 4),
            "height_anterior_mm": _r(h["anterior"], 2),
            "height_middle_mm": _r(h["middle"], 2),
            "height_posterior_mm": _r(h["posterior"], 2),
            "height_body_mm": _r(h["body"], 2),
            "heights_source": self.heights_source,
            "ref_height_anterior_mm": _r(ref["anterior"], 2),
            "ref_height_middle_mm": _r(ref["middle"], 2),
            "ref_height_posterior_mm": _r(ref["posterior"], 2),
            "mask_height_anterior_mm": _r(hm["anterior"], 2),
            "mask_height_middle_mm": _r(hm["middle"], 2),
            "mask_height_posterior_mm": _r(hm["posterior"], 2),
            "ct_height_anterior_mm": _r(hc["anterior"], 2),
            "ct_height_middle_mm": _r(hc["middle"], 2),
            "ct_height_posterior_mm": _r(hc["posterior"], 2),
            "ratio_anterior_posterior": _r(self.ratios.get("anterior_posterior"), 4),
            "ratio_middle_posterior": _r(self.ratios.get("middle_posterior"), 4),
            "confidence": _r(self.confidence, CONFIDENCE_DECIMALS),
            "flags": ";".join(self.flags),
            "reason": self.reason,
            "reference_sources": ";".join(self.reference_sources),
            "hu_trabecular": _r(self.hu_trabecular, 1),
            "volume_ml": _r(self.volume_ml, 2),
            "grade_method": self.grade_method,
            "threshold_grade": self.threshold_grade,
            "grade_probability": _r(self.grade_probability, 4),
            "rhlv_central": _r(self.central_rhlv, 4),
            "height_central_mm": _r(self.central_height_mm, 2),
            "ref_height_central_mm": _r(self.central_reference_mm, 2),
            "wall_height_anterior_mm": _r(self.walls_mm.anterior, 2) if self.walls_mm else None,
            "wall_height_middle_mm": _r(self.walls_mm.middle, 2) if self.walls_mm else None,
            "wall_height_posterior_mm": _r(self.walls_mm.posterior, 2) if self.walls_mm else None,
            "shape_wedge": _r(self.shape.wedge, 4) if self.shape else None,
            "shape_biconcave": _r(self.shape.biconcave, 4) if self.shape else None,
            "grade_basis": self.grade_basis,
        }
        return row


def reference_support(label: int, sources: tuple[str, ...]) -> dict[str, Any] | None:
    """What a neighbour reference rests on: its source levels above and below ``label`` and
    the distance (levels) to the nearest; None where the sources are not levels (a model).

    >>> reference_support(20, ("T12", "L2"))
    {'above': ['T12'], 'below': ['L2'], 'nearest_levels': 1.0}
    >>> reference_support(20, ("L2", "L3"))["above"], reference_support(20, ("synthesis-x",))
    ([], None)
    """
    if not sources:
        return None
    try:
        keys = {s: order_key(label_id(s)) for s in sources}
    except ValueError:
        return None
    here = order_key(label)
    return {
        "above": [s for s, k in keys.items() if k < here],
        "below": [s for s, k in keys.items() if k > here],
        "nearest_levels": float(min(abs(k - here) for k in keys.values())),
    }


def _r(v: float | None, nd: int) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if not math.isfinite(f) else round(f, nd) + 0.0  # never -0.0


def _empty_record() -> dict[str, Any]:
    """The row of a vertebra with nothing measured: its keys are the CSV columns."""
    empty = VertebraResult(
        label=0,
        level="",
        status="not_gradable",
        reason=None,
        grade=None,
        type=None,
        confidence=None,
        rhlv=None,
        heights_mm=None,
        heights_source=None,
        heights_mask_mm=None,
        heights_ct_mm=None,
        reference_mm=None,
        reference_method="",
        reference_sources=(),
        reference_uncertainty=None,
        ratios={},
        flags=(),
        hu_trabecular=None,
        volume_ml=None,
        width_mm=None,
        depth_mm=None,
        centroid_mm=(0.0, 0.0, 0.0),
        frame=None,
    )
    return empty.to_record()


#: Columns of ``vertebrae.csv``, in order: the keys of :meth:`VertebraResult.to_record`.
CSV_COLUMNS: tuple[str, ...] = tuple(_empty_record())


@dataclass(frozen=True)
class SpineResult:
    """The graded study.

    ``bodies`` is the isolated-body label map on the canonical grid (``grid`` maps it back onto
    the input CT's grid); ``centreline_mm`` is the spine's centreline through the final frames'
    origins, sampled every 2 mm (world RAS+ mm, cranial first); ``provenance`` holds inputs with
    checksums, parameters and versions; ``alignment`` the spinal alignment measured from the
    endplates (:func:`vertgrade.pipeline.measure_alignment`).
    ``timings_s`` (not written to JSON, so that reruns give identical files) has the seconds spent
    per stage.

    It is a read-only collection of ``vertebrae``, cranial to caudal: ``for v in result``,
    ``len(result)``, ``result[20]`` (by VerSe label id: 20 is L1) and ``result["l1"]`` (by level
    name, any case); a vertebra that is not there raises a ``KeyError`` that lists those that
    are. ``vertgrade.write_result(result, folder)`` writes the result folder.
    """

    subject: str
    vertebrae: tuple[VertebraResult, ...]
    provenance: dict[str, Any]
    notes: tuple[str, ...]
    bodies: NDArray[np.uint8] = field(repr=False)
    bodies_affine: NDArray[np.float64] = field(repr=False)
    grid: GridInfo = field(repr=False)
    centreline_mm: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    alignment: Alignment | None = field(default=None, repr=False)
    timings_s: dict[str, float] = field(default_factory=dict, compare=False)

    def __iter__(self) -> Iterator[VertebraResult]:
        return iter(self.vertebrae)

    def __len__(self) -> int:
        return len(self.vertebrae)

    def __getitem__(self, key: int | str) -> VertebraResult:
        """The vertebra of a VerSe label id (``20``) or a level name (``"L1"``, any case)."""
        if isinstance(key, str):
            try:
                label = label_id(key)
            except ValueError:
                raise KeyError(f"{key!r} is not a level name; {self._holds()}") from None
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            label = int(key)
        else:
            raise TypeError(
                "a SpineResult is indexed by VerSe label id (int: 20 is L1) or level name "
                f"(str: 'L1'), not by {type(key).__name__}; iterate it for all vertebrae"
            )
        for v in self.vertebrae:
            if v.label == label:
                return v
        raise KeyError(f"no vertebra {key!r} in {self.subject!r}; {self._holds()}")

    def __contains__(self, key: object) -> bool:
        if isinstance(key, VertebraResult):
            return key in self.vertebrae
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def _holds(self) -> str:
        if not self.vertebrae:
            return "it holds no vertebra"
        levels = ", ".join(f"{v.level} ({v.label})" for v in self.vertebrae)
        return f"it holds {levels}"

    def __repr__(self) -> str:
        s = self.summary
        levels = [v.level for v in self.vertebrae]
        span = f" {levels[0]}-{levels[-1]}" if len(levels) > 1 else "".join(f" {x}" for x in levels)
        fractured = ", ".join(
            f"{v.level} grade {v.grade}" + (f" {v.type}" if v.type else "")
            for v in self.vertebrae
            if v.status == "graded" and (v.grade or 0) >= 1
        )
        return (
            f"SpineResult({self.subject!r}, {s['n_vertebrae']} vertebrae{span}, "
            f"{s['n_graded']} graded, {s['n_not_gradable']} not gradable, "
            f"fractured: {fractured or 'none'})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "subject": self.subject,
            "summary": self.summary,
            "vertebrae": [v.to_dict() for v in self.vertebrae],
            "centreline_mm": [[round(float(x), 2) for x in p] for p in self.centreline_mm],
            "alignment": None if self.alignment is None else self.alignment.to_dict(),
            "notes": list(self.notes),
            "provenance": self.provenance,
            "qc_flags": QC_FLAGS,
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One flat row per vertebra (the rows of ``vertebrae.csv``, :data:`CSV_COLUMNS`)."""
        return [v.to_record() for v in self.vertebrae]

    def to_frame(self) -> pd.DataFrame:
        """The rows of :meth:`to_records` as a pandas DataFrame, one row per vertebra, the
        columns :data:`CSV_COLUMNS` in order; missing values are NaN in numeric columns.

        Raises
        ------
        ImportError
            pandas is not installed (``pip install pandas``, or the ``cohort`` extra).
        """
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "SpineResult.to_frame() needs pandas, which is not installed: "
                "pip install pandas (or pip install 'vertgrade[cohort]'); "
                "result.to_records() gives the same rows as dicts"
            ) from err
        return pd.DataFrame(self.to_records(), columns=list(CSV_COLUMNS))

    @property
    def summary(self) -> dict[str, Any]:
        """Counts and the fractured levels: ``n_vertebrae``, ``n_graded``, ``n_not_gradable``,
        ``fractured_levels`` (graded >= 1, cranial first) and ``worst_grade`` (None if none is
        graded); a fresh dict on each access, as ``result.json`` holds it."""
        graded = [v for v in self.vertebrae if v.status == "graded"]
        worst = max((v.grade or 0 for v in graded), default=None)
        return {
            "n_vertebrae": len(self.vertebrae),
            "n_graded": len(graded),
            "n_not_gradable": len(self.vertebrae) - len(graded),
            "fractured_levels": [v.level for v in graded if (v.grade or 0) >= 1],
            "worst_grade": worst,
        }
