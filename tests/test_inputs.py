"""Inputs: SPINEPS / TPTBox subregion masks as bodies, MetaImage / NRRD (through SimpleITK) and
MGH files, and images in memory, each giving the same study as the NIfTI files of the same data.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from vertgrade import InputError, Volume, grade_study, load_study
from vertgrade.io.load import find_verse_files, study_from_arrays
from vertgrade.io.memory import array_sha256
from vertgrade.io.nifti import read_volume, save_nifti
from vertgrade.phantom import Phantom, make_phantom
from vertgrade.report.files import validate_result, write_result
from vertgrade.study import Study

TPTBOX_CT = "sub-ct_label-22_ct.nii.gz"
TPTBOX_VERT = "sub-ct_seg-vert_label-22_msk.nii.gz"
TPTBOX_SUBREG = "sub-ct_seg-subreg_label-22_msk.nii.gz"
#: Body Dice of vertgrade's own isolation on tptbox-l3's L3 against labels 49 + 50
#: (docs/validation.md, before SPINEPS bodies were read): it must not get worse.
OWN_ISOLATION_L3_DICE = 0.991


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    """A small oblique phantom with anisotropic voxels on a P-I-R grid, one fracture."""
    return make_phantom(
        "T12-L2",
        ["L1:wedge:0.3"],
        orientation="PIR",
        spacing=(1.2, 2.0, 1.0),
        oblique_deg=20.0,
        fov_mm=(90.0, 90.0),
        seed=2,
    )


@pytest.fixture(scope="module")
def nifti_files(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nifti")
    files = {"ct": root / "ct.nii.gz", "labels": root / "labels.nii.gz"}
    save_nifti(phantom.ct, phantom.affine, files["ct"])
    save_nifti(phantom.labels, phantom.affine, files["labels"])
    return files


def _same_study(a: Study, b: Study) -> None:
    """The same canonical arrays and world affines (to a micrometre), on the same input grid."""
    for role in ("labels", "ct", "bodies"):
        va, vb = getattr(a, role), getattr(b, role)
        assert (va is None) == (vb is None), role
        if va is None:
            continue
        assert va.array.dtype == vb.array.dtype, role
        assert np.array_equal(va.array, vb.array), role
        np.testing.assert_allclose(va.affine, vb.affine, rtol=0, atol=1e-3, err_msg=role)
    assert a.grid.shape == b.grid.shape
    np.testing.assert_allclose(a.grid.affine, b.grid.affine, rtol=0, atol=1e-3)
    assert np.array_equal(a.grid.ornt, b.grid.ornt)


# ---------------------------------------------------------------------------------------------
# SPINEPS / TPTBox: subregion masks as bodies
# ---------------------------------------------------------------------------------------------


def _subregions(ph: Phantom) -> np.ndarray:
    """A SPINEPS-style subregion mask of the phantom: 50 inside each body, 49 on its border,
    41 (arch) on the rest of the vertebra, 61 (canal) in a few voxels of background."""
    body = ph.bodies > 0
    sub = np.where(ph.labels > 0, 41, 0).astype(np.uint8)
    border = body & ~ndimage.binary_erosion(body)
    sub[body] = 50
    sub[border] = 49
    outside = np.argwhere(ph.labels == 0)[:5]
    sub[tuple(outside.T)] = 61
    return sub


def test_subregion_mask_as_bodies_is_told_by_its_labels(phantom: Phantom, tmp_path: Path) -> None:
    """A subregion mask given as bodies (under any name) is read by its labels: 49 + 50 are the
    body, the rest ignored; each body voxel goes to the vertebra whose instance label it lies
    in (the mask has no instance ids), also where the mask is on another grid (resampled)."""
    sub = _subregions(phantom)
    save_nifti(sub, phantom.affine, tmp_path / "bodies.nii.gz")
    base = study_from_arrays(phantom.labels, phantom.affine, ct=phantom.ct)
    study = load_study(
        (phantom.ct, phantom.affine),
        (phantom.labels, phantom.affine),
        bodies=tmp_path / "bodies.nii.gz",
    )
    assert study.bodies is not None
    assert any("SPINEPS / TPTBox subregion mask" in n and "41, 61" in n for n in study.notes)
    assert "vertebral bodies taken from the given body mask" in study.notes
    assert np.array_equal(study.bodies.array, np.isin(_canonical(sub, base), (49, 50)))
    res = grade_study(study)
    truth = _canonical(phantom.bodies, base)
    for v in res.vertebrae:
        assert np.array_equal(res.bodies == v.label, truth == v.label), v.level
    # the same mask flipped and transposed onto another grid (same world): the same bodies;
    # voxel (a, b, c) of `moved` is voxel (n - 1 - b, c, a) of `sub`
    moved = np.transpose(sub[::-1], (2, 0, 1))
    to_sub = np.array(
        [[0, -1, 0, sub.shape[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float
    )
    save_nifti(moved, phantom.affine @ to_sub, tmp_path / "other_grid.nii.gz")
    other = load_study(
        (phantom.ct, phantom.affine),
        (phantom.labels, phantom.affine),
        bodies=tmp_path / "other_grid.nii.gz",
    )
    assert other.bodies is not None
    assert np.array_equal(other.bodies.array, study.bodies.array)


def _canonical(arr: np.ndarray, like: Study) -> np.ndarray:
    return nib.orientations.apply_orientation(arr, like.grid.ornt)


def test_body_mask_errors_name_the_mask(phantom: Phantom) -> None:
    labels = (phantom.labels, phantom.affine)
    neither = np.where(phantom.labels > 0, 41, 0).astype(np.uint8)
    with pytest.raises(InputError, match=r"^<in-memory bodies>: body mask has no voxel of value 1"):
        load_study(None, labels, bodies=(neither, phantom.affine))
    both = _subregions(phantom)
    both[phantom.bodies == 20] = 1
    with pytest.raises(InputError, match=r"holds both 1 .* and 49 and 50"):
        load_study(None, labels, bodies=(both, phantom.affine))
    # body voxels none of which lies in a vertebra: another study's mask
    stray = np.zeros_like(phantom.labels)
    stray[tuple(np.argwhere(phantom.labels == 0)[:50].T)] = 1
    with pytest.raises(InputError, match="none of the body mask's 50 body voxels lies inside"):
        load_study(None, labels, bodies=(stray, phantom.affine))


def test_bids_names_with_entities_are_found(tmp_path: Path) -> None:
    names = {
        "ct": "sub-a_dir-ax_ct.nii.gz",
        "labels": "sub-a_dir-ax_seg-vert_msk.nii.gz",
        "centroids": "sub-a_dir-ax_seg-subreg_ctd.json",
    }
    for name in names.values():
        (tmp_path / "derivatives" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "derivatives" / name).write_bytes(b"x")
    assert {r: p.name for r, p in find_verse_files(tmp_path).items()} == names
    (tmp_path / "sub-a_seg-subreg_label-1_msk.nii.gz").write_bytes(b"x")
    (tmp_path / "sub-a_seg-subreg_label-2_msk.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="several subregions files"):
        find_verse_files(tmp_path)


@pytest.mark.realdata
def test_tptbox_folder_grades_with_its_subregion_bodies(data_dir: Path, tmp_path: Path) -> None:
    """tptbox-l3 as a folder: the BIDS names are recognised and labels 49 + 50 of its
    subregion mask are the bodies, each in its own vertebra; given as --bodies (under another
    name) it is recognised by its labels, with the same result."""
    d = data_dir / "tptbox-l3"
    study = load_study(d)
    assert study.subject == "sub-ct"
    assert {r: p.name for r, p in study.inputs.items()} == {
        "ct": TPTBOX_CT,
        "labels": TPTBOX_VERT,
        "bodies": TPTBOX_SUBREG,
    }
    sub, _ = read_volume(d / TPTBOX_SUBREG, kind="labels")
    truth = np.isin(sub.array, (49, 50))
    res = grade_study(study)
    assert [v.level for v in res.vertebrae] == ["L2", "L3", "L4"]
    for v in res.vertebrae:
        assert _dice(res.bodies == v.label, truth & (study.labels.array == v.label)) == 1.0
    shutil.copy(d / TPTBOX_SUBREG, tmp_path / "bodies.nii.gz")
    given = load_study(d / TPTBOX_CT, d / TPTBOX_VERT, bodies=tmp_path / "bodies.nii.gz")
    assert any("SPINEPS / TPTBox subregion mask" in n for n in given.notes)
    assert np.array_equal(grade_study(given).bodies, res.bodies)
    # the result folder is written, its provenance naming the subregion mask
    write_result(res, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert Path(doc["provenance"]["inputs"]["bodies"]["path"]).name == TPTBOX_SUBREG


@pytest.mark.realdata
def test_own_body_isolation_on_tptbox_l3_is_no_worse(data_dir: Path) -> None:
    """vertgrade's own bodies (no body mask given) against labels 49 + 50: L3 at least as good
    as the 0.991 of docs/validation.md."""
    d = data_dir / "tptbox-l3"
    study = load_study(d / TPTBOX_CT, d / TPTBOX_VERT)
    assert study.bodies is None
    sub, _ = read_volume(d / TPTBOX_SUBREG, kind="labels")
    res = grade_study(study)
    dice = _dice(res.bodies == 22, np.isin(sub.array, (49, 50)) & (study.labels.array == 22))
    assert round(dice, 3) >= OWN_ISOLATION_L3_DICE, dice


# ---------------------------------------------------------------------------------------------
# MetaImage, NRRD (SimpleITK) and MGH (nibabel)
# ---------------------------------------------------------------------------------------------


def _sitk_copy(src: Path, dst: Path) -> None:
    """``dst`` written by SimpleITK from the NIfTI ``src``, its geometry as ITK reads it (an
    oracle independent of vertgrade's conversion), without the NIfTI header's metadata."""
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.ReadImage(str(src))
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(img))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(dst), True)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_sitk_formats_give_the_nifti_study(
    ext: str, nifti_files: dict[str, Path], phantom: Phantom, tmp_path: Path
) -> None:
    ct, labels = tmp_path / f"ct{ext}", tmp_path / f"labels{ext}"
    _sitk_copy(nifti_files["ct"], ct)
    _sitk_copy(nifti_files["labels"], labels)
    ref = load_study(nifti_files["ct"], nifti_files["labels"])
    study = load_study(ct, labels)
    _same_study(study, ref)
    assert study.subject == "ct"
    assert not any("resampled" in n for n in study.notes)
    # mixed: a NIfTI CT with NRRD / MetaImage labels lies on the same grid
    _same_study(load_study(nifti_files["ct"], labels), ref)
    np.testing.assert_allclose(study.grid.affine, phantom.affine, rtol=0, atol=1e-4)


def test_mgz_gives_the_nifti_study(
    nifti_files: dict[str, Path], phantom: Phantom, tmp_path: Path
) -> None:
    for role, arr in (("ct", phantom.ct), ("labels", phantom.labels)):
        nib.save(nib.MGHImage(arr, phantom.affine), tmp_path / f"{role}.mgz")
    study = load_study(tmp_path / "ct.mgz", tmp_path / "labels.mgz")
    _same_study(study, load_study(nifti_files["ct"], nifti_files["labels"]))
    assert study.subject == "ct"


def test_sitk_missing_names_the_install(
    nifti_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ct = tmp_path / "ct.nrrd"
    _sitk_copy(nifti_files["ct"], ct)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # `import SimpleITK` raises ImportError
    with pytest.raises(InputError) as info:
        load_study(ct, nifti_files["labels"])
    message = str(info.value)
    assert message.startswith(f"{ct}: is a NRRD file")
    assert "pip install SimpleITK" in message and "vertgrade[sitk]" in message


def test_bad_sitk_files_are_clear_errors(nifti_files: dict[str, Path], tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    bad = tmp_path / "ct.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match=r"ct\.mha: cannot be read as MetaImage \(.+\)"):
        read_volume(bad, kind="ct")
    # voxel data cut short
    raw = tmp_path / "raw.nrrd"
    img = sitk.ReadImage(str(nifti_files["ct"]))
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(img))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(raw), False)
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.nrrd: is truncated or corrupt"):
        read_volume(cut, kind="ct")
    # two values per voxel: not a CT or a label map
    vec = sitk.Compose(out, out)
    sitk.WriteImage(vec, str(tmp_path / "vec.nrrd"))
    with pytest.raises(InputError, match="has 2 values per voxel"):
        read_volume(tmp_path / "vec.nrrd", kind="labels")
    # a 2D image
    sitk.WriteImage(out[:, :, 0], str(tmp_path / "slice.mha"))
    with pytest.raises(InputError, match="is 2D"):
        read_volume(tmp_path / "slice.mha", kind="ct")


# ---------------------------------------------------------------------------------------------
# Images in memory
# ---------------------------------------------------------------------------------------------


def test_in_memory_images_give_the_file_study(
    phantom: Phantom, nifti_files: dict[str, Path], tmp_path: Path
) -> None:
    """nibabel images, (array, affine) tuples and Volumes give the study the files give, for
    the CT, the labels and the bodies; inputs are recorded as <in-memory role> with the
    checksum of their values, and a result written from them validates."""
    bodies = phantom.bodies.astype(np.uint8).clip(0, 1)
    save_nifti(bodies, phantom.affine, tmp_path / "bodies.nii.gz")
    ref = load_study(nifti_files["ct"], nifti_files["labels"], bodies=tmp_path / "bodies.nii.gz")
    ct_img = nib.Nifti1Image(phantom.ct, phantom.affine)
    kinds: dict[str, tuple[Any, Any]] = {
        "nibabel": (ct_img, nib.Nifti1Image(phantom.labels, phantom.affine)),
        "tuple": ((phantom.ct, phantom.affine), (phantom.labels, phantom.affine)),
        "volume": (
            Volume(phantom.ct, phantom.affine, "ct"),
            Volume(phantom.labels, phantom.affine, "labels"),
        ),
    }
    for kind, (ct, labels) in kinds.items():
        study = load_study(ct, labels, bodies=(bodies, phantom.affine))
        _same_study(study, ref)
        assert study.subject == "study", kind
        assert {r: str(p) for r, p in study.inputs.items()} == {
            r: f"<in-memory {r}>" for r in ("ct", "labels", "bodies")
        }
        assert study.checksums["ct"] == array_sha256(phantom.ct, phantom.affine), kind
        assert study.checksums["bodies"] == array_sha256(bodies, phantom.affine), kind
    # in memory and files mixed; a nibabel image loaded from a file names the subject
    loaded = nib.load(nifti_files["ct"])
    assert isinstance(loaded, nib.Nifti1Image)
    mixed = load_study(loaded, nifti_files["labels"])
    assert mixed.subject == "ct" and str(mixed.inputs["ct"]) == "<in-memory ct>"
    assert mixed.inputs["labels"] == nifti_files["labels"]
    # one voxel changed: another checksum
    changed = phantom.ct.copy()
    changed[0, 0, 0] += 1
    assert load_study((changed, phantom.affine), labels).checksums["ct"] != study.checksums["ct"]
    # study_from_arrays: the same study, no inputs recorded
    arrays = study_from_arrays(phantom.labels, phantom.affine, ct=phantom.ct)
    _same_study(arrays, load_study((phantom.ct, phantom.affine), (phantom.labels, phantom.affine)))
    assert arrays.inputs == {} and arrays.checksums == {}
    # grade and write the result folder
    res = grade_study(study)
    write_result(res, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    validate_result(doc)
    recorded = doc["provenance"]["inputs"]
    assert recorded["ct"] == {"path": "<in-memory ct>", "sha256": study.checksums["ct"]}
    written, _ = read_volume(tmp_path / "out" / "bodies.nii.gz", kind="labels")
    assert written.shape == study.labels.shape


@pytest.mark.parametrize(
    ("ct", "labels", "expect"),
    [
        ("nan", "ok", r"^<in-memory ct>: contains 1 NaN or infinite voxels"),
        ("ok", "bare", r"^<in-memory labels>: is an array of shape \(.+\) without an affine"),
        ("ok", "triple", r"^<in-memory labels>: is a tuple of 3 items; expected \(array, affine\)"),
        ("ok", "2d", r"^<in-memory labels>: is 2D with shape"),
        ("no_affine", "ok", r"^<in-memory ct>: is a Nifti1Image without an affine"),
        ("ok", "float", r"^<in-memory labels>: label map has non-integer values"),
        ("tiny", "ok", r"^<in-memory ct>: has voxel sizes 0\.001"),
        ("ok", "number", r"^<in-memory labels>: is a float; expected a path, a nibabel image"),
    ],
)
def test_in_memory_errors_name_the_input(
    phantom: Phantom, ct: str, labels: str, expect: str
) -> None:
    aff = phantom.affine
    nan = phantom.ct.astype(np.float32)
    nan[1, 1, 1] = np.nan
    cts: dict[str, Any] = {
        "ok": (phantom.ct, aff),
        "nan": (nan, aff),
        "no_affine": nib.Nifti1Image(phantom.ct, None),
        "tiny": (phantom.ct, np.diag([1e-3, 1e-3, 1e-3, 1.0])),
    }
    labs: dict[str, Any] = {
        "ok": (phantom.labels, aff),
        "bare": phantom.labels,
        "triple": (phantom.labels, aff, aff),
        "2d": (phantom.labels[:, :, 0], aff),
        "float": (phantom.labels + 0.5, aff),
        "number": 3.5,
    }
    with pytest.raises(InputError, match=expect):
        load_study(cts[ct], labs[labels])
