"""Healthy-reference estimators: the interface, and the training-free neighbour reference.

The learned reference (:class:`vertgrade.synthesis.reference.SynthesisReference`) lives with the
rest of the learned add-on in :mod:`vertgrade.synthesis`.
"""

from vertgrade.reference.base import (
    MeasuredVertebra,
    Reference,
    ReferenceContext,
    ReferenceEstimator,
)
from vertgrade.reference.neighbours import NeighbourReference

__all__ = [
    "MeasuredVertebra",
    "NeighbourReference",
    "Reference",
    "ReferenceContext",
    "ReferenceEstimator",
]
