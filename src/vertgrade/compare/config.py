"""The definitions and tolerances of a follow-up comparison, named once with their sources.

Two definitions of an incident vertebral fracture are in use in the large osteoporosis trials,
and :mod:`vertgrade.compare` applies both:

Semi-quantitative (SQ)
    A vertebra's Genant grade rises by at least one between the baseline and the follow-up
    image. The grading scheme is Genant HK, Wu CY, van Kuijk C, Nevitt MC, "Vertebral fracture
    assessment using a semiquantitative technique", J Bone Miner Res 1993;8(9):1137-1148. We
    checked the paper's title, authors, journal and issue, and that its abstract speaks of using
    the method "for assessing prevalent and incident vertebral fractures" on baseline and 2-year
    follow-up radiographs. We could *not* read the paper's text, so the exact wording of its
    incident rule is unverified. The rule "a rise of at least one grade" is the one the trials
    that Genant's group read are reported to use (MORE: Ettinger B et al., JAMA
    1999;282(7):637-645, whose citation we checked; FREEDOM: Cummings SR et al., N Engl J Med
    2009;361:756-765, not checked). Where those trials count a rise in a vertebra that was
    normal at baseline as *new* and a rise in an already fractured one as *worsening*, so do we
    (``incident`` and ``worsening``). That split is also from memory and unverified.

Quantitative (QM)
    Any of the anterior, middle and posterior heights falls by at least 20 % *and* at least
    4 mm between the two images. This is checked against the abstract (PubMed 8950879) of the
    Fracture Intervention Trial (FIT): Black DM et al., "Randomised trial of effect of
    alendronate on risk of fracture in women with existing vertebral fractures", Lancet
    1996;348:1535-1541 (doi:10.1016/S0140-6736(96)07088-2): "New vertebral fractures [...] were
    defined by morphometry as a decrease of 20% (and at least 4 mm) in at least one vertebral
    height between the baseline and latest follow-up radiograph". The page numbers and the
    author list beyond the first are from memory. The comparison of
    definitions of incident deformity by Black DM, Palermo L, Nevitt MC et al. (J Bone Miner
    Res 1999;14:90-101) is cited from memory and was not checked.

Both definitions were written for lateral radiographs, read by a person or measured at six
points. Here they are applied to CT heights that are means over each third of the body's
footprint (:mod:`vertgrade.morphometry`), so a 4 mm loss here is not exactly a 4 mm loss on a
radiograph. Neither trial's numbers carry over unchanged.

The measurement uncertainty
    A change that lies within the measurement's uncertainty is ``stable``, never a new
    fracture. The uncertainty of one regional height in one scan is the larger of

    - the grading's own ``measurement_uncertainty_mm`` (0.5 mm by default; read from each
      result's provenance), and
    - :data:`VOXEL_UNCERTAINTY_FRACTION` of the scan's largest voxel size.

    On the phantoms of ``docs/validation.md`` the height error is at most 0.56 mm at
    1 x 1 x 1 mm and 0.80 mm at 3 x 1 x 1 mm (mean absolute 0.08-0.22 mm); a pair of the same
    phantom spine at 1 mm and 1.5 mm (``tests/test_compare.py``) shows healthy heights that
    differ by up to 0.8 mm (3.4 %) between the two scans. A standard uncertainty of 0.5 mm per
    height and scan, or a quarter of a voxel where that is larger, covers these. Real scans add
    what the phantoms lack (a different segmentation of each scan, noise, metal, motion), which
    is why the floor is not lower. The uncertainty of a change is the two scans' uncertainties
    added in quadrature. A height has fallen, or risen, where its change exceeds
    :data:`CHANGE_COVERAGE` (1.96, two-sided 95 %) times that: 1.39 mm for two scans at 1 mm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHANGE_COVERAGE",
    "QM_MIN_LOSS_FRACTION",
    "QM_MIN_LOSS_MM",
    "SQ_MIN_GRADE_RISE",
    "VOXEL_UNCERTAINTY_FRACTION",
    "CompareConfig",
]

# --- constants ----------------------------------------------------------------------------------

#: The SQ definition: a rise of at least this many Genant grades (Genant et al. 1993).
SQ_MIN_GRADE_RISE = 1
#: The QM definition: a height falls by at least this fraction of its baseline value ...
QM_MIN_LOSS_FRACTION = 0.20
#: ... and by at least this many millimetres (FIT: Black et al., Lancet 1996).
QM_MIN_LOSS_MM = 4.0
#: Coverage factor of a change's standard uncertainty: a change beyond 1.96 standard uncertainties
#: (two-sided 95 % under Gaussian error) is a change; a smaller one is "stable".
CHANGE_COVERAGE = 1.96
#: Height uncertainty of one scan as a fraction of its largest voxel size, where that is larger
#: than the grading's ``measurement_uncertainty_mm``: the phantoms' largest height error is about
#: 0.27 of the slice thickness at 3 mm (0.80 mm, ``docs/validation.md``).
VOXEL_UNCERTAINTY_FRACTION = 0.25


@dataclass(frozen=True)
class CompareConfig:
    """Every threshold of a comparison; recorded in ``comparison.json`` (``parameters``).

    Attributes
    ----------
    sq_min_grade_rise : int
        SQ definition: the Genant grade rises by at least this much.
    qm_min_loss_fraction, qm_min_loss_mm : float
        QM definition: a height falls by at least this fraction of its baseline value and at
        least this many millimetres.
    change_coverage : float
        A height or RHLV change counts where it exceeds this many standard uncertainties.
    voxel_uncertainty_fraction : float
        Height uncertainty of a scan, as a fraction of its largest voxel size, where that
        exceeds the grading's measurement uncertainty.
    min_identity_vertebrae : int
        The anatomy check needs at least this many vertebrae graded 0 in both scans (three
        heights each); with fewer, the spine's shape is not checked.
    max_scale_difference : float
        Anatomy check: the healthy vertebrae's heights differ between the scans by a common
        factor (the median ratio) further from 1 than this: a mismatch. The same phantom spine,
        scanned in another orientation and at 1 mm, 1.25 mm or 1.5 mm, or read from its labels
        alone, differs by 0.3-2.7 %. How often two people's spines differ by more than 6 % in
        size was not measured here; two people of one size are not told apart by this test.
    max_shape_spread : float
        Anatomy check: after the common factor is removed, the root-mean-square of the heights'
        log ratios, in units of the measurement's uncertainty of a ratio, above which the two
        spines' proportions differ: a mismatch. The same phantom spine in another orientation
        and spacing gives 0.2-0.8; of 54 pairs of different 4-vertebra phantom spines whose
        vertebrae vary by 5-8 % in height, 18 exceeded 2.5.
    """

    sq_min_grade_rise: int = SQ_MIN_GRADE_RISE
    qm_min_loss_fraction: float = QM_MIN_LOSS_FRACTION
    qm_min_loss_mm: float = QM_MIN_LOSS_MM
    change_coverage: float = CHANGE_COVERAGE
    voxel_uncertainty_fraction: float = VOXEL_UNCERTAINTY_FRACTION
    min_identity_vertebrae: int = 2
    max_scale_difference: float = 0.06
    max_shape_spread: float = 2.5

    def to_dict(self) -> dict[str, Any]:
        """The parameters as ``comparison.json`` records them.

        >>> CompareConfig().to_dict()["qm_min_loss_mm"]
        4.0
        """
        return dataclasses.asdict(self)
