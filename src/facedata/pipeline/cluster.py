"""Stage `cluster`: group faces by identity, pick each queried name's dominant cluster, score every face's doubt,
and measure the clustering against labels when the sources have them.

With `cluster.incremental`, a rerun that finds the previous clustering (made by the same params, code and
embeddings) and only some new faces adds them with `facedata.cluster.incremental.add_faces`, constraints
included, instead of reclustering everything; more than `cluster.incremental_max_new_fraction` new faces, or
anything else changed, trigger a full recluster.

Manifests are read column by column into numpy (a million faces' rows as Python dicts would take gigabytes
before clustering starts), and the clusters manifest is built the same way.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facedata import ids, manifest
from facedata.cluster.algorithms import GRAPH_METHODS
from facedata.cluster.faceset import FaceSet, cluster_faces, constraints, options, read_faceset
from facedata.cluster.graph import compact
from facedata.cluster.identities import absorb_faces, dominant_clusters, face_doubt
from facedata.cluster.incremental import add_faces
from facedata.cluster.knn import knn, knn_dask
from facedata.cluster.metrics import LOG_COLUMNS, clustering_metrics, labelled_assignment, labelled_items
from facedata.lineage import LINEAGE_TYPE
from facedata.pipeline.runner import StageContext, embeddings_model
from facedata.review import decisions
from facedata.review.constraints import clustering_constraints, enforce, identities_of, review_columns
from facedata.review.decisions import State
from facedata.scale.connect import connect, dashboard_link, dask_address


def previous_labels(ctx: StageContext, fs: FaceSet, model) -> np.ndarray | None:
    """Labels per row of `fs` from the last run (-1 for new faces), when that run was made by the same params,
    code and embedding model."""
    try:
        old = manifest.read("clusters", ctx.root, missing_ok=True, columns=["face_id", "cluster_id", "lineage"])
    except manifest.ManifestError:  # written by an older version: recluster from scratch
        return None
    if not old.num_rows or model is None:
        return None
    lin = old["lineage"].combine_chunks()
    keys = ("params_hash", "code_hash", "model_name", "model_version", "model_sha256")
    distinct = pa.table({k: lin.field(k) for k in keys}).group_by(list(keys)).aggregate([]).to_pylist()
    if len(distinct) != 1 or not ctx.reusable(distinct[0], model):
        return None
    codes = pc.dictionary_encode(old["cluster_id"]).combine_chunks()
    pos = pc.index_in(pa.array(fs.face_ids, pa.string()), value_set=old["face_id"])
    prev = codes.indices.take(pos.fill_null(0)).to_numpy(zero_copy_only=False).astype(np.int64)
    prev[~pc.is_valid(pos).to_numpy(zero_copy_only=False)] = -1
    return prev


def neighbours(ctx: StageContext, x: np.ndarray, client=None) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph over `x` (cluster.k): on the Dask cluster (`knn_dask`, the same graph) when the stage has a
    client, which it has only above `cluster.exact_knn_max` faces with a cluster configured; else here."""
    p = ctx.p
    if client is not None:
        return knn_dask(x, p["k"], client, exact_max=p["exact_knn_max"], nprobe=p["nprobe"])
    return knn(x, p["k"], exact_max=p["exact_knn_max"], nprobe=p["nprobe"])


@contextmanager
def knn_client(ctx: StageContext, n: int) -> Iterator:
    """A Dask client for the kNN search when one is configured and `n` faces are beyond the exact search's
    limit (only the approximate search of millions pays for a cluster); else None. The rest stays local."""
    address = dask_address(ctx.params)
    if not address or n <= ctx.p["exact_knn_max"]:
        yield None
        return
    with connect(address) as client:
        link = dashboard_link(client)
        print(
            f"facedata cluster: kNN search of {n} faces on the Dask cluster at {client.scheduler.address}"
            + (f"; dashboard: {link}" if link else ""),
            file=sys.stderr,
            flush=True,
        )
        ctx.run["dashboard"] = link
        yield client


