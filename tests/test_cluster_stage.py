"""The `cluster` and `validate` stages on a small project built from synthetic embeddings: manifests written,
constraints applied, incremental reruns, and quality gates that fail with a readable report."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from facedata import ids, manifest, store
from facedata.cluster.metrics import partition_agreement
from facedata.lineage import make_lineage
from facedata.models import ModelId
from facedata.params import with_defaults
from facedata.pipeline.runner import run_stage

from .projects import run_report


def _png(fid: str) -> bytes:
    """A small real PNG per face (the export's contact sheets open the crops), coloured by its id."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), tuple(bytes.fromhex(fid[1:7]))).save(buf, format="PNG")
    return buf.getvalue()


NAMES = ["ann", "bob", "cyd", "dee", "eve", "fay"]
NOW = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _params(**cluster) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every key at its default
        p = with_defaults({"sources": {"folders": [], "videos": []}})
    p["cluster"].update(cluster)
    return p


def write_params(root: Path, **cluster) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(_params(**cluster)))


class Builder:
    """Rows for every manifest, consistent enough to pass validation (store files and crops exist)."""

    def __init__(self, root: Path, seed: int = 0):
        self.root = root
        self.rng = np.random.default_rng(seed)
        common = _unit(self.rng.standard_normal(128))
        self.centres = {n: _unit(common + 0.38 / np.sqrt(128) * self.rng.standard_normal(128)) for n in NAMES}
        self.images, self.log, self.dets, self.faces, self.emb = [], [], [], [], []
        self.counter = 0

    def lineage(self, stage: str) -> dict:
        model = ModelId("dlib-resnet", "v1", "f" * 64) if stage == "embed" else None
        return make_lineage(stage, "0" * 16, self.root, model, "c0de")

    def vector(self, name: str) -> np.ndarray:
        return _unit(self.centres[name] + 0.2 / np.sqrt(128) * self.rng.standard_normal(128))

    def image(self, label, query, people, video=None, frame=None, boxes=None) -> str:
        self.counter += 1
        data = f"image {self.counter}".encode()
        image_id, rel, _ = store.put_image(data, ".jpg", self.root)
        uri = f"src/{query or 'video'}/{self.counter}.jpg"
        self.images.append(
            {
                "image_id": image_id,
                "store_path": rel.as_posix(),
                "format": "JPEG",
                "width": 250,
                "height": 250,
                "n_bytes": len(data),
                "mode": "RGB",
                "n_frames": 1,
                "phash": f"{self.counter:016x}",
                "dup_of": None,
                "query_name": query,
                "label": label,
                "source_kind": "video" if video else "folder",
                "source_uri": uri,
                "video_id": video,
                "frame_index": frame,
                "fetched_at": NOW,
                "lineage": self.lineage("ingest"),
            }
        )
        self.log.append(
            {
                "log_id": ids.log_id("video" if video else "folder", uri, query),
                "query_name": query,
                "source_kind": "video" if video else "folder",
                "source_uri": uri,
                "source_name": "src",
                "status": "stored",
                "image_id": image_id,
                "n_bytes": len(data),
                "attempts": 1,
                "fetched_at": NOW,
                "lineage": self.lineage("ingest"),
            }
        )
        for k, person in enumerate(people):
            box = boxes[k] if boxes else [60 + 100 * k, 60, 140 + 100 * k, 160]
            self.face(image_id, k, person, box)
        self.dets.append(
            {
                "image_id": image_id,
                "detector": "mtcnn",
                "status": "ok" if people else "no_face",
                "n_faces": len(people),
                "n_kept": len(people),
                "lineage": self.lineage("detect"),
            }
        )
        return image_id

    def face(self, image_id: str, k: int, person: str, box) -> None:
        fid = ids.face_id(image_id, "mtcnn", box)
        crop = store.put_blob("crops", fid, ".png", _png(fid), self.root)
        self.faces.append(
            {
                "face_id": fid,
                "image_id": image_id,
                "face_index": k,
                "detector": "mtcnn",
                "x1": box[0],
                "y1": box[1],
                "x2": box[2],
                "y2": box[3],
                "score": 0.99,
                "landmarks": [100.0] * 10,
                "is_primary": k == 0,
                "size_px": 80.0,
                "blur": 50.0,
                "quality": 0.9,
                "status": "ok",
                "crop_path": crop.as_posix(),
                "crop_size": 150,
                "align_template": "dlib150",
                "align_matrix": [1.0, 0, 0, 0, 1.0, 0],
                "lineage": self.lineage("detect"),
            }
        )
        v = self.vector(person)
        self.emb.append(
            {
                "face_id": fid,
                "model": "dlib-resnet",
                "model_version": "1",
                "dim": 128,
                "vector": v.astype(np.float32).tolist(),
                "lineage": self.lineage("embed"),
            }
        )

    def write(self) -> None:
        for name, rows in (
            ("images", self.images),
            ("crawl_log", self.log),
            ("detections", self.dets),
            ("faces", self.faces),
            ("embeddings", self.emb),
        ):
            manifest.write(name, manifest.from_rows(name, rows), self.root)


