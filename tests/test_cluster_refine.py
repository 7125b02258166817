"""Refinement after agglomeration: outliers leave, stragglers join a near centre, constraints hold."""

from __future__ import annotations

import numpy as np

from facedata.cluster.algorithms import Options, cos_of
from facedata.cluster.knn import knn
from facedata.cluster.refine import refine


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def scene(seed=0):
    """A tight cluster of 10 around `a`, a face at distance ~0.45 from `a`, a pair at ~0.45 from `a`, and a
    far face wrongly put in the cluster."""
    rng = np.random.default_rng(seed)
    d = 64
    a = _unit(rng.standard_normal(d))

    def near(dist, k=1):
        # unit vectors at about `dist` (L2) from a
        out = []
        for _ in range(k):
            r = rng.standard_normal(d)
            r -= (r @ a) * a
            r = _unit(r)
            c = cos_of(dist)
            out.append(c * a + np.sqrt(1 - c * c) * r)
        return np.array(out, dtype=np.float32)

    members = near(0.3, 10)
    straggler = near(0.45)
    pair = near(0.42, 2)
    outlier = near(0.9)
    x = np.vstack([members, straggler, pair, outlier]).astype(np.float32)
    labels = np.array([0] * 10 + [1] + [2, 2] + [0])  # the outlier was merged into cluster 0
    return x, labels


def test_outlier_is_ejected_and_straggler_joins():
    x, labels = scene()
    idx, sim = knn(x, 6)
    out = refine(x, labels, idx, sim, Options(eject_threshold=0.62, join_threshold=0.5, join_margin=0.02))
    assert out[13] != out[0]  # ejected
    assert out[10] == out[0]  # singleton joined the cluster's centre
    assert out[11] == out[12] != out[0]  # a pair is not a singleton: stays, by default


def test_small_clusters_join_when_allowed_and_constraints_hold():
    x, labels = scene()
    idx, sim = knn(x, 6)
    out = refine(x, labels, idx, sim, Options(join_max_size=2, join_threshold=0.5))
    assert out[11] == out[12] == out[0]
    blocked = Options(join_max_size=2, join_threshold=0.5, cannot_link=np.array([[12, 3]]))
    out = refine(x, labels, idx, sim, blocked)
    assert out[12] != out[3] and out[10] == out[0]
    tracked = Options(must_link=[np.array([0, 13])])
    out = refine(x, labels, idx, sim, tracked)
    assert out[13] == out[0]  # a tracked face is never ejected from its track


def test_nothing_to_refine():
    x, labels = scene()
    idx, sim = knn(x, 6)
    far = Options(eject_threshold=2.0, join_threshold=0.0)
    assert (refine(x, labels, idx, sim, far) == np.array([0] * 10 + [1, 2, 2, 0])).all()
    assert refine(x[:1], labels[:1], idx[:1, :0], sim[:1, :0], Options()).tolist() == [0]
