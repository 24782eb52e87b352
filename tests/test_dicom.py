"""DICOM in and out: CT series built from phantoms with pydicom, read back and graded exactly as
the NIfTI path grades them; SR, SEG, Secondary Capture and Encapsulated PDF read back with
highdicom and checked value by value; broken series give one clear error each."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nibabel.affines import voxel_sizes

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat  # noqa: E402

from vertgrade import InputError, OutputError, grade_study, load_study  # noqa: E402
from vertgrade.io.dicom import (  # noqa: E402
    CT_IMAGE_STORAGE,
    DicomGeometryWarning,
    SeriesInfo,
    is_dicom_path,
    list_series,
    lps_to_ras,
    read_dicom_seg,
    read_dicom_series,
)
from vertgrade.io.load import load_dicom_study, study_from_arrays  # noqa: E402
from vertgrade.io.nifti import save_nifti  # noqa: E402
from vertgrade.levels import level_name  # noqa: E402
from vertgrade.phantom import Phantom, make_phantom  # noqa: E402
from vertgrade.report.dicom import (  # noqa: E402
    DICOM_OUTPUT_FILES,
    LOCAL_CODES,
    LOCAL_SCHEME,
    QC_FLAG_CODES,
    write_dicom_outputs,
)
from vertgrade.result import QC_FLAGS, SpineResult  # noqa: E402
from vertgrade.study import Study  # noqa: E402

LEVELS = "T12-L2"
FRACTURES = ("L1:wedge:0.35",)
SPACING = (1.5, 1.5, 1.5)
PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-4711",
    "PatientBirthDate": "19500101",
    "PatientSex": "F",
    "StudyDate": "20240102",
    "StudyTime": "101010",
    "AccessionNumber": "ACC-0815",
    "StudyID": "STUDY-7",
    "ReferringPhysicianName": "Ref^Doc",
}
THIRDS = ("body", "anterior", "middle", "posterior")
MODIFIER = {"anterior": "255549009", "middle": "26216008", "posterior": "255551008"}


@cache
def _phantom(orientation: str) -> Phantom:
    return make_phantom(
        LEVELS, FRACTURES, orientation=orientation, spacing=SPACING, fov_mm=(130, 130), seed=4
    )


def _ds(values: Any) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_series(
    ct: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    *,
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    description: str = "phantom",
    series_number: int = 3,
    slope: float = 1.0,
    intercept: float = -1024.0,
    signed: bool = False,
    skip: tuple[int, ...] = (),
    shift_mm: tuple[float, float, float] | None = None,
    shuffle_names: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> dict[str, Any]:
    """Write an (I, J, K) CT with its RAS affine as single-frame CT images, slice k per file:
    rows along j, columns along i. ``shift_mm`` adds k times that LPS vector to each slice's
    position (gantry tilt). Returns the UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    a = lps_to_ras(affine)
    sp = voxel_sizes(a)
    row_dir, col_dir = a[:3, 0] / sp[0], a[:3, 1] / sp[1]
    n = ct.shape[2]
    names = list(range(n))
    if shuffle_names:
        names = list(np.random.default_rng(0).permutation(n))
    sops = []
    for k in range(n):
        if k in skip:
            continue
        pos = a[:3, :3] @ [0, 0, k] + a[:3, 3]
        if shift_mm is not None:
            pos = pos + np.asarray(shift_mm) * k
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        sop = generate_uid()
        sops.append(sop)
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.SeriesNumber = series_number
        ds.InstanceNumber = int(names[k]) + 1
        ds.SeriesDescription = description
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
        ds.ImagePositionPatient = _ds(pos)
        ds.PixelSpacing = _ds([sp[1], sp[0]])
        ds.SliceThickness = DSfloat(float(sp[2]), auto_format=True)
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = DSfloat(slope, auto_format=True)
        ds.RescaleIntercept = DSfloat(intercept, auto_format=True)
        ds.RescaleType = "HU"
        raw = np.rint((ct[:, :, k].T.astype(np.float64) - intercept) / slope)
        ds.PixelData = raw.astype(np.int16 if signed else np.uint16).tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        ds.save_as(folder / f"IM{int(names[k]):04d}.dcm", enforce_file_format=True)
    return {"series": series_uid, "study": study_uid, "frame": frame_uid, "sops": sops}


