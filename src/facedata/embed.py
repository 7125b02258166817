"""Face embedders: aligned crops in, L2-normalised float32 vectors out.

Each embedder says which alignment template and crop size it expects, so faces cropped for another model
are re-aligned from the source image instead of being fed a wrong geometry.
"""

from __future__ import annotations

import numpy as np

from facedata import models


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class DlibResNet:
    """dlib's ResNet-29 descriptor (face_recognition's model): 128-d, trained on 150x150 dlib chips."""

    name = "dlib-resnet"
    dim = 128
    template = "dlib150"
    crop_size = 150

    def __init__(self, device: str = "auto"):
        import dlib

        spec = models.get_spec(self.name)
        self.version = spec.version
        self.net = dlib.face_recognition_model_v1(str(models.locate_file(self.name)))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        for c in crops:
            if c.shape != (self.crop_size, self.crop_size, 3):
                raise ValueError(f"{self.name} needs {self.crop_size}x{self.crop_size} RGB crops, got {c.shape}")
        vecs = self.net.compute_face_descriptor([np.ascontiguousarray(c, dtype=np.uint8) for c in crops])
        return l2_normalize(np.array([np.asarray(v) for v in vecs], dtype=np.float32))


EMBEDDERS = {DlibResNet.name: DlibResNet}


def make_embedder(name: str, device: str = "auto"):
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedding model {name!r}; available: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name](device)
