"""The video source: frames at a fixed rate plus cuts, only frames with faces (real YuNet weights), near-identical
frames dropped, video id / frame index / timestamp in the lineage, decisions reused on a rerun (issue 5)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facedata import manifest
from facedata.cli import main as cli
from facedata.collect.ingest import Previous
from facedata.collect.video import VideoSettings, iter_video_items, sample_indices
from facedata.imageio import decode_image

from .collect_servers import write_project

FPS = 25
W, H = 320, 240


def _face_frame(path) -> np.ndarray:
    face = cv2.imread(str(path))
    face = cv2.resize(face, (H, H))
    frame = np.full((H, W, 3), 40, np.uint8)
    frame[:, (W - H) // 2 : (W - H) // 2 + H] = face
    return frame


def _no_face_frame(t: int) -> np.ndarray:
    x = np.linspace(0, 255, W, dtype=np.float32)
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0] = x  # a blue ramp: no face, very different colours from the face shots
    frame[..., 1] = 60 + (t % 5)
    frame[..., 2] = 200
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory, lfw):
    """7 s at 25 fps: face A (0-2.2 s), a shot without faces (2.2-4.4 s), face B (4.4-7 s); cuts at 55 and 110."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    a = _face_frame(lfw / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    b = _face_frame(lfw / "Colin_Powell" / "Colin_Powell_0001.jpg")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(175):
        base = a if i < 55 else (_no_face_frame(i) if i < 110 else b)
        noise = rng.integers(-2, 3, size=base.shape, dtype=np.int16)  # sensor noise: frames never identical
        writer.write(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def test_sample_indices():
    assert sample_indices(100, 25.0, 1.0, 600) == [0, 25, 50, 75]
    assert sample_indices(100, 25.0, 1.0, 2) == [0, 25]
    assert sample_indices(10, 5.0, 50.0, 600) == list(range(10))
    assert sample_indices(0, 25.0, 1.0, 600) == []


class CountingFinder:
    def __init__(self):
        from facedata.collect.video_faces import FrameFaceFinder

        self.inner = FrameFaceFinder(0.7, 24)
        self.calls = 0

    def faces(self, rgb):
        self.calls += 1
        return self.inner.faces(rgb)


def test_ingest_video_command(clip, tmp_path):
    project = tmp_path / "p"
    write_project(project, {})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["ingest-video", str(clip), "--name", "Test Cast", "--json", str(out), "--root", str(project)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    (video,) = json.loads(out.read_text())["videos"]
    log = {r["frame_index"]: r for r in manifest.read("crawl_log", project).to_pylist()}
    images = {r["frame_index"]: r for r in manifest.read("images", project).to_pylist()}

    # candidates: 1 frame per second (0, 25, ..., 150) and the first frames of the two new shots
    assert sorted(log) == [0, 25, 50, 55, 75, 100, 110, 125, 150]
    assert video["scene_changes"] == 2 and video["candidates"] == 9
    assert "new shot" in log[55]["reason"] and "scene_change" in log[110]["reason"]
    # only frames with faces, and no near-identical ones
    assert sorted(images) == [0, 110]
    for i in (55, 75, 100):
        assert log[i]["status"] == "skipped" and log[i]["reason"].startswith("no_face")
    for i in (25, 50, 125, 150):
        assert log[i]["status"] == "skipped" and log[i]["reason"].startswith("near_identical")
    # lineage: video id (sha256 of the file), frame index, timestamp, queried name, lossless frame
    video_id = hashlib.sha256(clip.read_bytes()).hexdigest()
    assert video["video_id"] == video_id
    frame = images[110]
    assert frame["video_id"] == video_id and frame["timestamp_s"] == pytest.approx(110 / FPS)
    assert frame["source_kind"] == "video" and frame["query_name"] == "Test Cast"
    assert frame["source_uri"].endswith("clip.avi#frame=110") and frame["format"] == "png"
    assert all(r["video_id"] == video_id for r in log.values())
    decoded = decode_image((project / frame["store_path"]).read_bytes())
    assert (decoded.width, decoded.height) == (W, H)
    assert frame["lineage"]["stage"] == "ingest-video"

    # a rerun decides nothing again: the same rows, no detector call
    from facedata.pipeline.collect import ingest_recipe
    from facedata.project import Project

    proj = Project.find(project)
    previous = Previous.from_tables(
        manifest.read("crawl_log", project).to_pylist(),
        manifest.read("images", project).to_pylist(),
        ingest_recipe(proj.params, "ingest-video"),
        project,
    )
    finder = CountingFinder()
    settings = VideoSettings.from_params(proj.params["ingest"])
    items = list(iter_video_items(clip, str(clip), settings, "Test Cast", previous, finder))
    assert finder.calls == 0 and len(items) == 9 and all(i.reused for i in items)


def test_video_options_and_bad_files(clip, tmp_path):
    project = tmp_path / "p"
    write_project(project, {})
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000)
    out = tmp_path / "r.json"
    args = [
        "ingest-video",
        str(clip),
        str(broken),
        "--all-frames",
        "--keep-near-identical",
        "--scene-threshold",
        "0",
    ]
    result = CliRunner().invoke(cli, [*args, "--fps", "2", "--json", str(out), "--root", str(project)])
    assert result.exit_code == 1, result.output  # the broken video failed
    videos = {v["path"].rsplit("/", 1)[1]: v for v in json.loads(out.read_text())["videos"]}
    assert videos["clip.avi"]["candidates"] == 14 and videos["clip.avi"]["scene_changes"] == 0
    assert videos["clip.avi"]["kept"] == 14  # every frame kept: no face gate, no near-duplicate drop
    assert videos["broken.mp4"]["failed"] == 1 and videos["broken.mp4"]["kept"] == 0
    rows = [r for r in manifest.read("crawl_log", project).to_pylist() if r["source_uri"].endswith("broken.mp4")]
    assert len(rows) == 1 and rows[0]["reason"].split(":")[0] in ("unreadable", "empty")