def assign(
    ctx: StageContext, fs: FaceSet, model, state: State | None = None, client=None
) -> tuple[np.ndarray, dict, tuple | None]:
    """Labels for every face, how they were obtained (full or incremental), and the kNN graph when one was
    built over all faces in `fs` order (reused for the doubt scores). Review decisions (`state`) go in as
    constraints and are then enforced on the labels, whichever way they were obtained."""
    p = ctx.p
    state = state or State()

    def extra(sub: FaceSet):
        return clustering_constraints(state, sub.face_ids)

    prev = previous_labels(ctx, fs, model) if p["incremental"] and len(fs) else None
    if prev is not None and (prev >= 0).any():
        new = np.flatnonzero(prev < 0)
        old = np.flatnonzero(prev >= 0)
        if new.size <= p["incremental_max_new_fraction"] * old.size:
            order = np.concatenate([old, new])
            cannot, must = constraints(fs.take(order), p, extra)
            labels_sorted, stats = add_faces(
                fs.x[old], prev[old], fs.x[new], p["method"], options(p), cannot=cannot, must=must
            )
            labels = np.empty(len(fs), dtype=np.int64)
            labels[order] = labels_sorted
            return compact(enforce(labels, state, fs.face_ids)), {"mode": "incremental", **stats}, None
    graph = neighbours(ctx, fs.x, client) if client is not None and p["method"] in GRAPH_METHODS else None
    with ctx.progress(total=len(fs), desc="cluster: neighbours", unit="face") as bar:
        result = cluster_faces(fs, p, progress=bar.update, extra=extra, graph=graph)
    return compact(enforce(result.labels, state, fs.face_ids)), {"mode": "full", **result.info}, result.knn_graph


