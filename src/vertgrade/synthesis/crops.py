"""The straightened spine: CT and bodies resampled in millimetres along the smooth centreline.

Every row of the straightened volume is a plane cross-section of the spine: row ``r`` lies at arc
length ``t_r`` (mm, growing cranial -> caudal) along the centreline through the vertebrae's frame
origins (:class:`vertgrade.result.VertebraResult` ``frame``), and its in-plane axes are ``ap``
and ``lr`` of a frame interpolated between the vertebrae's own frames (spherical linear
interpolation of their rotations, constant beyond the first and last). At a vertebra's arc
position the row plane is exactly that vertebra's frame: its origin, its ``ap`` and ``lr`` axes,
perpendicular to its ``si`` axis. Between vertebrae the centreline is the cubic smoothing spline
of :func:`vertgrade.geometry.frames.fit_spine_curve`, shifted by the linearly interpolated
offset that makes it pass exactly through every origin.

Voxel ``(r, a, l)`` is the world point ``origin(t_r) + ap_mm[a] * ap(t_r) + lr_mm[l] * lr(t_r)``
(:meth:`StraightenedSpine.to_world`); :meth:`StraightenedSpine.from_world` inverts it (the row
whose plane contains the point, then the in-plane coordinates), so anything drawn in the
straightened volume maps back onto the CT grid exactly (:meth:`StraightenedSpine.to_grid`).

Each row is sampled with :func:`vertgrade.geometry.sampling.sample` on a one-row
:class:`~vertgrade.geometry.sampling.LocalGrid` in its own frame: the CT linearly, windowed as in
HealthiVert-GAN ([-300, 800] HU -> [0, 1], stored as uint8); each body mask smoothed by at most
one voxel (as the morphometry does) and linearly, so that endplates stay sub-voxel. Storage is
uint8: a T1-L5 spine at 1 mm with 128 x 128 mm cross-sections is about 30 MB, 8 MB compressed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial.transform import Rotation, Slerp

from vertgrade.errors import InputError
from vertgrade.geometry.frames import LocalFrame, fit_spine_curve
from vertgrade.geometry.sampling import LocalGrid, sample
from vertgrade.grading import LossMap, loss_map
from vertgrade.io.files import atomic_path
from vertgrade.levels import anatomical_order
from vertgrade.morphometry import height_map_from_profiles
from vertgrade.qc import QCFlag
from vertgrade.reference.base import MeasuredVertebra, ReferenceContext
from vertgrade.result import SpineResult
from vertgrade.study import Study, find_objects

__all__ = [
    "SPINE_FORMAT",
    "SpineGeometry",
    "StraightenedSpine",
    "VertebraExtent",
    "straighten_spine",
]

#: Version of the stored straightened-spine format.
SPINE_FORMAT = 1
#: Rows beyond the first and last vertebra's centre (mm): a 128 mm sample centred on an end
#: vertebra still lies inside the volume.
_END_MARGIN_MM = 72.0
#: Rows (mm) about a vertebra's centre searched for its body.
_BODY_WINDOW_MM = 45.0


@dataclass(frozen=True)
class VertebraExtent:
    """Where one vertebral body lies in the straightened volume (mm).

    ``t_top_mm`` / ``t_bottom_mm`` are its cranial and caudal extremes (0.5 crossings of the
    smoothed mask, over all columns); ``t_centre_mm`` is its frame origin's arc position;
    ``ap_range_mm`` and ``lr_range_mm`` bound its footprint; ``usable`` is False for bodies cut
    by the field of view or not measured, which are never targets.
    """

    label: int
    t_centre_mm: float
    t_top_mm: float
    t_bottom_mm: float
    ap_range_mm: tuple[float, float]
    lr_range_mm: tuple[float, float]
    grade: int | None = None
    usable: bool = True

    @property
    def height_mm(self) -> float:
        return self.t_bottom_mm - self.t_top_mm

    @property
    def t_mid_mm(self) -> float:
        return 0.5 * (self.t_top_mm + self.t_bottom_mm)


@dataclass(frozen=True, eq=False)
class StraightenedSpine:
    """A straightened spine and its exact transform to world coordinates.

    Attributes
    ----------
    subject : str
    t_mm : (R,) float64
        Arc length of each row (mm, cranial -> caudal, evenly spaced by ``step_mm``).
    ap_mm, lr_mm : (A,), (L,) float64
        In-plane coordinates (mm) of the columns.
    origins : (R, 3) float64
        World (RAS+ mm) origin of each row.
    axes : (R, 3, 3) float64
        Each row's world unit axes as rows ``si, ap, lr``.
    ct : (R, A, L) uint8
        CT windowed to ``window_hu`` and scaled to 0..255.
    body : (R, A, L) uint8
        Smoothed body masks (0..255 = 0..1), all vertebrae.
    owner : (R, A, L) uint8
        Label of the body each voxel's mask belongs to (0: none).
    prior : (R, A, L) uint8
        HGAM attention prior, 0..255 = 0..1: one minus the core's height loss of the column
        (clipped to [0, 1]) in each body, 1 elsewhere.
    vertebrae : dict of int to VertebraExtent
    window_hu : (2,) float
    """

    subject: str
    step_mm: float
    t_mm: NDArray[np.float64]
    ap_mm: NDArray[np.float64]
    lr_mm: NDArray[np.float64]
    origins: NDArray[np.float64]
    axes: NDArray[np.float64]
    ct: NDArray[np.uint8]
    body: NDArray[np.uint8]
    owner: NDArray[np.uint8]
    prior: NDArray[np.uint8]
    vertebrae: dict[int, VertebraExtent] = field(default_factory=dict)
    window_hu: tuple[float, float] = (-300.0, 800.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.t_mm.size, self.ap_mm.size, self.lr_mm.size)

    def order(self) -> list[int]:
        """Labels cranial -> caudal."""
        return sorted(self.vertebrae, key=lambda k: self.vertebrae[k].t_centre_mm)

    def neighbours(self, label: int) -> tuple[int | None, int | None]:
        """The vertebrae above and below ``label`` in this spine (None at the ends)."""
        order = self.order()
        i = order.index(label)
        return (order[i - 1] if i > 0 else None, order[i + 1] if i + 1 < len(order) else None)

    # --- transform ------------------------------------------------------------------------
    def _row_frames(
        self, t: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Origins (N, 3) and axes (N, 3, 3) at arc lengths ``t`` (linear between rows;
        beyond the ends, straight on along the end row's ``si``)."""
        tt = np.asarray(t, dtype=float)
        f = (tt - self.t_mm[0]) / self.step_mm
        fc = np.clip(f, 0.0, self.t_mm.size - 1.0)
        i0 = np.minimum(np.floor(fc).astype(int), self.t_mm.size - 2)
        w = (fc - i0)[:, None]
        o = self.origins[i0] * (1 - w) + self.origins[i0 + 1] * w
        ax = self.axes[i0] * (1 - w[:, :, None]) + self.axes[i0 + 1] * w[:, :, None]
        ax = ax / np.linalg.norm(ax, axis=2, keepdims=True)
        extra = (f - fc) * self.step_mm  # t grows caudally, si points cranially
        return o - extra[:, None] * ax[:, 0], ax

    def to_world(
        self, t_mm: NDArray[np.floating], ap_mm: NDArray[np.floating], lr_mm: NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """(N,) straightened coordinates (mm) -> (N, 3) world RAS+ mm."""
        t = np.asarray(t_mm, dtype=float).ravel()
        o, ax = self._row_frames(t)
        a = np.asarray(ap_mm, dtype=float).ravel()[:, None]
        b = np.asarray(lr_mm, dtype=float).ravel()[:, None]
        return o + a * ax[:, 1] + b * ax[:, 2]

    def from_world(
        self, points: NDArray[np.floating], *, rows: slice | None = None
    ) -> NDArray[np.float64]:
        """(N, 3) world mm -> (N, 3) straightened ``(t, ap, lr)`` mm.

        The row is the one whose plane holds the point: the signed distance
        ``(p - origin_r) . si_r`` grows by about one step per row, so its zero crossing is found
        between rows and refined by linear interpolation. Points off every plane of ``rows``
        (default: all) get NaN.
        """
        p = np.asarray(points, dtype=float).reshape(-1, 3)
        sl = rows if rows is not None else slice(0, self.t_mm.size)
        o, si = self.origins[sl], self.axes[sl, 0]
        tt = self.t_mm[sl]
        out = np.full((len(p), 3), np.nan)
        chunk = max(1, 2_000_000 // max(1, len(tt)))
        for start in range(0, len(p), chunk):
            q = p[start : start + chunk]
            d = q @ si.T - np.einsum("rk,rk->r", o, si)[None, :]  # (n, R): grows with r
            # first row where the distance becomes >= 0
            ge = d >= 0
            k = np.argmax(ge, axis=1)
            ok = ge.any(axis=1) & (k > 0)
            k = np.clip(k, 1, len(tt) - 1)
            d0 = np.take_along_axis(d, (k - 1)[:, None], axis=1)[:, 0]
            d1 = np.take_along_axis(d, k[:, None], axis=1)[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(d1 > d0, -d0 / (d1 - d0), 0.0)
            t = tt[k - 1] + frac * (tt[k] - tt[k - 1])
            oo, ax = self._row_frames(t)
            rel = q - oo
            res = np.stack(
                [t, np.einsum("nk,nk->n", rel, ax[:, 1]), np.einsum("nk,nk->n", rel, ax[:, 2])], 1
            )
            res[~ok] = np.nan
            out[start : start + chunk] = res
        return out

    def to_grid(
        self,
        values: NDArray[np.floating],
        t_mm: NDArray[np.float64],
        ap_mm: NDArray[np.float64],
        lr_mm: NDArray[np.float64],
        shape: tuple[int, int, int],
        affine: NDArray[np.float64],
        *,
        order: int = 1,
    ) -> NDArray[np.float32]:
        """Resample a volume given on a straightened sub-grid onto a voxel grid (0 outside).

        Parameters
        ----------
        values : (T, A', L') ndarray
            Values at straightened coordinates ``t_mm`` x ``ap_mm`` x ``lr_mm`` (each evenly
            spaced and increasing).
        shape, affine
            The target voxel grid (e.g. the canonical grid of a study).
        order : int
            0 nearest, 1 linear.

        Returns
        -------
        shape float32 ndarray
        """
        corners = np.array(
            [[t, a, b] for t in t_mm[[0, -1]] for a in ap_mm[[0, -1]] for b in lr_mm[[0, -1]]]
        )
        world = self.to_world(corners[:, 0], corners[:, 1], corners[:, 2])
        inv = np.linalg.inv(affine)
        ijk = world @ inv[:3, :3].T + inv[:3, 3]
        lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 2, np.array(shape))
        out = np.zeros(shape, np.float32)
        if np.any(hi <= lo):
            return out
        grid = np.stack(
            np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"),
            axis=-1,
        ).reshape(-1, 3)
        pts = grid @ affine[:3, :3].T + affine[:3, 3]
        r0 = int(np.clip(np.floor((t_mm[0] - self.t_mm[0]) / self.step_mm) - 2, 0, None))
        r1 = int(np.clip(np.ceil((t_mm[-1] - self.t_mm[0]) / self.step_mm) + 3, 0, self.t_mm.size))
        loc = self.from_world(pts, rows=slice(r0, r1))
        idx = np.stack(
            [
                (loc[:, 0] - t_mm[0]) / (t_mm[1] - t_mm[0]),
                (loc[:, 1] - ap_mm[0]) / (ap_mm[1] - ap_mm[0]),
                (loc[:, 2] - lr_mm[0]) / (lr_mm[1] - lr_mm[0]),
            ]
        )
        idx = np.where(np.isfinite(idx), idx, -10.0)
        vals = ndimage.map_coordinates(
            np.asarray(values, np.float32), idx, order=order, mode="constant", cval=0.0
        )
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = vals.reshape(tuple(hi - lo))
        return out

    # --- storage --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write to ``path`` (``.npz``, compressed), atomically."""

        meta = {
            "format": SPINE_FORMAT,
            "subject": self.subject,
            "step_mm": self.step_mm,
            "window_hu": list(self.window_hu),
            "vertebrae": [
                {
                    "label": v.label,
                    "t_centre_mm": v.t_centre_mm,
                    "t_top_mm": v.t_top_mm,
                    "t_bottom_mm": v.t_bottom_mm,
                    "ap_range_mm": list(v.ap_range_mm),
                    "lr_range_mm": list(v.lr_range_mm),
                    "grade": v.grade,
                    "usable": v.usable,
                }
                for v in self.vertebrae.values()
            ],
        }
        import json

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                t_mm=self.t_mm,
                ap_mm=self.ap_mm,
                lr_mm=self.lr_mm,
                origins=self.origins,
                axes=self.axes,
                ct=self.ct,
                body=self.body,
                owner=self.owner,
                prior=self.prior,
            )

    @classmethod
    def load(cls, path: str | Path) -> StraightenedSpine:
        """Read a file written by :meth:`save`; ``InputError`` naming it if it cannot be used."""
        import json

        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except FileNotFoundError:
            raise InputError(p, "straightened spine file not found") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise InputError(p, f"not a readable straightened spine ({err})") from err
        if meta.get("format") != SPINE_FORMAT:
            raise InputError(
                p,
                f"straightened spine format {meta.get('format')} is not {SPINE_FORMAT}: "
                "rebuild the samples with this version (vertgrade synthesis-data)",
            )
        verts = {
            int(v["label"]): VertebraExtent(
                int(v["label"]),
                float(v["t_centre_mm"]),
                float(v["t_top_mm"]),
                float(v["t_bottom_mm"]),
                (float(v["ap_range_mm"][0]), float(v["ap_range_mm"][1])),
                (float(v["lr_range_mm"][0]), float(v["lr_range_mm"][1])),
                None if v["grade"] is None else int(v["grade"]),
                bool(v["usable"]),
            )
            for v in meta["vertebrae"]
        }
        try:
            return cls(
                subject=str(meta["subject"]),
                step_mm=float(meta["step_mm"]),
                vertebrae=verts,
                window_hu=(float(meta["window_hu"][0]), float(meta["window_hu"][1])),
                **arrays,
            )
        except TypeError as err:
            raise InputError(p, f"straightened spine file is incomplete ({err})") from err


def _window(ct: NDArray[np.floating], window_hu: tuple[float, float]) -> NDArray[np.uint8]:
    lo, hi = window_hu
    v = np.clip((ct - lo) / (hi - lo), 0.0, 1.0)
    return np.rint(v * 255.0).astype(np.uint8)


def _row_transform(
    frames: dict[int, LocalFrame], order: list[int], step_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], dict[int, float]]:
    """Row arc lengths, origins and axes through the given frames; each label's arc length."""
    origins = np.stack([frames[k].origin for k in order])
    rots = np.stack([frames[k].rotation for k in order])  # rows si, ap, lr
    if len(order) >= 2:
        curve = fit_spine_curve(origins)
        s_nodes = np.asarray(curve.node_s, dtype=float)
    else:
        curve, s_nodes = None, np.zeros(1)
    t0 = float(s_nodes[0]) - _END_MARGIN_MM
    t1 = float(s_nodes[-1]) + _END_MARGIN_MM
    n = int(np.floor((t1 - t0) / step_mm)) + 1
    t = t0 + step_mm * np.arange(n)
    if curve is not None:
        # the curve through the nodes, shifted to pass through each origin exactly
        offsets = origins - curve.point(s_nodes)
        off = np.stack([np.interp(t, s_nodes, offsets[:, k]) for k in range(3)], axis=1)
        pts = curve.point(t) + off
        # (si, ap, lr) is left-handed (lr = ap x si): interpolate the rotation (ap, si, lr)
        swap = [1, 0, 2]
        slerp = Slerp(s_nodes, Rotation.from_matrix(rots[:, swap]))
        r = slerp(np.clip(t, s_nodes[0], s_nodes[-1])).as_matrix()[:, swap]
        # beyond the ends: straight along the end frames' si
        before, after = t < s_nodes[0], t > s_nodes[-1]
        pts[before] = origins[0] + (s_nodes[0] - t[before])[:, None] * rots[0, 0]
        pts[after] = origins[-1] - (t[after] - s_nodes[-1])[:, None] * rots[-1, 0]
    else:
        pts = origins[0] - (t - s_nodes[0])[:, None] * rots[0, 0]
        r = np.repeat(rots[:1], n, axis=0)
    return (
        np.asarray(t, dtype=np.float64),
        np.asarray(pts, dtype=np.float64),
        np.asarray(r, dtype=np.float64),
        dict(zip(order, s_nodes.tolist(), strict=True)),
    )


