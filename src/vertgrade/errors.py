"""Exceptions raised by vertgrade.

Every error about an input names the file and says what is wrong with it, so that the command line
can print one line ``error: <file>: <problem>`` and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "ModelFileError", "OutputError", "SetupError", "VertgradeError"]


class VertgradeError(Exception):
    """Base class of vertgrade's own errors."""


class InputError(VertgradeError, ValueError):
    """An input file or folder cannot be used; ``path`` names it (``None`` if not a file).

    >>> str(InputError("ct.nii.gz", "contains 3 NaN voxels"))
    'ct.nii.gz: contains 3 NaN voxels'
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class OutputError(InputError):
    """The output location cannot be written (exists without ``--force``, is a file, ...)."""


class ModelFileError(InputError):
    """A model file is missing, corrupt or made for another configuration or version."""


class SetupError(VertgradeError):
    """This machine lacks something the feature asked for needs: an optional package, a
    segmenter's model weights. The message names the command that installs it."""
