"""Who each track is: one quality-weighted vector per track, matched open-set against a gallery.

- The track's vector is the mean of its faces' unit vectors weighted by face quality
  (`facedata.faces.quality.combined_quality`): sharp, frontal, large faces count most, and many frames
  average out what one frame gets wrong.
- Open set: a track is named only when its best cosine reaches the gallery's threshold (the trained model's
  own, or `identify.gallery_threshold`); otherwise it is `unknown`, never the nearest cast member.
- Two tracks with a face in one frame are two people: names go out best score first, and a name already
  given to a co-occurring track is not given again (the track takes its next name above the threshold, or
  stays unknown).
- Confidence is a logistic function of the cosine's distance to the threshold, `1 / (1 + exp(-slope *
  (cos - threshold)))` (0.5 at the threshold), with `video.confidence_slope` fitted on a development video
  (`python -m benchmarks video`); for `unknown` it is the probability of being none of the gallery.
"""

from __future__ import annotations

import numpy as np

from facedata.embed import l2_normalize
from facedata.train.identify import UNKNOWN, Gallery
from facedata.video.track import Track


def track_vector(track: Track) -> np.ndarray:
    """Quality-weighted mean of the track's embedded faces (`facedata.video.track`: the faces its links needed
    and its best ones)."""
    obs = track.embedded
    w = np.array([max(o.quality, 1e-3) for o in obs], dtype=np.float64)
    x = np.stack([o.embedding for o in obs]).astype(np.float64)
    return l2_normalize((w[:, None] * x).sum(0)[None])[0]


def calibrated(score: np.ndarray | float, threshold: float, slope: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-slope * (np.asarray(score, dtype=np.float64) - threshold)))


def name_tracks(
    vectors: np.ndarray, cooccur: np.ndarray, gallery: Gallery, slope: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(identity, cosine to it (to the nearest for unknown), confidence) per track."""
    n = len(vectors)
    if n == 0:
        return [], np.zeros(0), np.zeros(0)
    scores = gallery.scores(vectors)
    if scores.shape[1] == 0:  # an empty gallery names nobody
        return [UNKNOWN] * n, np.zeros(n), np.ones(n)
    others: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in cooccur:
        others[int(a)].add(int(b))
        others[int(b)].add(int(a))
    names: list[str | None] = [None] * n
    cos = scores.max(axis=1).astype(np.float64)
    cand = np.argwhere(scores >= gallery.threshold)
    order = np.argsort(-scores[cand[:, 0], cand[:, 1]], kind="stable")
    for i, c in cand[order]:
        name = gallery.classes[int(c)]
        if names[i] is None and all(names[j] != name for j in others[int(i)]):
            names[i] = name
            cos[i] = scores[i, c]
    out = [nm or UNKNOWN for nm in names]
    p = calibrated(cos, gallery.threshold, slope)
    conf = np.where(
        [nm == UNKNOWN for nm in out], 1.0 - calibrated(scores.max(axis=1), gallery.threshold, slope), p
    )
    return out, cos, conf


def cluster_unknown(vectors: np.ndarray, cooccur: np.ndarray, cluster_params: dict) -> np.ndarray:
    """Candidate people among the unknown tracks (labels 0..k-1, one per track): the project's clustering
    (`cluster.method`, `cluster.threshold`) with co-occurring tracks as cannot-links."""
    from facedata.cluster.algorithms import Options, cluster

    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(vectors) == 1:
        return np.zeros(1, dtype=np.int64)
    opts = Options(threshold=cluster_params["threshold"], k=min(cluster_params["k"], len(vectors) - 1))
    labels = cluster(np.asarray(vectors, np.float32), cluster_params["method"], opts, cannot_link=cooccur)
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64)