def demo_project(root: Path, per_name: int = 6) -> Builder:
    """Six labelled names; one image shows two people (cannot-link); one image has no face; a short video
    whose three frames show one unlabelled person (a track)."""
    b = Builder(root)
    for name in NAMES:
        for _ in range(per_name):
            b.image(name, name, [name])
    b.image("ann", "ann", ["ann", "bob"])  # ann's photo with bob in the background
    b.image("bob", "bob", [])  # no face found
    for frame in (0, 30, 60):
        b.image(None, None, ["fay"], video="v1", frame=frame, boxes=[[10 + frame / 30, 10, 90, 110]])
    b.write()
    write_params(root, threshold=0.43)
    return b


def read(root: Path, name: str) -> list[dict]:
    return manifest.read(name, root).to_pylist()


def metrics(root: Path, stage: str) -> dict:
    return json.loads((root / "data" / "metrics" / f"{stage}.json").read_text())


def test_one_labelled_metric_counts_files_that_failed_to_ingest(tmp_path):
    """The cluster stage, validation and `facedata evaluate cluster` score labelled folders with one function:
    a file of a labelled folder that failed to ingest is a miss in all three (the stage used to drop it)."""
    from facedata.cluster.evaluate import load
    from facedata.quality import gates as validation

    b = demo_project(tmp_path)
    b.log.append(  # the same bytes as one of ann's photos, in an unlabelled folder: not an item
        {
            "log_id": ids.log_id("folder", "other/x/copy.jpg", "x"),
            "query_name": "x",
            "source_kind": "folder",
            "source_uri": "other/x/copy.jpg",
            "source_name": "other",
            "status": "duplicate",
            "image_id": b.images[0]["image_id"],
            "attempts": 1,
            "fetched_at": NOW,
            "lineage": b.lineage("ingest"),
        }
    )
    uri = "src/ann/broken.jpg"
    b.log.append(
        {
            "log_id": ids.log_id("folder", uri, "ann"),
            "query_name": "ann",
            "source_kind": "folder",
            "source_uri": uri,
            "source_name": "src",
            "status": "failed",
            "reason": "truncated: image file is truncated",
            "image_id": None,
            "attempts": 1,
            "fetched_at": NOW,
            "lineage": b.lineage("ingest"),
        }
    )
    b.write()
    assert run_stage("cluster", tmp_path) == 0
    lab = metrics(tmp_path, "cluster")["labelled"]
    assert lab["n_images"] == 6 * 6 + 3 and lab["n_no_face"] == 2
    frame = validation.labelled_metrics_frame(tmp_path).iloc[0].to_dict()
    assert {k: round(frame[k], 4) for k in ("purity", "bcubed_f", "nmi")} == {
        k: lab[k] for k in ("purity", "bcubed_f", "nmi")
    }
    ls = load(tmp_path, "dlib-resnet")
    assert len(ls.labels) == lab["n_images"] and ls.image_ids.count(None) == 1
    assert sorted(ls.labels) == sorted([*NAMES * 6, "ann", "bob", "ann"])


