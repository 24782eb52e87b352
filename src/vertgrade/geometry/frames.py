"""Local frames of vertebrae, and the smooth spine centreline they follow.

World coordinates are RAS+ millimetres, nibabel's convention: +x towards the patient's right,
+y anterior, +z superior.

Each vertebra gets a right-handed orthonormal frame with axes named ``si, ap, lr``:

- ``si``: the spine's tangent at the vertebra, pointing superior (cranial);
- ``ap``: the patient's anterior direction, made perpendicular to ``si``;
- ``lr``: ``ap x si``, which points to the patient's right.

Local coordinates are ordered ``(si, ap, lr)`` and measured in mm from the frame's origin.

Examples
--------
>>> import numpy as np
>>> f = LocalFrame.from_axes(np.zeros(3), si=[0, 0, 1.0])
>>> f.lr.tolist()
[1.0, 0.0, 0.0]
>>> f.to_local(np.array([[1.0, 2.0, 3.0]])).tolist()
[[3.0, 2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import interpolate

__all__ = ["LocalFrame", "SpineCurve", "fit_spine_curve"]

_ANTERIOR = np.array([0.0, 1.0, 0.0])


def _unit(v: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(a))
    if not np.isfinite(n) or n == 0:
        raise ValueError(f"cannot normalise vector {a}")
    return a / n


@dataclass(frozen=True)
class LocalFrame:
    """A vertebra's local frame: origin (world mm, RAS+) and three unit axes."""

    origin: NDArray[np.float64]
    si: NDArray[np.float64]
    ap: NDArray[np.float64]
    lr: NDArray[np.float64]

    @classmethod
    def from_axes(
        cls, origin: ArrayLike, *, si: ArrayLike, anterior: ArrayLike = _ANTERIOR
    ) -> LocalFrame:
        """Frame from a superior direction and a rough anterior direction.

        ``anterior`` is projected onto the plane perpendicular to ``si``; it must not be
        parallel to ``si``.
        """
        s = _unit(si)
        a = np.asarray(anterior, dtype=float)
        a = a - np.dot(a, s) * s
        a = _unit(a)
        r = np.cross(a, s)
        return cls(np.asarray(origin, dtype=float), s, a, r)

    @property
    def rotation(self) -> NDArray[np.float64]:
        """(3, 3) matrix whose rows are ``si, ap, lr`` (world -> local rotation)."""
        return np.stack([self.si, self.ap, self.lr])

    def to_local(self, points: ArrayLike) -> NDArray[np.float64]:
        """(N, 3) world points -> (N, 3) local ``(si, ap, lr)`` mm."""
        p = np.asarray(points, dtype=float)
        return (p - self.origin) @ self.rotation.T

    def to_world(self, local: ArrayLike) -> NDArray[np.float64]:
        """(N, 3) local ``(si, ap, lr)`` mm -> (N, 3) world points."""
        q = np.asarray(local, dtype=float)
        return q @ self.rotation + self.origin

    def to_dict(self) -> dict[str, list[float]]:
        return {
            k: [round(float(x), 6) for x in getattr(self, k)] for k in ("origin", "si", "ap", "lr")
        }


@dataclass(frozen=True)
class SpineCurve:
    """A smooth centreline through vertebra centres, parametrised by arc length (mm).

    ``s`` grows cranial -> caudal (the order in which the centres were given).
    """

    _spline: interpolate.BSpline
    length_mm: float
    node_s: NDArray[np.float64]

    def point(self, s: ArrayLike) -> NDArray[np.float64]:
        """World point(s) at arc length ``s``; extrapolates linearly past the ends."""
        return self._eval(np.atleast_1d(np.asarray(s, dtype=float)), 0)

    def tangent(self, s: ArrayLike) -> NDArray[np.float64]:
        """Unit tangent(s), pointing superior (towards smaller ``s``)."""
        d = -self._eval(np.atleast_1d(np.asarray(s, dtype=float)), 1)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def _eval(self, s: NDArray[np.float64], nu: int) -> NDArray[np.float64]:
        lo, hi = 0.0, self.length_mm
        inside = np.clip(s, lo, hi)
        out = np.asarray(self._spline(inside, nu=nu), dtype=float)
        if nu == 0:
            over = s - inside
            if np.any(over != 0):
                d = np.asarray(self._spline(inside, nu=1), dtype=float)
                d /= np.linalg.norm(d, axis=1, keepdims=True)
                out = out + over[:, None] * d
        return out

    def nearest_s(self, point: ArrayLike) -> float:
        """Arc length of the curve point nearest to ``point`` (searched on a 0.5 mm grid)."""
        grid = np.arange(-20.0, self.length_mm + 20.0, 0.5)
        d = np.linalg.norm(self.point(grid) - np.asarray(point, dtype=float), axis=1)
        return float(grid[int(np.argmin(d))])


def fit_spine_curve(
    centres: Sequence[ArrayLike] | NDArray[np.float64], *, smoothing_mm: float = 1.5
) -> SpineCurve:
    """Fit a smooth centreline through vertebra centres (world mm), ordered cranial -> caudal.

    A cubic smoothing spline (fewer points: lower degree) in the chord-length parameter is fitted
    with a residual budget of ``smoothing_mm`` per point, then re-parametrised by arc length, so
    that one unit of ``s`` is one millimetre along the spine.

    Parameters
    ----------
    centres : (N, 3) array-like
        Centres in world mm, N >= 2, cranial first.
    smoothing_mm : float
        Typical distance the curve may stay away from a centre (noise in segmentation centroids).
    """
    pts = np.asarray(centres, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 2:
        raise ValueError(f"need at least two 3D centres, got shape {pts.shape}")
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
    if np.any(np.diff(chord) <= 0):
        raise ValueError("two vertebra centres coincide")
    k = min(3, len(pts) - 1)
    spline = interpolate.make_splprep(
        pts.T, u=chord, k=k, s=len(pts) * smoothing_mm**2 if len(pts) > k + 1 else 0.0
    )[0]
    # Re-parametrise by arc length on a dense grid.
    u = np.linspace(0.0, chord[-1], max(200, int(chord[-1] * 2)))
    xyz = np.asarray(spline(u)).T
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))]
    k2 = 3 if len(u) > 3 else 1
    by_arc = interpolate.make_interp_spline(arc, xyz, k=k2)
    node_s = np.asarray(np.interp(chord, u, arc), dtype=np.float64)
    return SpineCurve(by_arc, float(arc[-1]), node_s)
