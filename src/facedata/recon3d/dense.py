"""Dense face shape: the Surrey Face Model (SFM, 3448 vertices) fitted to 68 landmarks in one or several views.

The model is read with eos-py (`eos.morphablemodel`: PCA shape model, expression blendshapes, uv coordinates;
`eos.core.LandmarkMapper` for the iBUG-68 -> vertex mapping; the contour definitions). The fit follows eos's
`fit_shape_and_pose` (alternate: a scaled-orthographic camera per view from the current shape, then the
shape and expression coefficients by regularised linear least squares with non-negative blendshape weights,
then the jaw-line landmarks re-matched to the nearest model contour vertex) but is written in numpy so that
it handles several views at once: one identity shape shared by all views, a camera and an expression per
view. A single photo is the one-view case of the same code, so single-view and fused fits are comparable.

Residuals are measured in % of the face size (sqrt of the area of the landmark box), so the regularisation
weights mean the same for a 60-pixel face and a 600-pixel one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np

from facedata import models
from facedata.params import default

MODEL_NAME = "sfm-3448"

#: iBUG-68 landmarks (0-based) on the jaw line, matched to the model contour instead of fixed vertices.
RIGHT_JAW = tuple(range(0, 8))
LEFT_JAW = tuple(range(9, 17))


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (caches key on it)
class SFM:
    mean: np.ndarray  # (N, 3) mean shape, model units (~mm): x to the image right in a frontal view, y up, z out
    basis: np.ndarray  # (N, 3, S) shape PCA basis scaled by the standard deviations (coefficients ~ N(0, 1))
    blend: np.ndarray  # (N, 3, E) expression blendshapes (coefficients >= 0)
    expression_names: tuple[str, ...]
    triangles: np.ndarray  # (T, 3) int
    uv: np.ndarray  # (N, 2) texture coordinates in [0, 1], v up
    fixed: dict[int, int]  # iBUG landmark (0-based) -> vertex, for the landmarks not on the jaw line
    right_contour: np.ndarray  # model contour vertices the right jaw landmarks may match
    left_contour: np.ndarray
    version: str

    @property
    def n_vertices(self) -> int:
        return len(self.mean)

    def shape(self, alpha: np.ndarray, beta: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) vertices for shape coefficients `alpha` and expression coefficients `beta`."""
        v = self.mean + self.basis @ np.asarray(alpha, dtype=np.float64)
        if beta is not None:
            v = v + self.blend @ np.asarray(beta, dtype=np.float64)
        return v


@functools.cache
def load_sfm() -> SFM:
    import eos

    files = models.locate(MODEL_NAME)
    model = eos.morphablemodel.load_model(str(files["sfm_shape_3448.bin"]))
    shape_model = model.get_shape_model()
    n = shape_model.get_data_dimension() // 3
    basis = np.asarray(shape_model.get_rescaled_pca_basis(), dtype=np.float64).reshape(n, 3, -1)
    blendshapes = eos.morphablemodel.load_blendshapes(str(files["expression_blendshapes_3448.bin"]))
    blend = np.stack([np.asarray(b.deformation, dtype=np.float64).reshape(n, 3) for b in blendshapes], axis=2)
    mapper = eos.core.LandmarkMapper(str(files["ibug_to_sfm.txt"]))
    jaw = set(RIGHT_JAW) | set(LEFT_JAW)
    fixed = {}
    for i in range(68):
        vertex = mapper.convert(str(i + 1))
        if vertex is not None and i not in jaw:
            fixed[i] = int(vertex)
    contour = json.loads(files["sfm_model_contours.json"].read_text())["model_contour"]
    return SFM(
        mean=np.asarray(shape_model.get_mean(), dtype=np.float64).reshape(n, 3),
        basis=basis,
        blend=blend,
        expression_names=tuple(b.name for b in blendshapes),
        triangles=np.asarray(shape_model.get_triangle_list(), dtype=np.int64),
        uv=np.asarray(model.get_texture_coordinates(), dtype=np.float64),
        fixed=fixed,
        right_contour=np.asarray(contour["right_contour"], dtype=np.int64),
        left_contour=np.asarray(contour["left_contour"], dtype=np.int64),
        version=models.get_spec(MODEL_NAME).version,
    )


@dataclass
class Camera:
    """Scaled orthographic camera: photo (x right, y down) = scale * [r1; -r2] @ X + t."""

    scale: float
    rotation: np.ndarray  # (3, 3) model frame -> camera frame (x right, y up, z towards the viewer)
    t: np.ndarray  # (2,)

    @property
    def p(self) -> np.ndarray:
        return self.scale * np.stack([self.rotation[0], -self.rotation[1]])

    def project(self, vertices: np.ndarray) -> np.ndarray:
        """(n, 3) model points -> (n, 3) photo x, y and depth (towards the viewer, in photo pixels)."""
        xy = vertices @ self.p.T + self.t
        z = self.scale * (vertices @ self.rotation[2])
        return np.concatenate([xy, z[:, None]], axis=1)

    def pose(self) -> np.ndarray:
        """yaw, pitch, roll in degrees (same convention as the regressor's, `bfm.angles`)."""
        from facedata.recon3d.bfm import angles

        return angles(self.rotation[None])[0]

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(), "t": self.t.tolist()}


