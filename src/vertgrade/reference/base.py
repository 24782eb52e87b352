"""The interface every healthy-reference estimator implements.

An estimator receives every measured vertebra of a study, and a :class:`ReferenceContext` with
what else of the study it may need (the study itself, the isolated bodies, the training-free
references), and returns, for each vertebra it can, the expected *healthy* (pre-fracture)
heights and height map. It is a function of its arguments: it never runs the pipeline and keeps
no state between calls. The neighbour estimator (:mod:`vertgrade.reference.neighbours`) needs no
training; a learned generator (:class:`vertgrade.synthesis.reference.SynthesisReference`) plugs
in beside it through the same :class:`ReferenceEstimator` protocol. Everything after the
reference (RHLV, grading) is one code path whichever estimator produced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from vertgrade.geometry.frames import LocalFrame
from vertgrade.geometry.thirds import FootprintThirds
from vertgrade.morphometry import HeightMap, RegionHeights
from vertgrade.study import Study

__all__ = ["MeasuredVertebra", "Reference", "ReferenceContext", "ReferenceEstimator"]


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
    regions: FootprintThirds | None
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
    parts : mapping of str to RegionHeights
        Reference heights of each part the estimate was combined from (a learned synthesis: one
        per pass), for classifiers that grade from them; empty for the neighbour reference.
    flags : tuple of str
        QC flags (:class:`vertgrade.qc.QCFlag` names) the estimator raises about this reference
        (it rests on one vertebra, few healthy vertebrae ...); grading adds them.
    """

    heights: RegionHeights | None
    height_map_mm: NDArray[np.float64] | None
    sources: tuple[str, ...]
    uncertainty: float
    reason: str | None = None
    parts: Mapping[str, RegionHeights] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReferenceContext:
    """What of the study an estimator may use besides the measured vertebrae.

    Attributes
    ----------
    study : Study
        The study being graded (its CT, labels and grid).
    bodies : (I, J, K) integer ndarray
        The isolated vertebral bodies on the study's canonical grid, labelled by vertebra.
    neighbour_references : mapping of int to Reference
        The training-free (neighbour) reference of each vertebra of the same measurement: a
        learned estimator's prior and fallback.
    """

    study: Study
    bodies: NDArray[np.integer]
    neighbour_references: Mapping[int, Reference]


@runtime_checkable
class ReferenceEstimator(Protocol):
    """Estimates the healthy reference of every vertebra of a study."""

    @property
    def name(self) -> str:
        """Short name recorded in results (``"neighbours"``, a model's name)."""
        ...

    def estimate(
        self, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext | None = None
    ) -> dict[int, Reference]:
        """Reference per label, for every vertebra in ``vertebrae``.

        ``context`` is given by :func:`vertgrade.grade_study`; an estimator that needs it raises
        ``ValueError`` without it.
        """
        ...
