"""Per queried name, the dominant cluster: the identity the name most likely refers to.

A name's images are those collected for it. Each image votes once for every cluster one of its usable faces
is in; the cluster with the most votes is the name's dominant cluster. confidence = votes / images collected
(images where no face was usable count against it), margin = (top - runner-up) / images. When two names
choose the same cluster, the one with more votes keeps it and the other is marked `conflict`.

Then each name's dominant cluster *absorbs* the name's other images: an image collected for the name with no
face in the dominant cluster contributes its face nearest the cluster's centre direction when that face, or
the centre of the (multi-face) cluster it is in, is within `absorb_threshold` (L2) of the dominant centre,
and it is not in another name's dominant cluster. Clustering has to keep
strangers apart across the whole collection, so it stops merging early; inside one name's images the prior
that a photo found for a name shows that person is strong, and a face close to the person's centre is
almost always them. Absorbed faces keep their own `cluster_id` and are marked `absorbed`.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def dominant_clusters(
    query_images: dict[str, set[str]],
    face_cluster: dict[str, str],
    face_image: dict[str, str],
    min_confidence: float,
) -> list[dict]:
    """Rows for the `identities` manifest (without lineage)."""
    faces_of_image: dict[str, list[str]] = defaultdict(list)
    for fid, img in face_image.items():
        if fid in face_cluster:
            faces_of_image[img].append(fid)
    members = Counter(face_cluster.values())
    rows = []
    for name in sorted(query_images):
        imgs = query_images[name]
        votes: Counter = Counter()
        n_faces = 0
        for img in imgs:
            fids = faces_of_image.get(img, [])
            n_faces += len(fids)
            for cid in {face_cluster[f] for f in fids}:
                votes[cid] += 1
        ranked = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))
        n_img = len(imgs)
        row = {
            "query_name": name,
            "cluster_id": None,
            "n_images": n_img,
            "n_faces": n_faces,
            "n_in_cluster": 0,
            "n_members": 0,
            "confidence": 0.0,
            "margin": 0.0,
            "status": "no_faces",
            "reason": "no usable face in any image collected for this name",
        }
        if ranked:
            top_id, top = ranked[0]
            second = ranked[1][1] if len(ranked) > 1 else 0
            conf = top / n_img
            row.update(
                cluster_id=top_id,
                n_in_cluster=top,
                n_members=members[top_id],
                confidence=conf,
                margin=(top - second) / n_img,
                status="ok",
                reason=None,
            )
            if conf < min_confidence:
                row.update(
                    status="weak",
                    reason=f"dominant cluster holds {top}/{n_img} images "
                    f"(confidence {conf:.2f} < {min_confidence})",
                )
        rows.append(row)
    _resolve_conflicts(rows)
    return rows


def absorb_faces(
    rows: list[dict],
    query_images: dict[str, set[str]],
    face_cluster: dict[str, str],
    face_image: dict[str, str],
    vectors: dict[str, np.ndarray],
    threshold: float,
) -> dict[str, str]:
    """face_id -> name for faces absorbed into their name's dominant cluster (see the module docstring).
    Updates each row's `n_absorbed`."""
    out: dict[str, str] = {}
    if threshold <= 0:
        for r in rows:
            r["n_absorbed"] = 0
        return out
    claimed = {r["cluster_id"] for r in rows if r["status"] in ("ok", "weak") and r["cluster_id"]}
    faces_of_image: dict[str, list[str]] = defaultdict(list)
    members: dict[str, list[str]] = defaultdict(list)
    for fid, img in face_image.items():
        if fid in face_cluster:
            faces_of_image[img].append(fid)
            members[face_cluster[fid]].append(fid)
    cos_min = 1.0 - threshold * threshold / 2.0

    def centre(fids: list[str]) -> np.ndarray:
        c = np.sum([vectors[f] for f in fids], axis=0)
        return c / max(float(np.linalg.norm(c)), 1e-12)

    for r in rows:
        r["n_absorbed"] = 0
        if r["status"] not in ("ok", "weak") or not r["cluster_id"]:
            continue
        dom = r["cluster_id"]
        dom_centre = centre(members[dom])
        images = sorted(query_images[r["query_name"]])
        # Whole clusters whose centre sits near the dominant one (a split-off part of the same person)...
        near_clusters = {
            c
            for img in images
            for f in faces_of_image.get(img, [])
            if (c := face_cluster[f]) != dom
            and c not in claimed
            and len(members[c]) > 1
            and float(centre(members[c]) @ dom_centre) >= cos_min
        }
        for img in images:
            if any(face_cluster[f] == dom for f in faces_of_image.get(img, [])):
                continue
            fids = [f for f in faces_of_image.get(img, []) if face_cluster[f] not in claimed]
            if not fids:
                continue
            cos = [float(vectors[f] @ dom_centre) for f in fids]
            # ...or a face near the centre itself; the image contributes its face nearest the centre.
            ok = [k for k, f in enumerate(fids) if cos[k] >= cos_min or face_cluster[f] in near_clusters]
            if not ok:
                continue
            k = max(ok, key=lambda j: cos[j])
            if fids[k] not in out:
                out[fids[k]] = r["query_name"]
                r["n_absorbed"] += 1
    return out


