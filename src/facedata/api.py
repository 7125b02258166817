"""The public Python API (`import facedata`): numpy in, numpy out, models found by the one resolver
(`facedata.models`) and loaded once per process on first use.

Each function is a thin door onto the code the pipeline runs: `detect_faces` and `embed_faces` are the
stages' `FaceAnalyzer`, `cluster_faces` is the cluster stage's `cluster()`, `reconstruct_3d` is the
`Reconstructor` of the reconstruct3d stage and `facedata face3d`. Settings come from `params` (a full params
dict, e.g. `Project(path).params`; default: every default of the params spec).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata import project as _project

# --- images and faces --------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as an (H, W, 3) uint8 RGB array, EXIF orientation applied; `ImageRejected` when
    the file is not an image facedata accepts (the same rules as ingest)."""
    from facedata.imageio import read_image_file

    return read_image_file(path, min_side=1).rgb


@dataclass
class Faces:
    """The faces found in one image, best detector score first. Row i of every array is face i."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2 in image pixels
    scores: np.ndarray  # (n,) detector confidence
    landmarks: np.ndarray  # (n, 5, 2) eyes, nose, mouth corners
    quality: np.ndarray  # (n,) combined quality 0..1 (score, size, sharpness, pose)
    pose: np.ndarray  # (n, 3) yaw, pitch, roll in degrees (from the 5 landmarks)
    ok: np.ndarray  # (n,) bool: passes the detect.* quality filters
    reasons: list[list[str]] = field(default_factory=list)  # why a face is not ok

    def __len__(self) -> int:
        return len(self.scores)


def _params(params: dict | None) -> dict:
    from facedata.params import defaults, with_defaults

    return defaults() if params is None else with_defaults(params)


def _key(value) -> str:
    from facedata.params import canonical_json

    return canonical_json(value)


@functools.lru_cache(maxsize=4)
def _analyzer(detect_json: str, embed_json: str | None, root: str | None):
    import json

    from facedata.faces.analyze import FaceAnalyzer

    return FaceAnalyzer(json.loads(detect_json), None if embed_json is None else json.loads(embed_json), root)


def _faces(found) -> Faces:
    n = len(found)
    return Faces(
        boxes=np.array([f.box for f in found], np.float32).reshape(n, 4),
        scores=np.array([f.score for f in found], np.float32),
        landmarks=np.array([f.landmarks for f in found], np.float32).reshape(n, 5, 2),
        quality=np.array([f.quality for f in found], np.float32),
        pose=np.array([(f.yaw, f.pitch, f.roll) for f in found], np.float32).reshape(n, 3),
        ok=np.array([f.ok for f in found], bool),
        reasons=[list(f.reasons) for f in found],
    )


def detect_faces(image: np.ndarray, params: dict | None = None) -> Faces:
    """Every face the `detect.detector` finds in an RGB image (at most `detect.max_faces_per_image`), with
    landmarks, pose and quality; faces failing a `detect.*` filter are kept with `ok=False` and reasons."""
    p = _params(params)
    analyzer = _analyzer(_key(p["detect"]), None, None)
    return _faces(analyzer.analyze([_rgb(image)], keep_crops=False)[0])


def embed_faces(
    image: np.ndarray, faces: Faces | None = None, params: dict | None = None, root: str | None = None
) -> np.ndarray:
    """(n, d) float32: one unit vector per face of `faces` (default: `detect_faces(image)`), in that order,
    from the `embed.model` recognizer aligned as the pipeline aligns it. `root` resolves a relative
    `onnx:<path>` model."""
    from facedata.faces.detect import Detections

    p = _params(params)
    analyzer = _analyzer(_key(p["detect"]), _key(p["embed"]), None if root is None else str(root))
    rgb = _rgb(image)
    if faces is None:
        found = analyzer.analyze([rgb], keep_crops=False)[0]
    else:
        dets = Detections(
            np.asarray(faces.boxes, np.float32).reshape(-1, 4),
            np.asarray(faces.scores, np.float32).reshape(-1),
            np.asarray(faces.landmarks, np.float32).reshape(-1, 5, 2),
        )
        found = analyzer.analyze_detections([rgb], [dets], keep_crops=False, keep_order=True)[0]
    dim = analyzer.embedder.dim
    return np.array([f.embedding for f in found], np.float32).reshape(len(found), dim)


def distance(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """L2 distance between unit vectors, the unit of every clustering threshold (cosine = 1 - d^2 / 2). Two
    vectors give a float; (n, d) and (m, d) give the (n, m) matrix."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.ndim == 1 and y.ndim == 1:
        return float(np.linalg.norm(x - y))
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def cluster_faces(
    vectors: np.ndarray, params: dict | None = None, cannot_link: np.ndarray | None = None
) -> np.ndarray:
    """One integer label per row of `vectors` (unit embeddings), numbered by first appearance, with the
    `cluster.method` and options of `params`; `cannot_link` is (p, 2) row pairs never put together."""
    from facedata.cluster.algorithms import cluster
    from facedata.cluster.faceset import options

    p = _params(params)["cluster"]
    opts = options(p)
    if cannot_link is not None:
        opts.cannot_link = np.asarray(cannot_link, np.int64).reshape(-1, 2)
    return cluster(np.asarray(vectors, np.float32), p["method"], opts)


