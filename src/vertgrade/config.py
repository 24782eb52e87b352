"""Every parameter of the method, named once, with its meaning and, where it has one, its source.

:class:`GradingConfig` gathers them; it is a frozen value that travels with each run into the
result's provenance (``result.json`` -> ``provenance.parameters``), so a result says which
parameters made it. A user changes them from a TOML or JSON parameters file
(``vertgrade grade --params FILE``, read by :func:`config_from_dict` after :func:`read_params`);
``vertgrade params`` prints the defaults in that format.

Fixed definitions that a measured and a reference height must share (the robust mean's outlier
bound, the fewest columns of a regional height) are named constants of
:mod:`vertgrade.morphometry`, not parameters; the figures' colours and windows are in
:mod:`vertgrade.report.style`.

Examples
--------
>>> cfg = GradingConfig()
>>> cfg.thresholds
(0.2, 0.25, 0.4)
>>> config_from_dict({"thresholds": [0.2, 0.3, 0.4], "neighbours": {"max_level_gap": 3}}).thresholds
(0.2, 0.3, 0.4)
>>> config_from_dict({"threshold": 0.2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown parameter 'threshold' (known: ...)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vertgrade.errors import InputError

__all__ = [
    "CENTRAL_RADIUS_MM",
    "CRUSH_POSTERIOR_SHARE",
    "FRAGMENT_FRACTION",
    "GENANT_THRESHOLDS",
    "LABEL_MARGIN_MM",
    "BodyParams",
    "GradingConfig",
    "MorphometryParams",
    "NeighbourParams",
    "ThirdsParams",
    "config_from_dict",
    "config_to_toml",
    "read_params",
]

#: Lower bounds of Genant grades 1, 2 and 3 on the relative height loss (Genant HK, Wu CY,
#: van Kuijk C, Nevitt MC. Vertebral fracture assessment using a semiquantitative technique.
#: J Bone Miner Res 1993;8:1137-48: 20-25 % mild, 25-40 % moderate, > 40 % severe).
GENANT_THRESHOLDS: tuple[float, float, float] = (0.20, 0.25, 0.40)

#: A fracture is a crush when its posterior third lost at least this share of the largest
#: regional loss: the posterior wall went down with the rest of the body.
CRUSH_POSTERIOR_SHARE = 0.8

#: Radius (mm) of the small band of columns over which the central (deepest) height loss is
#: averaged: the quantitative-morphometry middle height is read where a biconcave depression is
#: deepest, but from a few millimetres of columns, not from one voxel line.
CENTRAL_RADIUS_MM = 3.0

#: Each label is cropped this far (mm) beyond its box; pieces within it of the largest are kept.
LABEL_MARGIN_MM = 6.0

#: A separate piece holding at least this fraction of a label's largest piece is a fragment.
FRAGMENT_FRACTION = 0.05


@dataclass(frozen=True)
class ThirdsParams:
    """How a body's axial footprint is cut into thirds (:mod:`vertgrade.geometry.thirds`).

    Attributes
    ----------
    rim_mm : float
        The footprint is eroded by this much, so that the rounded rim of the endplates does not
        pull the heights down.
    central_fraction : float
        The thirds are cut in the central band of this fraction of the left-right extent, where
        the endplates are least curved (2/5, as in HealthiVert-GAN).
    """

    rim_mm: float = 2.0
    central_fraction: float = 0.4


@dataclass(frozen=True)
class BodyParams:
    """How a vertebral body is cut out of its vertebra label (:mod:`vertgrade.geometry.body`).

    Attributes
    ----------
    projection_step_mm : float
        Grid step of the vertebra's axial projection, in which the canal is found.
    min_canal_area_mm2 : float
        Smallest plausible canal cross-section (the adult lumbar canal is about 150-250 mm2,
        the cervical about 150 mm2); smaller holes are label noise.
    canal_centre_tolerance : float
        An open arch's concavity counts as the canal when its centre lies within this fraction
        of the vertebra's width from the left-right centre.
    max_wall_slope : float
        Largest slope (mm per mm) of the posterior-wall line across the canal.
    opening_mm : float
        Radius of the opening that detaches the pedicles from the body footprint.
    fallback_opening_divisor : float
        Without a canal, the footprint is what survives an opening of radius vertebra width /
        this (1/6 of the width).
    major_part_fraction : float
        Parts of the footprint holding at least this fraction of the largest are kept (a body
        split by a sagittal cleft stays whole).
    canal_not_found_kept_fraction : float
        Without a canal, QC flag ``canal_not_found`` when less than this fraction of the
        projection was kept as body (a label of the body alone keeps about all of it).
    """

    projection_step_mm: float = 1.0
    min_canal_area_mm2: float = 20.0
    canal_centre_tolerance: float = 0.2
    max_wall_slope: float = 0.5
    opening_mm: float = 1.5
    fallback_opening_divisor: float = 6.0
    major_part_fraction: float = 0.25
    canal_not_found_kept_fraction: float = 0.9


@dataclass(frozen=True)
class MorphometryParams:
    """Sampling and CT refinement of the height maps (:mod:`vertgrade.morphometry`).

    Attributes
    ----------
    step_ap_lr_mm, step_si_mm : float
        Sampling steps of the footprint grid and along each column.
    mask_smoothing_mm : float
        Gaussian smoothing of the binary mask before it is interpolated (at most one voxel per
        axis): turns the voxel staircase of a surface oblique to the grid into a sub-voxel
        surface, without shrinking the body along coarse axes.
    ct_search_in_mm, ct_search_out_mm : float
        CT edge search window: this far into the mask and this far out of it. Endplate
        depressions that segmentations smooth over are a few mm deep.
    ct_min_gradient_hu_per_mm : float
        Minimum steepness of a cortical edge at 1 mm voxels; flatter profiles are not trusted.
        Divided by the voxel size along the spine where that is above 1 mm (thick slices spread
        the same edge over more millimetres).
    min_column_fraction : float
        Columns shorter than this fraction of the body's median column height are left out of
        the thirds (edge slivers); a collapsed column of a severe fracture keeps more than this.
    regions : ThirdsParams
        How the footprint is cut into thirds.
    """

    step_ap_lr_mm: float = 1.0
    step_si_mm: float = 0.5
    mask_smoothing_mm: float = 1.0
    ct_search_in_mm: float = 5.0
    ct_search_out_mm: float = 2.5
    ct_min_gradient_hu_per_mm: float = 80.0
    min_column_fraction: float = 0.25
    regions: ThirdsParams = field(default_factory=ThirdsParams)


@dataclass(frozen=True)
class NeighbourParams:
    """The training-free reference from healthy neighbours (:mod:`vertgrade.reference.neighbours`).

    Attributes
    ----------
    max_level_gap : float
        Farthest neighbour used, in levels.
    healthy_loss : float
        A vertebra whose largest regional loss against its own reference is at or above this is
        not used as a neighbour (0.15: below Genant grade 1's 20 %, above normal variation). The
        same bound marks the vertebrae that do not anchor the second-pass frames.
    shape_tolerance : float
        Initial screen: departure of min(anterior, middle) / posterior from the level's typical
        ratio beyond which a vertebra starts as not healthy.
    initial_screen : float
        Initial screen: a vertebra any of whose thirds is this much smaller (relative to its
        level) than the study's 75th percentile starts as not healthy.
    base_uncertainty : float
        Relative uncertainty of a two-sided reference from adjacent vertebrae (natural variation
        of healthy heights between adjacent levels, about 3-4 %); it grows with the distance to
        the neighbours used, and one-sided references get 1.5 times it.
    max_iterations : int
        Rounds of the healthy-set iteration.
    """

    max_level_gap: float = 5.0
    healthy_loss: float = 0.15
    shape_tolerance: float = 0.15
    initial_screen: float = 0.12
    base_uncertainty: float = 0.035
    max_iterations: int = 8


@dataclass(frozen=True)
class GradingConfig:
    """All parameters of a grading run; recorded in every result's provenance.

    Attributes
    ----------
    morphometry : MorphometryParams
        Sampling steps, CT edge search, thirds.
    neighbours : NeighbourParams
        The default, training-free reference (also the screen that decides which vertebrae
        anchor the second-pass frames, whichever reference grades).
    thresholds : (3,) float
        Lower RHLV bounds of Genant grades 1, 2, 3 (:data:`GENANT_THRESHOLDS`).
    prefer_ct : bool
        Grade on CT-refined heights where a CT is given and its edges were found.
    hu_core_erosion_mm : float
        Trabecular core = body voxels at least this far from the body's surface (cortex and
        endplates are ~1 mm thick; 5 mm keeps clear of them and of partial volume).
    disagreement_mm, disagreement_fraction : float
        Mask and CT heights disagree (QC flag ``mask_ct_disagree``) when a regional height
        differs by more than both.
    measurement_uncertainty_mm : float
        Standard uncertainty of one regional height, for the confidence.
    refine_frames : bool
        Second pass: each sound body measured again perpendicular to its own endplates, each
        deformed one along the axis interpolated from its sound neighbours.
    max_end_axis_deviation_deg : float
        The first and last vertebra of the labelled spine are measured perpendicular to their
        own endplates (the bisector of the two endplate planes, iterated from the centreline's
        end tangent, which extrapolates there and can be tens of degrees off at a tilted L5)
        when that axis lies within this angle of the tangent; farther, the tangent is kept and
        the vertebra flagged ``axis_from_centreline``.
    end_axis_iterations : int
        Measurements at most for an end vertebra's own axis to settle (each re-measures the
        spine; an axis that moves by under 1 degree has settled).
    max_neighbour_axis_deg : float
        QC flag ``axis_deviates`` where a vertebra's measurement axis departs from the mean of
        its neighbours' by more than this (the segmental angle of a normal lumbosacral junction
        reaches about 15-20 degrees).
    ct_margin_mm : float
        The CT crop around each vertebra reaches this far beyond its label (room for the edge
        search and the smoothing).
    max_axis_deviation_deg : float
        A body's own endplate axis is used only within this angle of the spine's direction; a
        bisector farther off is a measurement problem, not anatomy.
    min_ct_valid_fraction : float
        CT-refined heights are used when edges were found in at least this fraction of the
        footprint's columns (else QC flag ``ct_edges_sparse``).
    implausible_relative : (2,) float
        Bounds of a body's posterior height relative to its level's normative height, after
        scaling to this spine (QC flag ``implausible_size``): the posterior wall survives most
        fractures, so beyond these bounds it is a label problem.
    implausible_scale : (2,) float
        Bounds of the spine's own scale (median of those ratios); outside, every vertebra is
        implausible (a units or labelling problem).
    max_depth_ratio : float
        QC flag ``body_too_deep`` (not gradable) where a body is this many times deeper
        (antero-posterior extent) than the mean of its measured neighbours: the isolation then
        kept posterior elements with the body (a real body is not half as deep again as the next).
    max_dropped_fraction : float
        A label that lost more than this fraction of its voxels to far stray pieces is flagged
        ``label_fragments``.
    hu_core_fallback_fraction : float
        Where the eroded core is too small, the erosion is retried at this fraction of
        ``hu_core_erosion_mm``.
    hu_core_min_voxels : int
        Fewest core voxels for a trabecular HU.
    crush_posterior_share : float
        A fracture is a crush when its posterior third lost at least this share of the largest
        regional loss (the whole body collapsed).
    body : BodyParams
        How each body is cut out of its vertebra label.
    centreline_smoothing_mm : float
        Smoothing of the spline through the vertebra centres (the residual it may leave at each
        centre), for the frames and the centreline.
    cut_min_contact : float
        A body is cut by the field of view where one of its faces lies on the image's border:
        where its section on that border is at least this share of its section 3 mm inside
        (:func:`vertgrade.qc.border_contacts`; a flat cut face gives about 1). A body that only
        touches the border of an image cropped to the spine meets it with the tip of its
        rounded surface (a few per cent on the real cases); it is graded, with the QC flag
        ``touches_fov_edge``.
    central_radius_mm : float
        The central height loss (the deepest point of the middle third, where a biconcave
        depression is deepest, as quantitative morphometry reads the middle height) is the mean
        loss over the columns within this radius of that point.
    shape_evidence : bool
        Grade from the vertebra's own shape as well as from its neighbours: the anterior and
        middle thirds' heights relative to its posterior third, against the level's typical
        ratios (:func:`vertgrade.grading.shape_evidence`); the larger loss of the two kinds
        grades.
    atypical_spine_shape : float
        QC flag ``atypical_spine_shape`` on every vertebra where the median within-vertebra
        shape loss of a spine's (at least three) measured vertebrae is at least this: the
        vertebrae all depart alike from their levels' typical shape, and a reference from
        neighbours that look alike may rest on deformed ones.
    wall_band_mm : float
        Depth of the column bands at the anterior and posterior walls over which the standard
        morphometric wall heights are read (:func:`vertgrade.morphometry.wall_heights`).
    coarse_axis_voxel_mm : float
        QC flag ``coarse_slices`` where the image's voxel extent along a vertebra's axis
        exceeds this (heights less precise: a 25 mm body loses 20 % in 5 mm).
    max_axis_voxel_mm : float
        Not gradable (QC flag ``too_coarse``) beyond this voxel extent along the axis: with
        10 mm slices a grade-2 L1 reads as normal and a healthy L2 as grade 2.
    min_label_contrast_hu : float
        QC flag ``labels_off_bone`` on every vertebra where the labels' surfaces do not lie on
        the bone's: the median HU of the voxel layer just inside each label less that of the
        layer just outside, the median over the study's vertebrae, is below this. On the real
        cases correct labels give 223-337 HU; the same labels flipped along any axis or shifted
        by 4-12 mm against the CT 5-117 HU. A flag, not a refusal: the cortex of a severely
        osteoporotic spine is thinner.
    max_centre_offset_mm : float
        An interior vertebra whose centre lies farther than this from the centreline through
        the others is left out of the centreline fit (QC flag ``centre_off_curve``); on the real
        cases interior centres lie within about 5 mm of it.
    max_split_fraction : float
        Not gradable (QC flag ``label_split``) where pieces far from a label's largest piece
        hold at least this fraction of it: half a body is not a fractured body.
    max_split_gap_mm : float
        Not gradable (``label_split``) either where a kept piece of at least a quarter of the
        largest lies more than this far from it (box to box): the pieces of a fractured body
        touch or nearly; a label split between two places does not.
    min_label_ml : float
        A label smaller than this (mL) is not gradable (QC flag ``label_too_small``) and stays
        out of the centreline fit: a vertebra's label is several mL at any level (a cervical
        one about 5 mL), so a smaller one is a stray piece or a wrong label.
    label_margin_mm : float
        Each label is cropped this far beyond its box; pieces of it within this distance of its
        largest piece are kept (a fracture can split a body), farther ones dropped as strays.
    fragment_fraction : float
        A separate piece holding at least this fraction of a label's largest piece counts as a
        fragment (QC flag ``label_fragments``).
    """

    morphometry: MorphometryParams = field(default_factory=MorphometryParams)
    neighbours: NeighbourParams = field(default_factory=NeighbourParams)
    thresholds: tuple[float, float, float] = GENANT_THRESHOLDS
    prefer_ct: bool = True
    hu_core_erosion_mm: float = 5.0
    disagreement_mm: float = 2.0
    disagreement_fraction: float = 0.10
    measurement_uncertainty_mm: float = 0.5
    refine_frames: bool = True
    ct_margin_mm: float = 12.0
    max_end_axis_deviation_deg: float = 35.0
    end_axis_iterations: int = 2
    max_neighbour_axis_deg: float = 25.0
    max_axis_deviation_deg: float = 15.0
    min_ct_valid_fraction: float = 0.5
    implausible_relative: tuple[float, float] = (0.45, 1.6)
    implausible_scale: tuple[float, float] = (0.35, 2.5)
    max_depth_ratio: float = 1.5
    max_dropped_fraction: float = 0.01
    hu_core_fallback_fraction: float = 0.6
    hu_core_min_voxels: int = 20
    crush_posterior_share: float = CRUSH_POSTERIOR_SHARE
    body: BodyParams = field(default_factory=BodyParams)
    cut_min_contact: float = 0.7
    central_radius_mm: float = CENTRAL_RADIUS_MM
    shape_evidence: bool = True
    atypical_spine_shape: float = 0.10
    wall_band_mm: float = 3.0
    min_label_ml: float = 0.5
    max_centre_offset_mm: float = 15.0
    max_split_fraction: float = 0.2
    max_split_gap_mm: float = 5.0
    coarse_axis_voxel_mm: float = 3.0
    max_axis_voxel_mm: float = 5.0
    min_label_contrast_hu: float = 120.0
    centreline_smoothing_mm: float = 1.5
    label_margin_mm: float = LABEL_MARGIN_MM
    fragment_fraction: float = FRAGMENT_FRACTION

    def __post_init__(self) -> None:
        t = self.thresholds
        if len(t) != 3 or not (0.0 < t[0] < t[1] < t[2] < 1.0):
            raise ValueError(f"thresholds must be three increasing fractions in (0, 1), got {t}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, nested as the dataclasses are (the provenance's ``parameters``)."""
        return asdict(self)


