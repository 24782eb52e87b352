"""Reading DICOM: a CT series into a canonical :class:`~vertgrade.volume.Volume`, and a DICOM
SEG into VerSe labels on the CT's grid.

DICOM's patient coordinate system is LPS+ (x towards the patient's left, y posterior, z towards
the head); vertgrade's world is RAS+. This module is the one place where the two meet: every
affine it returns maps voxels to RAS+ millimetres, exactly as
:func:`vertgrade.io.nifti.read_volume` does for NIfTI.

Reading a series
----------------
A folder (searched recursively) may hold several series; :func:`list_series` lists them and
:func:`read_dicom_series` reads one. Slices are ordered by their ImagePositionPatient projected
on the slice normal (the cross product of the ImageOrientationPatient row and column
directions), never by file name or InstanceNumber. The voxel grid of the input
(:class:`~vertgrade.volume.GridInfo`) is ``(column, row, slice)``: index ``i`` runs along a row
(the first ImageOrientationPatient vector), ``j`` down a column and ``k`` along the sorted
slices; outputs mapped back with ``GridInfo.to_input_grid`` land on that grid.

What is checked, and what happens:

============================================  ====================================================
finding                                       outcome
============================================  ====================================================
several CT series, none chosen                :class:`InputError` listing every series
modality other than CT                        :class:`InputError` naming the modality
images of different orientation, size or      :class:`InputError` naming the orientations / sizes
pixel spacing in one series                   found
two images at the same position               :class:`InputError` (duplicates or several phases)
slice spacing that varies (not a multiple     :class:`InputError` naming the steps found
of one step)
missing slices: a gap of whole steps,         :class:`DicomGeometryWarning` naming the gap; the
at most :data:`MAX_FILLED_GAP_MM` missing     missing slices are filled by linear interpolation
                                              between their neighbours (noted in
                                              ``SeriesInfo.notes``)
a larger gap                                  :class:`InputError` naming the gap
gantry tilt (slices stacked obliquely to      :class:`DicomGeometryWarning` naming the angle; the
their own plane)                              volume keeps the exact, sheared affine (heights are
                                              measured in world millimetres, so they stay exact)
positions that do not lie on one line         :class:`InputError`
compressed pixel data without an installed    :class:`InputError` naming the transfer syntax and
decoder                                       the packages that would decode it
multi-frame (Enhanced) CT                     :class:`InputError` (not read yet)
============================================  ====================================================

``docs/dicom.md`` gives the tolerances, the decoders and the reasons for each choice.

Pixel values are converted to HU with each image's RescaleSlope and RescaleIntercept. The array
keeps ``int16`` where every value is a whole number in its range (the common case: slope 1,
integer intercept), else ``float32``, matching what NIfTI reading gives.

Reading a DICOM SEG as labels
-----------------------------
:func:`read_dicom_seg` maps each segment to a VerSe label, first by its segmented property type
(the SNOMED CT codes of the vertebrae, e.g. ``66794005`` "L1 vertebra"), then by its label text
(``"L1"``, ``"vertebrae_L1"``, ``"L1 vertebra"``, ``"L1 vertebral body"``...). Segments that
match neither are left out, with a note (a TotalSegmentator SEG also holds organs). Only where
no segment matches at all are segment numbers read as VerSe label ids (1-7 C1-C7, 8-19
T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13), which is the convention of a SEG converted from a
VerSe label map with one segment per label value.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io.nifti import _check_ct, file_sha256, read_volume
from vertgrade.levels import VERSE_LABELS, label_id, level_name
from vertgrade.volume import GridInfo, Study, Volume

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "CT_IMAGE_STORAGE",
    "MAX_FILLED_GAP_MM",
    "SEGMENTATION_STORAGE",
    "VERTEBRA_SCT_CODES",
    "DicomGeometryWarning",
    "SeriesInfo",
    "SourceInstance",
    "is_dicom_path",
    "list_series",
    "load_dicom_study",
    "lps_to_ras",
    "read_dicom_seg",
    "read_dicom_series",
    "segment_label_to_verse",
]

#: SOP Class UID of CT Image Storage (PS3.4 B.5): classic single-frame CT images.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: SOP Class UIDs of Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5).
SEGMENTATION_STORAGE = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
_MULTIFRAME_CT = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}

#: SNOMED CT codes of the vertebrae (DICOM CID 7602 "Vertebral Anatomic Structure"), by VerSe
#: label; S1 (label 26, the sacrum in VerSe) is coded as the sacrum (54735007). T13 and L6 have
#: no code there.
VERTEBRA_SCT_CODES: dict[int, tuple[str, str]] = {
    1: ("14806007", "C1 vertebra"),
    2: ("39976000", "C2 vertebra"),
    3: ("113205007", "C3 vertebra"),
    4: ("5329002", "C4 vertebra"),
    5: ("36978003", "C5 vertebra"),
    6: ("36054005", "C6 vertebra"),
    7: ("87391001", "C7 vertebra"),
    8: ("64864005", "T1 vertebra"),
    9: ("53733008", "T2 vertebra"),
    10: ("1626008", "T3 vertebra"),
    11: ("73071006", "T4 vertebra"),
    12: ("56401006", "T5 vertebra"),
    13: ("45296009", "T6 vertebra"),
    14: ("62487009", "T7 vertebra"),
    15: ("11068009", "T8 vertebra"),
    16: ("82687006", "T9 vertebra"),
    17: ("7610001", "T10 vertebra"),
    18: ("12989004", "T11 vertebra"),
    19: ("23215003", "T12 vertebra"),
    20: ("66794005", "L1 vertebra"),
    21: ("14293000", "L2 vertebra"),
    22: ("36470004", "L3 vertebra"),
    23: ("11994002", "L4 vertebra"),
    24: ("49668003", "L5 vertebra"),
    26: ("54735007", "Sacrum"),
}
_SCT_TO_LABEL = {code: label for label, (code, _) in VERTEBRA_SCT_CODES.items()}

# --- tolerances ------------------------------------------------------------------------------
# Direction cosines are written as decimal strings (DS, at most 16 characters); images of one
# stack agree far better than this (1e-3 is 0.06 degrees).
_ORIENTATION_TOL = 1e-3
# Two images closer than this along the normal are at the same position (mm).
_SAME_POSITION_MM = 0.01
# A stack is regular when every position lies within this of a regular grid: a tenth of the
# step, and at least 0.05 mm, because many scanners round positions to 0.1 mm.
_POSITION_RTOL = 0.1
_POSITION_ATOL_MM = 0.05
#: Largest run of missing slices (mm of slab, i.e. missing count times the step) that is filled
#: by interpolation, with a warning; a larger gap is an error. 3 mm is a thin-slice CT's three
#: slices or a 3 mm CT's single slice: less than a fifth of any thoracolumbar body's height.
MAX_FILLED_GAP_MM = 3.0
# Slices stacked more obliquely than this to their own normal are reported as gantry tilt (deg).
_TILT_WARN_DEG = 0.5
# Lateral scatter of the positions off their line beyond this (mm, or half a pixel) is an error.
_LINE_TOL_MM = 0.1

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomGeometryWarning(UserWarning):
    """A DICOM series whose geometry is irregular but usable (missing slices, gantry tilt)."""


def lps_to_ras(affine_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Turn a voxel -> LPS+ mm affine into a voxel -> RAS+ mm affine (and back: it is its own
    inverse).

    >>> lps_to_ras(np.eye(4))[:3, :3].diagonal().tolist()
    [-1.0, -1.0, 1.0]
    """
    return _LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


