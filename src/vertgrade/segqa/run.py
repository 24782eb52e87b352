"""Segmentation QA of files: find the cases, read both sides, compare each, summarise the cohort.

:func:`seg_qa_files` is what ``vertgrade seg-qa`` calls; :func:`summarise` turns compared cases
(from :func:`~vertgrade.segqa.compare_case`, e.g. on volumes in memory) into the same
:class:`SegQAReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vertgrade._version import __version__
from vertgrade.evaluation.metrics import Metric
from vertgrade.io.labels import LabelFormat
from vertgrade.segqa.case import CaseQA, compare_case
from vertgrade.segqa.cohort import cohort_metrics
from vertgrade.segqa.config import SegQAConfig
from vertgrade.segqa.inputs import Pairing, pair_cases, read_side

__all__ = ["FORMAT", "SegQAProgress", "SegQAReport", "seg_qa_files", "summarise"]

logger = logging.getLogger(__name__)

#: The ``format`` of ``seg_qa.json``: its name and version (raised when a field changes
#: meaning or goes away; new fields keep it).
FORMAT = "vertgrade-seg-qa/1"


@dataclass(frozen=True)
class SegQAProgress:
    """A case done: ``done`` of ``total``, the last one ``subject``."""

    done: int
    total: int
    subject: str


@dataclass(frozen=True)
class SegQAReport:
    """Compared cases and the cohort's means.

    Attributes
    ----------
    cases : tuple of CaseQA
        By name.
    cohort : tuple of Metric
        :func:`~vertgrade.segqa.cohort.cohort_metric_names` order, intervals over patients.
    config : SegQAConfig
    n_boot, seed : int
        The bootstrap's resamples and seed.
    inputs : dict of str to str
        What was compared (``pred``, ``truth``).
    pairing : Pairing or None
        The cases found in folders, and those left out.
    """

    cases: tuple[CaseQA, ...]
    cohort: tuple[Metric, ...]
    config: SegQAConfig
    n_boot: int
    seed: int
    inputs: dict[str, str]
    pairing: Pairing | None = None

    @property
    def n_patients(self) -> int:
        return len({c.patient for c in self.cases})

    def metric(self, name: str) -> Metric:
        """The cohort metric called ``name``; ``KeyError`` if there is none."""
        for m in self.cohort:
            if m.name == name:
                return m
        raise KeyError(name)

    def case(self, subject: str) -> CaseQA:
        """The case called ``subject``; ``KeyError`` if there is none."""
        for c in self.cases:
            if c.subject == subject:
                return c
        raise KeyError(subject)

    def to_dict(self) -> dict[str, Any]:
        """``seg_qa.json`` (before rounding), described in ``docs/seg-qa.md``."""
        p = self.pairing
        return {
            "format": FORMAT,
            "vertgrade_version": __version__,
            "inputs": dict(self.inputs),
            "parameters": self.config.to_dict(),
            "bootstrap": {
                "unit": "patient",
                "n_boot": self.n_boot,
                "seed": self.seed,
                "ci_level": self.config.ci_level,
            },
            "cohort": {
                "n_cases": len(self.cases),
                "n_patients": self.n_patients,
                "n_truth_vertebrae": sum(c.summary.n_truth for c in self.cases),
                "n_pred_vertebrae": sum(c.summary.n_pred for c in self.cases),
                "metrics": {m.name: m.to_dict() for m in self.cohort},
            },
            "unpaired": {
                "pred_only": list(p.pred_only) if p else [],
                "truth_only": list(p.truth_only) if p else [],
            },
            "skipped": list(p.skipped) if p else [],
            "cases": [c.to_dict() for c in self.cases],
        }


def summarise(
    cases: Sequence[CaseQA],
    *,
    config: SegQAConfig | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    inputs: dict[str, str] | None = None,
    pairing: Pairing | None = None,
) -> SegQAReport:
    """The report of compared cases: the cohort's means with patient-bootstrap intervals.

    >>> import numpy as np
    >>> from vertgrade.segqa import CaseSide
    >>> from vertgrade.study import Volume
    >>> lab = np.zeros((3, 3, 9), np.uint8); lab[:, :, 1:4] = 20; lab[:, :, 5:8] = 21
    >>> side = CaseSide(labels=Volume(lab, np.eye(4), "labels"))
    >>> r = summarise([compare_case(side, side, subject="a")], n_boot=10)
    >>> r.metric("dice").value, r.metric("id_rate").n
    (1.0, 2)
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be 0 or more, got {n_boot}")
    cfg = config or SegQAConfig()
    ordered = tuple(sorted(cases, key=lambda c: c.subject))
    metrics = cohort_metrics(ordered, n_boot=n_boot, seed=seed, ci_level=cfg.ci_level)
    return SegQAReport(ordered, metrics, cfg, n_boot, seed, dict(inputs or {}), pairing)


def seg_qa_files(
    pred: str | Path,
    truth: str | Path,
    *,
    pred_grid: str | Path | None = None,
    truth_grid: str | Path | None = None,
    label_format: LabelFormat = "auto",
    config: SegQAConfig | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: Callable[[SegQAProgress], None] | None = None,
) -> SegQAReport:
    """Compare predicted vertebra labels with the truth, from files.

    Parameters
    ----------
    pred, truth : path
        Two label maps or VerSe centroid files (one case), or two folders of them (cases paired
        by name: :func:`~vertgrade.segqa.inputs.pair_cases`).
    pred_grid, truth_grid : path, optional
        For a centroid file given alone: the vertebra mask its voxel coordinates refer to.
    label_format : {"auto", "verse", "totalseg-total"}
        How both label maps' ids are read.
    config : SegQAConfig, optional
    n_boot : int
        Patient-bootstrap resamples of the cohort's intervals (0: none).
    seed : int
    progress : callable, optional
        Called with a :class:`SegQAProgress` after each case.

    Returns
    -------
    SegQAReport

    Raises
    ------
    InputError
        A file that cannot be used, named in the message.
    """
    cfg = config or SegQAConfig()
    pairing = pair_cases(
        Path(pred),
        Path(truth),
        pred_grid=None if pred_grid is None else Path(pred_grid),
        truth_grid=None if truth_grid is None else Path(truth_grid),
    )
    for name in (*pairing.pred_only, *pairing.truth_only):
        logger.warning("case %s is on one side only: not compared", name)
    cases = []
    for i, case in enumerate(pairing.cases):
        truth_side = read_side(case.truth, label_format=label_format, truth=True)
        pred_side = read_side(case.pred, label_format=label_format, truth=False)
        cases.append(
            compare_case(
                pred_side, truth_side, subject=case.subject, patient=case.patient, config=cfg
            )
        )
        logger.info("%s compared", case.subject)
        if progress is not None:
            progress(SegQAProgress(i + 1, len(pairing.cases), case.subject))
    return summarise(
        cases,
        config=cfg,
        n_boot=n_boot,
        seed=seed,
        inputs={"pred": str(pred), "truth": str(truth)},
        pairing=pairing,
    )