@dataclass(frozen=True)
class SpineGeometry:
    """What straightening needs of a study's measurement: each vertebra's frame, the isolated
    bodies, which vertebrae are usable, and the height-loss maps against the training-free
    reference (the HGAM prior).

    From a graded result (:meth:`from_result`, for training data) or from the measured
    vertebrae a reference estimator receives (:meth:`from_measurement`); both give the same
    values for the same measurement.
    """

    subject: str
    frames: dict[int, LocalFrame]
    bodies: NDArray[np.integer]
    usable: dict[int, bool]
    loss_maps: dict[int, LossMap]

    @classmethod
    def from_result(cls, result: SpineResult) -> SpineGeometry:
        """From ``grade_study(study)`` (the neighbour reference's loss maps)."""
        bad = {QCFlag.CUT_BY_FOV, QCFlag.IMPLAUSIBLE_SIZE, QCFlag.BODY_TOO_DEEP, QCFlag.NO_BODY}
        return cls(
            subject=result.subject,
            frames={v.label: v.frame for v in result.vertebrae if v.frame is not None},
            bodies=result.bodies,
            usable={
                v.label: v.heights_mm is not None and not bad & set(v.flags)
                for v in result.vertebrae
            },
            loss_maps={v.label: v.loss_map for v in result.vertebrae if v.loss_map is not None},
        )

    @classmethod
    def from_measurement(
        cls, vertebrae: Sequence[MeasuredVertebra], context: ReferenceContext
    ) -> SpineGeometry:
        """From what :func:`vertgrade.grade_study` hands a reference estimator."""
        maps = {}
        for mv in vertebrae:
            ref = context.neighbour_references.get(mv.label)
            if (
                mv.heights is None
                or mv.height_map is None
                or mv.heights_map_mm is None
                or ref is None
                or ref.heights is None
                or ref.height_map_mm is None
            ):
                continue
            maps[mv.label] = loss_map(mv.heights_map_mm, ref.height_map_mm, mv.height_map)
        return cls(
            subject=context.study.subject,
            frames={mv.label: mv.frame for mv in vertebrae if mv.frame is not None},
            bodies=context.bodies,
            usable={mv.label: mv.usable for mv in vertebrae},
            loss_maps=maps,
        )