@dataclass(frozen=True)
class SourceInstance:
    """One image of a series: what a DICOM output needs to reference it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None


@dataclass(frozen=True)
class SeriesInfo:
    """A DICOM series: identifiers, geometry summary and its images in slice order.

    Attributes
    ----------
    folder : Path
        The folder the series was found in.
    study_instance_uid, series_instance_uid, frame_of_reference_uid : str
        The series' UIDs (``frame_of_reference_uid`` is ``""`` where absent).
    modality : str
        ``"CT"`` for a series vertgrade can read.
    series_description : str
    series_number : int or None
    n_images : int
        Number of image files of the series.
    orientation : {"axial", "sagittal", "coronal", "oblique", "mixed", "unknown"}
        The slice plane, from the slice normal (``"mixed"``: images of several orientations).
    patient_id, patient_name, study_id, accession_number, study_date : str
        The identifiers DICOM outputs copy (or replace when anonymised).
    instances : tuple of SourceInstance
        The images; after :func:`read_dicom_series`, in slice order (increasing ``k``).
    slice_index : tuple of int
        After :func:`read_dicom_series`: the grid index ``k`` of each of ``instances`` (slices
        filled by interpolation have no instance, so this may skip values).
    headers : tuple of pydicom Dataset
        The images' headers without pixel data, in the order of ``instances`` (DICOM outputs are
        built from them).
    notes : tuple of str
        What reading did that a user should know (slices filled, gantry tilt, ...).
    """

    folder: Path
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_description: str
    series_number: int | None
    n_images: int
    orientation: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    study_id: str
    accession_number: str
    study_date: str
    instances: tuple[SourceInstance, ...] = field(repr=False)
    slice_index: tuple[int, ...] = field(default=(), repr=False)
    headers: tuple[Dataset, ...] = field(default=(), repr=False, compare=False)
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for listings: UID, description, modality, number of images, orientation."""
        desc = f"'{self.series_description}'" if self.series_description else "(no description)"
        num = "" if self.series_number is None else f"#{self.series_number} "
        return (
            f"{num}{self.series_instance_uid} {desc}: {self.modality}, {self.n_images} images, "
            f"{self.orientation}"
        )


# ---------------------------------------------------------------------------------------------
# Scanning a folder
# ---------------------------------------------------------------------------------------------


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _candidate_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR":
            yield p


