"""The side-by-side clustering comparison of issue 17, one run: every method, each at its best setting chosen
on tuning data only, on every open set.

- **LFW test half** (split seed 0): settings chosen on the LFW tune half.
- **webfaces, cross-validated over people**: two balanced folds of the 12 people, three fold seeds (6 splits);
  each method's setting is chosen on the tune people of a split and measured on its other people.
- **Hamilton video frames** (hand-labelled faces, `benchmarks/data/hamilton_faces.csv`) and **simulated
  crawls** (LFW test identities, 30% distractors, distractor seeds 0-2): no tuning data of their own, so every
  method runs at the setting it got on the LFW tune half.
- **Per-name view on webfaces**: the shipped defaults, each person queried by their name.

The selection rule everywhere: the best BCubed F among the settings that reach the target purity on the
tuning data (LFW 0.985, webfaces 0.99), or the best BCubed F when none does (marked). `knn_average
(params.yaml)` is the shipped default, fixed; its parameters were chosen with all webfaces people and the LFW
tune half (the highest sum of the two BCubed F among settings reaching both target purities without losing
LFW F against the issue-4 default), so its webfaces numbers are on tuning data: `knn_average (retuned per
split)` is the honest held-out estimate of the method (`GRID["knn_average"]` re-chosen by the same rule on
each split's tune people plus the LFW tune half). `knn_average before` is the issue-4 default (0.32, no
second level), fixed and retuned.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: Target purities of issue 17 (the selection constraint on tuning data).
LFW_PURITY, WEB_PURITY = 0.985, 0.99
SPLIT_SEEDS = (0, 1, 2)
CRAWL_SEEDS = (0, 1, 2)
KEYS = (
    "bcubed_f",
    "bcubed_precision",
    "bcubed_recall",
    "purity",
    "inverse_purity",
    "nmi",
    "n_clusters",
    "compactness",
)


def _t(lo: float, hi: float, step: float) -> list[float]:
    return [round(float(v), 3) for v in np.arange(lo, hi + 1e-9, step)]


#: What each method may be tuned over. Thresholds span both kinds of data (press photos ~0.3, web photos ~0.4).
GRID: dict[str, list[dict]] = {
    "knn_average": [
        {"threshold": t, "join_threshold": t, "link_gap": g, "link_z": z, "link_reach": r}
        for t in (0.30, 0.31, 0.32)
        for g, z in ((0.18, 1.6), (0.2, 1.4), (0.22, 1.2), (0.24, 1.0))
        for r in (0.40, 0.44)
    ],
    "knn_average before": [{"link": False, "threshold": t, "join_threshold": t} for t in _t(0.30, 0.44, 0.02)],
    "agglomerative": [{"threshold": t} for t in _t(0.30, 0.46, 0.02)],
    "chinese_whispers": [{"threshold": t} for t in _t(0.28, 0.44, 0.02)],
    "dbscan": [{"threshold": t} for t in _t(0.24, 0.40, 0.02)],
    "hdbscan": [{"min_cluster_size": c, "min_samples": s} for c in (2, 3, 5) for s in (1, 2, 3)],
    "leiden": [{"threshold": t, "resolution": r} for t in (0.34, 0.38, 0.42) for r in (0.5, 1.0, 2.0, 4.0)],
}
#: The issue-4 default, the "before" of this comparison.
BEFORE = {"link": False, "threshold": 0.32, "join_threshold": 0.32}


def method_params(base: dict, method: str, setting: dict) -> dict:
    name = "knn_average" if method.startswith("knn_average") else method
    return {**base, "method": name, **setting}


def _short(m: dict) -> dict:
    return {k: round(m[k], 4) if isinstance(m[k], float) else m[k] for k in KEYS}


def choose(scored: list[tuple[dict, dict]], purity: float) -> tuple[dict, bool]:
    """(setting, reached) : the best BCubed F with purity >= `purity` on the tuning data, else the best F."""
    ok = [(s, m) for s, m in scored if m["purity"] >= purity]
    pool = ok or scored
    return max(pool, key=lambda sm: sm[1]["bcubed_f"])[0], bool(ok)


def _log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lfw_section(lfw, base: dict) -> tuple[dict, dict, dict]:
    """Every method tuned on the LFW tune half, measured on the test half. Returns (result, chosen setting per
    method, tune-half scores per method)."""
    from facedata.cluster.evaluate import evaluate

    rows, chosen, tune_scores = [], {}, {}
    for method, grid in GRID.items():
        scored = [(s, evaluate(lfw, method_params(base, method, s), split="tune")) for s in grid]
        tune_scores[method] = scored
        setting, reached = choose(scored, LFW_PURITY)
        chosen[method] = setting
        m = evaluate(lfw, method_params(base, method, setting), split="test")
        rows.append({"method": method, "setting": setting, "purity_target_on_tune": reached, **_short(m)})
        _log(f"lfw {method} {setting}: test F {m['bcubed_f']:.4f} purity {m['purity']:.4f}")
    for label, setting in (("knn_average (params.yaml)", {}), ("knn_average before (issue-4 default)", BEFORE)):
        m = evaluate(lfw, method_params(base, "knn_average", setting), split="test")
        t = evaluate(lfw, method_params(base, "knn_average", setting), split="tune")
        rows.insert(0, {"method": label, "setting": setting, "tune_bcubed_f": round(t["bcubed_f"], 4),
                        "tune_purity": round(t["purity"], 4), **_short(m)})  # fmt: skip
        _log(f"lfw {label}: test F {m['bcubed_f']:.4f} purity {m['purity']:.4f}")
    return {"rows": rows, "tune_scores": _scores(tune_scores)}, chosen, tune_scores


def _scores(tune_scores: dict) -> dict:
    return {
        m: [{"setting": s, "bcubed_f": round(r["bcubed_f"], 4), "purity": round(r["purity"], 4)} for s, r in sc]
        for m, sc in tune_scores.items()
    }


def webfaces_section(web, base: dict, lfw_tune: dict, lfw_floor: float) -> dict:
    """Cross-validation over people: per split, each method chosen on the tune people, measured on the others.
    `knn_average` is re-chosen by the rule that chose the shipped default: the highest sum of BCubed F on the
    split's tune people and the LFW tune half, among settings reaching the target purities on both and an LFW
    tune F of at least `lfw_floor` (the issue-4 default's: no loss on LFW)."""
    from facedata.cluster.evaluate import evaluate

    splits = [(seed, fold) for seed in SPLIT_SEEDS for fold in (0, 1)]
    per_method: dict[str, list[dict]] = {}
    for seed, fold in splits:
        kw = {"folds": 2, "fold": fold, "split_seed": seed}
        for method, grid in GRID.items():
            scored = [(s, evaluate(web, method_params(base, method, s), split="tune", **kw)) for s in grid]
            if method == "knn_average":  # one default for both kinds of data: the LFW tune half decides too
                lfw = {_key(s): r for s, r in lfw_tune["knn_average"]}
                ok = [
                    (s, r)
                    for s, r in scored
                    if r["purity"] >= WEB_PURITY
                    and lfw[_key(s)]["purity"] >= LFW_PURITY
                    and lfw[_key(s)]["bcubed_f"] >= lfw_floor
                ]
                pool = ok or scored
                setting = max(pool, key=lambda sr: sr[1]["bcubed_f"] + lfw[_key(sr[0])]["bcubed_f"])[0]
                reached = bool(ok)
                label = "knn_average (retuned per split)"
            else:
                setting, reached = choose(scored, WEB_PURITY)
                label = method
            m = evaluate(web, method_params(base, method, setting), split="test", **kw)
            per_method.setdefault(label, []).append(
                {
                    "split_seed": seed,
                    "test_fold": fold,
                    "setting": setting,
                    "purity_target_on_tune": reached,
                    **_short(m),
                }  # fmt: skip
            )
        for label, setting in (
            ("knn_average (params.yaml)", {}),
            ("knn_average before (issue-4 default)", BEFORE),
        ):
            m = evaluate(web, method_params(base, "knn_average", setting), split="test", **kw)
            per_method.setdefault(label, []).append({"split_seed": seed, "test_fold": fold, **_short(m)})
        _log(f"webfaces split seed {seed} test fold {fold}: " + ", ".join(
            f"{k} {v[-1]['bcubed_f']:.4f}" for k, v in per_method.items()))  # fmt: skip
    summary = {
        label: {
            "bcubed_f_mean": round(float(np.mean([r["bcubed_f"] for r in rows])), 4),
            "bcubed_f_min": round(float(np.min([r["bcubed_f"] for r in rows])), 4),
            "purity_mean": round(float(np.mean([r["purity"] for r in rows])), 4),
            "purity_min": round(float(np.min([r["purity"] for r in rows])), 4),
            "compactness_mean": round(float(np.mean([r["compactness"] for r in rows])), 4),
            "n_clusters_mean": round(float(np.mean([r["n_clusters"] for r in rows])), 1),
        }
        for label, rows in per_method.items()
    }
    return {"summary": summary, "splits": per_method}


def _key(setting: dict) -> tuple:
    return tuple(sorted(setting.items()))


def per_name_section(web, base: dict) -> dict:
    """The shipped defaults' per-name dataset view: all 12 people (tuning data) and each held-out split."""
    from facedata.cluster.evaluate import evaluate

    out = {}
    m = evaluate(web, base, names=True)
    out["all_people_tuning_data"] = {**_short(m), **_names(m)}
    held = []
    for seed in SPLIT_SEEDS:
        for fold in (0, 1):
            r = evaluate(web, base, split="test", split_seed=seed, folds=2, fold=fold, names=True)
            held.append({"split_seed": seed, "test_fold": fold, **_short(r), **_names(r)})
    out["held_out_splits"] = held
    _log(f"per-name view (all people): {out['all_people_tuning_data']['names_summary']}")
    return out


def _names(m: dict) -> dict:
    return {
        "names_summary": {
            "name_precision": round(m["name_precision"], 4),
            "name_recall": round(m["name_recall"], 4),
            "merges_to_complete": m["merges_to_complete"],
        },
        "names": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in m["names"]],
    }


