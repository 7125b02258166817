"""Manifests: schemas, ids, atomic writes, merge-by-id, schema checks on read, lineage."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facedata import atomic, ids, manifest
from facedata.lineage import LINEAGE_TYPE, VOLATILE_FIELDS, make_lineage
from facedata.models import ModelId

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def lineage(stage="ingest", run="r1"):
    return {
        "stage": stage,
        "run_id": run,
        "git_rev": "abc",
        "code_version": "0.1.0",
        "params_hash": "p1",
        "model_name": None,
        "model_version": None,
        "created_at": NOW,
    }


def image_row(image_id: str, uri: str = "a.jpg", **kw) -> dict:
    row = {
        "image_id": image_id,
        "store_path": f"data/store/images/{image_id[-2:]}/{image_id}.jpg",
        "format": "jpeg",
        "width": 250,
        "height": 250,
        "n_bytes": 1000,
        "mode": "RGB",
        "n_frames": 1,
        "source_kind": "folder",
        "source_uri": uri,
        "fetched_at": NOW,
        "lineage": lineage(),
    }
    row.update(kw)
    return row


def test_every_manifest_has_key_writer_and_lineage():
    for name, schema in manifest.SCHEMAS.items():
        assert name in manifest.KEYS and name in manifest.WRITER
        assert all(k in schema.names for k in manifest.KEYS[name])
        if name in manifest.HUMAN:
            assert {"reviewer", "time", "build"} <= set(schema.names)
        else:
            assert schema.field("lineage").type.equals(LINEAGE_TYPE)
        assert manifest.empty(name).num_rows == 0


def test_ids_are_content_derived_and_stable():
    data = b"some image bytes"
    assert ids.sha256_bytes(data) == ids.sha256_bytes(bytes(data))
    img = ids.sha256_bytes(data)
    a = ids.face_id(img, "mtcnn", [10.2, 20.4, 110.6, 130.3])
    assert a == ids.face_id(img, "mtcnn", [10.4, 20.1, 110.8, 129.8])  # same box to the pixel
    assert a != ids.face_id(img, "mtcnn", [12, 20, 110, 130])
    assert a != ids.face_id(img, "yunet", [10, 20, 111, 130])
    assert ids.cluster_id(["f2", "f1"]) == ids.cluster_id(["f1", "f2"])
    assert ids.log_id("url", "http://x/a.jpg", "Ann") != ids.log_id("url", "http://x/a.jpg", "Bob")


def test_write_read_roundtrip_sorted_and_deterministic(tmp_path):
    rows = [image_row("b" * 64, "b.jpg"), image_row("a" * 64, "a.jpg")]
    path = manifest.write("images", manifest.from_rows("images", rows), tmp_path)
    table = manifest.read("images", tmp_path)
    assert table.column("image_id").to_pylist() == ["a" * 64, "b" * 64]
    first = path.read_bytes()
    manifest.write("images", manifest.from_rows("images", list(reversed(rows))), tmp_path)
    assert path.read_bytes() == first  # same content, same bytes
    assert pq.read_schema(path).metadata[b"facedata.manifest"] == b"images"


def test_merge_replaces_by_key_never_duplicates():
    old = manifest.from_rows("images", [image_row("a" * 64, "old.jpg"), image_row("b" * 64)])
    new = manifest.from_rows("images", [image_row("a" * 64, "new.jpg"), image_row("c" * 64)])
    merged = manifest.merge("images", old, new)
    assert merged.num_rows == 3
    by_id = {r["image_id"]: r for r in merged.to_pylist()}
    assert by_id["a" * 64]["source_uri"] == "new.jpg"
    again = manifest.merge("images", merged, new)
    assert again.equals(merged)


def test_merge_with_composite_key():
    def emb(fid, model, v):
        return {
            "face_id": fid,
            "model": model,
            "model_version": "1",
            "dim": 2,
            "vector": [v, 0.0],
            "lineage": lineage("embed"),
        }

    old = manifest.from_rows("embeddings", [emb("f1", "m1", 1.0), emb("f1", "m2", 1.0)])
    new = manifest.from_rows("embeddings", [emb("f1", "m1", 0.5)])
    merged = manifest.merge("embeddings", old, new).to_pylist()
    assert len(merged) == 2
    assert {(r["model"], r["vector"][0]) for r in merged} == {("m1", 0.5), ("m2", 1.0)}


def test_write_refuses_duplicate_keys(tmp_path):
    rows = [image_row("a" * 64), image_row("a" * 64, "other.jpg")]
    with pytest.raises(manifest.ManifestError, match="duplicate keys"):
        manifest.write("images", manifest.from_rows("images", rows), tmp_path)


def test_read_checks_schema_with_clear_error(tmp_path):
    target = manifest.path_for("images", tmp_path)
    target.parent.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["x"], "width": ["not a number"]}), target)
    with pytest.raises(manifest.ManifestError, match=r"missing columns .*dvc repro --force ingest"):
        manifest.read("images", tmp_path)
    target.write_bytes(b"not parquet at all")
    with pytest.raises(manifest.ManifestError, match="not readable Parquet"):
        manifest.read("images", tmp_path)
    with pytest.raises(manifest.ManifestError, match="not found.*dvc repro detect"):
        manifest.read("faces", tmp_path)
    assert manifest.read("faces", tmp_path, missing_ok=True).num_rows == 0


def test_older_manifests_without_new_nullable_columns_stay_readable(tmp_path):
    table = manifest.from_rows("images", [image_row("a" * 64)]).drop_columns(["license", "author"])
    target = manifest.path_for("images", tmp_path)
    target.parent.mkdir(parents=True)
    pq.write_table(table, target)
    row = manifest.read("images", tmp_path).to_pylist()[0]
    assert row["license"] is None and row["author"] is None and row["image_id"] == "a" * 64
    pq.write_table(table.drop_columns(["source_uri"]), target)  # a required column cannot be made up
    with pytest.raises(manifest.ManifestError, match="source_uri"):
        manifest.read("images", tmp_path)


def test_required_nulls_are_refused():
    row = image_row("a" * 64)
    row["source_uri"] = None
    with pytest.raises(manifest.ManifestError):
        manifest.conform("images", manifest.from_rows("images", [row]))


def test_atomic_write_crash_leaves_old_file(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_atomic_write_survives_a_killed_process(tmp_path):
    """A process SIGKILLed while writing leaves the previous manifest readable and intact."""
    rows = [image_row("a" * 64)]
    manifest.write("images", manifest.from_rows("images", rows), tmp_path)
    before = manifest.path_for("images", tmp_path).read_bytes()
    code = (
        "import os, signal\n"
        "from facedata import atomic\n"
        f"with atomic.atomic_path({str(manifest.path_for('images', tmp_path))!r}) as tmp:\n"
        "    tmp.write_bytes(b'PAR1 partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([os.sys.executable, "-c", code])
    assert proc.returncode != 0
    assert manifest.path_for("images", tmp_path).read_bytes() == before
    assert manifest.read("images", tmp_path).num_rows == 1


def test_lineage_fields_and_stable_view(tmp_path):
    lin = make_lineage("detect", "abcd", tmp_path, ModelId("mtcnn", "v1", "f" * 64), "c0de")
    assert set(lin) == {f.name for f in LINEAGE_TYPE}
    assert lin["git_rev"] == "unknown"  # not a git repository
    a = manifest.from_rows("images", [image_row("a" * 64)])
    b = manifest.from_rows(
        "images", [image_row("a" * 64, lineage=lineage(run="r2") | {"created_at": dt.datetime.now(dt.UTC)})]
    )
    assert not a.equals(b)
    assert manifest.stable_view(a).equals(manifest.stable_view(b))
    assert all(f not in manifest.stable_view(a).schema.field("lineage").type.names for f in VOLATILE_FIELDS)


def test_lineage_git_revision_marks_dirty(tmp_path):
    from facedata.lineage import git_revision

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, check=True, env=env)
    clean = git_revision.__wrapped__(str(tmp_path))
    assert len(clean) == 40
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_revision.__wrapped__(str(tmp_path)) == clean + "-dirty"


def test_manifests_from_before_code_hashes_stay_readable_and_are_not_reused(tmp_path):
    """Lineage gained `code_hash` and `model_sha256`: an older file reads (nulls there), and its rows are not
    reusable, so they are recomputed once."""
    import pyarrow.parquet as pq

    from facedata.lineage import Recipe

    old_type = pa.struct([f for f in LINEAGE_TYPE if f.name not in ("code_hash", "model_sha256")])
    row = image_row("c" * 64)
    table = manifest.from_rows("images", [row])
    old = table.set_column(
        table.schema.get_field_index("lineage"), "lineage", pa.array([lineage()], type=old_type)
    )
    manifest.path_for("images", tmp_path).parent.mkdir(parents=True)
    pq.write_table(old, manifest.path_for("images", tmp_path))
    back = manifest.read("images", tmp_path).to_pylist()[0]["lineage"]
    assert back["code_hash"] is None and back["model_sha256"] is None and back["params_hash"] == "p1"
    assert not Recipe("ingest", "p1", "c0de").made(back)
    assert manifest.read("images", tmp_path, columns=["image_id", "lineage"]).column_names == [
        "image_id",
        "lineage",
    ]


def test_a_row_is_reusable_only_when_params_code_and_model_match(tmp_path):
    from facedata.lineage import Recipe

    model = ModelId("onnx:rec.onnx", "sha256:0123", "0123" + "0" * 60)
    recipe = Recipe("embed", "p1", "c0de")
    lin = recipe.lineage(tmp_path, model)
    assert recipe.made(lin, model)
    assert not Recipe("embed", "p2", "c0de").made(lin, model)  # other params
    assert not Recipe("embed", "p1", "c0df").made(lin, model)  # other code
    swapped = ModelId("onnx:rec.onnx", "sha256:0123", "f" * 64)  # same name and label, other weights
    assert not recipe.made(lin, swapped)
    assert not recipe.made({**lin, "model_version": "other"}, model)
    assert recipe.made(recipe.lineage(tmp_path), None)  # a stage without a model


def test_every_column_is_described_in_the_files_metadata(tmp_path):
    """Field descriptions from the one table in manifest.py, readable with pyarrow alone; every path column
    says what it is relative to."""
    for name in manifest.SCHEMAS:
        docs = manifest.describe(name)
        assert all(docs.values()), f"{name}: undescribed columns {[c for c, d in docs.items() if not d]}"
        for col in docs:
            if col.endswith(("_path", "_dir", "_uri")):
                assert "path relative to" in docs[col], f"{name}.{col} has no documented base"
    # identity, query_name and label all hold names: the descriptions tell them apart
    faces_like = manifest.describe("dataset")
    assert len({faces_like["identity"], faces_like["query_name"], faces_like["label"]}) == 3
    rows = [{"image_id": "a" * 64, "detector": "retinaface", "status": "ok", "n_faces": 1, "n_kept": 1}]
    for r in rows:
        r["lineage"] = make_lineage("detect", "0" * 16, tmp_path, None, "c0de")
    path = manifest.write("detections", manifest.from_rows("detections", rows), tmp_path)
    schema = pq.read_schema(path)
    assert schema.field("n_kept").metadata[b"description"].decode() == manifest.describe("detections")["n_kept"]
    assert manifest.read("detections", tmp_path).schema.field("n_faces").metadata[b"description"]
    assert b"crop_path" in manifest.schema("faces").metadata[b"facedata.path_bases"]