def is_dicom_path(path: str | Path, *, max_files: int = 64) -> bool:
    """Whether ``path`` is a DICOM file or a folder holding DICOM files.

    A file is DICOM when it carries the ``DICM`` marker after its 128-byte preamble (PS3.10
    7.1); a folder when one of its first ``max_files`` files (searched recursively, in name
    order) is.
    """
    p = Path(path)
    if p.is_file():
        return _has_preamble(p)
    if not p.is_dir():
        return False
    for n, f in enumerate(_candidate_files(p)):
        if n >= max_files:
            return False
        if _has_preamble(f):
            return True
    return False


def _scan(folder: Path) -> dict[str, list[tuple[Path, Dataset]]]:
    """DICOM headers (no pixel data) below ``folder``, grouped by SeriesInstanceUID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not folder.exists():
        raise InputError(folder, "no such file or folder")
    if not folder.is_dir():
        raise InputError(folder, "is a file; give the folder that holds the DICOM series")
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    n_files = 0
    for p in _candidate_files(folder):
        n_files += 1
        if not _has_preamble(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as err:
            raise InputError(p, f"cannot be read as DICOM ({_short(err)})") from err
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            if "DirectoryRecordSequence" in ds:  # a DICOMDIR under another name
                continue
            raise InputError(p, "is a DICOM file without SeriesInstanceUID")
        series.setdefault(uid, []).append((p, ds))
    if not series:
        what = f"{n_files} file{'s' if n_files != 1 else ''}, none of them DICOM"
        what = what if n_files else "no files"
        raise InputError(folder, f"holds no DICOM series ({what})")
    return series


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword, None)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _orientation_name(iops: list[NDArray[np.float64]]) -> str:
    if not iops:
        return "unknown"
    if any(np.abs(o - iops[0]).max() > _ORIENTATION_TOL for o in iops[1:]):
        return "mixed"
    normal = np.cross(iops[0][:3], iops[0][3:])
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < np.cos(np.deg2rad(25.0)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _iop(ds: Dataset) -> NDArray[np.float64] | None:
    value = ds.get("ImageOrientationPatient", None)
    if value is None or len(value) != 6:
        return None
    return np.array([float(v) for v in value], dtype=np.float64)


def _series_info(folder: Path, items: list[tuple[Path, Dataset]]) -> SeriesInfo:
    first = items[0][1]
    iops = [o for o in (_iop(ds) for _, ds in items) if o is not None]
    return SeriesInfo(
        folder=folder,
        study_instance_uid=_str(first, "StudyInstanceUID"),
        series_instance_uid=_str(first, "SeriesInstanceUID"),
        modality=_str(first, "Modality") or "unknown",
        series_description=_str(first, "SeriesDescription"),
        series_number=_int_or_none(first, "SeriesNumber"),
        n_images=len(items),
        orientation=_orientation_name(iops),
        frame_of_reference_uid=_str(first, "FrameOfReferenceUID"),
        patient_id=_str(first, "PatientID"),
        patient_name=_str(first, "PatientName"),
        study_id=_str(first, "StudyID"),
        accession_number=_str(first, "AccessionNumber"),
        study_date=_str(first, "StudyDate"),
        instances=tuple(
            SourceInstance(
                path=p,
                sop_class_uid=_str(ds, "SOPClassUID"),
                sop_instance_uid=_str(ds, "SOPInstanceUID"),
                instance_number=_int_or_none(ds, "InstanceNumber"),
            )
            for p, ds in items
        ),
        headers=tuple(ds for _, ds in items),
    )


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every DICOM series below ``folder`` (recursively), ordered by series number.

    The instances of each are in file-name order here; :func:`read_dicom_series` sorts them
    spatially.

    Raises
    ------
    InputError
        ``folder`` does not exist, is a file, holds no DICOM file, or holds an unreadable one.
    """
    folder = Path(folder)
    groups = _scan(folder)
    infos = [_series_info(folder, items) for items in groups.values()]
    return sorted(
        infos,
        key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid),
    )


def _listing(infos: Sequence[SeriesInfo]) -> str:
    return "; ".join(s.describe() for s in infos)


def _choose_series(
    folder: Path, groups: dict[str, list[tuple[Path, Dataset]]], series_uid: str | None
) -> list[tuple[Path, Dataset]]:
    if series_uid is not None:
        uid = series_uid.strip()
        if uid not in groups:
            infos = [_series_info(folder, v) for v in groups.values()]
            raise InputError(
                folder, f"has no series {uid}; it holds {len(infos)}: {_listing(infos)}"
            )
        return groups[uid]
    if len(groups) == 1:
        return next(iter(groups.values()))
    infos = sorted(
        (_series_info(folder, v) for v in groups.values()),
        key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid),
    )
    cts = [s for s in infos if s.modality == "CT"]
    if len(cts) == 1:
        return groups[cts[0].series_instance_uid]
    raise InputError(
        folder,
        f"holds {len(infos)} series ({len(cts)} CT); choose one with --series "
        f"(series_uid=...): {_listing(infos)}",
    )


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stack:
    """Sorted geometry of a single-frame series."""

    order: NDArray[np.intp]  # item index of each acquired slice, in slice order
    k: NDArray[np.intp]  # grid index of each acquired slice (may skip missing ones)
    n_slices: int
    affine_lps: NDArray[np.float64]
    rows: int
    cols: int
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def _require(path: Path, ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword, None)
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise InputError(path, f"lacks {keyword}, needed to place the image in space")
    return value


