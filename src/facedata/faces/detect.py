"""Face detectors behind one small interface: a list of RGB images in, per image the boxes, scores and
5 landmarks (left eye, right eye, nose, left mouth, right mouth) out, as float32 arrays.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from facedata import models
from facedata.device import resolve_device


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def order_by_score(self) -> Detections:
        """Highest score first; ties broken by box position so the order is deterministic."""
        if len(self) == 0:
            return self
        idx = np.lexsort((self.boxes[:, 1], self.boxes[:, 0], -self.scores))
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx])


class MTCNNDetector:
    """MTCNN from facenet-pytorch, weights from the model resolver, images batched by size."""

    name = "mtcnn"

    def __init__(self, device: str = "auto", min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7)):
        import torch

        from facedata.torchvision_compat import ensure_torchvision

        ensure_torchvision()
        from facenet_pytorch import MTCNN

        self.device = resolve_device(device)
        self.version = models.get_spec("mtcnn").version
        self.net = MTCNN(
            keep_all=True,
            device=self.device,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            select_largest=False,
            post_process=False,
        )
        weights = models.locate("mtcnn")
        for part in ("pnet", "rnet", "onet"):
            state = torch.load(weights[f"{part}.pt"], map_location=self.device, weights_only=True)
            getattr(self.net, part).load_state_dict(state)
        self.net.eval()

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect in every image; images of the same size go through the network as one batch."""
        import torch

        out: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        with torch.inference_mode():
            for idx in by_shape.values():
                batch = np.stack([images[i] for i in idx])
                boxes, probs, lms = self.net.detect(batch, landmarks=True)
                for j, i in enumerate(idx):
                    out[i] = _to_detections(boxes[j], probs[j], lms[j])
        return out  # type: ignore[return-value]


def _to_detections(boxes, probs, lms) -> Detections:
    if boxes is None or len(boxes) == 0:
        return Detections.empty()
    return Detections(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(probs, dtype=np.float32).reshape(-1),
        np.asarray(lms, dtype=np.float32).reshape(-1, 5, 2),
    ).order_by_score()


def make_detector(params: dict):
    """The detector named in params.yaml `detect.detector`."""
    name = params["detector"]
    if name == "mtcnn":
        return MTCNNDetector(params["device"], params["mtcnn_min_face_size"], params["mtcnn_thresholds"])
    raise ValueError(f"unknown detector {name!r}")
