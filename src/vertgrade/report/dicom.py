"""DICOM outputs of a graded study, for PACS: a Structured Report with every measurement, a
Segmentation of the vertebral bodies, the overview figure, and the PDF report where one is given.

:func:`write_dicom_outputs` writes, into one folder:

==========================  ========================================================================
file                        content
==========================  ========================================================================
``measurements_sr.dcm``     Comprehensive 3D SR, TID 1500 Measurement Report: one TID 1411
                            measurement group per vertebra (tracking identifier and UID, finding
                            site, the SEG segment it measures), with anterior / middle / posterior /
                            body heights (mm), RHLV per region (%), trabecular attenuation (HU),
                            the grade's confidence, and coded Genant grade, fracture type and QC
                            flags; every CT image is listed as evidence
``bodies_seg.dcm``          Segmentation (binary), one segment per vertebral body on the CT's own
                            frames; the grade is in each segment's description, and each segment
                            carries the tracking UID of its SR measurement group
``overview_sc.dcm``         the overview figure as a Secondary Capture image (RGB): a figure given
                            as PNG or array, else the report's spine overview
                            (:func:`overview_image`); always written, with or without a PDF
``report_pdf.dcm``          the PDF report as Encapsulated PDF, where one is given
==========================  ========================================================================

The outputs join the input's study (same StudyInstanceUID, patient and study identifiers), each
in a new series, so that PACS files them with the CT. With ``anonymize=True`` they carry
instead a pseudonymous patient name and ID and new UIDs for study, series, frame of reference
and the referenced CT images (consistent across the outputs of one call), nothing else from
the input's patient and study modules, and say so (PatientIdentityRemoved ``YES``,
DeidentificationMethod and its code sequence).

Codes: standard codes where DICOM has them (DCM 121207 "Height", DCM 112031 "Attenuation
Coefficient", SNOMED CT vertebrae, anatomic modifiers Anterior / Central / Posterior, Mean /
Median derivations, UCUM units); vertgrade's own concepts (RHLV, Genant grade and its values,
fracture types, QC flags, T13 and L6) use the private coding scheme :data:`LOCAL_SCHEME`,
declared in each output's CodingSchemeIdentificationSequence. ``docs/dicom.md`` lists them all.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from vertgrade._version import __version__
from vertgrade.errors import InputError, OutputError
from vertgrade.geometry.thirds import THIRDS
from vertgrade.io.dicom import SeriesInfo
from vertgrade.io.files import check_output_dir
from vertgrade.levels import VERTEBRA_SCT_CODES, anatomical_order, level_name
from vertgrade.report.figures import figure_rgb, overview_figure
from vertgrade.report.style import grade_rgb
from vertgrade.result import SpineResult, VertebraResult
from vertgrade.study import Volume

if TYPE_CHECKING:
    from highdicom.sr import CodedConcept
    from pydicom.dataset import Dataset

__all__ = [
    "DICOM_OUTPUT_FILES",
    "LOCAL_CODES",
    "LOCAL_SCHEME",
    "QC_FLAG_CODES",
    "SERIES_NUMBERS",
    "overview_image",
    "write_dicom_outputs",
]

#: File names in the output folder, by role.
DICOM_OUTPUT_FILES: dict[str, str] = {
    "sr": "measurements_sr.dcm",
    "seg": "bodies_seg.dcm",
    "sc": "overview_sc.dcm",
    "pdf": "report_pdf.dcm",
}
#: Series numbers of the new series (high, so that they sort after the scanner's series).
SERIES_NUMBERS: dict[str, int] = {"sr": 9901, "seg": 9902, "sc": 9903, "pdf": 9904}

#: Private coding scheme designator of vertgrade's own concepts ("99" prefix: PS3.16 8.2).
LOCAL_SCHEME = "99VERTGRADE"
#: vertgrade's own codes: key -> (CodeValue, CodeMeaning). Values are at most 16 characters
#: (SH) and meanings at most 64 (LO).
LOCAL_CODES: dict[str, tuple[str, str]] = {
    "rhlv": ("RHLV", "Relative height loss of vertebral body"),
    "genant_grade": ("GENANT-GRADE", "Genant semiquantitative fracture grade"),
    "grade_0": ("GENANT-0", "Genant grade 0 (normal)"),
    "grade_1": ("GENANT-1", "Genant grade 1 (mild)"),
    "grade_2": ("GENANT-2", "Genant grade 2 (moderate)"),
    "grade_3": ("GENANT-3", "Genant grade 3 (severe)"),
    "not_gradable": ("NOT-GRADABLE", "Not gradable"),
    "fracture_type": ("FX-TYPE", "Vertebral fracture type"),
    "wedge": ("FX-WEDGE", "Wedge fracture (anterior height loss)"),
    "biconcave": ("FX-BICONCAVE", "Biconcave fracture (middle height loss)"),
    "crush": ("FX-CRUSH", "Crush fracture (posterior height loss)"),
    "confidence": ("GRADE-CONF", "Probability that the grade is right"),
    "qc_flag": ("QC-FLAG", "Quality control flag"),
    "heights_ct": ("HEIGHTS-CT", "Endplates refined on CT intensity edges"),
    "heights_mask": ("HEIGHTS-MASK", "Endplates from the segmentation mask"),
    "trabecular_core": ("TRAB-CORE", "Trabecular core, body eroded 5 mm"),
    "T13": ("T13", "T13 vertebra"),
    "L6": ("L6", "L6 vertebra"),
    "other_flag": ("QC-OTHER", "Other quality control flag"),
}
#: QC flag name (see :data:`vertgrade.result.QC_FLAGS`) -> local CodeValue.
QC_FLAG_CODES: dict[str, str] = {
    "cut_by_fov": "QC-CUT-FOV",
    "touches_fov_edge": "QC-TOUCH-FOV",
    "posterior_elements_cut": "QC-POST-CUT",
    "label_fragments": "QC-FRAGMENTS",
    "axis_from_centreline": "QC-AXIS-CURVE",
    "axis_deviates": "QC-AXIS-DEVIATES",
    "implausible_size": "QC-SIZE",
    "body_too_deep": "QC-DEEP",
    "no_reference": "QC-NO-REF",
    "one_sided_reference": "QC-ONE-SIDED-REF",
    "single_source_reference": "QC-SINGLE-REF",
    "few_healthy_neighbours": "QC-FEW-HEALTHY",
    "atypical_spine_shape": "QC-SPINE-SHAPE",
    "mask_ct_disagree": "QC-MASK-CT",
    "ct_edges_sparse": "QC-CT-SPARSE",
    "canal_not_found": "QC-NO-CANAL",
    "level_order": "QC-LEVEL-ORDER",
    "coarse_slices": "QC-COARSE",
    "too_coarse": "QC-TOO-COARSE",
    "labels_off_bone": "QC-OFF-BONE",
    "outside_ct": "QC-OUTSIDE-CT",
    "centre_off_curve": "QC-OFF-CURVE",
    "label_split": "QC-SPLIT-LABEL",
    "label_too_small": "QC-TINY-LABEL",
    "no_body": "QC-NO-BODY",
    "level_not_graded": "QC-LEVEL",
}

# Standard codes: (value, scheme, meaning).
_HEIGHT = ("121207", "DCM", "Height")
_ATTENUATION = ("112031", "DCM", "Attenuation Coefficient")
_MEAN = ("373098007", "SCT", "Mean")
_MEDIAN = ("373099004", "SCT", "Median")
_MODIFIERS = {
    "anterior": ("255549009", "SCT", "Anterior"),
    "middle": ("26216008", "SCT", "Central"),
    "posterior": ("255551008", "SCT", "Posterior"),
}
_ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")
# CID 7162: body isolation is morphological (the spinal canal's hole in the axial projection)
_MORPHOLOGICAL = ("123104", "DCM", "Morphological Operations")
_PROCEDURE = ("25045-6", "LN", "CT unspecified body region")
_BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
_UNITS = {
    "mm": ("mm", "UCUM", "millimeter"),
    "%": ("%", "UCUM", "percent"),
    "HU": ("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "1": ("1", "UCUM", "no units"),
}
_MANUFACTURER = "vertgrade"
# DeidentificationMethod is LO (64 characters) with several values.
_DEID_METHOD = [
    "vertgrade: new UIDs",
    "pseudonymous patient name and ID",
    "other patient and study identifiers and dates removed",
]
# highdicom warns about single-component person names; names are copied as the input has them.
_PERSON_NAME_WARNING = r".*unlikely to represent the intended person name.*"


def _code(spec: tuple[str, str, str]) -> CodedConcept:
    from highdicom.sr import CodedConcept

    return CodedConcept(spec[0], spec[1], spec[2])


def _local(key: str) -> CodedConcept:
    value, meaning = LOCAL_CODES[key]
    return _code((value, LOCAL_SCHEME, meaning))


def _vertebra_code(label: int) -> CodedConcept:
    if label in VERTEBRA_SCT_CODES:
        value, meaning = VERTEBRA_SCT_CODES[label]
        return _code((value, "SCT", meaning))
    return _local(level_name(label))


def _qc_code(flag: str) -> CodedConcept:
    if flag in QC_FLAG_CODES:
        return _code((QC_FLAG_CODES[flag], LOCAL_SCHEME, flag.replace("_", " ")[:64]))
    return _code((LOCAL_CODES["other_flag"][0], LOCAL_SCHEME, flag.replace("_", " ")[:64]))


def _coding_scheme_item() -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "vertgrade local codes"
    item.CodingSchemeResponsibleOrganization = "vertgrade developers"
    return item


def _version() -> str:

    return __version__


# ---------------------------------------------------------------------------------------------
# Source images: as read, or de-identified copies
# ---------------------------------------------------------------------------------------------

# What a de-identified source copy keeps: geometry and image description, no identifier.
_KEEP_FOR_SOURCE = (
    "SOPClassUID",
    "Modality",
    "ImageType",
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "PositionReferenceIndicator",
    "InstanceNumber",
    "SeriesNumber",
)


@dataclasses.dataclass(frozen=True)
class _Sources:
    """The CT headers the outputs are built from, and how they were made."""

    headers: list[Dataset]
    anonymized: bool
    pseudonym: str | None


def _deidentified(headers: Sequence[Dataset], pseudonym: str) -> list[Dataset]:
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    uid_map: dict[str, str] = {}

    def new(uid: str) -> str:
        return uid_map.setdefault(uid, generate_uid())

    out = []
    for h in headers:
        ds = Dataset()
        for kw in _KEEP_FOR_SOURCE:
            if kw in h:
                setattr(ds, kw, h[kw].value)
        ds.SOPInstanceUID = new(str(h.SOPInstanceUID))
        ds.StudyInstanceUID = new(str(h.StudyInstanceUID))
        ds.SeriesInstanceUID = new(str(h.SeriesInstanceUID))
        if "FrameOfReferenceUID" in h:
            ds.FrameOfReferenceUID = new(str(h.FrameOfReferenceUID))
        ds.PatientName = f"{pseudonym}^"  # family name only
        ds.PatientID = pseudonym
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyDate = ""
        ds.StudyTime = ""
        ds.StudyID = ""
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = _DEID_METHOD
        out.append(ds)
    return out


def _sources(series: SeriesInfo, anonymize: bool, pseudonym: str | None) -> _Sources:
    if not series.headers:
        raise InputError(series.folder, "series information holds no image headers")
    if not anonymize:
        headers = [_with_type2(h) for h in series.headers]
        return _Sources(headers, False, None)
    name = pseudonym or f"ANON-{secrets.token_hex(4).upper()}"
    if (
        not name.strip()
        or len(name) > 64
        or any(c in name for c in "\\^=")
        or not name.isprintable()
    ):
        raise InputError(
            None,
            f"pseudonym {name!r} is not a valid patient ID (1-64 printable characters, "
            "none of \\ ^ =)",
        )
    return _Sources(_deidentified(series.headers, name), True, name)


def _with_type2(h: Dataset) -> Dataset:
    """The header, with the type 2 patient / study attributes highdicom copies present."""
    missing = [
        kw
        for kw in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "StudyID",
            "AccessionNumber",
            "ReferringPhysicianName",
        )
        if kw not in h
    ]
    if not missing:
        return h
    ds = h.copy()
    for kw in missing:
        setattr(ds, kw, "")
    return ds


def _mark_deidentified(ds: Dataset) -> None:
    from pydicom.dataset import Dataset

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = _DEID_METHOD
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = _BASIC_PROFILE
    ds.DeidentificationMethodCodeSequence = [item]


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def _grade_text(v: VertebraResult) -> str:
    if v.status != "graded" or v.grade is None:
        return f"{v.level} vertebral body: not gradable ({v.reason or 'no reason given'})"
    kind = f", {v.fracture_type}" if v.fracture_type else ""
    loss = ""
    if v.rhlv is not None:
        worst = max((v.rhlv.get(r) or 0.0) for r in THIRDS)
        loss = f", max RHLV {100 * worst:.0f}%"
    return f"{v.level} vertebral body: Genant grade {v.grade}{kind}{loss}"


def _segment_frames(result: SpineResult, series: SeriesInfo) -> NDArray[np.uint8]:
    """(n_images, rows, cols) VerSe labels of the bodies on the series' own images."""
    bodies = result.grid.to_input_grid(result.bodies)  # (columns, rows, slices)
    n_slices = max(series.slice_index) + 1 if series.slice_index else 0
    rows, cols = int(series.headers[0].Rows), int(series.headers[0].Columns)
    if bodies.shape != (cols, rows, n_slices) or len(series.slice_index) != len(series.headers):
        raise InputError(
            series.folder,
            f"the result's grid {bodies.shape} is not this series' grid "
            f"({cols}, {rows}, {n_slices}) (columns, rows, slices): grade the study read from "
            "this series (read_dicom_series / load_dicom_study) before writing DICOM outputs",
        )
    stack = np.asarray(bodies).transpose(2, 1, 0)
    return np.ascontiguousarray(stack[np.asarray(series.slice_index)]).astype(np.uint8)