def _stack_geometry(folder: Path, items: list[tuple[Path, Dataset]]) -> _Stack:
    if len(items) < 2:
        raise InputError(
            folder, f"series has {len(items)} image; a 3D volume needs at least 2 slices"
        )
    iops, ipps, spacings, sizes = [], [], [], []
    for p, ds in items:
        iop = _iop(ds)
        if iop is None:
            _require(p, ds, "ImageOrientationPatient")
            raise InputError(p, "has an ImageOrientationPatient without 6 values")
        ipp = np.array([float(v) for v in _require(p, ds, "ImagePositionPatient")], float)
        if ipp.shape != (3,):
            raise InputError(p, "has an ImagePositionPatient without 3 values")
        sp = np.array([float(v) for v in _require(p, ds, "PixelSpacing")], float)
        if sp.shape != (2,) or np.any(sp <= 0):
            raise InputError(p, f"has an invalid PixelSpacing {sp.tolist()}")
        iops.append(iop)
        ipps.append(ipp)
        spacings.append(sp)
        sizes.append((int(_require(p, ds, "Rows")), int(_require(p, ds, "Columns"))))

    ref = iops[0]
    distinct: list[NDArray[np.float64]] = []
    counts: list[int] = []
    for o in iops:
        for n, d in enumerate(distinct):
            if np.abs(o - d).max() <= _ORIENTATION_TOL:
                counts[n] += 1
                break
        else:
            distinct.append(o)
            counts.append(1)
    if len(distinct) > 1:
        found = ", ".join(
            f"{c} x [{' '.join(f'{v:.3g}' for v in d)}] ({_orientation_name([d])})"
            for c, d in sorted(zip(counts, distinct, strict=True), key=lambda cd: -cd[0])
        )
        raise InputError(
            folder,
            f"series mixes image orientations ({found}); it is not one volume (a localizer "
            "or several stacks in one series?)",
        )
    size_counts = Counter(sizes)
    if len(size_counts) > 1:
        sizes_found = ", ".join(f"{c} x {r}x{k}" for (r, k), c in size_counts.items())
        raise InputError(folder, f"series mixes image sizes (rows x columns: {sizes_found})")
    if np.abs(np.array(spacings) - spacings[0]).max() > 1e-3:
        spacings_found = sorted({tuple(np.round(s, 4).tolist()) for s in spacings})
        raise InputError(folder, f"series mixes pixel spacings {spacings_found} mm")

    row_dir, col_dir = ref[:3], ref[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-2 or abs(np.linalg.norm(col_dir) - 1) > 1e-2:
        raise InputError(items[0][0], f"ImageOrientationPatient {ref.tolist()} is not unit")
    if abs(float(row_dir @ col_dir)) > 1e-2:
        raise InputError(items[0][0], f"ImageOrientationPatient {ref.tolist()} is not orthogonal")
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    pos = np.array(ipps)
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]

    steps = np.diff(d_sorted)
    dup = np.flatnonzero(steps < _SAME_POSITION_MM)
    if dup.size:
        a, b = items[order[dup[0]]][0], items[order[dup[0] + 1]][0]
        n_dup = len(set(dup.tolist()) | set((dup + 1).tolist()))
        raise InputError(
            folder,
            f"{n_dup} images share slice positions "
            f"(e.g. {a.name} and {b.name} at {d_sorted[dup[0]]:.2f} mm along the normal): "
            "duplicate files, or several acquisitions (phases, echoes) in one series",
        )
    step = float(np.median(steps))
    k = np.rint((d_sorted - d_sorted[0]) / step).astype(np.intp)
    # least-squares step over the integer grid indices, then residuals against it
    step = float(np.polyfit(k, d_sorted, 1)[0]) if k[-1] > 0 else step
    resid = d_sorted - d_sorted[0] - k * step
    resid -= np.median(resid)
    tol = max(_POSITION_RTOL * step, _POSITION_ATOL_MM)
    if np.abs(resid).max() > tol:
        steps_found = sorted({round(float(s), 3) for s in steps})
        shown = ", ".join(f"{s:g}" for s in steps_found[:6])
        shown += " ..." if len(steps_found) > 6 else ""
        bad = int(np.argmax(np.abs(resid)))
        raise InputError(
            folder,
            f"slice spacing is not uniform: steps of {shown} mm along the normal (worst at "
            f"{items[order[bad]][0].name}, {resid[bad]:+.2f} mm off a regular {step:.3f} mm "
            "grid); resample the series to uniform slices first",
        )

    notes: list[str] = []
    warns: list[str] = []
    jumps = np.diff(k)
    gaps = np.flatnonzero(jumps > 1)
    for g in gaps:
        missing = int(jumps[g] - 1)
        slab = missing * step
        a, b = items[order[g]][0], items[order[g + 1]][0]
        where = (
            f"{missing} slice{'s' if missing > 1 else ''} missing between {a.name} and "
            f"{b.name} ({d_sorted[g]:.2f} to {d_sorted[g + 1]:.2f} mm along the slice normal, "
            f"{slab:.2f} mm of the {step:.3g} mm-spaced stack)"
        )
        if slab > MAX_FILLED_GAP_MM + 1e-6:
            raise InputError(
                folder,
                f"series has a gap: {where}; gaps over {MAX_FILLED_GAP_MM:g} mm are not filled "
                "(export the complete series)",
            )
        msg = f"{where}; filled by linear interpolation between the neighbouring slices"
        warns.append(msg)
        notes.append(msg)

    n_slices = int(k[-1]) + 1
    p0 = pos[order[0]]
    # the step from slice to slice, from the positions themselves: along the normal for a
    # straight stack, oblique to it for gantry tilt
    slice_vec = (pos[order[-1]] - p0) / max(int(k[-1]), 1)
    lateral = pos[order] - (p0 + np.outer(k, slice_vec))
    line_tol = max(_LINE_TOL_MM, 0.5 * float(spacings[0].min()))
    if np.abs(lateral).max() > line_tol:
        bad = int(np.argmax(np.abs(lateral).max(axis=1)))
        raise InputError(
            folder,
            f"image positions do not lie on one line ({items[order[bad]][0].name} is "
            f"{np.abs(lateral[bad]).max():.2f} mm off it); the series is not one regular stack",
        )
    cos_tilt = abs(float(slice_vec @ normal)) / float(np.linalg.norm(slice_vec))
    tilt_deg = float(np.degrees(np.arccos(min(1.0, cos_tilt))))
    if tilt_deg > _TILT_WARN_DEG:
        msg = (
            f"gantry tilt of {tilt_deg:.1f} degrees: slices are stacked obliquely to their "
            "plane; the volume keeps this exact (sheared) geometry, so heights stay exact, "
            "but tools that assume orthogonal voxels will misplace it"
        )
        warns.append(msg)
        notes.append(msg)

    row_sp, col_sp = float(spacings[0][0]), float(spacings[0][1])
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_sp  # i: along a row, one column to the next
    affine[:3, 1] = col_dir * row_sp  # j: down a column, one row to the next
    affine[:3, 2] = slice_vec
    affine[:3, 3] = p0
    rows, cols = sizes[0]
    return _Stack(order, k, n_slices, affine, rows, cols, tuple(notes), tuple(warns))


