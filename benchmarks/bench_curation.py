"""The value of curation (issue 18): a recognizer trained on facedata's curated output against one trained on
the raw crawl and one trained on the true labels, all tested on the same clean held-out images.

    python -m benchmarks curation -- [--datasets lfw,webfaces] [--fraction 0.3] [--seed 0] [--work DIR]
                                     [--prepare-only] [--grid]

Simulated crawls, per data set (every draw seeded, see `layout`):

- **lfw**: the LFW identities with >= 10 images are the cast. Per name, 30% of its images are held out as
  clean test images; the rest go into the name's crawl folder, plus distractor images (other people) making
  up `--fraction` of the folder: photos of LFW people with fewer than 10 images (strangers a web search
  returns). Those people are split in two halves by a hash of the name: distractors come from one half, the
  unknown probes of the open-set test from the other, so no unknown probe's person was ever trained on.
- **webfaces**: the 12 actors of `../shared/data/faces/webfaces` are the cast. Per actor, 20% of the photos
  are held out for testing (minus the few whose label its MANIFEST.md doubts), 30% are reserved as
  distractors for the *other* names (co-stars a search returns: label flips between cast members), the rest
  go into its own folder. Unknown probes: the same LFW half as above.

Each data set's crawl folders become a real facedata project built with the repository's params.yaml
(`ingest`, `detect`, `embed`, `cluster`, `validate`, `export`: the library's own clustering and export, no
review). Then the same recognizer (`facedata.train`, the train stage's default head on the frozen
embeddings, params.yaml `train`) is fitted three ways on the faces of the crawl's images:

- **raw**: every image's primary face labelled with the folder it was found in;
- **curated**: the faces and identities of the exported dataset (`data/dataset/dataset.parquet`, all splits);
- **clean**: every image's primary face with its true identity (strangers dropped): the ceiling.

All three are tested on the same held-out images (their labelled face: the centred one for LFW, the primary
one for webfaces) and unknown probes: closed-set top-1, and open-set TAR at FAR 1e-2 / 1e-3 (a probe of the
cast counts when its best score clears the threshold *and* names the right person; the threshold is the
strictest one letting at most that share of unknown probes through). A held-out image with no usable face
counts as a miss. The zero-training baseline (each identity's mean embedding, cosine score) is measured on
the same three label sets.

`--grid` also fits a few head settings (GRID) on the LFW *tune* half of the cast (by
`facedata.cluster.evaluate.in_split`), which is how params.yaml's `train` defaults were chosen; the headline rows
are the other half (`lfw` test identities) and webfaces, on which nothing was tuned.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared"))

#: webfaces images whose label its MANIFEST.md doubts (look-alikes, a childhood photo, a quote graphic): never
#: used as clean test images.
DOUBTFUL = {
    "Will_Smith/089_97f39eb8.jpg",
    "Will_Smith/095_8a2dfab4.jpg",
    "Megan_Fox/009_3283c30e.jpg",
    "Megan_Fox/015_b4a21d28.jpg",
    "Megan_Fox/082_768aecdd.jpg",
    "Megan_Fox/095_fc25a60b.jpg",
}
IMAGE_EXT = {".jpg", ".jpeg", ".png"}
N_NEGATIVES = 1000  # strangers the recognizer trains its unknown class on (the same for every label set)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)


def _h(*parts) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed, _h(*parts)])


def layout(lfw: Path, webfaces: Path, fraction: float, seed: int) -> dict:
    """Which file goes where: per data set, each cast name's crawl folder (own images + distractors, with
    their true identity), its held-out test images, and the shared unknown probes. Pure function of the
    inputs and the seed."""
    web_cast = sorted(p.name for p in webfaces.iterdir() if p.is_dir())
    people = {p.name: _files(p) for p in sorted(lfw.iterdir()) if p.is_dir()}
    lfw_cast = sorted(n for n, fs in people.items() if len(fs) >= 10)
    outsiders = sorted(n for n, fs in people.items() if len(fs) < 10 and n not in web_cast)
    unknown_people = [n for n in outsiders if _h(seed, "unknown", n) % 2 == 0]
    distractor_people = [n for n in outsiders if _h(seed, "unknown", n) % 2 == 1]
    unknown = []
    for n in unknown_people:  # one photo per person: many different strangers
        fs = people[n]
        unknown.append((n, fs[int(_rng(seed, "probe", n).integers(len(fs)))]))

    def crawl_with(own: dict[str, list[Path]], pool_of, tag: str) -> dict[str, list[tuple[Path, str]]]:
        crawl = {}
        used: set[Path] = set()
        for name in sorted(own):
            pool = [item for item in pool_of(name) if item[0] not in used]
            n_d = int(round(len(own[name]) * fraction / (1 - fraction)))
            picks = _rng(seed, tag, name).permutation(len(pool))[:n_d]
            chosen = [pool[i] for i in sorted(picks)]
            used.update(p for p, _ in chosen)
            crawl[name] = [(p, name) for p in own[name]] + chosen
        return crawl

    # lfw: 30% of each name held out; distractors are strangers
    lfw_own, lfw_test = {}, {}
    for n in lfw_cast:
        fs = [people[n][i] for i in _rng(seed, "lfw", n).permutation(len(people[n]))]
        k = max(2, int(round(0.3 * len(fs))))
        lfw_test[n], lfw_own[n] = sorted(fs[:k]), sorted(fs[k:])
    strangers = [(p, n) for n in distractor_people for p in people[n]]
    lfw_crawl = crawl_with(lfw_own, lambda name: strangers, "lfw-distractors")

    # webfaces: 20% held out, 30% reserved as other names' distractors
    web_own, web_test, reserve = {}, {}, {}
    for n in web_cast:
        fs = [p for p in (_files(webfaces / n))]
        fs = [fs[i] for i in _rng(seed, "webfaces", n).permutation(len(fs))]
        k_test, k_res = int(round(0.2 * len(fs))), int(round(0.3 * len(fs)))
        test = [p for p in fs[:k_test] if f"{n}/{p.name}" not in DOUBTFUL]
        doubtful = [p for p in fs[:k_test] if f"{n}/{p.name}" in DOUBTFUL]
        web_test[n] = sorted(test)
        reserve[n] = sorted(fs[k_test : k_test + k_res])
        web_own[n] = sorted(fs[k_test + k_res :] + doubtful)
    web_crawl = crawl_with(
        web_own, lambda name: [(p, other) for other in web_cast if other != name for p in reserve[other]], "web"
    )
    # the recognizer's negatives (train.distractors in a project): strangers from the distractor half, one photo
    # each, none of them a crawl image
    in_crawl = {p for items in lfw_crawl.values() for p, _ in items}
    negatives = []
    for n in distractor_people:
        fs = [p for p in people[n] if p not in in_crawl]
        if fs:
            negatives.append((n, fs[int(_rng(seed, "negative", n).integers(len(fs)))]))
    negatives = [negatives[i] for i in sorted(_rng(seed, "negatives").permutation(len(negatives))[:N_NEGATIVES])]
    return {
        "lfw": {"crawl": lfw_crawl, "test": lfw_test},
        "webfaces": {"crawl": web_crawl, "test": web_test},
        "unknown": unknown,
        "negatives": negatives,
    }


def _link_tree(folder: Path, groups: dict[str, list[Path]], seed: int) -> dict[str, str]:
    """`folder/<name>/<opaque>.jpg` hard links, or copies across file systems (names say nothing about the
    person; not symlinks: the folder source refuses links that leave its root); returns file -> original."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    made = {}
    for name, paths in groups.items():
        d = folder / name
        d.mkdir(parents=True)
        for p in paths:
            link = d / f"{_h(seed, name, p.resolve()):08x}{p.suffix.lower()}"
            try:
                os.link(p.resolve(), link)
            except OSError:
                shutil.copyfile(p.resolve(), link)
            made[str(link)] = str(p.resolve())
    return made


