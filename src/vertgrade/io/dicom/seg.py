"""Reading a DICOM SEG as VerSe vertebra labels on the CT's grid.

:func:`read_dicom_seg` maps each segment to a VerSe label, first by its segmented property type
(the SNOMED CT codes of the vertebrae, e.g. ``66794005`` "L1 vertebra"), then by its label text
(``"L1"``, ``"vertebrae_L1"``, ``"L1 vertebra"``, ``"L1 vertebral body"``...). Segments that
match neither are left out, with a note (a TotalSegmentator SEG also holds organs). Only where
no segment matches at all are segment numbers read as VerSe label ids (1-7 C1-C7, 8-19
T1-T12, 20-24 L1-L5, 25 L6, 26 S1, 28 T13), which is the convention of a SEG converted from a
VerSe label map with one segment per label value.

The segments are resampled onto the CT grid with
:func:`vertgrade.io.labels.resample_nearest`, the resampling NIfTI labels get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from vertgrade.errors import InputError
from vertgrade.io._messages import short_reason
from vertgrade.io.dicom._header import has_preamble, read_dataset, tag_text
from vertgrade.io.dicom.series import lps_to_ras
from vertgrade.io.labels import resample_nearest
from vertgrade.levels import VERSE_LABELS, VERTEBRA_SCT_CODES, label_id, level_name
from vertgrade.study import Volume

__all__ = ["SEGMENTATION_STORAGE", "read_dicom_seg", "segment_label_to_verse"]

#: SOP Class UIDs of Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5).
SEGMENTATION_STORAGE = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
_SCT_TO_LABEL = {code: label for label, (code, _) in VERTEBRA_SCT_CODES.items()}

_LEVEL_IN_TEXT = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:vertebrae?[_\s-]*)?([CTL])[_\s-]?(\d{1,2})(?![0-9])", re.IGNORECASE
)
_SACRUM_TEXT = re.compile(r"(?:^|[^A-Za-z])(sacrum|S1)(?![0-9A-Za-z])", re.IGNORECASE)


def segment_label_to_verse(text: str) -> int | None:
    """VerSe label of a segment label such as ``"L1"``, ``"vertebrae_T12"``,
    ``"L1 vertebral body"`` or ``"Sacrum"``; ``None`` where the text names no vertebra.

    >>> [segment_label_to_verse(t) for t in ("L1", "vertebrae_T12", "C 7", "sacrum", "liver")]
    [20, 19, 7, 26, None]
    """
    m = _LEVEL_IN_TEXT.search(text)
    if m is not None:
        try:
            return label_id(f"{m.group(1)}{int(m.group(2))}")
        except ValueError:
            return None
    if _SACRUM_TEXT.search(text):
        return label_id("S1")
    return None


def _segment_labels(path: Path, seg: Any, notes: list[str]) -> dict[int, int]:
    """Segment number -> VerSe label."""
    mapping: dict[int, int] = {}
    unmatched: list[str] = []
    numbers: list[int] = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        numbers.append(number)
        text = str(item.get("SegmentLabel", "") or "")
        label: int | None = None
        for code in item.get("SegmentedPropertyTypeCodeSequence", []):
            if str(code.get("CodingSchemeDesignator", "")) in ("SCT", "SRT"):
                label = _SCT_TO_LABEL.get(str(code.get("CodeValue", "")))
        if label is None:
            label = segment_label_to_verse(text)
        if label is None:
            unmatched.append(f"{number} '{text}'")
        else:
            twins = [n for n, lab in mapping.items() if lab == label]
            if twins:  # e.g. TotalSegmentator's "sacrum" and "vertebrae_S1"
                notes.append(
                    f"SEG segments {twins[0]} and {number} both name {level_name(label)}: merged"
                )
            mapping[number] = label
    if mapping:
        if unmatched:
            notes.append(
                f"{len(unmatched)} SEG segments name no vertebra and were left out: "
                + ", ".join(unmatched[:8])
                + (" ..." if len(unmatched) > 8 else "")
            )
        return mapping
    bad = [n for n in numbers if n not in VERSE_LABELS]
    if bad:
        raise InputError(
            path,
            f"no segment names a vertebra (labels {', '.join(unmatched[:6])}) and segment "
            f"numbers {bad} are not VerSe label ids, so the segments cannot be mapped to "
            "vertebrae",
        )
    notes.append("SEG segment numbers read as VerSe label ids (no segment names a vertebra)")
    return {n: n for n in numbers}


def read_dicom_seg(
    path: str | Path,
    reference: Volume,
    *,
    frame_of_reference_uid: str | None = None,
    notes: list[str] | None = None,
) -> Volume:
    """Read a DICOM SEG as VerSe vertebra labels, resampled onto a reference grid.

    Parameters
    ----------
    path : path
        A DICOM Segmentation (binary, fractional or label-map).
    reference : Volume
        The grid to resample onto (normally the CT); nearest neighbour.
    frame_of_reference_uid : str, optional
        The CT's FrameOfReferenceUID; a SEG in another frame of reference is refused.
    notes : list of str, optional
        Receives what reading did (segments left out, numbering convention used).

    Returns
    -------
    Volume
        ``uint8`` labels (VerSe numbering) on ``reference``'s grid, kind ``"labels"``.

    Raises
    ------
    InputError
        Not a DICOM SEG, another frame of reference, no segment mappable to a vertebra, or no
        labelled voxel inside the reference.
    """
    import highdicom as hd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    if not has_preamble(path):
        raise InputError(path, "is not a DICOM file (no DICM marker after the preamble)")
    head = read_dataset(path, pixels=False)
    if str(head.get("SOPClassUID", "")) not in SEGMENTATION_STORAGE:
        what = tag_text(head, "Modality") or "object"
        raise InputError(
            path,
            f"is a DICOM {what} ({head.get('SOPClassUID', '?')}), not a Segmentation (SEG)",
        )
    for_uid = tag_text(head, "FrameOfReferenceUID")
    if frame_of_reference_uid and for_uid and for_uid != frame_of_reference_uid:
        raise InputError(
            path,
            f"SEG is in frame of reference {for_uid}, the CT in {frame_of_reference_uid}: they "
            "are not in the same patient space",
        )
    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # highdicom raises many types for invalid objects
        raise InputError(path, f"cannot be read as a DICOM SEG ({short_reason(err)})") from err
    own_notes: list[str] = []
    mapping = _segment_labels(path, seg, own_notes)
    fractional = str(seg.get("SegmentationType", "")) == "FRACTIONAL"
    out = np.zeros(reference.shape, np.uint8)
    try:
        if fractional:
            for number, label in mapping.items():
                v = seg.get_volume(segment_numbers=[number], combine_segments=False)
                mask = (np.asarray(v.array)[..., 0] >= 0.5).astype(np.uint8)
                src = Volume(mask, lps_to_ras(v.affine), "labels", path)
                out[resample_nearest(src, reference).array.astype(bool)] = label
        else:
            v = seg.get_volume(
                segment_numbers=sorted(mapping),
                combine_segments=True,
                relabel=False,
                skip_overlap_checks=True,
            )
            numbers = np.asarray(v.array)
            lut = np.zeros(max(int(numbers.max()), max(mapping)) + 1, np.uint8)
            for number, label in mapping.items():
                lut[number] = label
            src = Volume(lut[numbers], lps_to_ras(v.affine), "labels", path)
            out = resample_nearest(src, reference).array.astype(np.uint8)
    except InputError:
        raise
    except Exception as err:  # highdicom: frames that do not form one regular volume
        raise InputError(
            path, f"SEG frames do not form one regular volume ({short_reason(err)})"
        ) from err
    if not out.any():
        raise InputError(path, "SEG has no vertebra voxel inside the CT")
    if notes is not None:
        notes.extend(own_notes)
    return Volume(out, reference.affine, "labels", path)