def straighten_spine(
    study: Study,
    geometry: SpineGeometry,
    *,
    step_mm: float = 1.0,
    half_width_mm: float = 64.0,
    window_hu: tuple[float, float] = (-300.0, 800.0),
    grades: dict[int, int] | None = None,
) -> StraightenedSpine:
    """Straighten a graded study along its centreline.

    Parameters
    ----------
    study : Study
        With a CT (the synthesis works on intensities).
    geometry : SpineGeometry
        Frames, isolated bodies, usable vertebrae and height-loss maps.
    step_mm : float
        Sample spacing along every axis.
    half_width_mm : float
        Cross-sections cover ``+-half_width_mm`` in ``ap`` and ``lr`` about the centreline.
    window_hu : (2,) float
        CT window mapped to [0, 1].
    grades : dict, optional
        Label -> known Genant grade (training data), stored with each vertebra.

    Returns
    -------
    StraightenedSpine
    """
    if study.ct is None:
        raise InputError(
            study.inputs.get("labels"), "the learned synthesis needs a CT, not labels alone"
        )
    frames = geometry.frames
    order = anatomical_order(list(frames))
    if not order:
        raise InputError(study.inputs.get("labels"), "no vertebra with a frame to straighten")
    t, origins, axes, s_of = _row_transform(frames, order, step_mm)
    half = step_mm * np.floor(half_width_mm / step_mm)
    inplane = np.arange(-half, half + 0.5 * step_mm, step_mm)
    affine = study.labels.affine
    shape = np.array(study.labels.shape)
    spacing = study.labels.spacing

    # CT crop covering every row, as float32 once (sample() would convert per call)
    corner_pts = np.concatenate(
        [origins + a * axes[:, 1] + b * axes[:, 2] for a in (-half, half) for b in (-half, half)]
    )
    inv = np.linalg.inv(affine)
    ijk = corner_pts @ inv[:3, :3].T + inv[:3, 3]
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 2, 0, shape)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 3, 0, shape)
    offset = (int(lo[0]), int(lo[1]), int(lo[2]))
    ct_crop = np.asarray(
        study.ct.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32
    )
    n_rows, n_in = t.size, inplane.size
    ct = np.zeros((n_rows, n_in, n_in), np.uint8)
    row_frames = [LocalFrame(origins[r], axes[r, 0], axes[r, 1], axes[r, 2]) for r in range(n_rows)]
    zero = np.zeros(1)
    for r in range(n_rows):
        grid = LocalGrid(row_frames[r], zero, inplane, inplane)
        vals = sample(ct_crop, affine, grid, offset=offset, order=1, cval=-1000.0)[0]
        ct[r] = _window(vals, window_hu)

    # bodies: each label's mask smoothed by <= 1 voxel, sampled over rows about its centre
    bodies = geometry.bodies
    objects = find_objects(bodies)
    best = np.zeros((n_rows, n_in, n_in), np.float32)
    owner = np.zeros((n_rows, n_in, n_in), np.uint8)
    sigma = np.minimum(1.0, 1.0 / spacing)
    margin = np.ceil(3 * sigma).astype(int) + 1
    extents: dict[int, VertebraExtent] = {}
    usable = geometry.usable
    for k in order:
        sl = objects[k - 1] if k - 1 < len(objects) else None
        if sl is None:
            continue
        blo = np.maximum(np.array([s.start for s in sl]) - margin, 0)
        bhi = np.minimum(np.array([s.stop for s in sl]) + margin, shape)
        crop = (bodies[blo[0] : bhi[0], blo[1] : bhi[1], blo[2] : bhi[2]] == k).astype(np.float32)
        smooth = ndimage.gaussian_filter(crop, sigma, mode="constant")
        r0 = int(np.clip(np.searchsorted(t, s_of[k] - _BODY_WINDOW_MM), 0, n_rows))
        r1 = int(np.clip(np.searchsorted(t, s_of[k] + _BODY_WINDOW_MM), 0, n_rows))
        b_off = (int(blo[0]), int(blo[1]), int(blo[2]))
        soft = np.zeros((r1 - r0, n_in, n_in), np.float32)
        for r in range(r0, r1):
            grid = LocalGrid(row_frames[r], zero, inplane, inplane)
            soft[r - r0] = sample(smooth, affine, grid, offset=b_off, order=1)[0]
        win = best[r0:r1]
        take = soft > win
        owner[r0:r1][take] = k
        win[take] = soft[take]
        top, bottom, fp = height_map_from_profiles(soft, t[r0:r1])
        if not fp.any():
            continue
        rows_fp = np.flatnonzero(fp.any(axis=1))
        cols_fp = np.flatnonzero(fp.any(axis=0))
        extents[k] = VertebraExtent(
            label=k,
            t_centre_mm=float(s_of[k]),
            t_top_mm=float(np.nanmin(bottom)),
            t_bottom_mm=float(np.nanmax(top)),
            ap_range_mm=(float(inplane[rows_fp[0]]), float(inplane[rows_fp[-1]])),
            lr_range_mm=(float(inplane[cols_fp[0]]), float(inplane[cols_fp[-1]])),
            grade=None if grades is None else grades.get(k),
            usable=bool(usable.get(k, False)),
        )
    body = np.rint(np.clip(best, 0, 1) * 255).astype(np.uint8)
    prior = _prior(geometry, extents, t, inplane, origins, axes, owner, body, step_mm)
    return StraightenedSpine(
        subject=geometry.subject,
        step_mm=float(step_mm),
        t_mm=t,
        ap_mm=inplane.copy(),
        lr_mm=inplane.copy(),
        origins=origins,
        axes=axes,
        ct=ct,
        body=body,
        owner=owner,
        prior=prior,
        vertebrae=extents,
        window_hu=(float(window_hu[0]), float(window_hu[1])),
    )


