"""How good a recognizer is: closed-set identification and open-set rejection, from cosine scores.

- top-1: the share of the cast's test faces whose best-scoring identity is their own.
- Open set (TAR at FAR): a test face of the cast counts as accepted when its best score clears the threshold
  *and* names the right person (the detection-and-identification rate of open-set identification); the
  threshold is the strictest one that lets at most FAR of the impostor probes (faces of people not in the
  cast) through with any name. Impostors are distractor photos when the project names some
  (`train.distractors`), else each test face scored with its own identity left out of the gallery
  (`leave_class_out`): the cast standing in for strangers, which flatters the model a little, since it was
  trained to keep exactly these people apart. The metrics say which was used, and how many impostors there
  were (with N impostors, FAR 1e-3 means at most floor(N / 1000) accepted: coarse for small N).
"""

from __future__ import annotations

import numpy as np

from facedata.faces.evaluate import distance_at_far

FARS = (1e-2, 1e-3)


def far_key(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-")


def score_at_far(impostor_best: np.ndarray, far: float) -> float:
    """The similarity threshold (accept a score > t) that accepts at most floor(far * N) impostors."""
    return -distance_at_far(-np.asarray(impostor_best, dtype=np.float64), far)


def leave_class_out(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each face's best score among the identities that are not its own."""
    s = np.array(scores, dtype=np.float64, copy=True)
    s[np.arange(len(y)), y] = -np.inf
    return s.max(axis=1) if s.shape[1] > 1 else np.full(len(y), -1.0)


def identification(
    scores: np.ndarray, y: np.ndarray, impostor_best: np.ndarray, fars=FARS, n_missed: int = 0
) -> dict:
    """top-1 and TAR at each FAR of the cast's test faces (`scores` (n, classes), `y` their classes) against
    the impostors' best scores. `n_missed` test faces that could not be scored (no face found) count as
    misses."""
    n = len(y) + n_missed
    out: dict = {"n_test_faces": int(n), "n_impostors": int(len(impostor_best))}
    if n == 0:
        return {**out, "top1": None, **{f"tar_at_far_{far_key(f)}": None for f in fars}}
    pred = scores.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    best = scores.max(axis=1) if len(y) else np.zeros(0)
    right = pred == y
    out["top1"] = round(float(right.sum() / n), 5)
    for far in fars:
        t = score_at_far(impostor_best, far) if len(impostor_best) else -np.inf
        out[f"tar_at_far_{far_key(far)}"] = round(float((right & (best > t)).sum() / n), 5)
        out[f"threshold_at_far_{far_key(far)}"] = round(float(t), 5) if np.isfinite(t) else None
    return out


def nearest_centroid_scores(train_x: np.ndarray, train_y: np.ndarray, n_classes: int, x: np.ndarray) -> np.ndarray:
    """The zero-training baseline: cosine of each face to each identity's mean direction."""
    from facedata.train.heads import class_means

    protos = class_means(train_x, train_y, np.ones(len(train_y)), n_classes)
    return np.asarray(x, dtype=np.float32) @ protos.T