def crawl_section(lfw, base: dict, chosen: dict) -> dict:
    """Simulated crawls on the LFW test identities, every method at its LFW-tune setting."""
    from facedata.cluster.evaluate import evaluate

    settings = {"knn_average (params.yaml)": ("knn_average", {}), "knn_average before (issue-4 default)":
                ("knn_average", BEFORE)} | {m: (m, chosen[m]) for m in GRID}  # fmt: skip
    rows = []
    for label, (method, setting) in settings.items():
        ms = [
            evaluate(lfw, method_params(base, method, setting), seed=s, simulate_crawl=0.3, split="test")
            for s in CRAWL_SEEDS
        ]
        p = [m["crawl_precision"] for m in ms]
        r = [m["crawl_recall"] for m in ms]
        rows.append({"method": label, "setting": setting, "precision_mean": round(float(np.mean(p)), 5),
                     "recall_mean": round(float(np.mean(r)), 5), "precision_per_seed": [round(v, 5) for v in p],
                     "recall_per_seed": [round(v, 5) for v in r]})  # fmt: skip
        _log(f"crawl {label}: precision {np.mean(p):.5f} recall {np.mean(r):.5f}")
    return {"fraction": 0.3, "distractor_seeds": list(CRAWL_SEEDS), "rows": rows}