def config_from_dict(values: dict[str, Any], base: GradingConfig | None = None) -> GradingConfig:
    """A :class:`GradingConfig` with ``values`` replacing those of ``base`` (default: defaults).

    ``values`` is nested as :meth:`GradingConfig.to_dict` is; a sub-table may give only some of
    its keys. Unknown keys and values of the wrong type are a ``ValueError`` naming the key.
    """
    return _replace(base or GradingConfig(), values, "")


def _replace(obj: Any, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"parameter {prefix.rstrip('.') or 'file'!r} must be a table")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown parameter {name!r} (known: {', '.join(sorted(fields))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _replace(current, value, f"{name}.")
        else:
            changes[key] = _coerce(value, hints[key], name)
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as err:
        raise ValueError(f"{prefix.rstrip('.') or 'parameters'}: {err}") from err


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in pairs)
    elif origin in (typing.Union, types.UnionType):
        raise TypeError(f"{name}: union parameters are not supported")  # pragma: no cover
    kind = getattr(hint, "__name__", str(hint))
    if origin is tuple:
        kind = f"a list of {len(typing.get_args(hint))} numbers"
    raise ValueError(f"parameter {name!r} must be {kind}, got {value!r}")


def read_params(path: str | Path) -> dict[str, Any]:
    """The parameters table of a TOML (``.toml``) or JSON (``.json``) file.

    Raises
    ------
    InputError
        Missing file, unknown suffix, or a file that does not parse; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "parameters file not found")
    suffix = p.suffix.lower()
    text = p.read_text("utf-8")
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise InputError(p, "parameters file must be .toml or .json")
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(p, f"not a valid {suffix[1:].upper()} file: {err}") from err
    if not isinstance(data, dict):
        raise InputError(p, "parameters file must hold a table of parameters")
    return data


def config_to_toml(config: GradingConfig | None = None) -> str:
    """``config`` (default: the defaults) as a TOML parameters file, every key commented by the
    first line of its documentation.

    >>> text = config_to_toml()
    >>> config_from_dict(__import__("tomllib").loads(text)) == GradingConfig()
    True
    """
    cfg = config or GradingConfig()
    lines = ["# vertgrade grading parameters (vertgrade grade --params FILE)", ""]
    lines += _toml_table(cfg, "")
    return "\n".join(lines).rstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _toml_table(obj: Any, prefix: str) -> list[str]:
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    docs = _attribute_docs(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f.name, value))
            continue
        doc = docs.get(f.name)
        if doc:
            lines.append(f"# {doc}")
        lines.append(f"{f.name} = {_toml_value(value)}")
    for name, value in nested:
        lines += ["", f"[{prefix}{name}]"]
        lines += _toml_table(value, f"{prefix}{name}.")
    return lines


def _attribute_docs(cls: type) -> dict[str, str]:
    """First line of each attribute's entry in a numpydoc ``Attributes`` section."""
    out: dict[str, str] = {}
    doc = (cls.__doc__ or "").splitlines()
    names: list[str] = []
    for raw in doc:
        line = raw.strip()
        if " : " in line and not raw.startswith("        "):
            names = [n.strip() for n in line.split(" : ")[0].split(",")]
        elif names and line:
            for n in names:
                out.setdefault(n, line)
            names = []
    return out
