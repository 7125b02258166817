"""Evaluation cache projects: a labelled folder or video run through the real ingest, detect and embed stages
in a project of its own under the user cache, keyed by the source, so a second evaluation with other
clustering params re-detects and re-embeds nothing. What is measured on them is library code
(`facedata.cluster.evaluate`); this module only runs the stages."""

from __future__ import annotations

import copy
import hashlib
import os
import time
from pathlib import Path

import yaml

from facedata import atomic
from facedata.cluster.evaluate import EvaluationError, LabeledFaces, LabeledSet, load, load_video, read_face_labels

PREP_STAGES = ("ingest", "detect", "embed")


def default_cache_dir() -> Path:
    base = os.environ.get("FACEDATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "facedata"
    )
    return Path(base) / "evaluate"


def cache_project_for(source: Path, cache_dir: Path | None) -> Path:
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return (cache_dir or default_cache_dir()) / f"{source.resolve().name}-{key}"


def prepare_project(source: Path, sources: dict, params: dict, cache_dir) -> Path:
    """The cache project for `source` with `sources` as its only sources, ingested, detected and embedded."""
    from facedata.pipeline.runner import run_stage

    root = cache_project_for(source, Path(cache_dir) if cache_dir else None)
    root.mkdir(parents=True, exist_ok=True)
    p = copy.deepcopy(params)
    p["sources"] = {"folders": [], "videos": [], **sources}
    atomic.write_text(root / "params.yaml", yaml.safe_dump(p, sort_keys=False))
    for stage in PREP_STAGES:
        code = run_stage(stage, root)
        if code != 0:
            raise EvaluationError(f"stage {stage} failed in the evaluation cache {root} (exit {code}); see above")
    return root


def prepare(
    labeled_dir: str | os.PathLike, params: dict, cache_dir: str | os.PathLike | None = None
) -> LabeledSet:
    """Run ingest / detect / embed with `params` on the folder (reusing the cache) and load the results."""
    t0 = time.perf_counter()
    labeled_dir = Path(labeled_dir).resolve()
    if not labeled_dir.is_dir():
        raise EvaluationError(f"labelled folder {labeled_dir} does not exist")
    if not any(p.is_dir() for p in labeled_dir.iterdir()):
        raise EvaluationError(f"{labeled_dir} has no <identity>/ sub-folders; expected <identity>/<images>")
    root = prepare_project(
        labeled_dir, {"folders": [{"root": str(labeled_dir), "labeled": True}]}, params, cache_dir
    )
    ls = load(root, params["embed"]["model"], labeled_dir)
    ls.seconds_prepare = time.perf_counter() - t0
    return ls


def prepare_video(
    video: str | os.PathLike,
    labels_csv: str | os.PathLike,
    params: dict,
    cache_dir: str | os.PathLike | None = None,
) -> LabeledFaces:
    """Run ingest / detect / embed with `params` on the video's sampled frames (reusing the cache), and match
    each labelled box to the usable face of its frame that overlaps it most (IoU >= 0.5)."""
    t0 = time.perf_counter()
    video = Path(video).resolve()
    if not video.is_file():
        raise EvaluationError(f"video {video} does not exist")
    labelled = read_face_labels(labels_csv)
    root = prepare_project(video, {"videos": [{"path": str(video)}]}, params, cache_dir)
    lf = load_video(root, labelled, params["embed"]["model"])
    lf.seconds_prepare = time.perf_counter() - t0
    return lf
