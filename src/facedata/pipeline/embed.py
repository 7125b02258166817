"""Stage `embed`: one L2-normalised vector per usable face, for the model in params; only new faces are
computed on a rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata import manifest
from facedata.embed import make_embedder
from facedata.faces.align import align
from facedata.imageio import read_image_file
from facedata.pipeline.incremental import reusable, run_batches, write_all
from facedata.pipeline.runner import StageContext


def load_crop(root: Path, face: dict, template: str, size: int, images: dict[str, dict]) -> np.ndarray:
    """The face's aligned crop for this model: the stored crop when its geometry fits, else re-aligned."""
    if face["crop_path"] and face["align_template"] == template and face["crop_size"] == size:
        return read_image_file(root / face["crop_path"], min_side=1).rgb
    rgb = read_image_file(root / images[face["image_id"]]["store_path"], min_side=1).rgb
    crop, _ = align(rgb, np.asarray(face["landmarks"], dtype=np.float64).reshape(5, 2), template, size)
    return crop


def run(ctx: StageContext) -> dict:
    p = ctx.p
    faces = [f for f in manifest.read("faces", ctx.root).to_pylist() if f["status"] == "ok"]
    wanted = {f["face_id"] for f in faces}
    old = reusable(
        manifest.read("embeddings", ctx.root, missing_ok=True).to_pylist(),
        ctx,
        lambda r: r["model"] == p["model"] and r["face_id"] in wanted,
    )
    done = {r["face_id"] for r in old}
    todo = [f for f in faces if f["face_id"] not in done]
    model = make_embedder(p["model"], p["device"]) if todo else None
    images = {r["image_id"]: r for r in manifest.read("images", ctx.root).to_pylist()} if todo else {}

    def process(batch: list[dict]) -> dict[str, list[dict]]:
        crops = [load_crop(ctx.root, f, model.template, model.crop_size, images) for f in batch]
        vecs = model.embed(crops)
        lineage = ctx.lineage(model.name, model.version)
        return {
            "embeddings": [
                {
                    "face_id": f["face_id"],
                    "model": model.name,
                    "model_version": model.version,
                    "dim": int(v.shape[0]),
                    "vector": v.tolist(),
                    "lineage": lineage,
                }
                for f, v in zip(batch, vecs, strict=True)
            ]
        }

    rows = run_batches(ctx, todo, p["batch_size"], process, {"embeddings": old}, desc="embed", unit="face")
    write_all(ctx, rows)
    return {
        "model": p["model"],
        "n_faces": len(faces),
        "n_embedded": len(todo),
        "n_reused": len(done),
        "n_embeddings": len(rows["embeddings"]),
    }
