"""vertgrade: interpretable grading of osteoporotic vertebral compression fractures on spine CT.

>>> import vertgrade
>>> sorted(vertgrade.__all__)[:3]
['GradingConfig', 'InputError', 'ModelFileError']
"""

from __future__ import annotations

from vertgrade._version import __version__
from vertgrade.config import GradingConfig
from vertgrade.errors import InputError, ModelFileError, OutputError, VertgradeError
from vertgrade.io.load import load_study
from vertgrade.pipeline import ProgressEvent, grade_study
from vertgrade.result import SpineResult, VertebraResult
from vertgrade.study import Study, Volume

__all__ = [
    "GradingConfig",
    "InputError",
    "ModelFileError",
    "OutputError",
    "ProgressEvent",
    "SpineResult",
    "Study",
    "VertebraResult",
    "VertgradeError",
    "Volume",
    "__version__",
    "grade_study",
    "load_study",
]
