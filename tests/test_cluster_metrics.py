"""Clustering metrics against brute-force computations (loops over items and pairs) on small examples."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from facedata.cluster.metrics import KEYS, clustering_metrics, crawl_scores, partition_agreement


def brute(truth: list, pred: list) -> dict:
    n = len(truth)
    clusters = set(pred)
    classes = set(truth)
    pairs = list(zip(truth, pred, strict=True))
    purity = sum(max(Counter(t for t, c in pairs if c == k).values()) for k in clusters) / n
    inv = sum(max(Counter(c for t, c in pairs if t == k).values()) for k in classes) / n
    bp = br = 0.0
    for i in range(n):
        same_c = [j for j in range(n) if pred[j] == pred[i]]
        same_t = [j for j in range(n) if truth[j] == truth[i]]
        both = [j for j in same_c if truth[j] == truth[i]]
        bp += len(both) / len(same_c)
        br += len(both) / len(same_t)
    bp, br = bp / n, br / n
    tp = pred_pairs = true_pairs = 0
    for i, j in itertools.combinations(range(n), 2):
        sc, st = pred[i] == pred[j], truth[i] == truth[j]
        tp += sc and st
        pred_pairs += sc
        true_pairs += st
    pp = tp / pred_pairs if pred_pairs else 1.0
    pr = tp / true_pairs if true_pairs else 1.0

    def entropy(labels):
        return -sum(c / n * math.log(c / n) for c in Counter(labels).values())

    mi = 0.0
    for (c, t), nij in Counter(zip(pred, truth, strict=True)).items():
        pc, pt = pred.count(c) / n, truth.count(t) / n
        mi += nij / n * math.log((nij / n) / (pc * pt))
    hc, ht = entropy(pred), entropy(truth)
    nmi = 1.0 if hc == 0 and ht == 0 else mi / ((hc + ht) / 2)

    def f(p, r):
        return 2 * p * r / (p + r) if p + r else 0.0

    return {
        "purity": purity,
        "inverse_purity": inv,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": f(bp, br),
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f": f(pp, pr),
        "nmi": nmi,
        "n_clusters": len(clusters),
        "compactness": len(clusters) / n,
    }


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(KEYS)
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("seed", range(40))
def test_random_partitions_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    truth = [f"id{v}" for v in rng.integers(0, int(rng.integers(1, 8)), n)]
    pred = [int(v) for v in rng.integers(0, int(rng.integers(1, 10)), n)]
    assert_same(clustering_metrics(truth, pred), brute(truth, [str(p) for p in pred]))


def test_hand_example():
    # 3 of A, 2 of B; cluster 1 = {A, A, B}, cluster 2 = {A, B}.
    truth = ["A", "A", "B", "A", "B"]
    pred = [1, 1, 1, 2, 2]
    m = clustering_metrics(truth, pred)
    assert m["purity"] == pytest.approx((2 + 1) / 5)
    assert m["inverse_purity"] == pytest.approx((2 + 1) / 5)
    # BCubed precision: A's in c1 2/3 each, B in c1 1/3, A in c2 1/2, B in c2 1/2.
    assert m["bcubed_precision"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 5)
    # Pairs: predicted (c1: 3, c2: 1) = 4, true (A: 3, B: 1) = 4, true positives 1 (A,A in c1).
    assert m["pairwise_precision"] == pytest.approx(1 / 4)
    assert m["pairwise_recall"] == pytest.approx(1 / 4)
    assert m["n_clusters"] == 2
    assert m["compactness"] == pytest.approx(2 / 5)


def test_perfect_and_degenerate_clusterings():
    truth = ["a", "a", "b", "b", "c"]
    perfect = clustering_metrics(truth, [7, 7, 3, 3, 1])
    assert all(perfect[k] == pytest.approx(1.0) for k in KEYS if k not in ("n_clusters", "compactness"))
    singletons = clustering_metrics(truth, list(range(5)))
    assert singletons["purity"] == 1.0 and singletons["bcubed_precision"] == 1.0
    assert singletons["pairwise_precision"] == 1.0  # no predicted pairs: nothing wrongly joined
    assert singletons["pairwise_recall"] == 0.0 and singletons["inverse_purity"] == pytest.approx(3 / 5)
    one = clustering_metrics(truth, [0] * 5)
    assert one["bcubed_recall"] == 1.0 and one["nmi"] == 0.0 and one["purity"] == pytest.approx(2 / 5)


def test_nmi_matches_scikit_learn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(3)
    for _ in range(20):
        t = rng.integers(0, 6, 50)
        c = rng.integers(0, 9, 50)
        assert clustering_metrics(t, c)["nmi"] == pytest.approx(normalized_mutual_info_score(t, c), abs=1e-12)


def test_label_types_and_errors():
    assert clustering_metrics(["x", "y"], ["noface:1", "noface:2"])["n_clusters"] == 2
    with pytest.raises(ValueError, match="2 labels but 1"):
        clustering_metrics(["a", "b"], [1])
    with pytest.raises(ValueError, match="no items"):
        clustering_metrics([], [])


def test_partition_agreement_is_symmetric_bcubed():
    a = [0, 0, 1, 1, 2]
    b = [5, 5, 5, 6, 6]
    got = partition_agreement(a, b)
    want = brute([str(x) for x in a], [str(x) for x in b])
    assert got["bcubed_f"] == pytest.approx(want["bcubed_f"])
    assert got["changed_fraction"] == pytest.approx(np.mean([want_i for want_i in _changed(a, b)]))
    assert partition_agreement(a, a)["bcubed_f"] == 1.0 and partition_agreement(a, a)["changed_fraction"] == 0


def _changed(a, b):
    n = len(a)
    return [{j for j in range(n) if a[j] == a[i]} != {j for j in range(n) if b[j] == b[i]} for i in range(n)]


def test_crawl_scores_by_hand():
    # Query for "A": 4 images of A, 2 distractors. Kept: 3 of A and 1 distractor.
    truth = ["A", "A", "A", "A", "B", "C"]
    kept = [True, True, True, False, True, False]
    p, r = crawl_scores(truth, kept, "A")
    assert p == pytest.approx(3 / 4) and r == pytest.approx(3 / 4)
    assert crawl_scores(truth, [False] * 6, "A") == (1.0, 0.0)  # nothing kept: nothing wrong, nothing found
