"""Clustering quality against identity labels, all computed from one contingency table.

Purity alone rewards over-splitting (every face alone has purity 1), so it is always reported with inverse
purity, BCubed precision/recall/F (Amigo et al. 2009), pairwise precision/recall/F, NMI, the number of
clusters and compactness = clusters / items. Items without a face must be passed in as their own singleton
clusters by the caller, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

KEYS = (
    "purity",
    "inverse_purity",
    "bcubed_precision",
    "bcubed_recall",
    "bcubed_f",
    "pairwise_precision",
    "pairwise_recall",
    "pairwise_f",
    "nmi",
    "n_clusters",
    "compactness",
)


#: crawl_log statuses of a file that is an item: it became an image (stored, or the same bytes as one: duplicate)
#: or it could not (failed: a miss). Skipped entries (hidden files, over max_per_name) were never meant to be.
ITEM_STATUSES = ("stored", "duplicate", "failed")
#: The crawl_log columns `labelled_items` reads.
LOG_COLUMNS = ["source_kind", "source_name", "source_uri", "status", "image_id"]


def labelled_items(log: Iterable[Mapping], image_label: Mapping[str, str | None]) -> list[tuple[str, str | None]]:
    """One item per file of a labelled folder source, in `source_uri` order: (its identity, its stored image
    id, None when the file failed to ingest). `log` holds crawl_log rows; `image_label` maps image ids to the
    images manifest's `label`. A folder source is labelled when the images it stored carry labels (a duplicate
    of another source's image says nothing about its own source); a file's identity is its sub-folder under
    the source root (as a labelled folder source labels it), so files that failed to ingest keep theirs."""
    rows = [r for r in log if r["source_kind"] == "folder" and r.get("source_name")]
    labelled = {r["source_name"] for r in rows if r["status"] == "stored" and image_label.get(r["image_id"])}
    out: list[tuple[str, str | None]] = []
    for r in sorted(rows, key=lambda r: r["source_uri"]):
        if r["source_name"] not in labelled or r["status"] not in ITEM_STATUSES:
            continue
        below = r["source_uri"][len(r["source_name"].rstrip("/")) + 1 :]
        if "/" in below:  # files directly under the root have no identity
            out.append((below.split("/", 1)[0], None if r["status"] == "failed" else r["image_id"]))
    return out


def labelled_assignment(
    items: Sequence[tuple[str, str | None]], primary_face: Mapping[str, str], face_cluster: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(true labels, predicted clusters) per item of `labelled_items`: the cluster of its image's primary usable
    face (`primary_face`: image id -> face id), else a singleton of its own, so a file without a face, or that
    failed to ingest, is a miss, never dropped. The cluster stage, validation and `facedata evaluate cluster`
    all score with this."""
    truth, pred = [], []
    for i, (label, image_id) in enumerate(items):
        fid = primary_face.get(image_id) if image_id is not None else None
        truth.append(label)
        pred.append(face_cluster.get(fid, f"noface:{i}"))
    return truth, pred


def _codes(labels: Sequence) -> np.ndarray:
    _, inv = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
    return inv.astype(np.int64)


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _pairs(n: np.ndarray) -> float:
    n = n.astype(np.float64)
    return float((n * (n - 1) / 2).sum())


def clustering_metrics(labels_true: Sequence, labels_pred: Sequence) -> dict[str, float]:
    """Every metric in `KEYS` for predicted cluster ids against true identity labels (same length)."""
    if len(labels_true) != len(labels_pred):
        raise ValueError(f"{len(labels_true)} labels but {len(labels_pred)} predictions")
    n = len(labels_true)
    if n == 0:
        raise ValueError("no items to evaluate")
    t, c = _codes(labels_true), _codes(labels_pred)
    # Contingency cells: (cluster, class) -> count, sparse.
    pair = c * (t.max() + 1) + t
    cells, cell_idx, cell_n = np.unique(pair, return_inverse=True, return_counts=True)
    cell_c, cell_t = cells // (t.max() + 1), cells % (t.max() + 1)
    size_c = np.bincount(c)
    size_t = np.bincount(t)

    purity = np.zeros(size_c.size)
    np.maximum.at(purity, cell_c, cell_n)
    inv_purity = np.zeros(size_t.size)
    np.maximum.at(inv_purity, cell_t, cell_n)

    # BCubed: each item's precision is |its cell| / |its cluster|, recall |its cell| / |its class|.
    item_cell = cell_n[cell_idx].astype(np.float64)
    bp = float(np.mean(item_cell / size_c[c]))
    br = float(np.mean(item_cell / size_t[t]))

    tp = _pairs(cell_n)
    pred_pairs, true_pairs = _pairs(size_c), _pairs(size_t)
    pp = tp / pred_pairs if pred_pairs else 1.0
    pr = tp / true_pairs if true_pairs else 1.0

    return {
        "purity": float(purity.sum() / n),
        "inverse_purity": float(inv_purity.sum() / n),
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": _f(bp, br),
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f": _f(pp, pr),
        "nmi": _nmi(cell_n, cell_c, cell_t, size_c, size_t, n),
        "n_clusters": int(size_c.size),
        "compactness": float(size_c.size / n),
    }


def _nmi(cell_n, cell_c, cell_t, size_c, size_t, n) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default)."""
    pc, pt = size_c / n, size_t / n
    h_c = -float(np.sum(pc * np.log(pc)))
    h_t = -float(np.sum(pt * np.log(pt)))
    pij = cell_n / n
    mi = float(np.sum(pij * (np.log(pij) - np.log(pc[cell_c]) - np.log(pt[cell_t]))))
    if h_c == 0 and h_t == 0:
        return 1.0
    denom = (h_c + h_t) / 2
    return max(0.0, min(1.0, mi / denom)) if denom > 0 else 0.0


def partition_agreement(reference: Sequence, other: Sequence) -> dict[str, float]:
    """How far `other` drifts from `reference` (e.g. incremental vs full reclustering): BCubed F and pairwise F
    of `other` against `reference`, and the share of items whose set of co-members differs."""
    m = clustering_metrics(reference, other)
    a, b = _codes(reference), _codes(other)
    pair = a * (b.max() + 1) + b
    _, cell_idx, cell_n = np.unique(pair, return_inverse=True, return_counts=True)
    cell = cell_n[cell_idx]
    same = (cell == np.bincount(a)[a]) & (cell == np.bincount(b)[b])
    return {
        "bcubed_f": m["bcubed_f"],
        "pairwise_f": m["pairwise_f"],
        "nmi": m["nmi"],
        "changed_fraction": float(1.0 - same.mean()),
        "n_clusters_reference": int(np.bincount(a).size),
        "n_clusters_other": int(np.bincount(b).size),
    }


def crawl_scores(truth: Sequence, kept: Sequence[bool], name: str) -> tuple[float, float]:
    """(precision, recall) of the images kept for a queried `name`: kept images that are `name`, and images of
    `name` that were kept. Nothing kept counts as precision 1 (nothing wrong was kept) and recall 0."""
    truth = np.asarray([str(t) for t in truth])
    kept = np.asarray(kept, dtype=bool)
    if len(truth) != len(kept):
        raise ValueError(f"{len(truth)} labels but {len(kept)} kept flags")
    hits = int(np.sum(kept & (truth == name)))
    n_kept, n_true = int(kept.sum()), int(np.sum(truth == name))
    precision = hits / n_kept if n_kept else 1.0
    recall = hits / n_true if n_true else 1.0
    return precision, recall
