"""Relative height loss (RHLV), Genant grade, morphological type and confidence.

``RHLV = (H_ref - H) / H_ref`` for the whole body and for each third. The Genant
semi-quantitative grade follows from the largest regional loss by the published thresholds
(Genant et al., J Bone Miner Res 1993;8:1137-48): below 20 % normal (0), 20-25 % mild (1),
25-40 % moderate (2), 40 % and more severe (3). The type follows from where the loss is:
anterior (wedge), middle (biconcave) or throughout, posterior wall included (crush).

Two kinds of evidence grade, as a reader weighs them (Genant's semi-quantitative reading
compares a vertebra's heights with each other and with its neighbours'):

- *size against the neighbours*: the RHLV of each third against the reference, and the central
  loss where a biconcave depression is deepest (:func:`central_loss`);
- *the vertebra's own shape*: its anterior and middle heights relative to its posterior height,
  against the level's typical ratios (:func:`shape_evidence`). The posterior wall survives wedge
  and biconcave fractures, so this needs no reference and is immune to a reference that is too
  small or too large (a run of mild deformities, a single neighbour of another size); it does
  not see a crush, which lowers all three alike.

The largest loss of either kind grades; ``VertebraGrade.basis`` says which one.

Examples
--------
>>> genant_grade(0.19), genant_grade(0.2), genant_grade(0.3), genant_grade(0.45)
(0, 1, 2, 3)
>>> fracture_type(anterior=0.35, middle=0.2, posterior=0.05)
'wedge'
>>> fracture_type(anterior=0.1, middle=0.3, posterior=0.08)
'biconcave'
>>> fracture_type(anterior=0.3, middle=0.31, posterior=0.28)
'crush'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.config import (
    CENTRAL_RADIUS_MM,
    CRUSH_POSTERIOR_SHARE,
    GENANT_THRESHOLDS,
    GradingConfig,
)
from vertgrade.geometry.thirds import THIRDS, FootprintThirds
from vertgrade.levels import GRADABLE_LABELS, label_id, level_name, order_key, typical_ratios
from vertgrade.morphometry import HeightMap, RegionHeights
from vertgrade.qc import QCFlag, one_sided, penalised
from vertgrade.reference.base import Reference

__all__ = [
    "CentralLoss",
    "FractureType",
    "LossMap",
    "ShapeEvidence",
    "VertebraGrade",
    "central_loss",
    "fracture_type",
    "genant_grade",
    "grade_probability",
    "grade_vertebra",
    "loss_map",
    "rhlv",
    "shape_evidence",
    "type_for_grade",
]

FractureType = Literal["wedge", "biconcave", "crush"]


def rhlv(measured_mm: float | None, reference_mm: float | None) -> float | None:
    """Relative height loss ``(ref - measured) / ref``; ``None`` when either is missing."""
    if measured_mm is None or reference_mm is None or not reference_mm > 0:
        return None
    return (reference_mm - measured_mm) / reference_mm


def genant_grade(loss: float, thresholds: tuple[float, float, float] = GENANT_THRESHOLDS) -> int:
    """Genant grade 0-3 of a relative height loss (a fraction)."""
    return sum(loss >= t for t in thresholds)


def fracture_type(
    *,
    anterior: float,
    middle: float,
    posterior: float,
    crush_posterior_share: float = CRUSH_POSTERIOR_SHARE,
) -> FractureType:
    """Morphological type from the regional losses of a fractured vertebra.

    crush: the posterior third lost at least ``crush_posterior_share`` (80 %) as much as the
    worst third (the whole body collapsed); otherwise biconcave when the middle lost more than
    the anterior third, else wedge.
    """
    worst = max(anterior, middle, posterior)
    if posterior >= crush_posterior_share * worst:
        return "crush"
    if middle > anterior:
        return "biconcave"
    return "wedge"


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def grade_probability(
    loss: float, sigma: float, thresholds: tuple[float, float, float] = GENANT_THRESHOLDS
) -> float:
    """Probability that the true loss lies in the same grade as ``loss``, if the measured loss
    is the true one plus Gaussian error of standard deviation ``sigma`` (a fraction).

    >>> round(grade_probability(0.32, 0.02), 3), round(grade_probability(0.205, 0.02), 3)
    (1.0, 0.586)
    """
    g = genant_grade(loss, thresholds)
    edges = (-math.inf, *thresholds, math.inf)
    lo, hi = edges[g], edges[g + 1]
    if sigma <= 0:
        return 1.0
    return _phi((hi - loss) / sigma) - _phi((lo - loss) / sigma)


@dataclass(frozen=True)
class LossMap:
    """Relative height loss over the body's axial footprint (NaN outside).

    ``values`` is ``(A, L)``: axis 0 posterior -> anterior at ``ap_mm``, axis 1 left -> right at
    ``lr_mm``, in the vertebra's local frame.
    """

    values: NDArray[np.float64]
    ap_mm: NDArray[np.float64]
    lr_mm: NDArray[np.float64]

    def to_dict(self, *, step_mm: float = 2.0) -> dict[str, Any]:
        """Downsampled to ``step_mm`` for the JSON file; NaN written as null."""
        k = max(1, round(step_mm / float(self.ap_mm[1] - self.ap_mm[0])))
        v = self.values[::k, ::k]
        return {
            "ap_mm": [round(float(x), 2) for x in self.ap_mm[::k]],
            "lr_mm": [round(float(x), 2) for x in self.lr_mm[::k]],
            "values": [
                [None if not np.isfinite(x) else round(float(x), 4) for x in row] for row in v
            ],
        }


def loss_map(
    measured_mm: NDArray[np.float64], reference_mm: NDArray[np.float64], height_map: HeightMap
) -> LossMap:
    """``1 - measured / reference`` at every column of the footprint, clipped to [-1, 1]; NaN
    outside the footprint or where the reference is not positive.

    >>> hm = HeightMap(np.arange(2.0), np.arange(2.0), np.full((2, 2), 10.0), np.zeros((2, 2)),
    ...                np.array([[True, True], [True, False]]))
    >>> loss_map(np.full((2, 2), 15.0), np.full((2, 2), 20.0), hm).values.tolist()
    [[0.25, 0.25], [0.25, nan]]
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        lm = 1.0 - measured_mm / reference_mm
    lm = np.where(height_map.footprint, np.clip(lm, -1.0, 1.0), np.nan)
    return LossMap(lm, height_map.ap_mm, height_map.lr_mm)


