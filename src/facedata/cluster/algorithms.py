"""Clustering algorithms over L2-normalised embeddings. Each returns one integer label per row, with labels
numbered by first appearance so the output does not depend on internal orderings."""

from __future__ import annotations

import numpy as np


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first, kind="stable")
    mapping = np.empty(order.size, dtype=np.int64)
    mapping[order] = np.arange(order.size)
    _, inv = np.unique(labels, return_inverse=True)
    return mapping[inv]


def agglomerative(x: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage agglomerative clustering, cut where the mean pairwise L2 distance exceeds `threshold`.

    Memory is O(n^2) (the condensed distance matrix): fine to a few tens of thousands of faces.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    z = linkage(pdist(np.asarray(x, dtype=np.float64), "euclidean"), method="average")
    return relabel_by_first_appearance(fcluster(z, t=threshold, criterion="distance"))


def chinese_whispers(x: np.ndarray, threshold: float) -> np.ndarray:
    """dlib's Chinese whispers on the graph of pairs closer than `threshold` (face_recognition's recipe)."""
    import dlib

    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    vecs = [dlib.vector(row.astype(np.float64).tolist()) for row in np.asarray(x)]
    return relabel_by_first_appearance(np.asarray(dlib.chinese_whispers_clustering(vecs, float(threshold))))


METHODS = {"agglomerative": agglomerative, "chinese_whispers": chinese_whispers}


def cluster(x: np.ndarray, method: str, threshold: float) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; available: {', '.join(METHODS)}")
    return METHODS[method](x, threshold)
