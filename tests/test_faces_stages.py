"""The detect and embed DVC stages on a real project: bad input becomes status rows, reruns reuse work,
new images only embed new faces, a model change re-embeds, and a killed detect run resumes."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from facedata import manifest
from facedata.pipeline.runner import run_stage

from .projects import kill_once_written, run_report

pytestmark = [pytest.mark.shared, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _project(root: Path, source: Path, detect: dict | None = None, embed: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "sources": {"folders": [{"root": str(source), "labeled": True}], "videos": []},
        "ingest": {"max_pixels": 2_000_000},
        "detect": {"workers": 1, "batch_size": 4, **(detect or {})},
        "embed": {"workers": 1, **(embed or {})},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _bad_inputs(face: Path, folder: Path) -> None:
    """Every awkward kind of file the issue lists, made from one real LFW face."""
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(face).convert("RGB")
    img.convert("L").save(folder / "gray.png")
    img.convert("CMYK").save(folder / "cmyk.jpg")
    g16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(g16).save(folder / "sixteen.png")  # mode I;16
    rgba = img.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:20, :, 3] = 0
    Image.fromarray(a, "RGBA").save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees; viewers rotate it back upright
    img.rotate(90, expand=True).save(folder / "exif_rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (1600, 1400), (90, 90, 90)).save(folder / "huge.png")  # over ingest.max_pixels = 2M
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "not_an_image.jpg").write_text("<html>this is a web page</html>")


@pytest.fixture(scope="module")
def built(tmp_path_factory, lfw):
    """A project with 6 good LFW photos and the bad-input zoo, through ingest, detect and embed."""
    base = tmp_path_factory.mktemp("stages")
    src = base / "photos"
    for name in ("Colin_Powell", "Meryl_Streep"):
        (src / name).mkdir(parents=True)
        for p in sorted((lfw / name).glob("*.jpg"))[:3]:
            shutil.copy(p, src / name / p.name)
    _bad_inputs(sorted((lfw / "Hugo_Chavez").glob("*.jpg"))[0], src / "Hugo_Chavez")
    root = _project(base / "proj", src)
    for stage in ("ingest", "detect", "embed"):
        assert run_stage(stage, root) == 0, stage
    return root, src


def _read(root, name):
    return manifest.read(name, root).to_pylist()


def test_bad_input_gets_status_rows_and_the_batch_goes_on(built):
    root, _ = built
    log = {Path(r["source_uri"]).name: r for r in _read(root, "crawl_log")}
    for name in ("huge.png", "truncated.jpg", "not_an_image.jpg"):
        assert log[name]["status"] == "failed" and log[name]["reason"], name
    images = {r["image_id"]: r for r in _read(root, "images")}
    by_name = {Path(r["source_uri"]).name: r["image_id"] for r in images.values()}
    dets = {r["image_id"]: r for r in _read(root, "detections")}
    faces = _read(root, "faces")
    for name in ("gray.png", "cmyk.jpg", "sixteen.png", "alpha.png", "exif_rotated.jpg"):
        det = dets[by_name[name]]
        assert det["status"] == "ok" and det["n_faces"] >= 1, (name, det)
    rotated = [f for f in faces if f["image_id"] == by_name["exif_rotated.jpg"] and f["is_primary"]][0]
    assert abs(rotated["roll"]) < 20  # EXIF applied: the face is upright, not on its side
    assert len(dets) == len(images) == 11


def test_face_rows_carry_quality_pose_transform_and_crops(built):
    root, _ = built
    faces = _read(root, "faces")
    assert faces and all(f["crop_path"] and (root / f["crop_path"]).is_file() for f in faces)
    ok = [f for f in faces if f["status"] == "ok"]
    assert len(ok) >= 11
    for f in ok:
        assert f["lineage"]["model_name"] == "retinaface" and f["reason"] is None
        assert f["yaw"] is not None and f["quality"] > 0 and f["outside"] is not None
        m = np.array(f["align_matrix"]).reshape(2, 3)
        lms = np.array(f["landmarks"]).reshape(5, 2)
        in_crop = lms @ m[:, :2].T + m[:, 2]
        assert np.all((in_crop > 0) & (in_crop < f["crop_size"]))  # the stored transform maps into the crop
    for f in faces:
        if f["status"] == "filtered":
            assert f["reason"]


def test_embeddings_unit_vectors_with_model_and_version(built):
    root, _ = built
    emb = _read(root, "embeddings")
    ok = {f["face_id"] for f in _read(root, "faces") if f["status"] == "ok"}
    assert {e["face_id"] for e in emb} == ok
    for e in emb:
        assert e["model"] == "dlib-resnet" and e["model_version"] == "dlib_face_recognition_resnet_model_v1+flip"
        assert e["dim"] == 128 and abs(np.linalg.norm(e["vector"]) - 1) < 1e-5


def test_reruns_reuse_new_images_only_embed_new_faces_and_model_change_reembeds(built, lfw, tmp_path):
    root0, src0 = built
    src = tmp_path / "photos"
    shutil.copytree(src0, src)
    root = tmp_path / "proj"
    shutil.copytree(root0 / "data", root / "data")
    _project(root, src)
    for stage in ("ingest", "detect", "embed"):
        assert run_stage(stage, root) == 0
    metrics = lambda s: run_report(root, s)  # noqa: E731
    n_faces = len(_read(root, "embeddings"))
    assert metrics("detect")["n_processed"] == 0 and metrics("embed")["n_embedded"] == 0
    assert metrics("embed")["n_reused"] == n_faces
    # two new photos: only their faces are embedded
    (src / "Winona_Ryder").mkdir()
    for p in sorted((lfw / "Winona_Ryder").glob("*.jpg"))[:2]:
        shutil.copy(p, src / "Winona_Ryder" / p.name)
    for stage in ("ingest", "detect", "embed"):
        assert run_stage(stage, root) == 0
    assert metrics("detect")["n_processed"] == 2
    assert metrics("embed")["n_embedded"] == len(_read(root, "embeddings")) - n_faces >= 2
    # another recognizer (an ONNX model on ArcFace 112 crops): everything re-embedded, re-aligned from the photos
    from .test_faces_embed import _export_onnx

    _export_onnx(root / "rec.onnx")
    _project(root, src, embed={"model": "onnx:rec.onnx", "flip": False})
    assert run_stage("embed", root) == 0
    emb = _read(root, "embeddings")
    assert metrics("embed")["n_embedded"] == len(emb) and metrics("embed")["n_reused"] == 0
    assert {e["model"] for e in emb} == {"onnx:rec.onnx"} and {e["dim"] for e in emb} == {16}


def test_alignment_views_reembed_every_face_and_say_so(built, tmp_path):
    root0, src = built
    root = tmp_path / "proj"
    shutil.copytree(root0 / "data", root / "data")
    plain = {e["face_id"]: np.array(e["vector"]) for e in _read(root, "embeddings")}
    _project(root, src, embed={"align_views": ["yunet", "dlib5"], "jitter": 2, "batch_size": 3})
    assert run_stage("embed", root) == 0
    m = run_report(root, "embed")
    assert m["n_reused"] == 0 and m["n_embedded"] == len(plain)  # a new embed param: every face again
    for e in _read(root, "embeddings"):
        assert e["model_version"].endswith("+flip+views=yunet,dlib5+jitter=2")
        v = np.array(e["vector"])
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        assert 0.95 < float(v @ plain[e["face_id"]]) < 1 - 1e-6  # the same face, seen through more views


def test_a_batch_decodes_each_source_image_once(built, monkeypatch):
    """Re-aligning from the source (a model whose template differs from the stored crops) and searching it for
    alignment views share one decode per image."""
    from facedata.pipeline import embed as stage

    root, _ = built
    images = {r["image_id"]: r["store_path"] for r in _read(root, "images")}
    keys = ("face_id", "landmarks", "detector", *stage.BOX)
    batch = [
        {
            **{k: f[k] for k in keys},
            "crop_path": None,
            "align_template": None,
            "crop_size": None,
            "store_path": images[f["image_id"]],
        }
        for f in _read(root, "faces")
        if f["status"] == "ok"
    ][:6]
    reads: list[str] = []
    real = stage.read_image_file
    monkeypatch.setattr(stage, "read_image_file", lambda path, **kw: reads.append(str(path)) or real(path, **kw))
    p = {"model": "dlib-resnet", "device": "cpu", "flip": True, "onnx": {}, "align_views": ["yunet"], "jitter": 1}
    _, version, vecs = stage._embed_batch(stage._make_worker(p, str(root)), batch)
    assert version.endswith("+views=yunet+jitter=1") and len(vecs) == len(batch)
    assert sorted(reads) == sorted({str(root / f["store_path"]) for f in batch})


def test_unreadable_stored_image_is_an_error_row_and_others_go_on(built, tmp_path):
    root0, src = built
    root = tmp_path / "proj"
    shutil.copytree(root0 / "data", root / "data")
    _project(root, src, detect={"min_score": 0.8})  # new params: detect runs again on every image
    images = _read(root, "images")
    victim = images[0]
    (root / victim["store_path"]).write_bytes(b"garbage")
    assert run_stage("detect", root) == 0
    dets = {r["image_id"]: r for r in _read(root, "detections")}
    assert dets[victim["image_id"]]["status"] == "error" and "cannot read" in dets[victim["image_id"]]["reason"]
    assert sum(r["status"] == "ok" for r in dets.values()) == len(images) - 1


def test_killed_detect_run_resumes_without_losing_work(lfw, tmp_path):
    src = tmp_path / "photos"
    for name in ("Colin_Powell", "Donald_Rumsfeld"):
        (src / name).mkdir(parents=True)
        for p in sorted((lfw / name).glob("*.jpg"))[:20]:
            shutil.copy(p, src / name / p.name)
    root = _project(tmp_path / "proj", src, detect={"detector": "mtcnn", "batch_size": 1, "workers": 2})
    assert run_stage("ingest", root) == 0
    run_detect = f"from facedata.pipeline.runner import run_stage; run_stage('detect', {str(root)!r})"
    kill_once_written(
        [sys.executable, "-c", run_detect],
        manifest.path_for("detections", root),
        extra_env={"PYTHONPATH": str(REPO / "src")},
    )
    partial = len(_read(root, "detections"))
    assert 0 < partial < 40, "the run should have been killed part-way"
    assert run_stage("detect", root) == 0
    m = run_report(root, "detect")
    n = len(_read(root, "images"))
    assert n == 40 and m["n_reused"] == partial and m["n_processed"] == n - partial, m
    assert yaml.safe_load((root / "data" / "metrics" / "detect.json").read_text())["n_images"] == n
    assert m["workers"] == 2