# --- 3D ----------------------------------------------------------------------------------------------------


@dataclass
class Face3D:
    """One face in 3D. `status` is ok | tiny_face | cut_by_border | extreme_pose | fit_failed | error
    (see `facedata.recon3d.reconstruct`); arrays are None where that step did not run."""

    status: str
    reason: str | None
    box: np.ndarray  # (4,) the detector box
    landmarks68: np.ndarray | None  # (68, 3) photo pixels (x right, y down, z towards the camera)
    pose: np.ndarray | None  # (3,) yaw, pitch, roll in degrees
    vertices: np.ndarray | None  # (V, 3) dense mesh in photo pixels (status ok or extreme_pose)
    triangles: np.ndarray  # (T, 3) vertex indices of the mesh
    texture: np.ndarray | None  # (R, R, 3) uint8 texture map (status ok)
    gaze: dict | None  # {status, yaw, pitch, reason} when recon3d.gaze
    result: object = None  # the `FaceResult`, for `save`
    _rec: object = None

    def save(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write the mesh files (OBJ+MTL+PNG, GLB, landmarks) and `face3d.json` into `folder`."""
        return self._rec.write_face(self.result, folder)


@functools.lru_cache(maxsize=2)
def _reconstructor(recon_json: str):
    import json

    from facedata.recon3d.reconstruct import Reconstructor

    p = json.loads(recon_json)
    return Reconstructor(p, p.get("weights") or None)


def reconstruct_3d(image: np.ndarray, faces: Faces | None = None, params: dict | None = None) -> list[Face3D]:
    """A 3D face per face of `faces` (default: `detect_faces(image)`): 68 3D landmarks, head pose, dense
    textured mesh and gaze, with the `recon3d.*` settings of `params`."""
    p = _params(params)
    rgb = _rgb(image)
    if faces is None:
        faces = detect_faces(rgb, p)
    rec = _reconstructor(_key(p["recon3d"]))
    out = []
    for r in rec.faces([rgb], [np.asarray(faces.boxes).reshape(-1, 4)])[0]:
        out.append(
            Face3D(
                status=r.status,
                reason=r.reason,
                box=np.asarray(r.box),
                landmarks68=None if r.fit is None else r.fit.landmarks,
                pose=None if r.fit is None else np.asarray(r.fit.pose),
                vertices=None if r.dense is None else r.photo_vertices(),
                triangles=rec.sfm.triangles,
                texture=r.texture,
                gaze=None if r.gaze is None else r.gaze.to_dict(),
                result=r,
                _rec=rec,
            )
        )
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image (see load_image), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


# --- projects ----------------------------------------------------------------------------------------------


class Project(_project.Project):
    """A facedata project (the folder holding params.yaml, at or above `path`) for pipeline users:
    `.params`, `.build()`, `.manifest(name)`."""

    def __init__(self, path: str | os.PathLike = "."):
        super().__init__(_project.find_root(path))
        self.activate()

    def build(self, stages: list[str] | None = None, force: bool = False, wait: float = 0.0) -> dict:
        """Run the pipeline (as `facedata build`: the Prefect flow, one task per stale DVC stage) and return
        each stage's metrics. Raises ValueError for an unknown stage name, before anything runs."""
        if stages:
            check_stage_names(self.root, stages)
        build_flow = load_build_flow()
        return build_flow(root=str(self.root), stages=list(stages) if stages else None, force=force, wait=wait)

    def manifest(self, name: str, missing_ok: bool = False):
        """The manifest `name` (images, faces, embeddings, clusters, identities, dataset, ...) as a pandas
        DataFrame; column meanings are in the Parquet field metadata (`facedata.manifest.describe`)."""
        from facedata import manifest

        return manifest.read_pandas(name, self.root, missing_ok=missing_ok)


def check_stage_names(root: str | os.PathLike, stages) -> None:
    """ValueError naming the unknown stages and the valid ones (the project's dvc.yaml)."""
    from facedata.pipeline.dag import read_dag

    order = read_dag(Path(root) / "dvc.yaml")
    unknown = [s for s in stages if s not in order]
    if unknown:
        import difflib

        hints = [difflib.get_close_matches(s, order, n=1) for s in unknown]
        hint = "".join(f" (did you mean `{h[0]}`?)" for h in hints[:1] if h)
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}{hint}; stages: {', '.join(order)}")


def load_build_flow():
    """The Prefect build flow, with the environment it needs set first (Prefect reads it at import)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's 20 s default for its temporary server is too short on a busy laptop or CI machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from facedata.flows.build import build_flow

    return build_flow
