"""People found in video, named in the review app (issue 19 item 4): the index's candidate people shown as
unnamed clusters; naming one records a `name_video` decision and adds its best frames as a video source, which
the next build ingests through the video source with video sha256, frame numbers and track ids in the lineage;
undoing it removes the source. Plus the pieces: picking a candidate's best frames, picked-frame sources checked
and ingested exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from facedata import ids, manifest
from facedata.collect.config import check_picked_frames
from facedata.collect.video import (
    Pick,
    VideoSettings,
    extract_frames,
    face_region,
    iter_video_items,
    parse_frame_uri,
)
from facedata.imageio import encode_png
from facedata.review import decisions
from facedata.video.candidates import Candidate, best_frames

from .projects import dvc, make_project, run

BIN = Path(sys.executable).parent


def _track(tid: str, frames: list[int], qualities: list[float], fps: float = 2.0) -> dict:
    return {
        "track_id": tid,
        "frames": frames,
        "timestamps": [f / 30.0 for f in frames],
        "qualities": qualities,
        "start": frames[0] / 30.0,
        "end": frames[-1] / 30.0 + 1 / fps,
        "n_faces": len(frames),
        "thumbnail": f"thumbs/{tid}.jpg",
    }


def test_best_frames_take_each_tracks_best_first_and_keep_frames_of_a_track_apart():
    a = _track("a", [0, 15, 30, 45, 60, 75], [0.5, 0.9, 0.85, 0.2, 0.8, 0.7])
    b = _track("b", [300, 315, 330], [0.6, 0.95, 0.4])
    # round 1: b's best (0.95, frame 315), a's best (0.9, 15); round 2: b's next best 300 is 0.5 s from 315
    # (too close), 330 too, so b has no more; a: 30 too close to 15, 60 (2 s after 15) next
    assert best_frames([a, b], 3, 1.0) == [(15, "a"), (60, "a"), (315, "b")]
    assert best_frames([a, b], 1, 1.0) == [(315, "b")]
    assert best_frames([a, b], 20, 0.0) == sorted(
        [(f, "a") for f in a["frames"]] + [(f, "b") for f in b["frames"]]
    )
    c = Candidate("x-p000", "v" * 64, "clip.mp4", [a, b])
    assert c.spans == [(0.0, 75 / 30 + 0.5), (10.0, 11.5)] and c.n_faces == 9


def test_picked_frame_sources_are_checked():
    ok = {"path": "v.mp4", "query_name": "Ana", "frames": [3, 9], "tracks": ["t1", "t2"], "review": "r"}
    check_picked_frames(ok, "s")
    check_picked_frames({**ok, "regions": [[0, 4, 20, 20], [5, 0, 8, 9]]}, "s")
    bad = [
        ({**ok, "regions": [[0, 4, 20, 20]]}, "one \\[x, y, width, height\\]"),
        ({**ok, "regions": [[0, 4, 20, 20], [5, 0, 0, 9]]}, "sizes > 0"),
        ({**ok, "regions": [[0, 4, 20, 20], [-1, 0, 8, 9]]}, "x and y >= 0"),
        ({**ok, "regions": [[0, 4, 20, 20], [1.5, 0, 8, 9]]}, "integers"),
        ({"path": "v.mp4", "regions": [[0, 0, 1, 1]]}, "go with `frames`"),
        ({**ok, "frames": []}, "non-empty list"),
        ({**ok, "frames": [3, -1]}, "integers >= 0"),
        ({**ok, "frames": [3, 3]}, "twice"),
        ({**ok, "tracks": ["t1"]}, "one track id"),
        ({k: v for k, v in ok.items() if k != "query_name"}, "need a `query_name`"),
        ({**ok, "fps": 2}, "give one of them"),
        ({"path": "v.mp4", "review": "r"}, "go with `frames`"),
    ]
    for entry, message in bad:
        with pytest.raises(ValueError, match=message):
            check_picked_frames(entry, "s")


def test_picked_frames_are_ingested_exactly_with_their_tracks(tmp_path):
    """No sampling, no face gate, no near-duplicate drop: the frames a person picked, each with its track; a frame
    past the end is a failed row saying so."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    settings = VideoSettings.for_picks({k.split(".", 1)[1]: v for k, v in _ingest_defaults().items()}, 4)
    picks = {4: Pick("t1"), 12: Pick("t2", (10, 6, 20, 30)), 20: Pick("t2", (50, 0, 20, 30)), 99: Pick("t2")}
    items = list(iter_video_items(path, "clip.avi", settings, "Ana", picks=picks))
    kept = [(i.extra["frame_index"], i.extra["track_id"]) for i in items if i.data is not None]
    assert kept == [(4, "t1"), (12, "t2")]
    whole, region = (i for i in items if i.data is not None)
    assert whole.source_uri == "clip.avi#frame=4" and region.source_uri == "clip.avi#frame=12&xywh=10,6,20,30"
    frame = extract_frames(path, [12])[12]
    assert region.data == encode_png(frame[6:36, 10:30])  # the region of the frame, byte for byte
    assert parse_frame_uri(region.source_uri) == ("clip.avi", 12, (10, 6, 20, 30))
    past, outside = (i for i in items if i.error)  # frames past the end are reported before the decoding
    assert outside.extra["frame_index"] == 20 and outside.error.startswith(
        "bad_region: [50, 0, 20, 30] lies outside"
    )
    assert past.extra["frame_index"] == 99 and past.error.startswith("missing: frame 99 is past the end")
    assert all(i.query_name == "Ana" and i.extra["video_id"] == ids.sha256_file(path) for i in items)


