"""Reading DICOM headers: the file marker, one dataset, one attribute as text (not for users to
import; :mod:`vertgrade.io.dicom.series` and :mod:`vertgrade.io.dicom.seg` share these)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["has_preamble", "read_dataset", "tag_text"]

#: A DICOM file (PS3.10 7.1) has a 128-byte preamble, then the four bytes ``DICM``.
_PREAMBLE_BYTES = 128
_MARKER = b"DICM"


def has_preamble(path: Path) -> bool:
    """Whether a file carries the ``DICM`` marker after its 128-byte preamble (PS3.10 7.1);
    ``False`` for a file that cannot be opened."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PREAMBLE_BYTES + len(_MARKER))
    except OSError:
        return False
    return len(head) == _PREAMBLE_BYTES + len(_MARKER) and head[_PREAMBLE_BYTES:] == _MARKER


def read_dataset(path: Path, *, pixels: bool) -> Dataset:
    """Read one DICOM file, with its pixel data or (``pixels=False``) only its header.

    Raises
    ------
    InputError
        The file cannot be read as DICOM (the reason quoted from pydicom).
    """
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as err:  # pydicom raises many types for damaged files
        raise InputError(path, f"cannot be read as DICOM ({short_reason(err)})") from err


def tag_text(ds: Dataset, keyword: str) -> str:
    """An attribute's value as stripped text; ``""`` where it is absent or empty."""
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()
