"""Clustering benchmarks (issue 4): quality against the standard recipes, simulated crawls, incremental drift,
and scale on synthetic embeddings.

    python -m benchmarks cluster -- [--lfw DIR | --project DIR] [--cache-dir DIR]
                                    [--suite [--webfaces DIR] [--video FILE --video-labels CSV]]
                                    [--quality] [--cv] [--crawl [--crawl-tuning]] [--incremental]
                                    [--scale 100000,1000000] [--knn-recall]

`--suite` is issue 17's side-by-side comparison (every method, each tuned on tuning data only, on the LFW test
half, webfaces cross-validated over people, the Hamilton video frames, simulated crawls, and the per-name
view on webfaces; see `benchmarks/cluster_suite.py`). With no section flag the suite, crawls (with the
absorb_threshold tuning), incremental drift, IVF recall and scale run; `--quality` / `--cv` are issue 4's LFW-only
comparison. Quality sections use the project's detect / embed params on the LFW
folder (cached like `facedata evaluate clustering`), tune every method's threshold on the `tune` half of the
identities and report both halves, the `test` half being the one nothing was tuned on. Scale sections run
each size in a child process (so its peak memory is its own) and time a fixed BLAS workload in the same run
as the machine-speed reference: on a shared 2-core machine the wall time alone says little.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Each method's settings as its users document them (the issue's reference points), and the grid searched on
#: the tune half. Thresholds are L2 distances between unit vectors (dlib's convention).
DOCUMENTED = {
    "chinese_whispers": {"threshold": 0.5},  # face_recognition's example
    "agglomerative": {"threshold": 0.5},
    "dbscan": {"threshold": 0.45},
    "hdbscan": {"min_cluster_size": 2},
    "leiden": {"threshold": 0.5},
}
#: Per-split threshold grids for the cross-validated comparison: every method gets only its threshold (or its
#: one main knob) tuned on each tune half; knn_average keeps its other params.yaml values.
CV_GRID = {
    "knn_average": [{"threshold": round(t, 3)} for t in np.arange(0.30, 0.345, 0.005)],
    "agglomerative": [{"threshold": round(t, 3)} for t in np.arange(0.32, 0.381, 0.005)],
    "chinese_whispers": [{"threshold": round(t, 3)} for t in np.arange(0.29, 0.341, 0.005)],
    "dbscan": [{"threshold": round(t, 3)} for t in np.arange(0.26, 0.331, 0.01)],
    "hdbscan": [{"min_cluster_size": 2, "min_samples": s} for s in (1, 2, 3)],
    "leiden": [{"threshold": 0.34, "resolution": r} for r in (0.5, 1.0, 2.0, 4.0)],
}

GRID = {
    "knn_average": [
        {"threshold": t, "jaccard_weight": w, "relax": r}
        for t in (0.30, 0.31, 0.32, 0.33, 0.34)
        for w in (0.0, 0.02, 0.03)
        for r in (0.0, 0.01)
    ],
    "agglomerative": [{"threshold": round(t, 3)} for t in np.arange(0.30, 0.401, 0.01)],
    "chinese_whispers": [{"threshold": round(t, 3)} for t in np.arange(0.28, 0.381, 0.01)],
    "dbscan": [{"threshold": round(t, 3)} for t in np.arange(0.24, 0.341, 0.01)],
    "hdbscan": [{"min_cluster_size": c, "min_samples": s} for c in (2, 3) for s in (1, 2, 3)],
    "leiden": [{"threshold": t, "resolution": r} for t in (0.34, 0.38, 0.42) for r in (0.5, 1.0, 2.0, 4.0)],
}


def _params():
    from facedata.params import defaults
    from facedata.project import Project, ProjectError

    try:
        return Project.find(REPO).params
    except ProjectError:
        return defaults()


def _labeled(args, params):
    """The labelled LFW faces: from an existing project's manifests (`--project`, e.g. one built with
    `facedata init --folder ../shared/data/faces/lfw --labeled`), or detected and embedded in the evaluation
    cache exactly as `facedata evaluate clustering` does."""
    from facedata.cluster.evaluate import load
    from facedata.pipeline.evalcache import prepare

    if args.project:
        return load(Path(args.project), params["embed"]["model"])
    return prepare(args.lfw, params, args.cache_dir)


def _eval(ls, cparams, split, seed=0, crawl=None, split_seed=0):
    from facedata.cluster.evaluate import evaluate

    return evaluate(ls, cparams, seed=seed, simulate_crawl=crawl, split=split, split_seed=split_seed)


def _row(name, setting, m) -> dict:
    keys = ("purity", "inverse_purity", "bcubed_precision", "bcubed_recall", "bcubed_f", "pairwise_f", "nmi")
    return {
        "method": name,
        "setting": setting,
        **{k: round(m[k], 4) for k in keys},
        "n_clusters": m["n_clusters"],
        "compactness": round(m["compactness"], 4),
        "n_images": m["n_images"],
        "n_no_face": m["n_no_face"],
        "cluster_seconds": round(m["seconds"] - 0, 2),
    }


def quality(args, params, ls) -> dict:
    """Every method at its documented setting and at the settings that did best on the tune half (best BCubed F,
    and best BCubed F with purity >= --min-purity), each measured on both halves."""
    base = dict(params["cluster"])
    out: dict = {"tuning": {}, "tune": [], "test": []}
    for method, grid in GRID.items():
        if args.methods and method not in args.methods:
            continue
        scored = []
        for setting in grid:
            cp = {**base, "method": method, **setting}
            m = _eval(ls, cp, "tune")
            scored.append((m["bcubed_f"], m["purity"], setting))
            print(f"  tune {method} {setting}: bcubed_f {m['bcubed_f']:.4f} purity {m['purity']:.4f}", flush=True)
        out["tuning"][method] = [
            {"setting": s, "bcubed_f": round(f, 4), "purity": round(p, 4)} for f, p, s in scored
        ]
        best = max(scored, key=lambda t: t[0])[2]
        pure = [t for t in scored if t[1] >= args.min_purity]
        settings = [("best F on tune", best)]
        if pure and max(pure, key=lambda t: t[0])[2] != best:
            settings.append((f"best F at purity >= {args.min_purity} on tune", max(pure, key=lambda t: t[0])[2]))
        if method in DOCUMENTED:
            settings.insert(0, ("documented", DOCUMENTED[method]))
        if method == "knn_average":
            settings.insert(0, ("params.yaml", {"threshold": base["threshold"]}))
        for label, setting in settings:
            for split in ("tune", "test"):
                cp = {**base, "method": method, **setting}
                t = time.perf_counter()
                m = _eval(ls, cp, split)
                m["seconds"] = time.perf_counter() - t
                out[split].append(_row(method, f"{label} {json.dumps(setting)}", m))
                print(f"  {split} {method} {label} {setting}: bcubed_f {m['bcubed_f']:.4f}", flush=True)
    return out


def cross_validated(args, params, ls) -> dict:
    """For each split seed: tune each method's threshold on the tune half (best BCubed F, and best BCubed F at
    purity >= --min-purity), measure on the test half; mean and spread over the seeds."""
    base = dict(params["cluster"])
    per_seed: dict = {}
    for seed in args.split_seeds:
        per_seed[seed] = {}
        for method, grid in CV_GRID.items():
            if args.methods and method not in args.methods:
                continue
            scored = []
            for setting in grid:
                m = _eval(ls, {**base, "method": method, **setting}, "tune", split_seed=seed)
                scored.append((m["bcubed_f"], m["purity"], setting))
            best = max(scored, key=lambda t: t[0])[2]
            pure = [t for t in scored if t[1] >= args.min_purity]
            best_pure = max(pure, key=lambda t: t[0])[2] if pure else None
            row = {}
            for rule, setting in (("best_f", best), ("best_f_at_purity", best_pure)):
                if setting is None:
                    row[rule] = None
                    continue
                m = _eval(ls, {**base, "method": method, **setting}, "test", split_seed=seed)
                row[rule] = {"setting": setting, **{k: round(m[k], 4) for k in ("bcubed_f", "purity")}}
            per_seed[seed][method] = row
            print(f"  split seed {seed} {method}: {row}", flush=True)
    summary = {}
    for method in next(iter(per_seed.values())):
        summary[method] = {}
        for rule in ("best_f", "best_f_at_purity"):
            rows = [per_seed[s][method][rule] for s in per_seed if per_seed[s][method][rule]]
            f = np.array([r["bcubed_f"] for r in rows])
            pur = np.array([r["purity"] for r in rows])
            summary[method][rule] = {
                "test_bcubed_f_mean": round(float(f.mean()), 4) if f.size else None,
                "test_bcubed_f_min": round(float(f.min()), 4) if f.size else None,
                "test_bcubed_f_max": round(float(f.max()), 4) if f.size else None,
                "test_purity_mean": round(float(pur.mean()), 4) if pur.size else None,
                "n_splits": int(f.size),
            }
    wins = (
        {
            rule: sum(
                all(
                    per_seed[s]["knn_average"][rule]["bcubed_f"]
                    > (per_seed[s][m][rule] or {"bcubed_f": -1})["bcubed_f"]
                    for m in per_seed[s]
                    if m != "knn_average"
                )
                for s in per_seed
            )
            for rule in ("best_f", "best_f_at_purity")
        }
        if all("knn_average" in per_seed[s] for s in per_seed)
        else {}
    )
    return {
        "split_seeds": args.split_seeds,
        "summary": summary,
        "knn_average_best_on_splits": wins,
        "per_seed": per_seed,
    }


#: absorb_threshold grid for the crawl tuning (see `crawl`).
ABSORB_GRID = (0.0, 0.33, 0.345, 0.35, 0.355, 0.36, 0.37, 0.38)


def crawl_tuning(args, params, ls) -> dict:
    """Tune `absorb_threshold` on the tune half: the highest mean crawl recall whose mean crawl precision over
    the distractor seeds (--seed and --crawl-seeds) is >= --min-crawl-precision; report it on the test half."""
    seeds = [args.seed, *args.crawl_seeds]

    def measure(split: str, thr: float) -> dict:
        ms = [
            _eval(ls, {**params["cluster"], "absorb_threshold": thr}, split, seed=s, crawl=args.fraction)
            for s in seeds
        ]
        p = [m["crawl_precision"] for m in ms]
        r = [m["crawl_recall"] for m in ms]
        return {
            "absorb_threshold": thr,
            "precision_per_seed": [round(v, 5) for v in p],
            "recall_per_seed": [round(v, 5) for v in r],
            "precision_mean": round(float(np.mean(p)), 5),
            "recall_mean": round(float(np.mean(r)), 5),
        }

    grid = [measure("tune", thr) for thr in ABSORB_GRID]
    for row in grid:
        print(f"  crawl tuning (tune half) {row}", flush=True)
    ok = [r for r in grid if r["precision_mean"] >= args.min_crawl_precision]
    chosen = max(ok, key=lambda r: (r["recall_mean"], r["precision_mean"])) if ok else None
    out = {"distractor_seeds": seeds, "tune_grid": grid, "chosen_on_tune": chosen}
    if chosen:
        out["test"] = measure("test", chosen["absorb_threshold"])
        print(f"  crawl tuning: chosen {chosen['absorb_threshold']}, test half {out['test']}", flush=True)
    return out


def crawl(args, params, ls) -> dict:
    out = {"tuning": crawl_tuning(args, params, ls)} if args.crawl_tuning else {}
    for split in ("tune", "test"):
        m = _eval(ls, params["cluster"], split, seed=args.seed, crawl=args.fraction)
        seeds = {}
        for seed in args.crawl_seeds:
            ms = _eval(ls, params["cluster"], split, seed=seed, crawl=args.fraction)
            seeds[seed] = {
                "crawl_precision": round(ms["crawl_precision"], 5),
                "crawl_recall": round(ms["crawl_recall"], 5),
            }
        worst = sorted(m["crawl_identities"], key=lambda r: (r[2] + r[3], r[0]))[:8]
        out[split] = {
            "fraction": args.fraction,
            "crawl_precision": round(m["crawl_precision"], 5),
            "crawl_recall": round(m["crawl_recall"], 5),
            "n_queries": len(m["crawl_identities"]),
            "other_distractor_seeds": seeds,
            "worst": [
                {"name": n, "images": k, "precision": round(p, 3), "recall": round(r, 3)} for n, k, p, r in worst
            ],
        }
        print(f"  crawl {split}: {out[split]}", flush=True)
    return out


def incremental(args, params, ls) -> dict:
    """For each --new-fractions F: cluster a random (1 - F) of the faces, add the other F incrementally, and
    compare with a full recluster of everything."""
    return {f"new_{f:g}": incremental_one(args, params, ls, f) for f in args.new_fractions}


def incremental_one(args, params, ls, new_fraction: float) -> dict:
    from facedata.cluster.faceset import cluster_faces, constraints, options
    from facedata.cluster.incremental import add_faces
    from facedata.cluster.metrics import clustering_metrics, partition_agreement

    p = params["cluster"]
    fs = ls.faces
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(fs))
    n_old = int(round((1 - new_fraction) * len(fs)))
    old, new = perm[:n_old], perm[n_old:]
    order = np.concatenate([old, new])
    t = time.perf_counter()
    old_labels = cluster_faces(fs.take(old), p).labels
    t_old = time.perf_counter() - t
    cannot, _ = constraints(fs.take(order), p)
    t = time.perf_counter()
    inc, stats = add_faces(fs.x[old], old_labels, fs.x[new], p["method"], options(p), cannot=cannot)
    t_inc = time.perf_counter() - t
    t = time.perf_counter()
    full = cluster_faces(fs.take(order), p).labels
    t_full = time.perf_counter() - t
    # Truth per face: the label of its image's item (primary or not, the image's identity).
    label_of_image = {img: lab for lab, img in zip(ls.labels, ls.image_ids, strict=True) if img}
    primary_rows = {r for r in ls.primary.values()}
    keep = np.asarray([fs.image_ids[r] in label_of_image and r in primary_rows for r in order])
    truth = [label_of_image[fs.image_ids[r]] for r in order[keep]]
    return {
        "n_old": int(n_old),
        "n_new": int(len(new)),
        **stats,
        "seconds_initial": round(t_old, 2),
        "seconds_incremental": round(t_inc, 2),
        "seconds_full_recluster": round(t_full, 2),
        "drift_vs_full": {
            k: round(v, 4) if isinstance(v, float) else v for k, v in partition_agreement(full, inc).items()
        },
        "bcubed_f_incremental": round(clustering_metrics(truth, inc[keep])["bcubed_f"], 4),
        "bcubed_f_full": round(clustering_metrics(truth, full[keep])["bcubed_f"], 4),
    }


def blas_reference(seconds: float = 3.0) -> float:
    """GFLOP/s of a fixed float32 matrix product, measured now: how fast this machine is at this moment."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ a
        n += 1
    return round(2 * 1024**3 * n / (time.perf_counter() - t) / 1e9, 2)


