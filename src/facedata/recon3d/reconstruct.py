"""From photos and face boxes to 3D faces: the one place the steps are put together (the stage
`reconstruct3d` and the CLI `facedata face3d` both use it).

Per face: 3DMM regression (batched over all faces), checks, dense SFM fit, texture, gaze, files. Each face gets
a status, and only `ok` faces get mesh files:

- `tiny_face`      the detector box is under `min_face_px`: nothing is estimated;
- `cut_by_border`  more than `max_outside_fraction` of the 68 landmarks fall outside the photo;
- `extreme_pose`   |yaw| > `max_yaw` or |pitch| > `max_pitch` (landmarks and pose are still given, and the
                   dense fit is kept for multi-view fusion, where a profile view is useful);
- `fit_failed`     the dense fit's mean landmark error is over `max_fit_error` (% of the face size);
- `error`          anything unexpected, with its message; the other faces carry on;
- `ok`             mesh, texture and landmark files written.

Several views of one person fuse into one mesh (`fuse`): one identity shape, a camera and expression per
view, the texture merged per texel by how squarely each view sees it. Every fusion of 3 or more views is
checked leave-one-view-out: the fused fit made *without* view i, judged on view i, against the single-view
fits of the other views judged on view i (a fit never judged on a view it saw).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata import atomic
from facedata.params import default
from facedata.recon3d import dense, meshio, texture
from facedata.recon3d.gaze import Gaze
from facedata.recon3d.regress import Fit, Regressor, RegressorConfig

STATUSES = ("ok", "tiny_face", "cut_by_border", "extreme_pose", "fit_failed", "error")


@dataclass(frozen=True)
class Settings:
    """The recon3d params that decide what is accepted and how the dense fit and texture are made."""

    min_face_px: float = default("recon3d.min_face_px")
    max_outside_fraction: float = default("recon3d.max_outside_fraction")
    max_yaw: float = default("recon3d.max_yaw")
    max_pitch: float = default("recon3d.max_pitch")
    fit_iterations: int = default("recon3d.fit_iterations")
    lambda_shape: float = default("recon3d.lambda_shape")
    lambda_expression: float = default("recon3d.lambda_expression")
    max_fit_error: float = default("recon3d.max_fit_error")
    texture_size: int = default("recon3d.texture_size")
    texture_sharpness: float = default("recon3d.texture_sharpness")
    gaze: bool = default("recon3d.gaze")
    glb: bool = default("recon3d.glb")

    @classmethod
    def from_params(cls, p: dict) -> Settings:
        return cls(**{k: p[k] for k in cls.__dataclass_fields__ if k in p})


@dataclass
class FaceResult:
    image_index: int
    face_index: int
    box: np.ndarray
    status: str = "ok"
    reason: str | None = None
    fit: Fit | None = None
    dense: dense.DenseFit | None = None
    gaze: Gaze | None = None
    texture: np.ndarray | None = None  # (R, R, 3) uint8
    texture_weight: np.ndarray | None = None  # (R, R) cos of the view angle, 0 = not seen
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def fit_error(self) -> float | None:
        return None if self.dense is None else float(self.dense.views[0].error)

    def fit_landmarks(self) -> np.ndarray | None:
        """(68, 2) landmarks of the dense fit projected into the photo (the training pseudo-labels); the two
        inner mouth corners the SFM does not define are taken from the regressor."""
        if self.dense is None or self.fit is None:
            return None
        v = self.dense.views[0]
        out = self.fit.landmarks[:, :2].copy()
        verts = self.dense.vertices(0)
        out[v.landmark_ids] = v.camera.project(verts[v.vertex_ids])[:, :2]
        return out

    def photo_vertices(self) -> np.ndarray:
        v = self.dense.views[0]
        return v.camera.project(self.dense.vertices(0))

    def summary(self) -> dict:
        """JSON-ready description (the `face3d.json` beside the mesh files)."""
        d: dict = {
            "status": self.status,
            "reason": self.reason,
            "box": _r(self.box),
            "seconds": round(self.seconds, 4),
        }
        if self.fit is not None:
            d.update(
                pose={"yaw": _r(self.fit.pose[0]), "pitch": _r(self.fit.pose[1]), "roll": _r(self.fit.pose[2])},
                crop=_r(self.fit.crop),
                landmarks68=_r(self.fit.landmarks),
                params62=_r(self.fit.params, 6),
            )
        if self.dense is not None:
            v = self.dense.views[0]
            d["dense_fit"] = {
                "error_percent": _r(v.error, 4),
                "error_px": _r(v.error_px, 3),
                "camera": v.camera.to_dict(),
                "shape": _r(self.dense.shape, 5),
                "expression": dict(zip(self.dense.sfm.expression_names, _r(v.expression, 5), strict=True)),
                "landmarks68": _r(self.fit_landmarks()),
            }
        if self.gaze is not None:
            d["gaze"] = self.gaze.to_dict()
        d["files"] = {k: p.name for k, p in self.files.items()}
        return d


@dataclass
class View:
    """One photo of a person for fusion: the photo, the regressor's landmarks and its single-view shape."""

    image_rgb: np.ndarray
    landmarks: np.ndarray  # (68, 3) or (68, 2) photo pixels
    shape: np.ndarray  # (S,) identity coefficients of this view's own dense fit
    yaw: float = 0.0
    face_id: str | None = None

    @classmethod
    def from_result(cls, image_rgb: np.ndarray, r: FaceResult, face_id: str | None = None) -> View:
        return cls(image_rgb, r.fit.landmarks, r.dense.shape, float(r.fit.pose[0]), face_id)


