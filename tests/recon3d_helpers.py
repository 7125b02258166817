"""Shared, cached building blocks for the tests/test_recon3d_*.py files (models load once per session)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .conftest import SHARED

AFLW = SHARED / "data" / "aflw2000_3d" / "AFLW2000"
MULTIVIEW = SHARED / "data" / "multiview"
EXAMPLES = SHARED / "models" / "3ddfa_v2" / "examples" / "inputs"


def defaults(section: str) -> dict:
    from facedata import params

    return params.defaults()[section]


class _CachedDetector:
    """MTCNN with its answers remembered per photo (several tests detect in the same photos)."""

    def __init__(self):
        from facedata.faces.detect import MTCNNDetector

        self.inner = MTCNNDetector("cpu")
        self.cache: dict = {}

    def detect(self, images):
        import hashlib

        out = []
        for img in images:
            key = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() + str(img.shape)
            if key not in self.cache:
                self.cache[key] = self.inner.detect([img])[0]
            out.append(self.cache[key])
        return out


@functools.cache
def detector():
    return _CachedDetector()


@functools.cache
def regressor(**overrides):
    from facedata.recon3d.regress import Regressor, RegressorConfig

    p = {**defaults("recon3d"), **overrides}
    return Regressor(RegressorConfig.from_params(p))


@functools.cache
def reconstructor(**overrides):
    from facedata.recon3d.reconstruct import Reconstructor

    return Reconstructor({**defaults("recon3d"), **overrides})


def read_rgb(path: Path) -> np.ndarray:
    from facedata.imageio import read_image_file

    return read_image_file(path).rgb


@functools.cache
def boxes_of(path: str) -> np.ndarray:
    return detector().detect([read_rgb(Path(path))])[0].boxes
