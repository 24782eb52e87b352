"""Tests of the synthetic phantom: exact truth, an independent voxel oracle, grids, files."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from vertgrade.alignment import endplate_angles
from vertgrade.geometry.thirds import THIRDS
from vertgrade.levels import label_id, normative_shape
from vertgrade.phantom import (
    TRUTH_COLUMNS,
    FractureSpec,
    Phantom,
    ScoliosisSpec,
    VertebraTruth,
    make_phantom,
    write_phantom,
)
from vertgrade.phantom import make as phantom_make

# Small, fast phantoms: coarse voxels and a tight field of view where the voxels do not matter.
FAST: dict[str, Any] = {"spacing": 2.0, "fov_mm": (140.0, 140.0), "noise_hu": 0.0}


def _truth(ph: Phantom, level: str) -> VertebraTruth:
    return next(t for t in ph.truth if t.level == level)


def _world_centroids(ph: Phantom) -> dict[int, NDArray[np.float64]]:
    out = {}
    for lab in np.unique(ph.labels)[1:]:
        idx = np.argwhere(ph.labels == lab).mean(axis=0)
        out[int(lab)] = ph.affine[:3, :3] @ idx + ph.affine[:3, 3]
    return out


def _to_local(ph: Phantom, label: int, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Local (si, ap, lr) mm of the voxel centres of ``mask`` in ``label``'s frame."""
    idx = np.argwhere(mask).astype(float)
    world = idx @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    return ph.frames[label].to_local(world)


# --------------------------------------------------------------------------------------------
# FractureSpec
# --------------------------------------------------------------------------------------------


def test_fracture_spec_parse() -> None:
    spec = FractureSpec.parse(" l1 : Biconcave : 0.25 ")
    assert spec == FractureSpec("L1", "biconcave", 0.25)
    assert FractureSpec.parse("T12:crush:0").severity == 0.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("L1:wedge", "LEVEL:TYPE:SEVERITY"),
        ("L1:wedge:0.3:x", "LEVEL:TYPE:SEVERITY"),
        ("L1::0.3", "LEVEL:TYPE:SEVERITY"),
        ("L1:wedge:abc", "not a number"),
        ("L1:burst:0.3", "not one of wedge, biconcave, crush"),
        ("L1:wedge:0.9", "outside 0..0.8"),
        ("L1:wedge:-0.1", "outside 0..0.8"),
        ("L1:wedge:nan", "outside 0..0.8"),
        ("X9:wedge:0.3", "unknown vertebra level"),
        ("C5:wedge:0.3", "T1-L5 only"),
    ],
)
def test_fracture_spec_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FractureSpec.parse(text)


def test_make_phantom_argument_errors() -> None:
    with pytest.raises(ValueError, match="not among the phantom's levels"):
        make_phantom("L1-L2", ["L3:wedge:0.3"], **FAST)
    with pytest.raises(ValueError, match="two fractures"):
        make_phantom("L1-L2", ["L1:wedge:0.3", "L1:crush:0.3"], **FAST)
    with pytest.raises(ValueError, match="orientation"):
        make_phantom("L1", orientation="RAR", **FAST)
    with pytest.raises(ValueError, match="T1-L5 only"):
        make_phantom("C6-T2", **FAST)
    with pytest.raises(ValueError, match="spacing"):
        make_phantom("L1", spacing=(1.0, 0.0, 1.0))


# --------------------------------------------------------------------------------------------
# Truth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "region"), [("wedge", "anterior"), ("biconcave", "middle"), ("crush", "anterior")]
)
@pytest.mark.parametrize("severity", [0.22, 0.5, 0.8])
def test_affected_third_loses_the_severity(kind: str, region: str, severity: float) -> None:
    ph = make_phantom("L1", [f"L1:{kind}:{severity}"], **FAST)
    t = ph.truth[0]
    losses = {r: getattr(t, f"loss_{r}") for r in THIRDS}
    assert losses[region] == pytest.approx(severity, abs=1e-6)
    assert max(losses.values()) == pytest.approx(severity, abs=1e-6)  # the most affected third
    assert (t.fractured, t.type, t.severity) == (True, kind, severity)
    for r in ("body", *THIRDS):
        after, before = getattr(t, f"height_{r}_after_mm"), getattr(t, f"height_{r}_before_mm")
        assert getattr(t, f"loss_{r}") == pytest.approx(1 - after / before, abs=1e-12)
    if kind == "crush":
        assert all(v == pytest.approx(severity, abs=1e-6) for v in losses.values())
    if kind == "wedge":
        assert losses["anterior"] > losses["middle"] > losses["posterior"]


