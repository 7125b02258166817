"""Review effort (issue 16): how many faces must a person look at before the dataset is right?

    python -m benchmarks review -- [--fraction 0.3] [--seed 0] [--work DIR] [--precision 0.999] [--recall 0.99]
                                   [--random-repeats 5] [--split tune] [--scratch DIR]
                                   [--crawl-fraction F] [--crawl-seed S]

The faces are real: LFW photos detected and embedded by the project's own detect / embed stages, read (never
rebuilt) from the evaluation caches of the curation benchmark (`benchmarks/bench_curation.py`, run
`python -m benchmarks curation -- --prepare-only` first): its held-out LFW cast images (every LFW identity
with >= 10 images; about 30% of each one's photos) and its "unknown" strangers (LFW people with < 10 images,
one photo each). The simulated crawl: each cast name of the `--split` half (`facedata.cluster.evaluate.in_split`,
seed 0) gets its photos plus distractor strangers making up `--fraction` of its folder (seeded draw; other draws
and shares from the same caches with `--crawl-seed` / `--crawl-fraction`, for tuning on more crawls). These
rows go into a scratch project's manifests and the real `cluster` stage runs there with the repository's
params.yaml.

Truth per face: the true identity of its image for the image's primary face; any other face in a photo is
somebody else. The dataset for a name is the faces the build (plus the decisions so far) gives that name;
precision = share of dataset faces that are the name, recall = share of the name's true faces (usable ones,
all in its own crawl folder) that are in its dataset, both pooled over the names.

An oracle reviewer walks the faces in an order and fixes each wrong one it looks at, the way the app lets a
person do it (`facedata.review.decisions`): a face given a name that is not its own is rejected
(not_this_person) or moved to its true name; a face of the name left outside is moved in. It stops as soon as
precision >= --precision and recall >= --recall. Orders compared:

- **app**: `facedata.review.queue.review_order`, the app's /queue page (every face once, most likely wrong
  first: see its docstring), then, if that is not enough, each name's grid least typical first;
- **random**: the same faces in a random order (median over --random-repeats shuffles);
- **everything**: every face looked at once.

Then the oracle's decisions are written to the scratch project's reviews manifest and the `cluster` stage is
rerun: the dataset after that rebuild is measured too (the decisions must hold).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_curation import SHARED, repo_params

CACHES = {"cast": "lfw/test", "strangers": "unknown"}


def _cache_project(work: Path, folder: str) -> Path:
    from facedata.pipeline.evalcache import cache_project_for

    root = cache_project_for(work / folder, work / "eval_cache")
    if not (root / "data" / "manifests" / "embeddings.parquet").exists():
        raise SystemExit(
            f"no evaluation cache at {root}: run `python -m benchmarks curation -- --prepare-only` first "
            "(it detects and embeds the LFW images this benchmark reads)"
        )
    return root


def simulated_crawl(work: Path, scratch: Path, names_split: str, fraction: float, seed: int, params: dict) -> dict:
    """The scratch project's images / faces / embeddings: each cast name's photos plus seeded distractor
    strangers, query_name set to the name whose folder they are in, labels removed. Returns image -> truth."""
    import copy

    import pyarrow as pa
    import pyarrow.compute as pc
    import yaml

    from facedata import manifest
    from facedata.cluster.evaluate import in_split
    from facedata.review.decisions import ensure

    cast_root, strangers_root = (_cache_project(work, f) for f in CACHES.values())
    cast = manifest.read("images", cast_root)
    strangers = manifest.read("images", strangers_root)
    names = sorted(n for n in set(cast["label"].to_pylist()) if in_split(n, names_split, 0))
    truth: dict[str, str] = {}
    query: dict[str, str] = {}
    pool = sorted(strangers["image_id"].to_pylist())
    pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    label_of_stranger = dict(zip(strangers["image_id"].to_pylist(), strangers["label"].to_pylist(), strict=True))
    for name in names:
        own = sorted(cast.filter(pc.equal(cast["label"], name))["image_id"].to_pylist())
        n_d = int(round(len(own) * fraction / (1 - fraction)))
        taken, pool = pool[:n_d], pool[n_d:]
        for img in own:
            truth[img], query[img] = name, name
        for img in taken:
            truth[img], query[img] = label_of_stranger[img], name
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "data" / "manifests").mkdir(parents=True)
    for kind in ("images", "faces", "embeddings"):
        parts = []
        for root in (cast_root, strangers_root):
            t = manifest.read(kind, root)
            t = t.filter(pc.is_in(t["image_id" if kind != "embeddings" else "face_id"], value_set=pa.array(
                list(query) if kind != "embeddings" else _faces_of(root, query))))  # fmt: skip
            parts.append(t)
        table = pa.concat_tables(parts)
        if kind == "images":
            ids = table["image_id"].to_pylist()
            table = table.set_column(table.schema.get_field_index("query_name"), "query_name",
                                     pa.array([query[i] for i in ids], pa.string()))  # fmt: skip
            table = table.set_column(
                table.schema.get_field_index("label"), "label", pa.nulls(len(ids), pa.string())
            )
        manifest.write(kind, table, scratch)
    p = copy.deepcopy(params)
    p["sources"] = {"folders": [], "videos": []}
    (scratch / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    ensure(scratch)
    return truth


def _faces_of(root: Path, images: dict) -> list[str]:
    from facedata import manifest

    faces = manifest.read("faces", root, columns=["face_id", "image_id"]).to_pylist()
    return [f["face_id"] for f in faces if f["image_id"] in images]


def truth_per_face(root: Path, true_of_image: dict[str, str], face_ids: list[str], image_ids: list[str]) -> list:
    from facedata import manifest

    faces = manifest.read("faces", root, columns=["face_id", "is_primary"]).to_pylist()
    primary = {f["face_id"] for f in faces if f["is_primary"]}
    return [true_of_image.get(img) if f in primary else None for f, img in zip(face_ids, image_ids, strict=True)]


def scores(identity: list, truth: list, names: set[str], usable: set[str] | None = None) -> tuple[float, float]:
    """Pooled precision / recall of the dataset: faces whose name is usable (exported); recall over the true
    faces of every cast name, usable or not."""
    usable = names if usable is None else usable
    kept = [i for i, n in enumerate(identity) if n in names and n in usable]
    right = sum(1 for i in kept if truth[i] == identity[i])
    total_true = sum(1 for t in truth if t in names)
    precision = right / len(kept) if kept else 1.0
    recall = right / total_true if total_true else 1.0
    return precision, recall


class Oracle:
    """Looks at faces in a given order and fixes wrong ones; counts what it looked at."""

    def __init__(self, board, truth: list, names: set[str], target: tuple[float, float], usable: set[str]):
        self.board, self.truth, self.names, self.target = board, truth, names, target
        self.usable = set(usable)
        self.identity = list(board.identity)
        self.decisions: list[dict] = []

    def done(self) -> bool:
        p, r = scores(self.identity, self.truth, self.names, self.usable)
        return p >= self.target[0] and r >= self.target[1]

    def run(self, order: list[int]) -> dict:
        looked = 0
        if self.done():
            return self.result(0, True)
        for i in order:
            looked += 1
            shown, true = self.identity[i], self.truth[i]
            ok = shown == true and (true is None or true in self.usable)
            if ok or (shown not in self.names and true not in self.names):
                continue
            face = self.board.face_ids[i]
            if true is not None and (true in self.names or true in self.board.names):
                # "this is <true>": the app's accept on the selection (it also settles a weak name)
                self.decisions.append({"action": "accept", "face_ids": [face], "target": true})
                self.identity[i] = true
                self.usable.add(true)
            else:
                self.decisions.append(
                    {"action": "reject", "face_ids": [face], "reason": "not_this_person", "target": shown}
                )
                self.identity[i] = None
            if self.done():
                return self.result(looked, True)
        return self.result(looked, self.done())

    def result(self, looked: int, reached: bool) -> dict:
        p, r = scores(self.identity, self.truth, self.names, self.usable)
        return {"looked_at": looked, "reached": reached, "precision": round(p, 5), "recall": round(r, 5),
                "n_decisions": len(self.decisions)}  # fmt: skip


def app_order(board, cur, names: set[str]) -> list[int]:
    """The app's queue (`review_order`), then each name's grid least typical first (if that was not enough)."""
    from facedata.review import queue

    first = [i for i in queue.review_order(board, cur) if _concerns(board, cur, i, names)]
    seen = set(first)
    rest = []
    for s in queue.names(board, cur):
        if s["name"] in names:
            grid = queue.name_view(board, cur, s["name"])["grid"]
            rest.extend(i for i in sorted(grid, key=lambda i: -cur.score[i]) if i not in seen)
    return first + rest


def _concerns(board, cur, i: int, names: set[str]) -> bool:
    return cur.identity[i] in names or board.query[i] in names


def rebuild_with(root: Path, decisions: list[dict]) -> None:
    """The oracle's decisions appended to the project's reviews manifest; the cluster stage rerun."""
    from facedata.pipeline.runner import run_stage
    from facedata.review.decisions import append

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for k, d in enumerate(decisions):
        append(root, d, "oracle", now=t0 + dt.timedelta(seconds=k), build="bench")
    if run_stage("cluster", root) != 0:
        raise SystemExit(f"the cluster stage failed in {root}")


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks review")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--precision", type=float, default=0.999)
    ap.add_argument("--recall", type=float, default=0.99)
    ap.add_argument("--random-repeats", type=int, default=5)
    ap.add_argument("--split", choices=("tune", "test", "all"), default="tune")
    ap.add_argument("--crawl-fraction", type=float, default=None, help="distractor share (default --fraction)")
    ap.add_argument("--crawl-seed", type=int, default=None, help="distractor draw (default --seed)")
    ap.add_argument(
        "--scratch", type=Path, default=None, help="scratch project (default WORK/review_scratch-SPLIT)"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    os.environ.setdefault("FACEDATA_OFFLINE", "1")
    from facedata.pipeline.evalcache import default_cache_dir
    from facedata.pipeline.runner import run_stage
    from facedata.review import decisions, queue

    work = args.work or default_cache_dir().parent / f"bench_curation-f{args.fraction}-s{args.seed}"
    scratch = args.scratch or work / f"review_scratch-{args.split}"
    fraction = args.fraction if args.crawl_fraction is None else args.crawl_fraction
    crawl_seed = args.seed if args.crawl_seed is None else args.crawl_seed
    true_of_image = simulated_crawl(work, scratch, args.split, fraction, crawl_seed, repo_params())
    t0 = time.perf_counter()
    if run_stage("cluster", scratch) != 0:
        raise SystemExit(f"the cluster stage failed in {scratch}")
    seconds_build = time.perf_counter() - t0
    root = scratch
    board = queue.load(root, repo_params()["embed"]["model"])
    cur = queue.current(board, decisions.State())
    names = set(board.names)
    truth = truth_per_face(root, true_of_image, board.face_ids, board.image_id)
    target = (args.precision, args.recall)
    considered = [i for i in range(len(board)) if _concerns(board, cur, i, names)]
    p0, r0 = scores(board.identity, truth, names, cur.usable)

    app = Oracle(board, truth, names, target, cur.usable)
    app_result = app.run(app_order(board, cur, names))
    randoms = []
    for k in range(args.random_repeats):
        order = list(np.random.default_rng([args.seed, k]).permutation(considered))
        randoms.append(Oracle(board, truth, names, target, cur.usable).run(order))
    looked = sorted(r["looked_at"] for r in randoms)

    rebuild_with(root, app.decisions)
    from facedata import manifest

    rebuilt = manifest.read("clusters", scratch, columns=["face_id", "identity"]).to_pylist()
    ident = {r["face_id"]: r["identity"] for r in rebuilt}
    usable = {r["query_name"] for r in manifest.read("identities", scratch).to_pylist() if r["status"] == "ok"}
    p1, r1 = scores([ident.get(f) for f in board.face_ids], truth, names, usable)
    n = len(considered)
    return {
        "split": args.split,
        "crawl": {"fraction": fraction, "seed": crawl_seed},
        "n_names": len(names),
        "n_faces_considered": n,
        "target": {"precision": args.precision, "recall": args.recall},
        "before_review": {"precision": round(p0, 5), "recall": round(r0, 5)},
        "app_order": {**app_result, "share_looked_at": round(app_result["looked_at"] / n, 4)},
        "random_order": {
            "looked_at_median": int(np.median(looked)),
            "looked_at_all": looked,
            "share_looked_at": round(float(np.median(looked)) / n, 4),
            "reached_all": all(r["reached"] for r in randoms),
        },
        "review_everything": {"looked_at": n, "share_looked_at": 1.0},
        "after_rebuild_with_decisions": {"precision": round(p1, 5), "recall": round(r1, 5)},
        "seconds_cluster_stage": round(seconds_build, 1),
    }