def _prior(
    geometry: SpineGeometry,
    extents: dict[int, VertebraExtent],
    t: NDArray[np.float64],
    inplane: NDArray[np.float64],
    origins: NDArray[np.float64],
    axes: NDArray[np.float64],
    owner: NDArray[np.uint8],
    body: NDArray[np.uint8],
    step_mm: float,
) -> NDArray[np.uint8]:
    """HGAM prior: 1 - the training-free reference's height loss at each body voxel's column (1
    elsewhere)."""
    prior = np.full(owner.shape, 255, np.uint8)
    for label, lm in geometry.loss_maps.items():
        frame = geometry.frames.get(label)
        if frame is None or label not in extents:
            continue
        e = extents[label]
        r0 = int(np.clip(np.floor((e.t_top_mm - 3 - t[0]) / step_mm), 0, t.size))
        r1 = int(np.clip(np.ceil((e.t_bottom_mm + 3 - t[0]) / step_mm) + 1, 0, t.size))
        idx = np.argwhere((owner[r0:r1] == label) & (body[r0:r1] >= 128))
        if idx.size == 0:
            continue
        rr = idx[:, 0] + r0
        world = (
            origins[rr]
            + inplane[idx[:, 1]][:, None] * axes[rr, 1]
            + inplane[idx[:, 2]][:, None] * axes[rr, 2]
        )
        local = frame.to_local(world)
        step = float(lm.ap_mm[1] - lm.ap_mm[0])
        ia = np.rint((local[:, 1] - lm.ap_mm[0]) / step).astype(int)
        il = np.rint((local[:, 2] - lm.lr_mm[0]) / step).astype(int)
        ok = (ia >= 0) & (ia < lm.ap_mm.size) & (il >= 0) & (il < lm.lr_mm.size)
        loss = np.zeros(len(idx))
        loss[ok] = np.nan_to_num(lm.values[ia[ok], il[ok]], nan=0.0)
        val = 1.0 - np.clip(loss, 0.0, 1.0)
        prior[rr, idx[:, 1], idx[:, 2]] = np.rint(val * 255).astype(np.uint8)
    return prior


def spine_summary(spine: StraightenedSpine) -> dict[str, Any]:
    """A JSON-able summary (shape, vertebrae and their extents) for manifests."""
    return {
        "subject": spine.subject,
        "shape": list(spine.shape),
        "step_mm": spine.step_mm,
        "vertebrae": {
            str(k): {
                "height_mm": round(v.height_mm, 2),
                "grade": v.grade,
                "usable": v.usable,
            }
            for k, v in spine.vertebrae.items()
        },
    }
