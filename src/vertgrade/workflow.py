"""One study from its files to a result folder: what ``vertgrade grade`` and every cohort worker do.

:func:`grade_to_folder` runs, in order:

1. check the output folder, the options, (with ``pdf``) the browser and (for a CT without
   labels) the segmenter, and load the model and grader files, all before any grading work, so
   that a bad option or file fails at once and nothing is written;
2. for a CT without labels, segment its vertebrae (:mod:`vertgrade.segment`:
   TotalSegmentator), the files kept in the result folder's ``segmentation/``;
3. load the study (:func:`vertgrade.io.load.load_study_with_series`: NIfTI, VerSe,
   TotalSegmentator, DICOM);
4. grade it (:func:`vertgrade.grade_study`, with the neighbour reference or the learned
   synthesis reference);
5. with a grader file, replace the threshold grades by the SVM's
   (:func:`vertgrade.synthesis.grader.apply_grader`; the threshold grade stays beside it);
6. write ``result.json``, ``vertebrae.csv``, ``alignment.csv``, ``bodies.nii.gz``
   (:func:`vertgrade.report.files.write_result`), ``synthesis.json`` with the synthesis
   reference, ``report.html`` / ``report.pdf`` with ``report`` / ``pdf``, and the DICOM outputs
   with ``dicom_out``.

The options are one value, :class:`GradeOptions`, so that a cohort passes the same options to
every worker and records them in its manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import nibabel as nib
import numpy as np

from vertgrade.config import GradingConfig
from vertgrade.errors import InputError, OutputError
from vertgrade.io.dicom import SeriesInfo, is_dicom_path
from vertgrade.io.files import check_output_dir, output_transaction, prepare_output_dir
from vertgrade.io.labels import LabelFormat
from vertgrade.io.load import load_study_with_series
from vertgrade.io.nifti import file_sha256
from vertgrade.pipeline import ProgressEvent, grade_study
from vertgrade.report.files import write_result
from vertgrade.report.pdf import require_browser
from vertgrade.result import SpineResult
from vertgrade.segment import (
    Segmentation,
    SegmentOptions,
    check_segmenter,
    new_work_dir,
    run_segmenter,
)
from vertgrade.study import Study

if TYPE_CHECKING:
    from vertgrade.synthesis.grader import Grader
    from vertgrade.synthesis.infer import Synthesiser  # imports PyTorch
    from vertgrade.synthesis.reference import SynthesisReference

__all__ = [
    "GradeOptions",
    "GradeOutcome",
    "LoadedModels",
    "StudyInputs",
    "grade_to_folder",
    "load_models",
    "needs_segmentation",
    "options_sha256",
]

ReferenceName = Literal["neighbours", "synthesis"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyInputs:
    """The files of one study.

    Attributes
    ----------
    ct : Path or None
        CT NIfTI in HU, a VerSe subject folder, or a DICOM series (folder or file).
    labels : Path or None
        Vertebra instance labels (NIfTI, DICOM SEG, a TotalSegmentator folder); may be omitted
        for a VerSe folder.
    bodies : Path or None
        A vertebral-body mask used instead of isolating the bodies from the labels.
    subject : str or None
        Subject id (default: from the file or folder name).
    series_uid : str or None
        The DICOM series to read where a folder holds several.
    """

    ct: Path | None = None
    labels: Path | None = None
    bodies: Path | None = None
    subject: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True)
class GradeOptions:
    """How to grade and what to write, besides the inputs and the output folder.

    Attributes
    ----------
    config : GradingConfig
        Every method parameter (``vertgrade grade --params FILE``).
    label_format : {"auto", "verse", "totalseg-total"}
        How label ids are read.
    reference : {"neighbours", "synthesis"}
        The healthy reference: training-free neighbours, or the learned synthesis (``model``).
    model : Path or None
        Synthesis model file (``generator.safetensors``); required with ``reference="synthesis"``.
    grader : Path or None
        SVM grader file (``train-grader``); needs the synthesis reference.
    device : str
        ``"cpu"`` or ``"cuda"`` for the synthesis.
    report, pdf : bool
        Also write ``report.html`` (``pdf``: and ``report.pdf``, which needs Chromium).
    dicom_out, anonymize : bool
        Also write the DICOM outputs into ``dicom/`` (a DICOM CT input only); ``anonymize``
        gives them new identifiers and leaves the patient's identifiers out of the report.
    segment : SegmentOptions
        How the labels are made where a CT is given without them (:mod:`vertgrade.segment`).
    """

    config: GradingConfig = field(default_factory=GradingConfig)
    label_format: LabelFormat = "auto"
    reference: ReferenceName = "neighbours"
    model: Path | None = None
    grader: Path | None = None
    device: str = "cpu"
    report: bool = False
    pdf: bool = False
    dicom_out: bool = False
    anonymize: bool = False
    segment: SegmentOptions = field(default_factory=SegmentOptions)

    def check(self) -> None:
        """Raise ``ValueError`` (a usage error) for options that do not go together."""
        self.segment.check()
        if self.label_format not in ("auto", "verse", "totalseg-total"):
            raise ValueError(
                f"--label-format: {self.label_format!r} is not one of auto, verse, totalseg-total"
            )
        if self.reference not in ("neighbours", "synthesis"):
            raise ValueError(f"--reference: {self.reference!r} is not one of neighbours, synthesis")
        if self.reference == "synthesis" and self.model is None:
            raise ValueError("--reference synthesis needs --model (a generator.safetensors file)")
        if self.grader is not None and self.reference != "synthesis":
            raise ValueError(
                "--grader works on the synthesis features: add --reference synthesis --model"
            )
        if self.anonymize and not (self.dicom_out or self.report or self.pdf):
            raise ValueError(
                "--anonymize applies to the report and the DICOM outputs: add --report, --pdf "
                "or --dicom-out"
            )


@dataclass(frozen=True)
class LoadedModels:
    """The model and grader files of :class:`GradeOptions`, loaded once (per process)."""

    synthesiser: Synthesiser | None = None
    grader: Grader | None = None


@dataclass(frozen=True)
class GradeOutcome:
    """What :func:`grade_to_folder` made: the result, the study it came from, the files."""

    result: SpineResult
    study: Study
    series: SeriesInfo | None
    files: list[Path]


def load_models(options: GradeOptions) -> LoadedModels:
    """Load the synthesis model and the grader of ``options`` (nothing for the defaults).

    Raises
    ------
    ModelFileError
        A missing, corrupt or mismatched model or grader file.
    MissingExtraError or ImportError
        The ``synthesis`` extra (PyTorch) is not installed.
    """
    synthesiser = grader = None
    # the grader first: it is plain data, read and checked in milliseconds, before PyTorch and
    # the model are loaded
    if options.grader is not None:
        from vertgrade.synthesis.grader import load_grader

        grader = load_grader(options.grader)
    if options.reference == "synthesis" and options.model is not None:
        from vertgrade.synthesis.infer import Synthesiser  # needs PyTorch: only when asked

        synthesiser = Synthesiser.from_file(options.model, device=options.device)
    return LoadedModels(synthesiser, grader)


def options_sha256(options: GradeOptions) -> str:
    """SHA-256 of everything in ``options`` that changes a result folder: the parameters, the
    label format, the reference, the model and grader files' contents, and the outputs asked
    for (a cohort redoes a study when it changes).

    >>> options_sha256(GradeOptions()) == options_sha256(GradeOptions(device="cuda"))
    True
    >>> options_sha256(GradeOptions()) == options_sha256(GradeOptions(report=True))
    False
    """
    doc: dict[str, Any] = {
        "config": options.config.to_dict(),
        "label_format": options.label_format,
        "reference": options.reference,
        "model": file_sha256(options.model) if options.model is not None else None,
        "grader": file_sha256(options.grader) if options.grader is not None else None,
        "outputs": [options.report, options.pdf, options.dicom_out, options.anonymize],
        "segment": {k: v for k, v in dataclasses.asdict(options.segment).items() if k != "device"},
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def grade_to_folder(
    inputs: StudyInputs,
    out_dir: str | Path,
    options: GradeOptions | None = None,
    *,
    force: bool = False,
    models: LoadedModels | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> GradeOutcome:
    """Load, grade and write one study (see the module docstring for the steps).

    Parameters
    ----------
    inputs : StudyInputs
        The study's files.
    out_dir : path
        The result folder; an existing non-empty one is refused without ``force``.
    options : GradeOptions, optional
        Default: neighbour reference, default parameters, result files only.
    force : bool
        Write into a non-empty folder (the result files are replaced).
    models : LoadedModels, optional
        Already loaded model and grader (a cohort worker loads them once); default: loaded
        from ``options``.
    progress : callable, optional
        Passed to :func:`vertgrade.grade_study`.

    Returns
    -------
    GradeOutcome

    Raises
    ------
    ValueError
        Options that do not go together.
    InputError, ModelFileError, OutputError
        A bad input, model file or output folder, before anything is written.
    """
    opts = options or GradeOptions()
    opts.check()
    out = check_output_dir(out_dir, force=force)
    if inputs.ct is None and inputs.labels is None:
        raise ValueError("give a CT, a VerSe folder, or --labels")
    is_dicom = inputs.ct is not None and inputs.ct.exists() and is_dicom_path(inputs.ct)
    if (inputs.series_uid or opts.dicom_out) and not is_dicom:
        raise InputError(inputs.ct, "--series and --dicom-out need a DICOM series as input")
    segmenting = needs_segmentation(inputs)
    if segmenting:
        if inputs.ct is not None and not inputs.ct.exists():
            raise InputError(inputs.ct, "no such file or folder")
        check_segmenter(opts.segment)
    if opts.pdf:
        require_browser(target=out / "report.pdf")
    loaded = models if models is not None else load_models(opts)
    if opts.reference == "synthesis" and loaded.synthesiser is None:
        raise ValueError("the synthesis reference needs its model loaded (load_models)")
    created = prepare_output_dir(out, force=force)
    study: Study | None = None
    seg: Segmentation | None = None
    work: Path | None = None
    try:
        labels, bodies, label_format = inputs.labels, inputs.bodies, opts.label_format
        if segmenting:
            assert inputs.ct is not None
            if progress is not None:
                progress(ProgressEvent("segment", 0, 1))
            logger.info(
                "no labels given: segmenting %s with TotalSegmentator (tasks %s)",
                inputs.ct,
                ", ".join(opts.segment.totalseg_tasks),
            )
            work = new_work_dir(out)
            seg = run_segmenter(
                inputs.ct, opts.segment, work_dir=work, series_uid=inputs.series_uid
            )
            if progress is not None:
                progress(ProgressEvent("segment", 1, 1))
            labels, label_format = seg.labels, seg.label_format
            bodies = bodies if bodies is not None else seg.bodies
        study, series = load_study_with_series(
            inputs.ct,
            labels,
            bodies=bodies,
            label_format=label_format,
            subject=inputs.subject,
            series_uid=inputs.series_uid,
        )
        if seg is not None:
            # the provenance names the files where they will be: in the result folder
            final = {"labels": out / SEGMENTATION_DIR / seg.labels.name}
            if seg.bodies is not None and inputs.bodies is None:
                final["bodies"] = out / SEGMENTATION_DIR / seg.bodies.name
            study = dataclasses.replace(study, inputs={**study.inputs, **final})
        logger.info(
            "loaded %s: %s grid %s, %s mm",
            study.subject,
            "".join(nib.aff2axcodes(study.grid.affine)),
            "x".join(map(str, study.grid.shape)),
            "x".join(f"{s:.3g}" for s in nib.affines.voxel_sizes(study.grid.affine)),
        )
        reference: SynthesisReference | None = None
        if loaded.synthesiser is not None and opts.reference == "synthesis":
            from vertgrade.synthesis.reference import SynthesisReference

            reference = SynthesisReference(loaded.synthesiser)
        result = grade_study(study, opts.config, reference=reference, progress=progress)
        if loaded.grader is not None:
            from vertgrade.synthesis.grader import apply_grader

            result = apply_grader(result, loaded.grader.grade(result), loaded.grader)
    except BaseException as err:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        if isinstance(err, MemoryError):
            raise _out_of_memory(inputs, study) from None
        raise

    # every output of the run is written into one staging folder and moved into place at the
    # end: all of them or none (io.files.output_transaction)
    logger.info("graded %s: %s", result.subject, _graded_line(result))
    if progress is not None:
        progress(ProgressEvent("write", 0, 1))
    try:
        with output_transaction(out, force=force, owned=OWNED_OUTPUTS, created=created) as stage:
            names: list[str] = []
            if seg is not None:
                result = dataclasses.replace(
                    result, provenance={**result.provenance, "segmentation": seg.provenance}
                )
            names += [p.name for p in write_result(result, stage)]
            if seg is not None:  # after write_result, which wants the folder empty
                seg = seg.moved(stage / SEGMENTATION_DIR)
                names += [f"{SEGMENTATION_DIR}/{n}" for n in seg.provenance["files"].values()]
            if reference is not None:
                from vertgrade.synthesis.grader import write_synthesis_features

                names.append(write_synthesis_features(result, reference, stage).name)
            if opts.report or opts.pdf:
                from vertgrade.report.html import render_report, save_report

                if progress is not None:
                    progress(ProgressEvent("report", 0, 1))
                names += [
                    p.name
                    for p in save_report(
                        render_report(result, study, series=series, anonymize=opts.anonymize),
                        stage,
                        pdf=opts.pdf,
                        force=True,
                    )
                ]
            dicom_files: list[Path] = []
            if opts.dicom_out:
                if series is None:  # pragma: no cover - checked above
                    raise OutputError(out, "DICOM outputs need a DICOM series as input")
                from vertgrade.report.dicom import write_dicom_outputs

                if progress is not None:
                    progress(ProgressEvent("dicom", 0, 1))
                dicom_files = write_dicom_outputs(
                    result,
                    series,
                    stage / "dicom",
                    anonymize=opts.anonymize,
                    ct=study.ct,
                    report_pdf=stage / "report.pdf" if opts.pdf else None,
                    force=True,
                )
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    files = [out / n for n in names] + [out / p.relative_to(stage) for p in dicom_files]
    logger.info("wrote %d files into %s", len(files), out)
    return GradeOutcome(result, study, series, files)


def _graded_line(result: SpineResult) -> str:
    """One line of counts: how many vertebrae were graded, fractured, not gradable."""
    graded = [v for v in result.vertebrae if v.status == "graded"]
    fractured = [v for v in graded if (v.grade or 0) >= 1]
    return (
        f"{len(graded)} of {len(result.vertebrae)} vertebrae graded, {len(fractured)} with "
        f"grade >= 1, {len(result.vertebrae) - len(graded)} not gradable"
    )


def _out_of_memory(inputs: StudyInputs, study: Study | None) -> InputError:
    """Out of memory, said with the image's size and what to do."""
    path = inputs.ct if inputs.ct is not None else inputs.labels
    size = ""
    if study is not None:
        vol = study.ct if study.ct is not None else study.labels
        n = int(np.prod(vol.shape))
        size = f" ({' x '.join(map(str, vol.shape))} = {n / 1e6:.0f} M voxels)"
    return InputError(
        path,
        f"ran out of memory grading this image{size}: crop the CT to the labelled spine (a "
        "T1-L5 spine at 1 mm needs about 1 GB), or use a machine with more memory",
    )


#: The folder of a result folder where the segmentation made from the CT is kept.
SEGMENTATION_DIR = "segmentation"


def needs_segmentation(inputs: StudyInputs) -> bool:
    """Whether the labels must be made from the CT: a CT (a file, or a DICOM series) and no
    ``labels``; a VerSe folder brings its own."""
    if inputs.labels is not None or inputs.ct is None:
        return False
    ct = inputs.ct
    return not (ct.is_dir() and not is_dicom_path(ct))


#: Every name vertgrade writes into a result folder: what ``--force`` replaces as a whole.
OWNED_OUTPUTS = (
    "result.json",
    "vertebrae.csv",
    "alignment.csv",
    "bodies.nii.gz",
    "synthesis.json",
    "report.html",
    "report.pdf",
    "dicom",
    SEGMENTATION_DIR,
)
