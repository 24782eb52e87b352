"""Two scans compared: :func:`compare_scans` and the :class:`Comparison` it returns.

``Comparison.to_dict()`` is the content of ``comparison.json`` (schema
``vertgrade/compare/comparison.schema.json``, version :data:`SCHEMA_VERSION`, described in
``docs/compare.md``); ``Comparison.to_records()`` gives one flat row per vertebra
(``comparison.csv``, columns :data:`CSV_COLUMNS`), so that
``pandas.DataFrame(comparison.to_records())`` works unchanged.

Vertebrae are matched by label. Every vertebra of either scan gets a row, cranial first; those
in one scan only are ``not_comparable`` and listed in the summary's ``only_in_prior`` /
``only_in_current``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vertgrade._version import __version__
from vertgrade.compare.changes import (
    REGIONS,
    STATUSES,
    VertebraChange,
    compare_vertebra,
    interval_years,
)
from vertgrade.compare.config import CompareConfig
from vertgrade.compare.identity import IdentityCheck, check_identity
from vertgrade.compare.scan import Scan
from vertgrade.levels import order_key

__all__ = ["CSV_COLUMNS", "DEFINITIONS", "SCHEMA_VERSION", "Comparison", "compare_scans"]

SCHEMA_VERSION = "1.0"

#: The definitions applied, in words, with their sources (written into ``comparison.json``).
DEFINITIONS: dict[str, dict[str, str]] = {
    "semi_quantitative": {
        "rule": "the Genant grade rises by at least one, backed by a height loss and an RHLV "
        "rise beyond the measurement's uncertainty",
        "source": "Genant HK, Wu CY, van Kuijk C, Nevitt MC. Vertebral fracture assessment "
        "using a semiquantitative technique. J Bone Miner Res 1993;8(9):1137-1148",
    },
    "quantitative": {
        "rule": "an anterior, middle or posterior height falls by at least 20 % and at least "
        "4 mm (and beyond the measurement's uncertainty)",
        "source": "Black DM et al. (Fracture Intervention Trial). Randomised trial of effect "
        "of alendronate on risk of fracture in women with existing vertebral fractures. Lancet "
        "1996;348:1535-1541",
    },
    "incident": {
        "rule": "either definition met by a vertebra graded 0 in the prior scan "
        "('worsening': by one already fractured)",
        "source": "the split of new and worsening fractures as osteoporosis trials report "
        "them (e.g. FREEDOM, Cummings SR et al. N Engl J Med 2009;361:756-765; not verified "
        "against the paper)",
    },
}


def _cell(value: float | None, nd: int) -> float | None:
    return None if value is None else round(float(value), nd) + 0.0


@dataclass(frozen=True)
class Comparison:
    """A follow-up comparison of two scans of one patient.

    Attributes
    ----------
    prior, current : Scan
        The two scans.
    vertebrae : tuple of VertebraChange
        Every vertebra of either scan, cranial first.
    identity : IdentityCheck
        Whether the two are of one patient.
    interval_days : int or None
        Current minus prior study date (days), where both are known.
    config : CompareConfig
        The thresholds used.
    notes : tuple of str
        Study-level remarks (no dates, a forced mismatch, ...).
    """

    prior: Scan
    current: Scan
    vertebrae: tuple[VertebraChange, ...]
    identity: IdentityCheck
    interval_days: int | None
    config: CompareConfig
    notes: tuple[str, ...] = ()

    @property
    def interval_years(self) -> float | None:
        """The interval in years (365.25 days), None where a date is missing."""
        return interval_years(self.interval_days)

    def levels(self, status: str) -> list[str]:
        """The levels with ``status``, cranial first."""
        return [v.level for v in self.vertebrae if v.status == status]

    @property
    def summary(self) -> dict[str, Any]:
        """Counts and levels per status, the vertebrae in one scan only, and the incident
        fractures (a fresh dict on each access)."""
        counts = {s: len(self.levels(s)) for s in STATUSES}
        return {
            "n_vertebrae": len(self.vertebrae),
            "n_in_both": sum(1 for v in self.vertebrae if v.in_prior and v.in_current),
            "n_compared": len(self.vertebrae) - counts["not_comparable"],
            "counts": counts,
            "incident_levels": self.levels("incident"),
            "worsening_levels": self.levels("worsening"),
            "improved_levels": self.levels("improved"),
            "not_comparable_levels": self.levels("not_comparable"),
            "only_in_prior": [v.level for v in self.vertebrae if not v.in_current],
            "only_in_current": [v.level for v in self.vertebrae if not v.in_prior],
        }

    def to_dict(self) -> dict[str, Any]:
        """The content of ``comparison.json``."""
        years = self.interval_years
        frac = self.config.voxel_uncertainty_fraction
        return {
            "schema_version": SCHEMA_VERSION,
            "subject": self.current.subject or self.prior.subject,
            "prior": self.prior.info(frac),
            "current": self.current.info(frac),
            "interval": {
                "days": self.interval_days,
                "years": _cell(years, 3),
                "note": None
                if self.interval_days is not None and self.interval_days > 0
                else _interval_note(self),
            },
            "identity": self.identity.to_dict(self.config),
            "summary": self.summary,
            "vertebrae": [v.to_dict() for v in self.vertebrae],
            "definitions": DEFINITIONS,
            "parameters": self.config.to_dict(),
            "notes": list(self.notes),
            "versions": {"vertgrade": __version__},
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One flat row per vertebra (``comparison.csv``), keys :data:`CSV_COLUMNS`."""
        return [_record(v) for v in self.vertebrae]


