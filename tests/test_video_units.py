"""Video indexing pieces on small made-up inputs: tracking, open-set naming, segments, decoding damage."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedata.train.identify import UNKNOWN, Gallery
from facedata.video.decode import VideoError, iter_frames, probe
from facedata.video.evaluate import segment_scores, track_clustering
from facedata.video.naming import calibrated, name_tracks
from facedata.video.segments import build_segments
from facedata.video.track import Observation, Tracker, TrackSettings, cooccurring

SETTINGS = TrackSettings(
    min_iou=0.2,
    link_similarity=0.85,
    rejoin_similarity=0.93,
    cut_similarity=0.95,
    max_gap_s=1.5,
    sure_iou=0.5,
    verify_s=2.0,
    period_s=0.5,
    embed_per_track=2,
)


def near(v: np.ndarray, seed: int, eps: float = 0.05) -> np.ndarray:
    w = v + eps * np.random.default_rng(seed).normal(size=v.shape)
    return (w / np.linalg.norm(w)).astype(np.float32)


A, B, C = np.eye(16, dtype=np.float32)[:3]  # three people: cosine 0


class Embed:
    """Stands in for the embedder: each face's true vector sits in `truth` by id(obs)."""

    def __init__(self) -> None:
        self.truth: dict[int, np.ndarray] = {}
        self.calls = 0

    def face(self, t, shot, box, vec, frame=None, quality=0.5) -> Observation:
        ob = Observation(
            frame if frame is not None else int(t * 2),
            t,
            shot,
            np.array(box, np.float32),
            0.99,
            quality,
            True,
            crop=np.zeros((2, 2, 3), np.uint8),
        )
        self.truth[id(ob)] = vec
        return ob

    def __call__(self, obs) -> None:
        self.calls += len(obs)
        for o in obs:
            o.embedding = self.truth[id(o)]


def run(frames, emb: Embed, settings=SETTINGS):
    tr = Tracker(settings)
    for t, shot, faces in frames:
        tr.update(t, shot, faces, emb)
    return tr.finish(emb)


def test_two_people_crossing_keep_their_own_tracks():
    emb = Embed()
    frames = []
    for k in range(8):  # A walks right, B walks left; they pass each other at k = 4
        t = k * 0.5
        frames.append(
            (
                t,
                0,
                [
                    emb.face(t, 0, [10 + 20 * k, 10, 70 + 20 * k, 70], near(A, k)),
                    emb.face(t, 0, [170 - 20 * k, 12, 230 - 20 * k, 72], near(B, 100 + k)),
                ],
            )
        )
    tracks = run(frames, emb)
    assert len(tracks) == 2
    for tr in tracks:
        looks = np.stack([emb.truth[id(o)] for o in tr.obs]) @ A
        assert (looks > 0.9).all() or (looks < 0.5).all()  # never both people in one track


def test_a_track_survives_a_short_occlusion_but_not_a_long_one():
    emb = Embed()
    box = [100, 50, 160, 110]
    frames = [
        (0.0, 0, [emb.face(0.0, 0, box, near(A, 1))]),
        (0.5, 0, [emb.face(0.5, 0, box, near(A, 2))]),
        (1.5, 0, [emb.face(1.5, 0, [110, 50, 170, 110], near(A, 3))]),
    ]  # 1 s gap: same track
    assert len(run(frames, emb)) == 1
    emb = Embed()
    frames = [(0.0, 0, [emb.face(0.0, 0, box, near(A, 1))]), (3.0, 0, [emb.face(3.0, 0, box, near(A, 2))])]
    assert len(run(frames, emb)) == 2  # beyond max_gap_s


def test_a_cut_to_someone_else_in_the_same_place_starts_a_new_track():
    emb = Embed()
    box = [100, 50, 160, 110]
    frames = [
        (0.0, 0, [emb.face(0.0, 0, box, near(A, 1))]),
        (0.5, 0, [emb.face(0.5, 0, box, near(A, 2))]),
        (1.0, 1, [emb.face(1.0, 1, box, near(B, 3))]),
    ]
    assert len(run(frames, emb)) == 2


def test_a_cut_continues_a_track_only_when_the_face_clearly_matches():
    emb = Embed()
    frames = [
        (0.0, 0, [emb.face(0.0, 0, [10, 10, 70, 70], near(A, 1, 0.01))]),
        (0.5, 1, [emb.face(0.5, 1, [300, 100, 380, 180], near(A, 2, 0.01))]),
    ]
    assert len(run(frames, emb)) == 1  # same person after a cut, elsewhere in the frame
    emb = Embed()
    similar = near(A, 9, 0.6)  # alike, but not clearly (cosine well under cut_similarity)
    assert float(similar @ A) < 0.9
    frames = [
        (0.0, 0, [emb.face(0.0, 0, [10, 10, 70, 70], near(A, 1, 0.01))]),
        (0.5, 1, [emb.face(0.5, 1, [12, 10, 72, 70], similar)]),
    ]
    assert len(run(frames, emb)) == 2


