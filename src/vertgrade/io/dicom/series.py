"""Reading a DICOM CT series into a canonical :class:`~vertgrade.study.Volume`.

DICOM's patient coordinate system is LPS+ (x towards the patient's left, y posterior, z towards
the head); vertgrade's world is RAS+. :func:`lps_to_ras` is the one place where the two meet:
every affine this package returns maps voxels to RAS+ millimetres, exactly as
:func:`vertgrade.io.nifti.read_volume` does for NIfTI.

Reading a series
----------------
A folder (searched recursively) may hold several series; :func:`list_series` lists them and
:func:`read_dicom_series` reads one. Slices are ordered by their ImagePositionPatient projected
on the slice normal (the cross product of the ImageOrientationPatient row and column
directions), never by file name or InstanceNumber. The voxel grid of the input
(:class:`~vertgrade.study.GridInfo`) is ``(column, row, slice)``: index ``i`` runs along a row
(the first ImageOrientationPatient vector), ``j`` down a column and ``k`` along the sorted
slices; outputs mapped back with ``GridInfo.to_input_grid`` land on that grid.

What is checked, and what happens:

============================================  ====================================================
finding                                       outcome
============================================  ====================================================
several CT series, none chosen                :class:`InputError` listing every series
modality other than CT                        :class:`InputError` naming the modality
images of different orientation, size,        :class:`InputError` naming the orientations / sizes
pixel spacing or frame of reference in one    / frames found
series
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
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io.dicom._header import has_preamble, read_dataset, tag_text
from vertgrade.io.labels import check_ct
from vertgrade.study import GridInfo, Volume

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "CT_IMAGE_STORAGE",
    "MAX_FILLED_GAP_MM",
    "DicomGeometryWarning",
    "SeriesInfo",
    "SourceInstance",
    "is_dicom_path",
    "list_series",
    "lps_to_ras",
    "read_dicom_series",
]

#: SOP Class UID of CT Image Storage (PS3.4 B.5): classic single-frame CT images.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MULTIFRAME_CT = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}


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
        return has_preamble(p)
    if not p.is_dir():
        return False
    for n, f in enumerate(_candidate_files(p)):
        if n >= max_files:
            return False
        if has_preamble(f):
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
        if not has_preamble(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as err:
            raise InputError(p, f"cannot be read as DICOM ({short_reason(err)})") from err
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
        study_instance_uid=tag_text(first, "StudyInstanceUID"),
        series_instance_uid=tag_text(first, "SeriesInstanceUID"),
        modality=tag_text(first, "Modality") or "unknown",
        series_description=tag_text(first, "SeriesDescription"),
        series_number=_int_or_none(first, "SeriesNumber"),
        n_images=len(items),
        orientation=_orientation_name(iops),
        frame_of_reference_uid=tag_text(first, "FrameOfReferenceUID"),
        patient_id=tag_text(first, "PatientID"),
        patient_name=tag_text(first, "PatientName"),
        study_id=tag_text(first, "StudyID"),
        accession_number=tag_text(first, "AccessionNumber"),
        study_date=tag_text(first, "StudyDate"),
        instances=tuple(
            SourceInstance(
                path=p,
                sop_class_uid=tag_text(ds, "SOPClassUID"),
                sop_instance_uid=tag_text(ds, "SOPInstanceUID"),
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

    frames = Counter(str(ds.get("FrameOfReferenceUID", "") or "") for _, ds in items)
    frames.pop("", None)
    if len(frames) > 1:
        listing = ", ".join(f"{n} image(s) in {uid}" for uid, n in frames.most_common())
        raise InputError(
            folder,
            f"series mixes frames of reference ({listing}): its images are not in one patient "
            "space; remove the stray images",
        )
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
    from pydicom.uid import UID

    ds = read_dataset(path, pixels=True)
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
        raise InputError(
            path, f"pixel data ({ts.name}) cannot be decoded: {short_reason(err)}"
        ) from err
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
    return check_ct(folder, data)


# ---------------------------------------------------------------------------------------------
# Public readers
# ---------------------------------------------------------------------------------------------


def _read_series(
    path: str | Path, series_uid: str | None
) -> tuple[Volume, GridInfo, SeriesInfo, tuple[str, ...]]:
    path = Path(path)
    if path.is_file():
        if not has_preamble(path):
            raise InputError(path, "is not a DICOM file (no DICM marker after the preamble)")
        if series_uid is None:
            series_uid = tag_text(read_dataset(path, pixels=False), "SeriesInstanceUID")
        path = path.parent
    folder = path
    groups = _scan(folder)
    items = _choose_series(folder, groups, series_uid)
    modality = tag_text(items[0][1], "Modality") or "unknown"
    if modality != "CT":
        raise InputError(
            folder,
            f"series {tag_text(items[0][1], 'SeriesInstanceUID')} has modality {modality}; "
            "vertgrade reads CT series only",
        )
    classes = {tag_text(ds, "SOPClassUID") for _, ds in items}
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
    info = dataclasses.replace(info, slice_index=tuple(int(k) for k in stack.k), notes=stack.notes)
    return Volume(canonical, can_affine, "ct", folder), grid, info, stack.warnings


def read_dicom_series(
    folder: str | Path, *, series_uid: str | None = None, stacklevel: int = 2
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
    stacklevel : int
        Where the warnings point, as for :func:`warnings.warn`: 2 is the caller of this
        function; a reader that wraps it passes 3 to point at its own caller.

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
        warnings.warn(f"{info.folder}: {msg}", DicomGeometryWarning, stacklevel=stacklevel)
    return vol, grid, info
