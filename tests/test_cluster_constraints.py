"""Cannot-link pairs from images, must-link tracks from consecutive video frames."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.cluster.constraints import cannot_link_pairs, iou, video_tracks


def test_cannot_link_pairs_are_all_pairs_within_an_image():
    pairs = cannot_link_pairs(["a", "b", "a", "c", "a", "b"])
    assert sorted(map(tuple, pairs.tolist())) == [(0, 2), (0, 4), (1, 5), (2, 4)]
    assert cannot_link_pairs(["a", "b"]).shape == (0, 2)


def test_iou_against_hand_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert iou(a, b)[0].tolist() == [50 / 150, 0.0, 1.0]


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_tracks_follow_overlapping_similar_faces_across_adjacent_frames():
    # Frames 0, 30, 60 of one video (sampled once a second); two people side by side; frame 60 also has a
    # stranger standing where person A was in frame 30 (after a cut): similar box, different face.
    person_a, person_b, stranger = _unit([1, 0.1, 0]), _unit([0, 1, 0.1]), _unit([0.1, 0, 1])
    frames = [("v", 0, "i0"), ("v", 30, "i1"), ("v", 60, "i2")]
    rows_of_image = {"i0": [0, 1], "i1": [2, 3], "i2": [4]}
    boxes = np.array(
        [[0, 0, 10, 10], [50, 0, 60, 10], [1, 0, 11, 10], [51, 0, 61, 10], [1, 1, 11, 11]], dtype=np.float32
    )
    x = np.stack([person_a, person_b, person_a, person_b, stranger])
    groups = video_tracks(frames, rows_of_image, boxes, x, min_iou=0.3, max_distance=0.5)
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 2], [1, 3]]


def test_tracks_skip_non_adjacent_frames_and_other_videos():
    a = _unit([1, 0, 0])
    frames = [("v", 0, "i0"), ("v", 30, "i1"), ("v", 60, "i2"), ("w", 30, "j1")]
    rows_of_image = {"i0": [0], "i2": [1], "j1": [2]}  # i1 has no usable face: i0 and i2 are not linked
    boxes = np.tile(np.array([[0, 0, 10, 10]], dtype=np.float32), (3, 1))
    x = np.stack([a, a, a])
    # i0 and i2 are not adjacent only if i1 sits between them: it does, so no links; j1 is another video.
    assert video_tracks(frames, rows_of_image, boxes, x, 0.3, 0.5) == []


@pytest.mark.shared
def test_a_cut_to_another_person_in_the_same_place_is_not_a_track(shared):
    """Hamilton clip sampled once a second: frame 210 shows Lin-Manuel Miranda, frame 216 (after a cut)
    Barack Obama where he stood. Their boxes overlap (IoU ~0.44) and the two faces are ~0.47 apart, inside the
    old 0.55 gate: one track (one must-link group) chained the two people. Same-person links in that clip
    are at most ~0.34 apart; the default gate keeps them and refuses the cut."""
    import cv2

    from facedata.faces.analyze import FaceAnalyzer
    from facedata.params import default, defaults

    cap = cv2.VideoCapture(str(shared / "data" / "video" / "short_hamilton_clip.mp4"))
    frames = []
    for index in (210, 216):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        assert ok
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    p = defaults()
    analyzer = FaceAnalyzer({**p["detect"], "device": "cpu"}, {**p["embed"], "device": "cpu"})
    faces = [next(f for f in fs if f.ok) for fs in analyzer.analyze(frames)]  # the one usable face of each
    boxes = np.stack([f.box for f in faces]).astype(np.float32)
    x = np.stack([f.embedding for f in faces])
    distance = float(np.linalg.norm(x[0] - x[1]))
    assert iou(boxes[:1], boxes[1:])[0, 0] >= default("cluster.track_min_iou")
    assert default("cluster.track_max_distance") < distance < 0.55
    tracks = [("v", 210, "a"), ("v", 216, "b")], {"a": [0], "b": [1]}
    assert video_tracks(*tracks, boxes, x, default("cluster.track_min_iou"), 0.55) != []  # the old gate
    gate = default("cluster.track_max_distance")
    assert video_tracks(*tracks, boxes, x, default("cluster.track_min_iou"), gate) == []
