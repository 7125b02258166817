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

from facedata.params import default


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells (the usual faiss guidance), at most 65536, and few enough that k-means gets the
    39 training points per cell faiss asks for."""
    return int(max(1, min(65536, 4 * np.sqrt(n), n // 39)))


def build_index(
    x: np.ndarray,
    exact_max: int = default("cluster.exact_knn_max"),
    nprobe: int = default("cluster.nprobe"),
    nlist: int | None = None,
    seed: int = 0,
):
    """A faiss inner-product index over `x`: exact (flat) up to `exact_max` rows, IVF-Flat above."""
    faiss = _faiss()
    n, d = x.shape
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        cells = nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        index.cp.seed = seed
        index.train(x[rng.choice(n, size=min(n, cells * 40), replace=False)])
        index.nprobe = min(nprobe, cells)
    index.add(x)
    return index


def search_batch(index, q: np.ndarray, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of rows start..start+len(q) of the indexed set, without each row itself."""
    s, i = index.search(np.ascontiguousarray(q, dtype=np.float32), k + 1)
    rows = np.arange(start, start + len(q))
    # Drop each row's own entry (an exact duplicate may come first, so match by index, not by rank).
    own = i == rows[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(q)), drop] = False
    i = i[keep].reshape(len(q), k)
    s = s[keep].reshape(len(q), k)
    s[i < 0] = -np.inf
    return i, s


def knn(
    x: np.ndarray,
    k: int,
    exact_max: int = default("cluster.exact_knn_max"),
    nprobe: int = default("cluster.nprobe"),
    nlist: int | None = None,
    batch: int = 20_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar other rows of every row: (indices int64 n x k, similarities float32 n x k), best
    first. Missing neighbours (fewer than k other rows, or an approximate search that found fewer) are -1 with
    similarity -inf. Exact when n <= `exact_max`, IVF-Flat otherwise."""
    x, k_eff, idx, sim = _empty_result(x, k)
    n = len(x)
    if n == 0 or k_eff == 0:
        return idx, sim
    index = build_index(x, exact_max, nprobe, nlist, seed)
    for start in range(0, n, batch):
        i, s = search_batch(index, x[start : start + batch], start, k_eff)
        idx[start : start + len(i), :k_eff] = i
        sim[start : start + len(i), :k_eff] = s
        if progress:
            progress(len(i))
    return idx, sim


def _empty_result(x: np.ndarray, k: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(x as contiguous float32, neighbours a row can have, indices all -1, similarities all -inf)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    return x, min(k, max(n - 1, 0)), np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, np.float32)


def knn_dask(
    x: np.ndarray,
    k: int,
    client,
    exact_max: int = default("cluster.exact_knn_max"),
    nprobe: int = default("cluster.nprobe"),
    nlist: int | None = None,
    batch: int = 50_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`knn` with the searches spread over a dask.distributed cluster (`client`): the index is built once here,
    serialised and broadcast to the workers, and each worker searches batches of rows. Same result as `knn`;
    use it when one machine's cores are the bottleneck (tens of millions of faces)."""
    faiss = _faiss()
    x, k_eff, idx, sim = _empty_result(x, k)
    n = len(x)
    if n == 0 or k_eff == 0:
        return idx, sim
    blob = faiss.serialize_index(build_index(x, exact_max, nprobe, nlist, seed))
    [shared] = client.scatter([blob], broadcast=True)
    starts = list(range(0, n, batch))
    futures = client.map(
        _remote_search,
        [shared] * len(starts),
        [x[s : s + batch] for s in starts],
        starts,
        [k_eff] * len(starts),
        [nprobe] * len(starts),
        pure=False,
    )
    for start, (i, s) in zip(starts, client.gather(futures), strict=True):
        idx[start : start + len(i), :k_eff] = i
        sim[start : start + len(i), :k_eff] = s
    return idx, sim


def _remote_search(blob, q: np.ndarray, start: int, k: int, nprobe: int):
    faiss = _faiss()
    index = faiss.deserialize_index(blob)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    return search_batch(index, q, start, k)
