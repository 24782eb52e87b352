"""One vertebra in two scans: :func:`compare_vertebra` and the :class:`VertebraChange` it returns.

The call, for a vertebra graded in both scans (:mod:`vertgrade.compare.config` gives the
definitions and their sources):

- every regional height (anterior, middle, posterior third) is compared: change in mm and in
  per cent of the prior height (negative: a loss), and per year where the interval is known;
- the change's standard uncertainty ``u`` is the two scans' height uncertainties added in
  quadrature; a height has *fallen* where its loss exceeds the tolerance ``T = k u``
  (``k = 1.96``), *risen* where its gain does;
- **semi-quantitative** (Genant): the grade rose by at least one, *and* some height fell beyond
  ``T``, *and* the largest RHLV rose beyond its own tolerance. A grade that rises while the
  heights stay within the tolerance (a reference that changed, a loss near a threshold) is not
  a fracture: ``stable``, with a note;
- **quantitative** (FIT): some height fell by at least 20 % and 4 mm (and beyond ``T``);
- ``incident`` where either holds and the vertebra was grade 0 before, ``worsening`` where it
  was already fractured; ``improved`` where the grade fell, some height rose beyond ``T`` and
  the RHLV fell beyond its tolerance (after a vertebral augmentation, say, or where the prior
  was wrong); ``stable`` otherwise; ``not_comparable`` where the vertebra is in one scan only,
  is not gradable in either, or has no height measured in both.

The **confidence** of a call is the probability, under Gaussian error of standard deviation
``u`` on the height change, that what the call claims holds:

- SQ basis: the largest loss is real, ``Phi(loss / u)``, times the current grade's own
  confidence (the probability of that grade, from the grading);
- QM basis: the true loss reaches the QM threshold, ``Phi((loss - threshold) / u)``;
- ``incident`` / ``worsening``: the larger of the bases met; ``improved``: ``Phi(gain / u)``
  times the current grade's confidence;
- ``stable``: the true loss of the most reduced height stays below ``T``,
  ``Phi((T - loss) / u)``: 0.975 for no change, 0.5 for a loss of exactly ``T``.

The RHLV tolerance uses the results' own uncertainty fields: each scan's RHLV has the
standard uncertainty ``(1 - RHLV) * hypot(u / h, r)``, with ``h`` its smallest regional height
and ``r`` its reference's relative uncertainty (``reference.uncertainty``) where the reference
rests on other vertebrae in the two scans, and 0 where it rests on the same ones (the
neighbours' natural variation is then the same in both and cancels).

Examples
--------
>>> v0 = {"label": 20, "level": "L1", "status": "graded", "grade": 0, "type": None,
...       "confidence": 0.9, "rhlv": {"anterior": 0.05, "middle": 0.02, "posterior": 0.0},
...       "heights_mm": {"anterior": 25.0, "middle": 24.0, "posterior": 25.0},
...       "reference": {"uncertainty": 0.035, "sources": ["T12", "L2"]}}
>>> v1 = {**v0, "grade": 2, "type": "wedge", "confidence": 0.95,
...       "rhlv": {"anterior": 0.32, "middle": 0.2, "posterior": 0.01},
...       "heights_mm": {"anterior": 17.5, "middle": 20.0, "posterior": 24.8}}
>>> c = compare_vertebra(v0, v1, label=20, u_prior_mm=0.5, u_current_mm=0.5)
>>> c.status, c.basis, c.largest_loss_region, round(c.largest_loss_mm, 1)
('incident', ('semi_quantitative', 'quantitative'), 'anterior', 7.5)
>>> compare_vertebra(v0, v0, label=20, u_prior_mm=0.5, u_current_mm=0.5).status
'stable'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vertgrade.compare.config import CompareConfig
from vertgrade.levels import level_name

__all__ = [
    "REGIONS",
    "STATUSES",
    "ChangeStatus",
    "VertebraChange",
    "VertebraState",
    "compare_vertebra",
    "interval_years",
]

ChangeStatus = Literal["incident", "worsening", "stable", "improved", "not_comparable"]
#: Every status of a vertebra's change, in the order summaries list them.
STATUSES: tuple[ChangeStatus, ...] = (
    "incident",
    "worsening",
    "stable",
    "improved",
    "not_comparable",
)
#: The regional heights compared (thirds of the footprint, :mod:`vertgrade.geometry.thirds`).
REGIONS = ("anterior", "middle", "posterior")

_DAYS_PER_YEAR = 365.25


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class VertebraState:
    """A vertebra in one scan, as the comparison reads it from ``result.json``.

    ``rhlv_max`` is the largest of its regional (and central) relative height losses, the value
    its grade rests on; ``heights_mm`` has the keys of :data:`REGIONS`.
    """

    status: str
    grade: int | None
    type: str | None
    confidence: float | None
    heights_mm: dict[str, float | None]
    rhlv_max: float | None
    reference_uncertainty: float | None
    reference_sources: tuple[str, ...]
    heights_source: str | None = None
    reason: str | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def of(cls, vertebra: Mapping[str, Any]) -> VertebraState:
        """The state of a ``result.json`` vertebra (``VertebraResult.to_dict()``)."""
        heights = vertebra.get("heights_mm") or {}
        rhlv = vertebra.get("rhlv") or {}
        losses = [_num(rhlv.get(r)) for r in REGIONS]
        central = vertebra.get("central") or {}
        losses.append(_num(central.get("rhlv")))
        known = [x for x in losses if x is not None]
        ref = vertebra.get("reference") or {}
        grade = vertebra.get("grade")
        return cls(
            status=str(vertebra.get("status", "")),
            grade=int(grade) if isinstance(grade, int) and not isinstance(grade, bool) else None,
            type=vertebra.get("type"),
            confidence=_num(vertebra.get("confidence")),
            heights_mm={r: _num(heights.get(r)) for r in REGIONS},
            rhlv_max=max(known) if known else None,
            reference_uncertainty=_num(ref.get("uncertainty")),
            reference_sources=tuple(str(s) for s in ref.get("sources") or ()),
            heights_source=vertebra.get("heights_source"),
            reason=vertebra.get("reason"),
            flags=tuple(str(f) for f in vertebra.get("flags") or ()),
        )

    def min_height_mm(self) -> float | None:
        """The smallest regional height (mm), None if none is measured."""
        known = [h for h in self.heights_mm.values() if h is not None and h > 0]
        return min(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "grade": self.grade,
            "type": self.type,
            "confidence": _round(self.confidence, 2),
            "heights_mm": {r: _round(h, 2) for r, h in self.heights_mm.items()},
            "rhlv_max": _round(self.rhlv_max, 4),
            "reference_uncertainty": _round(self.reference_uncertainty, 4),
            "reference_sources": list(self.reference_sources),
            "heights_source": self.heights_source,
            "reason": self.reason,
            "flags": list(self.flags),
        }


def _round(value: float | None, nd: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), nd) + 0.0  # never -0.0


@dataclass(frozen=True)
class VertebraChange:
    """A vertebra between the prior and the current scan (see the module docstring).

    Attributes
    ----------
    label, level : int, str
        VerSe label id and level name.
    status : {"incident", "worsening", "stable", "improved", "not_comparable"}
    basis : tuple of str
        The definitions an ``incident`` or ``worsening`` call meets: ``"semi_quantitative"``,
        ``"quantitative"``; empty for the other statuses.
    confidence : float or None
        Probability that the call holds (None where not comparable).
    prior, current : VertebraState or None
        The vertebra in each scan (None where it is not in that scan).
    change_mm, change_percent : dict of str to float or None
        Per region: current minus prior (mm), and that in per cent of the prior height.
    change_mm_per_year, change_percent_per_year : dict or None
        The same per year of the interval; None where the interval is not known.
    largest_loss_region, largest_loss_mm, largest_loss_percent : str, float or None
        The region whose height fell most, and by how much (positive: a loss).
    change_uncertainty_mm, height_tolerance_mm : float or None
        ``u`` and ``T = k u`` of the height changes.
    rhlv_change, rhlv_tolerance : float or None
        Change of the largest RHLV (current minus prior) and the tolerance it is held to.
    reason : str or None
        Why the vertebra is not comparable.
    notes : tuple of str
        What a reader should know about the call (a grade change within the uncertainty...).
    """

    label: int
    level: str
    status: ChangeStatus
    basis: tuple[str, ...]
    confidence: float | None
    prior: VertebraState | None
    current: VertebraState | None
    change_mm: dict[str, float | None] = field(default_factory=dict)
    change_percent: dict[str, float | None] = field(default_factory=dict)
    change_mm_per_year: dict[str, float | None] | None = None
    change_percent_per_year: dict[str, float | None] | None = None
    largest_loss_region: str | None = None
    largest_loss_mm: float | None = None
    largest_loss_percent: float | None = None
    change_uncertainty_mm: float | None = None
    height_tolerance_mm: float | None = None
    rhlv_change: float | None = None
    rhlv_tolerance: float | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def in_prior(self) -> bool:
        return self.prior is not None

    @property
    def in_current(self) -> bool:
        return self.current is not None

    def to_dict(self) -> dict[str, Any]:
        def per_region(d: dict[str, float | None] | None, nd: int) -> dict[str, Any] | None:
            return None if d is None else {r: _round(d.get(r), nd) for r in REGIONS}

        return {
            "label": self.label,
            "level": self.level,
            "status": self.status,
            "basis": list(self.basis),
            "confidence": _round(self.confidence, 2),
            "in_prior": self.in_prior,
            "in_current": self.in_current,
            "prior": None if self.prior is None else self.prior.to_dict(),
            "current": None if self.current is None else self.current.to_dict(),
            "change": {
                "mm": per_region(self.change_mm, 2),
                "percent": per_region(self.change_percent, 1),
                "mm_per_year": per_region(self.change_mm_per_year, 2),
                "percent_per_year": per_region(self.change_percent_per_year, 1),
                "largest_loss_region": self.largest_loss_region,
                "largest_loss_mm": _round(self.largest_loss_mm, 2),
                "largest_loss_percent": _round(self.largest_loss_percent, 1),
            },
            "uncertainty": {
                "change_mm": _round(self.change_uncertainty_mm, 3),
                "height_tolerance_mm": _round(self.height_tolerance_mm, 2),
                "rhlv_change": _round(self.rhlv_change, 4),
                "rhlv_tolerance": _round(self.rhlv_tolerance, 4),
            },
            "reason": self.reason,
            "notes": list(self.notes),
        }


def _not_comparable(
    label: int,
    prior: VertebraState | None,
    current: VertebraState | None,
    reason: str,
) -> VertebraChange:
    return VertebraChange(
        label=label,
        level=level_name(label),
        status="not_comparable",
        basis=(),
        confidence=None,
        prior=prior,
        current=current,
        reason=reason,
    )


def _rhlv_sd(state: VertebraState, u_mm: float, reference_differs: bool) -> float | None:
    """Standard uncertainty of a scan's largest RHLV (see the module docstring)."""
    h = state.min_height_mm()
    if state.rhlv_max is None or h is None:
        return None
    ref = (state.reference_uncertainty or 0.0) if reference_differs else 0.0
    return (1.0 - state.rhlv_max) * math.hypot(u_mm / h, ref)


