"""Run a cohort: thousands of studies graded in parallel on Dask, resumably, into one table.

:func:`run_cohort` takes the studies of an input folder or CSV
(:func:`vertgrade.cohort.discover.discover_studies`), grades each one exactly as
``vertgrade grade`` does, with the same options (:func:`vertgrade.workflow.grade_to_folder`
with one :class:`~vertgrade.workflow.GradeOptions`: parameters, label format, reference,
model, grader, report), in parallel on a Dask distributed cluster, and gathers every vertebra
into one table (:mod:`vertgrade.cohort.table`).

Output folder
-------------
``OUT/studies/<subject>/``
    The files ``vertgrade grade`` writes (:data:`vertgrade.report.files.OUTPUT_FILES`:
    ``result.json``, ``vertebrae.csv``, ``bodies.nii.gz`` ...), and ``manifest.json``: the
    SHA-256 of each input and of the options (:func:`vertgrade.workflow.options_sha256`: the
    whole :class:`~vertgrade.config.GradingConfig`, the label format, the reference, the model
    and grader files, the outputs asked for) and the vertgrade version. The folder is written
    under a hidden temporary name beside it and renamed into place, so a finished folder is
    never half-written.
``OUT/vertebrae.csv``, ``OUT/vertebrae.parquet``
    One row per vertebra of every study of the run that is graded (in this run or, unchanged,
    in an earlier one), a ``subject`` column first, then the columns of each study's
    ``vertebrae.csv``; rebuilt at the end of every run from the finished study folders, so that
    a resumed run's table holds the studies graded before it was interrupted.
``OUT/failures.csv``
    The studies of the last run that could not be graded: ``subject, ct, labels, bodies, error``
    (one line each); header only when none failed.

Resuming
--------
A study whose folder holds a manifest with the same input checksums and the same parameters is
skipped; any change of an input file's bytes or of a parameter grades it again (inputs moved to
another path with the same bytes are not graded again). As git's index does, an input whose
path, size, modification and status-change times and inode are those in the manifest (its
``stat`` entry) is taken as unchanged without being read; any other is read and its checksum
compared (on the workers, in parallel). A file rewritten with its size and modification time
kept (``cp -p``, ``touch -r``) still has a new status-change time, so it is read again. A run in
which every study is done starts no cluster. A run that is killed loses only the studies that
were being graded; the next run cleans their temporary folders and grades them. Failed studies
are tried again by every run; a study that fails keeps the folder of an earlier run, if it has
one, but is left out of the table. One run at a time may write an output folder
(``OUT/.vertgrade-cohort.lock``; a lock left by a killed run on this machine is taken over).

Dask, pandas and pyarrow are the ``cohort`` extra (``pip install 'vertgrade[cohort]'``); they
are imported only when a cohort runs. The input files and the output folder must be reachable
under the same paths from every worker (a shared file system when ``scheduler`` is a remote
cluster).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vertgrade._version import __version__
from vertgrade.cohort._extras import require_extra
from vertgrade.cohort.discover import StudySpec, check_subject
from vertgrade.cohort.table import (
    TABLE_STAMP,
    build_table,
    count_rows,
    table_is_current,
    table_stamp,
    write_stamp,
    write_table,
)
from vertgrade.errors import InputError, OutputError, VertgradeError
from vertgrade.io.files import write_text_atomic
from vertgrade.io.load import TOTALSEG_STRUCTURE_FILE, input_checksum
from vertgrade.report.files import OUTPUT_FILES
from vertgrade.workflow import (
    GradeOptions,
    LoadedModels,
    StudyInputs,
    grade_to_folder,
    load_models,
    options_sha256,
)

__all__ = [
    "FAILURE_COLUMNS",
    "MANIFEST_NAME",
    "CohortProgress",
    "CohortSummary",
    "StudyFailure",
    "StudyStatus",
    "parameters_sha256",
    "run_cohort",
]

logger = logging.getLogger(__name__)

#: Name of the manifest in every finished study folder.
MANIFEST_NAME = "manifest.json"
#: Columns of ``failures.csv``, in order.
FAILURE_COLUMNS: tuple[str, ...] = ("subject", "ct", "labels", "bodies", "error")
#: Bumped when the manifest or the parameter hash changes meaning (every study is then redone).
_MANIFEST_VERSION = 1
# A finished study folder: the files write_result writes, and the manifest written after them.
_STUDY_FILES = (*OUTPUT_FILES, MANIFEST_NAME)
_LOCK_NAME = ".vertgrade-cohort.lock"
_TMP_MARK, _OLD_MARK = ".tmp-", ".old-"
# The label format every cohort study is read with (load_study's default); part of the hash.
_LABEL_FORMAT = "auto"

StudyStatus = Literal["graded", "skipped", "failed"]


@dataclass(frozen=True)
class StudyFailure:
    """A study that could not be graded: its subject, inputs and a one-line error."""

    subject: str
    ct: Path | None
    labels: Path
    bodies: Path | None
    error: str

    def to_row(self) -> dict[str, str]:
        """The study's row of ``failures.csv`` (see :data:`FAILURE_COLUMNS`)."""
        return {
            "subject": self.subject,
            "ct": "" if self.ct is None else str(self.ct),
            "labels": str(self.labels),
            "bodies": "" if self.bodies is None else str(self.bodies),
            "error": self.error,
        }


