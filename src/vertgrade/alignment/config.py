"""The parameters of the alignment measurement."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["AlignmentConfig"]


@dataclass(frozen=True)
class AlignmentConfig:
    """Parameters of :func:`~vertgrade.alignment.alignment_from_endplates` (and
    :func:`vertgrade.pipeline.measure_alignment`).

    Attributes
    ----------
    min_cobb_deg : float
        Smallest coronal curve reported, and the hysteresis that separates curves: 10 degrees,
        the Scoliosis Research Society's threshold for scoliosis.
    max_wedge_deg : float
        A vertebra whose superior and inferior endplate normals are further apart than this is
        not used: no real body, even a vertebra plana, is that wedged, so the fit failed.
    """

    min_cobb_deg: float = 10.0
    max_wedge_deg: float = 45.0

    def __post_init__(self) -> None:
        for name in ("min_cobb_deg", "max_wedge_deg"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive angle in degrees, got {value!r}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
