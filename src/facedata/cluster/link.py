"""Second level of `knn_average`: link the clusters of one person that average linkage leaves apart.

Average linkage merges two clusters while the root-mean-square distance between their faces is below one
threshold. That distance mixes two things: how far apart the two centres are, and how spread out each cluster
is (for unit vectors, RMS^2 = |centre gap|^2 + spread_A^2 + spread_B^2, up to the centres' length). A person
photographed across decades, roles and make-up has a wide spread, so their photos form several clusters whose
centres almost coincide but whose RMS distance stays above any threshold that keeps press photos of
different people apart. One cut cannot serve both kinds of collection.

This pass looks at clusters instead of faces and links cluster B into cluster A (the larger one) when two
pieces of evidence agree:

- **The centres match, given how well they are known.** The centre of a cluster of n faces estimates the
  person's centre with a sampling error whose variance is spread^2 / n, so two samples of one person have
  centres about `spread^2 (1/n_A + 1/n_B)` apart (squared) even when nothing else differs (n counts
  independent samples: the frames of one video track are one look of the person and count once). B is allowed a
  centre gap of `link_gap^2 + link_z^2 spread^2 (1/n_A + 1/n_B)`: large fragments must nearly coincide,
  a lone face may sit as far from A's centre as A's own members typically do. `spread` is measured on the
  clusters themselves (mean squared distance of the members to their centre, pooled over A and B), so a
  person whose photos vary widely is allowed more than a person photographed the same way every time: the
  test adapts to each person's spread instead of one global cut.
- **The neighbourhood points at A.** Of the links from B's faces to their `link_k` nearest faces outside B,
  at least `link_vote` must land in A, beyond what chance gives in a small set (A's share of the other
  faces). A stranger who happens to sit near A's centre in a crowded collection has neighbours in many
  clusters; a person's straggler has them in the person's cluster.

Rounds repeat until nothing links (each cluster takes part in at most one link per round; the larger side
stays put). Then, in an **open run**, where almost every face has found a cluster of its person (at most
`link_open_share` of the faces are left in small clusters, of at most `SMALL` samples), the few left over are
the people's stragglers far more often than strangers: a small cluster links to the larger one its
neighbours vote for within `link_reach` of its centre, past the spread-based allowance, and the rounds go on.
The share of faces left in small clusters is the run's own estimate of how many strangers it holds: small on
a crawl of a dozen actors (stragglers and background faces), large on LFW (thousands of people with one or
two photos), where nothing changes.

Cannot-links (two faces of one image) block a link between small clusters; between two clusters of at least
`SOFT_CANNOT_SIZE` faces with such pairs for at most half of the smaller one (a collage of one actor, two
shots side by side) the evidence of the whole clusters wins, and afterwards the face of each conflicting pair
farther from the cluster's centre leaves it (with its video track), so no cluster ever holds two faces of
one image. Must-link groups (video tracks) are never split.

Everything is vectorised over the kNN edges: O(n k) per round, no quadratic step.
"""

from __future__ import annotations

import numpy as np

from facedata.cluster.graph import compact, pair_dots, sample_groups
from facedata.cluster.refine import centroids

#: Cannot-links between two clusters of at least this many faces (conflicting pairs touching at most half of
#: the smaller one) do not block their link; the conflicting faces are split off afterwards.
SOFT_CANNOT_SIZE = 3
#: A small cluster: at most this many independent samples (faces, or video tracks counted once).
SMALL = 3
MAX_ROUNDS = 200


