"""Refinement after agglomeration: split off faces that do not belong, then let stragglers join.

Average linkage decides merges on whole-cluster averages, which leaves two kinds of error a face-level look
fixes cheaply:

- **eject**: a face far from the centre of the rest of its cluster (it was carried in by a merge of two
  groups) leaves and becomes a singleton;
- **join**: a singleton or small cluster whose faces sit close to the *centre direction* of a larger cluster
  joins it. A cluster's normalised mean is a cleaner template than any single face, so a face 0.5 away from
  each member can be 0.4 from the centre; the margin to the second-best cluster keeps faces between two
  people where they are.

Both respect the constraints: cannot-link pairs never end up together, must-link (tracked) faces are never
ejected from their track. Candidates come from the kNN
graph, so the pass is linear in the number of faces.
"""

from __future__ import annotations

import numpy as np

from facedata.cluster.graph import compact


def centroids(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts) per label."""
    m = int(labels.max()) + 1 if labels.size else 0
    sums = np.zeros((m, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return sums, np.bincount(labels, minlength=m)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def refine(x: np.ndarray, labels: np.ndarray, idx: np.ndarray, sim: np.ndarray, opts) -> np.ndarray:
    from facedata.cluster.algorithms import cos_of

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

    # Join: singletons move to the best neighbouring cluster's centre when close enough and clearly best.
    sums, counts = centroids(x, labels)
    unit = _unit(sums).astype(np.float32)
    join_cos = cos_of(opts.join_threshold)
    small = np.flatnonzero(counts[labels] <= 1)
    if small.size:
        nb = idx[small]
        ok = nb >= 0
        cand = np.where(ok, labels[np.where(ok, nb, 0)], -1)
        cand[cand == labels[small][:, None]] = -1
        cand[(cand >= 0) & (counts[np.maximum(cand, 0)] <= 1)] = -1  # only into real clusters
        cos = np.full(cand.shape, -np.inf)
        r, c = np.nonzero(cand >= 0)
        cos[r, c] = np.einsum("ij,ij->i", unit[cand[r, c]], x[small[r]])
        # Best and second-best *distinct* clusters per face (a cluster may appear several times in a row).
        order = np.argsort(-cos, axis=1)
        cs = np.take_along_axis(cos, order, 1)
        cl = np.take_along_axis(cand, order, 1)
        best, best_cos = cl[:, 0], cs[:, 0]
        other = np.where(cl != best[:, None], cs, -np.inf).max(axis=1)
        with np.errstate(invalid="ignore"):  # rows without any candidate: -inf - -inf
            lead = best_cos - other
        move = (best >= 0) & (best_cos >= join_cos) & (lead >= opts.join_margin)
        for i, target in zip(small[move], best[move], strict=True):
            if cannot and _conflicts(int(i), int(target), labels, cannot):
                continue
            labels[i] = target
    return compact(labels)


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
