"""Vertebra labels from a CT alone: a pluggable segmentation step before grading.

When ``vertgrade grade CT`` is given no ``--labels``, a segmenter makes them. The first (and so
far only) segmenter is TotalSegmentator's Python API (Wasserthal et al., Radiology: Artificial
Intelligence 2023), an optional extra (``pip install 'vertgrade[totalseg]'``):

========================  =====================================================================
task                      what it runs
========================  =====================================================================
``total`` (default)       the ``total`` task restricted (``roi_subset``) to the vertebrae C1-L5
                          and S1; labels in TotalSegmentator's ``total`` class ids, read as
                          ``label_format="totalseg-total"``. ``fast`` takes its 3 mm model.
``vertebrae``             the ``vertebrae_pp_refined`` task (TotalSegmentator >= 2.12): labels
                          in VerSe numbering; no fast model.
``bodies`` (an option)    also the ``vertebrae_body`` task (1 = body, 2 = discs), used as the
                          body mask the way ``--bodies`` is (check its licence terms for your
                          use in TotalSegmentator's documentation).
========================  =====================================================================

Everything that can be checked before any work is checked by :func:`check_segmenter`: the
package, PyTorch, and the model weights for the task (TotalSegmentator downloads them on first
use; a machine without internet access must be given them), each missing one a
:class:`SegmenterError` that names the commands that fix it. The segmentation is written into
the result folder (``segmentation/``) and its provenance (segmenter, version, task, options)
into ``result.json``.

What was run here: the glue (input conversion, the files, the labels' reading, the provenance)
is tested with TotalSegmentator's own output files for its example CT standing in for the call
(``tests/test_segment.py``); TotalSegmentator itself was not run, as its weights cannot be
downloaded on the development machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vertgrade.errors import SetupError

__all__ = [
    "SEGMENTERS",
    "SegmentOptions",
    "Segmentation",
    "SegmenterError",
    "check_segmenter",
    "run_segmenter",
    "totalseg_weights_dir",
]

SegmentTask = Literal["total", "vertebrae"]

#: The segmenters :func:`run_segmenter` knows.
SEGMENTERS = ("totalsegmentator",)

#: The ``total`` task's vertebra classes (TotalSegmentator v2 names), the ``roi_subset``.
TOTAL_VERTEBRAE = tuple(
    [f"vertebrae_C{i}" for i in range(1, 8)]
    + [f"vertebrae_T{i}" for i in range(1, 13)]
    + [f"vertebrae_L{i}" for i in range(1, 6)]
    + ["vertebrae_S1"]
)

#: The model ids (``DatasetNNN_*`` weight folders) each use needs, for TotalSegmentator 2.x
#: where its own task table cannot be read (the ids its ``totalseg_download_weights`` fetches):
#: ``total`` (1.5 mm, five parts, and the 6 mm model that crops to a ROI subset), ``total``
#: fast (3 mm), ``vertebrae_pp_refined`` (803 with the body model 305), ``vertebrae_body``.
_FALLBACK_MODEL_IDS: dict[str, tuple[int, ...]] = {
    "total": (291, 292, 293, 294, 295, 298),
    "total-fast": (297, 298),
    "vertebrae_pp_refined": (803, 305),
    "vertebrae_body": (305,),
}

_INSTALL = "pip install 'vertgrade[totalseg]' (TotalSegmentator and PyTorch)"


class SegmenterError(SetupError):
    """The segmenter cannot run (not installed, no weights, failed); the message says how to fix
    it. Raised before anything is written where it can be known beforehand."""


@dataclass(frozen=True)
class SegmentOptions:
    """How to make the labels from a CT (``vertgrade grade --segment-*``).

    Attributes
    ----------
    segmenter : {"totalsegmentator"}
    task : {"total", "vertebrae"}
        See the module docstring.
    bodies : bool
        Also segment the vertebral bodies (TotalSegmentator ``vertebrae_body``) and use them as
        the body mask.
    fast : bool
        The segmenter's fast model (``total`` only: 3 mm; coarser labels).
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:1"``); TotalSegmentator calls CUDA ``"gpu"``.
    """

    segmenter: str = "totalsegmentator"
    task: SegmentTask = "total"
    bodies: bool = False
    fast: bool = False
    device: str = "cpu"

    def check(self) -> None:
        """Raise ``ValueError`` (a usage error) for options that do not go together."""
        if self.segmenter not in SEGMENTERS:
            raise ValueError(
                f"--segmenter: {self.segmenter!r} is not one of {', '.join(SEGMENTERS)}"
            )
        if self.task not in ("total", "vertebrae"):
            raise ValueError(f"--segment-task: {self.task!r} is not one of total, vertebrae")
        if self.fast and self.task != "total":
            raise ValueError("--segment-fast: TotalSegmentator has a fast model for 'total' only")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"--device: {self.device!r} is not cpu or cuda")

    @property
    def totalseg_tasks(self) -> list[str]:
        """The TotalSegmentator tasks these options run, in order."""
        tasks = ["total" if self.task == "total" else "vertebrae_pp_refined"]
        return [*tasks, "vertebrae_body"] if self.bodies else tasks


@dataclass(frozen=True)
class Segmentation:
    """What a segmenter made: the files, how to read them, and their provenance."""

    labels: Path
    bodies: Path | None
    label_format: Literal["verse", "totalseg-total"]
    provenance: dict[str, Any] = field(default_factory=dict)

    def moved(self, folder: Path) -> Segmentation:
        """The same segmentation with its files moved into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        labels = Path(shutil.move(str(self.labels), folder / self.labels.name))
        bodies = None
        if self.bodies is not None:
            bodies = Path(shutil.move(str(self.bodies), folder / self.bodies.name))
        return Segmentation(labels, bodies, self.label_format, self.provenance)


