"""From one decoded image and its detections to analysed faces: order, primary face, alignment, quality,
filter; and from those to `faces` manifest rows with the aligned crop in the store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facedata import ids, store
from facedata.faces import quality
from facedata.faces.align import align
from facedata.faces.detect import Detections
from facedata.faces.pose import head_pose
from facedata.imageio import encode_png


@dataclass
class Face:
    index: int  # rank by detector score within the image
    box: np.ndarray  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)
    is_primary: bool
    size_px: float
    outside: float  # share of the box outside the image
    blur: float
    yaw: float
    pitch: float
    roll: float
    quality: float
    reasons: list[str]
    crop: np.ndarray | None  # aligned crop (template, size) as asked; dropped once embedded
    matrix: np.ndarray  # 2x3, source image -> crop
    embedding: np.ndarray | None = None  # unit vector, when an embedder ran

    @property
    def ok(self) -> bool:
        return not self.reasons


def analyze_faces(
    rgb: np.ndarray, dets: Detections, params: dict, template: str, size: int, keep_order: bool = False
) -> list[Face]:
    """The best `max_faces_per_image` faces of one image (found by `params["detector"]`), aligned to
    `template` at `size` px and scored; with `keep_order`, every detection in the order given.

    Faces that fail a threshold are returned too, with their reasons: the caller records them."""
    h, w = rgb.shape[:2]
    if not keep_order:
        dets = dets.order_by_score()
    n = len(dets) if keep_order else min(len(dets), params["max_faces_per_image"])
    primary = quality.primary_index(dets.boxes[:n], w, h, dets.scores[:n], params["min_score"])
    faces = []
    for k in range(n):
        box, score, lms = dets.boxes[k], float(dets.scores[k]), dets.landmarks[k]
        crop, matrix = align(rgb, lms, template, size, params["detector"])
        size_px = quality.box_size(box)
        outside = quality.outside_fraction(box, w, h)
        blur = quality.blur_score(crop)
        yaw, pitch, roll = head_pose(lms, w, h)
        reasons = quality.filter_reasons(score, size_px, outside, blur, yaw, pitch, params)
        faces.append(
            Face(
                index=k,
                box=box,
                score=score,
                landmarks=lms,
                is_primary=k == primary,
                size_px=size_px,
                outside=outside,
                blur=blur,
                yaw=yaw,
                pitch=pitch,
                roll=roll,
                quality=quality.combined_quality(score, size_px, blur, yaw, outside),
                reasons=reasons,
                crop=crop,
                matrix=matrix,
            )
        )
    return faces


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def face_row(
    image_id: str, face: Face, detector: str, params: dict, crop_path: str | None, crop_sha256: str | None = None
) -> dict:
    """The `faces` manifest row for one face (lineage is added by the stage)."""
    return {
        "face_id": ids.face_id(image_id, detector, face.box),
        "image_id": image_id,
        "face_index": face.index,
        "detector": detector,
        "x1": float(face.box[0]),
        "y1": float(face.box[1]),
        "x2": float(face.box[2]),
        "y2": float(face.box[3]),
        "score": face.score,
        "landmarks": [float(v) for v in face.landmarks.reshape(-1)],
        "is_primary": face.is_primary,
        "size_px": face.size_px,
        "outside": face.outside,
        "blur": face.blur,
        "yaw": _finite(face.yaw),
        "pitch": _finite(face.pitch),
        "roll": _finite(face.roll),
        "quality": face.quality,
        "status": "ok" if face.ok else "filtered",
        "reason": "; ".join(face.reasons) or None,
        "crop_path": crop_path,
        "crop_sha256": crop_sha256,
        "crop_size": params["crop_size"],
        "align_template": params["align_template"],
        "align_matrix": [float(v) for v in face.matrix.reshape(-1)],
    }


def face_rows(image_id: str, rgb: np.ndarray, dets: Detections, detector: str, params: dict, root) -> list[dict]:
    """One row per kept face (best `max_faces_per_image` by score), crops written to the store; filtered faces
    keep a row, a crop and a reason."""
    rows = []
    for face in analyze_faces(rgb, dets, params, params["align_template"], params["crop_size"]):
        fid = ids.face_id(image_id, detector, face.box)
        png = encode_png(face.crop)
        crop_rel = store.put_blob("crops", fid, ".png", png, root)
        rows.append(face_row(image_id, face, detector, params, crop_rel.as_posix(), ids.sha256_bytes(png)))
    return rows