def compare_vertebra(
    prior: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    *,
    label: int,
    u_prior_mm: float,
    u_current_mm: float,
    years: float | None = None,
    config: CompareConfig | None = None,
) -> VertebraChange:
    """Compare one vertebra between two scans.

    Parameters
    ----------
    prior, current : mapping or None
        The vertebra as ``result.json`` holds it (``VertebraResult.to_dict()``) in each scan;
        None where the scan does not have it.
    label : int
        Its VerSe label id.
    u_prior_mm, u_current_mm : float
        Standard uncertainty of one regional height in each scan (mm,
        :meth:`vertgrade.compare.scan.Scan.height_uncertainty_mm`).
    years : float, optional
        The interval between the scans; the per-year changes need it (and it must be > 0).
    config : CompareConfig, optional
        The definitions' thresholds (default: :class:`CompareConfig`).

    Returns
    -------
    VertebraChange
    """
    cfg = config or CompareConfig()
    p = None if prior is None else VertebraState.of(prior)
    c = None if current is None else VertebraState.of(current)
    if p is None and c is None:
        raise ValueError(f"vertebra {label}: in neither scan")
    if p is None:
        return _not_comparable(label, p, c, "only in the current scan")
    if c is None:
        return _not_comparable(label, p, c, "only in the prior scan")
    for name, s in (("prior", p), ("current", c)):
        if s.status != "graded" or s.grade is None:
            why = f": {s.reason}" if s.reason else ""
            return _not_comparable(label, p, c, f"not gradable in the {name} scan{why}")
    assert p.grade is not None and c.grade is not None  # checked just above
    both = [r for r in REGIONS if p.heights_mm[r] is not None and c.heights_mm[r] is not None]
    if not both:
        return _not_comparable(label, p, c, "no regional height measured in both scans")

    notes: list[str] = []
    change_mm: dict[str, float | None] = dict.fromkeys(REGIONS)
    change_pct: dict[str, float | None] = dict.fromkeys(REGIONS)
    for r in both:
        hp, hc = p.heights_mm[r], c.heights_mm[r]
        assert hp is not None and hc is not None
        change_mm[r] = hc - hp
        change_pct[r] = 100.0 * (hc - hp) / hp if hp > 0 else None
    u = math.hypot(u_prior_mm, u_current_mm)
    k = cfg.change_coverage
    tol = k * u
    loss = {r: -float(change_mm[r] or 0.0) for r in both}
    worst = max(both, key=lambda r: loss[r])
    worst_loss = loss[worst]
    hp_worst = p.heights_mm[worst] or 0.0
    worst_pct = 100.0 * worst_loss / hp_worst if hp_worst > 0 else None
    fell = worst_loss > tol
    gain = max(-loss[r] for r in both)
    rose = gain > tol

    # quantitative: a height fell by >= 20 % and >= 4 mm (and beyond the tolerance)
    qm_regions = []
    for r in both:
        hp = p.heights_mm[r] or 0.0
        if (
            loss[r] >= cfg.qm_min_loss_mm
            and hp > 0
            and loss[r] >= cfg.qm_min_loss_fraction * hp
            and loss[r] > tol
        ):
            qm_regions.append(r)
    qm = bool(qm_regions)
    qm_conf = 0.0
    if qm:
        r = max(qm_regions, key=lambda x: loss[x])
        thr = max(cfg.qm_min_loss_mm, cfg.qm_min_loss_fraction * (p.heights_mm[r] or 0.0))
        qm_conf = _phi((loss[r] - thr) / u) if u > 0 else 1.0

    # the RHLV change and its tolerance
    differs = set(p.reference_sources) != set(c.reference_sources)
    sd_p = _rhlv_sd(p, u_prior_mm, differs)
    sd_c = _rhlv_sd(c, u_current_mm, differs)
    rhlv_change = rhlv_tol = None
    if p.rhlv_max is not None and c.rhlv_max is not None and sd_p is not None and sd_c is not None:
        rhlv_change = c.rhlv_max - p.rhlv_max
        rhlv_tol = k * math.hypot(sd_p, sd_c)

    # semi-quantitative: the grade rose, backed by a real loss of height and of RHLV
    rise = c.grade - p.grade
    rhlv_rose = rhlv_change is None or rhlv_tol is None or rhlv_change > rhlv_tol
    sq = rise >= cfg.sq_min_grade_rise and fell and rhlv_rose
    sq_conf = _phi(worst_loss / u) * (c.confidence if c.confidence is not None else 1.0)
    if rise >= cfg.sq_min_grade_rise and not sq:
        if not fell:
            notes.append(
                f"grade {p.grade} -> {c.grade}, but no height fell by more than the tolerance "
                f"({tol:.2f} mm; largest loss {worst_loss:.2f} mm): within the measurement's "
                "uncertainty, not counted"
            )
        else:
            notes.append(
                f"grade {p.grade} -> {c.grade}, but the RHLV rose by less than its tolerance "
                f"({rhlv_change:+.3f} <= {rhlv_tol:.3f}): not counted"
            )
    if rhlv_change is None and rise >= cfg.sq_min_grade_rise:
        notes.append("no RHLV in one of the scans: the grade rise is backed by the heights alone")

    status: ChangeStatus
    basis: tuple[str, ...] = ()
    if sq or qm:
        status = "incident" if p.grade == 0 else "worsening"
        basis = tuple(b for b, met in (("semi_quantitative", sq), ("quantitative", qm)) if met)
        confidence = max(sq_conf if sq else 0.0, qm_conf if qm else 0.0)
        if qm and not sq:
            notes.append(
                f"quantitative definition met ({worst} height -{worst_loss:.1f} mm) without a "
                f"rise of the grade ({p.grade} -> {c.grade})"
            )
    elif rise < 0 and rose and (rhlv_change is None or rhlv_tol is None or rhlv_change < -rhlv_tol):
        status = "improved"
        confidence = _phi(gain / u) * (c.confidence if c.confidence is not None else 1.0)
    else:
        status = "stable"
        confidence = _phi((tol - worst_loss) / u) if u > 0 else 1.0
        if rise < 0:
            notes.append(
                f"grade {p.grade} -> {c.grade} without a height gain beyond the tolerance: "
                "within the measurement's uncertainty"
            )
    if rose and status != "improved":
        gainer = max(both, key=lambda r: -loss[r])
        notes.append(
            f"the {gainer} height rose by {gain:.2f} mm, more than the tolerance: a vertebra "
            "does not grow, so the two measurements (or the labels) differ here"
        )
    if p.heights_source and c.heights_source and p.heights_source != c.heights_source:
        notes.append(
            f"heights from the {p.heights_source} before and the {c.heights_source} now: "
            "the two can differ by a little more than the tolerance assumes"
        )
    missing = [r for r in REGIONS if r not in both]
    if missing:
        notes.append(f"not measured in both scans: {', '.join(missing)} height")
    if differs:
        notes.append(
            "reference from other vertebrae now "
            f"({', '.join(p.reference_sources) or 'none'} -> "
            f"{', '.join(c.reference_sources) or 'none'}): the RHLV change includes the "
            "references' uncertainty"
        )

    per_year_mm = per_year_pct = None
    if years is not None and years > 0:
        per_year_mm = {r: None if v is None else v / years for r, v in change_mm.items()}
        per_year_pct = {r: None if v is None else v / years for r, v in change_pct.items()}
    return VertebraChange(
        label=label,
        level=level_name(label),
        status=status,
        basis=basis,
        confidence=confidence,
        prior=p,
        current=c,
        change_mm=change_mm,
        change_percent=change_pct,
        change_mm_per_year=per_year_mm,
        change_percent_per_year=per_year_pct,
        largest_loss_region=worst,
        largest_loss_mm=worst_loss,
        largest_loss_percent=worst_pct,
        change_uncertainty_mm=u,
        height_tolerance_mm=tol,
        rhlv_change=rhlv_change,
        rhlv_tolerance=rhlv_tol,
        notes=tuple(notes),
    )


def interval_years(days: int | None) -> float | None:
    """Years of an interval of ``days`` (365.25 days a year); None for None.

    >>> round(interval_years(730), 4), interval_years(None)
    (1.9986, None)
    """
    return None if days is None else days / _DAYS_PER_YEAR