def test_adjacent_fractures() -> None:
    specs = ["T12:crush:0.3", "L1:wedge:0.45", "L2:biconcave:0.35"]
    ph = make_phantom("T11-L3", specs, **FAST)
    assert _truth(ph, "T12").loss_anterior == pytest.approx(0.3, abs=1e-6)
    assert _truth(ph, "L1").loss_anterior == pytest.approx(0.45, abs=1e-6)
    assert _truth(ph, "L2").loss_middle == pytest.approx(0.35, abs=1e-6)
    same = make_phantom("T11-L3", ", ".join(specs), **FAST)
    assert same.truth_rows() == ph.truth_rows()
    np.testing.assert_array_equal(same.labels, ph.labels)
    for level in ("T11", "L3"):
        t = _truth(ph, level)
        assert (t.fractured, t.type, t.grade, t.severity, t.loss_body) == (False, "", 0, 0.0, 0.0)
    # A fracture moves no other vertebra and changes no healthy truth.
    healthy = make_phantom("T11-L3", **FAST)
    for level in ("T11", "L3"):
        assert _truth(healthy, level) == _truth(ph, level)
    for lab in (label_id("T11"), label_id("L3")):
        np.testing.assert_allclose(healthy.frames[lab].origin, ph.frames[lab].origin, atol=1e-9)
    # Vertebrae do not overlap: each keeps a body of about its own size.
    for t in ph.truth:
        assert (ph.bodies == t.label).sum() > 0