def _build_seg(
    result: SpineResult,
    frames: NDArray[np.uint8],
    sources: _Sources,
    segments: dict[int, int],
    tracking: dict[int, str],
) -> Dataset:
    import highdicom as hd

    by_label = {v.label: v for v in result.vertebrae}
    lut = np.zeros(max(256, max(segments) + 1), np.uint8)
    for label, number in segments.items():
        lut[label] = number
    pixel = lut[frames]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="vertgrade",
        family=_code(_MORPHOLOGICAL),
        version=_version(),
    )
    descriptions = []
    for label, number in sorted(segments.items(), key=lambda kv: kv[1]):
        v = by_label[label]
        colour = grade_rgb(v.grade if v.status == "graded" else None)
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{v.level} vertebral body",
            segmented_property_category=_code(_ANATOMICAL_STRUCTURE),
            segmented_property_type=_vertebra_code(label),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
            tracking_uid=tracking[label],
            tracking_id=f"{v.level} vertebral body",
            display_color=hd.color.CIELabColor.from_rgb(*colour),
        )
        desc.SegmentDescription = _grade_text(v)[:64]
        descriptions.append(desc)
    seg: Dataset = hd.seg.Segmentation(
        source_images=sources.headers,
        pixel_array=pixel,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        manufacturer_model_name="vertgrade",
        software_versions=_version(),
        device_serial_number="none",
        content_description="Vertebral bodies graded by vertgrade",
        content_label="VERTEBRAL_BODIES",
        series_description="vertgrade vertebral bodies",
    )
    seg.CodingSchemeIdentificationSequence = [_coding_scheme_item()]
    return seg


