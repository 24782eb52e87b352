"""Segmentation QA (``vertgrade seg-qa``): literal volumes with hand-computed Dice and Hausdorff
distances, identification by hand, phantoms perturbed in known ways (labels shifted by a level, a
vertebra eroded by 2 mm, one missing, two merged, one split), invariance to the grid's
orientation and spacing, folders of cases with the patient bootstrap, the outputs and the
command line's errors, and the real cases of ../shared/data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage
from typer.testing import CliRunner

from vertgrade import InputError, OutputError
from vertgrade.cli import app
from vertgrade.evaluation.metrics import draw_patients
from vertgrade.io.labels import resample_nearest
from vertgrade.io.nifti import read_volume, save_nifti
from vertgrade.levels import label_id
from vertgrade.phantom import Phantom, make_phantom
from vertgrade.segqa import (
    CSV_COLUMNS,
    FORMAT,
    SEG_QA_FILES,
    CaseQA,
    CaseSide,
    SegQAConfig,
    compare_case,
    pair_cases,
    seg_qa_files,
    summarise,
    write_seg_qa,
)
from vertgrade.segqa.cohort import bootstrap_means, cohort_metric_names
from vertgrade.segqa.inputs import case_of
from vertgrade.segqa.metrics import (
    identify,
    label_centroids,
    level_sequence,
    level_steps,
    overlap_counts,
    surface_distances,
)
from vertgrade.study import Volume

T12, L1, L2, L3, L4 = (label_id(n) for n in ("T12", "L1", "L2", "L3", "L4"))

# --- literal volumes, computed by hand ------------------------------------------------------------
# A 3 x 3 x 3 cube, and the same cube one voxel further along i.
CUBE = np.zeros((6, 5, 5), bool)
CUBE[1:4, 1:4, 1:4] = True
CUBE_SHIFTED = np.roll(CUBE, 1, axis=0)
# With voxels of 2 x 1 x 1 mm: each cube's surface is its 26 voxels but the centre. From the first
# cube's surface to the second's: the face i = 1 (9 voxels) lies 2 mm from the second cube's face
# i = 2; the ring i = 2 (8) and the face i = 3 ring (8) lie on the second cube's surface (0 mm);
# the face centre (3, 2, 2) is the second cube's centre, 1 mm (along j or k) from its surface.
# Both directions alike: 9 x 2 mm, 16 x 0 mm, 1 x 1 mm.
CUBE_SPACING = (2.0, 1.0, 1.0)
CUBE_HD = 2.0
CUBE_HD95 = 2.0  # the 95th percentile of 26 values of which the top 9 are 2 mm
CUBE_ASSD = 2 * (9 * 2.0 + 1.0) / 52
CUBE_DICE = 2 * 18 / (27 + 27)

# Two labels along k, in the truth and in a prediction that moves their boundary by one voxel
# and adds one voxel of a third label:
#   k:     0  1  2  3  4  5  6  7
#   truth: 0  1  1  1  2  2  2  0
#   pred:  0  1  1  2  2  2  2  3
ROW_TRUTH = np.array([0, 1, 1, 1, 2, 2, 2, 0], np.uint8).reshape(1, 1, 8)
ROW_PRED = np.array([0, 1, 1, 2, 2, 2, 2, 3], np.uint8).reshape(1, 1, 8)
ROW_DICE = {1: 2 * 2 / (3 + 2), 2: 2 * 3 / (3 + 4), 3: 0.0}
ROW_GLOBAL_DICE = 2 * (2 + 3) / (6 + 7)  # same label in both / all labelled voxels
ROW_FOREGROUND_DICE = 2 * 6 / (6 + 7)  # labelled in both / all labelled voxels


def _vol(arr: NDArray[Any], affine: NDArray[np.float64] | None = None) -> Volume:
    return Volume(arr, np.eye(4) if affine is None else affine, "labels")


def _side(arr: NDArray[Any], affine: NDArray[np.float64]) -> CaseSide:
    return CaseSide(labels=Volume(arr, affine, "labels"))


def test_cube_distances_by_hand() -> None:
    d = surface_distances(CUBE, CUBE_SHIFTED, spacing_mm=CUBE_SPACING)
    assert d is not None
    assert d.hd_mm == pytest.approx(CUBE_HD)
    assert d.hd_percentile_mm == pytest.approx(CUBE_HD95)
    assert d.assd_mm == pytest.approx(CUBE_ASSD)
    counts = overlap_counts(CUBE.astype(np.uint8), CUBE_SHIFTED.astype(np.uint8))
    assert counts.count(1, 1) == 18
    qa = compare_case(
        CaseSide(labels=_vol(CUBE_SHIFTED.astype(np.uint8), np.diag([*CUBE_SPACING, 1.0]))),
        CaseSide(labels=_vol(CUBE.astype(np.uint8), np.diag([*CUBE_SPACING, 1.0]))),
    )
    v = qa.vertebrae[0]
    assert v.dice == pytest.approx(CUBE_DICE)
    assert (v.hd_mm, v.hd95_mm) == pytest.approx((CUBE_HD, CUBE_HD95))
    assert v.localisation_mm == pytest.approx(2.0)  # one voxel of 2 mm along i
    assert v.truth_volume_mm3 == pytest.approx(27 * 2.0)


def test_distances_are_symmetric_and_need_both_masks() -> None:
    ab = surface_distances(CUBE, CUBE_SHIFTED, spacing_mm=(1.3, 0.7, 2.0))
    ba = surface_distances(CUBE_SHIFTED, CUBE, spacing_mm=(1.3, 0.7, 2.0))
    assert ab == ba
    assert surface_distances(CUBE, np.zeros_like(CUBE), spacing_mm=(1, 1, 1)) is None
    same = surface_distances(CUBE, CUBE, spacing_mm=(1, 1, 1))
    assert same is not None and (same.hd_mm, same.hd_percentile_mm, same.assd_mm) == (0, 0, 0)


def test_a_stray_voxel_moves_the_maximum_not_the_percentile() -> None:
    a = np.zeros((5, 5, 20), bool)
    a[1:4, 1:4, 1:4] = True
    b = a.copy()
    b[2, 2, 13] = True  # 10 mm beyond the cube's face k = 3
    d = surface_distances(a, b, spacing_mm=(1.0, 1.0, 1.0))
    assert d is not None
    assert d.hd_mm == pytest.approx(10.0)
    assert d.hd_percentile_mm == 0.0
    qa = compare_case(
        CaseSide(labels=_vol(b.astype(np.uint8))), CaseSide(labels=_vol(a.astype(np.uint8)))
    )
    assert qa.vertebrae[0].dice == pytest.approx(2 * 27 / (27 + 28))


def test_a_mask_on_the_array_border_has_a_surface_there() -> None:
    a = np.ones((3, 3, 3), bool)  # fills the array: all but the centre is surface
    b = np.zeros((3, 3, 3), bool)
    b[1, 1, 1] = True
    d = surface_distances(a, b, spacing_mm=(1.0, 1.0, 1.0))
    assert d is not None and d.hd_mm == pytest.approx(math.sqrt(3))


def test_two_labels_by_hand() -> None:
    qa = compare_case(CaseSide(labels=_vol(ROW_PRED)), CaseSide(labels=_vol(ROW_TRUTH)))
    got = {v.label: v.dice for v in qa.vertebrae}
    assert got == pytest.approx(ROW_DICE)
    s = qa.summary
    assert s.global_dice == pytest.approx(ROW_GLOBAL_DICE)
    assert s.foreground_dice == pytest.approx(ROW_FOREGROUND_DICE)
    assert s.mean_dice == pytest.approx((ROW_DICE[1] + ROW_DICE[2]) / 2)  # over the truth's
    assert s.extra == (3,) and s.missing == ()
    assert [v.status for v in qa.vertebrae] == ["matched", "matched", "extra"]
    # label 2's surface: the prediction's boundary at k = 3 is 1 voxel from the truth's at k = 4
    assert qa.vertebrae[1].hd_mm == pytest.approx(1.0)


def test_overlap_counts_with_large_label_ids_agree() -> None:
    rng = np.random.default_rng(3)
    t = rng.integers(0, 4, size=(6, 7, 8))
    p = rng.integers(0, 4, size=(6, 7, 8))
    small = overlap_counts(t, p)
    big = overlap_counts(t * 5000, p * 7000)  # too many pairs for one bincount
    assert np.array_equal(small.counts, big.counts)
    assert np.array_equal(small.truth_sizes, big.truth_sizes)
    assert np.array_equal(big.truth_labels, small.truth_labels * 5000)


def test_centroids_in_world_mm() -> None:
    lab = np.zeros((5, 5, 5), np.uint8)
    lab[1:4, 2, 2] = 7
    aff = np.array([[0, 0, 2.0, 10], [-1.0, 0, 0, 0], [0, 3.0, 0, -5], [0, 0, 0, 1]])
    assert label_centroids(lab, aff)[7] == pytest.approx([14.0, -2.0, 1.0])


# --- identification, by hand ----------------------------------------------------------------------
def test_identification_by_hand() -> None:
    truth = {T12: np.array([0.0, 0, 0]), L1: np.array([0.0, 0, -30]), L2: np.array([0.0, 0, -60])}
    pred = {
        T12: np.array([0.0, 0, -16]),  # 16 mm from T12 but 14 mm from L1: not identified
        L1: np.array([0.0, 20, -30]),  # exactly 20 mm: identified (VerSe's get_hits: d <= 20)
        L2: np.array([0.0, 20.01, -60]),  # just beyond: not identified
        L3: np.array([0.0, 0, -90]),  # no true L3: an extra, never identified
    }
    got = identify(truth, pred, radius_mm=20.0)
    assert [got[k].identified for k in (T12, L1, L2, L3)] == [False, True, False, False]
    assert got[T12].nearest_truth_label == L1
    assert got[T12].distance_mm == pytest.approx(16.0)
    assert got[L3].distance_mm is None and got[L3].nearest_truth_label == L2


def test_identification_from_centroids_only() -> None:
    truth = {T12: np.array([0.0, 0, 0]), L1: np.array([0.0, 0, -30]), L2: np.array([0.0, 0, -60])}
    pred = {L1: truth[T12] + 1, L2: truth[L1] - 1, L3: truth[L2] + 2}  # named one level too low
    qa = compare_case(CaseSide(centroids=pred), CaseSide(centroids=truth))
    s = qa.summary
    assert not s.segmentation and s.mean_dice is None
    assert s.hits == 0 and s.id_rate == 0.0
    assert s.label_shift == -1 and s.id_rate_if_relabelled == 1.0
    assert s.missing == (T12,) and s.extra == (L3,)


def test_level_steps_count_transitional_vertebrae_where_present() -> None:
    assert level_steps(L1, T12, level_sequence([T12, L1])) == -1
    seq = level_sequence([T12, 28, L1])  # T13
    assert level_steps(T12, L1, seq) == 2 and level_steps(28, L1, seq) == 1
    assert level_steps(L1, 99, seq) is None


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="identification_radius_mm"):
        SegQAConfig(identification_radius_mm=0)
    with pytest.raises(ValueError, match="ci_level"):
        SegQAConfig(ci_level=1.0)
    qa = compare_case(
        CaseSide(labels=_vol(CUBE_SHIFTED.astype(np.uint8), np.diag([30.0, 1, 1, 1]))),
        CaseSide(labels=_vol(CUBE.astype(np.uint8), np.diag([30.0, 1, 1, 1]))),
        config=SegQAConfig(identification_radius_mm=25.0),
    )
    assert not qa.vertebrae[0].identified  # 30 mm apart


# --- phantoms perturbed in known ways -------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(levels="T12-L3", spacing=(1.5, 1.5, 1.5))


def _compare(ph: Phantom, pred: NDArray[np.uint8]) -> CaseQA:
    return compare_case(_side(pred, ph.affine), _side(ph.labels, ph.affine), subject="phantom")


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> NDArray[np.bool_]:
    n = [int(radius_mm // s) for s in spacing]
    grid = np.meshgrid(
        *[np.arange(-k, k + 1) * s for k, s in zip(n, spacing, strict=True)], indexing="ij"
    )
    return np.sqrt(sum(g**2 for g in grid)) <= radius_mm


def _eroded(ph: Phantom, label: int, radius_mm: float = 2.0) -> NDArray[np.uint8]:
    out = ph.labels.copy()
    mask = ph.labels == label
    out[mask & ~ndimage.binary_erosion(mask, _ball(radius_mm, (1.5, 1.5, 1.5)))] = 0
    return out


def test_identical_labels_are_perfect(phantom: Phantom) -> None:
    s = _compare(phantom, phantom.labels).summary
    assert (s.id_rate, s.precision, s.mean_dice, s.global_dice) == (1.0, 1.0, 1.0, 1.0)
    assert (s.mean_hd_mm, s.mean_hd95_mm, s.mean_localisation_mm) == (0.0, 0.0, 0.0)
    assert s.label_shift == 0 and not s.missing and not s.extra and not s.merged


@pytest.mark.parametrize("step", [1, -1])
def test_labels_shifted_by_one_level(phantom: Phantom, step: int) -> None:
    shifted = np.where(phantom.labels > 0, phantom.labels.astype(int) + step, 0).astype(np.uint8)
    qa = _compare(phantom, shifted)
    s = qa.summary
    # +1: every vertebra named one level too caudal (T12 called L1): the truth lies one level
    # cranially of each name, label_shift -1
    assert s.label_shift == -step and s.shift_share == 1.0
    assert s.hits == 0 and s.mean_dice == 0.0
    assert s.foreground_dice == 1.0  # the same voxels, wrongly named
    assert s.mean_dice_if_relabelled == 1.0 and s.id_rate_if_relabelled == 1.0
    assert s.missing == ((T12,) if step > 0 else (L3,))
    assert s.extra == ((L4,) if step > 0 else (T12 - 1,))
    assert all("shifted" in v.flags for v in qa.vertebrae if v.in_pred)
    assert all(v.level_offset == -step for v in qa.vertebrae if v.in_pred)
    assert any("labels shifted" in n for n in qa.notes)


def test_one_vertebra_eroded_by_2_mm(phantom: Phantom) -> None:
    qa = _compare(phantom, _eroded(phantom, L1))
    by = {v.label: v for v in qa.vertebrae}
    v = by[L1]
    assert v.hd95_mm is not None and v.hd_mm is not None and v.dice is not None
    assert 1.5 <= v.hd95_mm <= 2.5  # the surface moved 2 mm in (1.5 mm voxels)
    assert v.hd95_mm <= v.hd_mm <= 4.0  # thin processes vanish whole: a little more
    t_vol = int((phantom.labels == L1).sum())
    p_vol = int((_eroded(phantom, L1) == L1).sum())
    assert v.dice == pytest.approx(2 * p_vol / (t_vol + p_vol))  # the eroded part lies inside
    assert 0.7 < v.dice < 0.9
    assert v.identified and v.status == "matched" and not v.flags
    assert all(by[k].dice == 1.0 and by[k].hd_mm == 0.0 for k in (T12, L2, L3))
    assert qa.summary.id_rate == 1.0


def test_one_vertebra_missing(phantom: Phantom) -> None:
    pred = phantom.labels.copy()
    pred[pred == L2] = 0
    qa = _compare(phantom, pred)
    s = qa.summary
    assert s.missing == (L2,) and s.extra == () and s.n_pred == 3
    assert s.id_rate == 0.75 and s.precision == 1.0
    assert s.mean_dice == 0.75  # 1, 1, 0, 1
    v = next(v for v in qa.vertebrae if v.label == L2)
    assert v.status == "missing" and v.dice == 0.0 and v.hd_mm is None
    assert v.localisation_mm is None and not v.identified


def test_two_vertebrae_merged(phantom: Phantom) -> None:
    pred = phantom.labels.copy()
    pred[pred == L2] = L1
    qa = _compare(phantom, pred)
    s = qa.summary
    assert s.merged == ((L1, (L1, L2)),)
    assert s.missing == (L2,) and s.label_shift == 0
    by = {v.label: v for v in qa.vertebrae}
    assert "merged" in by[L1].flags and "merged" in by[L2].flags
    assert "shifted" not in by[L1].flags  # a merge, not a shift
    n1, n2 = (int((phantom.labels == k).sum()) for k in (L1, L2))
    assert by[L1].dice == pytest.approx(2 * n1 / (n1 + n1 + n2))
    assert by[L2].best_pred_label == L1 and by[L2].best_pred_fraction == 1.0
    assert by[L1].hd_mm is not None and by[L1].hd_mm > 20  # the far end of L2


def test_one_vertebra_split(phantom: Phantom) -> None:
    pred = phantom.labels.copy()
    mask = pred == L1
    z = ndimage.center_of_mass(mask)[2]
    lower = mask & (np.arange(pred.shape[2])[None, None, :] < z)
    pred[lower] = 99  # a label of no convention: QA takes it, levels do not
    qa = compare_case(_side(pred, phantom.affine), _side(phantom.labels, phantom.affine))
    s = qa.summary
    assert s.split == ((L1, (L1, 99)),)
    assert s.extra == (99,)
    extra = next(v for v in qa.vertebrae if v.label == 99)
    assert extra.level == "label 99" and extra.level_offset is None
    assert "split" in next(v for v in qa.vertebrae if v.label == L1).flags


def test_an_empty_prediction_misses_everything(phantom: Phantom) -> None:
    qa = _compare(phantom, np.zeros_like(phantom.labels))
    s = qa.summary
    assert s.n_pred == 0 and s.id_rate == 0.0 and s.precision is None and s.mean_dice == 0.0
    assert s.missing == (T12, L1, L2, L3)


# --- orientation and spacing ----------------------------------------------------------------------
def _reoriented(
    arr: NDArray[Any], affine: NDArray[np.float64], codes: str
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    start = nib.orientations.io_orientation(affine)
    tr = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(tuple(codes)))
    out = nib.orientations.apply_orientation(arr, tr)
    return np.ascontiguousarray(out), affine @ nib.orientations.inv_ornt_aff(tr, arr.shape)


def _numbers(qa: CaseQA) -> list[tuple[Any, ...]]:
    return [
        (v.label, v.status, v.dice, v.hd_mm, v.hd95_mm, v.localisation_mm, v.identified)
        for v in qa.vertebrae
    ]


@pytest.mark.parametrize(("pred_codes", "truth_codes"), [("PIR", "RAS"), ("LPS", "SLA")])
def test_orientation_of_the_files_changes_nothing(
    phantom: Phantom, tmp_path: Path, pred_codes: str, truth_codes: str
) -> None:
    pred = _eroded(phantom, L1)
    pred[pred == L3] = 0
    want = _numbers(_compare(phantom, pred))
    p_arr, p_aff = _reoriented(pred, phantom.affine, pred_codes)
    t_arr, t_aff = _reoriented(phantom.labels, phantom.affine, truth_codes)
    save_nifti(p_arr, p_aff, tmp_path / "pred.nii.gz")
    save_nifti(t_arr, t_aff, tmp_path / "truth.nii.gz")
    report = seg_qa_files(tmp_path / "pred.nii.gz", tmp_path / "truth.nii.gz", n_boot=0)
    got = report.cases[0]
    for g, w in zip(_numbers(got), want, strict=True):
        assert [x if x is None or isinstance(x, (bool, str)) else pytest.approx(x) for x in g] == [
            *w
        ]
    assert got.grid is not None and got.grid["resampled"] is False  # canonical views agree


def test_another_grid_gives_the_same_numbers_within_resampling(
    phantom: Phantom, tmp_path: Path
) -> None:
    """The eroded prediction on a 1 mm LPS grid (nearest neighbour), brought back onto the
    truth's 1.5 mm grid by seg-qa: the numbers of the prediction on the truth's own grid, to a
    voxel."""
    pred = _eroded(phantom, L1)
    want = {v.label: v for v in _compare(phantom, pred).vertebrae}
    box = np.array(ph_box(phantom))
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[:3, 3] = [box[1, 0], box[1, 1], box[0, 2]]
    shape = tuple(int(n) for n in np.ceil(box[1] - box[0]) + 1)
    fine = resample_nearest(
        _vol(pred, phantom.affine), Volume(np.zeros(shape, np.uint8), aff, "ct")
    )
    save_nifti(fine.array, aff, tmp_path / "pred.nii.gz")
    save_nifti(phantom.labels, phantom.affine, tmp_path / "truth.nii.gz")
    got = seg_qa_files(tmp_path / "pred.nii.gz", tmp_path / "truth.nii.gz", n_boot=0).cases[0]
    assert got.grid is not None and got.grid["resampled"] is True
    assert any("resampled onto the truth's grid" in n for n in got.notes)
    for v in got.vertebrae:
        w = want[v.label]
        assert v.dice == pytest.approx(w.dice, abs=0.02)
        assert v.hd95_mm == pytest.approx(w.hd95_mm, abs=1.5)
        assert v.hd_mm == pytest.approx(w.hd_mm, abs=1.5)
        assert v.localisation_mm == pytest.approx(w.localisation_mm, abs=0.5)
        assert v.identified == w.identified


def ph_box(ph: Phantom) -> NDArray[np.float64]:
    n = np.array(ph.labels.shape) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    w = (ph.affine @ corners.T).T[:, :3]
    return np.stack([w.min(axis=0), w.max(axis=0)])


def test_the_same_spine_rasterised_on_another_grid(phantom: Phantom) -> None:
    """The phantom drawn at 1 x 2 x 1 mm, P-I-R: as good as the same labels, to the voxel."""
    other = make_phantom(levels="T12-L3", spacing=(1.0, 2.0, 1.0), orientation="PIR")
    qa = compare_case(_side(other.labels, other.affine), _side(phantom.labels, phantom.affine))
    s = qa.summary
    assert s.id_rate == 1.0 and s.label_shift == 0 and not s.missing and not s.extra
    assert s.mean_localisation_mm is not None and s.mean_localisation_mm < 0.5
    for v in qa.vertebrae:
        assert v.dice is not None and v.dice > 0.93
        assert v.hd95_mm is not None and v.hd95_mm <= 2.0
        assert v.hd_mm is not None and v.hd_mm <= 3.0


def test_disjoint_grids_are_an_error(phantom: Phantom) -> None:
    far = phantom.affine.copy()
    far[0, 3] += 5000.0
    with pytest.raises(InputError, match="do not overlap the truth in physical space"):
        compare_case(_side(phantom.labels, far), _side(phantom.labels, phantom.affine))


# --- files, folders and the cohort ----------------------------------------------------------------
def _write_cases(ph: Phantom, root: Path, preds: dict[str, NDArray[np.uint8]]) -> None:
    (root / "pred").mkdir(parents=True)
    (root / "truth").mkdir(parents=True)
    for name, arr in preds.items():
        save_nifti(arr, ph.affine, root / "pred" / f"{name}_seg-vert_msk.nii.gz")
        save_nifti(ph.labels, ph.affine, root / "truth" / f"{name}_seg-vert_msk.nii.gz")


def test_folders_of_cases_pair_by_name_and_bootstrap_patients(
    phantom: Phantom, tmp_path: Path
) -> None:
    missing = phantom.labels.copy()
    missing[missing == L2] = 0
    preds = {
        "sub-a_dir-ax": phantom.labels,
        "sub-a_dir-sag": _eroded(phantom, L1),  # a second scan of patient a
        "sub-b": missing,
    }
    _write_cases(phantom, tmp_path, preds)
    save_nifti(phantom.labels, phantom.affine, tmp_path / "truth" / "sub-c_seg-vert_msk.nii.gz")
    save_nifti(phantom.labels, phantom.affine, tmp_path / "truth" / "sub-c_ct.nii.gz")  # skipped
    report = seg_qa_files(tmp_path / "pred", tmp_path / "truth", n_boot=300, seed=1)
    assert [c.subject for c in report.cases] == ["sub-a_dir-ax", "sub-a_dir-sag", "sub-b"]
    assert [c.patient for c in report.cases] == ["sub-a", "sub-a", "sub-b"]
    assert report.n_patients == 2
    assert report.pairing is not None and report.pairing.truth_only == ("sub-c",)
    assert any("sub-c_ct.nii.gz: a CT image" in s for s in report.pairing.skipped)
    id_rate = report.metric("id_rate")
    assert id_rate.value == pytest.approx(11 / 12) and id_rate.n == 12
    assert id_rate.ci_low is not None and id_rate.ci_high is not None
    assert id_rate.ci_low <= id_rate.value <= id_rate.ci_high
    # resampling two patients: patient b alone gives 3/4, patient a alone 8/8
    assert id_rate.ci_low >= 0.75 - 1e-12 and id_rate.ci_high <= 1.0
    dice = report.metric("dice")
    by_case = [c.summary.mean_dice for c in report.cases]
    assert report.metric("scan_dice").value == pytest.approx(np.mean(by_case))
    assert dice.n == 12
    assert [m.name for m in report.cohort] == list(cohort_metric_names())
    again = seg_qa_files(tmp_path / "pred", tmp_path / "truth", n_boot=300, seed=1)
    assert again.cohort == report.cohort  # seeded


def test_bootstrap_means_by_hand() -> None:
    values = np.array([1.0, 0.0, np.nan, 1.0])
    patient = np.array([0, 0, 1, 1])
    counts = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # resample 1: patient 0 twice -> (1 + 0) / 2; 2: patient 1 twice -> 1; 3: both -> 2 / 3
    m = bootstrap_means(values, patient, n_boot=3, seed=0, ci_level=0.5, name="x", counts=counts)
    assert m.value == pytest.approx(2 / 3) and m.n == 3 and m.n_boot_valid == 3
    assert (m.ci_low, m.ci_high) == pytest.approx(tuple(np.percentile([0.5, 1.0, 2 / 3], [25, 75])))
    empty = bootstrap_means(
        np.full(3, np.nan), np.zeros(3, np.int64), n_boot=5, seed=0, ci_level=0.95, name="y"
    )
    assert empty.value is None and empty.n == 0
    assert draw_patients(2, 4, np.random.default_rng(0)).shape == (4, 2)


def test_case_names() -> None:
    assert case_of(Path("sub-verse004_seg-subreg_ctd.json")) == ("sub-verse004", "sub-verse004")
    assert case_of(Path("sub-ct_label-22_ct.nii.gz")) == ("sub-ct", "sub-ct")
    assert case_of(Path("r/case1/seg.nii.gz"), Path("r")) == ("case1", "case1")
    assert case_of(Path("r/case1.nrrd"), Path("r")) == ("case1", "case1")


def test_outputs_are_documented_and_whole(phantom: Phantom, tmp_path: Path) -> None:
    qa = _compare(phantom, _eroded(phantom, L1))
    report = summarise([qa], n_boot=50)
    written = write_seg_qa(report, tmp_path / "out")
    assert [p.name for p in written] == list(SEG_QA_FILES)
    doc = json.loads((tmp_path / "out" / "seg_qa.json").read_text())
    assert doc["format"] == FORMAT
    assert set(doc) >= {"parameters", "bootstrap", "cohort", "cases", "unpaired"}
    case = doc["cases"][0]
    assert case["summary"]["id_rate"] == 1.0
    assert len(case["vertebrae"]) == 4
    assert doc["cohort"]["metrics"]["dice"]["value"] == round(qa.summary.mean_dice or 0, 4)
    with open(tmp_path / "out" / "seg_qa.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["level"] for r in rows] == ["T12", "L1", "L2", "L3"]
    assert rows[0]["identified"] == "true" and rows[0]["flags"] == ""
    with pytest.raises(OutputError, match="not empty"):
        write_seg_qa(report, tmp_path / "out")
    write_seg_qa(report, tmp_path / "out", force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SEG_QA_FILES)


# --- centroid files -------------------------------------------------------------------------------
def _ctd(path: Path, points: dict[int, NDArray[np.float64]], affine: NDArray[np.float64]) -> Path:
    """A VerSe centroid file in the R-A-S voxel coordinates of the grid ``affine``."""
    inv = np.linalg.inv(affine)
    entries: list[dict[str, Any]] = [{"direction": ["R", "A", "S"]}]
    for lab, p in sorted(points.items()):
        x, y, z = (inv @ np.r_[p, 1.0])[:3]
        entries.append({"label": lab, "X": float(x), "Y": float(y), "Z": float(z)})
    path.write_text(json.dumps(entries))
    return path


def test_centroid_files_against_a_label_map(phantom: Phantom, tmp_path: Path) -> None:
    truth_mask = save_path = tmp_path / "sub-p_seg-vert_msk.nii.gz"
    save_nifti(phantom.labels, phantom.affine, save_path)
    centres = label_centroids(phantom.labels, phantom.affine)
    moved = {k: v + np.array([0.0, 3.0, 4.0]) for k, v in centres.items()}  # 5 mm off
    ctd = _ctd(tmp_path / "sub-p_seg-subreg_ctd.json", moved, phantom.affine)
    pred = tmp_path / "pred" / "p.nii.gz"
    pred.parent.mkdir()
    save_nifti(phantom.labels, phantom.affine, pred)
    report = seg_qa_files(pred, ctd, n_boot=0)  # the grid: the mask of sub-p beside it
    case = report.cases[0]
    assert case.summary.id_rate == 1.0 and not case.summary.segmentation
    assert all(v.localisation_mm == pytest.approx(5.0) for v in case.vertebrae)
    assert case.inputs["truth"]["centroids_grid"] == str(truth_mask)
    # a centroid file beside the label map of its case takes its grid from it ...
    beside = _ctd(tmp_path / "pred" / "p_ctd.json", centres, phantom.affine)
    assert seg_qa_files(beside, ctd, n_boot=0).cases[0].summary.mean_localisation_mm == (
        pytest.approx(5.0)
    )
    # ... one alone needs it named
    (tmp_path / "alone").mkdir()
    alone = _ctd(tmp_path / "alone" / "p_ctd.json", centres, phantom.affine)
    with pytest.raises(InputError, match="--pred-grid"):
        seg_qa_files(alone, ctd)
    both = seg_qa_files(alone, ctd, pred_grid=pred, n_boot=0)
    assert both.cases[0].summary.mean_localisation_mm == pytest.approx(5.0)
    with pytest.raises(InputError, match="--truth-grid is for a centroid file"):
        seg_qa_files(pred, truth_mask, truth_grid=pred)


def test_pairing_errors(phantom: Phantom, tmp_path: Path) -> None:
    save_nifti(phantom.labels, phantom.affine, tmp_path / "a.nii.gz")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="no such file"):
        pair_cases(tmp_path / "nope.nii.gz", tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match="a folder and the other input a file"):
        pair_cases(tmp_path / "d", tmp_path / "a.nii.gz")
    (tmp_path / "e").mkdir()
    save_nifti(phantom.labels, phantom.affine, tmp_path / "e" / "x.nii.gz")
    with pytest.raises(InputError, match="no case in common"):
        pair_cases(tmp_path / "d", tmp_path / "e")
    save_nifti(phantom.labels, phantom.affine, tmp_path / "d" / "x_one.nii.gz")
    (tmp_path / "d" / "x").mkdir()
    save_nifti(phantom.labels, phantom.affine, tmp_path / "d" / "x" / "a.nii.gz")
    save_nifti(phantom.labels, phantom.affine, tmp_path / "d" / "x" / "b.nii.gz")
    with pytest.raises(InputError, match="case x has several label maps"):
        pair_cases(tmp_path / "d", tmp_path / "e")


# --- the command line -----------------------------------------------------------------------------
def _cli(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, args)


def test_cli_writes_both_files_and_refuses_to_overwrite(phantom: Phantom, tmp_path: Path) -> None:
    save_nifti(_eroded(phantom, L1), phantom.affine, tmp_path / "pred.nii.gz")
    save_nifti(phantom.labels, phantom.affine, tmp_path / "truth.nii.gz")
    args = ["seg-qa", str(tmp_path / "pred.nii.gz"), "--truth", str(tmp_path / "truth.nii.gz")]
    res = _cli([*args, "-o", str(tmp_path / "out"), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert "L1" in res.stdout and "seg_qa.json" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SEG_QA_FILES)
    res = _cli([*args, "-o", str(tmp_path / "out")])
    assert res.exit_code == 3 and "--force" in res.stderr
    res = _cli([*args, "-o", str(tmp_path / "out"), "--force", "-q", "--n-boot", "0"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing", 3, "no such file"),
        ("not-verse", 3, "outside the VerSe convention"),
        ("empty-truth", 3, "label map is empty"),
        ("far", 3, "do not overlap"),
        ("bad-format", 2, "--label-format"),
        ("not-an-image", 3, "is not an image vertgrade reads"),
    ],
)
def test_cli_errors_are_one_line(
    phantom: Phantom, tmp_path: Path, case: str, code: int, message: str
) -> None:
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 2:6, 2:6] = L1
    pred = tmp_path / "pred.nii.gz"
    truth = tmp_path / "truth.nii.gz"
    save_nifti(lab, np.eye(4), pred)
    save_nifti(lab, np.eye(4), truth)
    extra: list[str] = []
    if case == "missing":
        pred = tmp_path / "nope.nii.gz"
    elif case == "not-verse":
        save_nifti(np.where(lab > 0, 27, 0).astype(np.uint8), np.eye(4), pred)
    elif case == "empty-truth":
        save_nifti(np.zeros_like(lab), np.eye(4), truth)
    elif case == "far":
        far = np.eye(4)
        far[2, 3] = 900.0
        save_nifti(lab, far, pred)
    elif case == "bad-format":
        extra = ["--label-format", "nifti"]
    elif case == "not-an-image":
        pred = tmp_path / "pred.txt"
        pred.write_text("x")
    res = _cli(["seg-qa", str(pred), "--truth", str(truth), "-o", str(tmp_path / "o"), *extra])
    assert res.exit_code == code, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message in err and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


# --- real data ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_isolated_bodies_against_tptbox_body_labels(data_dir: Path) -> None:
    """vertgrade's isolated bodies (graded from the CT and the vertebra mask alone) against the
    TPTBox subregion mask's body (49 + 50) of each vertebra."""
    from vertgrade import grade_study, load_study

    folder = data_dir / "tptbox-l3"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    ct = next(folder.glob("*_ct.nii.gz"))
    vert = next(folder.glob("*_seg-vert*_msk.nii.gz"))
    sub = next(folder.glob("*_seg-subreg*_msk.nii.gz"))
    result = grade_study(load_study(ct, vert))
    labels, _ = read_volume(vert, kind="labels")
    subreg, _ = read_volume(sub, kind="labels")
    body = np.isin(np.asarray(subreg.array), (49, 50))
    truth = np.where(body, np.asarray(labels.array), 0).astype(np.uint8)
    qa = compare_case(
        _side(result.bodies, result.bodies_affine),
        _side(truth, labels.affine),
        subject="tptbox-l3",
    )
    s = qa.summary
    assert s.id_rate == 1.0 and not s.missing and not s.extra and s.label_shift == 0
    for v in qa.vertebrae:  # measured: Dice 0.98-0.99, HD95 0-1.5 mm, centroids within 0.6 mm
        assert v.dice is not None and v.dice > 0.9, v
        assert v.hd95_mm is not None and v.hd95_mm <= 3.0, v
        assert v.localisation_mm is not None and v.localisation_mm < 2.0, v


