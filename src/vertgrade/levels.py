"""The vertebra label table: label id <-> level name, anatomical order and neighbours.

vertgrade speaks the VerSe numbering inside (Sekuboyina et al., Medical Image Analysis 2021):
1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6, 26 sacrum (S1), 28 T13 (between T12 and L1).
Conversions between label ids (``int``) and level names (``str``) happen here and nowhere else.

Examples
--------
>>> level_name(20)
'L1'
>>> label_id("T13")
28
>>> [level_name(v) for v in anatomical_order([20, 28, 19])]
['T12', 'T13', 'L1']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GRADABLE_LABELS",
    "NORMATIVE_HEIGHTS_MM",
    "SPINAL_REGIONS",
    "VERSE_LABELS",
    "VERTEBRA_SCT_CODES",
    "NormativeShape",
    "anatomical_order",
    "label_id",
    "level_name",
    "normative_shape",
    "order_key",
    "parse_level_range",
    "region_of",
    "spinal_region_of",
    "totalseg_total_to_verse",
    "typical_ratios",
]

#: VerSe label id -> level name.
VERSE_LABELS: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i + 7: f"T{i}" for i in range(1, 13)},
    **{i + 19: f"L{i}" for i in range(1, 6)},
    25: "L6",
    26: "S1",
    28: "T13",
}
_NAME_TO_LABEL = {name: label for label, name in VERSE_LABELS.items()}

#: Labels whose bodies vertgrade grades: T1-L6 (and T13). Cervical vertebrae and the sacrum are
#: used as neighbours and for the centreline but are not graded: osteoporotic compression
#: fractures are a thoracolumbar disease and Genant's method is defined for T4-L4 (Genant et al.,
#: J Bone Miner Res 1993); T1-T3 and L5 are graded too, with their level-typical shape.
GRADABLE_LABELS: frozenset[int] = frozenset([*range(8, 26), 28])

#: SNOMED CT codes of the vertebrae (DICOM CID 7602 "Vertebral Anatomic Structure"), by VerSe
#: label: ``(code value, code meaning)``. S1 (label 26, the sacrum in VerSe) is coded as the
#: sacrum (54735007). T13 and L6 have no code there.
VERTEBRA_SCT_CODES: dict[int, tuple[str, str]] = {
    1: ("14806007", "C1 vertebra"),
    2: ("39976000", "C2 vertebra"),
    3: ("113205007", "C3 vertebra"),
    4: ("5329002", "C4 vertebra"),
    5: ("36978003", "C5 vertebra"),
    6: ("36054005", "C6 vertebra"),
    7: ("87391001", "C7 vertebra"),
    8: ("64864005", "T1 vertebra"),
    9: ("53733008", "T2 vertebra"),
    10: ("1626008", "T3 vertebra"),
    11: ("73071006", "T4 vertebra"),
    12: ("56401006", "T5 vertebra"),
    13: ("45296009", "T6 vertebra"),
    14: ("62487009", "T7 vertebra"),
    15: ("11068009", "T8 vertebra"),
    16: ("82687006", "T9 vertebra"),
    17: ("7610001", "T10 vertebra"),
    18: ("12989004", "T11 vertebra"),
    19: ("23215003", "T12 vertebra"),
    20: ("66794005", "L1 vertebra"),
    21: ("14293000", "L2 vertebra"),
    22: ("36470004", "L3 vertebra"),
    23: ("11994002", "L4 vertebra"),
    24: ("49668003", "L5 vertebra"),
    26: ("54735007", "Sacrum"),
}

# Order along the spine, cranial to caudal. T13 sits between T12 (19) and L1 (20).
_ORDER: dict[int, float] = {label: float(label) for label in VERSE_LABELS}
_ORDER[28] = 19.5


def level_name(label: int) -> str:
    """Level name (``"L1"``) of a VerSe label id; ``ValueError`` outside the convention."""
    try:
        return VERSE_LABELS[int(label)]
    except KeyError:
        raise ValueError(
            f"label {label} is outside the VerSe convention (1-7 C1-C7, 8-19 T1-T12, "
            "20-24 L1-L5, 25 L6, 26 S1, 28 T13)"
        ) from None


def label_id(name: str) -> int:
    """VerSe label id of a level name such as ``"T12"`` (case-insensitive)."""
    key = name.strip().upper()
    if key not in _NAME_TO_LABEL:
        raise ValueError(f"unknown vertebra level {name!r}; expected e.g. T12 or L1")
    return _NAME_TO_LABEL[key]


def order_key(label: int) -> float:
    """Position along the spine (larger is more caudal), T13 between T12 and L1."""
    return _ORDER[int(label)]


def anatomical_order(labels: list[int] | tuple[int, ...] | set[int]) -> list[int]:
    """The labels sorted cranial to caudal."""
    return sorted((int(v) for v in labels), key=order_key)


def region_of(label: int) -> Literal["cervical", "thoracic", "lumbar", "sacral"]:
    """Anatomical region of a label, by the letter of its level name: C, T, L or S.

    Every label has one (T13 is thoracic, L6 lumbar). This is the plain anatomical division;
    the evaluation's scopes are :data:`SPINAL_REGIONS` (:func:`spinal_region_of`), which split
    the thoracolumbar junction T11-L2 off the thoracic and lumbar spine and leave the cervical
    spine and the sacrum out.

    >>> region_of(18), region_of(20), region_of(28)
    ('thoracic', 'lumbar', 'thoracic')
    """
    name = level_name(label)
    return {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}[name[0]]  # type: ignore[return-value]


#: The spinal regions of the evaluation's breakdown (``vertgrade evaluate``; see
#: ``docs/evaluation.md``), as inclusive level ranges. The split is the clinical one of the
#: spine-fracture literature: the thoracolumbar junction T11-L2, where the stiff, rib-bound
#: thoracic spine meets the mobile lumbar spine, is where osteoporotic and traumatic compression
#: fractures cluster, and is reported apart from the thoracic (T1-T10) and the lumbar (L3-L5)
#: spine. T13 falls in the thoracolumbar region and L6 in the lumbar one by their position along
#: the spine (:func:`order_key`). Unlike :func:`region_of`, cervical vertebrae and the sacrum
#: are in none of them (they are not graded, :data:`GRADABLE_LABELS`).
SPINAL_REGIONS: dict[str, tuple[str, str]] = {
    "thoracic": ("T1", "T10"),
    "thoracolumbar": ("T11", "L2"),
    "lumbar": ("L3", "L6"),
}


def spinal_region_of(label: int) -> str | None:
    """The region of :data:`SPINAL_REGIONS` a label falls in (by position along the spine).

    Not :func:`region_of`: this is the evaluation's thoracic / thoracolumbar / lumbar split,
    with the junction T11-L2 on its own; ``None`` for a cervical vertebra or the sacrum.

    >>> [spinal_region_of(label_id(n)) for n in ("T10", "T11", "T13", "L2", "L3", "L6", "S1")]
    ['thoracic', 'thoracolumbar', 'thoracolumbar', 'thoracolumbar', 'lumbar', 'lumbar', None]
    """
    pos = order_key(label)
    for name, (first, last) in SPINAL_REGIONS.items():
        if order_key(label_id(first)) <= pos <= order_key(label_id(last)):
            return name
    return None


def parse_level_range(text: str) -> list[int]:
    """Labels of a range such as ``"T10-L3"`` (inclusive, anatomical order, no T13/L6).

    >>> [level_name(v) for v in parse_level_range("T11-L2")]
    ['T11', 'T12', 'L1', 'L2']
    """
    parts = [p for p in text.replace(" ", "").split("-") if p]
    if len(parts) == 1:
        return [label_id(parts[0])]
    if len(parts) != 2:
        raise ValueError(f"level range {text!r} is not of the form T10-L3")
    a, b = label_id(parts[0]), label_id(parts[1])
    lo, hi = sorted((a, b), key=order_key)
    return [v for v in range(1, 25) if order_key(lo) <= order_key(v) <= order_key(hi)]


def totalseg_total_to_verse(class_id: int) -> int | None:
    """VerSe label of a class of TotalSegmentator's ``total`` task (v2 class map), else ``None``.

    In that map, 26 is vertebrae_S1, 27-31 are L5-L1, 32-43 are T12-T1 and 44-50 are C7-C1.

    >>> totalseg_total_to_verse(31), totalseg_total_to_verse(26), totalseg_total_to_verse(5)
    (20, 26, None)
    """
    if class_id == 26:
        return 26
    if 27 <= class_id <= 50:
        return 51 - class_id
    return None


@dataclass(frozen=True)
class NormativeShape:
    """Typical healthy heights of one level, in mm (anterior, middle, posterior)."""

    anterior_mm: float
    middle_mm: float
    posterior_mm: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.anterior_mm, self.middle_mm, self.posterior_mm)


#: Typical healthy vertebral body heights (anterior, posterior) in mm by level. Rounded from the
#: direct anatomical measurements of Panjabi et al., Spine 1991 (thoracic, 16(8):888-901) and
#: Spine 1992 (lumbar, 17(3):299-306), smoothed over levels. Only their *ratios* between levels and
#: between anterior and posterior matter to vertgrade: they carry the level-typical shape
#: (thoracic bodies are wedged, anterior < posterior; lumbar bodies are taller anteriorly, most of
#: all L5) from a healthy neighbour to the vertebra being graded. The middle height is taken as
#: 0.96 of the mean of both, for the mild physiological concavity of the endplates.
NORMATIVE_HEIGHTS_MM: dict[int, tuple[float, float]] = {
    1: (12.0, 12.5),
    2: (12.5, 12.5),
    3: (12.5, 12.5),
    4: (12.5, 12.5),
    5: (12.5, 12.5),
    6: (12.0, 12.0),
    7: (13.0, 13.5),
    8: (14.5, 15.5),
    9: (15.5, 16.5),
    10: (16.0, 17.0),
    11: (16.3, 17.5),
    12: (16.6, 18.0),
    13: (17.0, 18.5),
    14: (17.6, 19.0),
    15: (18.3, 19.6),
    16: (19.0, 20.3),
    17: (20.0, 21.2),
    18: (21.2, 22.4),
    19: (22.6, 23.6),
    28: (23.5, 24.3),
    20: (24.3, 25.0),
    21: (25.2, 25.3),
    22: (25.8, 25.0),
    23: (26.2, 24.2),
    24: (26.8, 22.6),
    25: (26.8, 22.6),
    26: (28.0, 22.0),
}
_MIDDLE_FACTOR = 0.96


def normative_shape(label: int) -> NormativeShape:
    """Typical healthy heights of a level (see :data:`NORMATIVE_HEIGHTS_MM`).

    >>> t12, l5 = normative_shape(19), normative_shape(24)
    >>> t12.anterior_mm < t12.posterior_mm, l5.anterior_mm > l5.posterior_mm
    (True, True)
    """
    ant, post = NORMATIVE_HEIGHTS_MM[int(label)]
    return NormativeShape(ant, _MIDDLE_FACTOR * 0.5 * (ant + post), post)


def typical_ratios(label: int) -> tuple[float, float]:
    """A level's typical within-vertebra height ratios: (anterior / posterior, middle / posterior)
    of the thirds' heights, from :data:`NORMATIVE_HEIGHTS_MM`.

    The anterior-to-posterior ratio is Panjabi's anatomical wedge. Masharawi et al. (Eur Spine J
    2010;19:768-73, 240 CT scans, T9-L5) measured the same pattern as sagittal wedging angles:
    ventral wedging of about 3-5 degrees from T9 to T12, falling through L1-L2 to dorsal wedging
    from L3 down, about -8 degrees (women) and -5 degrees (men) at L5. Over a 30 mm deep body of
    25 mm posterior height those angles give ratios of about 0.90 at T11 and 1.12-1.16 at L5,
    against Panjabi's 0.95 and 1.19 here. On the real cases of the validation page the healthy
    vertebrae's measured ratios lie within 0.13 of these values (most within 0.05), so a
    deviation of 20 % (a Genant grade 1) is beyond the normal spread of a level's shape.

    >>> [round(r, 3) for r in typical_ratios(19)], [round(r, 3) for r in typical_ratios(24)]
    ([0.958, 0.94], [1.186, 1.049])
    """
    s = normative_shape(label)
    return s.anterior_mm / s.posterior_mm, s.middle_mm / s.posterior_mm