# ---------------------------------------------------------------------------------------------
# Structured Report
# ---------------------------------------------------------------------------------------------


def _measurements(v: VertebraResult) -> list[Any]:
    import highdicom as hd

    site = _vertebra_code(v.label)
    out = []
    method = None
    if v.heights_source is not None:
        method = _local("heights_ct" if v.heights_source == "ct" else "heights_mask")
    regions = ("body", *THIRDS)
    if v.heights_mm is not None:
        for region in regions:
            value = v.heights_mm.get(region)
            if value is None or not np.isfinite(value):
                continue
            modifier = _MODIFIERS.get(region)
            out.append(
                hd.sr.Measurement(
                    name=_code(_HEIGHT),
                    value=round(float(value), 3),
                    unit=_code(_UNITS["mm"]),
                    derivation=_code(_MEAN),
                    method=method,
                    finding_sites=[
                        hd.sr.FindingSite(
                            site,
                            topographical_modifier=None if modifier is None else _code(modifier),
                        )
                    ],
                )
            )
    if v.rhlv is not None:
        for region in regions:
            loss = v.rhlv.get(region)
            if loss is None or not np.isfinite(loss):
                continue
            modifier = _MODIFIERS.get(region)
            out.append(
                hd.sr.Measurement(
                    name=_local("rhlv"),
                    value=round(100.0 * float(loss), 2),
                    unit=_code(_UNITS["%"]),
                    finding_sites=[
                        hd.sr.FindingSite(
                            site,
                            topographical_modifier=None if modifier is None else _code(modifier),
                        )
                    ],
                )
            )
    if v.hu_trabecular is not None and np.isfinite(v.hu_trabecular):
        out.append(
            hd.sr.Measurement(
                name=_code(_ATTENUATION),
                value=round(float(v.hu_trabecular), 1),
                unit=_code(_UNITS["HU"]),
                derivation=_code(_MEDIAN),
                method=_local("trabecular_core"),
            )
        )
    if v.confidence is not None and np.isfinite(v.confidence):
        out.append(
            hd.sr.Measurement(
                name=_local("confidence"),
                value=round(float(v.confidence), 3),
                unit=_code(_UNITS["1"]),
            )
        )
    return out


