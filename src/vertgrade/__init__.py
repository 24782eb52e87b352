"""vertgrade: interpretable grading of osteoporotic vertebral compression fractures on spine CT.

The public API is imported on first use (PEP 562), so that ``import vertgrade`` and the command
line's ``--help`` and ``--version`` start at once; ``from vertgrade import grade_study`` works as
usual.

>>> import vertgrade
>>> sorted(vertgrade.__all__)[:3]
['GradingConfig', 'InputError', 'ModelFileError']
>>> vertgrade.grade_study.__module__
'vertgrade.pipeline'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vertgrade._version import __version__

if TYPE_CHECKING:
    from vertgrade.config import GradingConfig
    from vertgrade.errors import InputError, ModelFileError, OutputError, VertgradeError
    from vertgrade.io.load import load_study
    from vertgrade.pipeline import ProgressEvent, grade_study
    from vertgrade.report.files import write_result
    from vertgrade.result import RegionValues, SpineResult, VertebraResult
    from vertgrade.study import Study, Volume

#: Public name -> the module that defines it.
_WHERE = {
    "GradingConfig": "vertgrade.config",
    "InputError": "vertgrade.errors",
    "ModelFileError": "vertgrade.errors",
    "OutputError": "vertgrade.errors",
    "VertgradeError": "vertgrade.errors",
    "load_study": "vertgrade.io.load",
    "ProgressEvent": "vertgrade.pipeline",
    "grade_study": "vertgrade.pipeline",
    "write_result": "vertgrade.report.files",
    "RegionValues": "vertgrade.result",
    "SpineResult": "vertgrade.result",
    "VertebraResult": "vertgrade.result",
    "Study": "vertgrade.study",
    "Volume": "vertgrade.study",
}

__all__ = [
    "GradingConfig",
    "InputError",
    "ModelFileError",
    "OutputError",
    "ProgressEvent",
    "RegionValues",
    "SpineResult",
    "Study",
    "VertebraResult",
    "VertgradeError",
    "Volume",
    "__version__",
    "grade_study",
    "load_study",
    "write_result",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (and keep the name here)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vertgrade' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
