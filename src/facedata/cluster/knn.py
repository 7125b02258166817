"""k-nearest-neighbour graphs over unit vectors with faiss (inner product = cosine similarity).

Small sets use an exact flat index. Large ones use an inverted-file index (IVF-Flat): the vectors are split into
`nlist` cells by k-means and each query scans only the `nprobe` nearest cells, which is what makes a million
faces feasible on a laptop CPU. Face embeddings are strongly clustered by identity, so a face's true neighbours
almost always sit in the cells nearest to it; `benchmarks/bench_cluster.py` measures the recall of the
approximate graph against the exact one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells, the usual faiss guidance, bounded for small and huge inputs."""
    return int(min(65536, max(64, 4 * np.sqrt(n))))


def knn(
    x: np.ndarray,
    k: int,
    exact_max: int = 50_000,
    nprobe: int = 16,
    nlist: int | None = None,
    batch: int = 20_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar other rows of every row: (indices int64 n x k, similarities float32 n x k), best
    first. Missing neighbours (fewer than k other rows, or an approximate search that found fewer) are -1 with
    similarity -inf. Exact when n <= `exact_max`, IVF-Flat otherwise."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k_eff = min(k, max(n - 1, 0))
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k_eff == 0:
        return idx, sim
    faiss = _faiss()
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        cells = nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=min(n, cells * 40), replace=False)]
        index.cp.seed = seed
        index.train(train)
        index.nprobe = min(nprobe, cells)
    index.add(x)
    for start in range(0, n, batch):
        q = x[start : start + batch]
        s, i = index.search(q, k_eff + 1)
        rows = np.arange(start, start + len(q))
        # Drop each row's own entry (an exact duplicate may come first, so match by index, not by rank).
        own = i == rows[:, None]
        has_own = own.any(1)
        drop = np.where(has_own, own.argmax(1), k_eff)
        keep = np.ones_like(own)
        keep[np.arange(len(q)), drop] = False
        i = i[keep].reshape(len(q), k_eff)
        s = s[keep].reshape(len(q), k_eff)
        s[i < 0] = -np.inf
        idx[start : start + len(q), :k_eff] = i
        sim[start : start + len(q), :k_eff] = s
        if progress:
            progress(len(q))
    return idx, sim
