"""Adding faces to an existing clustering: confident faces join, the rest's neighbourhood is reclustered, and the
result stays close to a full recluster."""

from __future__ import annotations

import numpy as np

from facedata.cluster.algorithms import Options, cluster
from facedata.cluster.incremental import add_faces
from facedata.cluster.metrics import clustering_metrics, partition_agreement
from facedata.cluster.synthetic import make_embeddings

OPTS = dict(threshold=0.43)


def test_new_faces_of_known_people_join_and_drift_is_small():
    x, labels = make_embeddings(3000, seed=11)
    old, new = x[:2400], x[2400:]
    old_labels = cluster(old, "knn_average", Options(**OPTS))
    inc, stats = add_faces(old, old_labels, new, "knn_average", Options(**OPTS))
    full = cluster(x, "knn_average", Options(**OPTS))
    assert stats["n_new"] == 600 and stats["n_joined"] > 300
    assert stats["n_joined"] + stats["n_doubtful"] == 600
    assert stats["n_reclustered"] < 3000 / 2  # only a neighbourhood, not everything
    drift = partition_agreement(full, inc)
    assert drift["bcubed_f"] > 0.97, drift
    f_inc = clustering_metrics(labels, inc)["bcubed_f"]
    f_full = clustering_metrics(labels, full)["bcubed_f"]
    assert f_inc > f_full - 0.02
    # Old faces that were not in a reclustered neighbourhood keep their clusters.
    assert partition_agreement(old_labels, inc[:2400])["bcubed_f"] > 0.97


def test_a_new_face_from_the_same_image_does_not_join_its_twin():
    x, _ = make_embeddings(200, seed=3)
    old_labels = cluster(x, "knn_average", Options(**OPTS))
    twin = x[:1].copy()
    labels, stats = add_faces(x, old_labels, twin, "knn_average", Options(**OPTS), cannot=np.array([[0, 200]]))
    assert labels[200] != labels[0]
    assert stats["n_joined"] == 0 and stats["n_doubtful"] == 1


def test_degenerate_additions():
    x, _ = make_embeddings(100, seed=4)
    labels = cluster(x, "knn_average", Options(**OPTS))
    same, stats = add_faces(x, labels, x[:0], "knn_average", Options(**OPTS))
    assert partition_agreement(labels, same)["changed_fraction"] == 0 and stats["n_new"] == 0
    fresh, stats = add_faces(x[:0], labels[:0], x, "knn_average", Options(**OPTS))
    assert stats["n_reclustered"] == 100 and len(fresh) == 100


def _near(v: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = v + 0.01 * rng.standard_normal(v.shape).astype(np.float32)
    return (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)


def test_must_links_hold_for_added_faces():
    """A new video frame's face tracked with an old face stays with it, even when it looks like someone else;
    a new frame that links two old faces in different clusters brings them together."""
    x, _ = make_embeddings(400, seed=5)
    opts = Options(**OPTS)
    old = cluster(x, "knn_average", opts)
    i = 0
    j = int(np.flatnonzero(old != old[i])[0])  # a face in another cluster
    new = _near(x[j : j + 1], 1)  # looks like j...
    free, _ = add_faces(x, old, new, "knn_average", opts)
    assert free[400] == free[j] != free[i]
    linked, stats = add_faces(x, old, new, "knn_average", opts, must=[np.array([i, 400])])  # ...tracked with i
    assert linked[400] == linked[i] and stats["n_must_link_groups"] == 1 and stats["n_joined"] == 0
    # several new faces of one track stay together
    track = _near(np.repeat(x[j : j + 1], 3, axis=0), 2)
    labels, _ = add_faces(x, old, track, "knn_average", opts, must=[np.array([i, 400, 401, 402])])
    assert len({labels[i], labels[400], labels[401], labels[402]}) == 1
    # a new frame joining two old faces of different clusters: one cluster for all three
    bridge = _near(x[i : i + 1], 3)
    labels, _ = add_faces(x, old, bridge, "knn_average", opts, must=[np.array([i, j, 400])])
    assert labels[i] == labels[j] == labels[400]
    assert opts == Options(**OPTS)  # the caller's options are not modified