def materialize(work: Path, plan: dict, seed: int) -> dict:
    """Write the folders of `plan` under `work` (only when the plan changed) and return where they are."""
    work.mkdir(parents=True, exist_ok=True)
    key = {"plan": plan, "files": "hardlink-or-copy"}
    stamp = hashlib.sha256(json.dumps(key, default=str, sort_keys=True).encode()).hexdigest()[:16]
    done = work / "layout.json"
    out = {
        "unknown": work / "unknown",
        "negatives": work / "negatives",
        **{d: {"crawl": work / d / "crawl", "test": work / d / "test"} for d in ("lfw", "webfaces")},
    }
    if done.exists() and json.loads(done.read_text()).get("stamp") == stamp and "truth" in done.read_text():
        out["truth"] = json.loads(done.read_text())["truth"]
        return out
    _link_tree(out["unknown"], {n: [p] for n, p in plan["unknown"]}, seed)
    _link_tree(out["negatives"], {n: [p] for n, p in plan["negatives"]}, seed)
    truth = {}
    for d in ("lfw", "webfaces"):
        links = _link_tree(
            out[d]["crawl"], {n: [p for p, _ in items] for n, items in plan[d]["crawl"].items()}, seed
        )
        true_of = {str(p.resolve()): t for items in plan[d]["crawl"].values() for p, t in items}
        truth[d] = {link: true_of[target] for link, target in links.items()}
        _link_tree(out[d]["test"], plan[d]["test"], seed)
    done.write_text(json.dumps({"stamp": stamp, "truth": truth}))
    out["truth"] = truth
    return out


