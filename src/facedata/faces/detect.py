"""Face detectors behind one small interface.

A detector takes a list of RGB images (H x W x 3 uint8) and returns, per image, a `Detections`: boxes
(x1, y1, x2, y2), scores and 5 landmarks (left eye, right eye, nose tip, left mouth corner, right mouth
corner, "left" meaning the image's left), all float32 in source-image pixels and ordered by score.

Detectors report every candidate above their own floor (`detect.candidate_score`); deciding which faces are
usable (score, size, cut-off, blur, pose) is the quality filter's job, which keeps a row and a reason for every
face it rejects. Images larger than `detect.max_side` are shrunk for detection only; coordinates are mapped back.

| name         | model                                  | notes                                                   |
|--------------|----------------------------------------|---------------------------------------------------------|
| `retinaface` | RetinaFace MobileNet-0.25 (torch)      | the default: best verification; GPU when present        |
| `yunet`      | YuNet 2023mar via `cv2.FaceDetectorYN` | fastest on CPU                                          |
| `mtcnn`      | MTCNN (facenet-pytorch, torch)         | the classic cascade; slowest on CPU                     |

How often each finds the labelled LFW face, and how well faces aligned with its landmarks verify, is in
BENCHMARKS.md (detectors, verification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from facedata import models
from facedata.device import inference_threads, resolve_device
from facedata.params import default


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

    def scaled(self, factor: float) -> Detections:
        """Coordinates multiplied by `factor` (to map detections on a resized image back)."""
        if factor == 1.0:
            return self
        return Detections(self.boxes * factor, self.scores, self.landmarks * factor)


class Detector(Protocol):
    name: str
    version: str

    def detect(self, images: list[np.ndarray]) -> list[Detections]: ...


def _shrink(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image resized so its longer side is at most `max_side` (0: never), and the factor back to the source."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    s = max_side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, max(h, w) / max_side


def _drop_contained(boxes: np.ndarray) -> np.ndarray:
    """Mask of boxes to keep. A box is a part of a larger face (an eye, the mouth, the forehead of a close-up),
    not a face of its own, when at least 60% of it lies within a detection at least 1.5x its area, or when its
    centre and at least 40% of it lie within one at least 4x its area. A visible face never sits that far inside
    another face's box, so real faces in crowds are unaffected."""
    n = len(boxes)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    for i in range(n):
        w = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        covered = (w * h) / max(area[i], 1e-6)
        cx, cy = (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2
        centre_in = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
        inside = (covered >= 0.6) & (area >= 1.5 * area[i])
        part = inside | (centre_in & (covered >= 0.4) & (area >= 4 * area[i]))
        if np.any(part):
            keep[i] = False
    return keep


def _to_detections(boxes, scores, lms) -> Detections:
    if boxes is None or len(boxes) == 0:
        return Detections.empty()
    return Detections(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(scores, dtype=np.float32).reshape(-1),
        np.asarray(lms, dtype=np.float32).reshape(-1, 5, 2),
    ).order_by_score()


class YuNetDetector:
    """OpenCV's YuNet (libfacedetection.train, 2023mar). CPU only (OpenCV's DNN), one image at a time: at a few
    milliseconds per image that is not the bottleneck, and the process pool gives the parallelism."""

    name = "yunet"

    def __init__(
        self,
        candidate_score: float = default("detect.candidate_score"),
        nms: float = 0.3,
        max_side: int = default("detect.max_side"),
    ):
        path = models.locate_file("yunet", "face_detection_yunet_2023mar.onnx")
        self.version = models.get_spec("yunet").version
        self.max_side = max_side
        self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), candidate_score, nms, 5000)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        return [self._one(img) for img in images]

    def _one(self, img: np.ndarray) -> Detections:
        small, back = _shrink(img, self.max_side)
        h, w = small.shape[:2]
        self.net.setInputSize((w, h))
        _, faces = self.net.detect(np.ascontiguousarray(small[:, :, ::-1]))
        if faces is None or len(faces) == 0:
            return Detections.empty()
        f = np.asarray(faces, dtype=np.float32)
        boxes = np.stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 2], f[:, 1] + f[:, 3]], axis=1)
        # YuNet lists the eye and mouth corner on the image's left first, like facedata.
        return _to_detections(boxes, f[:, 14], f[:, 4:14]).scaled(back)


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 in torch, one image per network pass (results independent of batching).

    This small model was trained on 300 px crops; on inputs much larger than ~1000 px it starts to see faces in
    textured backgrounds (false positives on large press photos at full size, none once shrunk), so images are
    shrunk to at most `NATIVE_MAX_SIDE` for it whatever `detect.max_side` says. Faces
    down to ~10 px at that scale are still found.

    Its anchors stop at 256 px, so a close-up (a 600 px face in a 1024 px portrait) is never found at 960 px;
    worse, the net then fires on parts of it (eyes, mouth) with scores up to 0.99. Each image therefore also
    goes through at `PYRAMID` long sides (one pass costs ~1/4 and ~1/16 of the first), candidates of all scales
    are merged by NMS in image coordinates, and a box lying mostly inside a much larger detection is dropped as
    a face part (`_drop_contained`)."""

    name = "retinaface"
    NATIVE_MAX_SIDE = 960
    PYRAMID = (480, 240)  # extra passes, long side in px, for faces beyond the anchors at the first scale

    def __init__(
        self,
        device: str = default("detect.device"),
        candidate_score: float = default("detect.candidate_score"),
        nms: float = 0.4,
        max_side: int = default("detect.max_side"),
    ):
        import torch

        from facedata.faces.retinaface import RetinaFaceNet

        self.device = resolve_device(device)
        self.version = models.get_spec("retinaface").version
        self.candidate_score, self.nms = candidate_score, nms
        self.max_side = min(max_side or self.NATIVE_MAX_SIDE, self.NATIVE_MAX_SIDE)
        self.net = RetinaFaceNet()
        state = torch.load(models.locate_file("retinaface"), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.eval().to(self.device)
        self._priors: dict[tuple[int, int], object] = {}

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        first = [_shrink(img, self.max_side) for img in images]
        passes = [first]
        for side in self.PYRAMID:
            # Only where the image is (after the first shrink) at least twice this side: smaller images already
            # fit their largest faces in the anchors.
            passes.append([_shrink(img, side) if max(img.shape[:2]) >= 2 * side else None for img in images])
        candidates: list[list[tuple]] = [[] for _ in images]
        for shrunk in passes:
            for i, found in self._run([s for s in shrunk]).items():
                candidates[i].append(found)
        return [self._merge(c) for c in candidates]

    def _run(self, shrunk: list[tuple[np.ndarray, float] | None]) -> dict[int, tuple]:
        """One network pass per image of one pyramid level; (boxes, scores, landmarks) in image pixels.

        Each image goes through the network alone (a batch of one), on `INFERENCE_THREADS` CPU threads: a
        convolution over several images, or on other thread counts, differs in the last float bits from the
        same image alone, and a face's box would depend on which images shared its batch (`detect.batch_size`
        is speed-only, and a resumed run batches differently). Measured cost in BENCHMARKS.md."""
        import torch

        from facedata.faces.retinaface import MEAN_BGR

        out: dict[int, tuple] = {}
        mean = torch.tensor(MEAN_BGR, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode(), inference_threads(self.device):
            for i, item in enumerate(shrunk):
                if item is None:
                    continue
                img, back = item
                x = torch.from_numpy(img).to(self.device)[None].permute(0, 3, 1, 2).flip(1).float() - mean
                deltas, logits, lm_deltas = self.net(x)  # RGB -> BGR above, as trained
                boxes, lms = self._decode(deltas, lm_deltas, *img.shape[:2])
                scores = torch.softmax(logits[0], dim=-1)[:, 1]
                keep = scores > self.candidate_score
                out[i] = ((boxes[0][keep] * back).cpu(), scores[keep].cpu(), (lms[0][keep] * back).cpu())
        return out

    def _merge(self, found: list[tuple]) -> Detections:
        import torch

        from facedata.torchvision_compat import nms_reference

        boxes = torch.cat([f[0] for f in found]) if found else torch.zeros((0, 4))
        if len(boxes) == 0:
            return Detections.empty()
        scores = torch.cat([f[1] for f in found])
        lms = torch.cat([f[2] for f in found])
        order = scores.argsort(descending=True)[:5000]
        boxes, scores, lms = boxes[order], scores[order], lms[order]
        kept = nms_reference(boxes, scores, self.nms)
        b, s, lm = boxes[kept].numpy(), scores[kept].numpy(), lms[kept].numpy()
        keep = _drop_contained(b)
        return _to_detections(b[keep], s[keep], lm[keep])

    def _decode(self, deltas, lm_deltas, h: int, w: int):
        import torch

        from facedata.faces.retinaface import decode, priors

        if (h, w) not in self._priors:
            self._priors[(h, w)] = torch.from_numpy(priors(h, w)).to(self.device)
        return decode(deltas, lm_deltas, self._priors[(h, w)])


class MTCNNDetector:
    """MTCNN from facenet-pytorch, weights from the model resolver, one image per network pass."""

    name = "mtcnn"

    def __init__(
        self,
        device: str = default("detect.device"),
        min_face_size: int = default("detect.mtcnn_min_face_size"),
        thresholds=tuple(default("detect.mtcnn_thresholds")),
        candidate_score: float = default("detect.candidate_score"),
        max_side: int = default("detect.max_side"),
    ):
        import torch

        from facedata.torchvision_compat import ensure_torchvision

        ensure_torchvision()
        from facenet_pytorch import MTCNN

        self.device = resolve_device(device)
        self.version = models.get_spec("mtcnn").version
        self.candidate_score, self.max_side = candidate_score, max_side
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
        """Detect in every image, each on its own (see `RetinaFaceDetector._run` for why not batched)."""
        import torch

        out = []
        with torch.inference_mode(), inference_threads(self.device):
            for img in images:
                small, back = _shrink(img, self.max_side)
                boxes, probs, lms = self.net.detect(small[None], landmarks=True)
                d = _to_detections(boxes[0], probs[0], lms[0])
                if len(d):
                    keep = d.scores >= self.candidate_score
                    d = Detections(d.boxes[keep], d.scores[keep], d.landmarks[keep])
                out.append(d.scaled(back))
        return out


DETECTORS = ("retinaface", "yunet", "mtcnn")


def make_detector(params: dict) -> Detector:
    """The detector named in params.yaml `detect.detector`, configured from the `detect` section."""
    name = params["detector"]
    floor, max_side = params["candidate_score"], params["max_side"]
    if name == "yunet":
        return YuNetDetector(floor, max_side=max_side)
    if name == "retinaface":
        return RetinaFaceDetector(params["device"], floor, max_side=max_side)
    if name == "mtcnn":
        return MTCNNDetector(
            params["device"], params["mtcnn_min_face_size"], params["mtcnn_thresholds"], floor, max_side
        )
    raise ValueError(f"unknown detector {name!r}; available: {', '.join(DETECTORS)}")