def test_no_vertebra_overwrites_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every level fractured at the maximum severity: no structure lands on a neighbour."""
    real_paint = phantom_make._paint
    clashes: list[tuple[int, int]] = []
    painted: list[int] = []  # the spy must see the painting, or it proves nothing

    def spy(*args: Any, **kwargs: Any) -> None:
        volumes = kwargs.get("label_volumes", ())
        before = volumes[0].copy() if volumes else None
        real_paint(*args, **kwargs)
        painted.append(kwargs.get("label", 0))
        if before is not None:
            lab = kwargs["label"]
            hit = (before != volumes[0]) & (before != 0) & (before != lab)
            clashes.extend((lab, int(v)) for v in np.unique(before[hit]))

    monkeypatch.setattr(phantom_make, "_paint", spy)
    kinds = ("wedge", "crush", "biconcave")
    levels = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    fractures = [f"{lv}:{kinds[i % 3]}:0.8" for i, lv in enumerate(levels) if i % 4 != 3]
    variants: list[dict[str, Any]] = [
        {},
        {"kyphosis_deg": 70.0, "lordosis_deg": 70.0, "scale": 1.2},
    ]
    for kw in variants:
        ph = make_phantom("T1-L5", fractures, spacing=2.0, fov_mm=(160, 160), noise_hu=0, **kw)
        assert clashes == []
        assert set(painted) >= set(range(8, 25))
        assert set(np.unique(ph.bodies)) == {0, *range(8, 25)}


@pytest.mark.parametrize(
    ("kind", "severity", "grade"),
    [("wedge", 0.1, 0), ("wedge", 0.19, 0), ("wedge", 0.2, 1), ("crush", 0.22, 1),
     ("crush", 0.25, 2), ("wedge", 0.3, 2), ("crush", 0.4, 3), ("wedge", 0.6, 3)],
)  # fmt: skip
def test_grades_follow_the_worst_third(kind: str, severity: float, grade: int) -> None:
    ph = make_phantom("L2", [f"L2:{kind}:{severity}"], **FAST)
    assert ph.truth[0].grade == grade


@pytest.mark.parametrize(
    ("severity", "grade"),
    # the central depression of a biconcave deformity is deeper than its middle third's mean
    # (about 1.18 times here), and grades with it
    [(0.1, 0), (0.16, 0), (0.18, 1), (0.2, 1), (0.22, 2), (0.3, 2), (0.35, 3), (0.6, 3)],
)
def test_grades(severity: float, grade: int) -> None:
    ph = make_phantom("L2", [f"L2:biconcave:{severity}"], **FAST)
    t = ph.truth[0]
    assert t.loss_central > t.loss_middle
    assert t.grade == grade
    assert t.fractured is (grade > 0)
    assert t.type == ("biconcave" if grade else "")
    assert t.severity == severity
    assert t.loss_middle == pytest.approx(severity, abs=1e-6)  # the deformity is there anyway


def test_healthy_shape_is_normative() -> None:
    ph = make_phantom("T1-L5", spacing=6.0, fov_mm=(120, 120), noise_hu=0, jitter=0.0, scale=1.1)
    for t in ph.truth:
        norm = normative_shape(t.label)
        assert t.height_anterior_before_mm == pytest.approx(1.1 * norm.anterior_mm, abs=1e-9)
        assert t.height_middle_before_mm == pytest.approx(1.1 * norm.middle_mm, abs=1e-9)
        assert t.height_posterior_before_mm == pytest.approx(1.1 * norm.posterior_mm, abs=1e-9)
        if t.level.startswith("T"):
            assert t.height_anterior_before_mm < t.height_posterior_before_mm
        if t.level in ("L3", "L4", "L5"):
            assert t.height_anterior_before_mm > t.height_posterior_before_mm
        geo = ph.geometry[t.label]
        assert 0.3 < geo.depression_mm < 1.5  # mild endplate concavity
    # With jitter, each vertebra is scaled by its own seeded factor, close to 1.
    a = make_phantom("T10-L3", spacing=6.0, fov_mm=(120, 120), noise_hu=0, seed=3)
    b = make_phantom("L1-L2", spacing=6.0, fov_mm=(120, 120), noise_hu=0, seed=3)
    for t in a.truth:
        ratio = t.height_middle_before_mm / normative_shape(t.label).middle_mm
        assert 0.97 < ratio < 1.03
    assert _truth(a, "L1") == pytest.approx(_truth(a, "L1"))
    assert _truth(a, "L1").height_body_before_mm == _truth(b, "L1").height_body_before_mm


@pytest.mark.parametrize("fracture", ["L1:wedge:0.8", "L1:crush:0.8", "L1:biconcave:0.5"])
def test_truth_rows_and_centres(fracture: str) -> None:
    ph = make_phantom("T12-L1", [fracture], **FAST)
    rows = ph.truth_rows()
    assert [list(r) for r in rows] == [list(TRUTH_COLUMNS)] * 2
    for t in ph.truth:
        np.testing.assert_allclose(
            [t.centre_x_mm, t.centre_y_mm, t.centre_z_mm], ph.frames[t.label].origin
        )
        # The centre is inside the (fractured) body, midway between its endplates.
        geo = ph.geometry[t.label]
        a_mid = geo.dome_centre_ap_mm
        assert float(geo.sd(0.0, a_mid, 0.0)) > 1.0
        assert float(geo.superior(a_mid, 0.0)) == pytest.approx(-float(geo.inferior(a_mid, 0.0)))
    frame = ph.frames[label_id("L1")]
    assert abs(float(frame.si @ frame.lr)) < 1e-12
    assert abs(float(frame.si @ [0, 0, 1])) < math.cos(math.radians(1.0))  # not grid-aligned


# --------------------------------------------------------------------------------------------
# Independent oracle: heights of the rasterised body mask along si
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fine_phantom() -> Phantom:
    return make_phantom(
        "L1-L2", ["L1:wedge:0.35"], spacing=0.5, fov_mm=(120.0, 120.0), noise_hu=0.0
    )


@pytest.mark.parametrize("level", ["L1", "L2"])
def test_oracle_heights_along_si(fine_phantom: Phantom, level: str) -> None:
    ph = fine_phantom
    lab = label_id(level)
    geo, frame = ph.geometry[lab], ph.frames[lab]
    grid = geo.footprint_grid()
    ap, lr = grid.mesh()
    mask = (ph.bodies == lab).astype(np.uint8)
    inv = np.linalg.inv(ph.affine)
    step = 0.01
    u = np.arange(-30.0, 30.0, step)
    for region in THIRDS:
        sel = grid.regions.mask(region)
        a0, l0 = float(ap[sel].mean()), float(lr[sel].mean())
        errors = []
        for da in (-1.5, 0.0, 1.5):
            for dl in (-1.5, 0.0, 1.5):
                a, b = a0 + da, l0 + dl
                line = frame.origin + u[:, None] * frame.si + a * frame.ap + b * frame.lr
                ijk = line @ inv[:3, :3].T + inv[:3, 3]
                inside = ndimage.map_coordinates(mask, ijk.T, order=0, mode="constant")
                measured = float(inside.sum()) * step
                errors.append(measured - float(geo.height(a, b)))
        assert max(abs(e) for e in errors) < 0.75, (region, errors)
        assert abs(float(np.mean(errors))) < 0.4, (region, errors)
    t = _truth(ph, level)
    # The analytic map itself: its region means are the truth.
    for region in ("body", *THIRDS):
        mean = float(geo.height(ap, lr)[grid.regions.mask(region)].mean())
        assert mean == pytest.approx(getattr(t, f"height_{region}_after_mm"), abs=1e-9)


# --------------------------------------------------------------------------------------------
# Grids: orientation, spacing, oblique
# --------------------------------------------------------------------------------------------


def test_orientations_describe_the_same_object() -> None:
    kw: dict[str, Any] = {
        "levels": "T12-L1",
        "fractures": ["L1:crush:0.3"],
        "fov_mm": (140.0, 140.0),
        "noise_hu": 0.0,
    }
    ras = make_phantom(orientation="RAS", **kw)
    pir = make_phantom(orientation="PIR", **kw)
    ipl = make_phantom(orientation="IPL", spacing=(3.0, 1.0, 1.0), **kw)
    obl = make_phantom(orientation="LPS", oblique_deg=25.0, **kw)
    assert nib.aff2axcodes(pir.affine) == ("P", "I", "R")
    assert nib.aff2axcodes(ipl.affine) == ("I", "P", "L")
    assert np.linalg.norm(ipl.affine[:3, 0]) == pytest.approx(3.0)
    assert abs(obl.affine[0, 1]) > 0.1  # oblique
    reference = _world_centroids(ras)
    for ph, tol in ((pir, 1e-6), (ipl, 1.0), (obl, 0.5)):
        assert ph.truth_rows() == ras.truth_rows()
        cents = _world_centroids(ph)
        assert set(cents) == set(reference) == {19, 20}
        for lab, c in cents.items():
            assert np.linalg.norm(c - reference[lab]) < tol
    # RAS and PIR sample the same voxel centres: identical labels once reoriented.
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(pir.affine), nib.orientations.io_orientation(ras.affine)
    )
    labels = nib.orientations.apply_orientation(pir.labels, transform)
    np.testing.assert_array_equal(labels, ras.labels)


def test_extent_and_field_of_view() -> None:
    ph = make_phantom("L1-L2", spacing=2.0, noise_hu=0.0)
    assert ph.ct.shape[:2] == (170, 130)  # trunk (320 x 240 mm) plus 10 mm margins
    z = ph.affine[2, 3] + ph.affine[2, 2] * np.arange(ph.ct.shape[2])
    zs = np.argwhere(ph.labels > 0)[:, 2]
    assert z[zs.min()] - z[0] > 8.0 and z[-1] - z[zs.max()] > 8.0  # whole vertebrae + margin
    assert ph.ct.min() < -900 and abs(int(ph.ct[85, 20, 10]) - 40) < 5  # air; soft tissue


def test_deterministic_and_noise() -> None:
    a = make_phantom("L1", spacing=2.0, fov_mm=(120, 120), seed=5)
    b = make_phantom("L1", spacing=2.0, fov_mm=(120, 120), seed=5)
    c = make_phantom("L1", spacing=2.0, fov_mm=(120, 120), seed=6)
    np.testing.assert_array_equal(a.ct, b.ct)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.ct, c.ct)
    assert a.ct.dtype == np.int16 and a.labels.dtype == np.uint8 and a.bodies.dtype == np.uint8
    clean = make_phantom("L1", spacing=2.0, fov_mm=(120, 120), noise_hu=0.0)
    noise = a.ct.astype(float) - clean.ct
    assert 17.0 < noise[clean.ct > -900].std() < 23.0


# --------------------------------------------------------------------------------------------
# Anatomy: bodies, posterior elements, canal, intensities
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_phantom() -> Phantom:
    return make_phantom("T10-L3", ["L1:wedge:0.4"], fov_mm=(160.0, 160.0), noise_hu=0.0)


def test_bodies_inside_labels_and_posterior_elements(clean_phantom: Phantom) -> None:
    ph = clean_phantom
    assert np.all(ph.labels[ph.bodies > 0] == ph.bodies[ph.bodies > 0])
    assert set(np.unique(ph.labels)) == {0, *range(17, 23)}
    for t in ph.truth:
        geo = ph.geometry[t.label]
        body = ph.bodies == t.label
        posterior = (ph.labels == t.label) & ~body
        assert posterior.sum() > 0.3 * body.sum()
        local = _to_local(ph, t.label, posterior)
        wall = geo.wall_ap_mm + geo.wall_concavity_mm
        assert local[:, 1].max() < wall + 6.0  # nothing of it anterior of the pedicle roots
        assert local[:, 1].mean() < wall - 10.0  # mostly well behind the body
        assert np.all(geo.footprint_sd(local[:, 1], local[:, 2]) < 0.5)  # not in the body
        body_local = _to_local(ph, t.label, body)
        assert np.all(geo.sd(*body_local.T) > -1e-3)


def test_canal_is_empty_between_body_and_lamina(clean_phantom: Phantom) -> None:
    ph = clean_phantom
    inv = np.linalg.inv(ph.affine)
    labels = ph.labels.astype(np.int16)
    for t in ph.truth:
        geo, frame = ph.geometry[t.label], ph.frames[t.label]
        a = np.arange(10.0, -80.0, -0.25)  # from inside the body backwards along the midline
        u = 0.1 * geo.height_mm - geo.offset_mm  # the level of the pedicles
        line = frame.origin + u * frame.si + a[:, None] * frame.ap
        ijk = line @ inv[:3, :3].T + inv[:3, 3]
        lab = ndimage.map_coordinates(labels, ijk.T, order=0, mode="constant")
        hu = ndimage.map_coordinates(ph.ct.astype(float), ijk.T, order=1, mode="nearest")
        ours = lab == t.label
        runs = np.flatnonzero(np.diff(ours.astype(int)))  # body ends, lamina starts, ends
        assert len(runs) >= 3, t.level
        gap = a[runs[0]] - a[runs[1] + 1]
        assert 12.0 < gap < 22.0, (t.level, gap)  # the canal, about 17 mm deep
        assert np.all(lab[runs[0] + 1 : runs[1] + 1] == 0)
        in_canal = slice(runs[0] + 12, runs[1] - 11)  # 3 mm from either wall: no blur left
        assert np.all(np.abs(hu[in_canal] - 40.0) < 10.0)


def test_intensities(clean_phantom: Phantom) -> None:
    ph = clean_phantom
    for t in ph.truth:
        geo = ph.geometry[t.label]
        local = _to_local(ph, t.label, ph.bodies == t.label)
        depth = geo.sd(*local.T)
        values = ph.ct[ph.bodies == t.label]
        assert abs(np.median(values[depth > 4.0]) - 180.0) < 5.0  # trabecular core
        assert np.median(values[(depth > 0.2) & (depth < 0.8)]) > 350.0  # cortical shell
    posterior = (ph.labels > 0) & (ph.bodies == 0)
    assert 250 < np.median(ph.ct[posterior]) < 450
    # Discs: between bodies, unlabelled, brighter than soft tissue.
    l1, l2 = ph.frames[label_id("L1")], ph.frames[label_id("L2")]
    mid = 0.5 * (l1.origin + l2.origin)
    ijk = np.linalg.inv(ph.affine) @ np.r_[mid, 1.0]
    i, j, k = np.round(ijk[:3]).astype(int)
    assert ph.labels[i, j, k] == 0
    assert abs(int(ph.ct[i, j, k]) - 90) < 10


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_write_phantom(tmp_path: Path) -> None:
    ph = make_phantom("L1-L2", ["L2:wedge:0.3"], orientation="LPS", **FAST)
    out = tmp_path / "phantom"
    paths = write_phantom(ph, out)
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii.gz", "labels.nii.gz", "truth.csv"]
    assert paths == {
        "ct": out / "ct.nii.gz",
        "labels": out / "labels.nii.gz",
        "truth": out / "truth.csv",
    }
    ct = nib.Nifti1Image.from_filename(paths["ct"])
    labels = nib.Nifti1Image.from_filename(paths["labels"])
    np.testing.assert_allclose(ct.affine, ph.affine, atol=1e-5)
    assert ct.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(ct.dataobj), ph.ct)
    np.testing.assert_array_equal(np.asanyarray(labels.dataobj), ph.labels)
    assert nib.aff2axcodes(ct.affine) == ("L", "P", "S")
    with open(paths["truth"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(TRUTH_COLUMNS)
    assert [r["level"] for r in rows] == ["L1", "L2"]
    assert [r["fractured"] for r in rows] == ["false", "true"]
    assert float(rows[1]["loss_anterior"]) == ph.truth[1].loss_anterior
    assert float(rows[1]["height_middle_after_mm"]) == ph.truth[1].height_middle_after_mm

    with pytest.raises(FileExistsError, match="not empty"):
        write_phantom(ph, out)
    other = make_phantom("L1-L2", **FAST)
    write_phantom(other, out, force=True)
    with open(out / "truth.csv", newline="", encoding="utf-8") as fh:
        assert [r["fractured"] for r in csv.DictReader(fh)] == ["false", "false"]
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii.gz", "labels.nii.gz", "truth.csv"]

    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom(ph, empty)  # an existing empty folder is fine
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not_a_folder"):
        write_phantom(ph, a_file, force=True)


# --------------------------------------------------------------------------------------------
# Spine curves: scoliosis, and the alignment truth
# --------------------------------------------------------------------------------------------

# The columns truth.csv had before the alignment truth was added: unchanged, in this order.
_HEIGHT_COLUMNS = (
    "label",
    "level",
    "fractured",
    "type",
    "severity",
    "grade",
    "height_body_before_mm",
    "height_anterior_before_mm",
    "height_middle_before_mm",
    "height_posterior_before_mm",
    "height_body_after_mm",
    "height_anterior_after_mm",
    "height_middle_after_mm",
    "height_posterior_after_mm",
    "loss_body",
    "loss_anterior",
    "loss_middle",
    "loss_posterior",
    "centre_x_mm",
    "centre_y_mm",
    "centre_z_mm",
)


def test_scoliosis_spec_parse() -> None:
    spec = ScoliosisSpec.parse(" t5 - T11 : Right : 40 ")
    assert spec == ScoliosisSpec("T5", "T11", "right", 40.0)
    assert (spec.upper_label, spec.lower_label) == (12, 18)
    assert ScoliosisSpec.parse("T11-L4:left:50").cobb_deg == 50.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("T5-T11:right", "UPPER-LOWER:SIDE:DEGREES"),
        ("T5:right:40", "UPPER-LOWER:SIDE:DEGREES"),
        ("T5-T11:right:x", "not a number"),
        ("T5-T11:up:40", "not left or right"),
        ("T5-T6:right:10", "at least two levels"),
        ("T11-T5:right:10", "at least two levels"),
        ("T5-T11:right:0", r"outside 0\.\.60"),
        ("T5-T11:right:61", r"outside 0\.\.60"),
        ("T5-T11:right:nan", r"outside 0\.\.60"),
        ("C5-T3:right:10", "T1-L5 only"),
        ("X5-T3:right:10", "unknown vertebra level"),
    ],
)
def test_scoliosis_spec_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScoliosisSpec.parse(text)


def test_sagittal_curvature_must_be_an_angle() -> None:
    with pytest.raises(ValueError, match="kyphosis_deg must be an angle"):
        make_phantom("T1-L5", kyphosis_deg=float("nan"), **FAST)
    with pytest.raises(ValueError, match="lordosis_deg must be an angle"):
        make_phantom("T1-L5", lordosis_deg=120.0, **FAST)


def test_scoliotic_curves_must_chain() -> None:
    with pytest.raises(ValueError, match="share their end vertebra"):
        make_phantom("T1-L5", scoliosis=["T5-T10:right:30", "T11-L4:left:30"], **FAST)
    with pytest.raises(ValueError, match="opposite sides"):
        make_phantom("T1-L5", scoliosis="T5-T11:right:30, T11-L4:right:30", **FAST)


def test_alignment_truth_is_exact_by_construction() -> None:
    ph = make_phantom(
        "T1-L5",
        scoliosis=["T11-L4:left:30", "T5-T11:right:40"],
        spacing=2.0,
        fov_mm=(200, 200),
        noise_hu=0.0,
    )
    assert ph.alignment is not None
    curves = {(c.upper, c.lower): c for c in ph.alignment.curves}
    # requested curves: exactly their Cobb angle, between exactly their end vertebrae
    assert curves[("T5", "T11")].cobb_deg == pytest.approx(40.0, abs=1e-9)
    assert curves[("T5", "T11")].convex == "right" and curves[("T5", "T11")].requested
    assert curves[("T11", "L4")].cobb_deg == pytest.approx(30.0, abs=1e-9)
    assert curves[("T11", "L4")].convex == "left"
    # compensatory curves beyond: a third of the neighbouring rate per level
    assert curves[("T1", "T5")].cobb_deg == pytest.approx(4 * 40.0 / 6 / 3, abs=1e-9)
    assert curves[("L4", "L5")].cobb_deg == pytest.approx(30.0 / 5 / 3, abs=1e-9)
    assert not curves[("T1", "T5")].requested
    assert [c.apex for c in ph.alignment.curves][1:3] == ["T8", "L1/L2"]
    for t in ph.truth:
        frame = ph.frames[t.label]
        axis_coronal = endplate_angles(frame.si)[0]
        # rigid healthy bodies: both endplates share the axis's coronal angle ...
        assert t.superior_coronal_deg == pytest.approx(axis_coronal, abs=1e-9)
        assert t.inferior_coronal_deg == pytest.approx(axis_coronal, abs=1e-9)
        # ... and lie in the axis's sagittal plane, their own wedge split between them
        sup, inf = ph.endplates[t.label]
        assert abs(float(np.cross(sup.normal, inf.normal) @ frame.lr)) == pytest.approx(
            float(np.linalg.norm(np.cross(sup.normal, inf.normal))), abs=1e-12
        )
        assert float(sup.normal @ frame.si) == pytest.approx(float(inf.normal @ frame.si))
        assert np.dot(sup.point_mm - inf.point_mm, frame.si) > 10.0
    rows = {r["level"]: r for r in ph.truth_rows()}
    assert rows["T7"]["coronal_curves"] == ";".join(c.as_text() for c in ph.alignment.curves)
    assert rows["L2"]["kyphosis_span"] == "T4-T12" and rows["L2"]["lordosis_span"] == "L1-L5"
    assert rows["L2"]["thoracic_kyphosis_deg"] == ph.alignment.thoracic_kyphosis_deg


def test_straight_spine_truth() -> None:
    """No scoliosis: coronal angles all zero, no curve; the sagittal endplates are symmetric
    about the axis, so their mean is the axis's sagittal angle and the kyphosis is the axis's
    rotation plus the end vertebrae's half-wedges."""
    ph = make_phantom("T1-L5", spacing=6.0, fov_mm=(120, 120), noise_hu=0.0)
    assert ph.alignment is not None and ph.alignment.curves == ()
    t = {r.level: r for r in ph.truth}
    axis = {lv: endplate_angles(ph.frames[label_id(lv)].si)[1] for lv in t}
    for lv, r in t.items():
        assert r.superior_coronal_deg == pytest.approx(0.0, abs=1e-12)
        assert r.inferior_coronal_deg == pytest.approx(0.0, abs=1e-12)
        mean = 0.5 * (r.superior_sagittal_deg + r.inferior_sagittal_deg)
        assert mean == pytest.approx(axis[lv], abs=1e-9)
        assert r.coronal_curves == ""
    half_wedge = {
        lv: 0.5 * (r.superior_sagittal_deg - r.inferior_sagittal_deg) for lv, r in t.items()
    }
    kyphosis = axis["T4"] - axis["T12"] + half_wedge["T4"] + half_wedge["T12"]
    assert ph.alignment.thoracic_kyphosis_deg == pytest.approx(kyphosis, abs=1e-9)
    assert ph.alignment.kyphosis_span == ("T4", "T12")
    assert 0 < half_wedge["T8"] < 5 and -8 < half_wedge["L5"] < 0  # thoracic / lumbar wedging
    # partial spines: the spans the measurement would take, or none
    short = make_phantom("T12-L1", **FAST)
    assert short.alignment is not None
    assert short.alignment.kyphosis_span is None and short.alignment.lordosis_span is None
    assert short.truth[0].thoracic_kyphosis_deg is None and short.truth[0].kyphosis_span == ""


