"""The parameters of segmentation QA, each with its source (``docs/seg-qa.md``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["SegQAConfig"]


@dataclass(frozen=True)
class SegQAConfig:
    """Parameters of :func:`~vertgrade.segqa.compare_case` and the study-level calls.

    Attributes
    ----------
    identification_radius_mm : float
        A predicted centroid further than this from the true centroid of its label does not
        identify the vertebra: 20 mm, the VerSe benchmark's radius (Sekuboyina et al., Medical
        Image Analysis 2021), taken from Glocker et al. (MICCAI 2013). A distance of exactly
        20 mm identifies, as in VerSe's published ``get_hits``.
    hd_percentile : float
        The percentile of the robust Hausdorff distance (``hd95_mm``): 95, the usual choice
        (the Medical Segmentation Decathlon, MONAI's ``HausdorffDistanceMetric(percentile=95)``).
    majority_fraction : float
        A predicted label "mostly overlaps" a true label (its ``best_truth_label``, which gives
        its ``level_offset``), and a true vertebra is "mostly covered" by a predicted label, when
        more than this fraction of its voxels lie in the other: 0.5, a strict majority.
    split_fraction : float
        A true vertebra is ``split`` when at least two predicted labels each cover this
        fraction of its voxels: 0.25 (a quarter: a boundary that is merely off by a few voxels
        never reaches it, a vertebra cut in two does).
    shift_share : float
        The study's labels are ``shifted`` by ``k`` levels when more than this share of the
        predicted vertebrae that meet a true vertebra sit ``k`` levels from it (``k != 0``):
        0.5, a strict majority, so that one wrong vertebra is a local error, not a shift.
    ci_level : float
        Level of the patient-bootstrap intervals of a cohort's means: 0.95.
    """

    identification_radius_mm: float = 20.0
    hd_percentile: float = 95.0
    majority_fraction: float = 0.5
    split_fraction: float = 0.25
    shift_share: float = 0.5
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        checks = {
            "identification_radius_mm": (0.0, math.inf),
            "hd_percentile": (0.0, 100.0),
            "majority_fraction": (0.0, 1.0),
            "split_fraction": (0.0, 1.0),
            "shift_share": (0.0, 1.0),
            "ci_level": (0.0, 1.0),
        }
        for name, (lo, hi) in checks.items():
            value = float(getattr(self, name))
            if not (math.isfinite(value) and lo < value and (value <= hi or hi == math.inf)):
                raise ValueError(f"{name} must lie in ({lo:g}, {hi:g}], got {value!r}")
            object.__setattr__(self, name, value)
        if self.ci_level >= 1.0:
            raise ValueError(f"ci_level must lie in (0, 1), got {self.ci_level!r}")

    def to_dict(self) -> dict[str, float]:
        """The parameters, JSON-ready.

        >>> SegQAConfig().to_dict()["identification_radius_mm"]
        20.0
        """
        return asdict(self)
