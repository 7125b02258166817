"""Stage `cluster`: group faces by identity, pick each queried name's dominant cluster, score every face's doubt,
and measure the clustering against labels when the sources have them.

With `cluster.incremental`, a rerun that finds the previous clustering (same params) and only some new faces
adds them with `facedata.cluster.incremental.add_faces` instead of reclustering everything; more than
`cluster.incremental_max_new_fraction` new faces, or changed params, trigger a full recluster.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from facedata import ids, manifest
from facedata.cluster.faceset import FaceSet, cluster_faces, constraints, load_faceset, options
from facedata.cluster.identities import absorb_faces, dominant_clusters, face_doubt
from facedata.cluster.incremental import add_faces
from facedata.cluster.knn import knn
from facedata.cluster.metrics import clustering_metrics
from facedata.pipeline.runner import StageContext


def labelled_assignment(images: list[dict], faces: list[dict], face_cluster: dict[str, str]) -> tuple[list, list]:
    """(true labels, predicted clusters) per labelled image: the cluster of its primary face, or a singleton of
    its own when no usable face was found, so misses are counted, never dropped."""
    primary = {f["image_id"]: f["face_id"] for f in faces if f["is_primary"]}
    truth, pred = [], []
    for img in images:
        if img["label"] is None:
            continue
        fid = primary.get(img["image_id"])
        truth.append(img["label"])
        pred.append(face_cluster.get(fid) if fid in face_cluster else f"noface:{img['image_id']}")
    return truth, pred


def previous_labels(ctx: StageContext, fs: FaceSet) -> np.ndarray | None:
    """Labels per row of `fs` from the last run (-1 for new faces), when that run used the same params."""
    try:
        old = manifest.read("clusters", ctx.root, missing_ok=True).to_pylist()
    except manifest.ManifestError:  # written by an older version: recluster from scratch
        return None
    if not old or any(r["lineage"]["params_hash"] != ctx.row_params_hash for r in old):
        return None
    cid = {r["face_id"]: r["cluster_id"] for r in old}
    codes: dict[str, int] = {}
    return np.asarray([codes.setdefault(cid[f], len(codes)) if f in cid else -1 for f in fs.face_ids], np.int64)


def assign(ctx: StageContext, fs: FaceSet) -> tuple[np.ndarray, dict, tuple | None]:
    """Labels for every face, how they were obtained (full or incremental), and the kNN graph when one was
    built over all faces in `fs` order (reused for the doubt scores)."""
    p = ctx.p
    prev = previous_labels(ctx, fs) if p["incremental"] and len(fs) else None
    if prev is not None and (prev >= 0).any():
        new = np.flatnonzero(prev < 0)
        old = np.flatnonzero(prev >= 0)
        if new.size <= p["incremental_max_new_fraction"] * old.size:
            order = np.concatenate([old, new])
            cannot, _ = constraints(fs.take(order), p)
            labels_sorted, stats = add_faces(
                fs.x[old], prev[old], fs.x[new], p["method"], options(p), cannot=cannot
            )
            labels = np.empty(len(fs), dtype=np.int64)
            labels[order] = labels_sorted
            return labels, {"mode": "incremental", **stats}, None
    with ctx.progress(total=len(fs), desc="cluster: neighbours", unit="face") as bar:
        result = cluster_faces(fs, p, progress=bar.update)
    return result.labels, {"mode": "full", **result.info}, result.opts.knn_graph


def run(ctx: StageContext) -> dict:
    p, model = ctx.p, ctx.params["embed"]["model"]
    images = manifest.read("images", ctx.root).to_pylist()
    faces_all = manifest.read("faces", ctx.root).to_pylist()
    emb = {
        r["face_id"]: r["vector"] for r in manifest.read("embeddings", ctx.root).to_pylist() if r["model"] == model
    }
    fs = load_faceset(images, faces_all, emb)
    labels, how, graph = assign(ctx, fs)

    members: dict[int, list[str]] = defaultdict(list)
    for fid, lab in zip(fs.face_ids, labels, strict=True):
        members[int(lab)].append(fid)
    cid_of_label = {lab: ids.cluster_id(m) for lab, m in members.items()}
    face_cluster = {fid: cid_of_label[int(lab)] for fid, lab in zip(fs.face_ids, labels, strict=True)}

    image_query = {r["image_id"]: r["query_name"] for r in images}
    query_images: dict[str, set[str]] = defaultdict(set)
    for r in images:
        if r["query_name"] is not None:
            query_images[r["query_name"]].add(r["image_id"])
    lineage = ctx.lineage(model)
    face_image = dict(zip(fs.face_ids, fs.image_ids, strict=True))
    identity_rows = dominant_clusters(query_images, face_cluster, face_image, p["min_confidence"])
    owner = {r["cluster_id"]: r["query_name"] for r in identity_rows if r["status"] in ("ok", "weak")}
    vectors = dict(zip(fs.face_ids, fs.x, strict=True))
    absorbed = absorb_faces(identity_rows, query_images, face_cluster, face_image, vectors, p["absorb_threshold"])
    if len(fs) and graph is None:
        graph = knn(fs.x, p["k"], exact_max=p["exact_knn_max"], nprobe=p["nprobe"])
    doubt = face_doubt(fs.x, labels, *graph, p["threshold"]) if len(fs) else None
    cluster_rows = []
    for i, (fid, img) in enumerate(zip(fs.face_ids, fs.image_ids, strict=True)):
        cid = face_cluster[fid]
        nxt = int(doubt["next_label"][i])
        cluster_rows.append(
            {
                "face_id": fid,
                "image_id": img,
                "cluster_id": cid,
                "cluster_size": len(members[int(labels[i])]),
                "method": p["method"],
                "query_name": image_query.get(img),
                "identity": absorbed.get(fid) or owner.get(cid),
                "absorbed": fid in absorbed,
                "doubt": float(doubt["doubt"][i]),
                "distance": _num(doubt["distance"][i]),
                "margin": _num(doubt["margin"][i]),
                "next_cluster_id": cid_of_label[nxt] if nxt >= 0 else None,
                "lineage": lineage,
            }
        )
    for r in identity_rows:
        r["lineage"] = lineage
    manifest.write("clusters", manifest.from_rows("clusters", cluster_rows), ctx.root)
    manifest.write("identities", manifest.from_rows("identities", identity_rows), ctx.root)

    statuses: dict[str, int] = defaultdict(int)
    for r in identity_rows:
        statuses[r["status"]] += 1
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    metrics = {
        "method": p["method"],
        "threshold": p["threshold"],
        "n_faces": len(fs),
        "n_clusters": len(members),
        "n_singletons": int(np.sum(sizes == 1)),
        "largest_cluster": int(sizes.max(initial=0)),
        "n_queries": len(identity_rows),
        "identities": dict(sorted(statuses.items())),
        "n_absorbed": len(absorbed),
        "mean_confidence": round(float(np.mean([r["confidence"] for r in identity_rows])), 4)
        if identity_rows
        else 0.0,
        "assignment": how,
    }
    truth, pred = labelled_assignment(images, [f for f in faces_all if f["status"] == "ok"], face_cluster)
    if truth:
        m = clustering_metrics(truth, pred)
        metrics["labelled"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        metrics["labelled"]["n_images"] = len(truth)
        metrics["labelled"]["n_no_face"] = sum(1 for c in pred if c.startswith("noface:"))
    return metrics


def _num(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
