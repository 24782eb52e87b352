"""The alignment of a spine from its endplate normals: :func:`alignment_from_endplates`, which
checks its input, finds the usable vertebrae and their angles (:mod:`.angles`), the coronal
curves (:mod:`.coronal`) and the sagittal angles (:mod:`.sagittal`), and returns them as one
:class:`~vertgrade.alignment.Alignment`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vertgrade.alignment._common import _ByLabel
from vertgrade.alignment.angles import _segment_angles, _usable_angles, _vertebra_angles
from vertgrade.alignment.config import AlignmentConfig
from vertgrade.alignment.coronal import _coronal_curves
from vertgrade.alignment.result import Alignment
from vertgrade.alignment.sagittal import _kyphosis, _lordosis
from vertgrade.levels import anatomical_order, level_name

__all__ = ["alignment_from_endplates"]


def alignment_from_endplates(
    labels: Sequence[int],
    *,
    superior: Sequence[ArrayLike | None],
    inferior: Sequence[ArrayLike | None],
    centroids_mm: Sequence[ArrayLike] | NDArray[np.float64],
    excluded: Mapping[int, str] | None = None,
    subject: str = "study",
    config: AlignmentConfig | None = None,
) -> Alignment:
    """Alignment from endplate normals: the computation behind
    :func:`vertgrade.pipeline.measure_alignment`.

    Parameters
    ----------
    labels : sequence of int
        VerSe labels of the vertebrae, any order (they are sorted cranial to caudal); no repeats.
    superior, inferior : sequence of (3,) array-like or None
        Each vertebra's endplate normals in world RAS+ (pointing to the head), ``None`` where the
        plane was not fitted.
    centroids_mm : (N, 3) array-like
        Body centres in world RAS+ mm (for the apex).
    excluded : mapping of int to str, optional
        Vertebrae not to use, with the reason (e.g. cut by the field of view).
    subject : str
    config : AlignmentConfig, optional

    Returns
    -------
    Alignment
    """
    cfg = config or AlignmentConfig()
    excluded = dict(excluded or {})
    n = len(labels)
    if not (len(superior) == len(inferior) == len(centroids_mm) == n):
        raise ValueError(
            f"labels, superior, inferior and centroids_mm differ in length: {n}, "
            f"{len(superior)}, {len(inferior)}, {len(centroids_mm)}"
        )
    if len(set(labels)) != n:
        raise ValueError(f"labels repeat: {list(labels)}")
    by_label: _ByLabel = {
        int(lab): (s, i, np.asarray(c, dtype=float))
        for lab, s, i, c in zip(labels, superior, inferior, centroids_mm, strict=True)
    }
    order = anatomical_order(list(by_label))

    angles, reasons = _usable_angles(order, by_label, excluded, cfg)
    vertebrae = _vertebra_angles(order, angles, reasons)
    segments = _segment_angles(order, angles, reasons)

    notes = tuple(f"{level_name(lab)} not used: {reasons[lab]}" for lab in order if lab in reasons)
    usable = [lab for lab in order if lab in angles]
    curves, coronal_reason, largest = _coronal_curves(usable, angles, by_label, cfg)
    return Alignment(
        subject=subject,
        vertebrae=vertebrae,
        segments=segments,
        curves=curves,
        coronal_reason=coronal_reason,
        largest_coronal_deg=largest,
        kyphosis=_kyphosis(order, usable, angles, reasons),
        lordosis=_lordosis(order, usable, angles, reasons),
        notes=notes,
        config=cfg,
    )