def choose_views(yaws: list[float], k: int) -> list[int]:
    """Up to k indices spread over head yaw: the most frontal first, then repeatedly the view farthest in yaw
    from those chosen (so left, right and frontal views are preferred over several near-identical ones)."""
    if len(yaws) <= k:
        return list(range(len(yaws)))
    y = np.asarray(yaws, dtype=np.float64)
    chosen = [int(np.argmin(np.abs(y)))]
    while len(chosen) < k:
        gap = np.min(np.abs(y[:, None] - y[chosen][None]), axis=1)
        gap[chosen] = -1
        chosen.append(int(np.argmax(gap)))
    return sorted(chosen)


@dataclass
class FusedResult:
    dense: dense.DenseFit
    views: list[View]
    texture: np.ndarray
    texture_weight: np.ndarray
    view_errors: list[float]  # the fused fit's error on each view it was fitted to (% of the face size)
    # Leave-one-view-out, per view i (None with 2 views, where "fused without i" is one single view):
    heldout_errors: list[float] | None = None  # the fused fit made without view i, judged on view i
    single_heldout_errors: list[float] | None = None  # the other views' single-view fits on view i, mean
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def better_than_single(self) -> bool | None:
        """Fused without view i beats the other views' single fits on view i, for every view (None: untested,
        fewer than 3 views)."""
        if self.heldout_errors is None or self.single_heldout_errors is None:
            return None
        return all(f < s for f, s in zip(self.heldout_errors, self.single_heldout_errors, strict=True))

    def summary(self) -> dict:
        return {
            "n_views": len(self.views),
            "view_errors_percent": _r(self.view_errors, 4),
            "heldout_errors_percent": _r(self.heldout_errors, 4),
            "single_heldout_errors_percent": _r(self.single_heldout_errors, 4),
            "fused_better_on_every_heldout_view": self.better_than_single,
            "shape": _r(self.dense.shape, 5),
            "cameras": [v.camera.to_dict() for v in self.dense.views],
            "files": {k: p.name for k, p in self.files.items()},
        }


def _r(x, nd: int = 3):
    if x is None:
        return None
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return None if not np.isfinite(a) else round(float(a), nd)
    return np.where(np.isfinite(a), np.round(a, nd), np.nan).tolist()