def test_a_face_region_is_the_square_round_the_face_cut_to_the_frame():
    assert face_region([40, 20, 60, 50], 640, 360) == (17, 2, 66, 66)  # 2.2 x 30 px round the centre (50, 35)
    assert face_region([0, 0, 20, 20], 100, 100) == (0, 0, 32, 32)  # cut at the frame's edges
    with pytest.raises(ValueError, match="outside"):
        face_region([200, 200, 220, 220], 100, 100)


def test_params_yaml_gets_the_source_and_loses_it_on_undo_keeping_everything_else(tmp_path):
    from facedata.review.decisions import State
    from facedata.review.video import drop_undone, edit_videos

    text = (
        "# my project\nsources:\n  cast: [Ana]   # who we look for\n  videos:\n"
        "    - path: clips/a.mp4   # sampled\ningest:\n  video_fps: 1.0  # per second\n"
    )
    (tmp_path / "params.yaml").write_text(text)
    entry = {"path": "../v.mp4", "query_name": "Bo", "frames": [3, 9], "tracks": ["t1", "t2"], "review": "R1"}
    edit_videos(tmp_path, lambda videos: videos.append(entry) or True)
    after = (tmp_path / "params.yaml").read_text()
    assert "# my project" in after and "# who we look for" in after and "# per second" in after
    assert "frames: [3, 9]" in after and not any(line != line.rstrip() for line in after.splitlines())
    assert yaml.safe_load(after)["sources"]["videos"] == [{"path": "clips/a.mp4"}, entry]
    drop_undone(tmp_path, State(undone={"R0"}))  # another decision undone: nothing changes
    assert (tmp_path / "params.yaml").read_text() == after
    drop_undone(tmp_path, State(undone={"R1"}))
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == yaml.safe_load(text)
    assert "# who we look for" in (tmp_path / "params.yaml").read_text()


def _ingest_defaults() -> dict:
    from facedata.params import SPEC

    return {k: s.default for k, s in SPEC.items() if k.startswith("ingest.")}


# ------------------------------------------------------------------------- end to end, real app and models


@pytest.fixture(scope="module")
def indexed(shared, lfw, tmp_path_factory):
    """A project (2 LFW photos) whose data/video_index holds the Hamilton clip indexed with an empty gallery
    (everyone is a candidate person; no gallery to embed keeps it quick)."""
    tmp = tmp_path_factory.mktemp("vr")
    root = make_project(tmp / "project", lfw, names=["Bill_Clinton"], per_name=2)
    video = shared / "data" / "video" / "short_hamilton_clip.mp4"
    (tmp / "nobody").mkdir()
    run(
        [str(BIN / "facedata"), "index-video", str(video), "--gallery", str(tmp / "nobody"), "--project", "."],
        root,
    )
    decisions.ensure(root)
    return root, video


def _client(root: Path):
    import warnings

    from facedata.review.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = create_app(root, "tester", {"testserver"}, "dlib-resnet")
    client = TestClient(app)
    client.headers.update({"X-CSRF-Token": app.state.csrf_token, "Origin": "http://testserver"})
    return client, app