@dataclass(frozen=True)
class CentralLoss:
    """The height loss at the centre of the body, where a biconcave depression is deepest.

    Attributes
    ----------
    loss : float
        Mean relative height loss over the band of columns (``columns``) around the point.
    index : (2,) int
        The point: its ``(ap, lr)`` index on the footprint grid.
    columns : (A, L) bool ndarray
        The columns averaged: within the radius of the point, in the footprint's core.
    """

    loss: float
    index: tuple[int, int]
    columns: NDArray[np.bool_] = field(repr=False)


def central_loss(
    loss_values: NDArray[np.float64],
    regions: FootprintThirds,
    *,
    step_mm: float,
    radius_mm: float = CENTRAL_RADIUS_MM,
) -> CentralLoss | None:
    """The central height loss: quantitative morphometry's middle height, read where it is lowest.

    Radiologists read the middle height of a vertebra at the centre of the body, where a
    biconcave (central endplate) depression is deepest; a mean over the whole middle third
    dilutes such a depression with the sound columns around it. Here the loss is averaged over
    a small disc of columns (``radius_mm``, in the footprint's core) around every column of the
    middle third, and the disc with the largest mean loss is the centre's: a robust local
    statistic (a few millimetres of columns, not one voxel line), compared column by column with
    the reference (``loss_values`` already is ``1 - measured / reference`` per column).

    Parameters
    ----------
    loss_values : (A, L) float ndarray
        Relative height loss per column (NaN where unknown), on the footprint grid of
        ``regions``.
    regions : FootprintThirds
        The footprint's core and thirds; the point is searched in the middle third.
    step_mm : float
        The grid step.
    radius_mm : float
        Radius of the disc of columns averaged.

    Returns
    -------
    CentralLoss or None
        None where the middle third has no column whose disc is at least half known.

    Examples
    --------
    >>> from vertgrade.geometry.thirds import footprint_thirds
    >>> fp = np.zeros((34, 44), bool); fp[2:32, 2:42] = True
    >>> th = footprint_thirds(fp, step_mm=1.0)
    >>> yy, xx = np.mgrid[:34, :44]
    >>> dip = 0.35 * np.exp(-((yy - 17) ** 2 + (xx - 22) ** 2) / 18.0)   # a central depression
    >>> c = central_loss(np.where(fp, dip, np.nan), th, step_mm=1.0)
    >>> round(c.loss, 2), c.index
    (0.27, (17, 22))
    """
    values = np.asarray(loss_values, dtype=np.float64)
    valid = np.isfinite(values) & regions.body
    r = int(np.floor(radius_mm / step_mm))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = ((yy**2 + xx**2) * step_mm**2 <= radius_mm**2).astype(np.float64)
    total = ndimage.correlate(np.where(valid, values, 0.0), disc, mode="constant", cval=0.0)
    count = ndimage.correlate(valid.astype(np.float64), disc, mode="constant", cval=0.0)
    search = regions.middle & valid & (count >= 0.5 * disc.sum())
    if not search.any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(search, total / np.maximum(count, 1.0), -np.inf)
    a, b = np.unravel_index(int(np.argmax(mean)), mean.shape)
    cols = np.zeros_like(valid)
    a0, a1 = max(a - r, 0), min(a + r + 1, valid.shape[0])
    b0, b1 = max(b - r, 0), min(b + r + 1, valid.shape[1])
    cols[a0:a1, b0:b1] = disc[a0 - a + r : a1 - a + r, b0 - b + r : b1 - b + r] > 0
    cols &= valid
    return CentralLoss(float(values[cols].mean()), (int(a), int(b)), cols)


