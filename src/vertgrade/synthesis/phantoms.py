"""Phantom cohorts for training and checking the synthesis without real data.

Each subject is a :func:`vertgrade.phantom.make_phantom` spine with its own size, curvature,
per-vertebra height variation, bone density and noise (drawn from a seeded generator), graded by
its known truth. Healthy cohorts train the generator; cohorts with fractures, of subjects it has
not seen, test it: their true pre-fracture heights are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import Phantom, make_phantom
from vertgrade.study import Study
from vertgrade.synthesis.crops import StraightenedSpine
from vertgrade.synthesis.data import spine_from_study

__all__ = ["PhantomSubject", "phantom_spines", "phantom_subject"]


@dataclass(frozen=True, eq=False)
class PhantomSubject:
    """A phantom, its study and the straightened spine (grades from the truth)."""

    phantom: Phantom
    study: Study
    spine: StraightenedSpine


def phantom_subject(
    index: int,
    *,
    levels: str = "T10-L2",
    fractures: Sequence[str] = (),
    spacing_mm: float = 2.0,
    orientation: str = "RAS",
    fov_mm: float = 110.0,
    spine_step_mm: float | None = None,
    spine_half_width_mm: float = 36.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    seed: int = 0,
) -> PhantomSubject:
    """Subject number ``index`` of a cohort drawn with ``seed``.

    Size (scale uniform in ``scale_range``, default 0.9-1.1), kyphosis (30-50 deg), lordosis
    (35-55 deg), per-vertebra height jitter (2 %), trabecular density (140-220 HU) and noise seed
    vary between subjects.
    """
    rng = np.random.default_rng([seed, index])
    ph = make_phantom(
        levels,
        list(fractures),
        orientation=orientation,
        spacing=spacing_mm,
        fov_mm=(fov_mm, fov_mm),
        seed=int(rng.integers(0, 2**31 - 1)),
        scale=float(rng.uniform(*scale_range)),
        jitter=0.02,
        trabecular_hu=float(rng.uniform(140.0, 220.0)),
        kyphosis_deg=float(rng.uniform(30.0, 50.0)),
        lordosis_deg=float(rng.uniform(35.0, 55.0)),
    )
    subject = f"phantom-{seed}-{index:03d}"
    study = study_from_arrays(ph.labels, ph.affine, ct=ph.ct, subject=subject)
    grades = {t.label: t.grade for t in ph.truth}
    spine = spine_from_study(
        study,
        grades=grades,
        step_mm=spine_step_mm if spine_step_mm is not None else spacing_mm,
        half_width_mm=spine_half_width_mm,
    )
    return PhantomSubject(ph, study, spine)


def phantom_spines(
    n: int, *, seed: int = 0, first: int = 0, **kwargs: Any
) -> list[StraightenedSpine]:
    """Straightened spines of subjects ``first .. first + n - 1`` (see :func:`phantom_subject`)."""
    return [phantom_subject(i, seed=seed, **kwargs).spine for i in range(first, first + n)]
