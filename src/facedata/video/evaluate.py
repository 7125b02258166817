"""How good a video index is, against ground truth.

- Segments, per identity, in time: precision = share of the predicted on-screen time that is true, recall =
  share of the true time that was found (on a 0.1 s grid); micro-averaged over identities too.
- Tracks as a clustering of faces into people: each track's true person is the majority label of its faces
  (a face is matched to the truth by position); the predicted cluster is the track's identity, or its
  candidate person when unknown. Purity alone rewards over-splitting, so inverse purity, BCubed F, NMI and the
  predicted vs true number of people are reported with it (`facedata.cluster.metrics`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

GRID = 0.1  # seconds


def _mask(ranges: list[tuple[float, float]], duration: float) -> np.ndarray:
    n = int(np.ceil(duration / GRID)) + 1
    m = np.zeros(n, dtype=bool)
    centres = (np.arange(n) + 0.5) * GRID
    for s, e in ranges:
        m |= (centres >= s) & (centres < e)
    return m


def segment_scores(
    predicted: dict[str, list[tuple[float, float]]], truth: dict[str, list[tuple[float, float]]], duration: float
) -> dict:
    """Per identity and overall (micro): time-based precision, recall, F1. Identities only predicted count
    against precision; only true ones against recall."""
    per, tp_all, p_all, t_all = {}, 0, 0, 0
    for ident in sorted(set(predicted) | set(truth)):
        p, t = _mask(predicted.get(ident, []), duration), _mask(truth.get(ident, []), duration)
        tp = int((p & t).sum())
        prec = tp / p.sum() if p.sum() else None
        rec = tp / t.sum() if t.sum() else None
        per[ident] = {
            "precision": None if prec is None else round(prec, 4),
            "recall": None if rec is None else round(rec, 4),
            "predicted_s": round(p.sum() * GRID, 2),
            "true_s": round(t.sum() * GRID, 2),
        }
        tp_all, p_all, t_all = tp_all + tp, p_all + int(p.sum()), t_all + int(t.sum())
    prec = tp_all / p_all if p_all else 1.0
    rec = tp_all / t_all if t_all else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "per_identity": per}


def track_clustering(true_labels: list[str], predicted: list[str]) -> dict:
    """Clustering metrics over tracks with a known person, plus predicted vs true number of people."""
    from facedata.cluster.metrics import clustering_metrics

    if not true_labels:
        return {"n_tracks": 0}
    m = clustering_metrics(true_labels, predicted)
    keys = ("purity", "inverse_purity", "bcubed_f", "nmi")
    out = {k: round(float(m[k]), 4) for k in keys if k in m}
    out.update(n_tracks=len(true_labels), n_true_people=len(set(true_labels)), n_predicted=len(set(predicted)))
    return out


def majority(labels: list[str | None]) -> str | None:
    known = [x for x in labels if x is not None]
    return Counter(known).most_common(1)[0][0] if known else None