def _evaluations(v: VertebraResult) -> list[Any]:
    import highdicom as hd

    out = []
    if v.status == "graded" and v.grade is not None:
        grade_value = _local(f"grade_{int(v.grade)}")
    else:
        grade_value = _local("not_gradable")
    out.append(hd.sr.QualitativeEvaluation(_local("genant_grade"), grade_value))
    if v.fracture_type in ("wedge", "biconcave", "crush") and (v.grade or 0) >= 1:
        out.append(hd.sr.QualitativeEvaluation(_local("fracture_type"), _local(v.fracture_type)))
    for flag in v.flags:
        out.append(hd.sr.QualitativeEvaluation(_local("qc_flag"), _qc_code(flag)))
    return out


def _build_sr(
    result: SpineResult,
    sources: _Sources,
    seg: Dataset | None,
    segments: dict[int, int],
    tracking: dict[int, str],
) -> Dataset:
    import highdicom as hd
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name="vertgrade", version=_version())
    device = hd.sr.ObserverContext(
        observer_type=_code(("121007", "DCM", "Device")),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["vertgrade device observer"]),
            name="vertgrade",
            manufacturer_name=_MANUFACTURER,
            model_name="vertgrade",
        ),
    )
    groups: list[Any] = []
    series_uid = str(sources.headers[0].SeriesInstanceUID)
    for v in result.vertebrae:
        tid = hd.sr.TrackingIdentifier(
            uid=tracking[v.label], identifier=f"{v.level} vertebral body"
        )
        common: dict[str, Any] = {
            "tracking_identifier": tid,
            "finding_sites": [hd.sr.FindingSite(_vertebra_code(v.label))],
            "algorithm_id": algorithm,
            "measurements": _measurements(v) or None,
            "qualitative_evaluations": _evaluations(v),
        }
        if seg is not None and v.label in segments:
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID),
                sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=segments[v.label],
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
            )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    referenced_segment=ref, **common
                )
            )
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_code(_PROCEDURE),
        imaging_measurements=groups,
        title=_code(("126000", "DCM", "Imaging Measurement Report")),
    )
    evidence = list(sources.headers) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        is_complete=True,
        series_description="vertgrade vertebral fracture measurements",
    )
    sr.CodingSchemeIdentificationSequence = [_coding_scheme_item()]
    return sr


