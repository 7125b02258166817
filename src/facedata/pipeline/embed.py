"""Stage `embed`: one L2-normalised vector per usable face, for the model in params.

Only new work is done: a vector is reused when its face, model and embed params are unchanged, so adding
images embeds only their faces, and changing `embed.model` (or `embed.flip`...) embeds everything again.
Faces are embedded in batches over a pool of worker processes, one recognizer per process; the stored crop
is used when its geometry is the model's, else the face is re-aligned from the source image. With
`embed.align_views` / `embed.jitter`, each face is also aligned with other landmark sources' points or with
perturbed templates, and the views' vectors are averaged (`facedata.faces.views`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facedata import manifest
from facedata.faces.align import align
from facedata.faces.pool import worker_count
from facedata.imageio import read_image_file
from facedata.pipeline.items import reusable, run_items, write_all
from facedata.pipeline.runner import StageContext

if TYPE_CHECKING:
    from facedata.models import ModelId
    from facedata.project import Project


def load_crop(root: Path, face: dict, template: str, size: int, source: Callable[[str], np.ndarray]) -> np.ndarray:
    """The face's aligned crop for this model: the stored crop when its geometry fits, else re-aligned from the
    source image (`source(face["store_path"])`) with the stored landmarks."""
    if face["crop_path"] and face["align_template"] == template and face["crop_size"] == size:
        return read_image_file(Path(root) / face["crop_path"], min_side=1).rgb
    rgb = source(face["store_path"])
    lms = np.asarray(face["landmarks"], dtype=np.float64).reshape(5, 2)
    crop, _ = align(rgb, lms, template, size, face["detector"])
    return crop


BOX = ("x1", "y1", "x2", "y2")


def _batch_crops(root: Path, model, views, batch: list[dict]) -> tuple[list, list[list[np.ndarray]] | None]:
    """Each face's crop for the model and, with `embed.align_views` / `embed.jitter`, its extra views. Faces are
    taken image by image, so a source image needed for re-aligning and for the views is decoded once."""
    source = lru_cache(maxsize=1)(lambda path: read_image_file(root / path, min_side=1).rgb)
    crops: list = [None] * len(batch)
    extra = [[] for _ in batch] if views is not None else None
    by_image: dict[str, list[int]] = {}
    for i, f in enumerate(batch):
        by_image.setdefault(f["store_path"], []).append(i)
    for path, rows in by_image.items():
        for i in rows:
            crops[i] = load_crop(root, batch[i], model.template, model.crop_size, source)
        if extra is None:
            continue
        by_detector: dict[str, list[int]] = {}
        for i in rows:
            by_detector.setdefault(batch[i]["detector"], []).append(i)
        for detector, found in by_detector.items():
            boxes = np.array([[batch[i][k] for k in BOX] for i in found])
            points = np.array([batch[i]["landmarks"] for i in found], dtype=np.float64).reshape(-1, 5, 2)
            for i, views_of_face in zip(found, views.crops(source(path), boxes, detector, points), strict=True):
                extra[i] = views_of_face
    return crops, extra


def _make_worker(p: dict, root: str):
    from facedata.embed import make_embedder, resolve_model_name
    from facedata.faces.views import aligner_for

    model = make_embedder(resolve_model_name(p["model"], root), p["device"], p["flip"], p["onnx"])
    return model, aligner_for(p, model.template, model.crop_size), root


def _embed_batch(state, batch: list[dict]) -> tuple[str, str, list[tuple[str, list[float]]]]:
    from facedata.embed import model_version_label
    from facedata.faces.views import embed_views

    model, views, root = state
    crops, extra = _batch_crops(Path(root), model, views, batch)
    vecs = embed_views(model, crops, extra)
    sources, jitter = (views.sources, views.jitter) if views else ((), 0)
    version = model_version_label(model.version, getattr(model, "flip", False), sources, jitter)
    return model.name, version, [(f["face_id"], v.tolist()) for f, v in zip(batch, vecs, strict=True)]


def _to_rows(result: tuple[str, str, list], args: tuple[dict, str, str, str]) -> dict[str, list[dict]]:
    """A batch's embeddings rows, once the recognizer that made them is checked to be the expected one."""
    name, version, vecs = result
    lineage, want_name, want_version, model_param = args
    if (name, version) != (want_name, want_version):  # e.g. the weights file was replaced mid-run
        raise RuntimeError(f"the recognizer loaded is {name} {version}, expected {want_name} {want_version}")
    return {
        "embeddings": [
            {
                "face_id": fid,
                # params' value, so cluster/export find the vectors with `embed.model` as written
                "model": model_param,
                "model_version": version,
                "dim": len(v),
                "vector": v,
                "lineage": lineage,
            }
            for fid, v in vecs
        ]
    }


def model_identity(params: dict, project: Project) -> ModelId:
    """The identity of the vectors the stage makes (`facedata.embed.embedder_identity`)."""
    from facedata.embed import embedder_identity

    return embedder_identity(params["embed"], project.root)


def run(ctx: StageContext) -> dict:
    p = ctx.p
    model = model_identity(ctx.params, ctx.project)
    faces = [f for f in manifest.read("faces", ctx.root).to_pylist() if f["status"] == "ok"]
    wanted = {f["face_id"] for f in faces}
    old = reusable(
        manifest.read("embeddings", ctx.root, missing_ok=True).to_pylist(),
        ctx,
        lambda r: r["model"] == p["model"] and r["face_id"] in wanted,
        model,
    )
    done = {r["face_id"] for r in old}
    todo = [f for f in faces if f["face_id"] not in done]
    images = (
        {r["image_id"]: r["store_path"] for r in manifest.read("images", ctx.root).to_pylist()} if todo else {}
    )
    keys = ("face_id", "crop_path", "align_template", "crop_size", "landmarks", "detector", *BOX)
    slim = [{**{k: f[k] for k in keys}, "store_path": images.get(f["image_id"])} for f in todo]
    n_batches = -(-len(slim) // p["batch_size"])

    from facedata.device import resolve_device

    workers = min(worker_count(p["workers"], resolve_device(p["device"])), max(1, n_batches))
    rows = run_items(
        ctx,
        slim,
        p["batch_size"],
        _make_worker,
        (p, str(ctx.root)),
        _embed_batch,
        _to_rows,
        (ctx.lineage(model), model.name, model.version, p["model"]),
        {"embeddings": old},
        model,
        workers,
        desc="embed",
        unit="face",
    )
    write_all(ctx, rows)
    ctx.run.update(n_embedded=len(todo), n_reused=len(done))
    return {
        "model": p["model"],
        "model_version": model.version,
        "n_faces": len(faces),
        "n_embeddings": len(rows["embeddings"]),
    }
