"""Per queried name: the dominant cluster with confidence and margin; per face: a doubt score for review."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.cluster.identities import dominant_clusters, face_doubt
from facedata.cluster.knn import knn


def test_dominant_cluster_confidence_margin_and_weak():
    query = {"ann": {"i1", "i2", "i3", "i4", "i5"}, "bob": {"j1", "j2"}}
    face_image = {"f1": "i1", "f2": "i2", "f3": "i3", "f4": "i4", "g1": "j1", "g2": "j2"}
    face_cluster = {"f1": "cA", "f2": "cA", "f3": "cA", "f4": "cX", "g1": "cB", "g2": "cY"}
    rows = {r["query_name"]: r for r in dominant_clusters(query, face_cluster, face_image, min_confidence=0.55)}
    ann = rows["ann"]
    assert ann["cluster_id"] == "cA" and ann["status"] == "ok"
    assert ann["confidence"] == pytest.approx(3 / 5)  # i5 has no face: it counts against the name
    assert ann["margin"] == pytest.approx((3 - 1) / 5)
    assert ann["n_members"] == 3 and ann["n_faces"] == 4
    assert rows["bob"]["status"] == "weak" and rows["bob"]["confidence"] == pytest.approx(0.5)
    assert "confidence 0.50 < 0.55" in rows["bob"]["reason"]


def test_two_names_claiming_one_cluster_conflict_and_faceless_names():
    query = {"ann": {"i1", "i2", "i3"}, "anne": {"k1"}, "ghost": {"z1"}}
    face_image = {"f1": "i1", "f2": "i2", "f3": "i3", "h1": "k1"}
    face_cluster = {"f1": "cA", "f2": "cA", "f3": "cA", "h1": "cA"}
    rows = {r["query_name"]: r for r in dominant_clusters(query, face_cluster, face_image, 0.3)}
    assert rows["ann"]["status"] == "ok"
    assert rows["anne"]["status"] == "conflict" and "'ann'" in rows["anne"]["reason"]
    assert rows["ghost"]["status"] == "no_faces" and rows["ghost"]["cluster_id"] is None


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_doubt_orders_a_face_between_two_clusters_first():
    rng = np.random.default_rng(0)
    a, b = _unit(rng.standard_normal(32)), _unit(rng.standard_normal(32))
    cluster_a = _unit(a + 0.05 * rng.standard_normal((6, 32)))
    cluster_b = _unit(b + 0.05 * rng.standard_normal((6, 32)))
    between = _unit(a + b)[None]
    lonely_near_a = _unit(a + 0.35 * rng.standard_normal(32))[None]
    far = _unit(rng.standard_normal(32))[None]
    x = np.vstack([cluster_a, between, cluster_b, lonely_near_a, far]).astype(np.float32)
    labels = np.array([0] * 7 + [1] * 6 + [2, 3])  # `between` was put in cluster A
    idx, sim = knn(x, 5)
    d = face_doubt(x, labels, idx, sim, threshold=0.45)
    assert d["doubt"][6] == pytest.approx(0.5, abs=0.08)  # halfway between A and B
    assert d["next_label"][6] == 1
    assert np.argmax(d["doubt"][:13]) == 6  # reviewed before every clean member
    assert d["doubt"][:6].max() < 0.3 and d["margin"][:6].min() > 0.3
    assert np.isnan(d["distance"][13]) and np.isnan(d["margin"][13])  # a singleton has no cluster distance
    assert d["next_label"][13] == 0 and d["doubt"][13] > d["doubt"][14]  # near A: doubtful; far: not
    assert ((d["doubt"] >= 0) & (d["doubt"] < 1)).all()
    assert np.allclose(d["margin"][:6], d["next_distance"][:6] - d["distance"][:6])


def test_doubt_of_nothing():
    d = face_doubt(np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros((0, 3), int), np.zeros((0, 3)), 0.4)
    assert d["doubt"].size == 0


def test_absorption_pulls_in_the_names_near_faces_only():
    from facedata.cluster.identities import absorb_faces

    rng = np.random.default_rng(2)
    ann, other = _unit(rng.standard_normal(16)), _unit(rng.standard_normal(16))
    members = {f"f{i}": _unit(ann + 0.02 * rng.standard_normal(16)) for i in range(4)}
    near = _unit(ann + 0.05 * rng.standard_normal(16))  # ann, but split off by clustering
    far = other  # a stranger in ann's search results
    vectors = {**members, "g_near": near, "g_far": far, "h1": other, "h2": _unit(other + 0.01)}
    face_image = {**{f: f"i{f}" for f in members}, "g_near": "j1", "g_far": "j2", "h1": "k1", "h2": "k2"}
    face_cluster = {**{f: "cA" for f in members}, "g_near": "cN", "g_far": "cF", "h1": "cB", "h2": "cB"}
    query = {"ann": {f"i{f}" for f in members} | {"j1", "j2"}, "bob": {"k1", "k2"}}
    rows = dominant_clusters(query, face_cluster, face_image, 0.3)
    got = absorb_faces(rows, query, face_cluster, face_image, vectors, threshold=0.4)
    assert got == {"g_near": "ann"}
    ann_row = next(r for r in rows if r["query_name"] == "ann")
    assert ann_row["n_absorbed"] == 1 and ann_row["cluster_id"] == "cA"
    # A face in another name's dominant cluster is never taken, however close; 0 disables absorption.
    vectors["h1"] = near
    query["ann"].add("k1")
    rows = dominant_clusters(query, face_cluster, face_image, 0.3)
    assert "h1" not in absorb_faces(rows, query, face_cluster, face_image, vectors, 0.4)
    assert absorb_faces(rows, query, face_cluster, face_image, vectors, 0.0) == {}
