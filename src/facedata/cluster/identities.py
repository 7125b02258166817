"""Per queried name, the dominant cluster: the identity the name most likely refers to.

A name's images are those collected for it. Each image votes once for every cluster one of its usable faces
is in; the cluster with the most votes is the name's dominant cluster. confidence = votes / images collected
(images where no face was usable count against it), margin = (top - runner-up) / images. When two names
choose the same cluster, the one with more votes keeps it and the other is marked `conflict`.
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


def doubt_scores(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How unsure each face's membership is: 1 - cosine similarity to its cluster's mean direction, scaled so
    a face at the mean scores 0. Singletons score 0 (nothing to doubt). Reviewers see high doubt first."""
    doubt = np.zeros(len(x), dtype=np.float32)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if idx.size < 2:
            continue
        centre = x[idx].mean(0)
        centre /= max(np.linalg.norm(centre), 1e-12)
        doubt[idx] = np.clip(1.0 - x[idx] @ centre, 0, 2)
    return doubt
