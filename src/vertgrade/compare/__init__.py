"""Follow-up: new and worsening vertebral fractures between two CTs of one patient.

Osteoporosis trials count *incident* vertebral fractures between a baseline and a follow-up
image. :mod:`vertgrade.compare` applies their two definitions to two graded CTs
(:mod:`.config` cites the sources and says what we could and could not check against them):

- **semi-quantitative** (Genant et al., J Bone Miner Res 1993): the Genant grade rises by at
  least one;
- **quantitative** (the Fracture Intervention Trial, Black et al., Lancet 1996): the anterior,
  middle or posterior height falls by at least 20 % and at least 4 mm;

and calls a change that lies within the measurement's uncertainty ``stable``, never a new
fracture. Vertebrae are matched by label.

The modules, one stage each:

- :mod:`.config`: :class:`CompareConfig`, the definitions' thresholds and the height tolerance;
- :mod:`.scan`: :class:`Scan`, one graded study with its date, Patient ID and uncertainty;
- :mod:`.changes`: :func:`compare_vertebra`, one vertebra then and now (:class:`VertebraChange`);
- :mod:`.identity`: :func:`check_identity`, the two scans are of one patient (Patient ID, the
  spine's own shape);
- :mod:`.comparison`: :func:`compare_scans` and :class:`Comparison` (``comparison.json`` and
  ``comparison.csv`` rows);
- :mod:`.files`: :func:`write_comparison` and the JSON schema; :mod:`.html`: the page with each
  vertebra's heights over time;
- :mod:`.run`: :func:`compare_studies`, what ``vertgrade compare PRIOR CURRENT -o OUT`` does
  (grading the studies given as studies with :func:`vertgrade.workflow.grade_to_folder`).

``docs/compare.md`` describes the outputs and a worked example on phantoms.
"""

from __future__ import annotations

from vertgrade.compare.changes import STATUSES, VertebraChange, VertebraState, compare_vertebra
from vertgrade.compare.comparison import CSV_COLUMNS, SCHEMA_VERSION, Comparison, compare_scans
from vertgrade.compare.config import CompareConfig
from vertgrade.compare.files import (
    COMPARISON_FILES,
    load_schema,
    validate_comparison,
    write_comparison,
)
from vertgrade.compare.identity import IdentityCheck, check_identity
from vertgrade.compare.run import CompareOutcome, compare_studies, is_result_folder
from vertgrade.compare.scan import Scan, parse_study_date, read_scan, scan_from_document

__all__ = [
    "COMPARISON_FILES",
    "CSV_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "CompareConfig",
    "CompareOutcome",
    "Comparison",
    "IdentityCheck",
    "Scan",
    "VertebraChange",
    "VertebraState",
    "check_identity",
    "compare_scans",
    "compare_studies",
    "compare_vertebra",
    "is_result_folder",
    "load_schema",
    "parse_study_date",
    "read_scan",
    "scan_from_document",
    "validate_comparison",
    "write_comparison",
]