@dataclass(frozen=True)
class ShapeEvidence:
    """A vertebra's own shape against its level's typical shape (:func:`shape_evidence`).

    Attributes
    ----------
    anterior_posterior, middle_posterior : float
        Measured ratios of the thirds' heights.
    typical_anterior_posterior, typical_middle_posterior : float
        The level's typical ratios (:func:`vertgrade.levels.typical_ratios`).
    """

    anterior_posterior: float
    middle_posterior: float
    typical_anterior_posterior: float
    typical_middle_posterior: float

    @property
    def wedge(self) -> float:
        """Anterior height lost relative to the posterior: ``1 - (A/P) / typical (A/P)``."""
        return 1.0 - self.anterior_posterior / self.typical_anterior_posterior

    @property
    def biconcave(self) -> float:
        """Middle height lost relative to the posterior: ``1 - (M/P) / typical (M/P)``."""
        return 1.0 - self.middle_posterior / self.typical_middle_posterior

    def to_dict(self) -> dict[str, float]:
        return {
            "anterior_posterior": self.anterior_posterior,
            "middle_posterior": self.middle_posterior,
            "typical_anterior_posterior": self.typical_anterior_posterior,
            "typical_middle_posterior": self.typical_middle_posterior,
            "wedge": self.wedge,
            "biconcave": self.biconcave,
        }


def shape_evidence(label: int, heights: RegionHeights | None) -> ShapeEvidence | None:
    """The within-vertebra evidence: anterior and middle heights relative to the posterior one,
    against the level's typical ratios.

    This is quantitative morphometry's wedge (Ha/Hp) and biconcavity (Hm/Hp) comparison, made
    on the thirds' heights so that it means the same as the RHLV of each third: where the
    posterior third is intact, ``wedge`` equals the anterior third's RHLV against a reference
    of the level's typical shape scaled to the vertebra's own posterior height.

    Returns None for levels without a typical shape or without the three heights.

    >>> h = RegionHeights(body=21.0, anterior=18.0, middle=21.0, posterior=24.0)
    >>> e = shape_evidence(20, h)      # L1: typically 0.97 anterior / posterior
    >>> round(e.wedge, 3), round(e.biconcave, 3)
    (0.228, 0.076)
    """
    if heights is None or label not in GRADABLE_LABELS:
        return None
    a, m, p = heights.anterior, heights.middle, heights.posterior
    if a is None or m is None or p is None or p <= 0:
        return None
    try:
        ta, tm = typical_ratios(label)
    except KeyError:
        return None
    return ShapeEvidence(a / p, m / p, ta, tm)


@dataclass(frozen=True)
class VertebraGrade:
    """The grading of one vertebra: what :func:`grade_vertebra` decides.

    Attributes
    ----------
    status : {"graded", "not_gradable"}
        A vertebra that cannot be graded is never grade 0; ``reason`` says why.
    grade : int or None
        Genant grade 0-3 of the largest regional RHLV.
    fracture_type : {"wedge", "biconcave", "crush"} or None
        For grades >= 1.
    confidence : float or None
        Probability of the same grade under the reference and measurement uncertainty, times
        the QC flags' confidence factors.
    rhlv : dict or None
        RHLV of the body and of each third (None where a height is missing).
    loss_map : LossMap or None
        The per-column height loss.
    central : CentralLoss or None
        The loss at the centre, where a biconcave depression is deepest (:func:`central_loss`);
        it grades beside the thirds.
    flags : tuple of str
        The QC flags given, with those grading adds (``level_not_graded``, ``no_reference``,
        ``one_sided_reference``), each once, in the order raised.
    shape : ShapeEvidence or None
        The within-vertebra evidence (:func:`shape_evidence`).
    basis : str or None
        What decided the grade: the largest loss among ``"anterior"``, ``"middle"``,
        ``"posterior"`` (RHLV of a third), ``"central"`` (the central loss), ``"shape_wedge"``
        and ``"shape_biconcave"`` (the within-vertebra evidence).
    """

    status: Literal["graded", "not_gradable"]
    reason: str | None
    grade: int | None
    fracture_type: FractureType | None
    confidence: float | None
    rhlv: dict[str, float | None] | None
    loss_map: LossMap | None
    flags: tuple[str, ...] = field(default=())
    central: CentralLoss | None = None
    shape: ShapeEvidence | None = None
    basis: str | None = None