def test_scoliosis_bends_the_rasterised_spine_and_keeps_the_heights() -> None:
    kw: dict[str, Any] = {"spacing": 2.0, "fov_mm": (220.0, 160.0), "noise_hu": 0.0}
    straight = make_phantom("T8-L2", **kw)
    bent = make_phantom("T8-L2", scoliosis=["T8-L2:left:50"], **kw)
    for a, b in zip(straight.truth, bent.truth, strict=True):
        assert a.height_middle_after_mm == b.height_middle_after_mm
        assert a.height_anterior_after_mm == b.height_anterior_after_mm
    # the voxels follow the curve: body centroids (voxel oracle) against the frame origins
    x_dev = []
    for lab, frame in bent.frames.items():
        idx = np.argwhere(bent.bodies == lab).mean(axis=0)
        centroid = bent.affine[:3, :3] @ idx + bent.affine[:3, 3]
        assert abs(centroid[0] - frame.origin[0]) < 1.5
        x_dev.append(frame.origin[0])
    # convex to the left: the middle of the curve lies left (-x) of its ends
    assert min(x_dev[2:5]) < min(x_dev[0], x_dev[-1]) - 10.0
    assert bent.alignment is not None
    (curve,) = [c for c in bent.alignment.curves if c.requested]
    assert (curve.upper, curve.lower, curve.convex, curve.apex) == ("T8", "L2", "left", "T11")