# ---------------------------------------------------------------------------------------------
# Pixel data
# ---------------------------------------------------------------------------------------------


def _decode(path: Path) -> tuple[NDArray[np.generic], float, float]:
    """Raw pixel array of one image and its rescale slope and intercept."""
    import pydicom
    from pydicom.uid import UID

    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for damaged files
        raise InputError(path, f"cannot be read as DICOM ({_short(err)})") from err
    if "PixelData" not in ds:
        raise InputError(path, "has no pixel data")
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    if ts.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) if decoder is not None else ""
            raise InputError(
                path,
                f"pixel data is compressed as {ts.name} ({ts}) and no installed decoder reads "
                f"it" + (f" (any of: {needs})" if needs else ""),
            )
    try:
        arr = ds.pixel_array
    except Exception as err:  # decoders raise many types
        raise InputError(path, f"pixel data ({ts.name}) cannot be decoded: {_short(err)}") from err
    if int(ds.get("SamplesPerPixel", 1)) != 1 or arr.ndim != 2:
        raise InputError(path, f"is not a single grey-level image (pixel array {arr.shape})")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return arr, slope, intercept


def _read_pixels(
    folder: Path, items: list[tuple[Path, Dataset]], stack: _Stack
) -> NDArray[np.generic]:
    """(I, J, K) = (columns, rows, slices) array in HU, missing slices interpolated."""
    shape = (stack.cols, stack.rows, stack.n_slices)
    data: NDArray[Any] = np.zeros(shape, np.int16)
    i16 = np.iinfo(np.int16)
    for k, idx in zip(stack.k, stack.order, strict=True):
        path = items[idx][0]
        raw, slope, intercept = _decode(path)
        if raw.shape != (stack.rows, stack.cols):
            raise InputError(path, f"pixel array {raw.shape} does not match Rows x Columns")
        if slope == 1.0 and float(intercept).is_integer():
            hu: NDArray[Any] = raw.astype(np.int32) + int(intercept)
        else:
            hu = raw.astype(np.float64) * slope + intercept
        if data.dtype == np.int16 and (
            hu.dtype.kind == "f" or hu.min() < i16.min or hu.max() > i16.max
        ):
            data = data.astype(np.float32)
        data[:, :, k] = hu.T
    acquired = np.zeros(stack.n_slices, bool)
    acquired[stack.k] = True
    for k in np.flatnonzero(~acquired):
        lo = int(stack.k[stack.k < k].max())
        hi = int(stack.k[stack.k > k].min())
        w = (k - lo) / (hi - lo)
        filled = (1 - w) * data[:, :, lo].astype(np.float64) + w * data[:, :, hi]
        data[:, :, k] = np.rint(filled) if data.dtype == np.int16 else filled
    return _check_ct(folder, data)


