"""Write a :class:`~vertgrade.phantom.Phantom` to disk.

The folder gets ``ct.nii.gz``, ``labels.nii.gz`` and ``truth.csv``. ``truth.csv`` has one row per
vertebra: heights, losses and grade, then the true endplate angles, then the study-level
alignment truth (coronal curves, thoracic kyphosis, lumbar lordosis) repeated on every row; see
:class:`~vertgrade.phantom.VertebraTruth`. A missing value (no kyphosis span) is an empty cell.

Every file is written to a temporary file beside its target and renamed into place
(:func:`vertgrade.io.files.atomic_path`), so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from vertgrade.io.files import atomic_path
from vertgrade.phantom.make import Phantom
from vertgrade.phantom.truth import VertebraTruth

__all__ = ["PHANTOM_FILES", "TRUTH_COLUMNS", "write_phantom"]

#: The files :func:`write_phantom` writes, by role.
PHANTOM_FILES: dict[str, str] = {
    "ct": "ct.nii.gz",
    "labels": "labels.nii.gz",
    "truth": "truth.csv",
}
#: Columns of ``truth.csv``, in order (the fields of :class:`~vertgrade.phantom.VertebraTruth`).
TRUTH_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(VertebraTruth))


def _nifti(data: NDArray[Any], affine: NDArray[np.float64]) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)  # scanner coordinates
    img.set_sform(affine, code=1)
    return img


def _cell(value: Any) -> str:
    """CSV text of a truth value: ``true``/``false``, integers, shortest round-trip floats,
    empty for ``None``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_phantom(
    phantom: Phantom, out_dir: str | os.PathLike[str], *, force: bool = False
) -> dict[str, Path]:
    """Write the phantom's CT, labels and truth table into ``out_dir``.

    Parameters
    ----------
    phantom : Phantom
        ``ct`` (int16 HU) and ``labels`` (uint8 VerSe ids) of shape ``(X, Y, Z)`` go to NIfTI-1
        files with the phantom's affine (voxel -> RAS+ mm, qform and sform code 1); ``truth``
        goes to a CSV with the columns :data:`TRUTH_COLUMNS`, one row per vertebra.
    out_dir : path-like
        Folder to write into; created (with parents) if missing.
    force : bool
        Write into an existing non-empty folder, replacing the three files (other files are left
        alone).

    Returns
    -------
    dict of str to Path
        ``{"ct": ..., "labels": ..., "truth": ...}``.

    Raises
    ------
    ValueError
        ``out_dir`` exists and is not a folder.
    FileExistsError
        ``out_dir`` is a non-empty folder and ``force`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(
            f"output folder {str(out)!r} is not empty; choose another folder or use force"
        )
    out.mkdir(parents=True, exist_ok=True)
    paths = {role: out / name for role, name in PHANTOM_FILES.items()}

    affine = np.asarray(phantom.affine, dtype=np.float64)
    with atomic_path(paths["ct"]) as tmp:
        nib.save(_nifti(np.asarray(phantom.ct, dtype=np.int16), affine), str(tmp))
    with atomic_path(paths["labels"]) as tmp:
        nib.save(_nifti(np.asarray(phantom.labels, dtype=np.uint8), affine), str(tmp))
    with atomic_path(paths["truth"]) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TRUTH_COLUMNS)
        for row in phantom.truth_rows():
            writer.writerow([_cell(row[c]) for c in TRUTH_COLUMNS])
    return paths