# ---------------------------------------------------------------------------------------------
# Overview figure, Secondary Capture, Encapsulated PDF
# ---------------------------------------------------------------------------------------------


def overview_image(result: SpineResult, ct: Volume | None = None) -> NDArray[np.uint8]:
    """The report's spine overview as an RGB image, for the Secondary Capture.

    The figure is the one ``report.html`` shows (:func:`vertgrade.report.figures.overview_figure`):
    a curved mid-sagittal reformat along the centreline, head up and anterior on the left, every
    body outlined in its grade's colour and labelled with its level, grade and type. It shows no
    patient identifier. A result with fewer than two points to draw a centreline through gets an
    image that says so.

    Parameters
    ----------
    result : SpineResult
    ct : Volume, optional
        The CT (``study.ct``, any grid: it is sampled in world coordinates), the background;
        without it the bodies are shown alone.

    Returns
    -------
    (H, W, 3) uint8 ndarray
        RGB, at the figure's size (100 dpi).
    """
    bodies = Volume(result.bodies, result.bodies_affine, "labels")
    drawn = overview_figure(result.to_dict(), ct=ct, bodies=bodies)
    return figure_rgb(drawn.figure if drawn is not None else _no_overview_figure())


def _no_overview_figure() -> Figure:
    fig = Figure(figsize=(6.0, 2.0), dpi=100)
    fig.text(
        0.5,
        0.5,
        "No overview: fewer than two points to draw the spine's centreline.",
        ha="center",
        va="center",
        fontsize=10,
    )
    return fig


