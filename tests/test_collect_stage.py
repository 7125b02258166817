"""The `ingest` stage with every local source kind at once (folders unchanged, a video, a URL list), rows made
by `facedata ingest-urls` kept across stage runs, checkpoints on interruption, and the one-writer lock."""

from __future__ import annotations

import datetime as dt
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facedata import manifest
from facedata.cli import main as cli
from facedata.collect.base import SourceItem
from facedata.collect.ingest import IngestResult, ingest_items
from facedata.pipeline.ingest import crawl_report_markdown
from facedata.pipeline.runner import run_stage

from .collect_servers import CONTACT, LocalServer, fast_crawl_params, jpeg, noise_image, static, write_project
from .conftest import fixed_lineage
from .test_lock import hold_in_child


def _folder(root):
    for name, seeds in {"Alice": [1, 2], "Bob": [3]}.items():
        (root / name).mkdir(parents=True)
        for s in seeds:
            noise_image(s).save(root / name / f"{s}.jpg", quality=92)
    (root / "Bob" / "notes.txt").write_text("not an image")


def _video(path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 80))
    for i in range(30):
        writer.write(np.asarray(noise_image(100 + i // 10))[:, :, ::-1].copy())
    writer.release()


@pytest.fixture()
def server():
    with LocalServer("127.0.0.1") as s:
        for i in range(6):
            s.routes[f"/a/{i}.jpg"] = static(jpeg(40 + i))
        yield s


@pytest.mark.slow
def test_stage_with_all_local_sources(server, tmp_path):
    photos = tmp_path / "photos"
    _folder(photos)
    server.routes["/a/same-as-folder.jpg"] = static((photos / "Alice" / "1.jpg").read_bytes())
    video = tmp_path / "clip.avi"
    _video(video)
    (tmp_path / "urls.txt").write_text(
        "".join(server.url(f"/a/{i}.jpg") + "\n" for i in range(3)) + server.url("/a/same-as-folder.jpg") + "\n"
    )
    project = tmp_path / "proj"
    write_project(
        project,
        {
            "sources": {
                "folders": [{"root": str(photos), "labeled": True}],
                "videos": [{"path": str(video), "query_name": "Clip Person"}],
                "url_lists": [{"path": str(tmp_path / "urls.txt"), "name": "Web Person"}],
            },
            "ingest": {"video_faces_only": False, "video_scene_threshold": 0.3},
            "crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{server.port}"]),
        },
    )
    assert run_stage("ingest", project) == 0
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    log = manifest.read("crawl_log", project).to_pylist()
    images = manifest.read("images", project).to_pylist()
    kinds = {r["source_kind"] for r in images}
    assert kinds == {"folder", "video", "url"}
    # folders behave as before: labelled rows, the text file is a failed row
    folder_rows = [r for r in images if r["source_kind"] == "folder"]
    assert sorted(r["label"] for r in folder_rows) == ["Alice", "Alice", "Bob"]
    notes = [r for r in log if r["source_uri"].endswith("notes.txt")]
    assert notes[0]["status"] == "failed" and notes[0]["reason"].startswith("not_an_image")
    # the web copy of a folder image is a duplicate row, not a second image
    same = [r for r in log if r["source_uri"].endswith("same-as-folder.jpg")]
    assert same[0]["status"] == "duplicate"
    # video: 1 frame/s = frames 0, 10, 20; each new shot starts at a multiple of 10, so no extra cut frames
    frames = sorted(r["frame_index"] for r in images if r["source_kind"] == "video")
    assert frames == [0, 10, 20]
    per_source = metrics["per_source"]
    assert sum(v["stored"] for v in per_source.values()) == metrics["n_stored"] == len(images)
    assert {v["kind"] for v in per_source.values()} == {"folder", "video", "url"}
    md = crawl_report_markdown(metrics)
    assert "| source | kind | stored |" in md and "not_an_image" in md

    # a hand-made collection joins the project and survives later stage runs
    (tmp_path / "more.txt").write_text("".join(server.url(f"/a/{i}.jpg") + "\n" for i in range(3, 6)))
    result = CliRunner().invoke(cli, ["ingest-urls", str(tmp_path / "more.txt"), "--root", str(project)])
    assert result.exit_code == 0, result.output
    assert len(manifest.read("images", project)) == len(images) + 3
    hits = sum(server.hits_of(f"/a/{i}.jpg") for i in range(6))
    assert run_stage("ingest", project) == 0
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["n_manual_rows"] == 3 and metrics["n_images"] == len(images) + 3
    assert sum(server.hits_of(f"/a/{i}.jpg") for i in range(6)) == hits  # nothing fetched again
    manual = [r for r in manifest.read("crawl_log", project).to_pylist() if r["lineage"]["stage"] == "ingest-urls"]
    assert len(manual) == 3


def test_interrupted_ingest_checkpoints(tmp_path):
    def items():
        for i in range(3):
            yield SourceItem("url", f"http://h/{i}.jpg", "X", dt.datetime.now(dt.UTC), data=jpeg(60 + i))
        raise KeyboardInterrupt

    saved: list[IngestResult] = []
    params = {"max_pixels": 10**7, "min_side": 32, "near_dup_bits": 4}
    lineage = fixed_lineage("t")
    with pytest.raises(KeyboardInterrupt):
        ingest_items(items(), tmp_path, params, lambda: lineage, checkpoint=saved.append, checkpoint_seconds=3600)
    assert len(saved) == 1 and len(saved[0].log) == 3 and len(saved[0].images) == 3


def test_one_writer_at_a_time(tmp_path, capsys, monkeypatch):
    write_project(tmp_path, {"crawl": {"contact": CONTACT}})
    urls = tmp_path / "u.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    monkeypatch.setenv("FACEDATA_LOCK_WAIT", "0")
    holder = hold_in_child(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["ingest-urls", str(urls), "--root", str(tmp_path)])
        stage_rc = run_stage("ingest", tmp_path)  # the DVC stage: one readable line, exit code 2, no traceback
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2 and "is busy" in result.output and f"pid {holder.pid}" in result.output
    assert stage_rc == 2
    assert "facedata ingest: busy: the project" in capsys.readouterr().err


def test_ingest_urls_needs_a_contact(tmp_path):
    """Web sources refuse to run until crawl.contact names the operator, and say how to set it (issue 14)."""
    write_project(tmp_path, {})
    urls = tmp_path / "u.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    result = CliRunner().invoke(cli, ["ingest-urls", str(urls), "--root", str(tmp_path)])
    assert result.exit_code == 2 and "crawl.contact" in result.output and "params.yaml" in result.output
    assert not (tmp_path / "data" / "manifests" / "crawl_log.parquet").exists()
