"""faiss kNN graphs: exact equals brute force; the approximate index finds the same-identity neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.cluster.knn import default_nlist, knn
from facedata.cluster.synthetic import identity_sizes, make_embeddings


def test_exact_knn_matches_brute_force_and_excludes_self():
    x, _ = make_embeddings(500, seed=1)
    idx, sim = knn(x, 10)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    want = np.argsort(-s, axis=1)[:, :10]
    assert (idx != np.arange(len(x))[:, None]).all()
    assert np.allclose(sim, np.take_along_axis(s, want, 1), atol=1e-5)
    assert np.mean(idx == want) > 0.99  # ties may swap


def test_duplicates_keep_each_other_and_small_inputs_pad():
    x = np.tile(np.eye(3, dtype=np.float32)[:1], (3, 1))
    idx, sim = knn(x, 5)
    assert set(idx[0, :2]) == {1, 2} and np.allclose(sim[:, :2], 1.0)
    assert (idx[:, 2:] == -1).all() and np.isneginf(sim[:, 2:]).all()
    idx, sim = knn(np.zeros((0, 4), np.float32), 3)
    assert idx.shape == (0, 3)


def test_ivf_finds_most_same_identity_neighbours():
    x, labels = make_embeddings(20_000, seed=2)
    idx, _ = knn(x, 10, exact_max=0, nprobe=16)
    assert default_nlist(20_000) == 20_000 // 39 and default_nlist(10**6) == 4000
    # Same-identity neighbours of the first rows, found exactly among all rows, vs the IVF graph.
    s = x[:300] @ x.T
    s[np.arange(300), np.arange(300)] = -np.inf
    found = total = 0
    for i in range(300):
        same = set(np.flatnonzero((labels == labels[i]) & (s[i] >= np.sort(s[i])[-10])))
        found += len(same & set(idx[i]))
        total += len(same)
    assert total > 0 and found / total > 0.85


def test_identity_sizes_sum_and_are_heavy_tailed():
    sizes = identity_sizes(10_000, np.random.default_rng(0))
    assert sizes.sum() == 10_000 and sizes.min() >= 1
    assert (sizes == 1).mean() > 0.1 and sizes.max() > 50
    x, labels = make_embeddings(1000, seed=0)
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and labels.size == 1000


def test_dask_sharded_search_equals_the_local_one():
    distributed = pytest.importorskip("dask.distributed")
    from facedata.cluster.knn import knn_dask

    x, _ = make_embeddings(3000, seed=5)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        for exact_max in (10_000, 0):  # flat and IVF indexes travel to the workers
            want = knn(x, 8, exact_max=exact_max, nprobe=4)
            got = knn_dask(x, 8, client, exact_max=exact_max, nprobe=4, batch=700)
            # Batches of another size may round near-ties differently: the same neighbours, bar a few swaps.
            assert np.mean(got[0] == want[0]) > 0.999 and np.allclose(got[1], want[1], atol=1e-5)
