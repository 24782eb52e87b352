"""Are the two scans of one patient? :func:`check_identity` and its :class:`IdentityCheck`.

Two checks, each of which can say "mismatch":

**DICOM Patient ID**: where both scans record one (:mod:`vertgrade.compare.scan`), they must be
the same (compared as text, surrounding blanks removed).

**The spine's own shape**: vertebrae differ from person to person in size and in their
proportions along the spine, while one person's healthy vertebrae keep their heights between two
scans a few years apart. For every vertebra graded 0 in both scans, the log ratio of each
regional height (current over prior) is taken:

- the *scale* is the median ratio: the same spine gives 1 (the phantoms: within 0.3-2.7 %
  across orientations, 1-1.5 mm grids, CT and labels alone); a spine of another size does not;
- the *spread* is the root-mean-square of the log ratios about their median, each in units of
  its own measurement uncertainty (``hypot(u_prior / h_prior, u_current / h_current)``): the
  same spine stays below 1 (0.2-0.8 on the phantoms), while two spines whose vertebrae differ
  in proportion give more.

Vertebrae that are fractured in either scan are left out (their heights changed for a reason),
and so are the widths and depths of the bodies: they are measured on the voxel grid and differ
by 3-6 % between the same phantom spine at 1 mm and 1.5 mm, more than two spines may. The check
is a safeguard against a mix-up, not an identification: two people of similar size and
proportions pass it, and a spine whose labels are shifted by one level may pass it too (the
heights of adjacent levels differ by only a few per cent). The Patient ID is the primary check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from vertgrade.compare.changes import REGIONS
from vertgrade.compare.config import CompareConfig
from vertgrade.compare.scan import Scan

__all__ = ["IdentityCheck", "check_identity"]


@dataclass(frozen=True)
class IdentityCheck:
    """Whether the prior and the current scan are of one patient.

    Attributes
    ----------
    status : {"consistent", "mismatch", "unverified"}
        ``mismatch`` where either check says so; ``consistent`` where at least one check
        passed and none failed; ``unverified`` where neither could be made.
    patient_id : {"match", "mismatch", "unknown"}
        The DICOM Patient IDs (``unknown`` unless both scans record one).
    anatomy : {"consistent", "mismatch", "not_checked"}
        The spine's shape (``not_checked``: too few vertebrae graded 0 in both scans).
    levels : tuple of str
        The vertebrae the shape check used.
    scale_ratio : float or None
        Median ratio of their heights, current over prior.
    shape_spread : float or None
        Root-mean-square of their log ratios about the median, in units of their measurement
        uncertainty.
    reasons : tuple of str
        Each finding in words (what was compared and what came out).
    forced : bool
        A mismatch that the user chose to compare anyway (``--force-mismatch``).
    """

    status: Literal["consistent", "mismatch", "unverified"]
    patient_id: Literal["match", "mismatch", "unknown"]
    anatomy: Literal["consistent", "mismatch", "not_checked"]
    levels: tuple[str, ...] = ()
    scale_ratio: float | None = None
    shape_spread: float | None = None
    reasons: tuple[str, ...] = ()
    forced: bool = False

    def as_forced(self) -> IdentityCheck:
        """The same check, marked as compared despite a mismatch."""
        return replace(self, forced=True)

    def to_dict(self, config: CompareConfig | None = None) -> dict[str, Any]:
        cfg = config or CompareConfig()
        return {
            "status": self.status,
            "forced": self.forced,
            "patient_id": self.patient_id,
            "anatomy": {
                "status": self.anatomy,
                "levels": list(self.levels),
                "scale_ratio": None if self.scale_ratio is None else round(self.scale_ratio, 4),
                "shape_spread": None if self.shape_spread is None else round(self.shape_spread, 3),
                "max_scale_difference": cfg.max_scale_difference,
                "max_shape_spread": cfg.max_shape_spread,
            },
            "reasons": list(self.reasons),
        }


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) and f > 0 else None


def check_identity(
    prior: Scan, current: Scan, config: CompareConfig | None = None
) -> IdentityCheck:
    """Check that ``prior`` and ``current`` are of one patient (see the module docstring).

    Returns
    -------
    IdentityCheck
        Never raises for a mismatch: the caller decides (:func:`vertgrade.compare.compare_studies`
        raises unless forced).
    """
    cfg = config or CompareConfig()
    reasons: list[str] = []
    pid: Literal["match", "mismatch", "unknown"] = "unknown"
    if prior.patient_id is not None and current.patient_id is not None:
        if prior.patient_id.strip() == current.patient_id.strip():
            pid = "match"
            reasons.append("the DICOM Patient IDs match")
        else:
            pid = "mismatch"
            # the IDs themselves stay out of the outputs (the error message names them)
            reasons.append("the DICOM Patient IDs differ")
    else:
        missing = [n for n, s in (("prior", prior), ("current", current)) if s.patient_id is None]
        reasons.append(f"no DICOM Patient ID recorded for the {' and '.join(missing)} scan")

    u_p = prior.height_uncertainty_mm(cfg.voxel_uncertainty_fraction)
    u_c = current.height_uncertainty_mm(cfg.voxel_uncertainty_fraction)
    pv, cv = prior.vertebrae, current.vertebrae
    logs: list[float] = []
    sds: list[float] = []
    levels: list[str] = []
    for label in sorted(set(pv) & set(cv)):
        a, b = pv[label], cv[label]
        if not (a.get("status") == b.get("status") == "graded"):
            continue
        if a.get("grade") != 0 or b.get("grade") != 0:
            continue
        ha, hb = a.get("heights_mm") or {}, b.get("heights_mm") or {}
        pairs = [(_positive(ha.get(r)), _positive(hb.get(r))) for r in REGIONS]
        known = [(x, y) for x, y in pairs if x is not None and y is not None]
        if len(known) < len(REGIONS):
            continue
        levels.append(str(a.get("level")))
        for x, y in known:
            logs.append(math.log(y / x))
            sds.append(math.hypot(u_p / x, u_c / y))

    anatomy: Literal["consistent", "mismatch", "not_checked"] = "not_checked"
    scale = spread = None
    if len(levels) < cfg.min_identity_vertebrae:
        reasons.append(
            f"the spine's shape is not checked: {len(levels)} vertebra(e) graded 0 in both "
            f"scans, {cfg.min_identity_vertebrae} needed"
        )
    else:
        r = np.asarray(logs)
        med = float(np.median(r))
        scale = math.exp(med)
        spread = float(np.sqrt(np.mean(((r - med) / np.asarray(sds)) ** 2)))
        bad = []
        if abs(scale - 1.0) > cfg.max_scale_difference:
            bad.append(
                f"the healthy vertebrae's heights differ by a factor {scale:.3f} (more than "
                f"{100 * cfg.max_scale_difference:g} %)"
            )
        if spread > cfg.max_shape_spread:
            bad.append(
                f"their proportions along the spine differ (spread {spread:.2f} measurement "
                f"uncertainties, limit {cfg.max_shape_spread:g})"
            )
        span = f"{len(levels)} vertebrae graded 0 in both ({', '.join(levels)})"
        if bad:
            anatomy = "mismatch"
            reasons.append(f"the spine's shape differs: {'; '.join(bad)}; from {span}")
        else:
            anatomy = "consistent"
            reasons.append(
                f"the spine's shape agrees: height ratio {scale:.3f}, spread {spread:.2f}, "
                f"from {span}"
            )

    status: Literal["consistent", "mismatch", "unverified"]
    if "mismatch" in (pid, anatomy):
        status = "mismatch"
    elif pid == "match" or anatomy == "consistent":
        status = "consistent"
    else:
        status = "unverified"
    return IdentityCheck(
        status=status,
        patient_id=pid,
        anatomy=anatomy,
        levels=tuple(levels),
        scale_ratio=scale,
        shape_spread=spread,
        reasons=tuple(reasons),
    )
