"""Writing files safely: every file vertgrade writes appears whole or not at all, and an output
folder that holds something is never written into without ``force``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from vertgrade.errors import OutputError

__all__ = [
    "atomic_path",
    "check_output_dir",
    "staged_files",
    "write_bytes_atomic",
    "write_text_atomic",
]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary file keeps ``target``'s suffixes (``.nii.gz`` stays ``.nii.gz``), so that
    writers that choose a format by file name still do the right thing. On error the temporary
    file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name.split('.')[0]}-", suffix=suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically (newline ``\\n`` on every platform)."""
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


@contextlib.contextmanager
def staged_files(out_dir: Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``out_dir`` in which to write the files ``names``.

    When the block succeeds, each file is moved onto ``out_dir / name`` by an atomic rename (in
    the order given), so every output file appears whole; on error, or in any case afterwards,
    the staging folder is removed and earlier outputs stay as they were.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vertgrade-staging-", dir=out_dir))
    try:
        yield staging
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_output_dir(out_dir: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse an output location that is a file, or a non-empty folder without ``force``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(out, "output folder exists and is not empty (use --force to overwrite)")
    return out
