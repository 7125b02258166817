"""Stage `cluster`: group faces by identity, pick each queried name's dominant cluster, and measure the
clustering against labels when the sources have them."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from facedata import ids, manifest
from facedata.cluster.algorithms import cluster
from facedata.cluster.identities import dominant_clusters, doubt_scores
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


def run(ctx: StageContext) -> dict:
    p, model = ctx.p, ctx.params["embed"]["model"]
    images = manifest.read("images", ctx.root).to_pylist()
    faces = [f for f in manifest.read("faces", ctx.root).to_pylist() if f["status"] == "ok"]
    emb = {
        r["face_id"]: r["vector"] for r in manifest.read("embeddings", ctx.root).to_pylist() if r["model"] == model
    }
    faces = sorted((f for f in faces if f["face_id"] in emb), key=lambda f: f["face_id"])
    x = np.asarray([emb[f["face_id"]] for f in faces], dtype=np.float32).reshape(len(faces), -1)
    labels = cluster(x, p["method"], p["threshold"])

    members: dict[int, list[str]] = defaultdict(list)
    for f, lab in zip(faces, labels, strict=True):
        members[int(lab)].append(f["face_id"])
    cid_of_label = {lab: ids.cluster_id(m) for lab, m in members.items()}
    face_cluster = {f["face_id"]: cid_of_label[int(lab)] for f, lab in zip(faces, labels, strict=True)}

    image_query = {r["image_id"]: r["query_name"] for r in images}
    query_images: dict[str, set[str]] = defaultdict(set)
    for r in images:
        if r["query_name"] is not None:
            query_images[r["query_name"]].add(r["image_id"])
    lineage = ctx.lineage(model)
    identity_rows = dominant_clusters(
        query_images, face_cluster, {f["face_id"]: f["image_id"] for f in faces}, p["min_confidence"]
    )
    owner = {r["cluster_id"]: r["query_name"] for r in identity_rows if r["status"] in ("ok", "weak")}
    doubt = doubt_scores(x, labels) if len(faces) else np.zeros(0)
    sizes = {cid: len(m) for cid, m in zip(cid_of_label.values(), members.values(), strict=True)}
    cluster_rows = [
        {
            "face_id": f["face_id"],
            "image_id": f["image_id"],
            "cluster_id": face_cluster[f["face_id"]],
            "cluster_size": sizes[face_cluster[f["face_id"]]],
            "method": p["method"],
            "query_name": image_query.get(f["image_id"]),
            "identity": owner.get(face_cluster[f["face_id"]]),
            "doubt": float(d),
            "lineage": lineage,
        }
        for f, d in zip(faces, doubt, strict=True)
    ]
    for r in identity_rows:
        r["lineage"] = lineage
    manifest.write("clusters", manifest.from_rows("clusters", cluster_rows), ctx.root)
    manifest.write("identities", manifest.from_rows("identities", identity_rows), ctx.root)

    statuses = defaultdict(int)
    for r in identity_rows:
        statuses[r["status"]] += 1
    metrics = {
        "method": p["method"],
        "threshold": p["threshold"],
        "n_faces": len(faces),
        "n_clusters": len(members),
        "n_queries": len(identity_rows),
        "identities": dict(sorted(statuses.items())),
        "mean_confidence": round(float(np.mean([r["confidence"] for r in identity_rows])), 4)
        if identity_rows
        else 0.0,
    }
    truth, pred = labelled_assignment(images, faces, face_cluster)
    if truth:
        m = clustering_metrics(truth, pred)
        metrics["labelled"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        metrics["labelled"]["n_images"] = len(truth)
        metrics["labelled"]["n_no_face"] = sum(1 for c in pred if c.startswith("noface:"))
    return metrics
