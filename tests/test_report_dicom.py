"""The report of a DICOM study: its identifiers in the header (and none of them when anonymised),
found again when the report is rewritten from the result folder; and the DICOM outputs written
with a PDF report still hold the overview as a Secondary Capture, as the README promises.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from vertgrade import grade_study  # noqa: E402
from vertgrade.io.dicom import CT_IMAGE_STORAGE  # noqa: E402
from vertgrade.io.load import load_study_with_series  # noqa: E402
from vertgrade.phantom import make_phantom  # noqa: E402
from vertgrade.report.dicom import DICOM_OUTPUT_FILES, write_dicom_outputs  # noqa: E402
from vertgrade.report.files import write_result  # noqa: E402
from vertgrade.report.html import render_report, render_result_dir  # noqa: E402

IDENTIFIERS = {
    "PatientName": "Roe^Richard^J",
    "PatientID": "MRN-20931",
    "StudyDate": "20230517",
    "AccessionNumber": "ACC-55120",
}
SHOWN = ("Roe, Richard J", "MRN-20931", "2023-05-17", "ACC-55120")


def _write_axial_series(ct: np.ndarray, affine: np.ndarray, folder: Path) -> None:
    """One single-frame CT image per axial slice of a RAS-ordered (x, y, z) volume whose
    affine is diagonal: DICOM rows run along -y (anterior to posterior is +y in LPS), columns
    along -x."""
    folder.mkdir(parents=True)
    spacing = np.abs(np.diag(affine)[:3])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    nx, ny, nz = ct.shape
    for k in range(nz):
        # RAS voxel (i, j, k) -> LPS (-x, -y, z); the image's first pixel is voxel (nx-1, ny-1)
        corner_ras = affine @ [nx - 1, ny - 1, k, 1.0]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, k + 1
        for key, value in IDENTIFIERS.items():
            setattr(ds, key, value)
        ds.StudyTime, ds.StudyID, ds.ReferringPhysicianName = "120000", "1", ""
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [-corner_ras[0], -corner_ras[1], corner_ras[2]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
        # pixel (row r, column c) is voxel (nx - 1 - c, ny - 1 - r)
        pixels = ct[::-1, ::-1, k].T
        ds.PixelData = np.ascontiguousarray(np.rint(pixels).astype(np.int16)).tobytes()
        ds.save_as(folder / f"CT{k:04d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dicom-report")
    ph = make_phantom("T12-L2", ("L1:wedge:0.35",), spacing=2.0, fov_mm=(110.0, 110.0), seed=7)
    assert np.count_nonzero(ph.affine[:3, :3] - np.diag(np.diag(ph.affine[:3, :3]))) == 0
    _write_axial_series(ph.ct, ph.affine, root / "ct")
    nib.save(nib.Nifti1Image(ph.labels.astype(np.uint8), ph.affine), root / "labels.nii.gz")
    study, series = load_study_with_series(root / "ct", root / "labels.nii.gz")
    assert series is not None
    result = grade_study(study)
    return {"root": root, "study": study, "series": series, "result": result}


def test_header_shows_the_dicom_identifiers(dicom_study: dict[str, Any]) -> None:
    text = unescape(
        render_report(dicom_study["result"], dicom_study["study"], series=dicom_study["series"])
    )
    header = text.split('id="impression"')[0]
    for shown in SHOWN:
        assert shown in header
    assert "analysed" in header and "left out" not in header


@pytest.mark.slow
def test_anonymised_report_holds_no_identifier(dicom_study: dict[str, Any]) -> None:
    text = unescape(
        render_report(
            dicom_study["result"],
            dicom_study["study"],
            series=dicom_study["series"],
            anonymize=True,
        )
    )
    words = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # not the pixels
    for raw in (*IDENTIFIERS.values(), *SHOWN, "Roe", "Richard"):
        assert raw not in words
    assert "left out (anonymised)" in text


@pytest.mark.slow
def test_report_from_the_folder_reads_the_identifiers_again(
    dicom_study: dict[str, Any], tmp_path: Path
) -> None:
    write_result(dicom_study["result"], tmp_path / "out")
    text = unescape(render_result_dir(tmp_path / "out"))
    header = text.split('id="impression"')[0]
    assert all(shown in header for shown in SHOWN)
    anonymous = unescape(render_result_dir(tmp_path / "out", anonymize=True))
    assert not any(shown in anonymous for shown in SHOWN)


def test_dicom_outputs_with_a_pdf_keep_the_overview(
    dicom_study: dict[str, Any], tmp_path: Path
) -> None:
    """With a PDF report (``--pdf --dicom-out``) the Secondary Capture of the overview is still
    written, beside the Encapsulated PDF."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")
    files = write_dicom_outputs(
        dicom_study["result"],
        dicom_study["series"],
        tmp_path / "dicom",
        report_pdf=pdf,
        ct=dicom_study["study"].ct,
    )
    assert [f.name for f in files] == [DICOM_OUTPUT_FILES[k] for k in ("sr", "seg", "sc", "pdf")]
    sc = pydicom.dcmread(tmp_path / "dicom" / DICOM_OUTPUT_FILES["sc"])
    assert sc.SeriesDescription == "vertgrade overview" and sc.pixel_array.ndim == 3
