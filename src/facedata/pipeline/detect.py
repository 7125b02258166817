"""Stage `detect`: find every face in every stored image, align it, score its quality (faces, detections)."""

from __future__ import annotations

from pathlib import Path

from facedata import manifest
from facedata.faces.detect import make_detector
from facedata.faces.process import face_rows
from facedata.imageio import ImageRejected, read_image_file
from facedata.pipeline.incremental import reusable, run_batches, write_all
from facedata.pipeline.runner import StageContext


def run(ctx: StageContext) -> dict:
    p = ctx.p
    images = manifest.read("images", ctx.root).to_pylist()
    current = {r["image_id"] for r in images}
    old_det = reusable(
        manifest.read("detections", ctx.root, missing_ok=True).to_pylist(),
        ctx,
        lambda r: r["image_id"] in current and r["status"] != "error",
    )
    done = {r["image_id"] for r in old_det}
    old_faces = [r for r in manifest.read("faces", ctx.root, missing_ok=True).to_pylist() if r["image_id"] in done]
    todo = [r for r in images if r["image_id"] not in done]

    detector = make_detector(p) if todo else None
    version = detector.version if detector else None

    def process(batch: list[dict]) -> dict[str, list[dict]]:
        lineage = ctx.lineage(p["detector"], version)
        decoded, det_rows, faces = [], [], []
        for row in batch:
            try:
                decoded.append((row, read_image_file(Path(ctx.root) / row["store_path"], min_side=1).rgb))
            except (OSError, ImageRejected) as exc:
                det_rows.append(
                    _det_row(row, p["detector"], "error", f"cannot read stored image: {exc}", 0, 0, lineage)
                )
        results = detector.detect([rgb for _, rgb in decoded]) if decoded else []
        for (row, rgb), dets in zip(decoded, results, strict=True):
            rows = face_rows(row["image_id"], rgb, dets, p["detector"], p, ctx.root, lineage)
            faces.extend(rows)
            kept = sum(1 for f in rows if f["status"] == "ok")
            reason = None
            if len(dets) > p["max_faces_per_image"]:
                reason = (
                    f"{len(dets)} faces found; only the best {p['max_faces_per_image']} kept (max_faces_per_image)"
                )
            status = "ok" if len(dets) else "no_face"
            det_rows.append(_det_row(row, p["detector"], status, reason, len(dets), kept, lineage))
        return {"detections": det_rows, "faces": faces}

    rows = run_batches(
        ctx, todo, p["batch_size"], process, {"detections": old_det, "faces": old_faces}, desc="detect", unit="img"
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
    return {
        "n_images": n_img,
        "n_processed": len(todo),
        "n_reused": len(done),
        "n_images_with_face": with_face,
        "detection_rate": round(with_face / n_img, 4) if n_img else 0.0,
        "n_errors": sum(1 for r in dets if r["status"] == "error"),
        "n_faces": len(faces),
        "n_faces_ok": sum(1 for f in faces if f["status"] == "ok"),
        "n_faces_filtered": sum(1 for f in faces if f["status"] == "filtered"),
        "filtered_by": dict(sorted(filtered.items())),
    }


def _det_row(image: dict, detector: str, status: str, reason, n_faces: int, n_kept: int, lineage: dict) -> dict:
    return {
        "image_id": image["image_id"],
        "detector": detector,
        "status": status,
        "reason": reason,
        "n_faces": n_faces,
        "n_kept": n_kept,
        "lineage": lineage,
    }