@pytest.mark.shared
@pytest.mark.slow
def test_naming_a_person_found_in_video_adds_their_frames_to_the_next_build(indexed, monkeypatch):
    root, video = indexed
    c, _ = _client(root)
    page = c.get("/video")
    assert page.status_code == 200 and "name this person" in page.text
    tracks = manifest.conform(
        "video_tracks",
        __import__("pyarrow.parquet", fromlist=["x"]).read_table(root / "data/video_index/video_tracks.parquet"),
    ).to_pylist()
    unknown = [t for t in tracks if t["candidate"]]
    assert len(unknown) == len(tracks) > 1, "with an empty gallery every track is a candidate's"
    # the longest-seen candidate is listed first, with its time ranges and track thumbnails
    by_cand: dict[str, list[dict]] = {}
    for t in unknown:
        by_cand.setdefault(t["candidate"], []).append(t)
    cand = max(by_cand, key=lambda k: (sum(t["end"] - t["start"] for t in by_cand[k]), k))
    assert cand in page.text and f"/video/thumb/{by_cand[cand][0]['track_id']}" in page.text
    thumb = c.get(f"/video/thumb/{by_cand[cand][0]['track_id']}")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert c.get("/video/thumb/..%2F..%2Fparams.yaml").status_code in (400, 404)
    assert c.get("/video/thumb/" + "0" * 16 + "-t99999").status_code == 404

    # refused: no CSRF token, no name, an unknown candidate
    from starlette.testclient import TestClient

    bare = TestClient(c.app)
    assert bare.post("/api/name-video", json={"candidate": cand, "target": "X"}).status_code == 403
    assert c.post("/api/name-video", json={"candidate": cand}).status_code == 400
    r = c.post("/api/name-video", json={"candidate": "nobody-p999", "target": "X"})
    assert r.status_code == 400 and "no candidate person" in r.json()["error"]
    assert decisions.read(root) == []

    r = c.post("/api/name-video", json={"candidate": cand, "target": "  Ana   Lima "})
    assert r.status_code == 200, r.text
    source = r.json()["source"]
    (row,) = decisions.read(root)
    assert row["action"] == "name_video" and row["target"] == "Ana Lima" and row["reviewer"] == "tester"
    assert sorted(row["face_ids"]) == sorted(t["track_id"] for t in by_cand[cand])
    assert json.loads(row["before"]) == {t: f"cand:{cand}" for t in row["face_ids"]}
    assert set(json.loads(row["after"]).values()) == {"id:Ana Lima"}
    # the best frames of its tracks became a video source in params.yaml, tied to the decision
    entry = yaml.safe_load((root / "params.yaml").read_text())["sources"]["videos"][-1]
    assert entry == source and entry["review"] == row["review_id"] and entry["query_name"] == "Ana Lima"
    assert (root / entry["path"]).resolve() == video.resolve()
    frames_of = {t["track_id"]: set(t["frames"]) for t in by_cand[cand]}
    assert all(f in frames_of[t] for f, t in zip(entry["frames"], entry["tracks"], strict=True))
    assert "Ana Lima" in c.get("/video").text
    again = c.post("/api/name-video", json={"candidate": cand, "target": "Someone"})
    assert again.status_code == 400 and "already named Ana Lima" in again.json()["error"]
    # a naming that lands between the early check and the lock (the same reviewer double-submitting) is
    # refused under the lock, and nothing is written
    from facedata.project import Project
    from facedata.review.video import name_candidate

    params_text = (root / "params.yaml").read_text()
    with monkeypatch.context() as m:
        m.setattr(decisions, "read", lambda *a, **k: [])  # the early check sees no decision yet
        with pytest.raises(decisions.ReviewError, match="already named Ana Lima"):
            name_candidate(root, root / "data/video_index", Project.find(root).params, cand, "Bo", "tester")
    assert len(decisions.read(root)) == 1 and (root / "params.yaml").read_text() == params_text

    # the next build ingests exactly those frames, under the name, with the video lineage
    dvc("repro", "ingest", cwd=root)
    images = manifest.read("images", root).to_pylist()
    named = [i for i in images if i["query_name"] == "Ana Lima"]
    assert sorted(i["frame_index"] for i in named) == sorted(entry["frames"])
    video_id = ids.sha256_file(video)
    region_of = dict(zip(entry["frames"], entry["regions"], strict=True))
    for i in named:
        assert i["source_kind"] == "video" and i["video_id"] == video_id and i["format"] == "png"
        assert i["track_id"] == dict(zip(entry["frames"], entry["tracks"], strict=True))[i["frame_index"]]
        assert i["lineage"]["stage"] == "ingest"
        # each is the region round the named face in its frame (its track's box there), not the whole frame
        x, y, w, h = region_of[i["frame_index"]]
        assert i["source_uri"].endswith(f"#frame={i['frame_index']}&xywh={x},{y},{w},{h}")
        assert (i["width"], i["height"]) == (w, h) and (w, h) != (640, 360)
        track = next(t for t in by_cand[cand] if t["track_id"] == i["track_id"])
        box = track["boxes"][track["frames"].index(i["frame_index"])]
        assert x <= box[0] and y <= box[1] and box[2] <= x + w + 1 and box[3] <= y + h + 1
    # a named crop deleted from the store is made again from the video, byte for byte
    from facedata.storecheck import restore_images

    gone = named[0]
    (root / gone["store_path"]).unlink()
    log = manifest.read("crawl_log", root).to_pylist()
    _, _, report = restore_images(root, manifest.read("images", root).to_pylist(), log, lambda q: root / q)
    assert report.restored == {gone["image_id"]: gone["source_uri"]} and not report.lost
    assert ids.sha256_file(root / gone["store_path"]) == gone["image_id"]

    # undo: the source leaves params.yaml, and the next build drops its frames
    r = c.post("/api/decide", json={"action": "undo", "undoes": row["review_id"]})
    assert r.status_code == 200, r.text
    assert all("review" not in v for v in yaml.safe_load((root / "params.yaml").read_text())["sources"]["videos"])
    assert "name this person" in c.get("/video").text
    dvc("repro", "ingest", cwd=root)
    assert not [i for i in manifest.read("images", root).to_pylist() if i["query_name"] == "Ana Lima"]