def totalseg_weights_dir() -> Path:
    """Where TotalSegmentator keeps its weights: ``$TOTALSEG_WEIGHTS_PATH``, else
    ``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/nnunet/results`` (as
    TotalSegmentator 2.x looks for them)."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    if os.environ.get("TOTALSEG_HOME_DIR"):
        home = Path(os.environ["TOTALSEG_HOME_DIR"])
    else:
        base = Path("/tmp") if str(Path.home()) == "/" else Path.home()
        home = base / ".totalsegmentator"
    return home / "nnunet" / "results"


def _model_ids(task: str, fast: bool) -> tuple[int, ...]:
    """The weight folders' ids a TotalSegmentator task needs, from its own task table where the
    installed version has one (plain data, no PyTorch), else :data:`_FALLBACK_MODEL_IDS`."""
    try:
        from totalsegmentator.map_tasks_config import TASK_CONFIGS

        conf = TASK_CONFIGS[task]
        if "sub_modes" in conf:
            conf = conf["sub_modes"]["fast" if fast else "default"]
        ids = conf["task_id"]
        ids = tuple(ids) if isinstance(ids, list | tuple) else (int(ids),)
        if task == "total":
            ids = (*ids, 298)  # the 6 mm model crops to the ROI subset
        if task == "vertebrae_pp_refined":
            ids = (*ids, 305)
        return tuple(int(i) for i in ids)
    except Exception:
        return _FALLBACK_MODEL_IDS["total-fast" if task == "total" and fast else task]


def _download_name(task: str, fast: bool) -> str:
    """The task's name for ``totalseg_download_weights -t`` (``total_fast`` for the fast model)."""
    return "total_fast" if task == "total" and fast else task


def _missing_weights(ids: Sequence[int], weights: Path) -> list[int]:
    """The ids among ``ids`` with no ``DatasetNNN_*`` (or ``TaskNNN_*``) folder below
    ``weights`` (searched two levels deep, where versions keep them)."""
    if not weights.is_dir():
        return list(ids)
    found: set[int] = set()
    for pattern in ("*", "*/*", "*/*/*"):
        for p in weights.glob(pattern):
            name = p.name
            for prefix in ("Dataset", "Task"):
                if name.startswith(prefix) and "_" in name:
                    num = name[len(prefix) : name.index("_")]
                    if num.isdigit():
                        found.add(int(num))
    return [i for i in ids if i not in found]


