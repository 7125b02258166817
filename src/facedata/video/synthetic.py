"""Videos with known ground truth, assembled from labelled photos: for benchmarks and tests.

Each shot shows one or more photos (one person each) on a plain background of its own colour (so the cut is
a real cut), drifting slowly (so boxes move as in footage). The ground truth is exact: who is on screen in
which time range, and where each photo lies in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Shot:
    seconds: float
    people: tuple[tuple[str, str], ...]  # (identity, photo path) per person on screen
    side: int = 200  # photo size on screen, px (an LFW photo's face is ~45% of it)
    blur: float = 0.0  # Gaussian blur sigma applied to the photos (out of focus, soft broadcast)


@dataclass(frozen=True)
class Appearance:
    identity: str
    start: float
    end: float
    rect0: tuple[int, int, int, int]  # x1, y1, x2, y2 of the photo at the shot's first frame
    drift: float  # pixels per frame to the right
    first_frame: int
    last_frame: int

    def rect_at(self, frame: int) -> tuple[float, float, float, float]:
        dx = self.drift * (frame - self.first_frame)
        x1, y1, x2, y2 = self.rect0
        return x1 + dx, y1, x2 + dx, y2


def write_video(shots: list[Shot], path: str | Path, fps: float = 25.0, size=(640, 360)):
    """Render `shots` to `path` (mp4v), return the list of `Appearance`s."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(0)
    truth, frame = [], 0
    try:
        for k, shot in enumerate(shots):
            n = int(round(shot.seconds * fps))
            bg = np.array([(37 * k) % 200 + 30, (91 * k) % 200 + 30, (53 * k) % 200 + 30], np.uint8)
            side = shot.side
            photos = [
                cv2.resize(cv2.imread(p), (side, side), interpolation=cv2.INTER_AREA) for _, p in shot.people
            ]
            if shot.blur > 0:
                photos = [cv2.GaussianBlur(ph, (0, 0), shot.blur) for ph in photos]
            gap = (w - side * len(photos)) / (len(photos) + 1)
            drift = float(rng.uniform(-0.6, 0.6))
            rects = []
            for i in range(len(photos)):
                x1 = int(gap + i * (side + gap)) - int(drift * n / 2)
                rects.append((x1, (h - side) // 2, x1 + side, (h - side) // 2 + side))
            for (ident, _), r in zip(shot.people, rects, strict=True):
                t0 = frame / fps
                truth.append(Appearance(ident, t0, t0 + n / fps, r, drift, frame, frame + n - 1))
            for j in range(n):
                img = np.empty((h, w, 3), np.uint8)
                img[:] = bg
                dx = int(round(drift * j))
                for ph, (x1, y1, x2, y2) in zip(photos, rects, strict=True):
                    a, b = max(0, x1 + dx), min(w, x2 + dx)
                    if b > a:
                        img[y1:y2, a:b] = ph[:, a - (x1 + dx) : b - (x1 + dx)]
                writer.write(img)
                frame += 1
    finally:
        writer.release()
    return truth