def _verse_folders(data_dir: Path) -> list[Path]:
    return [
        d
        for d in sorted(data_dir.glob("verse*"))
        if d.is_dir() and any(d.glob("*_ctd.json")) and any(d.glob("*_seg-vert*_msk.nii.gz"))
    ]


@pytest.mark.realdata
def test_real_verse_centroid_files_against_the_masks_own_centroids(data_dir: Path) -> None:
    """Each VerSe centroid file (body centroids) against the centres of mass of its own mask's
    vertebrae (body and posterior elements): every vertebra identified, the two 5-20 mm apart
    (the posterior elements pull a whole vertebra's centre dorsally)."""
    folders = _verse_folders(data_dir)
    if not folders:
        pytest.skip("no VerSe folder with a centroid file and a vertebra mask")
    for folder in folders:
        mask = next(folder.glob("*_seg-vert*_msk.nii.gz"))
        ctd = next(folder.glob("*_ctd.json"))
        case = seg_qa_files(mask, ctd, n_boot=0).cases[0]
        s = case.summary
        assert s.id_rate == 1.0 and s.precision == 1.0, (folder.name, s)
        assert not s.missing and not s.extra and s.label_shift == 0, folder.name
        for v in case.vertebrae:
            assert v.localisation_mm is not None and 5.0 < v.localisation_mm < 20.0, (folder, v)
