"""A small project with an exported dataset and its embeddings, made without detection: for the train tests
that are about training, not faces (synthetic identity-structured vectors, optional synthetic crops)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedata import manifest
from facedata.ids import sha256_bytes
from facedata.imageio import encode_png
from facedata.pipeline.scaffold import init_project

from .conftest import fixed_lineage


def identity_vectors(n_ids: int, per_id: int, dim: int = 128, seed: int = 0, noise: float = 0.3):
    """(x, labels): unit vectors around `n_ids` centres that share a common direction, like a face model's."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    centres = common / np.linalg.norm(common) + 0.5 * rng.standard_normal((n_ids, dim)) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_ids), per_id)
    x = centres[labels] + noise * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def synthetic_project(
    root: Path,
    n_ids: int = 6,
    per_id: int = 12,
    seed: int = 0,
    review: dict | None = None,
    crops: bool = False,
    git: bool = False,
    train: dict | None = None,
) -> Path:
    """A project whose dataset has `n_ids` identities x `per_id` faces (70% train, 15% val, 15% test), their
    dlib-resnet embeddings and, with `crops`, 150 px PNG crops. `review`: extra dataset columns by name."""
    import yaml

    init_project(root, {}, git=git)
    if train:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        raw["train"].update(train)
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    x, labels = identity_vectors(n_ids, per_id, seed=seed)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_ids, 3))
    rows, emb = [], []
    for i, (v, lab) in enumerate(zip(x, labels, strict=True)):
        k = i % per_id
        split = "train" if k < 0.7 * per_id else "val" if k < 0.85 * per_id else "test"
        fid = f"{i:04d}" + "f" * 60
        identity = f"person_{lab}"
        rel = f"{split}/{identity}/{fid}.png"
        data = b""
        if crops:
            img = np.clip(colours[lab] + rng.normal(0, 40, size=(150, 150, 3)), 0, 255).astype(np.uint8)
            data = encode_png(img)
            path = root / "data" / "dataset" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        lin = fixed_lineage("export")
        rows.append(
            {
                "face_id": fid,
                "identity": identity,
                "split": split,
                "file_path": rel,
                "file_sha256": sha256_bytes(data),
                "image_id": fid,
                "cluster_id": f"c{lab}",
                "store_path": f"data/store/images/{fid}.jpg",
                "detector": "retinaface",
                "x1": 0.0,
                "y1": 0.0,
                "x2": 10.0,
                "y2": 10.0,
                "embedding_model": "dlib-resnet",
                "source_kind": "folder",
                "source_uri": f"/photos/{identity}/{k}.jpg",
                "fetched_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "lineage": lin,
                "image_lineage": lin,
                "face_lineage": lin,
                "embedding_lineage": lin,
                "cluster_lineage": lin,
            }
        )
        emb.append(
            {
                "face_id": fid,
                "model": "dlib-resnet",
                "model_version": "v1",
                "dim": 128,
                "vector": v.tolist(),
                "lineage": fixed_lineage("embed"),
            }
        )
    manifest.write("embeddings", manifest.from_rows("embeddings", emb), root)
    table = manifest.from_rows("dataset", rows)
    path = manifest.write("dataset", table, root)
    if review:
        t = pq.read_table(path)
        for name, values in review.items():
            column = pa.array(values, type=t.schema.field(name).type if name in t.schema.names else None)
            if name in t.schema.names:
                t = t.set_column(t.schema.get_field_index(name), name, column)
            else:
                t = t.append_column(name, column)
        pq.write_table(t, path)
    return root
