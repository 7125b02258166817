"""Constrained average-linkage agglomeration over a sparse candidate graph, in rounds (RAC).

Why this shape:

- **Exact average linkage without an n x n matrix.** For unit vectors the mean cosine similarity between two
  clusters is (S_A . S_B) / (|A| |B|), where S is the sum of a cluster's vectors. Keeping one sum per cluster
  gives the exact average-linkage similarity of any two clusters in O(dim), however large they are; the kNN
  graph is only needed to say *which* pairs of clusters are worth comparing.
- **Rounds of reciprocal best pairs (RAC).** Average linkage is *reducible*: merging two clusters never makes
  the result more similar to a third cluster than the better of the two was. So all pairs of clusters that are
  each other's best partner can merge at once and the result equals sequential agglomerative clustering (on
  the candidate graph). Each round is a handful of vectorised numpy passes over the remaining edges.
- **Pruning.** By reducibility an edge below the threshold can never rise above it again, so it is dropped for
  good; what is left is small and shrinks every round.
- **Cannot-link constraints** (two faces in one image are two people) remove the edge between the clusters
  holding them, permanently; **must-link groups** (faces of one video track) start as one cluster.

Memory is O(n dim + edges); nothing is quadratic.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 262_144


def cos_of(distance: float) -> float:
    """Cosine similarity of two unit vectors `distance` apart (thresholds are L2 distances)."""
    return 1.0 - distance * distance / 2.0


def pair_keys(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * m + hi


def pair_dots(sums: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sums[a[i]] . sums[b[i]] for every i, in chunks (never an (edges x dim) array at once)."""
    out = np.empty(a.size, dtype=np.float64)
    for s in range(0, a.size, _CHUNK):
        sa, sb = sums[a[s : s + _CHUNK]], sums[b[s : s + _CHUNK]]
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", sa, sb, dtype=np.float64)
    return out


def _link(sums: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, bonus=None) -> np.ndarray:
    """Average linkage between clusters a[i] and b[i]: the mean over their pairs of faces of cosine similarity
    plus the pair's bonus (bonus = the sum of the bonuses of their pairs)."""
    dots = pair_dots(sums, a, b)
    if bonus is not None:
        dots = dots + bonus
    return dots / (counts[a].astype(np.float64) * counts[b])


def compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order of first appearance."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int64)
    uniq, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inv]


def sample_groups(n: int, must_link: list[np.ndarray] | None) -> np.ndarray:
    """Per face, the id of the independent sample it belongs to: the smallest row of its must-link group (the
    frames of one video track are one look of the person, not independent photos), else its own row."""
    group = np.arange(n, dtype=np.int64)
    for g in must_link or ():
        g = np.asarray(g, dtype=np.int64)
        if g.size:
            group[g] = g.min()
    return group


def must_link_labels(n: int, groups: list[np.ndarray] | None, cannot: np.ndarray | None = None) -> np.ndarray:
    """Initial labels: each must-link group is one cluster. A group that would hold both faces of a cannot-link
    pair is split into its parts greedily (the constraint that two faces of one image are different people wins
    over a track that jumped between them)."""
    labels = np.arange(n, dtype=np.int64)
    if not groups:
        return labels
    forbidden: dict[int, set[int]] = {}
    if cannot is not None:
        for i, j in np.asarray(cannot, dtype=np.int64).reshape(-1, 2):
            forbidden.setdefault(int(i), set()).add(int(j))
            forbidden.setdefault(int(j), set()).add(int(i))
    for g in groups:
        g = np.asarray(g, dtype=np.int64)
        if g.size < 2:
            continue
        parts: list[list[int]] = []
        for i in g.tolist():
            for part in parts:
                if not any(j in forbidden.get(i, ()) for j in part):
                    part.append(i)
                    break
            else:
                parts.append([i])
        for part in parts:
            labels[part] = min(part)
    return compact(labels)


