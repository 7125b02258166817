"""Constraints the pipeline knows for free, before any similarity is computed.

- **cannot-link**: two faces detected in one image are two different people (a photo does not show the same
  person twice; mirrors and posters are rare enough to review by hand).
- **must-link**: one face followed through consecutive sampled frames of a video (a *track*) is one person.
  A link needs the two boxes to overlap (IoU) and the two faces to look alike (distance gate, so a cut to
  another shot with someone standing in the same place does not chain two people).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def cannot_link_pairs(image_of_row: Sequence[str]) -> np.ndarray:
    """(p, 2) pairs of row indices whose faces come from the same image."""
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, img in enumerate(image_of_row):
        rows_of[img].append(i)
    pairs = [
        (a, b) for rows in rows_of.values() if len(rows) > 1 for k, a in enumerate(rows) for b in rows[k + 1 :]
    ]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` (n x 4) with every box in `b` (m x 4)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def video_tracks(
    frames: Sequence[tuple[str, int, str]],
    rows_of_image: dict[str, list[int]],
    boxes: np.ndarray,
    x: np.ndarray,
    min_iou: float,
    max_distance: float,
) -> list[np.ndarray]:
    """Must-link groups: faces linked across consecutive sampled frames of each video.

    `frames`: (video_id, frame_index, image_id) for every video frame; `rows_of_image`: rows (faces) per image;
    `boxes`/`x`: per row. Consecutive = adjacent in frame order among the sampled frames of one video. Links
    are one-to-one, best overlap first. Returns groups of >= 2 rows.
    """
    by_video: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for vid, frame, img in frames:
        by_video[vid].append((int(frame), img))
    n = len(x)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    max_cos_gap = max_distance * max_distance / 2.0
    for seq in by_video.values():
        seq.sort()
        for (_, prev), (_, cur) in zip(seq, seq[1:], strict=False):
            ra, rb = rows_of_image.get(prev, []), rows_of_image.get(cur, [])
            if not ra or not rb:
                continue
            overlap = iou(boxes[ra], boxes[rb])
            close = (1.0 - x[ra] @ x[rb].T) <= max_cos_gap
            cand = np.argwhere((overlap >= min_iou) & close)
            order = np.argsort(-overlap[cand[:, 0], cand[:, 1]], kind="stable")
            used_a, used_b = set(), set()
            for i, j in cand[order]:
                if i in used_a or j in used_b:
                    continue
                used_a.add(i)
                used_b.add(j)
                ri, rj = find(ra[i]), find(rb[j])
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(roots):
        groups[int(r)].append(i)
    return [np.asarray(g, dtype=np.int64) for g in groups.values() if len(g) > 1]
