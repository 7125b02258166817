"""Parameters: `params.yaml` is the one place a user tunes the pipeline; this module is the one place that
knows every key, its default, its type and its valid range.

DVC tracks the keys each stage names in `dvc.yaml`; `params_hash(params, stage)` hashes exactly those values,
so a row's lineage says which parameter values produced it. Unknown keys are refused (a typo would otherwise
silently fall back to a default), missing keys take their default with a warning.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """params.yaml is missing, unreadable, or holds a value that is not allowed."""


@dataclass(frozen=True)
class Spec:
    default: Any
    types: tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    help: str = ""
    perf: bool = False  # only changes speed, never results: left out of lineage params hashes


def _in(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo <= v <= hi


def _pos(v: Any) -> bool:
    return v > 0


def _nonneg(v: Any) -> bool:
    return v >= 0


def _one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


_DEVICE = _one_of("auto", "cpu", "cuda")
_CLUSTER = _one_of("knn_average", "agglomerative", "chinese_whispers", "dbscan", "hdbscan", "leiden")

NUM = (int, float)

#: Every parameter, by dotted key. Lists of sources are checked by `_check_sources`.
SPEC: dict[str, Spec] = {
    "sources.folders": Spec([], (list,), help="trees <name>/<images>; the folder name is the queried name"),
    "sources.videos": Spec([], (list,), help="videos whose sampled frames join the collection"),
    "ingest.max_pixels": Spec(50_000_000, (int,), _pos, "> 0", "images with more pixels are refused (bombs)"),
    "ingest.min_side": Spec(32, (int,), _pos, "> 0", "images with a shorter side are refused"),
    "ingest.max_bytes": Spec(40_000_000, (int,), _pos, "> 0", "larger files are refused"),
    "ingest.video_fps": Spec(1.0, NUM, _pos, "> 0", "frames sampled per second of video"),
    "ingest.max_frames_per_video": Spec(600, (int,), _pos, "> 0", "cap on sampled frames per video"),
    "ingest.near_dup_bits": Spec(4, (int,), _in(0, 32), "0..32", "phash distance marking near duplicates"),
    "detect.detector": Spec("mtcnn", (str,), *_one_of("mtcnn"), "face detector"),
    "detect.device": Spec("auto", (str,), *_DEVICE, "auto uses a GPU when one is present", perf=True),
    "detect.batch_size": Spec(16, (int,), _pos, "> 0", "images per detector batch", perf=True),
    "detect.min_score": Spec(0.9, NUM, _in(0, 1), "0..1", "faces with a lower detector score are filtered"),
    "detect.min_face_px": Spec(40, NUM, _nonneg, ">= 0", "faces whose box is smaller are filtered"),
    "detect.min_blur": Spec(6.0, NUM, _nonneg, ">= 0", "faces whose crop is blurrier are filtered"),
    "detect.max_faces_per_image": Spec(20, (int,), _pos, "> 0", "more faces than this: keep the best"),
    "detect.crop_size": Spec(150, (int,), _in(32, 1024), "32..1024", "aligned crop side in pixels"),
    "detect.align_template": Spec("dlib150", (str,), *_one_of("dlib150", "arcface112"), "crop geometry"),
    "detect.mtcnn_min_face_size": Spec(20, (int,), _pos, "> 0", "MTCNN's smallest searched face"),
    "detect.mtcnn_thresholds": Spec([0.6, 0.7, 0.7], (list,), lambda v: len(v) == 3, "3 numbers", "P/R/O-Net"),
    "embed.model": Spec("dlib-resnet", (str,), None, "", "recognizer name (see `facedata models`)"),
    "embed.device": Spec("auto", (str,), *_DEVICE, "", perf=True),
    "embed.batch_size": Spec(64, (int,), _pos, "> 0", "faces per embedding batch", perf=True),
    # --- cluster (issue 4); distances are L2 between unit vectors (cosine = 1 - d^2/2) ---
    "cluster.method": Spec("knn_average", (str,), *_CLUSTER, "clustering algorithm (baselines for comparison)"),
    "cluster.threshold": Spec(
        0.32,
        NUM,
        _in(0, 2),
        "0..2",
        "knn_average: RMS distance at which clusters stop merging; baselines: their cut",
    ),
    "cluster.k": Spec(20, (int,), _in(1, 1000), "1..1000", "neighbours per face in the candidate kNN graph"),
    "cluster.jaccard_k": Spec(
        10, (int,), _nonneg, ">= 0", "knn_average: neighbours compared for the shared-neighbour bonus (0: off)"
    ),
    "cluster.jaccard_weight": Spec(
        0.02,
        NUM,
        _in(0, 1),
        "0..1",
        "knn_average: weight of the shared-neighbour overlap added to a pair's cosine",
    ),
    "cluster.relax": Spec(
        0.01, NUM, _in(0, 1), "0..1", "knn_average: cosine threshold eased by this for large clusters"
    ),
    "cluster.refine": Spec(True, (bool,), None, "", "knn_average: eject outliers, let stragglers join"),
    "cluster.join_threshold": Spec(0.32, NUM, _in(0, 2), "0..2", "refine: max distance to a cluster's centre"),
    "cluster.join_max_size": Spec(
        1, (int,), _pos, "> 0", "refine: clusters up to this size may join a bigger one"
    ),
    "cluster.join_margin": Spec(0.02, NUM, _in(0, 2), "0..2", "refine/incremental: lead over the next cluster"),
    "cluster.eject_threshold": Spec(0.62, NUM, _in(0, 2), "0..2", "refine: faces farther from the centre leave"),
    "cluster.cannot_link": Spec(True, (bool,), None, "", "two faces of one image are never one cluster"),
    "cluster.must_link_tracks": Spec(True, (bool,), None, "", "faces tracked across video frames start together"),
    "cluster.track_min_iou": Spec(0.3, NUM, _in(0, 1), "0..1", "box overlap linking faces of adjacent frames"),
    "cluster.track_max_distance": Spec(0.55, NUM, _in(0, 2), "0..2", "track links need faces this close"),
    "cluster.min_samples": Spec(1, (int,), _pos, "> 0", "dbscan / hdbscan min_samples"),
    "cluster.min_cluster_size": Spec(2, (int,), _in(2, 10**9), ">= 2", "hdbscan min_cluster_size"),
    "cluster.resolution": Spec(1.0, NUM, _pos, "> 0", "leiden resolution"),
    "cluster.exact_knn_max": Spec(50_000, (int,), _nonneg, ">= 0", "exact kNN up to this many faces, else IVF"),
    "cluster.nprobe": Spec(16, (int,), _pos, "> 0", "IVF cells searched per face (recall vs speed)"),
    "cluster.incremental": Spec(True, (bool,), None, "", "add new faces to the last clustering when possible"),
    "cluster.incremental_max_new_fraction": Spec(
        0.5, NUM, _nonneg, ">= 0", "more new faces than this share of old ones: full recluster"
    ),
    "cluster.absorb_threshold": Spec(
        0.37, NUM, _in(0, 2), "0..2", "a name's image joins its dominant cluster if a face is this near its centre"
    ),
    "cluster.min_confidence": Spec(0.3, NUM, _in(0, 1), "0..1", "dominant clusters below this are 'weak'"),
    "validate.min_faces_per_identity": Spec(2, (int,), _nonneg, ">= 0", "identities with fewer fail"),
    "validate.min_dominant_confidence": Spec(0.3, NUM, _in(0, 1), "0..1", "gate on identity confidence"),
    "validate.max_duplicate_fraction": Spec(0.05, NUM, _in(0, 1), "0..1", "near-duplicate images allowed"),
    "validate.min_detection_rate": Spec(0.5, NUM, _in(0, 1), "0..1", "share of images with a face"),
    "validate.min_purity": Spec(0.9, NUM, _in(0, 1), "0..1", "when labels exist"),
    "validate.min_bcubed_f": Spec(0.8, NUM, _in(0, 1), "0..1", "when labels exist"),
    "validate.max_failing_examples": Spec(5, (int,), _pos, "> 0", "example rows shown per failed check"),
    "export.splits": Spec({"train": 0.8, "val": 0.1, "test": 0.1}, (dict,), None, "", "fractions per split"),
    "export.min_faces_per_identity": Spec(2, (int,), _nonneg, ">= 0", "smaller identities are left out"),
    "export.seed": Spec(0, (int,), None, "", "split assignment seed"),
}


def _get(d: dict, dotted: str) -> tuple[bool, Any]:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in SPEC:
            out.extend(_leaves(v, key + "."))
        else:
            out.append(key)
    return out


def validate(params: dict) -> dict:
    """Fill defaults and check every value; returns a new dict. Raises ParamsError naming the bad key."""
    params = copy.deepcopy(params or {})
    unknown = [k for k in _leaves(params) if k not in SPEC]
    if unknown:
        raise ParamsError(f"unknown parameter(s) {', '.join(unknown)}; known keys: see `facedata params`")
    missing = []
    for key, spec in SPEC.items():
        present, value = _get(params, key)
        if not present:
            missing.append(key)
            _set(params, key, copy.deepcopy(spec.default))
            continue
        if isinstance(value, bool) and bool not in spec.types:
            raise ParamsError(f"{key} must be {_type_names(spec)}, got {value!r}")
        if not isinstance(value, spec.types):
            raise ParamsError(f"{key} must be {_type_names(spec)}, got {value!r}")
        if spec.check is not None and not spec.check(value):
            raise ParamsError(f"{key} must be {spec.rule}, got {value!r}")
    if missing:
        warnings.warn(f"params.yaml has no {', '.join(missing)}: using the defaults", stacklevel=2)
    _check_sources(params)
    splits = params["export"]["splits"]
    if (
        not splits
        or any(not isinstance(v, NUM) or v < 0 for v in splits.values())
        or abs(sum(splits.values()) - 1.0) > 1e-6
    ):
        raise ParamsError(f"export.splits must be non-negative fractions summing to 1, got {splits!r}")
    return params


def _type_names(spec: Spec) -> str:
    return " or ".join(t.__name__ for t in spec.types)


def _check_sources(params: dict) -> None:
    allowed_folder = {"root", "names", "max_per_name", "labeled", "query_names"}
    for i, src in enumerate(params["sources"]["folders"]):
        where = f"sources.folders[{i}]"
        if not isinstance(src, dict) or "root" not in src:
            raise ParamsError(f"{where} needs a `root` folder")
        extra = set(src) - allowed_folder
        if extra:
            raise ParamsError(f"{where} has unknown key(s) {sorted(extra)}; allowed: {sorted(allowed_folder)}")
        if "names" in src and not isinstance(src["names"], list):
            raise ParamsError(f"{where}.names must be a list of sub-folder names")
        if "max_per_name" in src and (not isinstance(src["max_per_name"], int) or src["max_per_name"] <= 0):
            raise ParamsError(f"{where}.max_per_name must be a positive integer")
    allowed_video = {"path", "query_name", "fps"}
    for i, src in enumerate(params["sources"]["videos"]):
        where = f"sources.videos[{i}]"
        if not isinstance(src, dict) or "path" not in src:
            raise ParamsError(f"{where} needs a `path`")
        extra = set(src) - allowed_video
        if extra:
            raise ParamsError(f"{where} has unknown key(s) {sorted(extra)}; allowed: {sorted(allowed_video)}")


def load(path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run facedata inside a project (or `facedata init DIR` to make one)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return validate(raw)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def params_hash(params: dict, keys: list[str]) -> str:
    """Hash of the named parameter sections/keys (as listed for a stage in dvc.yaml)."""
    picked = {}
    for key in sorted(keys):
        present, value = _get(params, key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not getattr(SPEC.get(f"{key}.{k}"), "perf", False)}
        picked[key] = value if present else None
    return hashlib.sha256(canonical_json(picked).encode()).hexdigest()[:16]


def describe() -> list[tuple[str, Any, str, str]]:
    """(key, default, rule, help) for every parameter, for `facedata params`."""
    return [(k, s.default, s.rule, s.help) for k, s in SPEC.items()]
