"""From manifests to a clustering: the faces to cluster, their constraints, and the options from params.

The `cluster` stage and `facedata evaluate clustering` both go through `cluster_faces`, so an evaluation
measures exactly what the pipeline does with the project's params.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from facedata.cluster.algorithms import CONSTRAINED, Options, cluster
from facedata.cluster.constraints import cannot_link_pairs, video_tracks


@dataclass
class FaceSet:
    """Usable faces with embeddings, one row each."""

    face_ids: list[str]
    image_ids: list[str]
    x: np.ndarray  # n x d, unit rows
    boxes: np.ndarray  # n x 4
    frames: list[tuple[str, int, str]] = field(default_factory=list)  # (video_id, frame_index, image_id)

    def __len__(self) -> int:
        return len(self.face_ids)

    def take(self, rows: np.ndarray) -> FaceSet:
        rows = np.asarray(rows, dtype=np.int64)
        images = {self.image_ids[i] for i in rows}
        return FaceSet(
            [self.face_ids[i] for i in rows],
            [self.image_ids[i] for i in rows],
            self.x[rows],
            self.boxes[rows],
            [f for f in self.frames if f[2] in images],
        )


def load_faceset(images: list[dict], faces: list[dict], embeddings: dict[str, list[float]]) -> FaceSet:
    """Usable faces (status ok) that have an embedding, sorted by face_id (a content hash, so the order says
    nothing about labels or collection order)."""
    usable = sorted(
        (f for f in faces if f["status"] == "ok" and f["face_id"] in embeddings), key=lambda f: f["face_id"]
    )
    dim = len(next(iter(embeddings.values()))) if embeddings else 0
    x = np.asarray([embeddings[f["face_id"]] for f in usable], dtype=np.float32).reshape(len(usable), dim)
    boxes = np.asarray([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in usable], dtype=np.float32).reshape(-1, 4)
    present = {f["image_id"] for f in usable}
    frames = [
        (r["video_id"], int(r["frame_index"]), r["image_id"])
        for r in images
        if r.get("video_id") and r.get("frame_index") is not None and r["image_id"] in present
    ]
    return FaceSet([f["face_id"] for f in usable], [f["image_id"] for f in usable], x, boxes, frames)


def options(p: dict, seed: int = 0) -> Options:
    """Clustering options from the `cluster:` params section."""
    return Options(
        threshold=float(p["threshold"]),
        k=int(p["k"]),
        min_samples=int(p["min_samples"]),
        min_cluster_size=int(p["min_cluster_size"]),
        resolution=float(p["resolution"]),
        link=bool(p["link"]),
        link_k=int(p["link_k"]),
        link_vote=float(p["link_vote"]),
        link_gap=float(p["link_gap"]),
        link_z=float(p["link_z"]),
        link_open_share=float(p["link_open_share"]),
        link_reach=float(p["link_reach"]),
        refine=bool(p["refine"]),
        jaccard_k=int(p["jaccard_k"]),
        jaccard_weight=float(p["jaccard_weight"]),
        relax=float(p["relax"]),
        join_threshold=float(p["join_threshold"]),
        join_margin=float(p["join_margin"]),
        join_max_size=int(p["join_max_size"]),
        eject_threshold=float(p["eject_threshold"]),
        exact_knn_max=int(p["exact_knn_max"]),
        nprobe=int(p["nprobe"]),
        seed=seed,
    )


def constraints(fs: FaceSet, p: dict) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """(cannot-link pairs, must-link groups) for the face set, as the params ask."""
    cannot = cannot_link_pairs(fs.image_ids) if p["cannot_link"] else None
    must: list[np.ndarray] = []
    if p["must_link_tracks"] and fs.frames:
        rows_of: dict[str, list[int]] = defaultdict(list)
        for i, img in enumerate(fs.image_ids):
            rows_of[img].append(i)
        must = video_tracks(fs.frames, rows_of, fs.boxes, fs.x, p["track_min_iou"], p["track_max_distance"])
    return cannot, must


@dataclass
class Result:
    labels: np.ndarray
    opts: Options
    info: dict


def cluster_faces(fs: FaceSet, p: dict, seed: int = 0, progress=None) -> Result:
    """Cluster a face set with the `cluster:` params (method, threshold, constraints...). `progress(n)` is
    called as the kNN search goes (for a progress bar)."""
    t0 = time.perf_counter()
    opts = options(p, seed)
    opts.progress = progress
    cannot, must = constraints(fs, p)
    if p["method"] in CONSTRAINED:
        opts.cannot_link, opts.must_link = cannot, must
    labels = cluster(fs.x, p["method"], opts) if len(fs) else np.zeros(0, dtype=np.int64)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    info = {
        "n_faces": len(fs),
        "n_clusters": int(sizes.size),
        "n_singletons": int(np.sum(sizes == 1)),
        "largest_cluster": int(sizes.max(initial=0)),
        "n_cannot_link_pairs": 0 if cannot is None else int(len(cannot)),
        "n_must_link_groups": len(must),
        "n_must_link_faces": int(sum(len(g) for g in must)),
        "cluster_seconds": round(time.perf_counter() - t0, 3),
    }
    return Result(labels, opts, info)