def _interval_note(c: Comparison) -> str:
    if c.interval_days is not None:
        return "the two studies have the same date: no per-year change"
    missing = [n for n, s in (("prior", c.prior), ("current", c.current)) if s.study_date is None]
    return (
        f"no study date recorded for the {' and '.join(missing)} scan: the per-year changes are "
        "null (give --prior-date / --current-date)"
    )


def _record(v: VertebraChange) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": v.label,
        "level": v.level,
        "status": v.status,
        "basis": ";".join(v.basis),
        "confidence": _cell(v.confidence, 2),
        "in_prior": v.in_prior,
        "in_current": v.in_current,
        "grade_prior": None if v.prior is None else v.prior.grade,
        "grade_current": None if v.current is None else v.current.grade,
        "type_prior": None if v.prior is None else v.prior.type,
        "type_current": None if v.current is None else v.current.type,
    }
    for r in REGIONS:
        row[f"height_{r}_prior_mm"] = (
            None if v.prior is None else _cell(v.prior.heights_mm.get(r), 2)
        )
        row[f"height_{r}_current_mm"] = (
            None if v.current is None else _cell(v.current.heights_mm.get(r), 2)
        )
    for r in REGIONS:
        row[f"change_{r}_mm"] = _cell(v.change_mm.get(r), 2)
        row[f"change_{r}_pct"] = _cell(v.change_percent.get(r), 1)
        per_year = v.change_mm_per_year or {}
        row[f"change_{r}_mm_per_year"] = _cell(per_year.get(r), 2)
    row.update(
        {
            "largest_loss_region": v.largest_loss_region,
            "largest_loss_mm": _cell(v.largest_loss_mm, 2),
            "largest_loss_pct": _cell(v.largest_loss_percent, 1),
            "height_tolerance_mm": _cell(v.height_tolerance_mm, 2),
            "rhlv_prior": None if v.prior is None else _cell(v.prior.rhlv_max, 4),
            "rhlv_current": None if v.current is None else _cell(v.current.rhlv_max, 4),
            "rhlv_change": _cell(v.rhlv_change, 4),
            "rhlv_tolerance": _cell(v.rhlv_tolerance, 4),
            "confidence_prior": None if v.prior is None else _cell(v.prior.confidence, 2),
            "confidence_current": None if v.current is None else _cell(v.current.confidence, 2),
            "reason": v.reason,
            "notes": "; ".join(v.notes),
        }
    )
    return row


def _empty_columns() -> tuple[str, ...]:
    v = VertebraChange(
        label=20,
        level="L1",
        status="not_comparable",
        basis=(),
        confidence=None,
        prior=None,
        current=None,
    )
    return tuple(_record(v))


#: Columns of ``comparison.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = _empty_columns()


def compare_scans(prior: Scan, current: Scan, config: CompareConfig | None = None) -> Comparison:
    """Compare two scans: every vertebra (matched by label), the interval, the identity check.

    A mismatch of the identity check is reported, not raised (``comparison.identity``);
    :func:`vertgrade.compare.compare_studies` raises for it unless forced.

    Raises
    ------
    ValueError
        The current study is dated before the prior one (the two are swapped?).
    """
    cfg = config or CompareConfig()
    notes: list[str] = []
    days = None
    if prior.study_date is not None and current.study_date is not None:
        days = (current.study_date - prior.study_date).days
        if days < 0:
            raise ValueError(
                f"the current study ({current.study_date.isoformat()}) is dated before the "
                f"prior one ({prior.study_date.isoformat()}): swap PRIOR and CURRENT, or give "
                "the right dates"
            )
    years = interval_years(days)
    u_p = prior.height_uncertainty_mm(cfg.voxel_uncertainty_fraction)
    u_c = current.height_uncertainty_mm(cfg.voxel_uncertainty_fraction)
    pv, cv = prior.vertebrae, current.vertebrae
    changes = tuple(
        compare_vertebra(
            pv.get(label),
            cv.get(label),
            label=label,
            u_prior_mm=u_p,
            u_current_mm=u_c,
            years=years,
            config=cfg,
        )
        for label in sorted(set(pv) | set(cv), key=order_key)
    )
    identity = check_identity(prior, current, cfg)
    if identity.status == "unverified":
        notes.append(
            "that the two scans are of one patient could not be checked: "
            + "; ".join(identity.reasons)
        )
    for name, scan in (("prior", prior), ("current", current)):
        notes += [f"{name} scan: {n}" for n in scan.notes]
    return Comparison(
        prior=prior,
        current=current,
        vertebrae=changes,
        identity=identity,
        interval_days=days,
        config=cfg,
        notes=tuple(notes),
    )


def forced(comparison: Comparison) -> Comparison:
    """The comparison marked as made despite an identity mismatch (``--force-mismatch``)."""
    return replace(
        comparison,
        identity=comparison.identity.as_forced(),
        notes=(
            *comparison.notes,
            "compared although the two scans may not be of one patient (--force-mismatch): "
            + "; ".join(comparison.identity.reasons),
        ),
    )
