"""Adding faces to an existing clustering without reclustering everything.

A new face whose mean similarity to one existing cluster passes the merge threshold (the same test average
linkage applies to a singleton and a cluster), clearly better than to any other cluster (`join_margin`), or
that passes the second-level link test for a lone face (`facedata.cluster.link.face_link_target`: its nearest
faces vote for the cluster and it sits within the cluster's spread-based allowance), and has no cannot-link
conflict there, simply joins it. The remaining new faces are *doubtful*: their neighbourhood,
meaning the clusters of their nearest faces plus the other doubtful new faces near them, is reclustered from
scratch with the full method, and only those labels change. Everything else keeps its cluster.

Constraints hold here as in a full clustering: cannot-links (two faces of one image) block a join and go into
the recluster; a new face with a must-link (a video track, a review decision) never joins on its own: it is
doubtful, and its whole must-link group, with the clusters its old members are in, is reclustered with the
group as one starting cluster. A group whose old members ended in different clusters is reclustered too.

How far this drifts from a full recluster is measured by `benchmarks/bench_cluster.py` (`partition_agreement`
between the two) and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facedata.cluster.algorithms import Options, cluster
from facedata.cluster.graph import compact, cos_of
from facedata.cluster.link import face_link_target

#: How far below the merge similarity a doubtful face's neighbour still pulls its cluster into the recluster.
NEIGHBOURHOOD_SLACK = 0.02


def add_faces(
    x_old: np.ndarray,
    labels_old: np.ndarray,
    x_new: np.ndarray,
    method: str,
    opts: Options,
    cannot: np.ndarray | None = None,
    must: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """Labels for old + new rows (old rows first, in order) and counts of what happened.

    `cannot`: cannot-link pairs, `must`: must-link groups, both over the concatenated rows (old rows
    0..n_old-1, then the new ones). `opts` is not modified.
    """
    from facedata.cluster.knn import knn

    x_old = np.asarray(x_old, dtype=np.float32)
    x_new = np.asarray(x_new, dtype=np.float32)
    n_old, n_new = len(x_old), len(x_new)
    x = np.concatenate([x_old, x_new]) if n_new else x_old
    labels = np.concatenate([compact(labels_old), np.full(n_new, -1, dtype=np.int64)])
    groups = [np.asarray(g, dtype=np.int64) for g in (must or []) if len(g) > 1]
    stats = {"n_old": n_old, "n_new": n_new, "n_joined": 0, "n_doubtful": 0, "n_reclustered": 0}
    stats["n_must_link_groups"] = len(groups)
    if n_new == 0 and all(np.unique(labels[g]).size == 1 for g in groups):
        return compact(labels), stats
    if n_old == 0:
        sub = replace(opts, knn_graph=None, cannot_link=cannot, must_link=groups)
        stats.update(n_doubtful=n_new, n_reclustered=n_new)
        return cluster(x, method, sub), stats
    linked = np.zeros(n_old + n_new, dtype=bool)
    for g in groups:
        linked[g] = True

    idx, sim = knn(x, opts.k, exact_max=opts.exact_knn_max, nprobe=opts.nprobe, seed=opts.seed)
    m = int(labels[:n_old].max()) + 1
    sums = np.zeros((m, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[:n_old], x_old)
    counts = np.bincount(labels[:n_old], minlength=m)
    cos_thr = cos_of(opts.threshold)
    partners = _cannot_map(cannot)

    doubtful = []
    for r in range(n_old, n_old + n_new):
        if linked[r]:  # its group decides together, in the recluster below
            doubtful.append(r)
            continue
        nb = idx[r][(idx[r] >= 0) & (idx[r] < n_old)]
        cands = np.unique(labels[nb])
        if cands.size == 0:
            doubtful.append(r)
            continue
        link = (sums[cands] @ x[r]) / counts[cands]
        order = np.argsort(-link)
        best, best_link = int(cands[order[0]]), float(link[order[0]])
        second = float(link[order[1]]) if cands.size > 1 else -1.0
        if not (best_link >= cos_thr and best_link - second >= opts.join_margin):
            # Not by average linkage; a person's straggler may still link by the second-level test.
            best = face_link_target(x[r], labels[nb], sums, counts, n_old + 1, opts) if opts.link else -1
        if best >= 0 and not any(labels[j] == best for j in partners.get(r, ())):
            labels[r] = best
            sums[best] += x[r]
            counts[best] += 1
        else:
            doubtful.append(r)
    stats["n_joined"] = n_new - len(doubtful)
    stats["n_doubtful"] = len(doubtful)
    # Must-link groups to settle: those with a doubtful (new) face, and those split over clusters.
    dset = np.asarray(doubtful, dtype=np.int64)
    is_doubtful = np.zeros(n_old + n_new, dtype=bool)
    is_doubtful[dset] = True
    open_groups = [g for g in groups if is_doubtful[g].any() or np.unique(labels[g]).size > 1]
    if not doubtful and not open_groups:
        return compact(labels), stats

    # The neighbourhood of the doubtful faces: the clusters of their neighbours that are nearly close enough to
    # merge with (a little below the merge threshold, so a cluster the face could tip over is included), and
    # the clusters the old members of their must-link groups are in.
    floor = cos_thr - NEIGHBOURHOOD_SLACK
    near = idx[dset][(idx[dset] >= 0) & (sim[dset] >= floor)]
    grouped = np.concatenate(open_groups) if open_groups else np.zeros(0, dtype=np.int64)
    near = np.concatenate([near, grouped])
    affected = np.unique(labels[near[labels[near] >= 0]])
    rows = np.flatnonzero(np.isin(labels, affected) & (labels >= 0))
    rows = np.union1d(np.union1d(rows, dset), grouped)
    stats["n_reclustered"] = int(rows.size)
    sub = replace(
        opts, knn_graph=None, cannot_link=_restrict(cannot, rows), must_link=_restrict_groups(groups, rows)
    )
    sub_labels = cluster(x[rows], method, sub)
    labels[rows] = labels.max() + 1 + sub_labels
    return compact(labels), stats


def _cannot_map(cannot) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    if cannot is None:
        return out
    for i, j in np.asarray(cannot, dtype=np.int64).reshape(-1, 2):
        out.setdefault(int(i), []).append(int(j))
        out.setdefault(int(j), []).append(int(i))
    return out


def _restrict_groups(groups: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    """Must-link groups cut to their members in `rows` (sorted), renumbered to positions in `rows`."""
    out = []
    for g in groups:
        inside = g[np.isin(g, rows)]
        if inside.size > 1:
            out.append(np.searchsorted(rows, inside))
    return out


def _restrict(cannot: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """Cannot-link pairs with both ends in `rows`, renumbered to positions in `rows`."""
    if cannot is None or len(cannot) == 0:
        return None
    cannot = np.asarray(cannot, dtype=np.int64).reshape(-1, 2)
    pos = np.full(int(max(cannot.max(), rows.max())) + 1, -1, dtype=np.int64)
    pos[rows] = np.arange(rows.size)
    a, b = pos[cannot[:, 0]], pos[cannot[:, 1]]
    ok = (a >= 0) & (b >= 0)
    return np.stack([a[ok], b[ok]], axis=1)
