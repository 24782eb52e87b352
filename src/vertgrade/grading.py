"""Relative height loss (RHLV), Genant grade, morphological type and confidence.

``RHLV = (H_ref - H) / H_ref`` for the whole body and for each third. The Genant
semi-quantitative grade follows from the largest regional loss by the published thresholds
(Genant et al., J Bone Miner Res 1993;8:1137-48): below 20 % normal (0), 20-25 % mild (1),
25-40 % moderate (2), 40 % and more severe (3). The type follows from where the loss is:
anterior (wedge), middle (biconcave) or throughout, posterior wall included (crush).

Examples
--------
>>> genant_grade(0.19), genant_grade(0.2), genant_grade(0.3), genant_grade(0.45)
(0, 1, 2, 3)
>>> fracture_type(anterior=0.35, middle=0.2, posterior=0.05)
'wedge'
>>> fracture_type(anterior=0.1, middle=0.3, posterior=0.08)
'biconcave'
>>> fracture_type(anterior=0.3, middle=0.31, posterior=0.28)
'crush'
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "GENANT_THRESHOLDS",
    "FractureType",
    "fracture_type",
    "genant_grade",
    "grade_probability",
    "rhlv",
]

#: Lower bounds of grades 1, 2 and 3 on the relative height loss (Genant 1993).
GENANT_THRESHOLDS: tuple[float, float, float] = (0.20, 0.25, 0.40)

#: A fracture is a crush when the posterior loss is at least this share of the largest loss.
CRUSH_POSTERIOR_SHARE = 0.8

FractureType = Literal["wedge", "biconcave", "crush"]


def rhlv(measured_mm: float | None, reference_mm: float | None) -> float | None:
    """Relative height loss ``(ref - measured) / ref``; ``None`` when either is missing."""
    if measured_mm is None or reference_mm is None or not reference_mm > 0:
        return None
    return (reference_mm - measured_mm) / reference_mm


def genant_grade(loss: float, thresholds: tuple[float, float, float] = GENANT_THRESHOLDS) -> int:
    """Genant grade 0-3 of a relative height loss (a fraction)."""
    return sum(loss >= t for t in thresholds)


def fracture_type(*, anterior: float, middle: float, posterior: float) -> FractureType:
    """Morphological type from the regional losses of a fractured vertebra.

    crush: the posterior third lost at least 80 % as much as the worst third (the whole body
    collapsed); otherwise biconcave when the middle lost more than the anterior third, else wedge.
    """
    worst = max(anterior, middle, posterior)
    if posterior >= CRUSH_POSTERIOR_SHARE * worst:
        return "crush"
    if middle > anterior:
        return "biconcave"
    return "wedge"


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def grade_probability(
    loss: float, sigma: float, thresholds: tuple[float, float, float] = GENANT_THRESHOLDS
) -> float:
    """Probability that the true loss lies in the same grade as ``loss``, if the measured loss
    is the true one plus Gaussian error of standard deviation ``sigma`` (a fraction).

    >>> round(grade_probability(0.32, 0.02), 3), round(grade_probability(0.205, 0.02), 3)
    (1.0, 0.586)
    """
    g = genant_grade(loss, thresholds)
    edges = (-math.inf, *thresholds, math.inf)
    lo, hi = edges[g], edges[g + 1]
    if sigma <= 0:
        return 1.0
    return _phi((hi - loss) / sigma) - _phi((lo - loss) / sigma)
