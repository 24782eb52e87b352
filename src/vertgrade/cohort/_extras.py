"""The cohort extra: Dask, pandas and pyarrow, imported only when a cohort runs."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from vertgrade.errors import SetupError

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(SetupError, ImportError):
    """An optional dependency of a feature is not installed; the message says what to install."""


def require_extra(module: str, what: str) -> None:
    """Check that ``module`` is installed, or raise :class:`MissingExtraError` saying that
    ``what`` needs it. The module is found, not imported: a cohort checks its extras before any
    work and imports them only where it uses them (a rerun with nothing to do needs none).

    Parameters
    ----------
    module : str
        The module to find (``"pandas"``).
    what : str
        The feature that needs it, the start of the message (``"The cohort table"``).

    Raises
    ------
    MissingExtraError
        ``module`` is not installed (or blocked); the message says to install the cohort extra.

    >>> require_extra("json", "Reading manifests")
    """
    if not _installed(module):
        raise MissingExtraError(
            f"{what} needs the Python package {module!r}, which is not installed; "
            "install the cohort extra: pip install 'vertgrade[cohort]'"
        )


def _installed(module: str) -> bool:
    if module in sys.modules:  # imported, or blocked (None), as tests do
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
