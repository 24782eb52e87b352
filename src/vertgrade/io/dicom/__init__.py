"""Reading DICOM: a CT series (:mod:`~vertgrade.io.dicom.series`) into a canonical
:class:`~vertgrade.study.Volume`, and a DICOM SEG (:mod:`~vertgrade.io.dicom.seg`) into VerSe
labels on the CT's grid.

DICOM's patient coordinate system is LPS+; vertgrade's world is RAS+. :func:`lps_to_ras` is the
one place where the two meet: every affine this package returns maps voxels to RAS+ millimetres,
exactly as :func:`vertgrade.io.nifti.read_volume` does for NIfTI. A whole study whose CT is a
DICOM series is loaded by :func:`vertgrade.io.load.load_study_with_series` (or
:func:`vertgrade.io.load.load_dicom_study`), which also returns the :class:`SeriesInfo` that
DICOM outputs need. pydicom and highdicom are imported only by the functions that read files.
"""

from __future__ import annotations

from vertgrade.io.dicom.seg import SEGMENTATION_STORAGE, read_dicom_seg, segment_label_to_verse
from vertgrade.io.dicom.series import (
    CT_IMAGE_STORAGE,
    MAX_FILLED_GAP_MM,
    DicomGeometryWarning,
    SeriesInfo,
    SourceInstance,
    is_dicom_path,
    list_series,
    lps_to_ras,
    read_dicom_series,
)

__all__ = [
    "CT_IMAGE_STORAGE",
    "MAX_FILLED_GAP_MM",
    "SEGMENTATION_STORAGE",
    "DicomGeometryWarning",
    "SeriesInfo",
    "SourceInstance",
    "is_dicom_path",
    "list_series",
    "lps_to_ras",
    "read_dicom_seg",
    "read_dicom_series",
    "segment_label_to_verse",
]