def spread2(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per cluster, the mean squared L2 distance of its unit-vector members to its centre direction,
    corrected for the centre being estimated from the same members (x n / (n - 1)); 0 for singletons."""
    counts = np.asarray(counts, dtype=np.float64)
    norm = np.linalg.norm(sums, axis=1)
    raw = np.clip(2.0 - 2.0 * norm / np.maximum(counts, 1.0), 0.0, 4.0)
    return np.where(counts > 1, raw * counts / np.maximum(counts - 1.0, 1.0), 0.0)


def allowance2(
    n_a: np.ndarray, n_b: np.ndarray, sp2_a: np.ndarray, sp2_b: np.ndarray, gap: float, z: float
) -> np.ndarray:
    """The squared centre distance two clusters of one person may show: `gap^2` plus `z^2` times the
    sampling variance of the difference of their centres, spread^2 (1/n_A + 1/n_B), with the spread pooled
    over the clusters that have one (a singleton's spread is unknown: it borrows the other's)."""
    n_a = np.asarray(n_a, dtype=np.float64)
    n_b = np.asarray(n_b, dtype=np.float64)
    pooled = np.where(
        (n_a > 1) & (n_b > 1),
        (n_a * sp2_a + n_b * sp2_b) / np.maximum(n_a + n_b, 1.0),
        np.where(n_a > 1, sp2_a, sp2_b),
    )
    return gap * gap + z * z * pooled * (1.0 / n_a + 1.0 / n_b)


def chance_corrected_vote(share: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, n: int) -> np.ndarray:
    """The share of B's outside links that land in A, beyond A's share of all faces outside B (what random
    links would give): in a 14-face query most links land in the person's cluster by chance alone."""
    p0 = np.asarray(n_a, dtype=np.float64) / np.maximum(n - np.asarray(n_b, dtype=np.float64), 1.0)
    return np.clip((share - p0) / np.maximum(1.0 - p0, 1e-9), 0.0, 1.0)


def link_clusters(x: np.ndarray, labels: np.ndarray, idx: np.ndarray, opts) -> np.ndarray:
    """Labels after linking (see the module docstring); `idx` is the kNN graph (n x k, -1 padded), `opts`
    a `facedata.cluster.algorithms.Options` (link_k, link_vote, link_gap, link_z, cannot_link, must_link)."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    lab = compact(np.asarray(labels)).astype(np.int64)
    if n < 2:
        return lab
    sums, counts = centroids(x, lab)
    m = counts.size
    # Independent samples per cluster: the frames of one video track are one look of the person, so a track
    # counts once in the centres' standard errors (faces still count in the votes and spreads).
    heads = np.flatnonzero(sample_groups(n, opts.must_link) == np.arange(n))  # one face per sample
    samples = np.bincount(lab[heads], minlength=m).astype(np.int64)
    k = max(1, min(int(opts.link_k), idx.shape[1]))
    nb = idx[:, :k]
    valid = nb >= 0
    src = np.broadcast_to(np.arange(n)[:, None], nb.shape)[valid]
    dst = nb[valid]
    cannot = None
    if opts.cannot_link is not None and len(opts.cannot_link):
        cannot = np.asarray(opts.cannot_link, dtype=np.int64).reshape(-1, 2)

    reach = None
    for _ in range(MAX_ROUNDS):
        cs, cd = lab[src], lab[dst]
        out = cs != cd
        if not out.any():
            break
        n_out = np.bincount(cs[out], minlength=m)
        keys, links = np.unique(cs[out] * m + cd[out], return_counts=True)
        b, a = keys // m, keys % m  # links from B's faces to A's faces
        bigger = (counts[a] > counts[b]) | ((counts[a] == counts[b]) & (a < b))
        b, a, links = b[bigger], a[bigger], links[bigger]
        vote = chance_corrected_vote(links / np.maximum(n_out[b], 1), counts[a], counts[b], n)
        voted = vote >= opts.link_vote  # the cheap test first: only these pairs need their centres compared
        b, a, vote = b[voted], a[voted], vote[voted]
        unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        gap2 = np.clip(2.0 - 2.0 * pair_dots(unit, a, b), 0.0, 4.0)
        sp2 = spread2(sums, counts)
        allow = allowance2(samples[a], samples[b], sp2[a], sp2[b], opts.link_gap, opts.link_z)
        if reach is not None:
            allow = np.where((samples[b] <= SMALL) & (samples[a] > SMALL), np.maximum(allow, reach), allow)
        ok = gap2 <= allow
        b, a, score = b[ok], a[ok], (vote + allow - gap2)[ok]
        if cannot is not None and b.size:
            keep = ~_blocked(b, a, lab, cannot, counts, m)
            b, a, score = b[keep], a[keep], score[keep]
        b, a = _one_round(b, a, score, m)
        if b.size == 0:
            if reach is None and is_open_run(samples, opts):
                reach = opts.link_reach**2  # an open run: the faces left over are stragglers, not strangers
                continue
            break
        np.add.at(sums, a, sums[b])
        np.add.at(counts, a, counts[b])
        np.add.at(samples, a, samples[b])
        samples[b] = 0
        sums[b] = 0.0
        counts[b] = 0
        target = np.arange(m)
        target[b] = a
        lab = target[lab]
    if cannot is not None:
        lab = split_conflicts(x, lab, cannot, opts.must_link)
    return compact(lab)


def face_link_target(
    x_face: np.ndarray, nb_labels: np.ndarray, sums: np.ndarray, counts: np.ndarray, n: int, opts
) -> int:
    """The cluster one lone face links to under the test `link_clusters` applies to a singleton (its nearest
    faces' clusters vote, its distance to the centre within the allowance, or within `link_reach` in an open
    run), or -1: incremental adds use it so a new straggler joins its person as a full recluster would put it
    there. `nb_labels`: the clusters of its nearest faces, best first; `sums`/`counts`: per cluster; `n`: faces
    in the clustering."""
    nb_labels = np.asarray(nb_labels, dtype=np.int64)[: int(opts.link_k)]
    if nb_labels.size == 0:
        return -1
    cands, votes = np.unique(nb_labels, return_counts=True)
    vote = chance_corrected_vote(votes / nb_labels.size, counts[cands], np.ones(cands.size), n)
    c = sums[cands]
    unit = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    gap2 = np.clip(2.0 - 2.0 * unit @ np.asarray(x_face, dtype=np.float64), 0.0, 4.0)
    sp2 = spread2(c, counts[cands])
    allow = allowance2(counts[cands], np.ones(cands.size), sp2, np.zeros(cands.size), opts.link_gap, opts.link_z)
    if is_open_run(counts, opts):
        allow = np.where(counts[cands] > SMALL, np.maximum(allow, opts.link_reach**2), allow)
    ok = (vote >= opts.link_vote) & (gap2 <= allow) & (counts[cands] >= 2)
    if not ok.any():
        return -1
    score = np.where(ok, vote + allow - gap2, -np.inf)
    return int(cands[int(np.argmax(score))])


def is_open_run(samples: np.ndarray, opts) -> bool:
    """Whether at most `link_open_share` of the faces sit in small clusters (per cluster `samples`)."""
    samples = np.asarray(samples)
    total = samples.sum()
    return bool(
        opts.link_open_share > 0 and total and samples[samples <= SMALL].sum() <= opts.link_open_share * total
    )


def _blocked(b, a, lab, cannot, counts, m) -> np.ndarray:
    """Candidate links (B into A, B the smaller) that cannot-links forbid: any conflicting pair when either
    cluster is smaller than SOFT_CANNOT_SIZE, or conflicts for more than half of B's faces (two people who
    appear together in many photos or frames)."""
    ca, cb = lab[cannot[:, 0]], lab[cannot[:, 1]]
    diff = ca != cb
    if not diff.any():
        return np.zeros(b.size, dtype=bool)
    i, j, ca, cb = cannot[diff, 0], cannot[diff, 1], ca[diff], cb[diff]
    # Per pair of clusters, the distinct faces of each cluster involved (one face may conflict with several).
    key = np.concatenate([ca * m + cb, cb * m + ca])  # (cluster of the face, other cluster)
    face = np.concatenate([i, j])
    key = np.unique(np.stack([key, face], axis=1), axis=0)[:, 0]
    ckeys, cfaces = np.unique(key, return_counts=True)
    want = b * m + a
    pos = np.minimum(np.searchsorted(ckeys, want), ckeys.size - 1)
    hits = np.where(ckeys[pos] == want, cfaces[pos], 0)
    small = np.minimum(counts[a], counts[b])
    return (hits > 0) & ((small < SOFT_CANNOT_SIZE) | (2 * hits > small))


def _one_round(b, a, score, m) -> tuple[np.ndarray, np.ndarray]:
    """Each B links to its best-scoring A; an A does not move in the same round and a cluster that is some
    B's target stays put, so no chain moves twice at once (chains resolve over rounds)."""
    if b.size == 0:
        return b, a
    order = np.lexsort((-score, b))
    b, a = b[order], a[order]
    first = np.r_[True, b[1:] != b[:-1]]
    b, a = b[first], a[first]
    moving = np.zeros(m, dtype=bool)
    moving[b] = True
    ok = ~moving[a]
    targeted = np.zeros(m, dtype=bool)
    targeted[a[ok]] = True
    ok &= ~targeted[b]
    return b[ok], a[ok]


