"""`facedata index-video` end to end on real videos and real models (../shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.projects import run

pytestmark = [pytest.mark.shared, pytest.mark.slow]

BIN = Path(sys.executable).parent
CAST = ("Andre_Agassi", "Angelina_Jolie")  # the gallery; Angelina Jolie never appears in the video
STRANGER = "Bill_Gates"


def index_video(args: list[str], cwd: Path, check: bool = True):
    return run([str(BIN / "facedata"), "index-video", *args], cwd, check=check, timeout=1200)


@pytest.fixture(scope="module")
def hamilton(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hamilton")
    video = shared / "data" / "video" / "short_hamilton_clip.mp4"
    gallery = shared / "data" / "video" / "known_people"
    proc = index_video([str(video), "--gallery", str(gallery), "--out", "idx", "--json", "out.json"], tmp)
    return tmp, json.loads((tmp / "out.json").read_text()), proc


def test_hamilton_finds_lin_manuel_miranda_and_nobody_absent(hamilton):
    _, out, _ = hamilton
    found = {s["identity"] for s in out["segments"]}
    assert "lin_manuel_miranda" in found
    # Obama is in the audience at the end (benchmarks/data/hamilton_faces.csv): nobody else from the gallery
    assert found <= {"lin_manuel_miranda", "alex_lacamoire", "barack_obama"}
    lin = [s for s in out["segments"] if s["identity"] == "lin_manuel_miranda"]
    assert any(s["start"] <= 4.0 and s["end"] >= 7.0 for s in lin)  # he sings from ~3 s to ~7.2 s
    assert out["tracks"] >= 3 and 0 < out["unknown_tracks"] < out["tracks"]
    assert out["video_seconds"] == pytest.approx(9.18, abs=0.05) and out["seconds_processed"] > 0
    for s in out["segments"]:
        assert 0 <= s["start"] < s["end"] <= out["video_seconds"] + 1e-6
        assert 0.5 <= s["confidence"] <= 1 and s["track_ids"]


def test_hamilton_finds_alex_lacamoire(hamilton):
    _, out, _ = hamilton
    # at the piano in the wide opening shot, then in close-up profile (benchmarks/data/hamilton_on_screen.csv)
    assert "alex_lacamoire" in {s["identity"] for s in out["segments"]}


def test_hamilton_segments_lie_where_their_person_is_on_screen(hamilton):
    """Most of every segment (frames are analysed 1 s apart) is time its person is on screen."""
    import csv

    _, out, _ = hamilton
    with open(Path(__file__).parents[1] / "benchmarks" / "data" / "hamilton_on_screen.csv", newline="") as f:
        on_screen = [(r["identity"], float(r["start"]), float(r["end"])) for r in csv.DictReader(f)]
    for s in out["segments"]:
        inside = sum(
            max(0.0, min(s["end"], b) - max(s["start"], a)) for who, a, b in on_screen if who == s["identity"]
        )
        assert inside >= 0.5 * (s["end"] - s["start"]), s


def test_hamilton_writes_manifests_with_lineage_thumbnails_and_a_timeline(hamilton):
    tmp, out, _ = hamilton
    idx = tmp / "idx"
    tracks = pq.read_table(idx / "video_tracks.parquet").to_pylist()
    segments = pq.read_table(idx / "video_segments.parquet").to_pylist()
    assert len(tracks) == out["tracks"] and len(segments) == len(out["segments"])
    t = tracks[0]
    assert t["video_id"] == "0b5ff4c55a4cd69f79956f312681730881fe1e2a9e6146e75c31636dffcc7e28"
    assert len(t["frames"]) == len(t["boxes"]) == len(t["timestamps"]) == t["n_faces"]
    assert t["lineage"]["stage"] == "index-video" and t["lineage"]["model_name"] == "dlib-resnet"
    assert t["lineage"]["model_sha256"] and t["lineage"]["code_hash"] and t["lineage"]["params_hash"]
    for row in tracks:
        assert (idx / row["thumbnail"]).is_file()
        assert (row["identity"] == "unknown") == (row["candidate"] is not None)
    ids = {r["track_id"] for r in tracks}
    assert all(set(s["track_ids"]) <= ids for s in segments)
    png = list((idx / "timelines").glob("*.png"))
    assert len(png) == 1 and png[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_indexing_a_video_again_replaces_its_rows(hamilton, shared):
    tmp, out, _ = hamilton
    video = shared / "data" / "video" / "short_hamilton_clip.mp4"
    index_video(
        [
            str(video),
            "--gallery",
            str(shared / "data" / "video" / "known_people"),
            "--out",
            "idx",
            "--json",
            "again.json",
        ],
        tmp,
    )
    again = json.loads((tmp / "again.json").read_text())
    assert again["tracks"] == out["tracks"] and [s["identity"] for s in again["segments"]] == [
        s["identity"] for s in out["segments"]
    ]
    assert pq.read_table(tmp / "idx" / "video_tracks.parquet").num_rows == out["tracks"]


@pytest.fixture(scope="module")
def synthetic(lfw, tmp_path_factory):
    """A gallery (Agassi, Jolie) and a video: Agassi, then someone not in the gallery, then both together."""
    from facedata.video.synthetic import Shot, write_video

    tmp = tmp_path_factory.mktemp("synthetic")
    for name in CAST:
        (tmp / "gallery" / name).mkdir(parents=True)
        for f in sorted((lfw / name).glob("*.jpg"))[:3]:
            (tmp / "gallery" / name / f.name).symlink_to(f)
    agassi = sorted((lfw / CAST[0]).glob("*.jpg"))
    gates = sorted((lfw / STRANGER).glob("*.jpg"))
    shots = [
        Shot(2.0, ((CAST[0], str(agassi[5])),)),
        Shot(2.0, ((STRANGER, str(gates[0])),)),
        Shot(2.0, ((CAST[0], str(agassi[8])), (STRANGER, str(gates[3])))),
    ]
    truth = write_video(shots, tmp / "clip.avi", fps=10)
    return tmp, truth


def test_absent_gallery_person_gets_no_segment_and_strangers_stay_unknown(synthetic):
    tmp, _ = synthetic
    index_video(["clip.avi", "--gallery", "gallery", "--out", "idx", "--json", "out.json"], tmp)
    out = json.loads((tmp / "out.json").read_text())
    assert {s["identity"] for s in out["segments"]} == {CAST[0]}  # Jolie never appears: no segment
    agassi = [s for s in out["segments"] if s["identity"] == CAST[0]]
    assert agassi[0]["start"] < 0.5 and any(s["end"] > 5.5 for s in agassi)
    tracks = pq.read_table(tmp / "idx" / "video_tracks.parquet").to_pylist()
    # Bill Gates (2-4 s, and beside Agassi at 4-6 s) is in no gallery: his tracks stay unknown
    gates = [t for t in tracks if np.mean(t["timestamps"]) > 2 and np.mean([b[0] for b in t["boxes"]]) > 200]
    gates += [t for t in tracks if 2 <= t["start"] < 4]
    assert gates and all(t["identity"] == "unknown" for t in gates)
    # on screen together at 4-6 s: two tracks, never the same person
    together = [t for t in tracks if t["start"] >= 4]
    assert len(together) == 2 and len({t["identity"] for t in together}) == 2


def test_a_truncated_video_is_an_error_and_its_first_frames_are_indexed(synthetic):
    tmp, _ = synthetic
    data = (tmp / "clip.avi").read_bytes()
    (tmp / "cut.avi").write_bytes(data[: int(len(data) * 0.4)])  # the damage falls in the second shot
    proc = index_video(["cut.avi", "--gallery", "gallery", "--out", "cut", "--json", "cut.json"], tmp, check=False)
    assert proc.returncode == 1
    assert "truncated: decoding stopped at frame" in proc.stderr
    out = json.loads((tmp / "cut.json").read_text())
    assert out["errors"] and out["videos"][0]["problem"].startswith("truncated")
    assert 0 < out["video_seconds"] < 6
    assert [s["identity"] for s in out["segments"]] == [CAST[0]]  # Agassi's first shot is still there


def test_a_file_that_is_no_video_fails_alone(synthetic):
    tmp, _ = synthetic
    (tmp / "junk.mp4").write_bytes(b"\x00junk" * 1000)
    proc = index_video(
        ["junk.mp4", "clip.avi", "--gallery", "gallery", "--out", "j", "--json", "j.json"], tmp, check=False
    )
    assert proc.returncode == 1 and "junk.mp4: not a video OpenCV can open" in proc.stderr
    out = json.loads((tmp / "j.json").read_text())
    assert {s["video"] for s in out["segments"]} == {"clip.avi"}


def test_the_crowd_clip_with_an_empty_gallery_gives_stable_unknown_tracks(shared, tmp_path):
    from facedata.params import defaults
    from facedata.train.identify import from_folder
    from facedata.video.index import VideoIndexer

    (tmp_path / "empty").mkdir()
    params = defaults()
    params["video"]["max_seconds"] = 2.0  # many faces per frame: two seconds keep the test lean
    g = from_folder(tmp_path / "empty", params["detect"], params["embed"], 0.9, allow_empty=True)
    indexer = VideoIndexer(params, g)
    video = shared / "data" / "video" / "crowd_walking_facenet_pytorch.mp4"
    first = indexer.index(video)
    # again, one after the other (no detection ahead) and a frame per detector batch: the very same tracks
    indexer.v = {**indexer.v, "batch_size": 1}
    second = indexer.index(video, detect_ahead=False)
    assert len(first.rows) >= 5
    assert {r["identity"] for r in first.rows} == {"unknown"} and not first.segments
    for key in ("frames", "boxes", "vector", "candidate"):
        assert [r[key] for r in first.rows] == [r[key] for r in second.rows]
    assert len({r["candidate"] for r in first.rows}) >= 3


def test_the_flow_indexes_each_video_in_its_own_task_with_the_same_result(synthetic, prefect_harness):
    from prefect.client.orchestration import get_client

    from facedata.flows.video import index_videos_flow
    from facedata.params import defaults
    from facedata.train.identify import from_folder
    from facedata.video.run import index_videos

    tmp, _ = synthetic
    params = defaults()
    g = from_folder(tmp / "gallery", params["detect"], params["embed"], params["video"]["gallery_threshold"])
    videos = [str(tmp / "clip.avi")]
    by_flow = index_videos_flow(videos, params, g, str(tmp / "flow_idx"), None)
    direct = index_videos(videos, params, g, tmp / "direct_idx")
    assert by_flow["segments"] == direct["segments"] and by_flow["tracks"] == direct["tracks"]
    assert (tmp / "flow_idx" / "video_segments.parquet").is_file()

    async def task_names():  # by name: the session's server holds every other test's task runs too
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=videos)))
            return [r.name for r in runs]

    import asyncio

    assert videos[0] in asyncio.run(task_names())
