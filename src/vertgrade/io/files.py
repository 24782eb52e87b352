"""Writing files safely: every file vertgrade writes appears whole or not at all, and an output
folder that holds something is never written into without ``force``.

A run's outputs are one transaction (:func:`output_transaction`): they are written into a hidden
staging folder inside the output folder, under a lock on that folder (a second run into the same
folder is refused while the first holds it), and moved into place only when all of them are
written; a failure (a full disk, a bad input found late, Ctrl-C) leaves the folder as it was.
A staging folder left by a killed run is removed by the next run, and never counts as content.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from vertgrade.errors import OutputError

try:  # POSIX: advisory locks, released by the kernel when the holder dies
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

#: Name prefix of the hidden staging folders runs write into.
STAGING_PREFIX = ".vertgrade-staging-"

__all__ = [
    "STAGING_PREFIX",
    "atomic_path",
    "check_output_dir",
    "output_transaction",
    "prepare_output_dir",
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
    staging = _make_staging(out_dir)
    try:
        yield staging
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_staging(out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; outputs get normal permissions
    return staging


def _content(out: Path) -> list[Path]:
    """What a folder holds, less the staging folders of vertgrade runs (a killed run's
    leftovers are not content)."""
    return [p for p in out.iterdir() if not p.name.startswith(STAGING_PREFIX)]


def check_output_dir(out_dir: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse an output location that is a file, or a non-empty folder without ``force``."""
    out = Path(out_dir)
    if out.is_symlink() and not out.exists():
        raise OutputError(out, "output location is a dangling symbolic link")
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    if out.is_dir() and _content(out) and not force:
        raise OutputError(out, "output folder exists and is not empty (use --force to overwrite)")
    return out


def prepare_output_dir(out_dir: str | os.PathLike[str], *, force: bool = False) -> bool:
    """Check an output folder before any work: :func:`check_output_dir`, then create it (with
    its parents) and write a test file, so that a read-only place, a parent that is a file or
    a full disk is one clear error at once, not after the grading. Returns whether the folder
    was created (a failed run removes it again, see :func:`output_transaction`)."""
    out = check_output_dir(out_dir, force=force)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".vertgrade-probe-", dir=out)
        try:
            os.write(fd, b"0" * 4096)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise OutputError(out, f"cannot write here: {err.strerror or err}") from None
    return created


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (not a file in it), held while the block runs."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                out, "another vertgrade run is writing into this folder: wait for it to end"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def output_transaction(
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    owned: Sequence[str] = (),
    created: bool = False,
) -> Iterator[Path]:
    """Write a run's outputs as one: yield a staging folder; when the block succeeds, move
    everything in it into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        The output folder; refused when it holds something, without ``force``.
    force : bool
        Replace the earlier run's files: the names in ``owned`` that this run does not write
        are removed too, so that the folder never mixes two runs' outputs. Other files stay.
    owned : sequence of str
        The names (files or folders) vertgrade writes into an output folder.
    created : bool
        ``out_dir`` was created for this run (:func:`prepare_output_dir`): on failure it is
        removed again if it is empty.

    Raises
    ------
    OutputError
        A file in the way, a non-empty folder without ``force``, or another run holding the
        folder's lock.
    """
    out = check_output_dir(out_dir, force=force)
    out.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        with _folder_lock(out):
            for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by killed runs: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            staging = _make_staging(out)
            try:
                yield staging
                new = sorted(p.name for p in staging.iterdir())
                if force:
                    for name in owned:
                        if name not in new and (out / name).exists():
                            _remove(out / name)
                for name in new:
                    target = out / name
                    if (staging / name).is_dir() and target.exists():
                        _remove(target)
                    os.replace(staging / name, target)
                ok = True
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if not ok and created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