@pytest.mark.shared
@pytest.mark.slow
def test_naming_a_person_found_in_video_in_a_real_browser(indexed, tmp_path):
    """`facedata review` as users start it, in headless Chromium: the video page, "name this person", the
    prompt answered, the decision and the source saved; then the side panel's undo takes both back."""
    import os
    import shutil

    from .test_review_app import CHROMEDRIVER, CHROMIUM, chromium, review_app

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = indexed
    with review_app(root, tmp_path, ready="/video") as url:
        driver = chromium()
        try:
            wait = WebDriverWait(driver, 30)
            n0 = len(decisions.read(root))
            driver.get(url + "/video")
            wait.until(
                lambda d: (
                    d.execute_script("return document.images[0].complete && document.images[0].naturalWidth") > 0
                )
            )
            buttons = driver.find_elements(By.CSS_SELECTOR, "button.name-candidate")
            assert buttons, "unnamed candidates are listed with a button to name them"
            button = buttons[-1]
            cand = button.get_attribute("data-candidate")
            old = driver.find_element(By.TAG_NAME, "html")
            button.click()
            wait.until(ec.alert_is_present()).send_keys("Bo Ruiz")
            driver.switch_to.alert.accept()
            wait.until(ec.staleness_of(old))
            section = driver.find_element(By.CSS_SELECTOR, f'section[data-candidate="{cand}"]')
            assert "named" in section.get_attribute("class") and "Bo Ruiz" in section.text
            row = decisions.read(root)[n0]
            assert (row["action"], row["target"], row["reviewer"]) == ("name_video", "Bo Ruiz", "selenium")
            videos = yaml.safe_load((root / "params.yaml").read_text())["sources"]["videos"]
            assert [v["review"] for v in videos if v.get("query_name") == "Bo Ruiz"] == [row["review_id"]]
            driver.save_screenshot(str(tmp_path / "video-named.png"))
            if os.environ.get("FACEDATA_TEST_ARTIFACTS"):
                Path(os.environ["FACEDATA_TEST_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(
                    tmp_path / "video-named.png", Path(os.environ["FACEDATA_TEST_ARTIFACTS"]) / "video-named.png"
                )

            old = driver.find_element(By.TAG_NAME, "html")
            driver.find_element(By.CSS_SELECTOR, f'button.undo[data-undo="{row["review_id"]}"]').click()
            wait.until(ec.staleness_of(old))
            assert decisions.read(root)[-1]["undoes"] == row["review_id"]
            videos = yaml.safe_load((root / "params.yaml").read_text())["sources"]["videos"]
            assert not [v for v in videos if v.get("query_name") == "Bo Ruiz"]
            assert driver.find_element(By.CSS_SELECTOR, f'section[data-candidate="{cand}"] button.name-candidate')
        finally:
            driver.quit()