def _as_nifti(ph: Phantom, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(ph.ct, ph.affine, folder / "ct.nii.gz")
    save_nifti(ph.labels, ph.affine, folder / "labels.nii.gz")
    return folder / "ct.nii.gz", folder / "labels.nii.gz"


def _heights(res: SpineResult) -> dict[str, np.ndarray]:
    out = {}
    for v in res.vertebrae:
        assert v.heights_mm is not None
        out[v.level] = np.array([v.heights_mm.get(r) for r in THIRDS], float)
    return out


# ---------------------------------------------------------------------------------------------
# Reading: same volume, same grades and heights as the NIfTI path
# ---------------------------------------------------------------------------------------------

# orientation code of the phantom grid (slices along its third axis), DICOM plane, rescale
ORIENTATIONS = [
    ("LPS", "axial", {"slope": 1.0, "intercept": -1024.0}),
    ("PIR", "sagittal", {"slope": 0.5, "intercept": -1024.0}),
    ("LIA", "coronal", {"signed": True, "intercept": 0.0}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("orientation", "plane", "rescale"), ORIENTATIONS)
def test_series_grades_like_nifti(
    tmp_path: Path, orientation: str, plane: str, rescale: dict[str, Any]
) -> None:
    """Axial, sagittal and coronal series with different rescale conventions: the same
    canonical CT (values and affine) and the same grades and heights as the NIfTI files."""
    ph = _phantom(orientation)
    uids = write_series(ph.ct, ph.affine, tmp_path / "dicom", **rescale)
    ct_nii, lab_nii = _as_nifti(ph, tmp_path / "nifti")

    study, info = load_dicom_study(tmp_path / "dicom", lab_nii)
    ref = load_study(ct_nii, lab_nii)
    assert info.orientation == plane
    assert info.series_instance_uid == uids["series"]
    assert info.n_images == ph.ct.shape[2] == len(info.slice_index)
    assert [i.sop_instance_uid for i in info.instances] == uids["sops"] or [
        i.sop_instance_uid for i in info.instances
    ] == uids["sops"][::-1]
    assert study.ct is not None and ref.ct is not None
    assert study.ct.orientation == "RAS"
    np.testing.assert_allclose(study.ct.affine, ref.ct.affine, atol=1e-4)
    np.testing.assert_allclose(study.ct.array, ref.ct.array, atol=1e-3)
    assert study.ct.array.dtype == (np.float32 if rescale.get("slope", 1.0) != 1.0 else np.int16)
    assert np.array_equal(study.labels.array, ref.labels.array)

    res, res_ref = grade_study(study), grade_study(ref)
    truth = {t.level: t.grade for t in ph.truth}
    assert {v.level: v.grade for v in res.vertebrae} == truth
    assert {v.level: v.grade for v in res_ref.vertebrae} == truth
    assert {v.level: v.fracture_type for v in res.vertebrae} == {
        v.level: v.fracture_type for v in res_ref.vertebrae
    }
    h, h_ref = _heights(res), _heights(res_ref)
    for level in h:
        np.testing.assert_allclose(h[level], h_ref[level], atol=0.1)
    # the input grid is (columns, rows, slices) of the series
    assert res.grid.shape == (ph.ct.shape[0], ph.ct.shape[1], ph.ct.shape[2])


def test_slice_order_comes_from_positions_not_names(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "dicom", shuffle_names=True)
    vol, grid, info = read_dicom_series(tmp_path / "dicom")
    ref = study_from_arrays(ph.labels, ph.affine, ct=ph.ct).ct
    assert ref is not None
    assert np.array_equal(vol.array, ref.array)
    np.testing.assert_allclose(grid.affine, ph.affine, atol=1e-4)
    assert info.slice_index == tuple(range(ph.ct.shape[2]))
    # instance numbers were shuffled with the names; the order is spatial nonetheless
    assert sorted(i.instance_number or 0 for i in info.instances) != [
        i.instance_number for i in info.instances
    ]


def test_reading_one_file_reads_its_series(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    uids = write_series(ph.ct, ph.affine, tmp_path / "dicom")
    vol, _, info = read_dicom_series(tmp_path / "dicom" / "IM0005.dcm")
    assert info.series_instance_uid == uids["series"] and vol.shape == ph.ct.shape


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_compressed_series_reads(tmp_path: Path, syntax: str) -> None:
    """Lossless compression that the installed decoders handle gives the very same volume."""
    if not pydicom.pixels.get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax} installed here")
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "dicom", transfer_syntax=syntax)
    assert pydicom.dcmread(tmp_path / "dicom" / "IM0000.dcm").file_meta.TransferSyntaxUID == syntax
    vol, _, _ = read_dicom_series(tmp_path / "dicom")
    ref = study_from_arrays(ph.labels, ph.affine, ct=ph.ct).ct
    assert ref is not None and np.array_equal(vol.array, ref.array)


def test_missing_slice_is_filled_with_a_warning(tmp_path: Path) -> None:
    """One slice missing (1.5 mm): warned about, naming the gap, filled by interpolation;
    the grid keeps every position and the grades stay right."""
    ph = _phantom("LPS")
    gap = ph.ct.shape[2] // 2
    write_series(ph.ct, ph.affine, tmp_path / "dicom", skip=(gap,))
    _, lab_nii = _as_nifti(ph, tmp_path / "nifti")
    names = rf"IM{gap - 1:04d}\.dcm and IM{gap + 1:04d}\.dcm"
    with pytest.warns(DicomGeometryWarning, match=rf"1 slice missing between {names} \("):
        study, info = load_dicom_study(tmp_path / "dicom", lab_nii)
    assert info.n_images == ph.ct.shape[2] - 1
    assert gap not in info.slice_index and len(info.slice_index) == info.n_images
    assert any("filled by linear interpolation" in n for n in study.notes)
    assert study.grid.shape == ph.ct.shape
    # LPS phantom: canonical = flip of i and j; slice k stays k
    assert study.ct is not None
    arr = np.asarray(study.ct.array)[::-1, ::-1, :]
    expected = np.rint(0.5 * (ph.ct[:, :, gap - 1].astype(float) + ph.ct[:, :, gap + 1]))
    assert np.array_equal(arr[:, :, gap], expected)
    res = grade_study(study)
    assert {v.level: v.grade for v in res.vertebrae} == {t.level: t.grade for t in ph.truth}


@pytest.mark.slow
def test_gantry_tilt_keeps_the_sheared_geometry(tmp_path: Path) -> None:
    """Slices shifted 0.2 mm posteriorly per slice (7.6 degrees of tilt): warned about, and the
    affine is the exact shear, so the study grades as the NIfTI of the same grid does."""
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "dicom", shift_mm=(0.0, 0.2, 0.0))
    with pytest.warns(DicomGeometryWarning, match=r"gantry tilt of 7\.6 degrees"):
        vol, grid, info = read_dicom_series(tmp_path / "dicom")
    sheared = ph.affine.copy()
    sheared[:3, 2] += lps_to_ras(np.diag([1.0, 1.0, 1.0, 1.0]))[:3, :3] @ [0.0, 0.2, 0.0]
    np.testing.assert_allclose(grid.affine, sheared, atol=1e-4)
    assert any("gantry tilt" in n for n in info.notes)
    res = grade_study(Study(labels=_labels_on(vol, ph), grid=grid, subject="tilt", ct=vol))
    ref = grade_study(study_from_arrays(ph.labels, sheared, ct=ph.ct))
    assert [v.grade for v in res.vertebrae] == [v.grade for v in ref.vertebrae]
    for level, h in _heights(res).items():
        np.testing.assert_allclose(h, _heights(ref)[level], atol=0.1)


