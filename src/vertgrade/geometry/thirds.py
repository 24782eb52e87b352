"""Regions of a vertebral body's axial footprint: the anterior, middle and posterior thirds.

The footprint is a 2D boolean grid in the vertebra's local frame, indexed ``[ap, lr]``: the first
axis runs posterior -> anterior, the second patient left -> right (see
:mod:`vertgrade.geometry.frames`). Both the measurement (:mod:`vertgrade.morphometry`) and the
phantom's ground truth (:mod:`vertgrade.phantom`) use this one definition, so that "the anterior
height" means the same thing in both.

Definition (constants in :class:`vertgrade.config.ThirdsParams`):

1. ``core``: the footprint eroded by ``rim_mm``, so that the rounded rim of the endplates does not
   pull the heights down (the published code instead keeps columns taller than 0.7 of the central
   one, which discards exactly the collapsed columns of a wedge fracture).
2. ``band``: the central ``central_fraction`` of the footprint's left-right extent (2/5, as in
   HealthiVert-GAN), where the endplates are least curved.
3. The antero-posterior extent of the footprint inside the band is cut into thirds.
   ``anterior = core & band & front third`` and so on; ``body`` is the whole core.

Examples
--------
>>> import numpy as np
>>> fp = np.zeros((40, 50), bool); fp[5:35, 5:45] = True       # a 30 x 40 mm rectangle at 1 mm
>>> r = footprint_thirds(fp, step_mm=1.0)
>>> [int(getattr(r, name).sum()) for name in ("posterior", "middle", "anterior")]
[128, 160, 128]
>>> r.ap_extent_mm
(5.0, 35.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.config import ThirdsParams

__all__ = ["THIRDS", "FootprintThirds", "footprint_thirds"]

#: The three thirds, in the order in which tables list them.
THIRDS: tuple[str, str, str] = ("anterior", "middle", "posterior")


@dataclass(frozen=True)
class FootprintThirds:
    """Boolean masks over the footprint grid, and the extents they were cut from (mm, grid frame).

    ``ap_extent_mm`` and ``lr_band_mm`` are in grid millimetres: index ``i`` covers
    ``[i * step, (i + 1) * step)``.
    """

    body: NDArray[np.bool_]
    anterior: NDArray[np.bool_]
    middle: NDArray[np.bool_]
    posterior: NDArray[np.bool_]
    ap_extent_mm: tuple[float, float]
    lr_band_mm: tuple[float, float]

    def mask(self, name: str) -> NDArray[np.bool_]:
        """The mask of ``"body"``, ``"anterior"``, ``"middle"`` or ``"posterior"``."""
        if name not in ("body", *THIRDS):
            raise KeyError(name)
        value: NDArray[np.bool_] = getattr(self, name)
        return value


def footprint_thirds(
    footprint: NDArray[np.bool_],
    *,
    step_mm: float,
    params: ThirdsParams | None = None,
) -> FootprintThirds:
    """Cut a body footprint into its core and its anterior / middle / posterior thirds.

    Parameters
    ----------
    footprint : (A, L) bool ndarray
        The body's axial footprint; axis 0 runs posterior -> anterior, axis 1 left -> right.
    step_mm : float
        Grid spacing of both axes, in mm.
    params : ThirdsParams, optional
        Rim erosion and central band width (default: the defaults).

    Returns
    -------
    FootprintThirds
        Empty masks (all False) where the footprint is empty.
    """
    params = params or ThirdsParams()
    fp = np.asarray(footprint, dtype=bool)
    if fp.ndim != 2:
        raise ValueError(f"footprint must be 2D, got shape {fp.shape}")
    empty = np.zeros_like(fp)
    if not fp.any():
        return FootprintThirds(empty, empty, empty, empty, (0.0, 0.0), (0.0, 0.0))
    # Distance to the nearest background pixel centre, in mm, with the grid's outside as
    # background; a pixel at distance d from that centre is about d - step/2 from the outline.
    padded = np.pad(fp, 1)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1] * step_mm - 0.5 * step_mm
    core = fp & (dist >= params.rim_mm)

    cols = np.flatnonzero(fp.any(axis=0))
    lr_lo, lr_hi = float(cols[0] * step_mm), float((cols[-1] + 1) * step_mm)
    centre, half = 0.5 * (lr_lo + lr_hi), 0.5 * params.central_fraction * (lr_hi - lr_lo)
    lr_centres = (np.arange(fp.shape[1]) + 0.5) * step_mm
    band_cols = np.abs(lr_centres - centre) <= half
    band = np.zeros_like(fp)
    band[:, band_cols] = True

    rows = np.flatnonzero((fp & band).any(axis=1))
    if rows.size == 0:
        return FootprintThirds(
            core, empty, empty, empty, (0.0, 0.0), (centre - half, centre + half)
        )
    ap_lo, ap_hi = float(rows[0] * step_mm), float((rows[-1] + 1) * step_mm)
    third = (ap_hi - ap_lo) / 3.0
    ap_centres = ((np.arange(fp.shape[0]) + 0.5) * step_mm)[:, None]
    inner = core & band
    posterior = inner & (ap_centres < ap_lo + third)
    middle = inner & (ap_centres >= ap_lo + third) & (ap_centres < ap_lo + 2 * third)
    anterior = inner & (ap_centres >= ap_lo + 2 * third)
    return FootprintThirds(
        core, anterior, middle, posterior, (ap_lo, ap_hi), (centre - half, centre + half)
    )
