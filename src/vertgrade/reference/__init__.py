"""Healthy-reference estimators."""

from vertgrade.reference.base import MeasuredVertebra, Reference, ReferenceEstimator
from vertgrade.reference.neighbours import NeighbourReference

__all__ = ["MeasuredVertebra", "NeighbourReference", "Reference", "ReferenceEstimator"]