def _not_gradable_reason(
    label: int, has_heights: bool, flags: list[str], cut_faces: tuple[str, ...]
) -> str | None:
    if label not in GRADABLE_LABELS:
        flags.append(QCFlag.LEVEL_NOT_GRADED.value)
        return f"{level_name(label)} is not graded (vertgrade grades T1-L6)"
    if QCFlag.LEVEL_ORDER in flags:
        return (
            "its label is out of head-to-foot order with a neighbour's: a likely mislabel "
            "(check the numbering)"
        )
    if QCFlag.LABEL_SPLIT in flags:
        return (
            "the label is split between far-apart places (a large part of it away from its "
            "largest piece): check the label"
        )
    if QCFlag.LABEL_TOO_SMALL in flags:
        return "the label is too small for a vertebra (a stray piece or a wrong label)"
    if QCFlag.NO_BODY in flags:
        return "no vertebral body could be isolated from the label"
    if QCFlag.CUT_BY_FOV in flags:
        where = f" (its {' and '.join(cut_faces)} side)" if cut_faces else ""
        return f"the vertebral body is cut by the edge of the field of view{where}"
    if QCFlag.TOO_COARSE in flags:
        return (
            "the image's voxels are over 5 mm along this vertebra's axis: too coarse for its "
            "heights to carry a Genant grade"
        )
    if not has_heights:
        return "heights could not be measured"
    if QCFlag.IMPLAUSIBLE_SIZE in flags:
        return "body size implausible for its level: check the label"
    if QCFlag.BODY_TOO_DEEP in flags:
        return (
            "the isolated body is much deeper than its neighbours': the posterior elements were "
            "probably not cut away"
        )
    return None


def _one_sided(label: int, ref: Reference) -> bool:
    """True when every level the reference came from lies on one side of ``label``."""
    try:
        pos = [order_key(label_id(s)) for s in ref.sources]
    except ValueError:  # a reference from a model, not from levels
        return False
    return one_sided(order_key(label), pos)


