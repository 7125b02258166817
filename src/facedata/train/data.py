"""The exported dataset as training arrays: one row per dataset face, its class, split, sample weight, stored
embedding and aligned crop.

Review status as sample weights. When the review app has run, dataset rows carry `reviewed`, `review_decision`,
`reviewer` and `auto_confidence` (the clustering's confidence for faces nobody looked at). A face a reviewer
kept (accepted, or moved to this identity) weighs `weight_reviewed`; an unreviewed one `weight_unreviewed`,
times its `auto_confidence` with `confidence_weighting`; a reviewer's rejection that reached the dataset weighs
0. Datasets without those columns (no review yet) weigh every face `weight_unreviewed`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata import manifest
from facedata.train.config import TrainConfig

REVIEW_COLUMNS = ("reviewed", "review_decision", "reviewer", "auto_confidence")
#: Review decisions that mean "not this person": such a face trains nothing if it reaches the dataset.
REJECTING = frozenset({"rejected", "removed", "excluded", "discarded"})


class TrainDataError(RuntimeError):
    """The dataset cannot be trained on (missing, no identity with training faces, embeddings missing)."""


@dataclass
class TrainingData:
    face_ids: list[str]
    identities: list[str]  # per face
    splits: np.ndarray  # per face: train | val | test (as exported)
    weights: np.ndarray  # per face, >= 0
    x: np.ndarray  # (n, d) unit embeddings stored by stage embed
    crop_paths: list[Path]  # aligned crops of the exported dataset
    classes: list[str]  # identities with training faces, sorted; a face's class is its index here
    review: dict = field(default_factory=dict)  # coverage summary for the model card
    source: dict = field(default_factory=dict)  # what was read: dataset file, its sha256, revision, licenses

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def labels(self) -> np.ndarray:
        """Class index per face, -1 for identities without training faces."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.asarray([index.get(i, -1) for i in self.identities], dtype=np.int64)

    def rows(self, split: str) -> np.ndarray:
        """Indices of the faces of a split whose identity is a class (and, for train, that weigh anything)."""
        keep = (self.splits == split) & (self.labels >= 0)
        if split == "train":
            keep &= self.weights > 0
        return np.flatnonzero(keep)

    def fingerprint(self) -> str:
        """Changes when any training face, label or weight changes (a checkpoint of other data is not resumed)."""
        h = hashlib.sha256()
        for i in self.rows("train"):
            h.update(f"{self.face_ids[i]}\x1f{self.identities[i]}\x1f{self.weights[i]:.6g}\n".encode())
        return h.hexdigest()[:16]


def sample_weights(review: dict[str, list], n: int, cfg: TrainConfig) -> np.ndarray:
    """Per face weight from the review columns present in `review` (see the module docstring)."""
    w = np.full(n, float(cfg.weight_unreviewed))
    conf = review.get("auto_confidence")
    if cfg.confidence_weighting and conf is not None:
        c = np.asarray([np.nan if v is None else float(v) for v in conf])
        w = np.where(np.isfinite(c), w * np.clip(c, 0.0, 1.0), w)
    reviewed = review.get("reviewed")
    if reviewed is not None:
        decisions = review.get("review_decision") or [None] * n
        for i, (r, d) in enumerate(zip(reviewed, decisions, strict=True)):
            if r:
                w[i] = 0.0 if (d or "").lower() in REJECTING else float(cfg.weight_reviewed)
    return w


def review_summary(review: dict[str, list], n: int) -> dict:
    if "reviewed" not in review:
        return {"has_review_columns": False, "n_reviewed": 0, "reviewed_fraction": 0.0}
    reviewed = [bool(v) for v in review["reviewed"]]
    decisions = Counter(d for d, r in zip(review.get("review_decision") or [None] * n, reviewed, strict=True) if r)
    conf = [float(v) for v in review.get("auto_confidence") or [] if v is not None]
    return {
        "has_review_columns": True,
        "n_reviewed": sum(reviewed),
        "reviewed_fraction": round(sum(reviewed) / n, 4) if n else 0.0,
        "decisions": dict(sorted((str(k), v) for k, v in decisions.items())),
        "reviewers": len({r for r, ok in zip(review.get("reviewer") or [], reviewed, strict=False) if ok and r}),
        "mean_auto_confidence": round(float(np.mean(conf)), 4) if conf else None,
    }


def _review_columns(path: Path) -> dict[str, list]:
    """The review columns the dataset file has (written by the export since the review app), by face order;
    a column with no value at all (a dataset written before review existed) counts as absent."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    present = [c for c in REVIEW_COLUMNS if c in names]
    if not present:
        return {}
    table = pq.read_table(path, columns=["face_id", *present]).sort_by("face_id")
    return {c: table.column(c).to_pylist() for c in present if table.column(c).null_count < table.num_rows}


def load(root: str | Path, model: str, cfg: TrainConfig) -> TrainingData:
    """The project's exported dataset with its `model` embeddings, ordered by face_id."""
    import pyarrow.compute as pc

    from facedata.ids import sha256_file

    root = Path(root)
    path = manifest.path_for("dataset", root)
    table = manifest.read("dataset", root).sort_by("face_id")
    if table.num_rows == 0:
        raise TrainDataError(f"the dataset at {path} is empty: nothing to train on")
    rows = table.select(["face_id", "identity", "split", "file_path", "license", "lineage"]).to_pylist()
    ids = [r["face_id"] for r in rows]
    emb = manifest.read("embeddings", root)
    emb = emb.filter(pc.and_(pc.equal(emb["model"], model), pc.is_in(emb["face_id"], value_set=table["face_id"])))
    vec = dict(zip(emb["face_id"].to_pylist(), emb["vector"].to_pylist(), strict=True))
    missing = [f for f in ids if f not in vec]
    if missing:
        raise TrainDataError(
            f"{len(missing)} dataset faces have no {model} embedding (e.g. {missing[:2]}): the dataset and the "
            "embeddings are out of step; rerun `dvc repro` (or `facedata build`)"
        )
    review = _review_columns(path)
    data = TrainingData(
        face_ids=ids,
        identities=[r["identity"] for r in rows],
        splits=np.asarray([r["split"] for r in rows]),
        weights=sample_weights(review, len(ids), cfg),
        x=np.asarray([vec[f] for f in ids], dtype=np.float32),
        crop_paths=[root / "data" / "dataset" / r["file_path"] for r in rows],
        classes=[],
        review=review_summary(review, len(ids)),
        source={
            "dataset": manifest.path_for("dataset", ".").as_posix(),
            "dataset_sha256": sha256_file(path),
            "export_git_rev": rows[0]["lineage"]["git_rev"],
            "export_run_id": rows[0]["lineage"]["run_id"],
            "export_created_at": str(rows[0]["lineage"]["created_at"]),
            "embedding_model": model,
            "licenses": dict(Counter(r["license"] or "not stated" for r in rows).most_common()),
        },
    )
    train = (data.splits == "train") & (data.weights > 0)
    data.classes = sorted({i for i, t in zip(data.identities, train, strict=True) if t})
    if len(data.classes) < 2:
        raise TrainDataError(
            f"the dataset has {len(data.classes)} identity with training faces; a recognizer needs at least 2"
        )
    return data