def scale_child(n: int, threshold: float | None = None) -> dict:
    """One synthetic scale run, in its own process (see `scale`): the kNN graph and knn_average with the
    project's cluster params (the threshold may be overridden for the synthetic geometry)."""
    from facedata.cluster.algorithms import cluster
    from facedata.cluster.faceset import options
    from facedata.cluster.knn import knn
    from facedata.cluster.metrics import clustering_metrics
    from facedata.cluster.synthetic import make_embeddings

    p = dict(_params()["cluster"])
    if threshold is not None:
        p["threshold"] = threshold
    x, labels = make_embeddings(n, seed=1)
    c0, w0 = time.process_time(), time.perf_counter()
    opts = options(p)
    opts.knn_graph = knn(x, opts.k, exact_max=opts.exact_knn_max, nprobe=opts.nprobe)
    w_knn, c_knn = time.perf_counter() - w0, time.process_time() - c0
    pred = cluster(x, "knn_average", opts)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    m = clustering_metrics(labels, pred)
    return {
        "n": n,
        "threshold": p["threshold"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "knn_wall_s": round(w_knn, 1),
        "knn_cpu_s": round(c_knn, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "bcubed_f": round(m["bcubed_f"], 4),
        "purity": round(m["purity"], 4),
        "n_clusters": m["n_clusters"],
        "n_identities": int(np.unique(labels).size),
    }


def scale(args, params) -> dict:
    out = {"blas_gflops_before": blas_reference(), "runs": []}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for n in args.scale:
        call = (
            "import json; from benchmarks.bench_cluster import scale_child; "
            f"print(json.dumps(scale_child({n}, {args.synthetic_threshold})))"
        )
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", call], env=env, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            out["runs"].append({"n": n, "error": proc.stderr[-2000:]})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = round(time.perf_counter() - t, 1)
        out["runs"].append(row)
        print(f"  scale {row}", flush=True)
    out["blas_gflops_after"] = blas_reference()
    return out


def knn_recall(args, params) -> dict:
    """Recall of the IVF graph against exact search, on synthetic faces: all top-k, and same-identity only."""
    from facedata.cluster.knn import knn
    from facedata.cluster.synthetic import make_embeddings

    p = params["cluster"]
    x, labels = make_embeddings(args.recall_n, seed=2)
    q = np.random.default_rng(0).choice(len(x), 2000, replace=False)
    idx, _ = knn(x, p["k"], exact_max=0, nprobe=p["nprobe"])
    s = x[q] @ x.T
    s[np.arange(q.size), q] = -np.inf
    exact = np.argsort(-s, axis=1)[:, : p["k"]]
    top = np.mean([len(set(a) & set(b)) / p["k"] for a, b in zip(exact, idx[q], strict=True)])
    same_found = same_total = 0
    for row, i in enumerate(q):
        same = set(exact[row][labels[exact[row]] == labels[i]])
        same_found += len(same & set(idx[i]))
        same_total += len(same)
    return {
        "n": args.recall_n,
        "k": p["k"],
        "nprobe": p["nprobe"],
        "recall_topk": round(float(top), 4),
        "recall_same_identity": round(same_found / max(same_total, 1), 4),
    }


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks cluster --")
    ap.add_argument("--lfw", default=str(REPO.parent / "shared" / "data" / "faces" / "lfw"))
    ap.add_argument("--cache-dir", default=None, help="evaluation cache (see facedata evaluate clustering)")
    ap.add_argument("--project", default=None, help="read LFW faces from this project's manifests instead")
    ap.add_argument("--webfaces", default=str(REPO.parent / "shared" / "data" / "faces" / "webfaces"))
    ap.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"))
    ap.add_argument("--video-labels", default=str(REPO / "benchmarks" / "data" / "hamilton_faces.csv"))
    ap.add_argument(
        "--suite", action="store_true", help="issue 17: every method on LFW, webfaces (CV), video, crawls"
    )
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--crawl", action="store_true")
    ap.add_argument("--incremental", action="store_true")
    ap.add_argument("--scale", type=lambda s: [int(v) for v in s.split(",")], default=None)
    ap.add_argument("--knn-recall", action="store_true")
    ap.add_argument("--recall-n", type=int, default=100_000)
    ap.add_argument("--methods", type=lambda s: s.split(","), default=None)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv", action="store_true", help="cross-validated comparison over --split-seeds")
    ap.add_argument("--split-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 3, 4])
    ap.add_argument("--crawl-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    ap.add_argument("--min-purity", type=float, default=0.98, help="the purity the issue's target asks for")
    ap.add_argument(
        "--new-fractions", type=lambda s: [float(v) for v in s.split(",")], default=[0.05, 0.2], help="incremental"
    )
    ap.add_argument("--crawl-tuning", action="store_true", help="with --crawl: tune absorb_threshold (tune half)")
    ap.add_argument("--min-crawl-precision", type=float, default=0.999, help="the issue's crawl precision target")
    ap.add_argument(
        "--synthetic-threshold", type=float, default=None, help="override cluster.threshold for synthetic faces"
    )
    args = ap.parse_args(argv)
    sections = (args.suite, args.quality, args.cv, args.crawl, args.incremental, args.scale, args.knn_recall)
    if not any(sections):
        args.suite = args.crawl = args.crawl_tuning = args.incremental = args.knn_recall = True
        args.scale = [100_000, 1_000_000]
    params = _params()
    result: dict = {"params_cluster": params["cluster"]}
    ls = _labeled(args, params) if (args.quality or args.cv or args.crawl or args.incremental) else None
    if ls is not None:
        result["lfw"] = {"n_items": len(ls.labels), "n_faces": len(ls.faces)}
    if args.suite:
        from benchmarks.cluster_suite import run as suite

        result["suite"] = suite(args, params)
    if args.quality:
        result["quality"] = quality(args, params, ls)
    if args.cv:
        result["cross_validated"] = cross_validated(args, params, ls)
    if args.crawl:
        result["crawl"] = crawl(args, params, ls)
    if args.incremental:
        result["incremental"] = incremental(args, params, ls)
    if args.knn_recall:
        result["knn_recall"] = knn_recall(args, params)
    if args.scale:
        result["scale"] = scale(args, params)
    result["peak_rss_gb_parent"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    return result