def _resolve_conflicts(rows: list[dict]) -> None:
    by_cluster: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["cluster_id"] is not None and r["status"] in ("ok", "weak"):
            by_cluster[r["cluster_id"]].append(r)
    for claimants in by_cluster.values():
        if len(claimants) < 2:
            continue
        claimants.sort(key=lambda r: (-r["n_in_cluster"], -r["confidence"], r["query_name"]))
        winner = claimants[0]
        for loser in claimants[1:]:
            loser.update(
                status="conflict",
                reason=f"its dominant cluster is also {winner['query_name']!r}'s, which has more images in it",
            )


def _next_candidates(labels: np.ndarray, idx: np.ndarray, sim: np.ndarray, top: int) -> np.ndarray:
    """Per face, candidate other clusters (-1 padded): the clusters of its own neighbours, plus the `top`
    clusters most strongly linked to its cluster by a kNN edge in either direction (so a face deep inside its
    cluster, whose neighbours are all fellow members, still finds the cluster next door)."""
    n, k = idx.shape
    valid = idx >= 0
    nb_lab = np.where(valid, labels[np.where(valid, idx, 0)], -1)
    own = labels[:, None]
    mine = np.where(nb_lab != own, nb_lab, -1)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, k))
    ext = valid & (nb_lab != own)
    ca, cb = labels[rows[ext]], nb_lab[ext]
    ca, cb, w = np.concatenate([ca, cb]), np.concatenate([cb, ca]), np.concatenate([sim[ext], sim[ext]])
    m = int(labels.max()) + 1
    near = np.full((m, top), -1, dtype=np.int64)
    if ca.size and top:
        order = np.lexsort((-w, ca))
        ca, cb, w = ca[order], cb[order], w[order]
        key = ca * m + cb
        first = np.r_[True, key[1:] != key[:-1]]  # strongest edge per (cluster, other cluster)
        ca, cb, w = ca[first], cb[first], w[first]
        order = np.lexsort((-w, ca))
        ca, cb = ca[order], cb[order]
        start = np.searchsorted(ca, ca, side="left")
        rank = np.arange(ca.size) - start
        keep = rank < top
        near[ca[keep], rank[keep]] = cb[keep]
    return np.concatenate([mine, near[labels]], axis=1)


def face_doubt(
    x: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    threshold: float,
    top: int = 8,
    chunk: int = 65536,
) -> dict[str, np.ndarray]:
    """How sure each face's membership is, for review ordering.

    - `distance`: L2 distance from the face to the centre direction of the *rest* of its cluster (leave-one-out
      normalised mean; NaN for a singleton, which has no rest);
    - `next_label` / `next_distance`: the nearest other cluster's centre, among the clusters of the face's kNN
      neighbours and the `top` clusters most linked to its own (-1 / sqrt(2), i.e. "orthogonal", when the kNN
      graph reaches no other cluster);
    - `margin` = next_distance - distance: how much closer the face is to its own cluster than to the next;
    - `doubt` = d_own / (d_own + d_next) in [0, 1): 0 at its cluster's centre, 0.5 when halfway between its
      cluster and the next, above 0.5 when nearer another cluster. A singleton counts as `threshold` away from
      a cluster of its own, so a singleton close to a cluster (a likely missed member) is doubtful too.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    out = {
        "distance": np.full(n, np.nan, dtype=np.float32),
        "next_label": np.full(n, -1, dtype=np.int64),
        "next_distance": np.full(n, np.nan, dtype=np.float32),
        "margin": np.full(n, np.nan, dtype=np.float32),
        "doubt": np.zeros(n, dtype=np.float32),
    }
    if n == 0:
        return out
    labels = np.asarray(labels, dtype=np.int64)
    m = int(labels.max()) + 1
    sums = np.zeros((m, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=m)
    unit = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def dist(cos: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, 4.0))

    member = counts[labels] > 1
    cos_own = np.empty(n, dtype=np.float64)
    cand = _next_candidates(labels, idx, sim, top)
    best_cos = np.full(n, -np.inf)
    best_lab = np.full(n, -1, dtype=np.int64)
    for s in range(0, n, chunk):  # in chunks: n x d temporaries of a million faces would take gigabytes
        rows = slice(s, s + chunk)
        xs = x[rows]
        loo = sums[labels[rows]] - xs
        cos_own[rows] = np.einsum("ij,ij->i", loo, xs) / np.maximum(np.linalg.norm(loo, axis=1), 1e-12)
        for j in range(cand.shape[1]):
            c = cand[rows, j]
            ok = c >= 0
            cos = np.full(c.size, -np.inf)
            cos[ok] = np.einsum("ij,ij->i", unit[c[ok]], xs[ok])
            better = cos > best_cos[rows]
            best_cos[rows][better] = cos[better]
            best_lab[rows][better] = c[better]
    d_own = np.where(member, dist(cos_own), np.nan)
    has_next = best_lab >= 0
    d_next = np.where(has_next, dist(np.where(has_next, best_cos, 0.0)), np.sqrt(2.0))
    d_self = np.where(member, d_own, threshold)
    out["distance"] = d_own.astype(np.float32)
    out["next_label"] = best_lab
    out["next_distance"] = d_next.astype(np.float32)
    out["margin"] = np.where(member, d_next - d_own, np.nan).astype(np.float32)
    out["doubt"] = (d_self / np.maximum(d_self + d_next, 1e-12)).astype(np.float32)
    return out