def repo_params() -> dict:
    from facedata.project import Project

    return Project.find(REPO).params


def build_project(root: Path, crawl: Path, params: dict, stages: tuple[str, ...]) -> None:
    """A facedata project over the crawl folders with the repository's params; runs the named stages."""
    import yaml

    from facedata import atomic
    from facedata.pipeline.runner import run_stage

    root.mkdir(parents=True, exist_ok=True)
    p = copy.deepcopy(params)
    p["sources"] = {"folders": [{"root": str(crawl), "labeled": False}]}
    p["models"]["dir"] = os.environ.get("FACEDATA_MODELS_DIR") or str(SHARED / "models")
    atomic.write_text(root / "params.yaml", yaml.safe_dump(p, sort_keys=False))
    for stage in stages:
        t0 = time.perf_counter()
        code = run_stage(stage, root)
        print(f"  {root.parent.name}: stage {stage} exit {code} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if code != 0:
            raise SystemExit(f"stage {stage} failed in {root} (exit {code})")


def training_sets(root: Path, truth: dict[str, str], model: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    """(vectors, labels) of the three ways to label the crawl: raw, curated (the exported dataset), clean."""
    from facedata import manifest

    images = {r["source_uri"]: r["image_id"] for r in manifest.read("images", root).to_pylist()}
    emb = {r["face_id"]: r["vector"] for r in manifest.read("embeddings", root).to_pylist() if r["model"] == model}
    primary = {
        f["image_id"]: f["face_id"]
        for f in manifest.read("faces", root).to_pylist()
        if f["is_primary"] and f["status"] == "ok" and f["face_id"] in emb
    }
    raw_x, raw_y, clean_x, clean_y = [], [], [], []
    cast = set(Path(link).parent.name for link in truth)
    for link, true in sorted(truth.items()):
        fid = primary.get(images.get(link))
        if fid is None:
            continue
        raw_x.append(emb[fid])
        raw_y.append(Path(link).parent.name)
        if true in cast:
            clean_x.append(emb[fid])
            clean_y.append(true)
    dataset = manifest.read("dataset", root).to_pylist()
    cur_x = [emb[r["face_id"]] for r in dataset]
    cur_y = [r["identity"] for r in dataset]
    arr = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    return {"raw": (arr(raw_x), raw_y), "curated": (arr(cur_x), cur_y), "clean": (arr(clean_x), clean_y)}


def label_quality(sets: dict, truth: dict[str, str], root: Path) -> dict:
    """How wrong each label set is: the share of its faces whose label is not their true identity."""
    from facedata import manifest

    true_of_image = {}
    images = manifest.read("images", root).to_pylist()
    for r in images:
        if r["source_uri"] in truth:
            true_of_image[r["image_id"]] = truth[r["source_uri"]]
    faces = {f["face_id"]: f["image_id"] for f in manifest.read("faces", root).to_pylist()}
    dataset = manifest.read("dataset", root).to_pylist()
    wrong_cur = sum(true_of_image.get(faces[r["face_id"]]) != r["identity"] for r in dataset)
    raw_y = sets["raw"][1]
    n_raw_wrong = sum(1 for link, t in truth.items() if Path(link).parent.name != t)
    return {
        "raw": {"faces": len(raw_y), "wrong_label_share_of_images": round(n_raw_wrong / len(truth), 4)},
        "curated": {"faces": len(dataset), "wrong_label_share": round(wrong_cur / max(1, len(dataset)), 4)},
        "clean": {"faces": len(sets["clean"][1]), "wrong_label_share": 0.0},
    }


def probes(ls, names: list[str]) -> tuple[np.ndarray, list[str], int]:
    """Primary-face vectors of a prepared labelled folder's items whose label is in `names`; items with no
    usable face are counted (`n_missed`), never dropped from the denominator."""
    xs, ys, missed = [], [], 0
    wanted = set(names)
    for label, img in zip(ls.labels, ls.image_ids, strict=True):
        if label not in wanted:
            continue
        r = ls.primary.get(img) if img is not None else None
        if r is None:
            missed += 1
            continue
        xs.append(ls.faces.x[r])
        ys.append(label)
    return np.asarray(xs, dtype=np.float32).reshape(-1, ls.faces.x.shape[1]), ys, missed


METRICS = ("top1", "tar_at_far_1e-2", "tar_at_far_1e-3")

#: Head settings tried on the LFW tune half (`--grid`), each a change from GRID_BASE (the settings the search
#: started from); params.yaml's `train` defaults are the row with the best mean of clean-label top-1, TAR @ FAR
#: 1e-2 and TAR @ FAR 1e-3 (ties: fewer epochs).
GRID_BASE = {
    "loss": "arcface",
    "margin": 0.1,
    "scale": 32.0,
    "projection": "mlp",
    "hidden_dim": 256,
    "epochs": 15,
    "lr": 0.01,
    "negative_weight": 1.0,
}
GRID = [
    {},
    {"negative_weight": 0.0},
    {"projection": "none"},
    {"loss": "cosface", "margin": 0.2, "lr": 0.05, "epochs": 30},
    {"loss": "cosface", "margin": 0.1},
    {"loss": "cosface", "margin": 0.05},
    {"margin": 0.05},
    {"margin": 0.2},
    {"lr": 0.005},
    {"scale": 64.0},
    {"epochs": 30},
    {"epochs": 60},
    {"hidden_dim": 512},
    {"negative_weight": 0.5},
    {"negative_weight": 2.0},
]


def score(
    sets: dict, cast: list[str], test, unknown: np.ndarray, negatives: np.ndarray, cfg, seeds=(0, 1, 2)
) -> list[dict]:
    """Each label set's recognizer (trained with each seed; the mean is reported) and the no-training baseline,
    on the same test probes and strangers."""
    import torch

    from facedata.train.evaluate import identification
    from facedata.train.recognizer import embed_inputs, fit_vectors

    index = {c: i for i, c in enumerate(cast)}
    test_x, test_names, missed = test
    test_y = np.asarray([index[n] for n in test_names], dtype=np.int64)
    rows = []
    for label_set, (x, names) in sets.items():
        keep = np.asarray([n in index for n in names], dtype=bool)
        x, y = x[keep], np.asarray([index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)
        for kind, mode, kind_seeds in (("recognizer", cfg.mode, seeds), ("embedding distance", "centroid", (0,))):
            runs = []
            for seed in kind_seeds:
                c = dataclasses.replace(cfg, mode=mode, seed=seed)
                t0 = time.perf_counter()
                net = fit_vectors(x, y, np.ones(len(y)), len(cast), c, negatives=negatives)
                fit_s = time.perf_counter() - t0

                def z(v, net=net):
                    return embed_inputs(net, lambda i, v=v: torch.from_numpy(v[i]), len(v), False, "cpu")

                protos = torch.nn.functional.normalize(net.prototypes.detach(), dim=1).numpy()
                m = identification(z(test_x) @ protos.T, test_y, (z(unknown) @ protos.T).max(1), n_missed=missed)
                runs.append({**m, "seed": seed, "fit_seconds": round(fit_s, 2)})
            row = {"labels": label_set, "model": kind, "n_train_faces": int(len(y))}
            row.update({k: round(float(np.mean([r[k] for r in runs])), 5) for k in METRICS})
            row.update({f"{k}_range": [min(r[k] for r in runs), max(r[k] for r in runs)] for k in METRICS})
            row.update(n_test_faces=runs[0]["n_test_faces"], n_impostors=runs[0]["n_impostors"], runs=runs)
            rows.append(row)
    for model in ("recognizer", "embedding distance"):
        ceiling = next(r for r in rows if r["labels"] == "clean" and r["model"] == model)
        for r in rows:
            if r["model"] == model:
                r["gap_to_clean_points"] = {k: round(100 * (r[k] - ceiling[k]), 2) for k in METRICS}
    return rows


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks curation")
    ap.add_argument("--datasets", default="lfw,webfaces")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--grid", action="store_true", help="also try the head settings of GRID on the LFW tune half")
    args = ap.parse_args(argv)
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    os.environ.setdefault("FACEDATA_OFFLINE", "1")
    from facedata.pipeline.evalcache import default_cache_dir, prepare

    work = args.work or default_cache_dir().parent / f"bench_curation-f{args.fraction}-s{args.seed}"
    plan = layout(SHARED / "data/faces/lfw", SHARED / "data/faces/webfaces", args.fraction, args.seed)
    where = materialize(work, plan, args.seed)
    params = repo_params()
    datasets = args.datasets.split(",")
    prepare(where["unknown"], params, work / "eval_cache")
    prepare(where["negatives"], params, work / "eval_cache")
    for d in datasets:
        prepare(where[d]["test"], params, work / "eval_cache")
        build_project(work / d / "project", where[d]["crawl"], params, ("ingest", "detect", "embed"))
    if args.prepare_only:
        return {"work": str(work)}
    from facedata.cluster.evaluate import in_split
    from facedata.train.config import TrainConfig

    cfg = TrainConfig.from_params(params["train"])
    unknown_ls = prepare(where["unknown"], params, work / "eval_cache")
    unknown_x, _, _ = probes(unknown_ls, sorted(set(unknown_ls.labels)))
    neg_ls = prepare(where["negatives"], params, work / "eval_cache")
    negatives_x, _, _ = probes(neg_ls, sorted(set(neg_ls.labels)))
    out: dict = {
        "fraction": args.fraction,
        "seed": args.seed,
        "clustering": {k: params["cluster"][k] for k in ("method", "threshold")},
        "recognizer": dataclasses.asdict(cfg),
        "n_unknown_probes": int(len(unknown_x)),
        "n_negatives": int(len(negatives_x)),
        "results": {},
    }
    for d in datasets:
        root = work / d / "project"
        build_project(root, where[d]["crawl"], params, ("cluster", "validate", "export"))
        truth = where["truth"][d]
        sets = training_sets(root, truth, params["embed"]["model"])
        test_ls = prepare(where[d]["test"], params, work / "eval_cache")
        cast = sorted({Path(link).parent.name for link in truth})
        groups = {"all": cast}
        if d == "lfw":  # the train defaults were chosen on the tune half; the test half is the headline
            groups = {h: [n for n in cast if in_split(n, h, 0)] for h in ("test", "tune")}
        res = {"labels": label_quality(sets, truth, root)}
        for g, names in groups.items():
            rows = score(sets, names, probes(test_ls, names), unknown_x, negatives_x, cfg)
            res[g] = {"n_identities": len(names), "rows": rows}
            for r in rows:
                print(
                    f"  {d} {g} {r['labels']:<8} {r['model']:<34} top1 {r['top1']:.4f} "
                    f"TAR@1e-2 {r['tar_at_far_1e-2']:.4f} TAR@1e-3 {r['tar_at_far_1e-3']:.4f}",
                    flush=True,
                )
        if d == "lfw":
            out["gallery_threshold"] = gallery_threshold(sets["clean"], groups["tune"][:20], test_ls, unknown_x)
            if args.grid:
                out["grid"] = grid(
                    sets, groups["tune"], probes(test_ls, groups["tune"]), unknown_x, negatives_x, cfg
                )
        out["results"][d] = res
    return out


def grid(sets: dict, names: list[str], test, unknown_x, negatives_x, cfg) -> list[dict]:
    """Every GRID setting on the tune half (seed 0), clean and curated labels."""
    out = []
    for change in GRID:
        c = dataclasses.replace(cfg, **{**GRID_BASE, **change})
        rows = score(
            {k: sets[k] for k in ("clean", "curated")}, names, test, unknown_x, negatives_x, c, seeds=(0,)
        )
        row = {"change": change}
        for r in rows:
            if r["model"] == "recognizer":
                row[r["labels"]] = {k: r[k] for k in METRICS}
        row["clean_mean"] = round(float(np.mean([row["clean"][k] for k in METRICS])), 5)
        print(f"  grid {json.dumps(change)}: clean {row['clean']} curated {row['curated']}", flush=True)
        out.append(row)
    return out


def gallery_threshold(clean, names: list[str], test_ls, unknown_x: np.ndarray) -> dict:
    """How params.yaml `identify.gallery_threshold` was chosen: the cosine to a 20-person gallery's mean
    embeddings (clean labels, LFW tune half) that lets 1% of the strangers in."""
    from facedata.train.evaluate import identification
    from facedata.train.heads import class_means

    index = {c: i for i, c in enumerate(names)}
    x, labels = clean
    keep = np.asarray([n in index for n in labels])
    y = np.asarray([index[n] for n in labels if n in index])
    protos = class_means(x[keep], y, np.ones(len(y)), len(names))
    tx, tn, missed = probes(test_ls, names)
    m = identification(
        tx @ protos.T, np.asarray([index[n] for n in tn]), (unknown_x @ protos.T).max(1), n_missed=missed
    )
    return {"n_identities": len(names), **m}
