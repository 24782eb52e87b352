"""vertgrade: interpretable grading of osteoporotic vertebral compression fractures on spine CT.

>>> import vertgrade
>>> sorted(vertgrade.__all__)[:3]
['GradingConfig', 'InputError', 'ModelFileError']
"""

from __future__ import annotations

from importlib import metadata

from vertgrade.errors import InputError, ModelFileError, OutputError, VertgradeError
from vertgrade.io.study import load_study
from vertgrade.pipeline import GradingConfig, ProgressEvent, grade_study
from vertgrade.result import SpineResult, VertebraResult
from vertgrade.volume import Study, Volume

try:
    __version__ = metadata.version("vertgrade")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

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