def estimate_camera(model_pts: np.ndarray, image_pts: np.ndarray) -> Camera:
    """Least-squares affine camera from 3D-2D pairs, projected to the nearest scaled orthographic one."""
    mx, my = model_pts.mean(axis=0), image_pts.mean(axis=0)
    a, *_ = np.linalg.lstsq(model_pts - mx, image_pts - my, rcond=None)
    a = a.T * np.array([[1.0], [-1.0]])  # rows for x and y-up
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    r12 = u @ vt
    rot = np.vstack([r12, np.cross(r12[0], r12[1])])
    cam = Camera(float(s.mean()), rot, np.zeros(2))
    cam.t = my - cam.p @ mx
    return cam


@dataclass
class ViewFit:
    camera: Camera
    expression: np.ndarray  # (E,)
    landmark_ids: np.ndarray  # iBUG indices used (0-based)
    vertex_ids: np.ndarray  # the vertex each was matched to
    face_size: float  # sqrt(w * h) of the landmark box, pixels
    error: float = float("nan")  # mean landmark distance in % of face_size
    error_px: float = float("nan")

    def to_dict(self) -> dict:
        return {
            "camera": self.camera.to_dict(),
            "expression": self.expression.tolist(),
            "error": self.error,
            "error_px": self.error_px,
        }


@dataclass
class DenseFit:
    sfm: SFM
    shape: np.ndarray  # (S,) identity coefficients, shared by the views
    views: list[ViewFit] = field(default_factory=list)

    _cache: dict = field(default_factory=dict, repr=False)

    def vertices(self, view: int | None = None) -> np.ndarray:
        """Model-frame vertices with the view's expression (neutral when `view` is None); cached."""
        if view not in self._cache:
            beta = None if view is None else self.views[view].expression
            self._cache[view] = self.sfm.shape(self.shape, beta)
        return self._cache[view]

    def landmarks3d(self, view: int | None = None) -> np.ndarray:
        """(68, 3) model-frame positions of the 68 landmarks on the mesh (NaN for the two inner mouth corners
        the SFM does not define)."""
        v = self.vertices(view)
        out = np.full((68, 3), np.nan)
        vf = self.views[view if view is not None else 0]
        out[vf.landmark_ids] = v[vf.vertex_ids]
        return out


def _face_size(pts: np.ndarray) -> float:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return float(np.sqrt(max((hi - lo).prod(), 1e-6)))


def _correspondences(sfm: SFM, pts2d: np.ndarray, cam: Camera | None, verts: np.ndarray):
    """Landmark ids and vertex ids: the fixed mapping, plus jaw landmarks matched to the nearest projected model
    contour vertex of their side (once a camera exists)."""
    lids = list(sfm.fixed)
    vids = [sfm.fixed[i] for i in lids]
    if cam is not None:
        for jaw, contour in ((RIGHT_JAW, sfm.right_contour), (LEFT_JAW, sfm.left_contour)):
            proj = cam.project(verts[contour])[:, :2]
            d = np.linalg.norm(pts2d[list(jaw)][:, None, :] - proj[None], axis=2)
            lids.extend(jaw)
            vids.extend(contour[d.argmin(axis=1)].tolist())
    return np.asarray(lids), np.asarray(vids)


def fit(
    sfm: SFM,
    landmarks: list[np.ndarray],
    iterations: int = default("recon3d.fit_iterations"),
    lambda_shape: float = default("recon3d.lambda_shape"),
    lambda_expression: float = default("recon3d.lambda_expression"),
    shape: np.ndarray | None = None,
    n_shape: int | None = None,
) -> DenseFit:
    """Fit one identity shape and a camera + expression per view to (68, 2+) landmarks of each view.

    `shape` fixes the identity coefficients (only cameras and expressions are fitted: how well a given shape
    explains a view). `n_shape` limits the number of shape components (default: all 63).
    """
    from threadpoolctl import threadpool_limits

    # the matrices are small: BLAS threads only add synchronisation (slower on a busy machine)
    with threadpool_limits(1, "blas"):
        return _fit(sfm, landmarks, iterations, lambda_shape, lambda_expression, shape, n_shape)