def split_conflicts(
    x: np.ndarray, labels: np.ndarray, cannot: np.ndarray, must_link: list[np.ndarray] | None = None
) -> np.ndarray:
    """Make every cannot-link pair end in different clusters: of two faces of one image sharing a cluster,
    the one whose group (its video track, or itself) sits farther from the cluster's centre leaves as a
    cluster of its own (all conflicting pairs at once; repeated until none is left, e.g. when two tracks
    left for one cluster still conflict)."""
    lab = np.asarray(labels, dtype=np.int64).copy()
    cannot = np.asarray(cannot, dtype=np.int64).reshape(-1, 2)
    group = sample_groups(len(lab), must_link)
    while True:
        bad = cannot[lab[cannot[:, 0]] == lab[cannot[:, 1]]]
        if bad.size == 0:
            return lab
        sums, _ = centroids(x, lab)
        m = len(sums)
        unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        cos = np.einsum("ij,ij->i", x, unit[lab])
        # A unit is a group's faces within one cluster (a track split by a cannot-link spans two clusters).
        _, unit_of, unit_size = np.unique(group * m + lab, return_inverse=True, return_counts=True)
        unit_cos = np.bincount(unit_of, weights=cos) / unit_size
        ui, uj = unit_of[bad[:, 0]], unit_of[bad[:, 1]]
        leave = np.unique(np.where(unit_cos[ui] < unit_cos[uj], ui, uj))
        new_label = np.full(unit_size.size, -1, dtype=np.int64)
        new_label[leave] = m + np.arange(leave.size)
        moved = new_label[unit_of] >= 0
        lab[moved] = new_label[unit_of[moved]]