# ---------------------------------------------------------------------------------------------
# Public readers
# ---------------------------------------------------------------------------------------------


def _read_series(
    path: str | Path, series_uid: str | None
) -> tuple[Volume, GridInfo, SeriesInfo, tuple[str, ...]]:
    path = Path(path)
    if path.is_file():
        if not _has_preamble(path):
            raise InputError(path, "is not a DICOM file (no DICM marker after the preamble)")
        if series_uid is None:
            import pydicom

            try:
                head = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as err:  # pydicom raises many types for damaged files
                raise InputError(path, f"cannot be read as DICOM ({_short(err)})") from err
            series_uid = _str(head, "SeriesInstanceUID")
        path = path.parent
    folder = path
    groups = _scan(folder)
    items = _choose_series(folder, groups, series_uid)
    modality = _str(items[0][1], "Modality") or "unknown"
    if modality != "CT":
        raise InputError(
            folder,
            f"series {_str(items[0][1], 'SeriesInstanceUID')} has modality {modality}; "
            "vertgrade reads CT series only",
        )
    classes = {_str(ds, "SOPClassUID") for _, ds in items}
    multi = sorted(_MULTIFRAME_CT[c] for c in classes if c in _MULTIFRAME_CT)
    if multi or any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        kind = multi[0] if multi else "multi-frame images"
        raise InputError(
            folder,
            f"series holds {kind}; only single-frame CT Image Storage is read (convert it to "
            "single-frame images, e.g. with dcmtk's or dcm2niix's tools)",
        )
    stack = _stack_geometry(folder, items)
    data = _read_pixels(folder, items, stack)

    affine = lps_to_ras(stack.affine_lps)
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(data, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    grid = GridInfo(shape=shape, affine=affine, ornt=ornt)

    info = _series_info(folder, [items[i] for i in stack.order])
    info = _replace(info, slice_index=tuple(int(k) for k in stack.k), notes=stack.notes)
    return Volume(canonical, can_affine, "ct", folder), grid, info, stack.warnings


def _replace(info: SeriesInfo, **changes: Any) -> SeriesInfo:
    import dataclasses

    return dataclasses.replace(info, **changes)


def read_dicom_series(
    folder: str | Path, *, series_uid: str | None = None
) -> tuple[Volume, GridInfo, SeriesInfo]:
    """Read one CT series, validate its geometry and reorient it to canonical (RAS+) order.

    Parameters
    ----------
    folder : path
        A folder holding the series (searched recursively), or one file of it (then its
        folder is read and its series chosen).
    series_uid : str, optional
        SeriesInstanceUID of the series to read; needed when the folder holds several CT
        series.

    Returns
    -------
    volume : Volume
        The CT in HU, canonical voxel order, affine voxel -> RAS+ mm (``int16`` where the
        values allow, else ``float32``).
    grid : GridInfo
        The input grid ``(columns, rows, slices)`` in slice order, for writing outputs back.
    info : SeriesInfo
        Identifiers and the images in slice order, for DICOM outputs.

    Raises
    ------
    InputError
        See the module's table: several series, not CT, inconsistent or irregular geometry,
        undecodable pixel data, values that are not a CT.

    Warns
    -----
    DicomGeometryWarning
        Missing slices filled by interpolation; gantry tilt.
    """
    vol, grid, info, warns = _read_series(folder, series_uid)
    for msg in warns:
        warnings.warn(f"{info.folder}: {msg}", DicomGeometryWarning, stacklevel=2)
    return vol, grid, info


# ---------------------------------------------------------------------------------------------
# DICOM SEG
# ---------------------------------------------------------------------------------------------

_LEVEL_IN_TEXT = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:vertebrae?[_\s-]*)?([CTL])[_\s-]?(\d{1,2})(?![0-9])", re.IGNORECASE
)
_SACRUM_TEXT = re.compile(r"(?:^|[^A-Za-z])(sacrum|S1)(?![0-9A-Za-z])", re.IGNORECASE)


def segment_label_to_verse(text: str) -> int | None:
    """VerSe label of a segment label such as ``"L1"``, ``"vertebrae_T12"``,
    ``"L1 vertebral body"`` or ``"Sacrum"``; ``None`` where the text names no vertebra.

    >>> [segment_label_to_verse(t) for t in ("L1", "vertebrae_T12", "C 7", "sacrum", "liver")]
    [20, 19, 7, 26, None]
    """
    m = _LEVEL_IN_TEXT.search(text)
    if m is not None:
        try:
            return label_id(f"{m.group(1)}{int(m.group(2))}")
        except ValueError:
            return None
    if _SACRUM_TEXT.search(text):
        return label_id("S1")
    return None