def _column(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    """Floats with NaN/inf as nulls."""
    values = np.asarray(values)
    return pa.array(values, typ, mask=~np.isfinite(values))


def run(ctx: StageContext) -> dict:
    p, model_name = ctx.p, ctx.params["embed"]["model"]
    fs, images, faces = read_faceset(ctx.root, model_name)
    model = embeddings_model(ctx.root, model_name)
    state = decisions.fold(decisions.read(ctx.root))
    n = len(fs)
    with knn_client(ctx, n) as client:
        ctx.run["knn"] = "local" if client is None else "dask"
        labels, how, graph = assign(ctx, fs, model, state, client)
        if n and graph is None:
            graph = neighbours(ctx, fs.x, client)

    # Cluster ids: named after the smallest member face id (rows are sorted by face id, so the first row).
    sizes = np.bincount(labels) if n else np.zeros(0, dtype=np.int64)
    _, first = np.unique(labels, return_index=True)
    cid_of_label = [ids.cluster_id([fs.face_ids[i]]) for i in first]
    face_cluster = dict(zip(fs.face_ids, (cid_of_label[lab] for lab in labels), strict=True))

    image_ids = images["image_id"].to_pylist()
    query_of_image = dict(zip(image_ids, images["query_name"].to_pylist(), strict=True))
    query_images: dict[str, set[str]] = defaultdict(set)
    for img, q in query_of_image.items():
        if q is not None:
            query_images[q].add(img)
    face_image = dict(zip(fs.face_ids, fs.image_ids, strict=True))
    identity_rows = dominant_clusters(query_images, face_cluster, face_image, p["min_confidence"])
    owner = {r["cluster_id"]: r["query_name"] for r in identity_rows if r["status"] in ("ok", "weak")}
    vectors = dict(zip(fs.face_ids, fs.x, strict=True))
    absorbed = absorb_faces(identity_rows, query_images, face_cluster, face_image, vectors, p["absorb_threshold"])
    del vectors
    doubt = face_doubt(fs.x, labels, *graph, p["threshold"]) if n else None

    lineage = ctx.lineage(model)
    cid_arr = pa.array(cid_of_label, pa.string())
    auto = [absorbed.get(f) or owner.get(face_cluster[f]) for f in fs.face_ids]
    identity, reviewed_cluster = identities_of(fs.face_ids, labels, state, auto)
    accepted = {r["target"] for r in state.active if r["action"] in ("accept", "name") and r["target"]}
    identity_rows = reviewed_identities(identity_rows, reviewed_cluster, accepted, cid_of_label, sizes)
    review = review_columns(fs.face_ids, state)
    nxt = doubt["next_label"] if n else np.zeros(0, dtype=np.int64)
    clusters = pa.table(
        {
            "face_id": pa.array(fs.face_ids, pa.string()),
            "image_id": pa.array(fs.image_ids, pa.string()),
            "cluster_id": cid_arr.take(pa.array(labels)),
            "cluster_size": pa.array(sizes[labels].astype(np.int32)),
            "method": pa.array(np.full(n, p["method"], dtype=object), pa.string()),
            "query_name": pa.array([query_of_image.get(img) for img in fs.image_ids], pa.string()),
            "identity": pa.array(identity, pa.string()),
            "absorbed": pa.array([f in absorbed for f in fs.face_ids], pa.bool_()),
            "doubt": pa.array(doubt["doubt"] if n else np.zeros(0), pa.float32()),
            "distance": _column(doubt["distance"] if n else np.zeros(0), pa.float32()),
            "margin": _column(doubt["margin"] if n else np.zeros(0), pa.float32()),
            "next_cluster_id": cid_arr.take(pa.array(np.where(nxt >= 0, nxt, 0), mask=nxt < 0))
            if n
            else pa.array([], pa.string()),
            **{k: pa.array(v, pa.string()) for k, v in review.items()},
            "lineage": pa.repeat(pa.scalar(lineage, LINEAGE_TYPE), n),
        }
    )
    for r in identity_rows:
        r["lineage"] = lineage
    manifest.write("clusters", clusters, ctx.root)
    manifest.write("identities", manifest.from_rows("identities", identity_rows), ctx.root)

    statuses: dict[str, int] = defaultdict(int)
    for r in identity_rows:
        statuses[r["status"]] += 1
    ctx.run["assignment"] = how
    metrics = {
        "method": p["method"],
        "threshold": p["threshold"],
        "n_faces": n,
        "n_clusters": int(sizes.size),
        "n_singletons": int(np.sum(sizes == 1)),
        "largest_cluster": int(sizes.max(initial=0)),
        "n_queries": len(identity_rows),
        "identities": dict(sorted(statuses.items())),
        "n_absorbed": len(absorbed),
        "n_reviewed_faces": sum(1 for v in review["review_decision"] if v is not None),
        "n_review_decisions": len(state.active),
        "mean_confidence": round(float(np.mean([r["confidence"] for r in identity_rows])), 4)
        if identity_rows
        else 0.0,
    }
    labelled = labelled_images(ctx.root, images, faces, face_cluster)
    if labelled is not None:
        truth, pred = labelled
        m = clustering_metrics(truth, pred)
        metrics["labelled"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        metrics["labelled"]["n_images"] = len(truth)
        metrics["labelled"]["n_no_face"] = sum(1 for c in pred if c.startswith("noface:"))
    return metrics


def reviewed_identities(
    rows: list[dict], cluster_of: dict[str, int], accepted: set[str], cid_of_label: list[str], sizes
) -> list[dict]:
    """Identity rows with the reviewers' choices: a name a reviewer accepted (or gave to a cluster) is usable
    (status ok) whatever the automatic choice said, with the cluster its reviewed faces are in when the
    automatic choice had none usable; a name given in review to a cluster nobody searched for (an unnamed
    video cluster) gets a row of its own. Faces merely moved to a name do not make it usable."""
    by_name = {r["query_name"]: r for r in rows}
    for name, lab in sorted(cluster_of.items()):
        r = by_name.get(name)
        if r is None:
            r = by_name[name] = {"query_name": name, "n_images": 0, "n_faces": 0, "n_in_cluster": 0,
                                 "confidence": 1.0, "margin": 1.0, "n_absorbed": 0, "status": None}  # fmt: skip
        was = r["status"]
        if name not in accepted and was is not None:
            continue
        if was != "ok":  # the automatic choice had no usable cluster: the reviewed one is the name's
            r.update(cluster_id=cid_of_label[lab], n_members=int(sizes[lab]))
        r.update(
            status="ok", reason="accepted in review" if was in (None, "ok") else f"accepted in review (was {was})"
        )
    return [by_name[k] for k in sorted(by_name)]


def labelled_images(
    root, images: pa.Table, faces: pa.Table, face_cluster: dict[str, str]
) -> tuple[list, list] | None:
    """`labelled_assignment` over the files of the labelled folder sources; None without labels."""
    if not images.num_rows or images["label"].null_count == images.num_rows:
        return None
    ok = faces.filter(pc.and_(pc.equal(faces["status"], "ok"), pc.equal(faces["is_primary"], True)))
    primary = dict(zip(ok["image_id"].to_pylist(), ok["face_id"].to_pylist(), strict=True))
    log = manifest.read("crawl_log", root, missing_ok=True, columns=LOG_COLUMNS).to_pylist()
    image_label = dict(zip(images["image_id"].to_pylist(), images["label"].to_pylist(), strict=True))
    items = labelled_items(log, image_label)
    return labelled_assignment(items, primary, face_cluster) if items else None
