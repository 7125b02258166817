"""From one decoded image and its detections to `faces` rows: order, primary face, alignment, quality, filter,
and the aligned crop in the store."""

from __future__ import annotations

import numpy as np

from facedata import ids, store
from facedata.faces import quality
from facedata.faces.align import align
from facedata.faces.detect import Detections
from facedata.imageio import encode_png


def face_rows(
    image_id: str, rgb: np.ndarray, dets: Detections, detector: str, params: dict, root, lineage: dict
) -> list[dict]:
    """One row per detected face (best `max_faces_per_image` by score); filtered faces keep a row and a reason."""
    h, w = rgb.shape[:2]
    dets = dets.order_by_score()
    n = min(len(dets), params["max_faces_per_image"])
    primary = quality.primary_index(dets.boxes[:n], w, h)
    size = params["crop_size"]
    rows = []
    for k in range(n):
        box, score, lms = dets.boxes[k], float(dets.scores[k]), dets.landmarks[k]
        crop, matrix = align(rgb, lms, params["align_template"], size)
        size_px = quality.box_size(box)
        blur = quality.blur_score(crop)
        reasons = quality.filter_reasons(score, size_px, blur, params)
        fid = ids.face_id(image_id, detector, box)
        crop_rel = store.put_blob("crops", fid, ".png", encode_png(crop), root)
        rows.append(
            {
                "face_id": fid,
                "image_id": image_id,
                "face_index": k,
                "detector": detector,
                "x1": float(box[0]),
                "y1": float(box[1]),
                "x2": float(box[2]),
                "y2": float(box[3]),
                "score": score,
                "landmarks": [float(v) for v in lms.reshape(-1)],
                "is_primary": k == primary,
                "size_px": size_px,
                "blur": blur,
                "yaw": None,
                "pitch": None,
                "roll": None,
                "quality": quality.combined_quality(score, size_px, blur),
                "status": "filtered" if reasons else "ok",
                "reason": "; ".join(reasons) or None,
                "crop_path": crop_rel.as_posix(),
                "crop_size": size,
                "align_template": params["align_template"],
                "align_matrix": [float(v) for v in matrix.reshape(-1)],
                "lineage": lineage,
            }
        )
    return rows