def _segment_labels(path: Path, seg: Any, notes: list[str]) -> dict[int, int]:
    """Segment number -> VerSe label."""
    mapping: dict[int, int] = {}
    unmatched: list[str] = []
    numbers: list[int] = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        numbers.append(number)
        text = str(item.get("SegmentLabel", "") or "")
        label: int | None = None
        for code in item.get("SegmentedPropertyTypeCodeSequence", []):
            if str(code.get("CodingSchemeDesignator", "")) in ("SCT", "SRT"):
                label = _SCT_TO_LABEL.get(str(code.get("CodeValue", "")))
        if label is None:
            label = segment_label_to_verse(text)
        if label is None:
            unmatched.append(f"{number} '{text}'")
        else:
            twins = [n for n, lab in mapping.items() if lab == label]
            if twins:  # e.g. TotalSegmentator's "sacrum" and "vertebrae_S1"
                notes.append(
                    f"SEG segments {twins[0]} and {number} both name {level_name(label)}: merged"
                )
            mapping[number] = label
    if mapping:
        if unmatched:
            notes.append(
                f"{len(unmatched)} SEG segments name no vertebra and were left out: "
                + ", ".join(unmatched[:8])
                + (" ..." if len(unmatched) > 8 else "")
            )
        return mapping
    bad = [n for n in numbers if n not in VERSE_LABELS]
    if bad:
        raise InputError(
            path,
            f"no segment names a vertebra (labels {', '.join(unmatched[:6])}) and segment "
            f"numbers {bad} are not VerSe label ids, so the segments cannot be mapped to "
            "vertebrae",
        )
    notes.append("SEG segment numbers read as VerSe label ids (no segment names a vertebra)")
    return {n: n for n in numbers}


def _labels_onto(src: Volume, ref: Volume) -> NDArray[np.generic]:
    """Nearest-neighbour resampling of a label volume onto ``ref``'s grid (same world space).

    The source is padded with one voxel of background first and sampled with edge
    replication, so that reference voxels that fall on the source's outermost voxel centres
    (up to rounding of the affines) keep their label instead of dropping to background.
    """
    from scipy import ndimage

    m = np.linalg.inv(src.affine) @ ref.affine
    padded = np.pad(np.asarray(src.array), 1)
    out: NDArray[np.generic] = ndimage.affine_transform(
        padded, m[:3, :3], m[:3, 3] + 1.0, output_shape=ref.shape, order=0, mode="nearest"
    )
    return out


def read_dicom_seg(
    path: str | Path,
    reference: Volume,
    *,
    frame_of_reference_uid: str | None = None,
    notes: list[str] | None = None,
) -> Volume:
    """Read a DICOM SEG as VerSe vertebra labels, resampled onto a reference grid.

    Parameters
    ----------
    path : path
        A DICOM Segmentation (binary, fractional or label-map).
    reference : Volume
        The grid to resample onto (normally the CT); nearest neighbour.
    frame_of_reference_uid : str, optional
        The CT's FrameOfReferenceUID; a SEG in another frame of reference is refused.
    notes : list of str, optional
        Receives what reading did (segments left out, numbering convention used).

    Returns
    -------
    Volume
        ``uint8`` labels (VerSe numbering) on ``reference``'s grid, kind ``"labels"``.

    Raises
    ------
    InputError
        Not a DICOM SEG, another frame of reference, no segment mappable to a vertebra, or no
        labelled voxel inside the reference.
    """
    import highdicom as hd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    if not _has_preamble(path):
        raise InputError(path, "is not a DICOM file (no DICM marker after the preamble)")
    import pydicom

    try:
        head = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types for damaged files
        raise InputError(path, f"cannot be read as DICOM ({_short(err)})") from err
    if str(head.get("SOPClassUID", "")) not in SEGMENTATION_STORAGE:
        raise InputError(
            path,
            f"is a DICOM {_str(head, 'Modality') or 'object'} ({head.get('SOPClassUID', '?')}), "
            "not a Segmentation (SEG)",
        )
    for_uid = _str(head, "FrameOfReferenceUID")
    if frame_of_reference_uid and for_uid and for_uid != frame_of_reference_uid:
        raise InputError(
            path,
            f"SEG is in frame of reference {for_uid}, the CT in {frame_of_reference_uid}: they "
            "are not in the same patient space",
        )
    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # highdicom raises many types for invalid objects
        raise InputError(path, f"cannot be read as a DICOM SEG ({_short(err)})") from err
    own_notes: list[str] = []
    mapping = _segment_labels(path, seg, own_notes)
    fractional = str(seg.get("SegmentationType", "")) == "FRACTIONAL"
    out = np.zeros(reference.shape, np.uint8)
    try:
        if fractional:
            for number, label in mapping.items():
                v = seg.get_volume(segment_numbers=[number], combine_segments=False)
                mask = (np.asarray(v.array)[..., 0] >= 0.5).astype(np.uint8)
                res = _labels_onto(Volume(mask, lps_to_ras(v.affine), "labels", path), reference)
                out[res.astype(bool)] = label
        else:
            v = seg.get_volume(
                segment_numbers=sorted(mapping),
                combine_segments=True,
                relabel=False,
                skip_overlap_checks=True,
            )
            numbers = np.asarray(v.array)
            lut = np.zeros(max(int(numbers.max()), max(mapping)) + 1, np.uint8)
            for number, label in mapping.items():
                lut[number] = label
            src = Volume(lut[numbers], lps_to_ras(v.affine), "labels", path)
            out = _labels_onto(src, reference).astype(np.uint8)
    except InputError:
        raise
    except Exception as err:  # highdicom: frames that do not form one regular volume
        raise InputError(
            path, f"SEG frames do not form one regular volume ({_short(err)})"
        ) from err
    if not out.any():
        raise InputError(path, "SEG has no vertebra voxel inside the CT")
    if notes is not None:
        notes.extend(own_notes)
    return Volume(out, reference.affine, "labels", path)