def _labels_on(vol: Any, ph: Phantom) -> Any:
    """The phantom's labels on the canonical grid of ``vol`` (same voxels as ph.ct)."""
    ref = study_from_arrays(ph.labels, ph.affine, ct=ph.ct)
    return dataclasses.replace(ref.labels, affine=vol.affine)


# ---------------------------------------------------------------------------------------------
# Broken or ambiguous inputs: one clear error each
# ---------------------------------------------------------------------------------------------


def _rewrite(folder: Path, change: Any, which: slice = slice(None)) -> None:
    for p in sorted(folder.glob("*.dcm"))[which]:
        ds = pydicom.dcmread(p)
        change(ds)
        ds.save_as(p, enforce_file_format=True)


def test_two_series_are_listed_and_one_can_be_chosen(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    study = tmp_path / "study"
    a = write_series(ph.ct, ph.affine, study / "a", description="bone", series_number=2)
    b = write_series(
        ph.ct,
        ph.affine,
        tmp_path / "study" / "b",
        description="soft",
        series_number=3,
        study_uid=a["study"],
    )
    infos = list_series(tmp_path / "study")
    assert [s.series_instance_uid for s in infos] == [a["series"], b["series"]]
    assert [s.n_images for s in infos] == [ph.ct.shape[2]] * 2
    with pytest.raises(InputError, match="holds 2 series") as err:
        read_dicom_series(tmp_path / "study")
    for uid in (a["series"], b["series"]):
        assert uid in str(err.value)
    assert "'bone'" in str(err.value) and "axial" in str(err.value)
    assert f"{ph.ct.shape[2]} images" in str(err.value)
    _, _, info = read_dicom_series(tmp_path / "study", series_uid=b["series"])
    assert info.series_description == "soft"
    with pytest.raises(InputError, match=r"has no series 1\.2\.3"):
        read_dicom_series(tmp_path / "study", series_uid="1.2.3")


def test_non_ct_modality_is_named(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "mr", modality="MR")
    with pytest.raises(InputError, match="has modality MR; vertgrade reads CT series only"):
        read_dicom_series(tmp_path / "mr")


def test_one_ct_among_other_modalities_is_used(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    ct = write_series(ph.ct, ph.affine, tmp_path / "study" / "ct")
    write_series(ph.ct[:, :, :4], ph.affine, tmp_path / "study" / "mr", modality="MR")
    _, _, info = read_dicom_series(tmp_path / "study")
    assert info.series_instance_uid == ct["series"]


def test_large_gap_is_an_error(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d", skip=(40, 41, 42))  # 4.5 mm missing
    with pytest.raises(InputError, match=r"3 slices missing between IM0039\.dcm and IM0043"):
        read_dicom_series(tmp_path / "d")


def test_non_uniform_spacing_is_an_error(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d")

    def stretch(ds: Dataset) -> None:  # the upper half spaced 2.25 mm instead of 1.5 mm
        pos = [float(v) for v in ds.ImagePositionPatient]
        k = int(ds.InstanceNumber) - 1
        if k > 40:
            pos[2] += 0.75 * (k - 40)
        ds.ImagePositionPatient = _ds(pos)

    _rewrite(tmp_path / "d", stretch)
    with pytest.raises(InputError, match=r"slice spacing is not uniform: steps of 1\.5, 2\.25 mm"):
        read_dicom_series(tmp_path / "d")


def test_a_slice_from_another_frame_of_reference_is_an_error(tmp_path: Path) -> None:
    """One image of the series in another patient space: refused, with the counts."""
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d")

    def other(ds: Dataset) -> None:
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.543.999"

    _rewrite(tmp_path / "d", other, slice(0, 1))
    with pytest.raises(
        InputError, match=r"mixes frames of reference \(\d+ image\(s\) in .*1 image"
    ):
        read_dicom_series(tmp_path / "d")


def test_mixed_orientations_are_an_error(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d")

    def turn(ds: Dataset) -> None:
        ds.ImageOrientationPatient = _ds([1, 0, 0, 0, 0, -1])

    _rewrite(tmp_path / "d", turn, slice(0, 3))
    found = r"\(\d+ x \[1 0 0 0 1 0\] \(axial\), 3 x \[1 0 0 0 0 -1\] \(coronal\)\)"
    with pytest.raises(InputError, match=rf"mixes image orientations {found}"):
        read_dicom_series(tmp_path / "d")


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d")
    src = tmp_path / "d" / "IM0010.dcm"
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "d" / "IM9999.dcm", enforce_file_format=True)
    dup = r"2 images share slice positions \(e\.g\. IM0010\.dcm and IM9999"
    with pytest.raises(InputError, match=dup):
        read_dicom_series(tmp_path / "d")


def test_missing_position_is_an_error(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "d")
    _rewrite(tmp_path / "d", lambda ds: delattr(ds, "ImagePositionPatient"), slice(5, 6))
    with pytest.raises(InputError, match=r"IM0005\.dcm: lacks ImagePositionPatient"):
        read_dicom_series(tmp_path / "d")


def test_undecodable_compression_names_the_transfer_syntax(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct[:, :, :3], ph.affine, tmp_path / "d")

    def jpeg_lossless(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True

    _rewrite(tmp_path / "d", jpeg_lossless)
    decoder = pydicom.pixels.get_decoder("1.2.840.10008.1.2.4.70")
    if decoder.is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    with pytest.raises(
        InputError, match=r"compressed as JPEG Lossless.*\(1\.2\.840\.10008\.1\.2\.4\.70\)"
    ):
        read_dicom_series(tmp_path / "d")


def test_folders_without_dicom_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_dicom_series(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not dicom")
    with pytest.raises(InputError, match=r"1 file, none of them DICOM"):
        list_series(tmp_path / "other")
    with pytest.raises(InputError, match="no such file or folder"):
        read_dicom_series(tmp_path / "absent")
    assert not is_dicom_path(tmp_path / "other")
    ph = _phantom("LPS")
    write_series(ph.ct[:, :, :1], ph.affine, tmp_path / "one")
    assert is_dicom_path(tmp_path / "one") and is_dicom_path(tmp_path / "one" / "IM0000.dcm")
    with pytest.raises(InputError, match="series has 1 image; a 3D volume needs at least 2"):
        read_dicom_series(tmp_path / "one")


# ---------------------------------------------------------------------------------------------
# Labels as DICOM SEG
# ---------------------------------------------------------------------------------------------


def _seg_of_labels(
    ph: Phantom, series: Path, out: Path, *, names: bool = True, kind: str = "BINARY"
) -> Path:
    """A SEG (``kind``: BINARY, FRACTIONAL or LABELMAP) of the phantom's labels on the series'
    images. With ``names``: segments 1..n labelled ``vertebrae_<level>``; without: segment
    number = VerSe label id (empty segments fill the numbers below) and labels that name no
    vertebra."""
    _, _, info = read_dicom_series(series)
    k = [int(i.instance_number or 0) - 1 for i in info.instances]  # phantom slice of each image
    frames = ph.labels.transpose(2, 1, 0)[k]
    labels = [int(v) for v in np.unique(ph.labels) if v]
    numbers = [n + 1 for n in range(len(labels))] if names else labels
    lut = np.zeros(256, np.uint8)
    for lab, n in zip(labels, numbers, strict=True):
        lut[lab] = n
    codes = pydicom.sr.codedict.codes

    def description(n: int, text: str) -> Any:
        return hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=text,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Bone,
            algorithm_type="MANUAL",
        )

    text = {
        n: f"vertebrae_{level_name(lab)}" if names else f"structure {lab}"
        for lab, n in zip(labels, numbers, strict=True)
    }
    descriptions = [description(n, text.get(n, f"empty {n}")) for n in range(1, max(numbers) + 1)]
    pixels = lut[frames]
    if kind == "FRACTIONAL":  # one probability channel per segment
        pixels = np.stack([(pixels == d.SegmentNumber) for d in descriptions], -1).astype(float)
    hd.seg.Segmentation(
        source_images=list(info.headers),
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    ).save_as(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("names", "kind"),
    [(True, "BINARY"), (False, "BINARY"), (True, "FRACTIONAL"), (True, "LABELMAP")],
)
def test_seg_labels_map_to_verse(tmp_path: Path, names: bool, kind: str) -> None:
    """By segment label text, or (no text names a vertebra) by segment number = VerSe id;
    binary, fractional and label-map SEGs alike."""
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "dicom")
    seg = _seg_of_labels(ph, tmp_path / "dicom", tmp_path / "seg.dcm", names=names, kind=kind)
    ct, _, info = read_dicom_series(tmp_path / "dicom")
    notes: list[str] = []
    lab = read_dicom_seg(seg, ct, frame_of_reference_uid=info.frame_of_reference_uid, notes=notes)
    expected = study_from_arrays(ph.labels, ph.affine).labels.array
    assert lab.array.dtype == np.uint8 and np.array_equal(lab.array, expected)
    assert np.allclose(lab.affine, ct.affine)
    assert any("segment numbers read as VerSe label ids" in n for n in notes) is not names


def test_totalsegmentator_segment_names() -> None:
    """TotalSegmentator-like segment names: organs left out, sacrum merged into S1, SNOMED
    property types taken before the text."""
    from vertgrade.io.dicom.seg import _segment_labels, segment_label_to_verse

    def segment(number: int, label: str, code: str = "85756007") -> Dataset:
        item = Dataset()
        item.SegmentNumber = number
        item.SegmentLabel = label
        type_code = Dataset()
        type_code.CodeValue, type_code.CodingSchemeDesignator = code, "SCT"
        item.SegmentedPropertyTypeCodeSequence = [type_code]
        return item

    seg = Dataset()
    seg.SegmentSequence = [
        segment(1, "liver"),
        segment(2, "vertebrae_L1"),
        segment(3, "sacrum"),
        segment(4, "vertebrae_S1"),
        segment(5, "rib_left_1"),
        segment(6, "structure", code="23215003"),  # SNOMED T12 vertebra, text says nothing
        segment(7, "vertebrae_T13"),
    ]
    notes: list[str] = []
    assert _segment_labels(Path("seg.dcm"), seg, notes) == {2: 20, 3: 26, 4: 26, 6: 19, 7: 28}
    assert "SEG segments 3 and 4 both name S1: merged" in notes
    assert any("2 SEG segments name no vertebra" in n and "'rib_left_1'" in n for n in notes)
    assert [segment_label_to_verse(t) for t in ("L 6", "Vertebra-T7", "t12 vertebral body")] == [
        25,
        14,
        19,
    ]


def test_seg_as_labels_grades_like_nifti(tmp_path: Path) -> None:
    """A sagittal series with its labels as a SEG: the same labels and grades as NIfTI."""
    ph = _phantom("PIR")
    write_series(ph.ct, ph.affine, tmp_path / "dicom")
    seg = _seg_of_labels(ph, tmp_path / "dicom", tmp_path / "seg.dcm")
    study, _ = load_dicom_study(tmp_path / "dicom", seg)
    assert any("DICOM SEG" in n for n in study.notes)
    ref = study_from_arrays(ph.labels, ph.affine, ct=ph.ct)
    assert np.array_equal(study.labels.array, ref.labels.array)
    assert {v.level: v.grade for v in grade_study(study).vertebrae} == {
        t.level: t.grade for t in ph.truth
    }


def test_seg_in_another_frame_of_reference_is_refused(tmp_path: Path) -> None:
    ph = _phantom("LPS")
    write_series(ph.ct, ph.affine, tmp_path / "dicom")
    seg = _seg_of_labels(ph, tmp_path / "dicom", tmp_path / "seg.dcm")
    ct, _, _ = read_dicom_series(tmp_path / "dicom")
    with pytest.raises(InputError, match="not in the same patient space"):
        read_dicom_seg(seg, ct, frame_of_reference_uid="1.2.3.4")
    with pytest.raises(InputError, match="not a Segmentation"):
        read_dicom_seg(tmp_path / "dicom" / "IM0000.dcm", ct)


# ---------------------------------------------------------------------------------------------
# Outputs: SR, SEG, Secondary Capture, Encapsulated PDF
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sagittal series (so that the input grid is not the canonical one) graded from DICOM."""
    tmp = tmp_path_factory.mktemp("graded")
    ph = _phantom("PIR")
    uids = write_series(ph.ct, ph.affine, tmp / "dicom")
    _, lab_nii = _as_nifti(ph, tmp / "nifti")
    study, info = load_dicom_study(tmp / "dicom", lab_nii)
    return {
        "tmp": tmp,
        "ph": ph,
        "uids": uids,
        "study": study,
        "info": info,
        "result": grade_study(study),
    }


def _code(item: Any) -> tuple[str, str]:
    """(value, scheme) of a code, or of the value of a CODE content item (finding site)."""
    if hasattr(item, "ConceptCodeSequence"):
        item = item.ConceptCodeSequence[0]
        return (str(item.CodeValue), str(item.CodingSchemeDesignator))
    return (str(item.value), str(item.scheme_designator))


def _find_site(m: Any) -> tuple[str, str | None]:
    """(vertebra code, topographical modifier code or None) of a measurement."""
    site = m.finding_sites[0]
    mod = site.topographical_modifier
    return str(site.value.value), None if mod is None else str(mod.value)


def test_sr_and_seg_carry_every_measurement(graded: dict[str, Any]) -> None:
    res: SpineResult = graded["result"]
    info: SeriesInfo = graded["info"]
    out = graded["tmp"] / "out"
    files = write_dicom_outputs(res, info, out, ct=graded["study"].ct)
    assert [f.name for f in files] == [
        DICOM_OUTPUT_FILES["sr"],
        DICOM_OUTPUT_FILES["seg"],
        DICOM_OUTPUT_FILES["sc"],
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)

    sr = hd.sr.srread(out / DICOM_OUTPUT_FILES["sr"])
    seg = hd.seg.segread(out / DICOM_OUTPUT_FILES["seg"])
    for ds in (sr, seg):
        assert ds.StudyInstanceUID == graded["uids"]["study"]
        for key, value in PATIENT.items():
            if key in ("PatientName", "PatientID", "StudyID", "AccessionNumber"):
                assert str(ds[key].value) == value
        assert "PatientIdentityRemoved" not in ds
        assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    assert seg.FrameOfReferenceUID == graded["uids"]["frame"]
    # evidence: every CT image, and the SEG
    evidence = {e[2] for e in sr.get_evidence()}
    assert evidence == {*graded["uids"]["sops"], seg.SOPInstanceUID}
    assert {e[1] for e in sr.get_evidence()} == {graded["uids"]["series"], seg.SeriesInstanceUID}
    # SEG references the source images
    ref_sops = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert ref_sops <= set(graded["uids"]["sops"]) and len(ref_sops) > 0

    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        f"{v.level} vertebral body" for v in res.vertebrae
    ]
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert len(segments) == len(res.vertebrae)
    for v, g in zip(res.vertebrae, groups, strict=True):
        vcode = {"T12": "23215003", "L1": "66794005", "L2": "14293000"}[v.level]
        assert _code(g.finding_sites[0]) == (vcode, "SCT")
        rs = g.referenced_segment
        assert rs.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = rs.referenced_segment_numbers
        assert rs.source_series_for_segmentation.value == graded["uids"]["series"]
        segment = segments[number]
        assert segment.SegmentLabel == f"{v.level} vertebral body"
        assert segment.TrackingUID == g.tracking_uid
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == vcode
        assert f"Genant grade {v.grade}" in segment.SegmentDescription

        ms = g.get_measurements()
        heights = {_find_site(m)[1]: m for m in ms if _code(m.name) == ("121207", "DCM")}
        rhlv = {_find_site(m)[1]: m for m in ms if _code(m.name) == ("RHLV", LOCAL_SCHEME)}
        assert v.heights_mm is not None and v.rhlv is not None
        for region in THIRDS:
            key = MODIFIER.get(region)
            h = heights[key]
            assert _code(h.unit) == ("mm", "UCUM")
            assert _find_site(h)[0] == vcode
            assert _code(h.derivation) == ("373098007", "SCT")
            assert _code(h.method) == ("HEIGHTS-CT", LOCAL_SCHEME)
            assert h.value == pytest.approx(v.heights_mm.get(region), abs=1e-3)
            r = rhlv[key]
            assert _code(r.unit) == ("%", "UCUM")
            assert r.value == pytest.approx(100 * v.rhlv[region], abs=1e-2)
        (hu,) = [m for m in ms if _code(m.name) == ("112031", "DCM")]
        assert _code(hu.unit) == ("[hnsf'U]", "UCUM")
        assert hu.value == pytest.approx(v.hu_trabecular, abs=0.05)
        assert _code(hu.derivation) == ("373099004", "SCT")
        (conf,) = [m for m in ms if _code(m.name) == ("GRADE-CONF", LOCAL_SCHEME)]
        assert conf.value == pytest.approx(v.confidence, abs=1e-3) and _code(conf.unit) == (
            "1",
            "UCUM",
        )
        evals = {_code(q.name): _code(q.value) for q in g.get_qualitative_evaluations()}
        assert evals[("GENANT-GRADE", LOCAL_SCHEME)] == (f"GENANT-{v.grade}", LOCAL_SCHEME)
        if v.grade:
            assert evals[("FX-TYPE", LOCAL_SCHEME)] == (
                f"FX-{v.fracture_type.upper()}",
                LOCAL_SCHEME,  # type: ignore[union-attr]
            )
        else:
            assert ("FX-TYPE", LOCAL_SCHEME) not in evals
        flags = [
            _code(q.value)[0]
            for q in g.get_qualitative_evaluations()
            if _code(q.name) == ("QC-FLAG", LOCAL_SCHEME)
        ]
        assert flags == [QC_FLAG_CODES[f] for f in v.flags]

    # the SEG's voxels are the result's bodies on the series' own frames
    read_back = read_dicom_seg(out / DICOM_OUTPUT_FILES["seg"], graded["study"].ct)
    assert np.array_equal(read_back.array, res.bodies)

    sc = pydicom.dcmread(out / DICOM_OUTPUT_FILES["sc"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    assert sc.StudyInstanceUID == graded["uids"]["study"] and sc.BurnedInAnnotation == "NO"
    rgb = sc.pixel_array
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 10  # a picture, not blank


def test_anonymize_replaces_every_identifier(graded: dict[str, Any], tmp_path: Path) -> None:
    res, info = graded["result"], graded["info"]
    png = tmp_path / "figure.png"
    from matplotlib import image as mpimg

    mpimg.imsave(png, np.full((40, 60, 3), 200, np.uint8))
    pdf = _pdf(tmp_path / "report.pdf")
    files = write_dicom_outputs(
        res,
        info,
        tmp_path / "anon",
        anonymize=True,
        pseudonym="SUBJ-01",
        overview=png,
        report_pdf=pdf,
    )
    assert [f.name for f in files] == [DICOM_OUTPUT_FILES[k] for k in ("sr", "seg", "sc", "pdf")]
    # (the sex is one letter and the time six digits: they could occur by chance in random UIDs
    # or pixel data; they are checked as attributes below)
    originals = [
        *(v.encode() for k, v in PATIENT.items() if k not in ("PatientSex", "StudyTime")),
        b"Doe",
        graded["uids"]["study"].encode(),
        graded["uids"]["series"].encode(),
        graded["uids"]["frame"].encode(),
        *(s.encode() for s in graded["uids"]["sops"]),
    ]
    study_uids = set()
    for f in files:
        raw = f.read_bytes()
        leaked = [o for o in originals if o in raw]
        assert not leaked, (f.name, leaked)
        ds = pydicom.dcmread(f)
        assert ds.PatientID == "SUBJ-01" and str(ds.PatientName) == "SUBJ-01^"
        assert ds.PatientIdentityRemoved == "YES"
        assert not ds.get("StudyTime") and not ds.get("PatientSex")
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert "vertgrade: new UIDs" in ds.DeidentificationMethod
        study_uids.add(ds.StudyInstanceUID)
    assert len(study_uids) == 1  # one (new) study for all outputs
    # the SR still points at the (pseudonymous) CT images and the SEG, consistently
    sr = hd.sr.srread(files[0])
    seg = hd.seg.segread(files[1])
    ct_sops = {e[2] for e in sr.get_evidence()} - {seg.SOPInstanceUID}
    seg_sops = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert len(ct_sops) == info.n_images and seg_sops <= ct_sops
    sc = pydicom.dcmread(files[2])
    assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.shape == (40, 60, 3)
    doc = pydicom.dcmread(files[3])
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert doc.EncapsulatedDocument[: doc.EncapsulatedDocumentLength] == pdf.read_bytes()


def _pdf(path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path, format="pdf")
    return path


@pytest.mark.slow
def test_outputs_refuse_a_foreign_result_and_a_full_folder(
    graded: dict[str, Any], tmp_path: Path
) -> None:
    other = make_phantom("L1", (), spacing=2.0, fov_mm=(100, 100), noise_hu=0)
    res = grade_study(study_from_arrays(other.labels, other.affine, ct=other.ct))
    with pytest.raises(InputError, match="is not this series' grid"):
        write_dicom_outputs(res, graded["info"], tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        write_dicom_outputs(graded["result"], graded["info"], tmp_path / "full")
    with pytest.raises(InputError, match="is not a PDF"):
        write_dicom_outputs(
            graded["result"],
            graded["info"],
            tmp_path / "y",
            report_pdf=tmp_path / "full" / "keep.txt",
        )
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())
    # with force, a rerun replaces the files, and one of a kind not written again goes
    first = write_dicom_outputs(
        graded["result"], graded["info"], tmp_path / "z", report_pdf=_pdf(tmp_path / "r.pdf")
    )
    again = write_dicom_outputs(graded["result"], graded["info"], tmp_path / "z", force=True)
    assert DICOM_OUTPUT_FILES["pdf"] in {f.name for f in first}
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == sorted(f.name for f in again)


def test_vertebra_without_body_and_default_pseudonym(
    graded: dict[str, Any], tmp_path: Path
) -> None:
    """A vertebra without an isolated body gets a measurement group without segment (TID
    1501) and no SEG segment; anonymising without a pseudonym makes a random one."""
    res: SpineResult = graded["result"]
    bodies = np.where(res.bodies == 21, 0, res.bodies).astype(np.uint8)  # L2's body gone
    files = write_dicom_outputs(
        dataclasses.replace(res, bodies=bodies), graded["info"], tmp_path / "o", anonymize=True
    )
    sr = hd.sr.srread(files[0])
    seg = hd.seg.segread(files[1])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "T12 vertebral body",
        "L1 vertebral body",
    ]
    volumetric = sr.content.get_volumetric_roi_measurement_groups()
    plain = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in volumetric] == [
        "T12 vertebral body",
        "L1 vertebral body",
    ]
    assert [g.tracking_identifier for g in plain] == ["L2 vertebral body"]
    heights = [m for m in plain[0].get_measurements() if _code(m.name) == ("121207", "DCM")]
    (h,) = [m for m in heights if _find_site(m)[1] == MODIFIER["anterior"]]
    assert res["L2"].heights_mm is not None
    assert h.value == pytest.approx(res["L2"].heights_mm.anterior, abs=1e-3)
    pid = str(sr.PatientID)
    assert pid.startswith("ANON-") and len(pid) == 13 and pid != PATIENT["PatientID"]
    assert str(seg.PatientID) == pid


def test_not_gradable_vertebra_is_reported_as_such(tmp_path: Path) -> None:
    """A lone vertebra has no reference: not gradable in the SR (never grade 0), with its QC
    flag, and said so in its SEG segment."""
    ph = make_phantom("L1", (), spacing=2.0, fov_mm=(100, 100), noise_hu=0)
    write_series(ph.ct, ph.affine, tmp_path / "dicom")
    _, lab_nii = _as_nifti(ph, tmp_path / "nifti")
    study, info = load_dicom_study(tmp_path / "dicom", lab_nii)
    res = grade_study(study)
    (v,) = res.vertebrae
    assert v.status == "not_gradable" and "no_reference" in v.flags
    files = write_dicom_outputs(res, info, tmp_path / "out")
    (g,) = hd.sr.srread(files[0]).content.get_volumetric_roi_measurement_groups()
    evals = [(_code(q.name)[0], _code(q.value)[0]) for q in g.get_qualitative_evaluations()]
    assert ("GENANT-GRADE", "NOT-GRADABLE") in evals and ("QC-FLAG", "QC-NO-REF") in evals
    assert not any(name == "FX-TYPE" for name, _ in evals)
    assert not [m for m in g.get_measurements() if _code(m.name)[0] == "RHLV"]
    (segment,) = hd.seg.segread(files[1]).SegmentSequence
    assert segment.SegmentDescription.startswith("L1 vertebral body: not gradable")


def test_local_codes_fit_their_value_representations() -> None:
    assert set(QC_FLAG_CODES) == set(QC_FLAGS)  # a new QC flag needs a code
    values = [v for v, _ in LOCAL_CODES.values()] + list(QC_FLAG_CODES.values())
    assert len(set(values)) == len(values)
    assert all(len(v) <= 16 for v in values)  # SH
    assert all(len(m) <= 64 for _, m in LOCAL_CODES.values())  # LO
    assert len(LOCAL_SCHEME) <= 16


# ---------------------------------------------------------------------------------------------
# dciodvfy (dicom3tools): the outputs are valid DICOM
# ---------------------------------------------------------------------------------------------

# Warnings dciodvfy gives that are expected: private coding scheme designators are allowed by
# PS3.16 8.2 but are not among dciodvfy's defined terms; anonymised outputs lack the study date,
# time and ID a DICOMDIR would index (removed on purpose).
_EXPECTED_WARNINGS = (
    "Unrecognized defined term <99VERTGRADE>",
    "would be needed to build DICOMDIR - Study Date",
    "would be needed to build DICOMDIR - Study Time",
    "would be needed to build DICOMDIR - Study ID",
)


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (apt-get install -y dicom3tools)",
)
def test_outputs_pass_dciodvfy(graded: dict[str, Any], tmp_path: Path) -> None:
    res, info = graded["result"], graded["info"]
    pdf = _pdf(tmp_path / "report.pdf")
    files = write_dicom_outputs(res, info, tmp_path / "plain", ct=graded["study"].ct)
    files += write_dicom_outputs(
        res,
        info,
        tmp_path / "anon",
        anonymize=True,
        overview=np.zeros((8, 8, 3), np.uint8),
        report_pdf=pdf,
    )
    for f in files:
        run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, check=False)
        lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")]
        warnings = [
            ln
            for ln in lines
            if ln.startswith("Warning") and not any(w in ln for w in _EXPECTED_WARNINGS)
        ]
        assert not errors and not warnings, (f, errors, warnings)
    # the plain outputs agree with the CT on patient, study and frame of reference
    if shutil.which("dcentvfy") is not None:
        cts = [str(i.path) for i in info.instances]
        plain = [str(f) for f in files[:3]]
        run = subprocess.run(
            ["dcentvfy", *cts, *plain], capture_output=True, text=True, check=False
        )
        errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors
