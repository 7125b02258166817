"""Clustering evaluation on a labelled folder `<identity>/<images>`: the project's own detect / embed / cluster,
measured against the folder names.

Detection and embedding run as the real pipeline stages (ingest, detect, embed) in a cache project keyed by
the folder (`facedata.pipeline.evalcache.prepare`), so a second evaluation with other clustering params
re-detects and re-embeds nothing. Then (this module, which reads the cache project's manifests):

- every file is one item; its predicted cluster is the cluster of its image's primary face. Files with no
  usable face (none detected, all filtered, unreadable) are their own singleton and counted in `n_no_face`,
  never dropped;
- the faces go into clustering in an order shuffled with `seed` (the folder's order, sorted by identity, must
  not leak labels into the result);
- `split` picks the identities measured: `tune` or `test` are two halves chosen by a seeded hash of the
  identity name (stable as identities are added), so parameters tuned on one half are reported on the other;
- `simulate_crawl=F`: for each identity with >= 5 items, a query set of its items plus distractor items from
  other identities making up a fraction F of the set, clustered on its own; the dominant cluster (most images
  voting) and the images it absorbs are kept, exactly as the cluster stage keeps them for a queried name,
  and `crawl_precision` / `crawl_recall` are the means over identities of the kept images' precision and
  recall.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata import manifest
from facedata.cluster.faceset import FaceSet, cluster_faces, load_faceset
from facedata.cluster.identities import absorb_faces, dominant_clusters
from facedata.cluster.metrics import KEYS as METRIC_KEYS
from facedata.cluster.metrics import clustering_metrics, crawl_scores, labelled_assignment, labelled_items

JSON_KEYS = (*METRIC_KEYS, "n_images", "n_identities", "n_no_face", "seconds")
CRAWL_KEYS = ("crawl_precision", "crawl_recall")
NAME_KEYS = ("name_precision", "name_recall", "merges_to_complete")


class EvaluationError(RuntimeError):
    """The labelled folder cannot be evaluated (missing, empty, or a pipeline stage failed)."""


@dataclass
class LabeledSet:
    """One entry per file of the labelled folder, and the usable faces of their images."""

    labels: list[str]  # per item: its identity (the sub-folder name)
    image_ids: list[str | None]  # per item: the stored image, None when the file could not be ingested
    faces: FaceSet  # usable faces with embeddings, all images
    primary: dict[str, int]  # image_id -> row in `faces` of its primary face, when usable
    seconds_prepare: float = 0.0

    def rows_of_images(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for r, img in enumerate(self.faces.image_ids):
            out[img].append(r)
        return out


@dataclass
class LabeledFaces:
    """Hand-labelled faces of a video: one entry per labelled box, matched to the detected faces."""

    labels: list[str]  # per labelled box: its identity
    rows: list[int | None]  # per labelled box: the row in `faces` of the usable face it matches, if any
    faces: FaceSet  # every usable face of the sampled frames (labelled or not)
    seconds_prepare: float = 0.0


def read_face_labels(path: str | os.PathLike) -> list[tuple[int, np.ndarray, str]]:
    """A face-label CSV with the header `frame_index,x1,y1,x2,y2,label`: (frame, box, label) per row."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = [
            (int(r["frame_index"]), np.array([float(r[k]) for k in ("x1", "y1", "x2", "y2")]), r["label"].strip())
            for r in rows
        ]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise EvaluationError(
            f"cannot read face labels {path}: {exc}; expected frame_index,x1,y1,x2,y2,label"
        ) from exc
    if not out:
        raise EvaluationError(f"no face labels in {path}")
    return out


def load_video(root: Path, labelled: list[tuple[int, np.ndarray, str]], model: str) -> LabeledFaces:
    """The labelled boxes of a video's evaluation cache project (`read_face_labels`), each matched to the usable
    face of its frame that overlaps it most (IoU >= 0.5)."""
    from facedata.cluster.constraints import iou

    images = manifest.read("images", root).to_pylist()
    faces = manifest.read("faces", root).to_pylist()
    emb = {r["face_id"]: r["vector"] for r in manifest.read("embeddings", root).to_pylist() if r["model"] == model}
    fs = load_faceset(images, faces, emb)
    frame_of = {r["image_id"]: r["frame_index"] for r in images if r.get("frame_index") is not None}
    rows_of_frame: dict[int, list[int]] = defaultdict(list)
    for r, img in enumerate(fs.image_ids):
        if img in frame_of:
            rows_of_frame[int(frame_of[img])].append(r)
    labels, rows = [], []
    for frame, box, label in labelled:
        cand = rows_of_frame.get(frame, [])
        overlap = iou(fs.boxes[cand], box[None])[:, 0] if cand else np.zeros(0)
        labels.append(label)
        rows.append(int(cand[int(np.argmax(overlap))]) if overlap.size and overlap.max() >= 0.5 else None)
    return LabeledFaces(labels, rows, fs)


def evaluate_faces(lf: LabeledFaces, cluster_params: dict, seed: int = 0) -> dict:
    """`JSON_KEYS` over the labelled faces of a video: all usable faces are clustered (with the video's
    must-links), each labelled box counts once; a box with no usable face is its own singleton (`n_no_face`)."""
    t0 = time.perf_counter()
    rows = np.random.default_rng(seed).permutation(len(lf.faces))
    sub = lf.faces.take(rows)
    labels = cluster_faces(sub, cluster_params, seed).labels if len(sub) else np.zeros(0, dtype=np.int64)
    cluster_of = {int(r): int(c) for r, c in zip(rows, labels, strict=True)}
    pred = [f"c{cluster_of[r]}" if r is not None else f"noface:{i}" for i, r in enumerate(lf.rows)]
    out: dict = dict(clustering_metrics(lf.labels, pred))
    out.update(
        n_images=len(lf.labels), n_identities=len(set(lf.labels)), n_no_face=sum(r is None for r in lf.rows)
    )
    out["seconds"] = round(time.perf_counter() - t0 + lf.seconds_prepare, 3)
    return out


def load(root: Path, model: str, labeled_dir: Path | None = None) -> LabeledSet:
    """The labelled items and faces of an evaluation cache project (or any project with a labelled folder)."""
    log = manifest.read("crawl_log", root).to_pylist()
    images = manifest.read("images", root).to_pylist()
    faces = manifest.read("faces", root).to_pylist()
    emb = {r["face_id"]: r["vector"] for r in manifest.read("embeddings", root).to_pylist() if r["model"] == model}
    fs = load_faceset(images, faces, emb)
    row_of = {fid: r for r, fid in enumerate(fs.face_ids)}
    primary = {f["image_id"]: row_of[f["face_id"]] for f in faces if f["is_primary"] and f["face_id"] in row_of}
    items = labelled_items(log, {r["image_id"]: r["label"] for r in images})
    labels, image_ids = [label for label, _ in items], [img for _, img in items]
    if not labels:
        raise EvaluationError(f"no labelled images were found in {labeled_dir or root}")
    return LabeledSet(labels, image_ids, fs, primary)


def in_split(identity: str, split: str, seed: int) -> bool:
    """`tune` / `test`: two halves of the identities by a seeded hash of the name; `all`: everything."""
    if split == "all":
        return True
    h = int(hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()[:8], 16) % 2
    return (h == 0) == (split == "tune")