# ---------------------------------------------------------------------------------------------
# A whole study from DICOM
# ---------------------------------------------------------------------------------------------


def _series_checksum(info: SeriesInfo) -> str:
    h = hashlib.sha256()
    for inst in info.instances:
        h.update(f"{inst.sop_instance_uid}:{file_sha256(inst.path)}\n".encode())
    return h.hexdigest()


def load_dicom_study(
    ct: str | Path,
    labels: str | Path | None,
    *,
    series_uid: str | None = None,
    bodies: str | Path | None = None,
    label_format: Literal["auto", "verse", "totalseg-total"] = "auto",
    subject: str | None = None,
) -> tuple[Study, SeriesInfo]:
    """Load a study whose CT is a DICOM series, with labels as NIfTI or DICOM SEG.

    Parameters
    ----------
    ct : path
        Folder of the DICOM series (see :func:`read_dicom_series`).
    labels : path
        Vertebra labels (required; ``None`` is an :class:`InputError`): a NIfTI file in the
        same patient space (resampled onto the CT grid where its grid differs, as
        :func:`vertgrade.load_study` does), or a DICOM SEG (:func:`read_dicom_seg`).
    series_uid : str, optional
        The series to read where the folder holds several.
    bodies : path, optional
        A vertebral-body mask NIfTI (1 = body), as for :func:`vertgrade.load_study`.
    label_format : {"auto", "verse", "totalseg-total"}
        How NIfTI label ids are read (ignored for a SEG).
    subject : str, optional
        Subject id; default the folder's name (never a DICOM identifier, which may identify
        the patient).

    Returns
    -------
    study : Study
        As :func:`vertgrade.load_study` gives it; ``inputs["ct"]`` is the folder and its
        checksum covers the series' files.
    series : SeriesInfo
        For :func:`vertgrade.report.dicom_out.write_dicom_outputs`.

    Warns
    -----
    DicomGeometryWarning
        As :func:`read_dicom_series`.
    """
    from vertgrade.io.study import _convert_labels, _resample_onto, _same_grid, _subject_from_name

    if labels is None:
        raise InputError(ct, "no vertebra labels given (use --labels)")
    ct_vol, grid, info, warns = _read_series(ct, series_uid)
    for msg in warns:
        warnings.warn(f"{info.folder}: {msg}", DicomGeometryWarning, stacklevel=2)
    notes = [f"CT read from DICOM series {info.series_instance_uid} ({info.n_images} images)"]
    notes.extend(info.notes)
    lab_path = Path(labels)
    if not lab_path.exists():
        raise InputError(lab_path, "no such file or folder")
    if lab_path.is_file() and _has_preamble(lab_path):
        lab_vol = read_dicom_seg(
            lab_path, ct_vol, frame_of_reference_uid=info.frame_of_reference_uid, notes=notes
        )
        notes.append("labels read from a DICOM SEG and resampled onto the CT grid")
    else:
        lab_vol, _ = read_volume(lab_path, kind="labels")
        lab_vol = _convert_labels(lab_vol, label_format, notes)
        if not _same_grid(lab_vol, ct_vol):
            lab_vol = _resample_onto(lab_vol, ct_vol, "labels")
            notes.append("labels resampled onto the CT grid (nearest neighbour)")
            if not lab_vol.array.any():
                raise InputError(lab_path, "labels do not overlap the CT: none falls inside it")
    inputs = {"ct": info.folder, "labels": lab_path}
    checksums = {"ct": _series_checksum(info), "labels": file_sha256(lab_path)}
    body_vol: Volume | None = None
    if bodies is not None:
        bpath = Path(bodies)
        body_vol, _ = read_volume(bpath, kind="mask")
        if not _same_grid(body_vol, lab_vol):
            body_vol = _resample_onto(body_vol, lab_vol, "body mask")
        body_vol = Volume((body_vol.array == 1).astype(np.uint8), body_vol.affine, "mask", bpath)
        if not body_vol.array.any():
            raise InputError(bpath, "body mask has no voxel of value 1 (vertebral body)")
        inputs["bodies"] = bpath
        checksums["bodies"] = file_sha256(bpath)
        notes.append("vertebral bodies taken from the given body mask")
    study = Study(
        labels=lab_vol,
        grid=grid,
        subject=subject or _subject_from_name(info.folder.name),
        ct=ct_vol,
        bodies=body_vol,
        inputs=inputs,
        checksums=checksums,
        notes=tuple(notes),
    )
    return study, info
