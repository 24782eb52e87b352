"""The cohort extra: Dask, pandas and pyarrow, imported only when a cohort runs."""

from __future__ import annotations

import importlib

from vertgrade.errors import SetupError

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(SetupError, ImportError):
    """An optional dependency of a feature is not installed; the message says what to install."""


def require_extra(module: str, what: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` saying that ``what`` needs it.

    Parameters
    ----------
    module : str
        The module to import (``"pandas"``).
    what : str
        The feature that needs it, the start of the message (``"The cohort table"``).

    Raises
    ------
    MissingExtraError
        ``module`` cannot be imported; the message says to install the cohort extra.

    >>> require_extra("json", "Reading manifests")
    """
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs the Python package {module!r}, which is not installed; "
            "install the cohort extra: pip install 'vertgrade[cohort]'"
        ) from err
