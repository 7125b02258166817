"""The store check: a stored image that went missing or was damaged comes back from its source (folder file,
video frame, URL), or its rows say it is lost; the fast path trusts only files it has seen hash right."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
from click.testing import CliRunner

from facedata import manifest
from facedata.cli import main as cli
from facedata.pipeline.runner import run_stage
from facedata.storecheck import Verifier

from .collect_servers import LocalServer, fast_crawl_params, jpeg, noise_image, static, write_project


def _metrics(project) -> dict:
    return json.loads((project / "data" / "metrics" / "ingest.json").read_text())


def _images(project) -> dict[str, dict]:
    return {r["source_uri"]: r for r in manifest.read("images", project).to_pylist()}


def _damage(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))


def test_folder_and_video_images_come_back_from_their_source(tmp_path):
    photos = tmp_path / "photos"
    for i in range(4):
        (photos / "Ann").mkdir(parents=True, exist_ok=True)
        (photos / "Ann" / f"{i}.jpg").write_bytes(jpeg(10 + i))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 80))
    for i in range(30):
        writer.write(np.asarray(noise_image(100 + i // 10))[:, :, ::-1].copy())
    writer.release()
    project = tmp_path / "proj"
    write_project(
        project,
        {
            "sources": {"folders": [{"root": str(photos)}], "videos": [{"path": str(video)}]},
            "ingest": {"video_faces_only": False, "video_scene_threshold": 0},
        },
    )
    assert run_stage("ingest", project) == 0
    images = _images(project)
    assert len(images) == 7  # 4 photos, frames 0, 10, 20
    folder = [r for u, r in images.items() if "/Ann/" in u]
    frame = next(r for u, r in images.items() if u.endswith("#frame=10"))
    (project / folder[0]["store_path"]).unlink()
    _damage(project / folder[1]["store_path"])
    (project / frame["store_path"]).unlink()

    assert run_stage("ingest", project) == 0
    metrics = _metrics(project)
    assert metrics["store"] == {"n_restored": 3, "n_lost": 0, "lost": {}}
    assert metrics["n_stored"] == 7 and metrics["n_images"] == 7
    with Verifier(project) as v:
        assert all(v.check(r["store_path"], r["image_id"])[0] == "ok" for r in _images(project).values())

    # The source no longer has it: the image leaves the manifest and its row says why.
    (photos / "Ann" / "3.jpg").unlink()
    lost = _images(project)[f"{photos}/Ann/3.jpg"]
    (project / lost["store_path"]).unlink()
    (photos / "Ann" / "3.jpg").write_bytes(jpeg(99))  # the same name, other bytes: not a way back
    assert run_stage("ingest", project) == 0
    metrics = _metrics(project)
    # The changed file is a new image; the old bytes are gone from the store and from every source.
    assert metrics["store"]["n_lost"] == 0 and lost["image_id"] not in {
        r["image_id"] for r in _images(project).values()
    }


def test_hand_collected_web_images_are_fetched_again_or_marked_lost(tmp_path):
    with LocalServer("127.0.0.1") as server:
        for i in range(3):
            server.routes[f"/p/{i}.jpg"] = static(jpeg(50 + i))
        project = tmp_path / "proj"
        write_project(project, {"crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{server.port}"])})
        (tmp_path / "urls.txt").write_text("".join(server.url(f"/p/{i}.jpg") + "\n" for i in range(3)))
        result = CliRunner().invoke(cli, ["ingest-urls", str(tmp_path / "urls.txt"), "--root", str(project)])
        assert result.exit_code == 0, result.output
        rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in manifest.read("images", project).to_pylist()}
        (project / rows["0.jpg"]["store_path"]).unlink()
        _damage(project / rows["1.jpg"]["store_path"])
        server.routes["/p/1.jpg"] = static(jpeg(77))  # the server now has other bytes at that URL
        assert run_stage("ingest", project) == 0
        store = _metrics(project)["store"]
        assert store["n_restored"] == 1 and store["n_lost"] == 1
        assert store["lost"][rows["1.jpg"]["image_id"]].startswith("stored file damaged")
        assert (project / rows["0.jpg"]["store_path"]).is_file()
        log = {r["source_uri"].rsplit("/", 1)[1]: r for r in manifest.read("crawl_log", project).to_pylist()}
        assert log["1.jpg"]["status"] == "failed" and log["1.jpg"]["reason"].startswith("lost: ")
        assert rows["1.jpg"]["image_id"] not in {
            r["image_id"] for r in manifest.read("images", project).to_pylist()
        }

        # Not allowed to fetch again: lost, and the row says so.
        (project / rows["2.jpg"]["store_path"]).unlink()
        write_project(
            project,
            {
                "crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{server.port}"]),
                "ingest": {"restore_from_web": False},
            },
        )
        hits = server.hits_of("/p/2.jpg")
        assert run_stage("ingest", project) == 0
        assert server.hits_of("/p/2.jpg") == hits
        reason = _metrics(project)["store"]["lost"][rows["2.jpg"]["image_id"]]
        assert "ingest.restore_from_web is false" in reason


def test_the_fast_path_trusts_only_files_it_has_seen_hash_right(tmp_path):
    data = jpeg(5)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "data" / "store" / "images" / "x.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    rel = "data/store/images/x.jpg"
    with Verifier(tmp_path) as v:
        assert v.check(rel, sha) == ("ok", sha) and v.n_hashed == 1
    with Verifier(tmp_path) as v:
        assert v.check(rel, sha)[0] == "ok" and v.n_hashed == 0  # size, mtime, inode unchanged: not read
    _damage(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with Verifier(tmp_path) as v:
        assert v.check(rel, sha)[0] == "damaged" and v.n_hashed == 1
        assert v.check("data/store/images/none.jpg", sha) == ("missing", None)
    (tmp_path / "data" / ".store_check.sqlite").write_bytes(b"not a database")
    path.write_bytes(data)
    with Verifier(tmp_path) as v:  # a broken cache is rebuilt, never trusted
        assert v.check(rel, sha)[0] == "ok" and v.n_hashed == 1
