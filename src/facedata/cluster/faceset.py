"""From manifests to a clustering: the faces to cluster, their constraints, and the options from params.

The `cluster` stage and `facedata evaluate clustering` both go through `cluster_faces`, so an evaluation
measures exactly what the pipeline does with the project's params.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facedata.cluster.algorithms import CONSTRAINED, GRAPH_METHODS, Options, cluster, knn_graph
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


#: Columns the clustering needs from each manifest (read no wider: a million faces' full rows do not fit).
IMAGE_COLUMNS = ["image_id", "query_name", "label", "video_id", "frame_index"]
FACE_COLUMNS = ["face_id", "image_id", "status", "is_primary", "x1", "y1", "x2", "y2"]


def load_faceset(images: list[dict], faces: list[dict], embeddings: dict[str, list[float]]) -> FaceSet:
    """`faceset_from_tables` for rows already in Python (small sets, tests)."""
    emb = pa.table(
        {
            "face_id": pa.array(list(embeddings), pa.string()),
            "vector": pa.array(list(embeddings.values()), pa.list_(pa.float32())),
        }
    )
    return faceset_from_tables(_table(images, IMAGE_COLUMNS), _table(faces, FACE_COLUMNS), [emb])


def _table(rows: list[dict], columns: list[str]) -> pa.Table:
    if not rows:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])


def faceset_from_tables(images: pa.Table, faces: pa.Table, embeddings: Iterable[pa.Table]) -> FaceSet:
    """Usable faces (status ok) that have an embedding, sorted by face_id (a content hash, so the order says
    nothing about labels or collection order). `embeddings`: one model's rows (`face_id`, `vector`) in any
    number of slices; the vectors go from Arrow straight into one float32 matrix, slice by slice, never through
    Python lists or a second full copy."""
    faces = faces.filter(pc.equal(faces["status"], "ok")) if faces.num_rows else faces
    faces = faces.take(pc.sort_indices(faces["face_id"]))
    n = faces.num_rows
    x: np.ndarray | None = None
    found = np.zeros(n, dtype=bool)
    for part in embeddings:
        if not part.num_rows or not n:
            continue
        pos = pc.index_in(part["face_id"], value_set=faces["face_id"])
        keep = pc.is_valid(pos)
        rows = pos.filter(keep).to_numpy(zero_copy_only=False)
        if not rows.size:
            continue
        vec = part["vector"].filter(keep).combine_chunks()
        lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
        if x is None:
            x = np.zeros((n, int(lengths[0])), dtype=np.float32)
        if (lengths != x.shape[1]).any():
            raise ValueError("embeddings of one model have different lengths; rerun `dvc repro --force embed`")
        x[rows] = vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, x.shape[1])
        found[rows] = True
    if not found.all():
        faces = faces.filter(pa.array(found))
        x = x[found] if x is not None else None
    if x is None:
        x = np.zeros((faces.num_rows, 0), dtype=np.float32)
    boxes = np.stack([faces[c].to_numpy().astype(np.float32) for c in ("x1", "y1", "x2", "y2")], axis=1)
    image_ids = faces["image_id"].to_pylist()
    frames: list[tuple[str, int, str]] = []
    if images.num_rows and "video_id" in images.column_names:
        video = images.filter(pc.and_(pc.is_valid(images["video_id"]), pc.is_valid(images["frame_index"])))
        present = set(image_ids)
        frames = [
            (v, int(f), img)
            for v, f, img in zip(
                video["video_id"].to_pylist(),
                video["frame_index"].to_pylist(),
                video["image_id"].to_pylist(),
                strict=True,
            )
            if img in present
        ]
    return FaceSet(faces["face_id"].to_pylist(), image_ids, x, boxes.reshape(-1, 4), frames)


def read_faceset(root, model: str) -> tuple[FaceSet, pa.Table, pa.Table]:
    """The face set of a project for embedding `model` (`embed.model` as written), with the `images` and
    `faces` columns it was made from (`IMAGE_COLUMNS`, `FACE_COLUMNS`)."""
    from facedata import manifest

    images = manifest.read("images", root, columns=IMAGE_COLUMNS)
    faces = manifest.read("faces", root, columns=FACE_COLUMNS)
    parts = (
        part.filter(pc.equal(part["model"], model))
        for part in manifest.iter_batches("embeddings", root, columns=["face_id", "model", "vector"])
    )
    return faceset_from_tables(images, faces, parts), images, faces


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


Constraints = tuple[np.ndarray | None, list[np.ndarray]]


def constraints(fs: FaceSet, p: dict, extra: Callable[[FaceSet], Constraints] | None = None) -> Constraints:
    """(cannot-link pairs, must-link groups) for the face set, as the params ask, plus `extra(fs)` (review
    decisions: always applied, whatever the params; its must-link groups stay groups of their own)."""
    cannot, must = _own_constraints(fs, p)
    if extra is not None:
        more_cannot, more_must = extra(fs)
        if more_cannot is not None and len(more_cannot):
            cannot = more_cannot if cannot is None or not len(cannot) else np.concatenate([cannot, more_cannot])
        must = [*must, *more_must]
    return cannot, must


def _own_constraints(fs: FaceSet, p: dict) -> Constraints:
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
    knn_graph: tuple[np.ndarray, np.ndarray] | None = None  # (indices, similarities) over `fs`, when one was built


def cluster_faces(
    fs: FaceSet,
    p: dict,
    seed: int = 0,
    progress=None,
    extra: Callable[[FaceSet], Constraints] | None = None,
    graph: tuple | None = None,
) -> Result:
    """Cluster a face set with the `cluster:` params (method, threshold, constraints...). `progress(n)` is
    called as the kNN search goes (for a progress bar). The kNN graph of methods that use one is built here,
    passed in explicitly and returned, so the caller (doubt scores) does not search again; a caller that searched
    already (on a Dask cluster: `knn_dask`) passes its `graph`. `extra`: more constraints (see `constraints`)."""
    t0 = time.perf_counter()
    cannot, must = constraints(fs, p, extra)
    opts = options(p, seed)
    if p["method"] in CONSTRAINED:
        opts = replace(opts, cannot_link=cannot, must_link=must)
    if not (len(fs) and p["method"] in GRAPH_METHODS):
        graph = None
    elif graph is None:
        graph = knn_graph(fs.x, replace(opts, progress=progress))
    if graph is not None:
        opts = replace(opts, knn_graph=graph)
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
    return Result(labels, opts, info, graph)
