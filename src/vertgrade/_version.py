"""The package version, alone in a module so that every layer can import it without importing
the package's public API (and through it the whole pipeline).

>>> from vertgrade._version import __version__
>>> isinstance(__version__, str)
True
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("vertgrade")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