def average_linkage(
    x: np.ndarray,
    edges_a: np.ndarray,
    edges_b: np.ndarray,
    threshold: float,
    init_labels: np.ndarray | None = None,
    cannot: np.ndarray | None = None,
    max_rounds: int = 100_000,
    floor: float | None = None,
    bonus: np.ndarray | None = None,
    relax: float = 0.0,
) -> np.ndarray:
    """Average-linkage clustering of unit vectors `x` (cosine similarity), merging while the mean similarity
    between two clusters joined by a candidate edge is >= `threshold`.

    `edges_a/edges_b`: candidate pairs of rows (e.g. a kNN graph). `init_labels`: starting clusters (must-link
    groups). `cannot`: (p, 2) row pairs that must end in different clusters. Returns one label per row,
    numbered by first appearance.

    `bonus`: a value per candidate pair added to its cosine similarity (e.g. how many neighbours the two faces
    share); the linkage is then the mean of (cosine + bonus) over all pairs of faces of the two clusters, pairs
    outside the graph counting 0. Bonuses are summed per pair of clusters as they merge.

    `relax`: the threshold for two clusters is lowered by relax * (1 - 1/sqrt(smaller size)): a mean over many
    pairs of faces is a steadier estimate than one pair, so large clusters may merge at a lower mean similarity
    while a single face still needs the full threshold.

    Edges below `floor` are dropped for good: exact for plain average linkage at floor = threshold (see the
    module docstring); with bonus or relax the default floor sits a little lower, so that the bonus of a pair
    just below the threshold is still counted when its clusters grow.
    """
    plain = bonus is None and relax == 0
    if floor is None:
        floor = threshold if plain else threshold - relax - 0.02
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lab = compact(init_labels) if init_labels is not None else np.arange(n, dtype=np.int64)
    m = int(lab.max()) + 1
    sums = np.zeros((m, x.shape[1]), dtype=np.float32)
    if m < n:
        np.add.at(sums, lab, x)
    else:
        sums[lab] = x
    counts = np.bincount(lab, minlength=m).astype(np.int64)

    cl = None
    if cannot is not None and len(cannot):
        cl = np.asarray(cannot, dtype=np.int64).reshape(-1, 2)
        cl = np.stack([lab[cl[:, 0]], lab[cl[:, 1]]], axis=1)
        if np.any(cl[:, 0] == cl[:, 1]):
            raise ValueError("a must-link group contains a cannot-link pair; split it first (must_link_labels)")

    ea, eb = np.asarray(edges_a, dtype=np.int64), np.asarray(edges_b, dtype=np.int64)
    if bonus is not None:
        # One bonus per unordered pair of rows (a kNN graph lists most pairs twice), then per pair of clusters.
        ra, rb, rbonus = _dedupe_sum(ea, eb, np.asarray(bonus, dtype=np.float64), n, first=True)
        a, b, bw = _dedupe_sum(lab[ra], lab[rb], rbonus, m)
    else:
        a, b = _dedupe(lab[ea], lab[eb], m)
        bw = None
    w = _link(sums, counts, a, b, bw)
    keep = w >= floor
    a, b, w, bw = a[keep], b[keep], w[keep], _take(bw, keep)
    if cl is not None:
        a, b, w, bw = _drop_forbidden(a, b, w, bw, cl, m)

    parent = np.arange(m, dtype=np.int64)
    cur = np.arange(m, dtype=np.int64)
    for _ in range(max_rounds):
        if a.size == 0:
            break
        need = threshold
        if relax:
            need = threshold - relax * (1.0 - 1.0 / np.sqrt(np.minimum(counts[a], counts[b])))
        active = w >= need
        if not active.any():
            break
        src = np.concatenate([a[active], b[active]])
        dst = np.concatenate([b[active], a[active]])
        ww = np.concatenate([w[active], w[active]])
        best_w = np.full(m, -np.inf)
        np.maximum.at(best_w, src, ww)
        top = ww == best_w[src]
        best = np.full(m, m, dtype=np.int64)
        np.minimum.at(best, src[top], dst[top])  # ties: the lowest cluster id, deterministically
        cand = np.flatnonzero(best < m)
        partner = best[cand]
        mutual = (best[partner] == cand) & (cand < partner)
        keep_id, gone = cand[mutual], partner[mutual]
        sums[keep_id] += sums[gone]
        counts[keep_id] += counts[gone]
        parent[gone] = keep_id
        cur[gone] = keep_id
        merged = np.zeros(m, dtype=bool)
        merged[keep_id] = True
        a, b = cur[a], cur[b]
        if cl is not None:
            cl = cur[cl]
        cur[gone] = gone
        touched = merged[a] | merged[b]
        ta, tb, tbw = a[touched], b[touched], _take(bw, touched)
        a, b, w, bw = a[~touched], b[~touched], w[~touched], _take(bw, ~touched)
        if tbw is None:
            ta, tb = _dedupe(ta, tb, m)
        else:
            ta, tb, tbw = _dedupe_sum(ta, tb, tbw, m)
        tw = _link(sums, counts, ta, tb, tbw)
        ok = tw >= floor
        ta, tb, tw, tbw = ta[ok], tb[ok], tw[ok], _take(tbw, ok)
        if cl is not None:
            ta, tb, tw, tbw = _drop_forbidden(ta, tb, tw, tbw, cl, m)
        a, b, w = np.concatenate([a, ta]), np.concatenate([b, tb]), np.concatenate([w, tw])
        bw = None if bw is None else np.concatenate([bw, tbw])
    root = _roots(parent)
    return compact(root[lab])


def _take(v: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if v is None else v[mask]


def _dedupe_sum(a, b, v, m: int, first: bool = False):
    """Unique unordered pairs (self pairs dropped) with `v` summed per pair, or taken once with `first`."""
    keys = pair_keys(a, b, m)
    ok = a != b
    keys, v = keys[ok], v[ok]
    uniq, start, inv = np.unique(keys, return_index=True, return_inverse=True)
    total = v[start] if first else np.bincount(inv, weights=v, minlength=uniq.size)
    return uniq // m, uniq % m, total


def _dedupe(a: np.ndarray, b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    keys = pair_keys(a, b, m)
    keys = np.unique(keys[a != b])
    return keys // m, keys % m


def _drop_forbidden(a, b, w, bw, cl: np.ndarray, m: int):
    if a.size == 0 or cl.size == 0:
        return a, b, w, bw
    bad = np.isin(pair_keys(a, b, m), pair_keys(cl[:, 0], cl[:, 1], m))
    return a[~bad], b[~bad], w[~bad], _take(bw, ~bad)


def _roots(parent: np.ndarray) -> np.ndarray:
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt
