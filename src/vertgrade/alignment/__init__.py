"""Spinal alignment from the endplate planes: Cobb angles, kyphosis, lordosis, segmental angles.

Every angle is measured between the endplate planes that grading already fitted
(:attr:`vertgrade.result.VertebraResult.endplates`: a point and a unit normal in world RAS+ mm,
the normal pointing to the patient's head), projected onto the patient's coronal and sagittal
planes, the way a Cobb angle is drawn on an antero-posterior or lateral radiograph.

Planes and signs
----------------
The patient's planes are the world planes of the image (RAS+: ``x`` to the patient's right,
``y`` anterior, ``z`` superior): the coronal plane is ``x-z``, the sagittal plane ``y-z``. A patient
lying rotated on the table rotates them too; vertgrade does not guess a patient frame.

An endplate with unit normal ``n`` (pointing to the head) cuts the coronal plane along a line
whose angle to the horizontal is the angle of the projected normal ``(n_x, n_z)`` to the vertical
(the line is perpendicular to the projected normal); the same holds in the sagittal plane. So

- ``coronal_deg = atan2(n_x, n_z)``: **positive when the endplate descends towards the patient's
  right**;
- ``sagittal_deg = atan2(n_y, n_z)``: **positive when the endplate descends anteriorly**.

Angles between two endplates (an upper one ``U`` and a lower one ``L``) are differences of these:

- coronal: ``coronal(L) - coronal(U)``, **positive when the spine between them is convex to the
  patient's right** (the tilt grows caudally through a right-convex curve);
- sagittal: ``sagittal(U) - sagittal(L)``, **positive when kyphotic** (convex posteriorly);
  lordosis is reported as ``sagittal(L) - sagittal(U)``, positive when lordotic.

What is measured
----------------
- Per vertebra: the four endplate angles; the **wedge angle** (its own superior endplate against its
  own inferior endplate: sagittal positive when the anterior wall is the shorter, coronal positive
  when the right side is the taller); the **regional kyphosis** (superior endplate of the vertebra
  above against the inferior endplate of the vertebra below, the Cobb method of fracture kyphosis,
  Kuklo et al., Spine 2001).
- Per pair of adjacent vertebrae: the **segmental angle** (superior endplate of the upper vertebra
  against the superior endplate of the lower one: the upper body's wedge plus the disc) and the
  **disc angle** (inferior endplate of the upper against superior endplate of the lower). Segmental
  angles from ``U`` down to the vertebra above ``L``, plus the wedge of ``L``, add up to the
  ``U``-to-``L`` angle.
- Coronal **Cobb angles** (Cobb 1948; a curve is scoliosis from 10 degrees, Scoliosis Research
  Society). The coronal endplate angles are listed cranial to caudal (superior, inferior, superior,
  ...); a curve runs between two turning points of that sequence, found with a hysteresis of
  ``min_cobb_deg`` so that wiggles smaller than a reportable curve do not split one. Its end
  vertebrae are then the pair, from one level beyond the turning points inwards, whose upper
  end's superior and lower end's inferior endplate make the largest angle (the most tilted
  endplates; of exactly equally tilted ones, those nearest the apex). The apex is the vertebra
  (or disc, ``"T12/L1"``) farthest from the line joining the end vertebrae's centres in the
  coronal projection. A curve that reaches the first or last usable vertebra is marked
  incomplete: its true end may lie beyond the image.
- **Thoracic kyphosis** from the superior endplate of T4 to the inferior endplate of T12; where
  either is missing or unusable, over the widest span of usable vertebrae within T4-T12, else
  within T1-T13, saying so. **Lumbar lordosis** from the superior endplate of L1 to the inferior
  endplate of L5 (of L6 where present), or to the superior endplate of S1 where S1 is labelled and
  usable; else over the widest usable lumbar span, saying so.

A vertebra is not used when its endplates could not be fitted, when its body is cut by the field
of view (its cut face would pass for an endplate), when its size is implausible for its level, or
when its two endplate planes are implausibly far apart. C1, C2 and the sacrum take no part in
Cobb angles. What cannot be measured is ``None`` together with the reason.

The measurement, one module each:

- :mod:`.config`: :class:`AlignmentConfig`, the smallest curve reported and the widest angle
  between a vertebra's two endplates that is still a plausible fit;
- :mod:`.angles`: :func:`endplate_angles` (an endplate normal projected onto the coronal and
  sagittal planes), which vertebrae are usable, and the per-vertebra and per-segment angles;
- :mod:`.coronal`: the coronal curves, their Cobb angles and end vertebrae, and
  :func:`coronal_apex`;
- :mod:`.sagittal`: thoracic kyphosis and lumbar lordosis, and the spans they are measured over
  (:func:`thoracic_kyphosis_span`, :func:`lumbar_lordosis_span`);
- :mod:`.measure`: :func:`alignment_from_endplates`, which puts them together;
- :mod:`.result`: :class:`Alignment` and the values it holds, with their ``result.json`` object
  and ``alignment.csv`` rows (:data:`ALIGNMENT_COLUMNS`).

Examples
--------
>>> import numpy as np
>>> def normal(coronal_deg):
...     a = np.radians(coronal_deg)
...     return np.array([np.sin(a), 0.0, np.cos(a)])
>>> tilts = {17: -10.0, 18: -5.0, 19: 0.0, 20: 5.0, 21: 10.0}    # T10-L2, right-convex
>>> al = alignment_from_endplates(
...     list(tilts),
...     superior=[normal(t) for t in tilts.values()],
...     inferior=[normal(t) for t in tilts.values()],
...     centroids_mm=[[-(abs(t) - 10.0), 0.0, -30.0 * i] for i, t in enumerate(tilts.values())],
... )
>>> c = al.curves[0]
>>> c.upper_end, c.lower_end, c.apex, c.convex, round(c.cobb_deg, 6)
('T10', 'L2', 'T12', 'right', 20.0)
"""

from __future__ import annotations

from vertgrade.alignment.angles import endplate_angles
from vertgrade.alignment.config import AlignmentConfig
from vertgrade.alignment.coronal import coronal_apex
from vertgrade.alignment.measure import alignment_from_endplates
from vertgrade.alignment.result import ALIGNMENT_COLUMNS, Alignment
from vertgrade.alignment.sagittal import lumbar_lordosis_span, thoracic_kyphosis_span

__all__ = [
    "ALIGNMENT_COLUMNS",
    "Alignment",
    "AlignmentConfig",
    "alignment_from_endplates",
    "coronal_apex",
    "endplate_angles",
    "lumbar_lordosis_span",
    "thoracic_kyphosis_span",
]
