"""The spine curve: the frame of every vertebra, from the sagittal and coronal curvature.

Vertebrae are stacked along the curve's arc length by their healthy central heights plus discs
(:func:`vertgrade.phantom.make_phantom` computes the arc lengths); a fracture changes its own
body only (the posterior elements keep the spine's length and the disc fills what the body
lost).

The spine curve's tangent has a sagittal angle that falls through the thoracic levels
(``kyphosis_deg`` over T1-T12) and rises through the lumbar ones (``lordosis_deg`` over L1-L5),
with a smooth change of curvature at the T12/L1 disc and a small mean tilt against the scanner
axis, and optionally a coronal angle that changes by the same amount per level between the end
vertebrae of requested scoliotic curves (:class:`~vertgrade.phantom.specs.ScoliosisSpec`);
beyond the outermost end vertebrae it turns back at a third of the neighbouring curve's rate
(compensatory curves). Bodies are rigid: both endplates of a healthy body share its axis's
coronal angle, so the Cobb angle between two end vertebrae is exactly the axis's rotation
between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from vertgrade.geometry.frames import LocalFrame
from vertgrade.levels import normative_shape
from vertgrade.phantom.anatomy import _disc_below_mm
from vertgrade.phantom.specs import ScoliosisSpec

__all__: list[str] = []

# The mean of the body centres sits this far anterior (negative: posterior) of the trunk's
# centre (x = y = 0, see :mod:`vertgrade.phantom.make`), in mm.
_SPINE_Y_MM = -25.0
# Mean sagittal tilt of the imaged segment against the scanner axis (deg), so that no endplate
# is grid-aligned merely because the curve is flat there.
_TABLE_TILT_DEG = 3.0
# Half-width (mm) of the smooth transition from kyphotic to lordotic curvature at T12/L1.
_CURVE_TRANSITION_MM = 10.0
# Beyond the outermost end vertebrae of the requested scoliotic curves the coronal tilt turns
# back at this fraction of the neighbouring curve's rate per level (compensatory curves), so
# that every requested end vertebra is a strict extreme of the tilt.
_COMPENSATION = 1.0 / 3.0


def _coronal_tilts_deg(specs: Sequence[ScoliosisSpec]) -> NDArray[np.float64]:
    """Coronal tilt (deg) of the vertebral axes of T1-L5 (labels 8-24, in that order).

    Linear in the level between the end vertebrae of the requested curves (rising caudally
    through a right-convex curve); beyond the outermost ends it turns back at
    ``_COMPENSATION`` times the neighbouring curve's rate; the mean over T1-L5 is zero.
    """
    levels = np.arange(8, 25, dtype=float)
    if not specs:
        return np.zeros(levels.size)
    xs = [float(specs[0].upper_label)]
    cs = [0.0]
    for c in specs:
        xs.append(float(c.lower_label))
        cs.append(cs[-1] + (c.cobb_deg if c.convex == "right" else -c.cobb_deg))
    tilt = np.interp(levels, xs, cs)
    first = (cs[1] - cs[0]) / (xs[1] - xs[0])
    last = (cs[-1] - cs[-2]) / (xs[-1] - xs[-2])
    tilt += np.where(levels < xs[0], _COMPENSATION * first * (xs[0] - levels), 0.0)
    tilt -= np.where(levels > xs[-1], _COMPENSATION * last * (levels - xs[-1]), 0.0)
    return np.asarray(tilt - tilt.mean(), dtype=np.float64)


def _log_cosh(x: NDArray[np.float64]) -> NDArray[np.float64]:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - math.log(2.0)


def _nominal_span_mm(labels: range, scale: float) -> float:
    total = 0.0
    for lab in labels:
        ant, _, post = normative_shape(lab).as_tuple()
        total += 0.5 * (ant + post) * scale
        if lab != labels[-1]:
            total += _disc_below_mm(lab) * scale
    return total


def _spine_frames(
    labels: Sequence[int],
    s_nodes: NDArray[np.float64],
    scale: float,
    kyphosis_deg: float,
    lordosis_deg: float,
    coronal_deg: NDArray[np.float64] | None = None,
) -> list[LocalFrame]:
    """Frames on the spine curve through the healthy body centres at arc lengths ``s_nodes``.

    Without ``coronal_deg`` the curve is sagittal: the superior tangent is ``(0, sin t, cos t)``;
    ``t`` falls through the thoracic levels by ``kyphosis_deg`` over the whole T1-T12 span and
    rises through the lumbar levels by ``lordosis_deg`` over L1-L5, with a smooth change of
    curvature at the T12/L1 disc. With the coronal tilt ``c`` of each node (deg, interpolated
    linearly in arc length between nodes) the tangent is ``(tan c, tan t, 1)`` normalised, whose
    coronal and sagittal projections make exactly the angles ``c`` and ``t`` with the vertical.
    """
    k_t = -math.radians(kyphosis_deg) / _nominal_span_mm(range(8, 20), scale)
    k_l = math.radians(lordosis_deg) / _nominal_span_mm(range(20, 25), scale)
    labs = list(labels)
    if 19 in labs and 20 in labs:
        s_j = 0.5 * (s_nodes[labs.index(19)] + s_nodes[labs.index(20)])
    elif labs[-1] <= 19:
        s_j = float(s_nodes[-1]) + 1e4
    else:
        s_j = float(s_nodes[0]) - 1e4
    w = _CURVE_TRANSITION_MM

    def angle(s: NDArray[np.float64]) -> NDArray[np.float64]:
        return k_t * s + 0.5 * (k_l - k_t) * (s + w * _log_cosh((s - s_j) / w))

    theta0 = math.radians(_TABLE_TILT_DEG) - float(np.mean(angle(s_nodes)))
    s_lo, s_hi = float(s_nodes[0]), float(s_nodes[-1])
    s_fine = np.linspace(s_lo, s_hi, max(2, int((s_hi - s_lo) / 0.02) + 1))
    th = theta0 + angle(s_fine)
    th_n = theta0 + angle(s_nodes)
    ds = np.diff(s_fine)
    if coronal_deg is None:
        # Going caudal (increasing s) moves along the inferior direction -(0, sin t, cos t).
        dy, dz = -np.sin(th), -np.cos(th)
    else:
        c_fine = np.radians(np.interp(s_fine, s_nodes, coronal_deg))
        tx, ty = np.tan(c_fine), np.tan(th)
        norm = np.sqrt(1.0 + tx**2 + ty**2)
        dx, dy, dz = -tx / norm, -ty / norm, -1.0 / norm
        x = np.r_[0.0, np.cumsum(0.5 * (dx[1:] + dx[:-1]) * ds)]
        xn = np.interp(s_nodes, s_fine, x)
        xn -= xn.mean()
    y = np.r_[0.0, np.cumsum(0.5 * (dy[1:] + dy[:-1]) * ds)]
    z = np.r_[0.0, np.cumsum(0.5 * (dz[1:] + dz[:-1]) * ds)]
    yn, zn = np.interp(s_nodes, s_fine, y), np.interp(s_nodes, s_fine, z)
    yn += _SPINE_Y_MM - yn.mean()
    zn -= zn.mean()
    if coronal_deg is None:
        return [
            LocalFrame.from_axes([0.0, yy, zz], si=[0.0, math.sin(t), math.cos(t)])
            for yy, zz, t in zip(yn, zn, th_n, strict=True)
        ]
    c_n = np.radians(np.asarray(coronal_deg, dtype=float))
    return [
        LocalFrame.from_axes([xx, yy, zz], si=[math.tan(c), math.tan(t), 1.0])
        for xx, yy, zz, c, t in zip(xn, yn, zn, c_n, th_n, strict=True)
    ]
