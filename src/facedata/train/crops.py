"""Aligned crops as network input for fine-tuning, with the augmentation (all draws from the caller's seeded
generator, so a batch is a pure function of the seed, the epoch and the rows).

Augmentation, each crop independently: mirrored with probability 0.5; turned by up to 5 degrees, scaled by
0.95-1.05 and shifted by up to 4% of the side about the crop centre (border pixels replicated); brightness
moved by up to 20 grey levels and contrast by 0.8-1.2. Small on purpose: the crops are already aligned, and
the test faces are aligned the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 150  # the dlib ResNet's input (template dlib150)


class CropError(RuntimeError):
    """A dataset crop is missing or not a 150 px dlib150 crop."""


def read_crop(path: Path) -> np.ndarray:
    """A dataset crop as (150, 150, 3) uint8 RGB."""
    from facedata.imageio import read_image_file

    try:
        rgb = read_image_file(path, min_side=1).rgb
    except Exception as exc:  # decode errors of several kinds; say which file
        raise CropError(f"cannot read dataset crop {path}: {exc}; rerun `dvc repro export`") from exc
    if rgb.shape != (SIZE, SIZE, 3):
        raise CropError(
            f"{path} is {rgb.shape[1]}x{rgb.shape[0]}: fine-tuning the dlib ResNet needs 150 px crops aligned to "
            "its template; set detect.align_template: dlib150 and detect.crop_size: 150"
        )
    return rgb


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    out = rgb[:, ::-1] if rng.random() < 0.5 else rgb
    angle = rng.uniform(-5, 5)
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.04, 0.04, size=2) * SIZE
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
    m[:, 2] += shift
    out = cv2.warpAffine(
        np.ascontiguousarray(out), m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    mean = out.mean()
    return np.clip((out.astype(np.float32) - mean) * contrast + mean + bright, 0, 255)


def normalise(batch: np.ndarray, mean_rgb: np.ndarray) -> np.ndarray:
    """(N, 150, 150, 3) RGB -> (N, 3, 150, 150) float32 as the dlib network wants it: (rgb - mean) / 256."""
    x = (np.asarray(batch, dtype=np.float32) - mean_rgb.astype(np.float32)) / 256.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class CropStore:
    """Decoded crops of the training rows, kept in memory (150 px RGB: ~66 KB a face)."""

    def __init__(self, paths: list[Path], crops: list[np.ndarray] | None = None):
        self.paths = paths
        self.cache: dict[int, np.ndarray] = dict(enumerate(crops)) if crops is not None else {}

    def get(self, i: int) -> np.ndarray:
        if i not in self.cache:
            self.cache[i] = read_crop(self.paths[i])
        return self.cache[i]

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None, augment_on: bool) -> np.ndarray:
        crops = [self.get(int(i)) for i in rows]
        if rng is not None and augment_on:
            crops = [augment(c, rng) for c in crops]
        return np.stack(crops)