def check_segmenter(options: SegmentOptions) -> str:
    """Check that the segmenter can run, before any work; return its version.

    Raises
    ------
    ValueError
        Options that do not go together.
    SegmenterError
        TotalSegmentator or PyTorch not installed, or the weights of a task not on this
        machine; the message names the commands that fix it.
    """
    options.check()
    if not _installed("totalsegmentator"):
        raise SegmenterError(
            "no --labels given, so the vertebrae would be segmented with TotalSegmentator, "
            f"which is not installed: {_INSTALL}; or give --labels"
        )
    if not _installed("torch"):
        raise SegmenterError(
            "TotalSegmentator needs PyTorch, which is not installed: pip install torch "
            "(a CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        )
    if options.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SegmenterError("--device cuda: PyTorch finds no CUDA device on this machine")
    ts_version = _totalseg_version()
    weights = totalseg_weights_dir()
    for task in options.totalseg_tasks:
        missing = _missing_weights(_model_ids(task, options.fast), weights)
        if missing:
            names = ", ".join(f"Dataset{i:03d}" for i in missing)
            raise SegmenterError(
                f"TotalSegmentator's weights for its {task!r} task are not in {weights} "
                f"(missing: {names}). On a machine with internet access run "
                f"`totalseg_download_weights -t {_download_name(task, options.fast)}` and copy "
                "that folder "
                "here (or set TOTALSEG_WEIGHTS_PATH to where it is), or give --labels"
            )
    return ts_version


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _totalseg_version() -> str:
    """The installed TotalSegmentator's version (``"unknown"`` where it has no metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("TotalSegmentator")
    except PackageNotFoundError:
        return "unknown"


def _totalseg_device(device: str) -> str:
    """TotalSegmentator's name for a torch device: ``cuda`` -> ``gpu``, ``cuda:1`` -> ``gpu:1``."""
    return "gpu" + device[4:] if device.startswith("cuda") else "cpu"


def run_segmenter(
    ct: Path,
    options: SegmentOptions,
    *,
    work_dir: Path,
    series_uid: str | None = None,
    call: Callable[..., Any] | None = None,
) -> Segmentation:
    """Segment the vertebrae of ``ct`` into ``work_dir``.

    Parameters
    ----------
    ct : Path
        A CT: a NIfTI file is given to the segmenter as it is; any other format vertgrade reads
        (DICOM, and the formats of :func:`vertgrade.io.nifti.read_volume`) is converted to a
        NIfTI in ``work_dir`` first.
    options : SegmentOptions
    work_dir : Path
        An existing folder for the files (the caller moves them into the result folder).
    series_uid : str, optional
        For a DICOM folder of several series, the one to segment.
    call : callable, optional
        The segmenter function; default ``totalsegmentator.python_api.totalsegmentator``. Tests
        pass a stand-in with the same signature.

    Raises
    ------
    SegmenterError
        The segmenter failed; its message is kept.
    InputError
        The CT cannot be read.
    """
    if call is None:
        from totalsegmentator.python_api import totalsegmentator

        call = totalsegmentator
    ts_input = _segmenter_input(ct, work_dir, series_uid)
    label_name = "vertebrae.nii.gz"
    task = options.totalseg_tasks[0]
    common: dict[str, Any] = {
        "ml": True,
        "device": _totalseg_device(options.device),
        "quiet": True,
    }
    kwargs: dict[str, Any] = {"task": task, **common}
    if task == "total":
        kwargs.update(roi_subset=list(TOTAL_VERTEBRAE), fast=options.fast)
    _call(call, ts_input, work_dir / label_name, kwargs)
    bodies = None
    if options.bodies:
        bodies = work_dir / "vertebrae_body.nii.gz"
        _call(call, ts_input, bodies, {"task": "vertebrae_body", **common})
    if ts_input != ct:
        ts_input.unlink(missing_ok=True)
    provenance = {
        "segmenter": "TotalSegmentator",
        "version": _totalseg_version(),
        "tasks": options.totalseg_tasks,
        "fast": options.fast,
        "roi_subset": "vertebrae C1-L5, S1" if task == "total" else None,
        "device": options.device,
        "files": {
            "labels": label_name,
            **({"bodies": bodies.name} if bodies is not None else {}),
        },
    }
    fmt: Literal["verse", "totalseg-total"] = "totalseg-total" if task == "total" else "verse"
    return Segmentation(work_dir / label_name, bodies, fmt, provenance)


def _call(call: Callable[..., Any], ts_input: Path, out: Path, kwargs: dict[str, Any]) -> None:
    """One segmenter call, its failure a :class:`SegmenterError` and no output a failure too."""
    try:
        call(ts_input, out, **kwargs)
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as err:  # SystemExit included: TotalSegmentator exits on some errors
        raise SegmenterError(
            f"TotalSegmentator's {kwargs['task']!r} task failed on {ts_input}: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not out.is_file():
        raise SegmenterError(
            f"TotalSegmentator's {kwargs['task']!r} task wrote no {out.name} for {ts_input}"
        )


def _segmenter_input(ct: Path, work_dir: Path, series_uid: str | None) -> Path:
    """``ct`` where TotalSegmentator reads it (NIfTI), else a NIfTI copy in ``work_dir``."""
    name = ct.name.lower()
    if ct.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        return ct
    import nibabel as nib

    from vertgrade.io.dicom import is_dicom_path, read_dicom_series

    if is_dicom_path(ct):
        vol, _, _ = read_dicom_series(ct, series_uid=series_uid)
    else:
        from vertgrade.io.nifti import read_volume

        vol, _ = read_volume(ct, kind="ct")
    path = work_dir / "ct_for_segmenter.nii.gz"
    nib.save(nib.Nifti1Image(vol.array, vol.affine), path)
    return path


def new_work_dir(near: Path) -> Path:
    """A private temporary folder beside ``near`` (same file system, so the files move)."""
    near.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".vertgrade-segment-", dir=near.parent))