def test_cluster_stage_writes_clusters_identities_and_labelled_metrics(tmp_path):
    b = demo_project(tmp_path)
    assert run_stage("cluster", tmp_path) == 0
    m = metrics(tmp_path, "cluster")
    how = run_report(tmp_path, "cluster")["assignment"]
    assert m["method"] == "knn_average" and how["mode"] == "full"
    assert how["n_cannot_link_pairs"] == 1
    assert how["n_must_link_groups"] == 1 and how["n_must_link_faces"] == 3
    lab = m["labelled"]
    assert lab["n_images"] == 6 * 6 + 2 and lab["n_no_face"] == 1
    assert lab["purity"] == 1.0 and lab["bcubed_f"] > 0.9
    clusters = {r["face_id"]: r for r in read(tmp_path, "clusters")}
    assert len(clusters) == len(b.faces)
    two = [f for f in b.faces if f["image_id"] == b.images[6 * 6]["image_id"]]
    assert clusters[two[0]["face_id"]]["cluster_id"] != clusters[two[1]["face_id"]]["cluster_id"]
    # The background face (bob) is in bob's cluster, owned by the name bob.
    assert clusters[two[1]["face_id"]]["identity"] == "bob"
    track = [f["face_id"] for f in b.faces if f["image_id"] in {r["image_id"] for r in b.images if r["video_id"]}]
    assert len({clusters[f]["cluster_id"] for f in track}) == 1
    assert {clusters[f]["identity"] for f in track} == {"fay"}
    for r in clusters.values():
        assert 0 <= r["doubt"] < 1 and r["lineage"]["stage"] == "cluster"
        if r["cluster_size"] > 1:
            assert r["distance"] is not None and r["margin"] is not None
    ident = {r["query_name"]: r for r in read(tmp_path, "identities")}
    assert set(ident) == set(NAMES)
    assert all(r["status"] == "ok" for r in ident.values())
    assert ident["bob"]["confidence"] == pytest.approx(6 / 7)  # the faceless image counts against bob
    assert ident["ann"]["margin"] == pytest.approx((7 - 1) / 7)  # one image also shows bob


def test_rerun_adds_new_faces_incrementally_and_params_change_reclusters(tmp_path):
    b = demo_project(tmp_path)
    assert run_stage("cluster", tmp_path) == 0
    before = {r["face_id"]: r["cluster_id"] for r in read(tmp_path, "clusters")}
    for name in NAMES[:3]:
        b.image(name, name, [name])
    b.write()
    assert run_stage("cluster", tmp_path) == 0
    how = run_report(tmp_path, "cluster")["assignment"]
    assert how["mode"] == "incremental" and how["n_new"] == 3 and how["n_joined"] + how["n_doubtful"] == 3
    after = {r["face_id"]: r for r in read(tmp_path, "clusters")}
    for name in NAMES[:3]:
        new_face = next(f for f in reversed(b.faces) if f["lineage"] and b_label(b, f) == name)
        assert after[new_face["face_id"]]["identity"] == name
    # Old faces keep their co-members (a cluster's id changes only if a new face becomes its smallest member).
    old_ids = sorted(before)
    drift = partition_agreement([before[f] for f in old_ids], [after[f]["cluster_id"] for f in old_ids])
    assert drift["changed_fraction"] == 0.0
    # Same faces again: nothing new, the previous clustering is reused.
    assert run_stage("cluster", tmp_path) == 0
    assert run_report(tmp_path, "cluster")["assignment"]["n_new"] == 0
    write_params(tmp_path, threshold=0.40)
    assert run_stage("cluster", tmp_path) == 0
    assert run_report(tmp_path, "cluster")["assignment"]["mode"] == "full"