def grade_vertebra(
    label: int,
    heights: RegionHeights | None,
    reference: Reference | None,
    *,
    flags: tuple[str, ...] = (),
    cut_faces: tuple[str, ...] = (),
    height_map: HeightMap | None = None,
    measured_map_mm: NDArray[np.float64] | None = None,
    regions: FootprintThirds | None = None,
    config: GradingConfig | None = None,
) -> VertebraGrade:
    """Grade one vertebra from its measured and reference heights.

    Parameters
    ----------
    label : int
        VerSe label (levels outside T1-L6 are measured, not graded).
    heights : RegionHeights or None
        Measured heights (mm) of the body and its thirds.
    reference : Reference or None
        Its expected healthy heights.
    flags : tuple of str
        QC flags raised so far (:class:`vertgrade.qc.QCFlag` names); those that block grading
        make the vertebra not gradable, the others lower the confidence.
    cut_faces : tuple of str
        With ``cut_by_fov``: the faces of the image that cut the body (named in the reason).
    height_map, measured_map_mm : optional
        The measured footprint grid and per-column heights (mm), for the loss map.
    regions : FootprintThirds, optional
        The footprint's thirds (with the loss map: the central loss, :func:`central_loss`).
    config : GradingConfig, optional
        Thresholds, measurement uncertainty, crush share.

    Returns
    -------
    VertebraGrade

    Examples
    --------
    >>> h = RegionHeights(body=22.0, anterior=17.0, middle=22.0, posterior=25.0)
    >>> ref = Reference(RegionHeights(25.0, 25.0, 25.0, 25.0), None, ("T12", "L2"), 0.03)
    >>> g = grade_vertebra(20, h, ref)
    >>> g.status, g.grade, g.fracture_type, round(g.rhlv["anterior"], 2)
    ('graded', 2, 'wedge', 0.32)
    >>> grade_vertebra(20, h, ref, flags=("cut_by_fov",)).reason
    'the vertebral body is cut by the edge of the field of view'
    """
    cfg = config or GradingConfig()
    out_flags = list(flags)
    if reference is not None and reference.heights is not None:
        out_flags += [f for f in reference.flags if f not in out_flags]
    reason = _not_gradable_reason(label, heights is not None, out_flags, cut_faces)
    if reference is None or reference.heights is None:
        if reason is None:
            out_flags.append(QCFlag.NO_REFERENCE.value)
            why = reference.reason if reference and reference.reason else "none"
            reason = "no usable reference: " + why
    elif (
        len(reference.sources)
        and QCFlag.ONE_SIDED_REFERENCE not in out_flags
        and _one_sided(label, reference)
    ):
        out_flags.append(QCFlag.ONE_SIDED_REFERENCE.value)

    ref_h = reference.heights if reference is not None else None
    losses: dict[str, float | None] | None = None
    lmap = None
    if heights is not None and ref_h is not None:
        losses = {r: rhlv(heights.get(r), ref_h.get(r)) for r in ("body", *THIRDS)}
        if (
            height_map is not None
            and reference is not None
            and reference.height_map_mm is not None
            and measured_map_mm is not None
        ):
            lmap = loss_map(measured_map_mm, reference.height_map_mm, height_map)
    central = None
    if lmap is not None and regions is not None and height_map is not None:
        central = central_loss(
            lmap.values, regions, step_mm=height_map.step_mm, radius_mm=cfg.central_radius_mm
        )

    shape = shape_evidence(label, heights) if cfg.shape_evidence else None
    grade = ftype = conf = basis = None
    status: Literal["graded", "not_gradable"] = "not_gradable"
    if reason is None and losses is not None:
        regional = {r: losses[r] for r in THIRDS}
        if (
            reference is not None
            and heights is not None
            and all(x is not None for x in regional.values())
        ):
            l_ant, l_mid, l_post = (float(regional[r] or 0.0) for r in THIRDS)
            evidence = {"anterior": l_ant, "middle": l_mid, "posterior": l_post}
            # the middle height as morphometry reads it: the deeper of the third's mean and the
            # centre's depression
            if central is not None:
                evidence["central"] = central.loss
                l_mid = max(l_mid, central.loss)
            # the vertebra's own shape: a wedge or a biconcave deformity against its posterior
            # wall, whatever the neighbours say
            if shape is not None:
                evidence["shape_wedge"] = shape.wedge
                evidence["shape_biconcave"] = shape.biconcave
                l_ant = max(l_ant, shape.wedge)
                l_mid = max(l_mid, shape.biconcave)
            basis = max(evidence, key=lambda k: evidence[k])
            worst = max(l_ant, l_mid, l_post)
            grade = genant_grade(worst, cfg.thresholds)
            if grade >= 1:
                ftype = fracture_type(
                    anterior=l_ant,
                    middle=l_mid,
                    posterior=l_post,
                    crush_posterior_share=cfg.crush_posterior_share,
                )
            hr = max(1e-6, min(float(heights.get(r) or 0) for r in THIRDS))
            sigma = (1.0 - worst) * float(
                np.hypot(reference.uncertainty, cfg.measurement_uncertainty_mm / hr)
            )
            conf = penalised(grade_probability(worst, sigma, cfg.thresholds), out_flags)
            status = "graded"
        else:
            reason = "regional heights incomplete"
    return VertebraGrade(
        status=status,
        reason=reason,
        grade=grade,
        fracture_type=ftype,
        confidence=conf,
        rhlv=losses,
        loss_map=lmap,
        flags=tuple(dict.fromkeys(out_flags)),
        central=central,
        shape=shape,
        basis=basis,
    )


def type_for_grade(
    grade: int,
    threshold_type: FractureType | None,
    losses: Mapping[str, float | None] | None,
    *,
    crush_posterior_share: float = CRUSH_POSTERIOR_SHARE,
) -> FractureType | None:
    """The type that goes with a grade decided otherwise (a trained classifier): none for grade
    0; the thresholds' type where they found one; else formed from the regional losses whatever
    their size.

    >>> type_for_grade(1, None, {"anterior": 0.18, "middle": 0.1, "posterior": 0.02})
    'wedge'
    >>> type_for_grade(0, "crush", None) is None
    True
    """
    if grade == 0:
        return None
    if threshold_type is not None or losses is None:
        return threshold_type
    a, m, q = (losses.get(r) for r in THIRDS)
    if a is None or m is None or q is None:
        return None
    return fracture_type(
        anterior=a, middle=m, posterior=q, crush_posterior_share=crush_posterior_share
    )