@dataclass(frozen=True)
class CohortProgress:
    """One study finished: its ``subject``, ``status``, and ``done`` of ``total`` studies.

    ``status`` is ``"graded"`` (graded in this run), ``"skipped"`` (already graded with the same
    inputs and parameters) or ``"failed"`` (recorded in ``failures.csv``); ``seconds`` is the
    time the study took on its worker (0 where the quick check found it done).
    """

    subject: str
    status: StudyStatus
    done: int
    total: int
    seconds: float = 0.0


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort run did.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    graded, skipped : tuple of str
        Subjects graded in this run, and those already graded with the same inputs and
        parameters (in the order of the specs).
    failures : tuple of StudyFailure
        Studies that could not be graded (also in ``failures.csv``).
    n_vertebrae : int
        Rows of the cohort table (``vertebrae.csv`` / ``vertebrae.parquet``).
    seconds : float
        Wall-clock time of the run, cluster start and table included.
    """

    out_dir: Path
    graded: tuple[str, ...]
    skipped: tuple[str, ...]
    failures: tuple[StudyFailure, ...]
    n_vertebrae: int
    seconds: float = field(compare=False)

    @property
    def total(self) -> int:
        """Number of studies in the run."""
        return len(self.graded) + len(self.skipped) + len(self.failures)

    @property
    def table_csv(self) -> Path:
        """``OUT/vertebrae.csv``: the cohort table as CSV."""
        return self.out_dir / "vertebrae.csv"

    @property
    def table_parquet(self) -> Path:
        """``OUT/vertebrae.parquet``: the cohort table, column types kept."""
        return self.out_dir / "vertebrae.parquet"

    @property
    def failures_csv(self) -> Path:
        """``OUT/failures.csv``: the studies that could not be graded."""
        return self.out_dir / "failures.csv"


@dataclass(frozen=True)
class _Outcome:
    """What a worker sends back for one study (small: no arrays)."""

    subject: str
    status: StudyStatus
    error: str | None = None
    seconds: float = 0.0


# --- parameters, manifests -----------------------------------------------------------------


def parameters_sha256(options: GradeOptions | None = None) -> str:
    """SHA-256 of everything besides the inputs that decides a study's result folder.

    That is the options (:func:`vertgrade.workflow.options_sha256`) and the vertgrade version
    (a new version may grade differently), as canonical JSON.

    >>> from vertgrade.config import GradingConfig
    >>> parameters_sha256() == parameters_sha256(GradeOptions())
    True
    >>> changed = GradeOptions(config=GradingConfig(hu_core_erosion_mm=4.0))
    >>> parameters_sha256() == parameters_sha256(changed)
    False
    """
    document = {
        "manifest_version": _MANIFEST_VERSION,
        "options": options_sha256(options or GradeOptions()),
        "vertgrade": __version__,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _study_key(checksums: dict[str, str], parameters: str) -> str:
    text = json.dumps({"inputs": checksums, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished study folder; ``None`` if missing, unreadable or incomplete."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not all((folder / f).is_file() for f in _STUDY_FILES):
        return None
    return manifest


def _stat_line(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _stat(path: Path) -> str:
    """Size, modification and status-change times (ns) and inode of an input (of each
    per-structure file of a folder).

    The status-change time (ctime) moves on every write and cannot be set back by a user or a
    tool (``touch``, ``cp -p`` and ``rsync -t`` restore the mtime only), so a file rewritten
    with its size and mtime kept is still seen as changed, as git's index sees it.
    """
    if path.is_dir():
        lines = [
            f"{p.name}:{_stat_line(p)}"
            for p in sorted(path.iterdir())
            if TOTALSEG_STRUCTURE_FILE.match(p.name)
        ]
        return "folder:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return _stat_line(path)


def _manifest(
    spec: StudySpec, checksums: dict[str, str], stats: dict[str, str], parameters: str
) -> dict[str, Any]:
    return {
        "manifest_version": _MANIFEST_VERSION,
        "subject": spec.subject,
        "inputs": {
            role: {"path": str(p), "sha256": checksums[role], "stat": stats[role]}
            for role, p in sorted(spec.inputs().items())
        },
        "parameters_sha256": parameters,
        "vertgrade_version": __version__,
        "key": _study_key(checksums, parameters),
    }


def _unchanged_by_stat(spec: StudySpec, studies_dir: Path, parameters: str) -> bool:
    """Whether the study's folder was graded from the same paths, with the same file status.

    The quick check (git's index): a file whose path, size, modification and status-change
    times (ns) and inode are those recorded (:func:`_stat`) is taken as unchanged without
    reading it. Anything else goes to :func:`_process_study`, which compares checksums.
    """
    manifest = _read_manifest(studies_dir / spec.subject)
    if manifest is None or manifest.get("parameters_sha256") != parameters:
        return False
    recorded = manifest.get("inputs")
    inputs = spec.inputs()
    if not isinstance(recorded, dict) or set(recorded) != set(inputs):
        return False
    try:
        return all(
            recorded[role].get("path") == str(p) and recorded[role].get("stat") == _stat(p)
            for role, p in inputs.items()
        )
    except (OSError, AttributeError):
        return False


# --- one study (runs on a worker) ----------------------------------------------------------


def _one_line(err: BaseException) -> str:
    text = str(err) if isinstance(err, VertgradeError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


def _process_study(
    spec: StudySpec,
    studies_dir: Path,
    options: GradeOptions,
    parameters: str,
    force: bool,
) -> _Outcome:
    """Grade one study into ``studies_dir/<subject>/`` unless it is already done; never raises.

    A study is done when its folder's manifest has the same key (input checksums and
    parameters); the checksums are computed for that only where a manifest with the same
    parameters exists (inputs moved, or touched), otherwise they come from loading. A study
    found done gets its manifest's paths and file times brought up to date (its results are
    left alone), so that the next run's quick check passes. A study to grade is graded by
    :func:`_grade_one_study` into a new folder (:func:`_new_study_folder`), with its manifest
    written last.
    """
    t0 = time.perf_counter()
    target = studies_dir / spec.subject
    try:
        inputs = spec.inputs()
        stats = {role: _stat(p) for role, p in inputs.items()}  # before reading: a file
        manifest = None if force else _read_manifest(target)  # changed meanwhile is redone
        if manifest is not None and manifest.get("parameters_sha256") == parameters:
            checksums = {role: input_checksum(p) for role, p in inputs.items()}
            if manifest.get("key") == _study_key(checksums, parameters):
                fresh = _manifest(spec, checksums, stats, parameters)
                if fresh != manifest:
                    write_text_atomic(target / MANIFEST_NAME, json.dumps(fresh, indent=2) + "\n")
                return _Outcome(spec.subject, "skipped", seconds=time.perf_counter() - t0)
        with _new_study_folder(target) as folder:
            checksums = _grade_one_study(spec, options, folder)
            text = json.dumps(_manifest(spec, checksums, stats, parameters), indent=2) + "\n"
            (folder / MANIFEST_NAME).write_text(text, encoding="utf-8")
        return _Outcome(spec.subject, "graded", seconds=time.perf_counter() - t0)
    except Exception as err:
        logger.debug("study %s failed", spec.subject, exc_info=True)
        return _Outcome(spec.subject, "failed", _one_line(err), time.perf_counter() - t0)


@contextlib.contextmanager
def _new_study_folder(target: Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target``; on success swap it in as ``target``.

    The folder has a hidden name (``.<subject>.tmp-...``, removed by :func:`_clean_stale` if
    the run is killed), so a folder under the study's own name is always complete. An existing
    ``target`` is first renamed aside and deleted after the new folder is in place; on error the
    temporary folder is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: a study folder is like any other
    old: Path | None = None
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}{_OLD_MARK}{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# --- the per-study work: the one shared workflow call -------------------------------------


@functools.lru_cache(maxsize=2)
def _models(options: GradeOptions) -> LoadedModels:
    """The model and grader of ``options``, loaded once per worker process."""
    return load_models(options)


def _grade_one_study(spec: StudySpec, options: GradeOptions, folder: Path) -> dict[str, str]:
    """Grade one study as ``vertgrade grade`` does (:func:`vertgrade.workflow.grade_to_folder`
    with ``options``) into ``folder``, an existing empty folder; return the SHA-256 of each of
    its inputs (role -> checksum), as read. Whatever loading, grading or writing raises goes to
    the caller, which records it as a failure."""
    inputs = StudyInputs(ct=spec.ct, labels=spec.labels, bodies=spec.bodies, subject=spec.subject)
    outcome = grade_to_folder(inputs, folder, options, force=True, models=_models(options))
    return {role: outcome.study.checksums[role] for role in spec.inputs()}


# --- the run -------------------------------------------------------------------------------


def _prepare_output(out: Path, force: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output location is a file, not a folder")
    if (
        out.is_dir()
        and not (out / "studies").is_dir()
        and any(p.name != _LOCK_NAME for p in out.iterdir())
        and not force
    ):
        raise OutputError(
            out,
            "output folder exists, is not empty and holds no earlier cohort run (no studies/); "
            "choose another folder or use --force",
        )
    (out / "studies").mkdir(parents=True, exist_ok=True)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _output_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.vertgrade-cohort.lock`` for the run; take over one left by a dead process."""
    lock = out / _LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text(encoding="utf-8"))
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                # being written right now, or garbage; stale only if old
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > 60:
                        lock.unlink()
                        continue
                time.sleep(0.2)
                continue
            if host == me["host"] and not _pid_alive(pid):
                logger.info("taking over the lock of a dead cohort run (pid %d)", pid)
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise OutputError(
                out,
                f"another cohort run (pid {pid} on {host}) is writing into this folder; wait "
                f"for it, or delete {lock} if no run is going on",
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        break
    else:
        raise OutputError(out, f"cannot take the lock {lock}; delete it if no run is going on")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _clean_stale(studies_dir: Path) -> None:
    """Remove temporary folders left by a killed run (only hidden names cohort runs make)."""
    for p in studies_dir.iterdir():
        if p.name.startswith(".") and (_TMP_MARK in p.name or _OLD_MARK in p.name):
            logger.info("removing %s, left by an interrupted run", p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


def _absolute(spec: StudySpec) -> StudySpec:
    def a(p: Path | None) -> Path | None:
        return None if p is None else Path(p).absolute()

    labels = Path(spec.labels).absolute()
    return StudySpec(spec.subject, a(spec.ct), labels, a(spec.bodies))


def _check_specs(specs: Sequence[StudySpec]) -> None:
    if not specs:
        raise InputError(None, "no studies to grade")
    seen: set[str] = set()
    for s in specs:
        check_subject(s.subject, None, "StudySpec")
        if s.subject in seen:
            raise InputError(None, f"subject {s.subject!r} is given twice")
        seen.add(s.subject)


@contextlib.contextmanager
def _dask_client(scheduler: str | None, workers: int | None, n_tasks: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(
                None, f"cannot reach the Dask scheduler at {scheduler!r} ({_one_line(err)})"
            ) from err
        with client:
            yield client
        return
    n = min(workers if workers is not None else _default_workers(), n_tasks)
    with _local_cluster_config():
        # Ctrl-C in a terminal signals the whole process group; the worker processes ignore it
        # (an ignored signal stays ignored in the processes started meanwhile), so that only
        # this process sees it, cancels the work and closes the cluster: no traceback of each
        # worker, and no worker left behind
        previous = _ignore_sigint()
        try:
            cluster = LocalCluster(**_local_cluster_options(n))
        finally:
            _restore_sigint(previous)
        with cluster, Client(cluster) as client:
            yield client


def _ignore_sigint() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _local_cluster_config() -> Iterator[None]:
    """Dask settings for grading workers, and this process's environment left as it was.

    Dask's nannies start worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes
    glibc's mmap threshold at 128 KiB: every large array is then mapped and unmapped afresh,
    and grading a study costs about 35 % more CPU time in page faults (measured on phantoms).
    Workers here keep glibc's adaptive default, as a plain ``vertgrade grade`` process does;
    ``OMP_NUM_THREADS=1`` and its kin stay (one thread per worker), and ``VERTGRADE_THREADS``
    is 1 unless this process sets it (a worker per core already: per-vertebra threads would
    only contend). The workers' statistical
    profiler (a thread sampling every 10 ms, for the dashboard) is off, and the event-loop tick
    (20 -> 200 ms) and the nannies' memory checks (100 -> 500 ms) are slower: an idle cluster of
    two workers then takes about 2.5 % of a core instead of 8 % (measured), which matters on a
    machine with few cores. The nannies also copy these variables into this process's
    ``os.environ``; they are removed again afterwards.
    """
    import dask

    saved = dict(os.environ)
    try:
        with dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.nanny.pre-spawn-environ.VERTGRADE_THREADS": os.environ.get(
                    "VERTGRADE_THREADS", "1"
                ),
                "distributed.worker.profile.enabled": False,
                "distributed.admin.tick.interval": "200ms",
                "distributed.worker.memory.monitor-interval": "500ms",
            }
        ):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _local_cluster_options(n_workers: int) -> dict[str, Any]:
    """``LocalCluster`` keywords: processes of one thread, no dashboard, loopback only.

    Without a dashboard the scheduler still serves HTTP (health, metrics), by default on port
    8787, and warns when another cluster holds that port; a free loopback port avoids both.
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        # workers log only what is critical: their connection errors while the cluster shuts
        # down are noise, and a study's own errors come back in its outcome
        "silence_logs": logging.CRITICAL,
    }


def _default_workers() -> int:
    """One worker per core, as many as memory allows at 4 GiB each (a whole-spine CT)."""
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    return max(1, min(int(CPU_COUNT), int(MEMORY_LIMIT // (4 * 2**30))))


def run_cohort(
    specs: Sequence[StudySpec],
    out_dir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    options: GradeOptions | None = None,
    force: bool = False,
    progress: Callable[[CohortProgress], None] | None = None,
) -> CohortSummary:
    """Grade every study, in parallel, resumably, and gather all vertebrae into one table.

    Each study is graded as ``vertgrade grade`` grades it (:func:`vertgrade.load_study`,
    :func:`vertgrade.grade_study`, :func:`vertgrade.report.files.write_result`) into
    ``out_dir/studies/<subject>/``, with a manifest of its input checksums and parameters; see
    the module's description for the output folder.

    Parameters
    ----------
    specs : sequence of StudySpec
        The studies, e.g. from :func:`discover_studies`; subjects must be unique.
    out_dir : path-like
        Output folder: missing, empty, or the folder of an earlier cohort run (resumed).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); ``"synchronous"`` grades in
        this process, one study after the other (no Dask needed; for debugging). Default: a
        Dask ``LocalCluster`` of ``workers`` processes with one thread each, for this run.
    workers : int, optional
        Number of worker processes of the local cluster; default one per core, at most one per
        4 GiB of memory. Only with the local cluster.
    options : GradeOptions, optional
        How every study is graded and what is written (default: ``GradeOptions()``, as
        ``vertgrade grade`` without options); part of every study's manifest. Bad options and
        unreadable model or grader files are refused before any study is graded.
    force : bool
        Grade every study again, even those already graded with the same inputs and parameters,
        and write into a non-empty folder that holds no earlier cohort run.
    progress : callable, optional
        Called in this process with a :class:`CohortProgress` as each study finishes.

    Returns
    -------
    CohortSummary

    Raises
    ------
    InputError
        No studies, duplicate or unusable subjects, ``workers`` with ``scheduler``.
    OutputError
        ``out_dir`` is a file, a non-empty folder of something else (without ``force``), or
        another run is writing into it.
    MissingExtraError
        Dask, pandas or pyarrow is not installed.

    Notes
    -----
    A study that fails (any exception: unreadable file, unusable labels, a worker that died) is
    recorded in ``failures.csv`` and does not stop the others. Results are the same numbers as
    grading each study alone; the cohort adds no parameter of its own.
    """
    t0 = time.perf_counter()
    _check_specs(specs)
    # absolute paths: worker processes, maybe on other machines, read and write them
    specs = [_absolute(s) for s in specs]
    local = scheduler == "synchronous"
    if scheduler is not None and workers is not None:
        raise InputError(None, "workers applies to the local cluster only, not with scheduler")
    if workers is not None and workers < 1:
        raise InputError(None, f"workers must be at least 1, not {workers}")
    require_extra("pandas", "The cohort table")
    require_extra("pyarrow", "The cohort table (vertebrae.parquet)")
    if not local:
        require_extra("distributed", "Grading a cohort in parallel")
    opts = options or GradeOptions()
    try:
        opts.check()
    except ValueError as err:
        raise InputError(None, str(err)) from err
    load_models(opts)  # a missing or bad model or grader file fails here, before any study
    parameters = parameters_sha256(opts)
    out = _prepare_output(Path(out_dir).absolute(), force)
    studies_dir = out / "studies"
    with _output_lock(out):
        _clean_stale(studies_dir)
        outcomes: dict[str, _Outcome] = {}

        def record(outcome: _Outcome) -> None:
            outcomes[outcome.subject] = outcome
            if progress is not None:
                n = len(outcomes)
                progress(
                    CohortProgress(outcome.subject, outcome.status, n, len(specs), outcome.seconds)
                )

        todo = []
        for spec in specs:
            if not force and _unchanged_by_stat(spec, studies_dir, parameters):
                record(_Outcome(spec.subject, "skipped"))
            else:
                todo.append(spec)
        if local:
            for spec in todo:
                record(_process_study(spec, studies_dir, opts, parameters, force))
        elif todo:  # no cluster when every study is done
            _run_on_dask(todo, studies_dir, opts, parameters, force, scheduler, workers, record)

        by_subject = {s.subject: s for s in specs}
        failures = tuple(
            _failure(by_subject[s.subject], outcomes[s.subject].error or "failed")
            for s in specs
            if outcomes[s.subject].status == "failed"
        )
        finished = [s.subject for s in specs if outcomes[s.subject].status != "failed"]
        stamp = table_stamp(studies_dir, finished)
        if table_is_current(out, stamp):  # nothing changed: no pandas, no rewrite
            n_rows = count_rows(out)
        else:
            (out / TABLE_STAMP).unlink(missing_ok=True)
            table = build_table(studies_dir, finished)
            write_table(table, out)
            write_stamp(out, stamp)
            n_rows = len(table)
        _write_failures(failures, out / "failures.csv")
    return CohortSummary(
        out_dir=out,
        graded=tuple(s.subject for s in specs if outcomes[s.subject].status == "graded"),
        skipped=tuple(s.subject for s in specs if outcomes[s.subject].status == "skipped"),
        failures=failures,
        n_vertebrae=n_rows,
        seconds=time.perf_counter() - t0,
    )


def _run_on_dask(
    specs: Sequence[StudySpec],
    studies_dir: Path,
    opts: GradeOptions,
    parameters: str,
    force: bool,
    scheduler: str | None,
    workers: int | None,
    record: Callable[[_Outcome], None],
) -> None:
    from distributed import as_completed

    with _dask_client(scheduler, workers, len(specs)) as client:
        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for spec in specs:
            fut = client.submit(
                _process_study,
                spec,
                studies_dir,
                opts,
                parameters,
                force,
                key=f"vertgrade-study-{spec.subject}-{run_id}",
                pure=False,
            )
            futures[fut.key] = (fut, spec.subject)
        try:
            for fut in as_completed([f for f, _ in futures.values()]):
                subject = futures[fut.key][1]
                try:
                    outcome = fut.result()
                except Exception as err:  # the worker died (KilledWorker), cancelled, ...
                    outcome = _Outcome(subject, "failed", _one_line(err))
                record(outcome)
                fut.release()
        except BaseException:
            client.cancel([f for f, _ in futures.values()])
            raise


def _failure(spec: StudySpec, error: str) -> StudyFailure:
    return StudyFailure(spec.subject, spec.ct, spec.labels, spec.bodies, error)


def _write_failures(failures: Sequence[StudyFailure], target: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FAILURE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for f in failures:
        writer.writerow(f.to_row())
    write_text_atomic(target, buf.getvalue())
