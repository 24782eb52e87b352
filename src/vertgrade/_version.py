"""The package version, alone in a module so that every layer can import it without importing
the package's public API (and through it the whole pipeline).

>>> from vertgrade._version import __version__
>>> isinstance(__version__, str)
True
"""

from __future__ import annotations

try:  # written by the build (hatch-vcs): a constant, no metadata lookup
    from vertgrade._build_version import __version__
except ImportError:  # a source tree on sys.path that was never built or installed
    from importlib import metadata

    try:
        __version__ = metadata.version("vertgrade")
    except metadata.PackageNotFoundError:
        __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
