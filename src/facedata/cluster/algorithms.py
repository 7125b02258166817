"""Clustering algorithms over L2-normalised embeddings: facedata's own method and the standard recipes it is
measured against. Every method returns one integer label per row, numbered by first appearance, so the output
never depends on internal orderings.

All thresholds are L2 distances between unit vectors (dlib's convention: 0.6 is its same-person threshold);
a distance d corresponds to cosine similarity 1 - d^2 / 2.

- `knn_average` (default, `facedata.cluster.method`): exact average linkage on a faiss kNN candidate graph,
  merged in rounds of reciprocal best pairs, with cannot-link (two faces of one image) and must-link (one video
  track) constraints, followed by a refinement pass. `threshold` is the root-mean-square distance between the
  faces of two clusters at which they stop merging. See `facedata.cluster.graph` and `.refine`.
- `agglomerative`: scipy average linkage on the full distance matrix (mean L2 distance); O(n^2) memory.
- `chinese_whispers`: dlib's, as face_recognition documents it (edges between faces closer than `threshold`).
- `dbscan`: scikit-learn DBSCAN with eps = `threshold` (noise points become singletons).
- `hdbscan`: scikit-learn HDBSCAN (`min_cluster_size`; noise points become singletons).
- `leiden`: Leiden community detection (leidenalg) on the kNN graph with edges closer than `threshold`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from facedata.cluster.graph import average_linkage, compact, cos_of, must_link_labels, sample_groups
from facedata.params import default


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    return compact(np.asarray(labels))


def _noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return compact(labels)


@dataclass
class Options:
    """Everything a method may use besides the vectors; unused fields are ignored by methods that do not need
    them (the baselines ignore constraints). Defaults come from the params spec (`facedata params`), tuned on
    LFW with the default recognizer."""

    threshold: float = default("cluster.threshold")
    k: int = default("cluster.k")
    min_samples: int = default("cluster.min_samples")
    min_cluster_size: int = default("cluster.min_cluster_size")
    resolution: float = default("cluster.resolution")
    link: bool = default("cluster.link")
    link_k: int = default("cluster.link_k")
    link_vote: float = default("cluster.link_vote")
    link_gap: float = default("cluster.link_gap")
    link_z: float = default("cluster.link_z")
    link_open_share: float = default("cluster.link_open_share")
    link_reach: float = default("cluster.link_reach")
    refine: bool = default("cluster.refine")
    jaccard_k: int = default("cluster.jaccard_k")
    jaccard_weight: float = default("cluster.jaccard_weight")
    relax: float = default("cluster.relax")
    join_threshold: float = default("cluster.join_threshold")
    join_max_size: int = default("cluster.join_max_size")
    join_margin: float = default("cluster.join_margin")
    eject_threshold: float = default("cluster.eject_threshold")
    exact_knn_max: int = default("cluster.exact_knn_max")
    nprobe: int = default("cluster.nprobe")
    seed: int = 0
    cannot_link: np.ndarray | None = None  # (p, 2) row pairs: never in one cluster
    must_link: list[np.ndarray] = field(default_factory=list)  # groups of rows: start as one cluster
    knn_graph: tuple[np.ndarray, np.ndarray] | None = None  # precomputed (indices, similarities)
    progress: Callable[[int], None] | None = None  # called with the number of faces searched, for a bar


def knn_graph(x: np.ndarray, opts: Options) -> tuple[np.ndarray, np.ndarray]:
    """The graph passed in `opts.knn_graph`, else a new search. Never stored in `opts`: a cached graph would be
    silently reused for other vectors (`cluster()` is pure)."""
    if opts.knn_graph is not None:
        idx, _ = opts.knn_graph
        if len(idx) != len(x):
            raise ValueError(f"opts.knn_graph has {len(idx)} rows for {len(x)} vectors")
        return opts.knn_graph
    from facedata.cluster.knn import knn

    return knn(x, opts.k, exact_max=opts.exact_knn_max, nprobe=opts.nprobe, seed=opts.seed, progress=opts.progress)


def graph_edges(idx: np.ndarray, sim: np.ndarray, min_sim: float) -> tuple[np.ndarray, np.ndarray]:
    """Directed kNN edges (row, neighbour) with similarity >= min_sim."""
    n, k = idx.shape
    ok = (idx >= 0) & (sim >= min_sim)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, k))
    return rows[ok], idx[ok]


def shared_neighbours(
    idx: np.ndarray, a: np.ndarray, b: np.ndarray, k: int, chunk: int = 200_000, group: np.ndarray | None = None
) -> np.ndarray:
    """Jaccard overlap of the neighbourhoods {i} + i's k nearest of each pair (a[e], b[e]).

    Two photos of one person share most of their nearest faces (the person's other photos); a stranger who
    happens to sit close to a face shares few. Computed in chunks by comparing the two sorted neighbour rows.
    With `group` (`graph.sample_groups`), neighbourhoods are of independent samples: a video track counts once,
    so the frames of one track are one shared neighbour, not many (see `sample_neighbours`).
    """
    nb = sample_neighbours(idx, k, group)
    out = np.empty(a.size, dtype=np.float64)
    for s in range(0, a.size, chunk):
        na, nbb = nb[a[s : s + chunk]], nb[b[s : s + chunk]]
        same = (na[:, :, None] == nbb[:, None, :]) & (na[:, :, None] >= 0)
        inter = same.any(axis=2).sum(axis=1)
        size_a = (na >= 0).sum(axis=1)
        size_b = (nbb >= 0).sum(axis=1)
        out[s : s + chunk] = inter / np.maximum(size_a + size_b - inter, 1)
    return out


def sample_neighbours(idx: np.ndarray, k: int, group: np.ndarray | None = None, chunk: int = 20_000) -> np.ndarray:
    """Per face, its neighbourhood as rows of ids (-1 padded): itself, then its `k` nearest faces; with `group`,
    its own sample, then the first `k` other samples among its neighbours (the frames of a track are near each
    other and near whatever sits near the track: counted one by one, a lone face next to a track shares
    the whole track with it, one look of one person made to look like many shared neighbours)."""
    k = min(k, idx.shape[1])
    n = len(idx)
    if group is None:
        return np.concatenate([np.arange(n)[:, None], idx[:, :k]], axis=1)
    out = np.full((n, k + 1), -1, dtype=np.int64)
    out[:, 0] = group
    earlier = np.tril(np.ones((idx.shape[1], idx.shape[1]), dtype=bool), -1)
    for s in range(0, n, chunk):
        nb = idx[s : s + chunk]
        g = np.where(nb >= 0, group[np.maximum(nb, 0)], -1)
        dup = (g < 0) | (g == group[s : s + chunk, None])
        dup |= ((g[:, :, None] == g[:, None, :]) & earlier).any(axis=2)  # a sample seen earlier in the row
        rank = np.cumsum(~dup, axis=1)
        rows, cols = np.nonzero(~dup & (rank <= k))
        out[s + rows, rank[rows, cols]] = g[rows, cols]
    return out


def chance_corrected(jaccard: np.ndarray, n: int, k: int, k_graph: int) -> np.ndarray:
    """The Jaccard overlaps beyond what two random neighbourhoods of the same size share (negative values: 0).

    In a small set every neighbourhood covers most of the set (10 neighbours among 12 faces), so any two faces
    share most of them by chance, and two strangers often share all of them (both leave out the same odd
    face): uncorrected, they would get the full bonus and merge. Two random m-subsets of n share m^2 / n
    members on average, a Jaccard overlap of j0 = (m^2/n) / (2m - m^2/n); only the excess over j0 counts, so
    in a 12-face set the bonus is at most 15% of its weight, while on thousands of faces (j0 ~0.01) the
    correction changes nothing.
    """
    m = min(k, k_graph, max(n - 1, 0)) + 1
    inter = m * m / max(n, 1)
    j0 = inter / (2 * m - inter)
    return np.clip(jaccard - j0, 0.0, None)


def knn_average(x: np.ndarray, opts: Options) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cos_thr = cos_of(opts.threshold)
    idx, sim = knn_graph(x, opts)
    bonus_on = opts.jaccard_k > 0 and opts.jaccard_weight > 0
    slack = opts.relax + 0.02 + opts.jaccard_weight if bonus_on or opts.relax else 0.0
    a, b = graph_edges(idx, sim, cos_thr - slack)
    bonus = None
    if bonus_on:
        # Shared neighbours count independent samples (a video track once), and so does the chance level.
        group = sample_groups(n, opts.must_link) if opts.must_link else None
        n_samples = n if group is None else int(np.unique(group).size)
        jac = shared_neighbours(idx, a, b, opts.jaccard_k, group=group)
        bonus = opts.jaccard_weight * chance_corrected(jac, n_samples, opts.jaccard_k, idx.shape[1])
    init = must_link_labels(n, opts.must_link, opts.cannot_link) if opts.must_link else None
    labels = average_linkage(
        x,
        a,
        b,
        cos_thr,
        init_labels=init,
        cannot=opts.cannot_link,
        bonus=bonus,
        relax=opts.relax,
    )
    if opts.link:
        from facedata.cluster.link import link_clusters

        labels = link_clusters(x, labels, idx, opts)
    if opts.refine:
        from facedata.cluster.refine import refine

        labels = refine(x, labels, idx, sim, opts)
    return labels


def agglomerative(x: np.ndarray, opts: Options) -> np.ndarray:
    """Average-linkage agglomerative clustering, cut where the mean pairwise L2 distance exceeds the threshold.

    Memory is O(n^2) (the condensed distance matrix): fine to a few tens of thousands of faces.
    """
    n = len(x)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    z = linkage(pdist(np.asarray(x, dtype=np.float64), "euclidean"), method="average")
    return compact(fcluster(z, t=opts.threshold, criterion="distance"))


def chinese_whispers(x: np.ndarray, opts: Options) -> np.ndarray:
    """dlib's Chinese whispers on the graph of pairs closer than the threshold (face_recognition's recipe)."""
    import dlib

    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    vecs = [dlib.vector(row.astype(np.float64).tolist()) for row in np.asarray(x)]
    return compact(np.asarray(dlib.chinese_whispers_clustering(vecs, float(opts.threshold))))


def dbscan(x: np.ndarray, opts: Options) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    labels = DBSCAN(eps=opts.threshold, min_samples=opts.min_samples, metric="euclidean").fit_predict(x)
    return _noise_to_singletons(labels)


def hdbscan(x: np.ndarray, opts: Options) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    n = len(x)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    labels = HDBSCAN(
        min_cluster_size=max(2, opts.min_cluster_size),
        min_samples=max(1, opts.min_samples),
        metric="euclidean",
        copy=True,
    ).fit_predict(np.asarray(x, dtype=np.float64))
    return _noise_to_singletons(labels)


def leiden(x: np.ndarray, opts: Options) -> np.ndarray:
    import igraph as ig
    import leidenalg

    n = len(x)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    idx, sim = knn_graph(np.asarray(x, dtype=np.float32), opts)
    a, b = graph_edges(idx, sim, cos_of(opts.threshold))
    keys = np.unique(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    ea, eb = keys // n, keys % n
    w = np.einsum("ij,ij->i", x[ea], x[eb])
    g = ig.Graph(n=n, edges=np.stack([ea, eb], 1).tolist())
    part = leidenalg.find_partition(
        g,
        leidenalg.RBConfigurationVertexPartition,
        weights=w.tolist(),
        resolution_parameter=opts.resolution,
        seed=opts.seed,
    )
    return compact(np.asarray(part.membership))


METHODS: dict[str, Callable[[np.ndarray, Options], np.ndarray]] = {
    "knn_average": knn_average,
    "agglomerative": agglomerative,
    "chinese_whispers": chinese_whispers,
    "dbscan": dbscan,
    "hdbscan": hdbscan,
    "leiden": leiden,
}

#: Methods that honour cannot-link / must-link constraints.
CONSTRAINED = {"knn_average"}
#: Methods that work on the kNN graph (`Options.knn_graph` can hand them one already built).
GRAPH_METHODS = {"knn_average", "leiden"}


def cluster(x: np.ndarray, method: str, opts: Options | None = None, **kwargs) -> np.ndarray:
    """Cluster unit vectors `x` with `method`; options from `opts` and/or keyword arguments (which override
    `opts` for this call only: `opts` is never modified)."""
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; available: {', '.join(METHODS)}")
    unknown = [key for key in kwargs if key not in Options.__dataclass_fields__]
    if unknown:
        raise TypeError(f"unknown clustering option {unknown[0]!r}")
    opts = replace(opts or Options(), **kwargs)
    labels = METHODS[method](np.asarray(x, dtype=np.float32), opts)
    if len(labels) != len(x):
        raise AssertionError(f"{method} returned {len(labels)} labels for {len(x)} rows")
    return labels
