"""Gzip files inflated in one call, optionally ahead of time in a background thread.

nibabel reads a ``.nii.gz`` through :mod:`gzip`'s chunked reader and then copies the voxels out
of it; inflating the whole file in one call into one buffer and viewing the voxels in place
takes about three quarters of the time (:func:`inflate`), half with python-isal installed (the
``fast`` extra; ISA-L's inflate, about twice zlib's speed). :func:`prefetch` starts that work
in a thread (both inflaters release the GIL), so that the command line reads the CT while it
imports the rest of vertgrade; :func:`take` hands the bytes over, if they are of the same file
as it is now.

This module imports nothing heavy: it runs before numpy is loaded.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

__all__ = ["inflate", "prefetch", "take"]

_isal: Any
try:  # the `fast` extra
    from isal import igzip as _isal
except ImportError:  # pragma: no cover - depends on the installation
    _isal = None

_LOCK = threading.Lock()
_PENDING: dict[tuple[str, int, int], _Job] = {}


def inflate(path: str | os.PathLike[str]) -> bytes:
    """The uncompressed content of a gzip file (every member of a multi-member file).

    Raises
    ------
    OSError, zlib.error, EOFError
        An unreadable, corrupt or truncated file.
    """
    data = Path(path).read_bytes()
    if _isal is not None:
        out: bytes = _isal.decompress(data)
        return out
    parts = []
    while data:
        d = zlib.decompressobj(wbits=31)
        parts.append(d.decompress(data))
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        data = d.unused_data.lstrip(b"\x00")
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Job:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.result: bytes | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vertgrade-inflate", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = inflate(self.path)
        except BaseException as err:  # handed to the reader, which reads again and reports it
            self.error = err


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def prefetch(path: str | os.PathLike[str]) -> None:
    """Start inflating ``path`` (a ``.gz`` file) in a background thread; nothing for other
    files, a missing one or one already started."""
    p = Path(path)
    if not p.name.lower().endswith(".gz") or not p.is_file():
        return
    key = _key(p)
    if key is None:
        return
    with _LOCK:
        if key not in _PENDING:
            _PENDING[key] = _Job(p)


def take(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes :func:`prefetch` inflated for ``path`` (waiting for them), or ``None`` where
    none was started, it failed, or the file changed since."""
    p = Path(path)
    key = _key(p)
    if key is None:
        return None
    with _LOCK:
        job = _PENDING.pop(key, None)
    if job is None:
        return None
    job.thread.join()
    return job.result if job.error is None and _key(p) == key else None
