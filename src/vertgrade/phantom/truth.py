"""The ground truth of a phantom: per-vertebra heights, losses, grade and endplate angles, and
the study's alignment.

The true heights are region means of the analytic height map
(:meth:`~vertgrade.phantom.anatomy.BodyGeometry.height`) over the masks of
:func:`vertgrade.geometry.thirds.footprint_thirds`, evaluated on a 0.25 mm grid over the
footprint (:data:`~vertgrade.phantom.anatomy.TRUTH_STEP_MM`): the very definition the
measurement uses. The grade is :func:`vertgrade.grading.genant_grade` of the largest of the
three regional losses.

The true alignment (:class:`AlignmentTruth`) is measured between the true endplate planes:
least-squares planes of the analytic endplate surfaces over the footprint's core, as the
measurement fits them; sagittally they include the bodies' own wedging. Coronally, the runs of
the tilt are cut at the requested curves' end vertebrae; kyphosis and lordosis use the spans
:mod:`vertgrade.alignment` chooses.

Examples
--------
>>> TrueCurve("T5", "T11", "right", 40.0, "T8", requested=True).as_text()
'T5-T11:right:40.000000'
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vertgrade.alignment import (
    coronal_apex,
    endplate_angles,
    lumbar_lordosis_span,
    thoracic_kyphosis_span,
)
from vertgrade.geometry.frames import LocalFrame
from vertgrade.geometry.thirds import THIRDS
from vertgrade.grading import genant_grade
from vertgrade.levels import level_name
from vertgrade.morphometry import EndplatePlane
from vertgrade.phantom.anatomy import BodyGeometry, _Body
from vertgrade.phantom.specs import Convexity, FractureSpec

__all__ = ["AlignmentTruth", "TrueCurve", "VertebraTruth"]


@dataclass(frozen=True)
class VertebraTruth:
    """Ground truth of one vertebra; the field order is the column order of ``truth.csv``.

    Heights are in mm along the frame's ``si`` axis, region means of the height map over the
    masks of :func:`vertgrade.geometry.thirds.footprint_thirds` (``body`` is the eroded
    footprint core). ``loss_*`` is ``1 - after / before``; ``loss_central`` is the loss at the
    centre, where a biconcave depression is deepest (:func:`vertgrade.grading.central_loss` on
    the true height maps, the statistic the measurement uses). ``grade`` is Genant's grade of the
    largest of the three regional losses and the central one, rounded to 1e-6 first;
    ``fractured`` is ``grade > 0`` and ``type`` is ``""`` when not fractured.
    ``severity`` is the requested severity (0 where none was requested). ``centre_*_mm`` is the
    frame origin in world RAS+ mm: the middle of the body's central column (at ``lr = 0`` and the
    footprint's antero-posterior middle), after the fracture.

    Alignment (angles in degrees, signs of :mod:`vertgrade.alignment`): ``superior_*_deg`` and
    ``inferior_*_deg`` are the coronal and sagittal angles of the true endplate planes (the
    least-squares planes of the analytic endplate surfaces, fracture included, over the
    footprint's core: the fit the measurement makes). The study-level truth is repeated on every
    row: ``coronal_curves`` lists every monotone run of the coronal tilt over the phantom's
    levels as ``UPPER-LOWER:SIDE:DEGREES`` joined by ``;`` (empty without scoliosis), and
    ``thoracic_kyphosis_deg`` / ``lumbar_lordosis_deg`` are measured between the endplates of
    ``kyphosis_span`` / ``lordosis_span`` (the spans :mod:`vertgrade.alignment` chooses; ``None``
    and ``""`` where the levels do not allow one). These study-level fields take no part in
    comparing two records (``==``): a fracture elsewhere may change the kyphosis, not this
    vertebra's truth.
    """

    label: int
    level: str
    fractured: bool
    type: str
    severity: float
    grade: int
    height_body_before_mm: float
    height_anterior_before_mm: float
    height_middle_before_mm: float
    height_posterior_before_mm: float
    height_body_after_mm: float
    height_anterior_after_mm: float
    height_middle_after_mm: float
    height_posterior_after_mm: float
    loss_body: float
    loss_anterior: float
    loss_middle: float
    loss_posterior: float
    centre_x_mm: float
    centre_y_mm: float
    centre_z_mm: float
    superior_coronal_deg: float = 0.0
    superior_sagittal_deg: float = 0.0
    inferior_coronal_deg: float = 0.0
    inferior_sagittal_deg: float = 0.0
    # Study-level context, repeated on every row; not part of comparing two vertebrae' truths.
    coronal_curves: str = field(default="", compare=False)
    thoracic_kyphosis_deg: float | None = field(default=None, compare=False)
    kyphosis_span: str = field(default="", compare=False)
    lumbar_lordosis_deg: float | None = field(default=None, compare=False)
    lordosis_span: str = field(default="", compare=False)
    #: the central height loss (the deepest point of the middle third, over a few mm of columns,
    #: :func:`vertgrade.grading.central_loss`); the grade counts it with the thirds
    loss_central: float = 0.0

    def as_row(self) -> dict[str, Any]:
        """The record as an ordered dict (CSV columns -> Python values)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrueCurve:
    """One true coronal curve of a phantom: a monotone run of the vertebrae's coronal tilt.

    ``cobb_deg`` is the angle between ``upper``'s superior and ``lower``'s inferior true
    endplate (positive); ``apex`` is the vertebra, or ``"T12/L1"`` disc, that
    :func:`vertgrade.alignment.coronal_apex` finds from the true body centres. ``requested`` is
    true when both ends are end vertebrae of requested curves; otherwise the run is a
    compensatory curve, or a requested curve cut by the phantom's levels.
    """

    upper: str
    lower: str
    convex: Convexity
    cobb_deg: float
    apex: str
    requested: bool

    def as_text(self) -> str:
        """``"T5-T11:right:40.000000"``."""
        return f"{self.upper}-{self.lower}:{self.convex}:{self.cobb_deg:.6f}"


@dataclass(frozen=True)
class AlignmentTruth:
    """A phantom's true alignment (degrees; signs of :mod:`vertgrade.alignment`).

    ``curves`` holds every monotone run of the coronal tilt over the phantom's levels, cranial
    first, whatever its size (none without scoliosis). Kyphosis and lordosis are measured
    between the true endplates of ``kyphosis_span`` and ``lordosis_span`` (level names), the
    spans :func:`vertgrade.alignment.thoracic_kyphosis_span` and
    :func:`~vertgrade.alignment.lumbar_lordosis_span` choose; ``None`` where there is none.
    """

    curves: tuple[TrueCurve, ...]
    thoracic_kyphosis_deg: float | None
    kyphosis_span: tuple[str, str] | None
    lumbar_lordosis_deg: float | None
    lordosis_span: tuple[str, str] | None


def _true_endplates(geo: BodyGeometry, frame: LocalFrame) -> tuple[EndplatePlane, EndplatePlane]:
    """Least-squares planes of the analytic (fractured) endplate surfaces over the footprint's
    core, the columns :func:`vertgrade.morphometry.endplate_planes` fits; the point lies over the
    core's centre, the normal points along ``+si``."""
    grid = geo.footprint_grid()
    a, b = grid.mesh()
    core = grid.regions.body
    ap, lr = a[core], b[core]
    design = np.column_stack([np.ones(ap.size), ap, lr])
    ap_c, lr_c = float(ap.mean()), float(lr.mean())
    planes = []
    for surface in (geo.superior(ap, lr), geo.inferior(ap, lr)):
        coef = np.linalg.lstsq(design, surface, rcond=None)[0]
        n_local = np.array([1.0, -coef[1], -coef[2]])
        n_local /= np.linalg.norm(n_local)
        z = float(coef[0] + coef[1] * ap_c + coef[2] * lr_c)
        point = frame.to_world(np.array([[z, ap_c, lr_c]]))[0]
        normal = n_local @ frame.rotation
        planes.append(EndplatePlane(point, normal / np.linalg.norm(normal)))
    return planes[0], planes[1]


def _truth(
    label: int,
    body: _Body,
    fracture: FractureSpec | None,
    frame: LocalFrame,
    planes: tuple[EndplatePlane, EndplatePlane],
) -> VertebraTruth:
    sup_cor, sup_sag = endplate_angles(planes[0].normal)
    inf_cor, inf_sag = endplate_angles(planes[1].normal)
    before, after = body.before, body.after
    loss = {r: 1.0 - after[r] / before[r] for r in before}
    # Rounded to 1e-6 first, so that a severity of exactly 0.20, 0.25 or 0.40 lands in the
    # higher grade.
    worst = max(max(loss[r] for r in THIRDS), body.central_loss)
    grade = genant_grade(round(float(worst), 6))
    fractured = grade > 0
    x, y, z = (float(v) for v in frame.origin)
    return VertebraTruth(
        label=int(label),
        level=level_name(label),
        fractured=fractured,
        type=fracture.type if (fractured and fracture is not None) else "",
        severity=fracture.severity if fracture is not None else 0.0,
        grade=grade,
        height_body_before_mm=before["body"],
        height_anterior_before_mm=before["anterior"],
        height_middle_before_mm=before["middle"],
        height_posterior_before_mm=before["posterior"],
        height_body_after_mm=after["body"],
        height_anterior_after_mm=after["anterior"],
        height_middle_after_mm=after["middle"],
        height_posterior_after_mm=after["posterior"],
        loss_body=loss["body"],
        loss_anterior=loss["anterior"],
        loss_middle=loss["middle"],
        loss_posterior=loss["posterior"],
        loss_central=body.central_loss,
        centre_x_mm=x,
        centre_y_mm=y,
        centre_z_mm=z,
        superior_coronal_deg=sup_cor,
        superior_sagittal_deg=sup_sag,
        inferior_coronal_deg=inf_cor,
        inferior_sagittal_deg=inf_sag,
    )


def _alignment_truth(
    labels: Sequence[int],
    truth: dict[int, VertebraTruth],
    frames: dict[int, LocalFrame],
    tilts_deg: NDArray[np.float64] | None,
    knots: Sequence[int],
) -> AlignmentTruth:
    """Study-level truth from the true endplate angles.

    The coronal runs are cut at the requested curves' end vertebrae (the tilt's turning points,
    by construction) and at the first and last level.
    """
    curves = []
    if tilts_deg is not None:
        inside = [k for k in knots if labels[0] < k < labels[-1]]
        cuts = [labels[0], *inside, labels[-1]]
        for up, low in itertools.pairwise(cuts):
            cobb = truth[low].inferior_coronal_deg - truth[up].superior_coronal_deg
            if abs(cobb) < 1e-9:
                continue
            convex: Convexity = "right" if cobb > 0 else "left"
            run = list(range(up, low + 1))
            i, j, _ = coronal_apex(np.stack([frames[k].origin for k in run]), convex)
            apex = level_name(run[i]) if i == j else f"{level_name(run[i])}/{level_name(run[j])}"
            curves.append(
                TrueCurve(
                    level_name(up),
                    level_name(low),
                    convex,
                    abs(cobb),
                    apex,
                    requested=up in knots and low in knots,
                )
            )
    kyphosis = lordosis = None
    k_span = thoracic_kyphosis_span(labels)
    if k_span is not None:
        kyphosis = truth[k_span[0]].superior_sagittal_deg - truth[k_span[1]].inferior_sagittal_deg
    l_span = lumbar_lordosis_span(labels)
    if l_span is not None:  # no S1 in the phantom: always to the last lumbar's inferior endplate
        lordosis = truth[l_span[1]].inferior_sagittal_deg - truth[l_span[0]].superior_sagittal_deg
    return AlignmentTruth(
        curves=tuple(curves),
        thoracic_kyphosis_deg=kyphosis,
        kyphosis_span=None if k_span is None else (level_name(k_span[0]), level_name(k_span[1])),
        lumbar_lordosis_deg=lordosis,
        lordosis_span=None if l_span is None else (level_name(l_span[0]), level_name(l_span[1])),
    )
