"""Stage `detect`: find every face in every stored image, align it, score its quality (faces, detections).

Images are processed in batches over a pool of worker processes (`detect.workers`, one per core by default),
each with its own detector. Workers decode the stored image, detect, align, score and write the aligned crop
to the store (atomically); this process collects the rows in input order and checkpoints the manifests every
30 s, so a killed run keeps what it finished and a rerun only does the rest. An image that cannot be read
gets a `detections` row with status `error` and the reason; it is retried on the next run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facedata import manifest
from facedata.faces.pool import worker_count
from facedata.imageio import ImageRejected, read_image_file
from facedata.pipeline.items import reusable, run_items, write_all
from facedata.pipeline.runner import StageContext
from facedata.storecheck import Verifier, bad_crops

if TYPE_CHECKING:
    from facedata.models import ModelId
    from facedata.project import Project


def _make_worker(params: dict, root: str):
    from facedata.faces.detect import make_detector

    return make_detector(params), params, root


def _detect_batch(state, batch: list[dict]) -> tuple[str, list[dict], list[dict]]:
    """(detector version, detections rows, faces rows) for a batch of `images` rows; no lineage yet."""
    from facedata.faces.process import face_rows

    detector, p, root = state
    name = p["detector"]
    det_rows, faces, decoded = [], [], []
    for row in batch:
        try:
            decoded.append((row, read_image_file(Path(root) / row["store_path"], min_side=1).rgb))
        except (OSError, ImageRejected) as exc:
            det_rows.append(_det_row(row, name, "error", f"cannot read stored image: {exc}", 0, 0))
    results = detector.detect([rgb for _, rgb in decoded]) if decoded else []
    for (row, rgb), dets in zip(decoded, results, strict=True):
        rows = face_rows(row["image_id"], rgb, dets, name, p, root)
        faces.extend(rows)
        kept = sum(1 for f in rows if f["status"] == "ok")
        reason = None
        if len(dets) > p["max_faces_per_image"]:
            reason = (
                f"{len(dets)} faces found; only the best {p['max_faces_per_image']} kept (max_faces_per_image)"
            )
        det_rows.append(_det_row(row, name, "ok" if len(dets) else "no_face", reason, len(dets), kept))
    return detector.version, det_rows, faces


def _to_rows(result: tuple[str, list[dict], list[dict]], args: tuple[dict, str, str]) -> dict[str, list[dict]]:
    """A batch's manifest rows, stamped with the run's lineage, once the detector's version is checked."""
    version, det_rows, face_rows_ = result
    lineage, expected, detector = args
    if version != expected:
        raise RuntimeError(f"detector {detector} reports version {version}, expected {expected}")
    for r in (*det_rows, *face_rows_):
        r["lineage"] = lineage
    return {"detections": det_rows, "faces": face_rows_}


def model_identity(params: dict, project: Project) -> ModelId:
    """The detector's identity (its registered weights)."""
    from facedata.models import identity

    return identity(params["detect"]["detector"])


def run(ctx: StageContext) -> dict:
    p = ctx.p
    model = model_identity(ctx.params, ctx.project)
    images = manifest.read("images", ctx.root).to_pylist()
    current = {r["image_id"] for r in images}
    old_det = reusable(
        manifest.read("detections", ctx.root, missing_ok=True).to_pylist(),
        ctx,
        lambda r: r["image_id"] in current and r["status"] != "error",
        model,
    )
    done = {r["image_id"] for r in old_det}
    old_faces = reusable(
        manifest.read("faces", ctx.root, missing_ok=True).to_pylist(), ctx, lambda r: r["image_id"] in done, model
    )
    # A reused face's crop must still be in the store as it was made; an image with a missing or damaged
    # crop is detected again, which writes its crops anew.
    with Verifier(ctx.root) as verifier:
        bad = bad_crops(old_faces, verifier)
    redo = {f["image_id"] for f in old_faces if f["face_id"] in bad}
    if redo:
        done -= redo
        old_det = [r for r in old_det if r["image_id"] in done]
        old_faces = [r for r in old_faces if r["image_id"] in done]
        print(
            f"facedata detect: {len(bad)} stored crop(s) missing or damaged: detecting their images again",
            file=sys.stderr,
        )
    todo = [r for r in images if r["image_id"] not in done]
    slim = [{"image_id": r["image_id"], "store_path": r["store_path"]} for r in todo]
    n_batches = -(-len(slim) // p["batch_size"])

    from facedata.device import resolve_device

    workers = min(worker_count(p["workers"], resolve_device(p["device"])), max(1, n_batches))
    rows = run_items(
        ctx,
        slim,
        p["batch_size"],
        _make_worker,
        (p, str(ctx.root)),
        _detect_batch,
        _to_rows,
        (ctx.lineage(model), model.version, p["detector"]),
        {"detections": old_det, "faces": old_faces},
        model,
        workers,
        desc="detect",
        unit="img",
    )
    write_all(ctx, rows)
    dets, faces = rows["detections"], rows["faces"]
    n_img = len(dets)
    with_face = sum(1 for r in dets if r["n_faces"] > 0)
    filtered: dict[str, int] = {}
    for f in faces:
        for reason in (f["reason"] or "").split("; "):
            if reason:
                key = reason.split(" ")[0]
                filtered[key] = filtered.get(key, 0) + 1
    ctx.run.update(n_processed=len(todo), n_reused=len(done), n_crops_restored=len(bad))
    return {
        "detector": p["detector"],
        "n_images": n_img,
        "n_images_with_face": with_face,
        "detection_rate": round(with_face / n_img, 4) if n_img else 0.0,
        "n_errors": sum(1 for r in dets if r["status"] == "error"),
        "n_faces": len(faces),
        "n_faces_ok": sum(1 for f in faces if f["status"] == "ok"),
        "n_faces_filtered": sum(1 for f in faces if f["status"] == "filtered"),
        "filtered_by": dict(sorted(filtered.items())),
    }


def _det_row(image: dict, detector: str, status: str, reason, n_faces: int, n_kept: int) -> dict:
    return {
        "image_id": image["image_id"],
        "detector": detector,
        "status": status,
        "reason": reason,
        "n_faces": n_faces,
        "n_kept": n_kept,
    }
