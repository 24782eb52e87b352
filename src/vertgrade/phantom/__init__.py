"""Synthetic spine CTs whose vertebral body heights are known exactly.

A phantom is the ground truth of the demo and of every accuracy test: a stack of thoracic and
lumbar vertebrae along a curved spine, inside a soft-tissue trunk, rasterised onto any voxel grid
(axis order and signs, anisotropic spacing, oblique in-plane rotation), with optional compression
fractures of known type and severity and optional scoliotic curves of known Cobb angle. Each
vertebral body is analytic, so its heights, losses, grade, endplate planes and the spine's
alignment are known exactly (:class:`VertebraTruth`, :class:`TrueCurve`), defined as the
measurement defines them.

The stages, one module each:

- :mod:`.specs`: the requested fractures and scoliotic curves (:class:`FractureSpec`,
  :class:`ScoliosisSpec`) and the parsing of the requested levels;
- :mod:`.anatomy`: level sizes and the analytic vertebral body, healthy and fractured;
- :mod:`._curve`: the spine curve (kyphosis, lordosis, scoliosis) and each vertebra's frame;
- :mod:`.truth`: the true heights, losses, grade, endplate angles and alignment;
- :mod:`._raster`: the structures as signed distances, painted onto the voxel grid;
- :mod:`.make`: :func:`make_phantom`, which puts them together, and :class:`Phantom`;
- :mod:`.files`: :func:`write_phantom`, the CT, labels and ``truth.csv`` (:data:`TRUTH_COLUMNS`).

Examples
--------
>>> ph = make_phantom("L1", ["L1:wedge:0.3"], spacing=2.0, fov_mm=(120, 120), noise_hu=0)
>>> t = ph.truth[0]
>>> t.level, t.type, round(t.loss_anterior, 6), t.grade
('L1', 'wedge', 0.3, 2)
>>> ph.ct.shape == ph.labels.shape == ph.bodies.shape, ph.ct.dtype.name
(True, 'int16')
>>> ph = make_phantom("T4-L4", scoliosis=["T5-T11:right:40"], spacing=3.0, noise_hu=0)
>>> [c.as_text() for c in ph.alignment.curves]
['T4-T5:left:2.222222', 'T5-T11:right:40.000000', 'T11-L4:left:11.111111']
"""

from __future__ import annotations

from vertgrade.phantom.files import TRUTH_COLUMNS, write_phantom
from vertgrade.phantom.make import Phantom, make_phantom
from vertgrade.phantom.specs import FractureSpec, ScoliosisSpec
from vertgrade.phantom.truth import TrueCurve, VertebraTruth

__all__ = [
    "TRUTH_COLUMNS",
    "FractureSpec",
    "Phantom",
    "ScoliosisSpec",
    "TrueCurve",
    "VertebraTruth",
    "make_phantom",
    "write_phantom",
]