def video_section(video: Path, labels: Path, params: dict, cache_dir, chosen: dict) -> dict:
    """Hand-labelled faces of the video's frames (sampled at 10 fps, near-identical frames kept), every method
    at its LFW-tune setting."""
    import copy

    from facedata.cluster.evaluate import evaluate_faces
    from facedata.pipeline.evalcache import prepare_video

    p = copy.deepcopy(params)
    p["ingest"].update(video_fps=10.0, video_dup_bits=-1)
    lf = prepare_video(video, labels, p, cache_dir)
    base = p["cluster"]
    settings = {"knn_average (params.yaml)": ("knn_average", {}), "knn_average before (issue-4 default)":
                ("knn_average", BEFORE)} | {m: (m, chosen[m]) for m in GRID}  # fmt: skip
    rows = []
    for label, (method, setting) in settings.items():
        m = evaluate_faces(lf, method_params(base, method, setting))
        rows.append({"method": label, "setting": setting, **_short(m), "n_faces": m["n_images"]})
        _log(f"video {label}: F {m['bcubed_f']:.4f} purity {m['purity']:.4f} clusters {m['n_clusters']}")
    return {"video": str(video), "labels": str(labels), "n_labelled_faces": len(lf.labels),
            "n_usable_faces": len(lf.faces), "rows": rows}  # fmt: skip


def run(args, params) -> dict:
    from facedata.pipeline.evalcache import prepare

    base = dict(params["cluster"])
    t0 = time.perf_counter()
    lfw = prepare(args.lfw, params, args.cache_dir)
    web = prepare(args.webfaces, params, args.cache_dir)
    _log(f"prepared: LFW {len(lfw.labels)} images, webfaces {len(web.labels)} images")
    out: dict = {"params_cluster": base}
    out["lfw"], chosen, lfw_tune = lfw_section(lfw, base)
    before_tune = next(r for r in out["lfw"]["rows"] if r["method"].startswith("knn_average before"))
    out["webfaces"] = webfaces_section(web, base, lfw_tune, before_tune["tune_bcubed_f"])
    out["per_name_webfaces"] = per_name_section(web, base)
    out["video"] = video_section(Path(args.video), Path(args.video_labels), params, args.cache_dir, chosen)
    out["crawl"] = crawl_section(lfw, base, chosen)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