def people_folds(identities, k: int, seed: int) -> dict[str, int]:
    """Balanced folds over people: identities ranked by a seeded hash of the name, dealt round-robin into `k`
    folds (a hash alone gives lopsided halves of a dozen people: 4 / 8)."""
    ranked = sorted(set(identities), key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    return {name: i % k for i, name in enumerate(ranked)}


def split_items(labels: list[str], split: str, seed: int, folds: int = 0, fold: int = 0) -> np.ndarray:
    """Items of `split`: with `folds` >= 2, `test` is fold `fold` of `people_folds` and `tune` the others;
    otherwise the hash halves of `in_split`."""
    if folds >= 2 and split != "all":
        if not 0 <= fold < folds:
            raise EvaluationError(f"--fold must be in 0..{folds - 1}, got {fold}")
        assign = people_folds(labels, folds, seed)
        keep = [(assign[lab] == fold) == (split == "test") for lab in labels]
    else:
        keep = [in_split(lab, split, seed) for lab in labels]
    return np.flatnonzero(np.asarray(keep, dtype=bool)).astype(np.int64)


def _cluster_items(ls: LabeledSet, items: np.ndarray, p: dict, seed: int) -> dict[str, str]:
    """Cluster the usable faces of the images of `items` (shuffled with `seed`); face_id -> cluster label."""
    rows_of = ls.rows_of_images()
    imgs = {ls.image_ids[i] for i in items if ls.image_ids[i] is not None}
    rows = np.asarray(sorted(r for img in imgs for r in rows_of.get(img, [])), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = rows[rng.permutation(rows.size)]
    sub = ls.faces.take(rows)
    labels = cluster_faces(sub, p, seed).labels if len(sub) else np.zeros(0, dtype=np.int64)
    return {fid: f"c{lab}" for fid, lab in zip(sub.face_ids, labels, strict=True)}


def evaluate(
    ls: LabeledSet,
    cluster_params: dict,
    seed: int = 0,
    simulate_crawl: float | None = None,
    split: str = "all",
    split_seed: int = 0,
    progress=None,
    folds: int = 0,
    fold: int = 0,
    names: bool = False,
) -> dict:
    """Every metric of `JSON_KEYS` (and `CRAWL_KEYS` with `simulate_crawl`, plus `crawl_identities`: name,
    images, precision, recall per queried identity) for the items of `split` (see `split_items`); with `names`
    also the per-name dataset view (`NAME_KEYS` and `names`: one row per identity, see `per_name`)."""
    t0 = time.perf_counter()
    items = split_items(ls.labels, split, split_seed, folds, fold)
    if items.size == 0:
        raise EvaluationError(f"no identities fall in split {split!r}")
    face_cluster = _cluster_items(ls, items, cluster_params, seed)
    primary_face = {img: ls.faces.face_ids[r] for img, r in ls.primary.items()}
    truth, pred = labelled_assignment([(ls.labels[i], ls.image_ids[i]) for i in items], primary_face, face_cluster)
    n_no_face = sum(1 for c in pred if c.startswith("noface:"))
    out: dict = dict(clustering_metrics(truth, pred))
    out.update(n_images=int(items.size), n_identities=len(set(truth)), n_no_face=n_no_face)
    if names:
        out.update(per_name(ls, items, cluster_params, face_cluster))
    if simulate_crawl is not None:
        out.update(crawl(ls, items, cluster_params, simulate_crawl, seed, progress))
    out["seconds"] = round(time.perf_counter() - t0 + ls.seconds_prepare, 3)
    return out


def json_view(result: dict) -> dict:
    """The result with exactly the documented keys (`JSON_KEYS`, plus `CRAWL_KEYS` after a simulated crawl,
    `NAME_KEYS` and the per-name rows with the per-name view)."""
    keys = (
        *JSON_KEYS,
        *(CRAWL_KEYS if "crawl_precision" in result else ()),
        *((*NAME_KEYS, "names") if "name_precision" in result else ()),
    )
    return {k: result[k] for k in keys}


def kept_for_names(
    query_images: dict[str, set[str]],
    face_cluster: dict[str, str],
    face_image: dict[str, str],
    vectors: dict[str, np.ndarray],
    p: dict,
) -> dict[str, set[str]]:
    """Per queried name, the faces the cluster stage gives its identity: every face of the name's dominant
    cluster (whoever's image it is in) and the faces the cluster absorbs (see `facedata.cluster.identities`)."""
    rows = dominant_clusters(query_images, face_cluster, face_image, p["min_confidence"])
    absorbed = absorb_faces(rows, query_images, face_cluster, face_image, vectors, p["absorb_threshold"])
    kept: dict[str, set[str]] = {name: set() for name in query_images}
    owner = {r["cluster_id"]: r["query_name"] for r in rows if r["status"] in ("ok", "weak") and r["cluster_id"]}
    for fid, c in face_cluster.items():
        if c in owner:
            kept[owner[c]].add(fid)
    for fid, name in absorbed.items():
        kept[name].add(fid)
    return kept


def per_name(ls: LabeledSet, items: np.ndarray, p: dict, face_cluster: dict[str, str]) -> dict:
    """The dataset a labelled folder would give, one queried name per identity: per name, the precision and
    recall of the images whose subject (primary face, the one the label is about) gets the name
    (`kept_for_names`; other faces in a photo are people nobody labelled), and `merges` = how many other
    clusters hold the subjects of its images that did not (what a reviewer merges to complete the person;
    an image without a usable subject cannot be merged and is counted in `no_face`). `name_precision` /
    `name_recall` are means over names, `merges_to_complete` the total."""
    rows_of = ls.rows_of_images()
    query_images: dict[str, set[str]] = defaultdict(set)
    for i in items:
        if ls.image_ids[i] is not None:
            query_images[ls.labels[i]].add(ls.image_ids[i])
    images = set().union(*query_images.values()) if query_images else set()
    face_image = {ls.faces.face_ids[r]: img for img in images for r in rows_of.get(img, [])}
    vectors = {ls.faces.face_ids[r]: ls.faces.x[r] for img in images for r in rows_of.get(img, [])}
    kept_faces = kept_for_names(query_images, face_cluster, face_image, vectors, p)
    subject = {img: ls.faces.face_ids[ls.primary[img]] for img in images if img in ls.primary}
    label_of_image = {ls.image_ids[i]: ls.labels[i] for i in items if ls.image_ids[i] is not None}
    n_items = defaultdict(int)
    for i in items:
        n_items[ls.labels[i]] += 1
    rows = []
    for name in sorted(n_items):
        k = {img for img, f in subject.items() if f in kept_faces.get(name, ())}
        hits = sum(1 for img in k if label_of_image.get(img) == name)
        missed = [img for img in query_images.get(name, set()) - k if img in subject]
        others = {face_cluster[subject[img]] for img in missed}
        rows.append(
            {
                "name": name,
                "images": n_items[name],
                "kept": len(k),
                "precision": hits / len(k) if k else 1.0,
                "recall": hits / n_items[name],
                "merges": len(others),
                "no_face": n_items[name] - sum(1 for img in query_images.get(name, ()) if img in subject),
            }
        )
    return {
        "name_precision": float(np.mean([r["precision"] for r in rows])),
        "name_recall": float(np.mean([r["recall"] for r in rows])),
        "merges_to_complete": int(sum(r["merges"] for r in rows)),
        "names": rows,
    }


def crawl(
    ls: LabeledSet, items: np.ndarray, p: dict, fraction: float, seed: int, progress=None, min_images: int = 5
) -> dict:
    """Simulated crawls: per identity with >= `min_images` items, its items plus distractors (a `fraction` of
    the query set) from other identities; keep the dominant cluster; mean precision / recall of kept images."""
    if not 0 <= fraction < 1:
        raise EvaluationError(f"--simulate-crawl must be in [0, 1), got {fraction}")
    by_id: dict[str, list[int]] = defaultdict(list)
    for i in items:
        by_id[ls.labels[i]].append(int(i))
    queried = sorted(name for name, its in by_id.items() if len(its) >= min_images)
    if not queried:
        raise EvaluationError(f"no identity has >= {min_images} images to simulate a crawl for")
    rows_of = ls.rows_of_images()
    precisions, recalls = [], []
    per_identity = []
    iterator = progress(queried) if progress else queried
    for name in iterator:
        own = by_id[name]
        others = np.asarray([i for i in items if ls.labels[i] != name], dtype=np.int64)
        n_d = int(round(len(own) * fraction / (1 - fraction)))
        rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])
        distractors = rng.choice(others, size=min(n_d, others.size), replace=False) if n_d else others[:0]
        query = np.concatenate([np.asarray(own, dtype=np.int64), distractors])
        face_cluster = _cluster_items(ls, query, p, seed)
        qimgs = {ls.image_ids[i] for i in query if ls.image_ids[i] is not None}
        face_image = {ls.faces.face_ids[r]: img for img in qimgs for r in rows_of.get(img, [])}
        vectors = {ls.faces.face_ids[r]: ls.faces.x[r] for img in qimgs for r in rows_of.get(img, [])}
        kept_images = {
            face_image[f] for f in kept_for_names({name: qimgs}, face_cluster, face_image, vectors, p)[name]
        }
        kept = [ls.image_ids[i] in kept_images for i in query]
        prec, rec = crawl_scores([ls.labels[i] for i in query], kept, name)
        precisions.append(prec)
        recalls.append(rec)
        per_identity.append((name, len(own), prec, rec))
    return {
        "crawl_precision": float(np.mean(precisions)),
        "crawl_recall": float(np.mean(recalls)),
        "crawl_identities": per_identity,
    }
