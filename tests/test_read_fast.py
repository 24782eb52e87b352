"""The one-call .nii.gz reading (io._inflate, io.nifti): the same arrays as nibabel's own reading,
every other case handed to nibabel, and the background prefetch used only for the same file."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import vertgrade.io.nifti as nifti
from vertgrade.errors import InputError
from vertgrade.io import _inflate

AFFINE = np.array([[0, 0, -1.5, 30], [-0.8, 0, 0, 12], [0, 2.0, 0, -40], [0, 0, 0, 1]], float)


def _read_both(path: Path, kind: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    fast = nifti.read_volume(path, kind=kind)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(nifti, "_nifti_gz_in_memory", lambda p: None)
        slow = nifti.read_volume(path, kind=kind)  # type: ignore[arg-type]
    return fast, slow


@pytest.mark.parametrize(
    ("cls", "dtype", "slope"),
    [
        (nib.Nifti1Image, np.int16, None),
        (nib.Nifti1Image, np.float32, None),
        (nib.Nifti2Image, np.int16, None),
        (nib.Nifti1Image, np.int16, 2.0),  # scaled: nibabel's own path
        (nib.Nifti1Image, np.dtype(">i2"), None),  # big-endian voxels
    ],
)
def test_same_volume_as_nibabel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls: type, dtype: object, slope: float | None
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1500, size=(7, 9, 5)).astype(dtype)
    img = cls(data, AFFINE)
    if slope is not None:
        img.header.set_slope_inter(slope, -10.0)
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    (fast, fgrid), (slow, sgrid) = _read_both(path, "ct", monkeypatch)
    assert fast.array.dtype == slow.array.dtype
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.affine, slow.affine)
    assert fgrid.shape == sgrid.shape


def test_fast_path_views_the_voxels_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4)), path)
    got = nifti._nifti_gz_in_memory(path)
    assert got is not None
    _, data = got
    assert not data.flags.writeable and data.base is not None  # no copy of the inflated bytes


@pytest.mark.parametrize("isal", [True, False], ids=["isal-if-installed", "zlib"])
def test_multi_member_gzip_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isal: bool
) -> None:
    if not isal:
        monkeypatch.setattr(_inflate, "_isal", None)
    raw = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(np.arange(120, dtype=np.int16).reshape(4, 5, 6), np.eye(4)), raw)
    content = raw.read_bytes()
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(content[:200]) + gzip.compress(content[200:]))
    assert _inflate.inflate(path) == content
    vol, _ = nifti.read_volume(path, kind="labels")
    assert int(vol.array.sum()) == sum(range(120))


def test_a_truncated_file_still_gets_nibabels_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.int16), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-40])
    assert nifti._nifti_gz_in_memory(path) is None
    with pytest.raises((EOFError, OSError)):
        _inflate.inflate(path)
    monkeypatch.setattr(_inflate, "_isal", None)
    with pytest.raises(EOFError):
        _inflate.inflate(path)
    with pytest.raises(InputError, match="truncated or corrupt"):
        nifti.read_volume(path, kind="ct")


def test_prefetch_is_taken_once_and_only_for_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), path)
    _inflate.prefetch(path)
    first = _inflate.take(path)
    assert first is not None and first == _inflate.inflate(path)
    assert _inflate.take(path) is None  # handed over once
    _inflate.prefetch(path)
    time.sleep(0.05)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 5), np.int16), np.eye(4)), path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _inflate.take(path) is None  # the file changed since
    _inflate.prefetch(tmp_path / "labels.nii")  # not gzip: nothing started
    assert _inflate.take(tmp_path / "labels.nii") is None
