"""Refinement after agglomeration: split off faces that do not belong, then let stragglers join.

Average linkage decides merges on whole-cluster averages, which leaves two kinds of error a face-level look
fixes cheaply:

- **eject**: a face far from the centre of the rest of its cluster (it was carried in by a merge of two
  groups) leaves and becomes a singleton;
- **join**: a singleton or small cluster (at most `join_max_size` faces) whose centre direction sits close to
  the centre direction of a larger cluster joins it. A cluster's normalised mean is a cleaner template than
  any single face, so a face 0.5 away from each member can be 0.4 from the centre; the margin to the
  second-best cluster keeps faces between two people where they are.

Both respect the constraints: cannot-link pairs never end up together, must-link (tracked) faces are never
ejected from their track. Candidates come from the kNN graph, so the pass is linear in the number of faces.
"""

from __future__ import annotations

import numpy as np

from facedata.cluster.graph import compact, cos_of


def centroids(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts) per label."""
    m = int(labels.max()) + 1 if labels.size else 0
    sums = np.zeros((m, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return sums, np.bincount(labels, minlength=m)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def refine(x: np.ndarray, labels: np.ndarray, idx: np.ndarray, sim: np.ndarray, opts) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    labels = compact(labels).copy()
    n = len(x)
    if n < 2:
        return labels
    cannot = _cannot_map(opts.cannot_link)

    # Eject: leave-one-out similarity to the cluster centre below the eject threshold.
    sums, counts = centroids(x, labels)
    own = counts[labels]
    big = own >= 3
    loo = sums[labels] - x
    loo_sim = np.einsum("ij,ij->i", _unit(loo), x)
    eject = big & (loo_sim < cos_of(opts.eject_threshold))
    for group in opts.must_link or ():  # a tracked face stays with its track
        eject[np.asarray(group, dtype=np.int64)] = False
    if eject.any():
        labels[eject] = labels.max() + 1 + np.arange(int(eject.sum()))
        labels = compact(labels)

    return join_small(x, labels, idx, opts, cannot)


def join_small(
    x: np.ndarray, labels: np.ndarray, idx: np.ndarray, opts, cannot: dict[int, set[int]]
) -> np.ndarray:
    """Clusters of at most `opts.join_max_size` faces move into the best larger neighbouring cluster when their
    centre directions are within `join_threshold` and clearly nearer than the next candidate (`join_margin`).
    Candidates are the clusters reached by the small cluster's kNN edges; smallest clusters move first."""
    sums, counts = centroids(x, labels)
    unit = _unit(sums).astype(np.float32)
    n, k = idx.shape
    small_face = counts[labels] <= opts.join_max_size
    if not small_face.any():
        return labels
    rows = np.broadcast_to(np.arange(n)[:, None], (n, k))
    ok = small_face[:, None] & (idx >= 0)
    src = labels[rows[ok]]
    dst = labels[idx[ok]]
    keep = (dst != src) & (counts[dst] > counts[src])
    src, dst = src[keep], dst[keep]
    if src.size == 0:
        return labels
    m = counts.size
    pairs = np.unique(src.astype(np.int64) * m + dst)
    src, dst = pairs // m, pairs % m
    cos = np.einsum("ij,ij->i", unit[src], unit[dst])
    order = np.lexsort((-cos, src))
    src, dst, cos = src[order], dst[order], cos[order]
    first = np.r_[True, src[1:] != src[:-1]]
    starts = np.flatnonzero(first)
    best_src, best_dst, best_cos = src[starts], dst[starts], cos[starts]
    second = np.full(starts.size, -np.inf)
    has_second = np.r_[starts[1:], src.size] - starts > 1
    second[has_second] = cos[starts[has_second] + 1]
    move = (best_cos >= cos_of(opts.join_threshold)) & (best_cos - second >= opts.join_margin)
    if not move.any():
        return labels
    target = np.arange(m)

    def root(c: int) -> int:
        while target[c] != c:  # a cluster that already moved: follow it
            c = int(target[c])
        return c

    members: dict[int, list[int]] = {}
    if cannot:
        for i in cannot:
            members.setdefault(int(labels[i]), []).append(i)
    for c in best_src[move][np.argsort(counts[best_src[move]], kind="stable")]:
        t = root(int(best_dst[np.searchsorted(best_src, c)]))
        if any(root(int(labels[j])) == t for i in members.get(int(c), ()) for j in cannot[i]):
            continue
        target[c] = t
    while True:  # resolve chains
        nxt = target[target]
        if np.array_equal(nxt, target):
            break
        target = nxt
    return compact(target[labels])


def _cannot_map(cannot) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    if cannot is None:
        return out
    for i, j in np.asarray(cannot, dtype=np.int64).reshape(-1, 2):
        out.setdefault(int(i), set()).add(int(j))
        out.setdefault(int(j), set()).add(int(i))
    return out


def _conflicts(i: int, target: int, labels: np.ndarray, cannot: dict[int, set[int]]) -> bool:
    return any(labels[j] == target for j in cannot.get(i, ()))