def test_scoliotic_vertebrae_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The steepest allowed curves, with every level fractured: no label lands on another."""
    real_paint = phantom_make._paint
    clashes: list[tuple[int, int]] = []
    painted: list[int] = []  # the spy must see the painting, or it proves nothing

    def spy(*args: Any, **kwargs: Any) -> None:
        volumes = kwargs.get("label_volumes", ())
        before = volumes[0].copy() if volumes else None
        real_paint(*args, **kwargs)
        painted.append(kwargs.get("label", 0))
        if before is not None:
            lab = kwargs["label"]
            hit = (before != volumes[0]) & (before != 0) & (before != lab)
            clashes.extend((lab, int(v)) for v in np.unique(before[hit]))

    monkeypatch.setattr(phantom_make, "_paint", spy)
    levels = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    fractures = [f"{lv}:wedge:0.8" for lv in levels[::2]]
    for curves in (["T2-T8:right:60", "T8-L1:left:50", "L1-L5:right:40"], ["T1-T7:left:60"]):
        ph = make_phantom(
            "T1-L5",
            fractures,
            scoliosis=curves,
            kyphosis_deg=70.0,
            lordosis_deg=70.0,
            spacing=2.0,
            fov_mm=(240, 200),
            noise_hu=0,
        )
        assert clashes == []
        assert set(painted) >= set(range(8, 25))
        assert set(np.unique(ph.bodies)) == {0, *range(8, 25)}


def test_truth_csv_keeps_its_columns_and_adds_the_alignment_and_central_loss(
    tmp_path: Path,
) -> None:
    assert TRUTH_COLUMNS[: len(_HEIGHT_COLUMNS)] == _HEIGHT_COLUMNS
    assert TRUTH_COLUMNS[len(_HEIGHT_COLUMNS) :] == (
        "superior_coronal_deg",
        "superior_sagittal_deg",
        "inferior_coronal_deg",
        "inferior_sagittal_deg",
        "coronal_curves",
        "thoracic_kyphosis_deg",
        "kyphosis_span",
        "lumbar_lordosis_deg",
        "lordosis_span",
        "loss_central",
    )
    ph = make_phantom("T12-L3", scoliosis=["T12-L3:right:20"], **FAST)
    paths = write_phantom(ph, tmp_path / "ph")
    with open(paths["truth"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == TRUTH_COLUMNS
    assert [r["thoracic_kyphosis_deg"] for r in rows] == [""] * 4  # one thoracic vertebra
    assert {r["lordosis_span"] for r in rows} == {"L1-L3"}
    assert {r["coronal_curves"] for r in rows} == {"T12-L3:right:20.000000"}
    for r, t in zip(rows, ph.truth, strict=True):
        assert float(r["superior_coronal_deg"]) == t.superior_coronal_deg
        assert float(r["lumbar_lordosis_deg"]) == t.lumbar_lordosis_deg