def b_label(b: Builder, face: dict) -> str | None:
    return next(r["label"] for r in b.images if r["image_id"] == face["image_id"])


def test_every_method_runs_as_the_stage(tmp_path):
    demo_project(tmp_path)
    for method in ("agglomerative", "chinese_whispers", "dbscan", "hdbscan", "leiden"):
        write_params(tmp_path, method=method, threshold=0.4, incremental=False)
        assert run_stage("cluster", tmp_path) == 0, method
        assert metrics(tmp_path, "cluster")["method"] == method


def test_validate_passes_on_a_clean_project(tmp_path):
    demo_project(tmp_path)
    assert run_stage("cluster", tmp_path) == 0
    code = run_stage("validate", tmp_path)
    report = json.loads((tmp_path / "data" / "reports" / "validate.json").read_text())
    assert code == 0, report["failures"]
    assert report["success"] and "labelled_metrics" in report["manifests"]


def test_gates_fail_with_a_report_naming_each_expectation_and_example_rows(tmp_path):
    b = demo_project(tmp_path, per_name=2)
    # A name whose images are all faceless: confidence 0, no members.
    b.image("gus", "gus", [])
    b.image("gus", "gus", [])
    # A near-duplicate flood: 3 of the images point at another.
    for r in b.images[1:4]:
        r["dup_of"] = b.images[0]["image_id"]
    # A row without lineage run information.
    b.faces[0]["lineage"] = {**b.faces[0]["lineage"], "git_rev": ""}
    b.write()
    # Labels strict enough to fail: everything in one cluster.
    write_params(tmp_path, threshold=1.5, refine=False)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["validate"].update(min_purity=0.95, min_bcubed_f=0.9, min_faces_per_identity=2, min_dominant_confidence=0.3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    assert run_stage("cluster", tmp_path) == 0
    assert run_stage("validate", tmp_path) == 1
    report = json.loads((tmp_path / "data" / "reports" / "validate.json").read_text())
    html = (tmp_path / "data" / "reports" / "validate.html").read_text()
    failed = {
        (name, e["column"]): e for name, m in report["manifests"].items() for e in m["checks"] if not e["success"]
    }
    assert ("identities", "confidence") in failed  # dominant-cluster confidence gate
    assert ("identities", "n_members") in failed  # minimum faces per identity
    assert ("images", "chk_not_near_duplicate") in failed  # duplicate images
    assert ("faces", "chk_lineage_complete") in failed  # lineage completeness
    assert ("labelled_metrics", "purity") in failed and ("labelled_metrics", "bcubed_f") in failed
    gus = failed[("identities", "confidence")]["examples"]
    assert any(ex.get("query_name") == "gus" for ex in gus)  # example rows name the offender
    assert failed[("faces", "chk_lineage_complete")]["examples"][0]["face_id"] == b.faces[0]["face_id"]
    for line in report["failures"]:
        assert "failed" in line
    assert "FAIL" in html and "gus" in html and "purity" in html
    assert metrics(tmp_path, "validate")["passed"] is False


def test_stage_handles_an_old_clusters_manifest_and_no_faces(tmp_path):
    demo_project(tmp_path)
    # A clusters file from an older schema is ignored (full recluster), not a crash.
    old = pa.table({"face_id": ["x"], "cluster_id": ["c"]})
    import pyarrow.parquet as pq

    pq.write_table(old, manifest.path_for("clusters", tmp_path))
    assert run_stage("cluster", tmp_path) == 0
    assert run_report(tmp_path, "cluster")["assignment"]["mode"] == "full"
    empty = tmp_path / "empty"
    empty.mkdir()
    Builder(empty).write()
    write_params(empty)
    assert run_stage("cluster", empty) == 0
    assert metrics(empty, "cluster")["n_faces"] == 0
