"""Grade a cohort: many studies in parallel on Dask, resumably, gathered into one table.

The stages, in order:

- :mod:`vertgrade.cohort.discover`: the studies of a folder or CSV (:func:`discover_studies`);
- :mod:`vertgrade.cohort.run`: grading them on Dask with manifests, resuming and failures
  (:func:`run_cohort`);
- :mod:`vertgrade.cohort.table`: the one table of every vertebra (:func:`read_cohort_table`).

Dask, pandas and pyarrow are the ``cohort`` extra (``pip install 'vertgrade[cohort]'``); they
are imported only when a cohort runs.

>>> from pathlib import Path
>>> from vertgrade.cohort import StudySpec
>>> sorted(StudySpec("s01", Path("ct.nii.gz"), Path("labels.nii.gz")).inputs())
['ct', 'labels']
"""

from __future__ import annotations

from vertgrade.cohort._extras import MissingExtraError
from vertgrade.cohort.discover import StudySpec, discover_studies, skipped_folders
from vertgrade.cohort.run import (
    FAILURE_COLUMNS,
    MANIFEST_NAME,
    CohortProgress,
    CohortSummary,
    StudyFailure,
    parameters_sha256,
    run_cohort,
)
from vertgrade.cohort.table import read_cohort_table

__all__ = [
    "FAILURE_COLUMNS",
    "MANIFEST_NAME",
    "CohortProgress",
    "CohortSummary",
    "MissingExtraError",
    "StudyFailure",
    "StudySpec",
    "discover_studies",
    "parameters_sha256",
    "read_cohort_table",
    "run_cohort",
    "skipped_folders",
]
