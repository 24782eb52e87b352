"""Segmentation QA, ``vertgrade seg-qa``: the VerSe benchmark's metrics for a user's labels.

The grade can only be as good as the labels. This package scores a predicted vertebra labelling
against a true one the way the VerSe benchmark does (Sekuboyina et al., Medical Image Analysis
2021): labelling by identification rate and localisation distance, segmentation by Dice and
Hausdorff distance per vertebra; and it names the errors that matter to grading: missing and
extra vertebrae, merged and split ones, and a map that is right but off by one level.

The stages, one module each:

- :mod:`.metrics`: the maths (overlaps, Dice, surface distances, centroids, identification,
  level steps);
- :mod:`.case`: one case, vertebra by vertebra (:func:`compare_case`);
- :mod:`.cohort`: a cohort's means with patient-bootstrap intervals;
- :mod:`.inputs`: label maps and VerSe centroid files, one case or folders paired by name;
- :mod:`.run`: files in, :class:`SegQAReport` out (:func:`seg_qa_files`);
- :mod:`.output`: ``seg_qa.json`` and ``seg_qa.csv`` (:func:`write_seg_qa`), terminal tables;
- :mod:`.config`: the parameters (:class:`SegQAConfig`).

``docs/seg-qa.md`` defines every quantity and says where it differs from VerSe's evaluation.

Examples
--------
>>> import numpy as np
>>> from vertgrade.study import Volume
>>> truth = np.zeros((4, 4, 12), np.uint8); truth[:, :, 1:5] = 20; truth[:, :, 6:10] = 21
>>> pred = np.where(truth > 0, truth - 1, 0).astype(np.uint8)  # every label one level up
>>> qa = compare_case(
...     CaseSide(labels=Volume(pred, np.eye(4), "labels")),
...     CaseSide(labels=Volume(truth, np.eye(4), "labels")),
... )
>>> qa.summary.label_shift, qa.summary.mean_dice, qa.summary.mean_dice_if_relabelled
(1, 0.0, 1.0)
"""

from __future__ import annotations

from vertgrade.segqa.case import (
    CSV_COLUMNS,
    CaseQA,
    CaseSide,
    CaseSummary,
    VertebraQA,
    compare_case,
)
from vertgrade.segqa.cohort import cohort_metric_names, cohort_metrics
from vertgrade.segqa.config import SegQAConfig
from vertgrade.segqa.inputs import CaseFiles, Pairing, SideFiles, pair_cases, read_side
from vertgrade.segqa.output import (
    SEG_QA_FILES,
    cases_table,
    cohort_table,
    seg_qa_document,
    vertebrae_table,
    write_seg_qa,
)
from vertgrade.segqa.run import FORMAT, SegQAProgress, SegQAReport, seg_qa_files, summarise

__all__ = [
    "CSV_COLUMNS",
    "FORMAT",
    "SEG_QA_FILES",
    "CaseFiles",
    "CaseQA",
    "CaseSide",
    "CaseSummary",
    "Pairing",
    "SegQAConfig",
    "SegQAProgress",
    "SegQAReport",
    "SideFiles",
    "VertebraQA",
    "cases_table",
    "cohort_metric_names",
    "cohort_metrics",
    "cohort_table",
    "compare_case",
    "pair_cases",
    "read_side",
    "seg_qa_document",
    "seg_qa_files",
    "summarise",
    "vertebrae_table",
    "write_seg_qa",
]
