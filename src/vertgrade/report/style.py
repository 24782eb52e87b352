"""The fixed colours and display windows of every output, named once.

The figures (:mod:`vertgrade.report.figures`), the HTML page (:mod:`vertgrade.report.html`) and
the DICOM Segmentation (:mod:`vertgrade.report.dicom`) all colour a vertebra by its Genant grade
from one table, :data:`GRADE_COLOURS` (hex strings, as matplotlib and CSS take them); the RGB
triples of DICOM (:func:`grade_rgb`) and the CSS custom properties of the page
(:func:`grade_css_variables`) are derived from it.

Examples
--------
>>> grade_colour(2), grade_colour(None)
('#f07f13', '#9a9a9a')
>>> grade_rgb(0), grade_rgb(None)
((46, 157, 69), (154, 154, 154))
>>> grade_css_variables()
'--g0: #2e9d45; --g1: #f2c200; --g2: #f07f13; --g3: #d7263d; --gna: #9a9a9a;'

A confidence is shown one way in every output (:func:`confidence_text`): rounded once with
Python's ``round(value, 2)`` and written with two decimals.

>>> confidence_text(0.295), confidence_text(1.0), confidence_text(None)
('0.29', '1.00', 'n/a')
"""

from __future__ import annotations

import math

__all__ = [
    "ALIGNMENT_COLOURS",
    "CT_WINDOW_HU",
    "GRADE_COLOURS",
    "LOSS_ABOVE_COLOUR",
    "LOSS_BELOW_COLOUR",
    "LOSS_RANGE_PCT",
    "LOSS_ZERO_COLOUR",
    "MEASURED_COLOUR",
    "OTHER_BODY_COLOUR",
    "REFERENCE_COLOUR",
    "confidence_text",
    "grade_colour",
    "grade_css_variables",
    "grade_rgb",
]

# --- constants ----------------------------------------------------------------------------------

#: Colour of each Genant grade (0 green, 1 yellow, 2 orange, 3 red); ``None``: not gradable.
GRADE_COLOURS: dict[int | None, str] = {
    0: "#2e9d45",
    1: "#f2c200",
    2: "#f07f13",
    3: "#d7263d",
    None: "#9a9a9a",
}

#: CT display window (HU, low and high): level 300, width 1200. A bone window narrowed so that
#: trabecular bone (100-250 HU) is mid-grey, cortex and endplates (> 600 HU) white, discs and soft
#: tissue (40-100 HU) dark grey: the endplates stand out against the discs.
CT_WINDOW_HU: tuple[float, float] = (-300.0, 900.0)

#: Measured heights on a vertebra's sagittal slice (cyan, visible on grey CT and on every grade
#: outline).
MEASURED_COLOUR = "#00d5f5"
#: Reference (expected) heights: a pale band behind the measured line.
REFERENCE_COLOUR = "#d8f7ff"
#: Outlines of the neighbouring bodies on a vertebra's slice.
OTHER_BODY_COLOUR = "#b5b5b5"

#: Range (%) of the height-loss map's colour scale: negative losses (taller than the reference)
#: are blue, the grade thresholds take the grade colours.
LOSS_RANGE_PCT: tuple[float, float] = (-20.0, 60.0)
#: The loss map's colour at the low end of :data:`LOSS_RANGE_PCT` (taller than the reference).
LOSS_BELOW_COLOUR = "#3b6fb6"
#: The loss map's colour at 0 % (the reference height).
LOSS_ZERO_COLOUR = "#f7f7f7"
#: The loss map's colour at the high end of :data:`LOSS_RANGE_PCT` (beyond grade 3).
LOSS_ABOVE_COLOUR = "#5c0a16"

#: Endplate lines of the alignment figure, one colour per curve (coronal) or angle (sagittal:
#: kyphosis, then lordosis): none of them a grade colour, all visible on grey CT.
ALIGNMENT_COLOURS: tuple[str, ...] = ("#ff4fd8", "#4fc3ff", "#ffffff")

# CSS custom property of each grade in the report's style sheet (``var(--g0)`` ...).
_CSS_NAMES: dict[int | None, str] = {0: "g0", 1: "g1", 2: "g2", 3: "g3", None: "gna"}


def grade_colour(grade: int | None) -> str:
    """Colour of a Genant grade as a hex string (``None`` or an unknown grade: not gradable).

    >>> grade_colour(3)
    '#d7263d'
    """
    return GRADE_COLOURS.get(grade, GRADE_COLOURS[None])


def grade_rgb(grade: int | None) -> tuple[int, int, int]:
    """Colour of a Genant grade as an 8-bit RGB triple (for DICOM display colours).

    >>> grade_rgb(3)
    (215, 38, 61)
    """
    hex_colour = grade_colour(grade)
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return r, g, b


def grade_css_variables() -> str:
    """The CSS custom properties of the grade colours, for the report's ``:root`` rule.

    >>> grade_css_variables().split("; ")[0]
    '--g0: #2e9d45'
    """
    return " ".join(f"--{_CSS_NAMES[g]}: {c};" for g, c in GRADE_COLOURS.items())


def confidence_text(value: float | None) -> str:
    """A grade's confidence as every output shows it: ``round(value, 2)`` with two decimals;
    ``"n/a"`` for ``None`` or a value that is not finite.

    Rounding happens once, here, from the value as the result holds it: ``0.295`` gives
    ``0.29`` (Python rounds the binary value, which lies just below 0.295).

    >>> confidence_text(0.8749), confidence_text(0.875), confidence_text(float("nan"))
    ('0.87', '0.88', 'n/a')
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{round(float(value), 2):.2f}"
