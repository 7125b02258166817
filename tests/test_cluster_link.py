"""The second level of knn_average (`facedata.cluster.link`): linking the clusters of one person.

The first test is the case the method exists for, on real photos: one person photographed widely (web photos
across decades and roles) next to two people photographed the same way every time (press photos) who look
alike. No single distance threshold serves both; the spread-adaptive link does."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.cluster.algorithms import Options, cluster
from facedata.cluster.link import (
    allowance2,
    chance_corrected_vote,
    face_link_target,
    link_clusters,
    split_conflicts,
    spread2,
)
from facedata.cluster.metrics import clustering_metrics


@pytest.fixture(scope="module")
def wide_and_tight(shared):
    """Embeddings (default detect / embed params) of 40 web photos of Will Smith and 12 press photos each of
    Megawati Sukarnoputri and Yoriko Kawaguchi, shuffled; labels 0, 1, 2."""
    from facedata.faces.analyze import analyze_files
    from facedata.params import defaults

    faces = shared / "data" / "faces"
    groups = [
        sorted((faces / "webfaces" / "Will_Smith").glob("*.jpg"))[:40],
        sorted((faces / "lfw" / "Megawati_Sukarnoputri").glob("*.jpg"))[:12],
        sorted((faces / "lfw" / "Yoriko_Kawaguchi").glob("*.jpg"))[:12],
    ]
    p = defaults()
    paths = [path for g in groups for path in g]
    labels = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    detect, embed = {**p["detect"], "device": "cpu"}, {**p["embed"], "device": "cpu"}
    # Each photo's subject, as the pipeline clusters it: its primary face when usable.
    subject = [
        next((f.embedding for f in r.faces if f.is_primary and f.ok), None)
        for r in analyze_files(paths, detect, embed)
    ]
    keep = np.array([v is not None for v in subject])
    x = np.stack([v for v in subject if v is not None]).astype(np.float32)
    labels = labels[keep]
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], labels[order]


def _pieces(labels_true, pred):
    """(clusters holding the wide person's photos, whether the two press-photo people share a cluster)."""
    wide = len(set(pred[labels_true == 0]))
    shared = bool(set(pred[labels_true == 1]) & set(pred[labels_true == 2]))
    return wide, shared


@pytest.mark.slow
@pytest.mark.shared
def test_no_fixed_threshold_serves_two_spreads_but_the_link_does(wide_and_tight):
    x, y = wide_and_tight
    assert (y == 0).sum() >= 38 and (y == 1).sum() >= 11 and (y == 2).sum() >= 11  # faces found
    for t in np.arange(0.28, 0.52, 0.02):  # plain average linkage (and refinement) at every cut
        wide, shared = _pieces(y, cluster(x, "knn_average", Options(threshold=t, join_threshold=t, link=False)))
        assert wide >= 3 or shared, f"threshold {t:.2f} served both: {wide} clusters, shared={shared}"
    pred = cluster(x, "knn_average", Options())  # the defaults
    wide, shared = _pieces(y, pred)
    m = clustering_metrics(y, pred)
    assert wide <= 2 and not shared and m["purity"] == 1.0, (wide, shared, m)
    assert m["bcubed_f"] >= 0.95, m


def _person(rng, centre, n, spread):
    v = centre + rng.normal(scale=spread / np.sqrt(centre.size), size=(n, centre.size))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _unit(v):
    return v / np.linalg.norm(v)


def test_spread_and_allowance_follow_the_sampling_model():
    rng = np.random.default_rng(0)
    x = _person(rng, _unit(rng.normal(size=64)), 400, 0.3)
    sums, counts = x.sum(0, keepdims=True).astype(np.float64), np.array([len(x)])
    # Mean squared distance of the members to their centre direction, ~spread^2 for this model.
    assert spread2(sums, counts)[0] == pytest.approx(np.mean(np.sum((x - _unit(x.mean(0))) ** 2, 1)), rel=0.01)
    assert spread2(np.ones((1, 3)), np.array([1]))[0] == 0.0  # a singleton has no spread
    # Large clusters must nearly coincide; a lone face may sit as far as the cluster's members do.
    big = allowance2(np.array([100]), np.array([100]), np.array([0.09]), np.array([0.09]), 0.2, 1.4)[0]
    lone = allowance2(np.array([100]), np.array([1]), np.array([0.09]), np.array([0.0]), 0.2, 1.4)[0]
    assert big == pytest.approx(0.04 + 1.96 * 0.09 * 0.02) and lone == pytest.approx(0.04 + 1.96 * 0.09 * 1.01)
    # A wider person is allowed more than a tight one.
    tight = allowance2(np.array([100]), np.array([1]), np.array([0.03]), np.array([0.0]), 0.2, 1.4)[0]
    assert tight < lone


def test_the_vote_is_corrected_for_chance_in_small_sets():
    # 12 of the 13 other faces are the person's: a stranger's links land there 92% of the time by chance alone.
    assert chance_corrected_vote(np.array([12 / 13]), np.array([12]), np.array([1]), 14)[0] == pytest.approx(0.0)
    # On a thousand faces the same share is strong evidence.
    assert chance_corrected_vote(np.array([12 / 13]), np.array([12]), np.array([1]), 1000)[0] > 0.9


def _two_looks(rng, n=(60, 40), gap=0.15, spread=0.35):
    """One person in two looks (e.g. two decades): two groups whose centres are `gap` apart, each face `spread`
    from its look's centre, so the RMS distance between the looks (~0.52) is far above any average-linkage cut."""
    c = _unit(rng.normal(size=64))
    d = _unit(c + gap * _unit(rng.normal(size=64)))
    return np.vstack([_person(rng, c, n[0], spread), _person(rng, d, n[1], spread)])


def _with_others(rng, x, labels, n=50):
    """The set with another person beside it: a vote means something only when B's links have somewhere else
    to go (in a set of one person's two looks alone, every outside link lands in A by necessity)."""
    other = _person(rng, _unit(rng.normal(size=x.shape[1])), n, 0.35)
    return np.vstack([x, other]), np.r_[labels, np.full(n, labels.max() + 1)]


def test_two_looks_of_one_person_link_and_two_people_do_not():
    from facedata.cluster.knn import knn

    rng = np.random.default_rng(1)
    # What average linkage left: one cluster per look, and another person.
    x, first = _with_others(rng, _two_looks(rng), np.r_[np.zeros(60, int), np.ones(40, int)])
    idx, _ = knn(x, 20)
    out = link_clusters(x, first, idx, Options())
    assert len(set(out[:100])) == 1 and out[100] != out[0] and len(set(out[100:])) == 1
    alone = link_clusters(x[:100], first[:100], knn(x[:100], 20)[0], Options())
    assert len(set(alone)) == 2  # nowhere else to go: the vote is no evidence, the looks stay apart
    # Two different people (centres ~0.8 apart) stay apart, however many neighbours cross.
    far = np.vstack([_person(rng, _unit(rng.normal(size=64)), 50, 0.35) for _ in range(3)])
    idx, _ = knn(far, 20)
    assert len(set(link_clusters(far, np.repeat(np.arange(3), 50), idx, Options()))) == 3
    opts = Options()
    link_clusters(x, first, knn(x, 20)[0], opts)
    assert opts == Options()  # options are read, never written


def test_a_collage_does_not_block_a_link_but_two_people_in_many_photos_do():
    from facedata.cluster.knn import knn

    rng = np.random.default_rng(2)
    x, first = _with_others(rng, _two_looks(rng), np.r_[np.zeros(60, int), np.ones(40, int)])
    idx, _ = knn(x, 20)
    # One collage: faces 0 and 60 come from one image. The link happens; the face of the pair farther from the
    # merged centre leaves, so no cluster holds both.
    out = link_clusters(x, first, idx, Options(cannot_link=np.array([[0, 60]])))
    assert out[0] != out[60]
    assert len(set(out[:100])) == 2 and np.bincount(out[:100]).max() == 99
    # Thirty shared photos (two people who appear together): the link is refused.
    many = np.stack([np.arange(30), 60 + np.arange(30)], axis=1)
    out = link_clusters(x, first, idx, Options(cannot_link=many))
    assert len(set(out[:60])) == 1 and len(set(out[60:100])) == 1 and out[0] != out[60]
    # Small clusters never override a cannot-link.
    small = np.r_[np.zeros(60, int), np.arange(1, 41), np.full(50, 41)]
    out = link_clusters(x, small, idx, Options(cannot_link=np.array([[0, 60]])))
    assert out[0] != out[60]


def test_conflicts_split_off_whole_tracks():
    x = np.array([[1, 0], [1, 0.05], [0.99, 0.1], [0.8, 0.6], [0.8, 0.62]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.zeros(5, dtype=np.int64)
    # Faces 0 and 3 are in one image; 3 and 4 are one video track, farther from the centre: both leave.
    out = split_conflicts(x, labels, np.array([[0, 3]]), [np.array([3, 4])])
    assert out[3] == out[4] != out[0] and len({out[0], out[1], out[2]}) == 1


def test_a_new_straggler_links_to_its_person():
    rng = np.random.default_rng(3)
    c = _unit(rng.normal(size=64))
    person, other = _person(rng, c, 80, 0.35), _person(rng, _unit(rng.normal(size=64)), 100, 0.35)
    sums = np.stack([person.sum(0), other.sum(0)]).astype(np.float64)
    counts, n = np.array([80, 100]), 181
    straggler = _person(rng, c, 1, 0.4)[0]
    assert face_link_target(straggler, np.zeros(20, int), sums, counts, n, Options()) == 0
    stranger = _unit(c + 0.9 * _unit(rng.normal(size=64))).astype(np.float32)
    assert face_link_target(stranger, np.zeros(20, int), sums, counts, n, Options()) == -1
    assert (
        face_link_target(straggler, np.r_[np.zeros(10, int), np.ones(10, int)], sums, counts, n, Options()) == -1
    )
    assert face_link_target(straggler, np.zeros(0, int), sums, counts, n, Options()) == -1


def test_incremental_adds_use_the_link():
    from facedata.cluster.incremental import add_faces

    rng = np.random.default_rng(4)
    c = _unit(rng.normal(size=64))
    old = np.vstack([_person(rng, c, 80, 0.35), _person(rng, _unit(rng.normal(size=64)), 80, 0.35)])
    labels = np.repeat([0, 1], 80)
    new = _person(rng, c, 3, 0.35)
    out, stats = add_faces(old, labels, new, "knn_average", Options())
    assert stats["n_joined"] == 3 and set(out[160:]) == {0}
    out, stats = add_faces(old, labels, new, "knn_average", Options(link=False))
    assert stats["n_joined"] < 3  # average linkage alone finds a widely spread person too far


def test_an_open_run_takes_its_stragglers_and_a_crowded_one_does_not():
    from facedata.cluster.knn import knn
    from facedata.cluster.link import is_open_run

    rng = np.random.default_rng(5)
    centres = [_unit(rng.normal(size=64)) for _ in range(3)]
    people = np.vstack([_person(rng, c, 80, 0.2) for c in centres])
    # A straggler of the first person (a profile, an old photo) 0.40 from the person's centre: past the
    # spread-based allowance (~0.35 for this spread), within link_reach.
    centre = _unit(people[:80].sum(0))
    away = rng.normal(size=64)
    away = _unit(away - (away @ centre) * centre)
    straggler = _unit(centre + 0.426 * away)[None].astype(np.float32)
    x = np.vstack([people, straggler])
    first = np.r_[np.repeat(np.arange(3), 80), 3]
    idx, _ = knn(x, 20)
    assert 0.39 < np.linalg.norm(straggler[0] - centre) < 0.41
    closed = link_clusters(x, first, idx, Options(link_open_share=0.0))
    assert closed[-1] != closed[0]
    opened = link_clusters(x, first, idx, Options())  # 1 face of 241 left over: an open run
    assert opened[-1] == opened[0] and len(set(opened)) == 3
    # The same straggler among 200 lone strangers: a crowded run, nothing reaches past the allowance.
    strangers = np.stack([_unit(rng.normal(size=64)) for _ in range(200)]).astype(np.float32)
    crowd = np.vstack([x, strangers])
    labels = np.r_[first, 4 + np.arange(200)]
    out = link_clusters(crowd, labels, knn(crowd, 20)[0], Options())
    assert out[240] != out[0]
    assert is_open_run(np.array([80, 80, 80, 1]), Options()) and not is_open_run(
        np.r_[80, 80, 80, np.ones(200)], Options()
    )
