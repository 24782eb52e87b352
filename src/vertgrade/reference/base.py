"""The interface every healthy-reference estimator implements.

An estimator receives every measured vertebra of a study and returns, for each one it can, the
expected *healthy* (pre-fracture) heights and height map. The neighbour estimator
(:mod:`vertgrade.reference.neighbours`) needs no training; a learned generator plugs in beside it
by implementing the same :class:`ReferenceEstimator` protocol. Everything after the reference
(RHLV, grading) is one code path whichever estimator produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from vertgrade.geometry.frames import LocalFrame
from vertgrade.morphometry import HeightMap, RegionHeights
from vertgrade.regions import FootprintRegions

__all__ = ["MeasuredVertebra", "Reference", "ReferenceEstimator"]


@dataclass(frozen=True)
class MeasuredVertebra:
    """What an estimator may use of one vertebra.

    ``heights`` are the primary measured heights (CT-refined where available). ``usable`` is
    False for vertebrae whose measurement cannot be trusted (cut by the field of view, no body);
    such vertebrae are neither graded nor used as neighbours. ``frame`` is the local frame the
    vertebra was measured in (its footprint grid's ``ap``/``lr`` axes and the ``si`` of
    ``height_map``): an estimator that works in world coordinates (a learned synthesis) maps the
    columns through it.
    """

    label: int
    heights: RegionHeights | None
    height_map: HeightMap | None
    heights_map_mm: NDArray[np.float64] | None
    regions: FootprintRegions | None
    usable: bool
    frame: LocalFrame | None = None


@dataclass(frozen=True)
class Reference:
    """The expected healthy state of one vertebra.

    Attributes
    ----------
    heights : RegionHeights or None
        Expected healthy heights (mm); ``None`` when there is no usable reference.
    height_map_mm : (A, L) ndarray or None
        Expected healthy height at each column of the vertebra's own footprint grid.
    sources : tuple of str
        What the estimate came from (level names of neighbours, or a model's name).
    uncertainty : float
        Relative standard uncertainty of the reference heights (0.03 = 3 %).
    reason : str or None
        Why there is no reference, when ``heights`` is None.
    """

    heights: RegionHeights | None
    height_map_mm: NDArray[np.float64] | None
    sources: tuple[str, ...]
    uncertainty: float
    reason: str | None = None


@runtime_checkable
class ReferenceEstimator(Protocol):
    """Estimates the healthy reference of every vertebra of a study."""

    @property
    def name(self) -> str:
        """Short name recorded in results (``"neighbours"``, a model's name)."""
        ...

    def estimate(self, vertebrae: Sequence[MeasuredVertebra]) -> dict[int, Reference]:
        """Reference per label, for every vertebra in ``vertebrae``."""
        ...