def test_steady_faces_are_not_embedded_every_frame():
    emb = Embed()
    frames = [(k * 0.5, 0, [emb.face(k * 0.5, 0, [100 + k, 50, 160 + k, 110], near(A, k))]) for k in range(20)]
    tracks = run(frames, emb)
    assert len(tracks) == 1
    # 10 s at 2 fps: the first face, a check every verify_s, and embed_per_track best faces at the end
    assert emb.calls < 20
    assert len(tracks[0].embedded) >= 1 + SETTINGS.embed_per_track


def _scene(emb: Embed):
    """20 analysed frames: A steady, B moving fast (overlap too small to be sure), a cut at 5 s to C alone,
    A back after a face-less frame."""
    frames = []
    for k in range(20):
        t, shot = k * 0.5, int(k >= 10)
        faces = []
        if k < 10:
            faces.append(emb.face(t, shot, [100 + k, 50, 160 + k, 110], near(A, k)))
            faces.append(emb.face(t, shot, [300 + 40 * k, 50, 360 + 40 * k, 110], near(B, 50 + k)))
        elif k != 14:
            faces.append(emb.face(t, shot, [120, 60, 180, 120], near(C, 100 + k)))
            if k > 14:
                faces.append(emb.face(t, shot, [400, 60, 460, 120], near(A, 200 + k)))
        frames.append((t, shot, faces))
    return frames


def test_faces_embedded_ahead_are_only_faces_the_tracker_embeds_and_change_nothing():
    from facedata.video.index import must_embed

    plain = Embed()
    reference = [[o.frame for o in tr.obs] for tr in run(_scene(plain), plain)]
    emb = Embed()
    asked: set[int] = set()

    def on_demand(obs):
        asked.update(id(o) for o in obs)
        emb([o for o in obs if o.embedding is None])

    frames, tracker, ahead = _scene(emb), Tracker(SETTINGS), set()
    for b in range(0, len(frames), 4):
        batch = frames[b : b + 4]
        must = must_embed(tracker, [faces for _, _, faces in batch], SETTINGS)
        ahead.update(id(o) for o in must)
        emb(must)
        for t, shot, faces in batch:
            tracker.update(t, shot, faces, on_demand)
    tracks = tracker.finish(on_demand)
    assert [[o.frame for o in tr.obs] for tr in tracks] == reference
    assert ahead and ahead <= asked  # never a face the tracker would not have embedded
    assert emb.calls == plain.calls


def test_cooccurring_tracks_are_pairs_with_a_shared_frame():
    emb = Embed()
    frames = [
        (0.0, 0, [emb.face(0.0, 0, [0, 0, 50, 50], A), emb.face(0.0, 0, [200, 0, 250, 50], B)]),
        (5.0, 0, [emb.face(5.0, 0, [0, 0, 50, 50], A)]),
    ]
    tracks = run(frames, emb)
    assert cooccurring(tracks).tolist() == [[0, 1]]


def gallery(threshold=0.8) -> Gallery:
    return Gallery(["alice", "bob"], np.stack([A, B]), threshold, {})


def test_open_set_unknown_is_never_forced_onto_the_nearest_identity():
    stranger = near(C, 3)
    names, cos, conf = name_tracks(np.stack([near(A, 1), stranger]), np.zeros((0, 2), np.int64), gallery(), 60)
    assert names == ["alice", UNKNOWN]
    assert conf[0] > 0.5 and conf[1] > 0.5  # confident it is alice; confident the stranger is nobody known


def test_two_tracks_on_screen_together_are_never_the_same_person():
    x = np.stack([near(A, 1, 0.01), near(A, 2, 0.1)])
    names, _, _ = name_tracks(x, np.array([[0, 1]]), gallery(), 60)
    assert names == ["alice", UNKNOWN]  # the better match keeps the name
    names, _, _ = name_tracks(x, np.zeros((0, 2), np.int64), gallery(), 60)
    assert names == ["alice", "alice"]  # not on screen together: both can be alice


def test_confidence_is_one_half_at_the_threshold_and_grows_with_the_cosine():
    assert calibrated(0.8, 0.8, 60) == pytest.approx(0.5)
    assert calibrated(0.85, 0.8, 60) > calibrated(0.82, 0.8, 60) > 0.5


