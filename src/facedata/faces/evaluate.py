"""Measuring detection and recognition the standard way.

Verification (LFW pairs protocol): a pairs file lists `Name i j` (same person) and `Name1 i Name2 j`
(different people) lines, images at `Name/Name_%04d.jpg` under a root. Each image's labelled face (the
centred one, for LFW) is embedded; a pair's distance is the L2 distance of the two unit vectors.

- accuracy: 10-fold cross-validation as in the LFW protocol: for each fold, the distance threshold that
  maximises accuracy on the other nine folds is applied to it; the mean over folds. The folds are the
  official ones when the file keeps their structure (each fold is a run of same-person lines followed by a
  run of different-person lines, as in LFW's pairs.txt), else ten contiguous blocks.
- tar_at_far_1e-3: the share of same-person pairs accepted at the strictest threshold whose false-accept
  rate on the different-person pairs is at most 1e-3 (with N different pairs, at most floor(N / 1000)
  accepted); coarse when N is small, so `n_negative_pairs` is reported with it.
- A pair whose image could not be read or has no face is counted as an error (never dropped): it lowers the
  accuracy and, for a same-person pair, the TAR. `n_failed_images` says how many images that was.

Detection: the share of images in which the labelled face is found. The label is a box from `labels.csv`
in the folder (`path,x1,y1,x2,y2`, matched at IoU >= 0.5) when there is one; otherwise the labelled face is
the centred one (LFW's convention): a detected face whose box contains the image centre.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class PairsError(ValueError):
    """The pairs file cannot be parsed."""


@dataclass(frozen=True)
class Pair:
    a: str  # image path relative to the root
    b: str
    same: bool
    fold: int


def _image(name: str, num: str) -> str:
    return f"{name}/{name}_{int(num):04d}.jpg"


def parse_pairs(path: str | Path, limit: int = 0) -> list[Pair]:
    """Pairs from an LFW-style file (the first `limit` when > 0, folds assigned after the cut); a header line
    of numbers (`10 300`) and blank lines are skipped."""
    raw: list[tuple[str, str, bool]] = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#") or all(p.isdigit() for p in parts):
            continue
        try:
            if len(parts) == 3:
                raw.append((_image(parts[0], parts[1]), _image(parts[0], parts[2]), True))
            elif len(parts) == 4:
                raw.append((_image(parts[0], parts[1]), _image(parts[2], parts[3]), False))
            else:
                raise ValueError(f"{len(parts)} fields")
        except ValueError as exc:
            raise PairsError(
                f"{path}:{lineno}: expected `Name i j` or `Name1 i Name2 j` with image numbers, "
                f"got {line!r} ({exc})"
            ) from exc
    if not raw:
        raise PairsError(f"{path} holds no pairs")
    if limit > 0:
        raw = raw[:limit]
    return [Pair(a, b, same, f) for (a, b, same), f in zip(raw, assign_folds([s for _, _, s in raw]), strict=True)]


def assign_folds(same: list[bool], k: int = 10) -> list[int]:
    """LFW's folds when the order shows them (k runs of same-person lines each followed by different-person
    lines), else k contiguous blocks of (nearly) equal size."""
    folds, fold = [], 0
    for i, s in enumerate(same):
        if i and s and not same[i - 1]:
            fold += 1
        folds.append(fold)
    if fold + 1 == k:
        return folds
    n = len(same)
    return [min(k - 1, i * k // n) for i in range(n)]


def best_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """The threshold t maximising the accuracy of `d <= t -> same` (midpoints between sorted distances)."""
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], same[order]
    # accepting the first i pairs: correct = same among them + different among the rest
    tp = np.concatenate([[0], np.cumsum(ss)])
    correct = tp + (len(ss) - ss.sum()) - (np.arange(len(ss) + 1) - tp)
    finite = np.isfinite(np.concatenate([[-np.inf], ds]))
    correct = np.where(finite, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        return float(ds[0] - 1e-6) if len(ds) else 0.0
    if i == len(ds) or not np.isfinite(ds[i]):
        return float(ds[i - 1])
    return float((ds[i - 1] + ds[i]) / 2)


def verification_metrics(distances: np.ndarray, same: np.ndarray, folds: np.ndarray, far: float = 1e-3) -> dict:
    """Accuracy (k-fold threshold selection), its std over folds, the mean threshold, TAR at `far`.

    `distances` holds +inf for pairs with a failed image; they are counted as errors."""
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:  # e.g. the first pairs of a file: cross-validate over blocks instead
        folds = np.asarray(assign_folds([False] * len(d)))
    failed = ~np.isfinite(d)
    accs, ths = [], []
    for k in np.unique(folds):
        test = folds == k
        train = ~test & ~failed
        t = best_threshold(d[train], s[train])
        pred = (d[test] <= t) & ~failed[test]
        correct = (pred == s[test]) & ~failed[test]
        accs.append(float(correct.mean()))
        ths.append(t)
    n_neg = int((~s).sum())
    t_far = distance_at_far(d[~s & ~failed], far, n_neg)
    pos = d[s]
    tar = float(np.mean(pos < t_far)) if len(pos) else 0.0
    return {
        "accuracy": round(float(np.mean(accs)), 5),
        "accuracy_std": round(float(np.std(accs)), 5),
        "threshold": round(float(np.mean(ths)), 5),
        "tar_at_far_1e-3": round(tar, 5),
        "threshold_at_far_1e-3": round(t_far, 5) if np.isfinite(t_far) else None,
        "n_pairs": int(len(d)),
        "n_positive_pairs": int(s.sum()),
        "n_negative_pairs": n_neg,
        "n_failed_pairs": int(failed.sum()),
    }


def distance_at_far(negatives: np.ndarray, far: float, n_negatives: int | None = None) -> float:
    """The strictest distance threshold t (accept d < t) that accepts at most floor(far * N) negatives: the
    (k+1)-th smallest negative distance. N is `n_negatives` (negatives that failed count in N but can never be
    accepted), else len(negatives); +inf when every negative may be accepted."""
    n = len(negatives) if n_negatives is None else n_negatives
    allowed = math.floor(far * n + 1e-9)
    ordered = np.sort(np.asarray(negatives, dtype=np.float64))
    return float(ordered[allowed]) if allowed < len(ordered) else float("inf")


def labelled_face_index(boxes: np.ndarray, width: int, height: int, label_box: np.ndarray | None = None) -> int:
    """Index of the detected face that is the labelled one, or -1.

    With a label box: the best-overlapping detection at IoU >= 0.5. Without: among boxes containing the image
    centre, the one whose centre is nearest to it."""
    if len(boxes) == 0:
        return -1
    b = np.asarray(boxes, dtype=np.float64)
    if label_box is not None:
        ious = iou(b, np.asarray(label_box, dtype=np.float64))
        i = int(np.argmax(ious))
        return i if ious[i] >= 0.5 else -1
    cx, cy = width / 2.0, height / 2.0
    inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])
    if not inside.any():
        return -1
    dist = np.hypot((b[:, 0] + b[:, 2]) / 2 - cx, (b[:, 1] + b[:, 3]) / 2 - cy)
    dist[~inside] = np.inf
    return int(np.argmin(dist))


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1 = np.maximum(boxes[:, 0], box[0])
    y1 = np.maximum(boxes[:, 1], box[1])
    x2 = np.minimum(boxes[:, 2], box[2])
    y2 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + (box[2] - box[0]) * (box[3] - box[1]) - inter, 1e-9)


def labelled_images(folder: str | Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Every image file under `folder` (sorted), and the label boxes of `labels.csv` if the folder has one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    labels: dict[str, np.ndarray] = {}
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                labels[row["path"]] = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    return images, labels