class Reconstructor:
    """Holds the models (regressor, SFM, uv raster, FaceMesh) so that many photos reuse them."""

    def __init__(self, params: dict, weights: str | None = None):
        self.params = params
        self.settings = Settings.from_params(params)
        self.regressor = Regressor(RegressorConfig.from_params(params, weights))
        self.sfm = dense.load_sfm()
        self.raster = texture.uv_raster(self.sfm, self.settings.texture_size)
        self._gaze = None

    @property
    def model_version(self) -> str:
        return f"{self.regressor.version}+{self.sfm.version}"

    def gaze_estimator(self):
        if self._gaze is None:
            from facedata.recon3d.gaze import GazeEstimator

            self._gaze = GazeEstimator()
        return self._gaze

    # -- single photos -------------------------------------------------------------------------------------
    def faces(self, images_rgb: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[FaceResult]]:
        """Landmarks, pose, dense fit, texture and gaze for every box of every photo (no files written)."""
        s = self.settings
        results: list[list[FaceResult]] = []
        todo_img, where = [], []
        t0 = time.perf_counter()
        for i, (img, bx) in enumerate(zip(images_rgb, boxes, strict=True)):
            bx = np.asarray(bx, dtype=np.float64).reshape(-1, 4)
            row = []
            for j, b in enumerate(bx):
                r = FaceResult(i, j, b)
                side = min(b[2] - b[0], b[3] - b[1])
                if side < s.min_face_px:
                    r.status, r.reason = "tiny_face", f"face box {side:.0f} px < min_face_px {s.min_face_px:g}"
                else:
                    where.append((i, j))
                row.append(r)
            results.append(row)
            todo_img.append(np.ascontiguousarray(img[:, :, ::-1]))
        # batch the regression over every face that passed the size check
        per_image = [[results[i][j].box for (i, j) in where if i == k] for k in range(len(images_rgb))]
        fits = self.regressor.fit(todo_img, [np.array(p).reshape(-1, 4) for p in per_image])
        regress_seconds = time.perf_counter() - t0
        n_fit = max(1, len(where))
        for k, image_fits in enumerate(fits):
            idx = [j for (i, j) in where if i == k]
            for j, fit in zip(idx, image_fits, strict=True):
                r = results[k][j]
                t1 = time.perf_counter()
                try:
                    r.fit = fit
                    self._finish(r, images_rgb[k])
                except Exception as exc:  # one face never stops the others
                    r.status, r.reason = "error", f"{type(exc).__name__}: {exc}"
                    r.reason += " | " + traceback.format_exc(limit=2).strip().splitlines()[-1]
                r.seconds = time.perf_counter() - t1 + regress_seconds / n_fit
        return results

    def _finish(self, r: FaceResult, image_rgb: np.ndarray) -> None:
        s = self.settings
        h, w = image_rgb.shape[:2]
        lm = r.fit.landmarks
        outside = np.mean((lm[:, 0] < 0) | (lm[:, 1] < 0) | (lm[:, 0] > w - 1) | (lm[:, 1] > h - 1))
        yaw, pitch, _ = r.fit.pose
        if s.gaze:
            r.gaze = self.gaze_estimator().estimate(image_rgb, r.box, lm, r.fit.rotation)
        if outside > s.max_outside_fraction:
            r.status = "cut_by_border"
            r.reason = f"{outside:.0%} of the landmarks fall outside the photo (max {s.max_outside_fraction:.0%})"
            return
        r.dense = self.fit_views([lm])
        if abs(yaw) > s.max_yaw or abs(pitch) > s.max_pitch:
            r.status = "extreme_pose"
            r.reason = f"yaw {yaw:.0f}, pitch {pitch:.0f} degrees (max {s.max_yaw:g}, {s.max_pitch:g})"
            return
        if r.fit_error > s.max_fit_error:
            r.status = "fit_failed"
            r.reason = f"dense fit error {r.fit_error:.2f}% of the face size > max_fit_error {s.max_fit_error:g}"
            return
        colours, weight = texture.sample_view(
            self.sfm, self.raster, r.dense.vertices(0), r.dense.views[0].camera, image_rgb
        )
        r.texture, r.texture_weight = texture.merge([colours], [weight], s.texture_sharpness)

    def write_face(
        self, r: FaceResult, out_dir: str | Path, extra: dict | None = None, extra_files: dict | None = None
    ) -> dict[str, Path]:
        """Folder `out_dir` with the mesh files (only for `ok` faces), `face3d.json` (always) and `extra_files`
        ({name: bytes}, e.g. renders), replaced whole."""
        t0 = time.perf_counter()
        mesh = (r.dense.vertices(0), r.texture, r.dense.landmarks3d(0)) if r.status == "ok" else None
        r.files = self._write_folder(out_dir, mesh, "face3d.json", {**(extra or {}), **r.summary()}, extra_files)
        r.seconds += time.perf_counter() - t0
        return r.files

    # -- several views -------------------------------------------------------------------------------------
    def fit_views(self, landmarks: list[np.ndarray]) -> dense.DenseFit:
        """The dense fit of one or several views of one person (one identity shape, a camera and expression
        per view)."""
        s = self.settings
        return dense.fit(self.sfm, landmarks, s.fit_iterations, s.lambda_shape, s.lambda_expression)

    def explain(self, shape: np.ndarray, landmarks: np.ndarray) -> float:
        """How well an identity shape explains a view: the view's fit error (% of the face size) with that
        shape fixed, camera and expression refitted."""
        s = self.settings
        fit = dense.fit(self.sfm, [landmarks], s.fit_iterations, s.lambda_shape, s.lambda_expression, shape=shape)
        return float(fit.views[0].error)

    def heldout_check(self, landmarks: list[np.ndarray], single_shapes: list[np.ndarray]):
        """Leave one view out: per view i, (error on i of the fused fit of the other views, mean error on i of
        the other views' single-view shapes). No fit is judged on a view it saw."""
        fused, single = [], []
        for i, lm in enumerate(landmarks):
            others = [j for j in range(len(landmarks)) if j != i]
            fused.append(self.explain(self.fit_views([landmarks[j] for j in others]).shape, lm))
            single.append(float(np.mean([self.explain(single_shapes[j], lm) for j in others])))
        return fused, single

    def fuse(self, views: list[View]) -> FusedResult:
        """One mesh from several photos of one person: one identity shape, a camera and expression per view,
        the texture merged by view angle. With 3 or more views, also the leave-one-view-out check (see
        `heldout_check`)."""
        if len(views) < 2:
            raise ValueError(f"fusion needs at least 2 views, got {len(views)}")
        lms = [v.landmarks for v in views]
        fused = self.fit_views(lms)
        heldout = single = None
        if len(views) >= 3:
            heldout, single = self.heldout_check(lms, [v.shape for v in views])
        cols, weights = [], []
        for i, v in enumerate(views):
            c, w = texture.sample_view(
                self.sfm, self.raster, fused.vertices(i), fused.views[i].camera, v.image_rgb
            )
            cols.append(c)
            weights.append(w)
        tex, best = texture.merge(cols, weights, self.settings.texture_sharpness)
        return FusedResult(fused, list(views), tex, best, [v.error for v in fused.views], heldout, single)

    def write_fused(
        self, f: FusedResult, out_dir: str | Path, extra: dict | None = None, extra_files: dict | None = None
    ) -> dict[str, Path]:
        """Folder `out_dir` with the fused mesh (neutral expression), its merged texture and `fused3d.json`."""
        mesh = (f.dense.vertices(None), f.texture, f.dense.landmarks3d(None))
        f.files = self._write_folder(out_dir, mesh, "fused3d.json", {**(extra or {}), **f.summary()}, extra_files)
        return f.files

    def _write_folder(
        self,
        out_dir: str | Path,
        mesh: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        json_name: str,
        summary: dict,
        extra_files: dict | None,
    ) -> dict[str, Path]:
        """Write `out_dir` whole: the mesh files of (vertices, texture, landmarks) when given, `extra_files`
        and the JSON summary; returns {kind: path} of what it holds."""
        files = (
            {}
            if mesh is None
            else meshio.mesh_files(
                mesh[0], self.sfm.triangles, self.sfm.uv, mesh[1], mesh[2], glb=self.settings.glb
            )
        )
        kinds = {v: k for k, v in meshio.FILES.items()}
        paths = {kinds[name]: Path(out_dir) / name for name in files}
        paths["json"] = Path(out_dir) / json_name
        for name in extra_files or {}:
            paths[name.rsplit(".", 1)[0]] = Path(out_dir) / name
        files.update(extra_files or {})
        files[json_name] = _json_bytes(summary)
        meshio.write_folder(out_dir, files)
        return paths


def _json_bytes(obj: dict) -> bytes:
    import json

    return (json.dumps(obj, sort_keys=True, default=atomic._json_default) + "\n").encode()