def test_an_empty_gallery_leaves_every_track_unknown():
    g = Gallery([], np.zeros((0, 0), np.float32), 0.9, {})
    names, _, conf = name_tracks(np.stack([A, B]), np.zeros((0, 2), np.int64), g, 60)
    assert names == [UNKNOWN, UNKNOWN] and conf.tolist() == [1.0, 1.0]


def test_segments_merge_close_tracks_and_drop_short_or_unsure_ones():
    spans = [
        ("alice", 0.0, 2.0, 0.9, "t1"),
        ("alice", 3.0, 5.0, 0.7, "t2"),
        ("alice", 20.0, 20.3, 0.9, "t3"),
        ("bob", 1.0, 4.0, 0.3, "t4"),
    ]
    segs = build_segments(spans, merge_gap_s=2.0, min_duration_s=0.5, min_confidence=0.5)
    assert [(s.identity, s.start, s.end, s.track_ids) for s in segs] == [("alice", 0.0, 5.0, ["t1", "t2"])]
    assert segs[0].confidence == pytest.approx(0.8)


def test_segment_scores_in_time():
    r = segment_scores({"a": [(0, 5)], "c": [(6, 7)]}, {"a": [(0, 10)]}, 10)
    assert r["per_identity"]["a"]["precision"] == 1.0 and r["per_identity"]["a"]["recall"] == pytest.approx(0.5)
    assert r["per_identity"]["c"]["recall"] is None and r["precision"] == pytest.approx(5 / 6, abs=0.02)


def test_track_clustering_reports_predicted_and_true_people():
    r = track_clustering(["a", "a", "b"], ["x", "y", "z"])
    assert r["purity"] == 1.0 and r["n_predicted"] == 3 and r["n_true_people"] == 2 and r["bcubed_f"] < 1


def write_avi(path, n=40, fps=10):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), (i * 6) % 255, np.uint8)
        cv2.putText(img, str(i), (20, 60), 0, 1, (255, 255, 255))
        w.write(img)
    w.release()


def test_a_truncated_video_keeps_the_frames_before_the_damage(tmp_path):
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    write_avi(full)
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    info = probe(full)
    assert len(list(iter_frames(info, 5, 0, 5))) == 20 and info.problem is None
    info = probe(cut)
    frames = list(iter_frames(info, 5, 0, 5))
    assert 0 < len(frames) < 20
    assert [f.index for f in frames] == list(range(0, 2 * len(frames), 2))
    assert info.problem.startswith("truncated: decoding stopped at frame")


def test_a_file_that_is_no_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match="not a video OpenCV can open"):
        probe(bad)
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_shot_cuts_split_frames_into_shots(tmp_path):
    path = tmp_path / "cuts.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(30):
        w.write(np.full((120, 160, 3), (0, 0, 200) if i < 15 else (200, 0, 0), np.uint8))
    w.release()
    info = probe(path)
    frames = list(iter_frames(info, 2, 0.35, 5))
    assert [f.shot for f in frames] == [0, 0, 0, 1, 1, 1]
    assert info.cuts == [pytest.approx(1.5)]


def test_index_video_usage_errors_exit_2(tmp_path):
    from click.testing import CliRunner

    from facedata.cli import main

    video = tmp_path / "v.avi"
    write_avi(video, n=5)
    (tmp_path / "g").mkdir()
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    runner = CliRunner()
    both = runner.invoke(
        main, ["index-video", str(video), "--gallery", str(tmp_path / "g"), "--model", str(model)]
    )
    assert both.exit_code == 2 and "not both" in both.output
    no_project = runner.invoke(main, ["index-video", str(video), "--project", str(tmp_path)])
    assert no_project.exit_code == 2
    bad_set = runner.invoke(
        main, ["index-video", str(video), "--gallery", str(tmp_path / "g"), "--set", "video.fps=0"]
    )
    assert bad_set.exit_code == 2 and "video.fps" in bad_set.output


def test_prefetch_keeps_order_raises_in_order_and_stops_with_the_consumer():
    """Frames decoded ahead in a thread are the frames read in line: same order, the producer's error where it
    happened, and a consumer that stops early stops the producer."""
    import threading

    from facedata.video.decode import prefetch

    assert list(prefetch(iter(range(100)), 3)) == list(range(100))

    def broken():
        yield 1
        yield 2
        raise ValueError("truncated")

    got = []
    with pytest.raises(ValueError, match="truncated"):
        for x in prefetch(broken(), 8):
            got.append(x)
    assert got == [1, 2]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    for x in prefetch(endless(), 2):
        if x == 5:
            break
    assert threading.active_count() == before  # the producer thread has ended
    assert len(produced) <= 5 + 1 + 2 + 1  # at most `depth` (+ the one in hand) beyond what was taken