def _read_png(path: Path) -> NDArray[np.uint8]:
    from matplotlib import image as mpimg

    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        img = mpimg.imread(path)
    except Exception as err:  # Pillow raises many types for bad files
        raise InputError(path, f"cannot be read as an image ({err})") from err
    return _as_rgb(path, img)


def _as_rgb(path: Path | None, img: NDArray[Any]) -> NDArray[np.uint8]:
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise InputError(
            path, f"overview must be an (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}"
        )
    return np.ascontiguousarray(arr[..., :3])


def _build_sc(image: NDArray[np.uint8], sources: _Sources, *, own_figure: bool) -> Dataset:
    import highdicom as hd

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=sources.headers[0],
        pixel_array=image,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["sc"],
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        patient_orientation=("P", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    if not own_figure:
        sc["PatientOrientation"].value = ""  # unknown for a figure made elsewhere (2C: empty)
    sc.SeriesDescription = "vertgrade overview"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "NO" if own_figure else "YES"
    sc.BodyPartExamined = "SPINE"  # an unpaired part: Laterality is then rightly absent
    return sc


def _build_pdf(path: Path, sources: _Sources) -> Dataset:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not path.is_file():
        raise InputError(path, "no such file")
    data = path.read_bytes()
    if not data.startswith(b"%PDF-"):
        raise InputError(path, "is not a PDF file (no %PDF- header)")
    ref = sources.headers[0]
    now = datetime.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SpecificCharacterSet" in ref:
        ds.SpecificCharacterSet = ref.SpecificCharacterSet
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    ):
        setattr(ds, kw, ref[kw].value if kw in ref else "")
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBERS["pdf"]
    ds.SeriesDescription = "vertgrade report"
    ds.Manufacturer = _MANUFACTURER
    ds.SoftwareVersions = _version()
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # a document made elsewhere: assume it may name the patient
    ds.DocumentTitle = "vertgrade vertebral fracture report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")
    return ds


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def write_dicom_outputs(
    result: SpineResult,
    series: SeriesInfo,
    out_dir: str | Path,
    *,
    anonymize: bool = False,
    pseudonym: str | None = None,
    overview: str | Path | NDArray[np.uint8] | None = None,
    report_pdf: str | Path | None = None,
    ct: Volume | None = None,
    force: bool = False,
) -> list[Path]:
    """Write the DICOM SR, SEG, overview (Secondary Capture) and, given one, the PDF report
    (Encapsulated PDF).

    Parameters
    ----------
    result : SpineResult
        Graded from the study read from ``series`` (its grid must be the series' grid).
    series : SeriesInfo
        From :func:`vertgrade.io.dicom.read_dicom_series` or
        :func:`vertgrade.io.load.load_dicom_study`.
    out_dir : path
        Folder for the files (see :data:`DICOM_OUTPUT_FILES`); an existing non-empty folder is
        refused without ``force``.
    anonymize : bool
        Replace patient and study identifiers and UIDs (see the module docstring).
    pseudonym : str, optional
        Patient name and ID when anonymising; default ``ANON-`` and 8 random hex digits.
    overview : path or (H, W, 3) uint8 ndarray, optional
        The overview figure (PNG, or RGB array) for the Secondary Capture. Without it, the
        report's overview is drawn (:func:`overview_image`).
    report_pdf : path, optional
        A PDF report, written as Encapsulated PDF besides the Secondary Capture (a viewer that
        shows images but no documents still shows the overview).
    ct : Volume, optional
        The study's CT (``study.ct``), the background of the drawn overview.
    force : bool
        Overwrite the files of an existing output folder.

    Returns
    -------
    list of Path
        The files written, SR first.

    Raises
    ------
    InputError
        The result does not match the series, or an overview / PDF file is unusable.
    OutputError
        The output folder exists and is not empty (without ``force``), or is a file.
    """
    try:
        import highdicom  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise OutputError(
            out_dir, "DICOM output needs pydicom and highdicom: pip install 'vertgrade[dicom]'"
        ) from err
    out = check_output_dir(out_dir, force=force)
    frames = _segment_frames(result, series)
    sources = _sources(series, anonymize, pseudonym)

    present = set(np.unique(frames).tolist()) - {0}
    segment_labels = [
        lab for lab in anatomical_order(present) if lab in {v.label for v in result.vertebrae}
    ]
    segments = {lab: n + 1 for n, lab in enumerate(segment_labels)}
    from pydicom.uid import generate_uid

    tracking: dict[int, str] = {v.label: str(generate_uid()) for v in result.vertebrae}

    datasets: dict[str, Dataset] = {}
    seg = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING, category=UserWarning)
        if segments:
            seg = _build_seg(result, frames, sources, segments, tracking)
            datasets["seg"] = seg
        datasets["sr"] = _build_sr(result, sources, seg, segments, tracking)
        if overview is not None:
            image = (
                _read_png(Path(overview))
                if isinstance(overview, (str, Path))
                else _as_rgb(None, overview)
            )
            datasets["sc"] = _build_sc(image, sources, own_figure=False)
        else:  # with or without a PDF: the README promises overview_sc.dcm with --dicom-out
            datasets["sc"] = _build_sc(overview_image(result, ct), sources, own_figure=True)
        if report_pdf is not None:
            datasets["pdf"] = _build_pdf(Path(report_pdf), sources)
    for ds in datasets.values():
        if sources.anonymized:
            _mark_deidentified(ds)

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vertgrade-dicom-", dir=out))
    try:
        order = [k for k in ("sr", "seg", "sc", "pdf") if k in datasets]
        for key in order:
            datasets[key].save_as(staging / DICOM_OUTPUT_FILES[key], enforce_file_format=True)
        written = []
        for key in order:
            target = out / DICOM_OUTPUT_FILES[key]
            (staging / DICOM_OUTPUT_FILES[key]).replace(target)
            written.append(target)
        for kind, name in DICOM_OUTPUT_FILES.items():  # a previous run's file of a kind not
            if kind not in datasets:  # written now (possible with force) would mislead
                (out / name).unlink(missing_ok=True)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