def _fit(sfm, landmarks, iterations, lambda_shape, lambda_expression, shape, n_shape) -> DenseFit:
    n_views = len(landmarks)
    if n_views == 0:
        raise ValueError("fit needs the landmarks of at least one view")
    pts = [np.asarray(p, dtype=np.float64)[:, :2] for p in landmarks]
    if any(p.shape != (68, 2) or not np.isfinite(p).all() for p in pts):
        raise ValueError("each view needs 68 finite landmarks")
    n_s = sfm.basis.shape[2] if n_shape is None else int(n_shape)
    n_e = sfm.blend.shape[2]
    alpha = np.zeros(n_s) if shape is None else np.asarray(shape, dtype=np.float64)[:n_s]
    betas = np.zeros((n_views, n_e))
    sizes = [_face_size(p) for p in pts]
    cams: list[Camera | None] = [None] * n_views
    corr = [None] * n_views
    solve_shape = shape is None
    # only the vertices that can be matched to a landmark are needed while fitting
    used = np.unique(np.concatenate([list(sfm.fixed.values()), sfm.right_contour, sfm.left_contour]))
    sub = _Subset(sfm, used, n_s)
    for it in range(iterations):
        verts = [sub.vertices(alpha, betas[v]) for v in range(n_views)]
        for v in range(n_views):
            lids, vids = _correspondences(sfm, pts[v], cams[v], verts[v])
            corr[v] = (lids, vids)
            cams[v] = estimate_camera(verts[v][vids], pts[v][lids])
        if it == 0:  # first camera from the fixed points only; now match the jaw line and re-estimate
            for v in range(n_views):
                lids, vids = _correspondences(sfm, pts[v], cams[v], verts[v])
                corr[v] = (lids, vids)
                cams[v] = estimate_camera(verts[v][vids], pts[v][lids])
        # linear least squares in (alpha, beta_1..beta_V), residuals in % of the face size
        n_x = (n_s if solve_shape else 0) + n_e * n_views
        rows_a, rows_b = [], []
        for v in range(n_views):
            lids, vids = corr[v]
            p = cams[v].p / (sizes[v] / 100.0)
            target = (pts[v][lids] - cams[v].t) / (sizes[v] / 100.0)
            rows = sub.rows(vids)
            base = sub.mean[rows] if solve_shape else sub.mean[rows] + sub.basis[rows] @ alpha
            a = np.zeros((2 * len(vids), n_x))
            col = 0
            if solve_shape:
                a[:, :n_s] = np.einsum("rc,kcs->krs", p, sub.basis[rows]).reshape(-1, n_s)
                col = n_s
            a[:, col + v * n_e : col + (v + 1) * n_e] = np.einsum("rc,kce->kre", p, sub.blend[rows]).reshape(
                -1, n_e
            )
            rows_a.append(a)
            rows_b.append((target - base @ p.T).reshape(-1))
        a_all = np.vstack(rows_a)
        b_all = np.concatenate(rows_b)
        reg = np.array(([lambda_shape] * n_s if solve_shape else []) + [lambda_expression] * (n_e * n_views))
        nonneg = np.arange(n_x - n_e * n_views, n_x)
        sol = _solve_nonneg(a_all.T @ a_all + np.diag(reg), a_all.T @ b_all, nonneg)
        if solve_shape:
            alpha = sol[:n_s]
        betas = sol[n_x - n_e * n_views :].reshape(n_views, n_e)
    result = DenseFit(sfm, _pad(alpha, sfm.basis.shape[2]))
    for v in range(n_views):
        verts = sub.vertices(alpha, betas[v])
        lids, vids = _correspondences(sfm, pts[v], cams[v], verts)
        cams[v] = estimate_camera(verts[vids], pts[v][lids])
        err_px = np.linalg.norm(cams[v].project(verts[vids])[:, :2] - pts[v][lids], axis=1).mean()
        result.views.append(
            ViewFit(cams[v], betas[v], lids, vids, sizes[v], float(err_px / sizes[v] * 100), float(err_px))
        )
    return result


class _Subset:
    """The model restricted to the vertices landmarks can match, indexed by vertex id."""

    def __init__(self, sfm: SFM, used: np.ndarray, n_s: int):
        self.row_of = np.full(sfm.n_vertices, -1)
        self.row_of[used] = np.arange(len(used))
        self.mean = sfm.mean[used]
        self.basis = sfm.basis[used, :, :n_s]
        self.blend = sfm.blend[used]
        self.used = used
        self.n_vertices = sfm.n_vertices

    def rows(self, vids: np.ndarray) -> np.ndarray:
        return self.row_of[vids]

    def vertices(self, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Full-size (N, 3) array holding the used vertices (others NaN), so vertex ids index it directly."""
        out = np.full((self.n_vertices, 3), np.nan)
        out[self.used] = self.mean + self.basis @ alpha + self.blend @ beta
        return out


def _solve_nonneg(ata: np.ndarray, atb: np.ndarray, nonneg: np.ndarray, max_rounds: int = 20) -> np.ndarray:
    """Minimise x'Ax - 2b'x with x[nonneg] >= 0 by an active set: clamp the most negative and re-solve."""
    free = np.ones(len(atb), bool)
    x = np.zeros(len(atb))
    for _ in range(max_rounds):
        x[:] = 0
        x[free] = np.linalg.solve(ata[np.ix_(free, free)], atb[free])
        neg = nonneg[x[nonneg] < 0]
        if len(neg) == 0:
            # KKT: a clamped coefficient whose gradient says it should grow is released
            grad = atb - ata @ x
            release = nonneg[(~free[nonneg]) & (grad[nonneg] > 1e-9)]
            if len(release) == 0:
                return x
            free[release[np.argmax(grad[release])]] = True
            continue
        free[neg[np.argmin(x[neg])]] = False
    x[nonneg] = np.maximum(x[nonneg], 0)
    return x


def _pad(alpha: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[: len(alpha)] = alpha
    return out
