"""The round-based average linkage: equal to scipy's average linkage, constraints honoured, order-free."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from facedata.cluster.graph import average_linkage, compact, must_link_labels
from facedata.cluster.metrics import partition_agreement
from facedata.cluster.synthetic import make_embeddings


def full_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


@pytest.mark.parametrize("seed, threshold", [(0, 0.9), (1, 0.92), (2, 0.85), (3, 0.95)])
def test_equals_scipy_average_linkage_on_the_full_graph(seed, threshold):
    x, _ = make_embeddings(300, seed=seed)
    got = average_linkage(x, *full_edges(len(x)), threshold)
    z = linkage(pdist(x.astype(np.float64), "cosine"), "average")
    want = fcluster(z, t=1 - threshold, criterion="distance")
    assert partition_agreement(want, got)["changed_fraction"] == 0.0


def test_knn_candidate_graph_gives_the_same_result_on_separated_identities():
    from facedata.cluster.knn import knn

    x, _ = make_embeddings(600, seed=4)
    idx, _ = knn(x, 30)
    rows = np.repeat(np.arange(len(x)), idx.shape[1])
    sparse = average_linkage(x, rows, idx.ravel(), 0.9)
    full = average_linkage(x, *full_edges(len(x)), 0.9)
    assert partition_agreement(full, sparse)["bcubed_f"] > 0.99


def test_input_order_does_not_change_the_partition():
    x, _ = make_embeddings(400, seed=5)
    base = average_linkage(x, *full_edges(len(x)), 0.9)
    perm = np.random.default_rng(0).permutation(len(x))
    shuffled = average_linkage(x[perm], *full_edges(len(x)), 0.9)
    back = np.empty_like(shuffled)
    back[perm] = shuffled
    assert partition_agreement(base, back)["changed_fraction"] == 0.0


def test_cannot_link_keeps_identical_faces_apart():
    v = np.zeros((4, 8), np.float32)
    v[:, 0] = 1.0  # four identical vectors
    a, b = full_edges(4)
    assert len(set(average_linkage(v, a, b, 0.5))) == 1
    labels = average_linkage(v, a, b, 0.5, cannot=np.array([[0, 1]]))
    assert labels[0] != labels[1]
    assert len(set(labels)) == 2  # 2 and 3 still join one of them


def test_cannot_link_between_groups_blocks_the_merge_of_whole_clusters():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(16).astype(np.float32)
    x = base + 0.01 * rng.standard_normal((6, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a, b = full_edges(6)
    labels = average_linkage(x, a, b, 0.5, cannot=np.array([[0, 5]]))
    assert labels[0] != labels[5]
    assert len(set(labels)) == 2


def test_must_link_groups_start_together_even_when_far_apart():
    x = np.eye(4, dtype=np.float32)  # orthogonal: nothing merges on similarity
    init = must_link_labels(4, [np.array([0, 2])])
    labels = average_linkage(x, *full_edges(4), 0.9, init_labels=init)
    assert labels[0] == labels[2] and len(set(labels)) == 3


def test_must_link_group_holding_a_cannot_link_pair_is_split():
    init = must_link_labels(4, [np.array([0, 1, 2])], cannot=np.array([[0, 2]]))
    assert init[0] == init[1] and init[0] != init[2]
    with pytest.raises(ValueError, match="cannot-link"):
        average_linkage(np.eye(3, dtype=np.float32), *full_edges(3), 0.5, np.array([0, 0, 0]), np.array([[0, 2]]))


def test_edge_cases():
    assert average_linkage(np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros(0, int), 0.5).size == 0
    assert average_linkage(np.ones((1, 4), np.float32) / 2, np.zeros(0, int), np.zeros(0, int), 0.5).tolist() == [
        0
    ]
    assert compact(np.array([5, 5, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]


def test_bonus_linkage_equals_scipy_average_linkage_of_the_boosted_similarity():
    """With a bonus on some pairs: average linkage of (cosine + bonus), pairs without one adding 0."""
    x, _ = make_embeddings(200, seed=8)
    n = len(x)
    rng = np.random.default_rng(0)
    a, b = full_edges(n)
    bonus = np.where(rng.random(a.size) < 0.3, rng.uniform(0, 0.05, a.size), 0.0)
    s = (x @ x.T).astype(np.float64)
    s[a, b] += bonus
    s[b, a] += bonus
    z = linkage(squareform_dist(1.0 + 0.05 - s), "average")
    for thr in (0.9, 0.93):
        want = fcluster(z, t=1.0 + 0.05 - thr, criterion="distance")
        got = average_linkage(x, a, b, thr, bonus=bonus, floor=-10.0)
        assert partition_agreement(want, got)["changed_fraction"] == 0.0
    # Listing a pair twice (both directions of a kNN graph) counts its bonus once.
    twice = average_linkage(x, np.r_[a, b], np.r_[b, a], 0.93, bonus=np.r_[bonus, bonus], floor=-10.0)
    assert partition_agreement(got, twice)["changed_fraction"] == 0.0


def squareform_dist(d: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import squareform

    d = d.copy()
    np.fill_diagonal(d, 0.0)
    return squareform(np.clip(d, 0, None), checks=False)


def test_relax_lets_large_clusters_merge_but_not_single_faces():
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(32)
    centre /= np.linalg.norm(centre)

    def group(k, spread):
        g = centre + spread * rng.standard_normal((k, 32)) / np.sqrt(32)
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    x = np.vstack([group(12, 0.45), group(12, 0.45)]).astype(np.float32)
    a, b = full_edges(len(x))
    s = x @ x.T
    link = s[:12, 12:].mean()  # mean similarity between the two groups
    strict = average_linkage(x, a, b, float(link) + 0.004)
    relaxed = average_linkage(x, a, b, float(link) + 0.004, relax=0.01)
    assert len(set(relaxed)) < len(set(strict))
    lone = average_linkage(x[:2], np.array([0]), np.array([1]), float(s[0, 1]) + 0.001, relax=0.5)
    assert lone[0] != lone[1]  # two single faces need the full threshold, whatever the relax
