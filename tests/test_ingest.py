"""Ingest: folder and video sources into the store; one crawl_log row per item; duplicates; reuse on rerun."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pytest
from PIL import Image

from facedata import manifest
from facedata.collect.base import SourceItem
from facedata.collect.ingest import ingest_items, mark_near_duplicates
from facedata.collect.video import sample_indices
from facedata.pipeline.ingest import previous_rows, run
from facedata.pipeline.runner import make_context

from .conftest import fixed_lineage

INGEST = {
    "max_pixels": 50_000_000,
    "min_side": 32,
    "max_bytes": 1_000_000,
    "near_dup_bits": 4,
    "video_fps": 1.0,
    "max_frames_per_video": 600,
}


def jpeg(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def make_tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def project(tmp_path, folders, videos=()) -> None:
    import yaml

    raw = {"sources": {"folders": folders, "videos": list(videos)}, "ingest": INGEST}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))


def set_ingest(root, **values) -> None:
    import yaml

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["ingest"].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def lineage():
    return fixed_lineage("ingest")


def item(uri, data=None, error=None, query="ann"):
    return SourceItem("folder", uri, query, dt.datetime.now(dt.UTC), data=data, error=error)


def test_each_item_gets_exactly_one_status_row(tmp_path):
    a, b = jpeg(1), jpeg(2)
    items = [
        item("a.jpg", a),
        item("a_copy.jpg", a),
        item("b.jpg", b),
        item("bad.jpg", b"\xff\xd8\xff garbage"),
        item("page.jpg", b"<html><body>404</body></html>"),
        item("gone.jpg", error="unreadable: no such file"),
    ]
    res = ingest_items(items, tmp_path, INGEST, lineage)
    status = {r["source_uri"]: (r["status"], (r["reason"] or "").split(":")[0]) for r in res.log}
    assert status == {
        "a.jpg": ("stored", ""),
        "a_copy.jpg": ("duplicate", "same bytes as a.jpg"),
        "b.jpg": ("stored", ""),
        "bad.jpg": ("failed", "corrupt"),
        "page.jpg": ("failed", "html"),
        "gone.jpg": ("failed", "unreadable"),
    }
    assert len(res.images) == 2
    for row in res.images:
        assert (tmp_path / row["store_path"]).read_bytes() in (a, b)
        assert row["store_path"].startswith("data/store/images/") and "a.jpg" not in row["store_path"]


def test_near_duplicates_point_at_the_first_copy():
    rows = [
        {"image_id": f"i{k}", "phash": h}
        for k, h in enumerate(["ffff0000ffff0000", "ffff0000ffff0001", "0000ffff0000ffff", "ffff0000ffff0003"])
    ]
    mark_near_duplicates(rows, 4)
    assert [r["dup_of"] for r in rows] == [None, "i0", None, "i0"]
    mark_near_duplicates(rows, 0)
    assert all(r["dup_of"] is None for r in rows)


def test_folder_stage_end_to_end_and_rerun_reuses(tmp_path):
    src = tmp_path / "photos"
    a, b = jpeg(1), jpeg(2)
    make_tree(src, {"Ann/1.jpg": a, "Ann/2.jpg": b, "Ann/notes.txt": b"hello", "Bob/1.jpg": a, ".hidden/x.jpg": a})
    project(tmp_path, [{"root": "photos", "labeled": True}])
    metrics = run(make_context("ingest", tmp_path))
    assert metrics["n_items"] == 5 and metrics["n_stored"] == 2 and metrics["n_duplicates"] == 1
    assert metrics["failures"] == {"not_an_image": 1} and metrics["skip_reasons"] == {"hidden": 1}
    images = manifest.read("images", tmp_path).to_pylist()
    assert {(r["query_name"], r["label"], r["source_uri"]) for r in images} == {
        ("Ann", "Ann", "photos/Ann/1.jpg"),
        ("Ann", "Ann", "photos/Ann/2.jpg"),
    }

    # Rerun: nothing decoded again, rows identical (lineage included), so DVC sees identical outputs.
    before = manifest.path_for("images", tmp_path).read_bytes()
    ctx = make_context("ingest", tmp_path)
    assert len(previous_rows(ctx)) == 5
    run(ctx)
    assert ctx.run["n_reused"] == 5
    assert manifest.path_for("images", tmp_path).read_bytes() == before

    # A file changed in place is a new image; a removed file leaves the manifest.
    (src / "Ann" / "2.jpg").write_bytes(jpeg(3))
    (src / "Bob" / "1.jpg").unlink()
    third = run(make_context("ingest", tmp_path))
    assert third["n_stored"] == 2 and third["n_items"] == 4
    assert {r["source_uri"] for r in manifest.read("crawl_log", tmp_path).to_pylist()} == {
        "photos/Ann/1.jpg",
        "photos/Ann/2.jpg",
        "photos/Ann/notes.txt",
        "photos/.hidden",
    }


def test_missing_folder_is_a_clear_error(tmp_path):
    project(tmp_path, [{"root": "nowhere"}])
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        run(make_context("ingest", tmp_path))


def test_sample_indices():
    assert sample_indices(275, 29.97, 1.0, 600) == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    assert sample_indices(100, 25.0, 50.0, 600) == list(range(100))  # never more than every frame
    assert sample_indices(100, 25.0, 1.0, 2) == [0, 25]
    assert sample_indices(0, 25.0, 1.0, 10) == []


@pytest.mark.shared
def test_video_frames_carry_their_position(tmp_path, shared):
    clip = shared / "data" / "video" / "short_hamilton_clip.mp4"
    project(tmp_path, [], [{"path": str(clip), "fps": 0.5}])
    # Plain fixed-rate sampling here (scene cuts, face filtering and near-duplicate dropping are tested in
    # tests/test_collect_video.py).
    set_ingest(tmp_path, video_scene_threshold=0, video_faces_only=False, video_dup_bits=-1)
    metrics = run(make_context("ingest", tmp_path))
    assert metrics["n_video_frames"] == 5
    rows = sorted(manifest.read("images", tmp_path).to_pylist(), key=lambda r: r["frame_index"])
    assert [r["frame_index"] for r in rows] == [0, 60, 120, 180, 240]
    assert rows[2]["timestamp_s"] == pytest.approx(120 / 29.97, abs=1e-3)
    assert len({r["video_id"] for r in rows}) == 1 and len(rows[0]["video_id"]) == 64
    assert rows[0]["source_uri"].endswith("short_hamilton_clip.mp4#frame=0")
    assert (rows[0]["width"], rows[0]["height"], rows[0]["format"]) == (640, 360, "png")


def test_unreadable_video_gets_a_status_row(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    project(tmp_path, [], [{"path": "broken.mp4"}, {"path": "missing.mp4"}])
    metrics = run(make_context("ingest", tmp_path))
    assert metrics["n_failed"] == 2 and metrics["n_images"] == 0
    reasons = sorted(r["reason"].split(":")[0] for r in manifest.read("crawl_log", tmp_path).to_pylist())
    assert reasons == ["missing", "unreadable"]
