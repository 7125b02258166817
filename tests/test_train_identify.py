"""On real faces: stage train on a small LFW project (with distractors), then `facedata identify` names a cast
member in a photo it never trained on and calls a stranger `unknown`; the same with a gallery folder."""

from __future__ import annotations

import json

import pytest

from facedata.pipeline.runner import run_stage

from .projects import BIN, SAMPLE_NAMES, make_project, run

pytestmark = [pytest.mark.slow, pytest.mark.shared]

UNKNOWN = "Kofi_Annan"  # in no folder of the project


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lfw):
    base = tmp_path_factory.mktemp("identify")
    strangers = base / "strangers"  # 60 other LFW people, one photo each: half train the unknown class
    people = [p.name for p in sorted(lfw.iterdir()) if p.is_dir() and p.name not in (*SAMPLE_NAMES, UNKNOWN)]
    for name in people[::60][:60]:
        (strangers / name).mkdir(parents=True)
        first = sorted((lfw / name).iterdir())[0]
        (strangers / name / first.name).symlink_to(first)
    root = make_project(
        base / "proj", lfw, per_name=8, train={"distractors": [{"root": str(strangers)}], "epochs": 10}
    )
    for stage in ("ingest", "detect", "embed", "cluster", "validate", "export", "train"):
        assert run_stage(stage, root) == 0, stage
    return root


def test_train_metrics_with_distractors(trained):
    m = json.loads((trained / "data" / "metrics" / "train.json").read_text())
    assert m["open_set_protocol"].startswith("distractors") and m["n_negatives"] > 0
    assert m["test"]["n_impostors"] > 0 and m["n_classes"] == len(SAMPLE_NAMES)
    assert m["top1"] == 1.0
    cached = list((trained / "data" / "cache" / "train").glob("distractors-*.npz"))
    assert len(cached) == 1  # the distractors' faces are kept for the next training
    stamp = cached[0].stat().st_mtime_ns
    assert run_stage("train", trained) == 0
    assert cached[0].stat().st_mtime_ns == stamp
    again = json.loads((trained / "data" / "metrics" / "train.json").read_text())
    assert again["n_negatives"] == m["n_negatives"] and again["test"] == m["test"]


def _known_photo(lfw, name: str):
    return sorted((lfw / name).iterdir())[8]  # the project took the first 8; this one shows nobody else


def test_identify_names_the_cast_and_rejects_a_stranger(trained, lfw, tmp_path):
    known = _known_photo(lfw, "Colin_Powell")
    stranger = sorted((lfw / UNKNOWN).iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "who.json"
    proc = run(
        [str(BIN / "facedata"), "identify", str(known), str(stranger), str(broken), "--json", str(out)],
        trained,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # one image was unreadable
    result = json.loads(out.read_text())
    by_path = {r["path"]: r for r in result["images"]}
    faces = by_path[str(known)]["faces"]
    assert [f["identity"] for f in faces] == ["Colin_Powell"]
    assert 0 < faces[0]["confidence"] <= 1 and len(faces[0]["box"]) == 4
    assert [f["identity"] for f in by_path[str(stranger)]["faces"]] == ["unknown"]
    assert by_path[str(broken)]["status"] == "error" and by_path[str(broken)]["faces"] == []
    # an explicit model and threshold: at -1 everyone is somebody
    model = trained / "data" / "models" / "recognizer" / "model.pt"
    proc = run(
        [str(BIN / "facedata"), "identify", str(stranger), "--model", str(model), "--threshold", "-1"], trained
    )
    assert "unknown" not in proc.stdout


def test_identify_with_a_gallery_folder(trained, lfw, tmp_path):
    gallery = tmp_path / "gallery"
    for name in ("Colin_Powell", "Winona_Ryder", "Hugo_Chavez"):
        (gallery / name).mkdir(parents=True)
        for photo in sorted((lfw / name).iterdir())[:3]:
            (gallery / name / photo.name).symlink_to(photo)
    (gallery / "Empty_Person").mkdir()
    out = tmp_path / "gallery.json"
    known = _known_photo(lfw, "Winona_Ryder")
    stranger = sorted((lfw / UNKNOWN).iterdir())[0]
    proc = run(
        [
            str(BIN / "facedata"),
            "identify",
            str(known),
            str(stranger),
            "--gallery",
            str(gallery),
            "--json",
            str(out),
        ],
        tmp_path,
    )
    assert "Empty_Person: no photo with a usable face" in proc.stderr
    result = {r["path"]: r["faces"] for r in json.loads(out.read_text())["images"]}
    assert [f["identity"] for f in result[str(known)]] == ["Winona_Ryder"]
    assert [f["identity"] for f in result[str(stranger)]] == ["unknown"]


def test_identify_without_model_or_gallery_says_what_to_do(tmp_path, lfw):
    photo = sorted((lfw / UNKNOWN).iterdir())[0]
    (tmp_path / "params.yaml").write_text("{}\n")
    proc = run([str(BIN / "facedata"), "identify", str(photo)], tmp_path, check=False)
    assert proc.returncode == 2 and "no trained model" in proc.stderr and "--gallery" in proc.stderr


def test_index_video_with_the_projects_trained_recognizer(trained, lfw, tmp_path):
    """`facedata index-video` in a project, with neither --model nor --gallery: the train stage's recognizer
    names a cast member on screen and leaves a stranger unknown; the index lands in the project."""
    from facedata.video.synthetic import Shot, write_video

    powell = sorted((lfw / "Colin_Powell").iterdir())[8:10]  # photos the project never took
    stranger = sorted((lfw / UNKNOWN).iterdir())[0]
    write_video(
        [Shot(2.0, (("Colin_Powell", str(powell[0])),)), Shot(2.0, ((UNKNOWN, str(stranger)),))],
        tmp_path / "clip.avi",
        fps=10,
    )
    out = tmp_path / "who.json"
    run([str(BIN / "facedata"), "index-video", str(tmp_path / "clip.avi"), "--json", str(out)], trained)
    result = json.loads(out.read_text())
    assert [s["identity"] for s in result["segments"]] == ["Colin_Powell"]
    assert result["segments"][0]["start"] < 0.5 and result["unknown_tracks"] >= 1
    assert result["model"].startswith("model ") and result["model"].endswith("model.pt")
    assert (trained / "data" / "video_index" / "video_segments.parquet").is_file()
