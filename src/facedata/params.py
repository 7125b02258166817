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
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facedata.errors import ParamsError


class DefaultsUsed(UserWarning):
    """params.yaml lacks some keys, which take their defaults (said once per process: `with_defaults`)."""


_WARNED: set[str] = set()


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

#: `execution.dask_address`: '' (no cluster), local:N (N worker processes here), or a scheduler's address.
DASK_ADDRESS = re.compile(r"|local:[1-9]\d*|(tcp|tls|ucx|ws|wss)://\S+")


def _embed_model(v: Any) -> bool:
    return v in ("dlib-resnet", "facenet-vggface2") or (v.startswith("onnx:") and len(v) > 5)


#: Landmark sources for `embed.align_views` (see facedata.faces.views).
ALIGN_VIEW_SOURCES = ("retinaface", "yunet", "mtcnn", "dlib5")

_CLUSTER = _one_of("knn_average", "agglomerative", "chinese_whispers", "dbscan", "hdbscan", "leiden")

NUM = (int, float)


def _distractor_folders(v: Any) -> bool:
    return all(
        isinstance(d, dict) and isinstance(d.get("root"), str) and set(d) <= {"root", "max_images"} for d in v
    )


_TRAIN_SPEC: dict[str, Spec] = {
    "train.mode": Spec(
        "head",
        (str,),
        *_one_of("head", "finetune", "centroid"),
        "head: margin head on the frozen embeddings (CPU, minutes); finetune: the dlib ResNet end to end on the "
        "crops (meant for a GPU); centroid: no training, each identity's mean embedding",
    ),
    "train.loss": Spec("arcface", (str,), *_one_of("cosface", "arcface"), "margin loss"),
    "train.scale": Spec(32.0, NUM, _pos, "> 0", "logit scale s of the margin loss"),
    "train.margin": Spec(0.1, NUM, _in(0, 1), "0..1", "cosface: cosine margin; arcface: angular margin (rad)"),
    "train.projection": Spec(
        "mlp",
        (str,),
        *_one_of("none", "mlp"),
        "none: class prototypes in the embedding space; mlp: a residual MLP",
    ),
    "train.hidden_dim": Spec(256, (int,), _pos, "> 0", "width of the projection MLP"),
    "train.epochs": Spec(15, (int,), _pos, "> 0", "passes over the train split"),
    "train.batch_size": Spec(64, (int,), _pos, "> 0", "faces per step"),
    "train.lr": Spec(0.005, NUM, _pos, "> 0", "SGD (momentum 0.9) learning rate of the head, cosine-decayed"),
    "train.backbone_lr": Spec(0.001, NUM, _pos, "> 0", "finetune: learning rate of the backbone"),
    "train.weight_decay": Spec(5e-4, NUM, _nonneg, ">= 0", "L2 penalty on the weights"),
    "train.augment": Spec(True, (bool,), None, "", "finetune: random mirror, shift, scale, brightness, contrast"),
    "train.weight_reviewed": Spec(1.0, NUM, _nonneg, ">= 0", "sample weight of faces a reviewer accepted"),
    "train.weight_unreviewed": Spec(1.0, NUM, _nonneg, ">= 0", "sample weight of faces nobody reviewed..."),
    "train.confidence_weighting": Spec(
        True, (bool,), None, "", "...times their clustering confidence (auto_confidence) when the dataset has it"
    ),
    "train.negative_weight": Spec(
        1.0,
        NUM,
        _nonneg,
        ">= 0",
        "weight of the unknown-class loss on half of the train.distractors faces (0: train on the cast alone)",
    ),
    "train.far": Spec(
        0.01, NUM, _in(1e-6, 0.5), "1e-6..0.5", "the model's 'unknown' threshold lets this share of strangers in"
    ),
    "train.distractors": Spec(
        [],
        (list,),
        _distractor_folders,
        "a list of {root, max_images}",
        "folders <person>/<photos> of people NOT in the cast: half (by person) trains the unknown class, half "
        "measures open-set rejection and sets the threshold",
    ),
    "train.eval_pairs": Spec(
        "", (str,), None, "", "finetune: LFW-style pairs file to verify the new embedding on"
    ),
    "train.eval_pairs_limit": Spec(0, (int,), _nonneg, ">= 0", "use the first N pairs (0: all)"),
    "train.seed": Spec(0, (int,), None, "", "initialisation, data order and augmentation seed"),
    "train.checkpoint_every": Spec(
        1, (int,), _pos, "> 0", "epochs between checkpoints (resume points)", perf=True
    ),
    "train.device": Spec("auto", (str,), *_DEVICE, "auto uses a GPU when one is present", perf=True),
    "train.threads": Spec(
        1, (int,), _pos, "> 0", "torch CPU threads (weights are identical at equal threads)", perf=True
    ),
    "identify.gallery_threshold": Spec(
        0.94,
        NUM,
        _in(-1, 1),
        "-1..1",
        "`facedata identify --gallery`: cosine similarity to an identity's mean embedding needed to name a face",
    ),
}

_VIDEO_SPEC: dict[str, Spec] = {
    "video.fps": Spec(1.0, NUM, _pos, "> 0", "frames analysed per second of video (speed vs recall)"),
    "video.detector": Spec(
        "retinaface", (str,), *_one_of("retinaface", "yunet", "mtcnn"), "face detector for video frames"
    ),
    "video.max_side": Spec(960, (int,), _nonneg, ">= 0", "frames are shrunk to this long side for detection"),
    "video.min_score": Spec(0.7, NUM, _in(0, 1), "0..1", "weaker detections are not tracked"),
    "video.min_face_px": Spec(20, NUM, _nonneg, ">= 0", "smaller faces are not tracked"),
    "video.max_faces_per_frame": Spec(30, (int,), _pos, "> 0", "more faces in a frame: the best by score"),
    "video.scene_threshold": Spec(
        0.35, NUM, _in(0, 1), "0..1", "colour-histogram jump that marks a shot cut (as ingest); 0: no cuts"
    ),
    "video.scene_fps": Spec(5.0, NUM, _pos, "> 0", "frames per second analysed for cuts"),
    "video.track_min_iou": Spec(0.2, NUM, _in(0, 1), "0..1", "box overlap linking a face to a track"),
    "video.link_similarity": Spec(
        0.85, NUM, _in(-1, 1), "-1..1", "cosine a face needs (with the overlap) to continue a track"
    ),
    "video.rejoin_similarity": Spec(
        0.93, NUM, _in(-1, 1), "-1..1", "cosine that continues a track without overlap (occlusion, fast move)"
    ),
    "video.cut_similarity": Spec(
        0.95, NUM, _in(-1, 1), "-1..1", "cosine that continues a track across a shot cut (a clear match)"
    ),
    "video.sure_iou": Spec(
        0.5, NUM, _in(0, 1), "0..1", "a one-to-one overlap this large continues a track without an embedding"
    ),
    "video.verify_s": Spec(2.0, NUM, _nonneg, ">= 0", "...but a track is checked by an embedding this often"),
    "video.embed_per_track": Spec(5, (int,), _nonneg, ">= 0", "best faces of a track embedded for its identity"),
    "video.max_gap_s": Spec(1.5, NUM, _nonneg, ">= 0", "a track survives this long without a detection"),
    "video.gallery_threshold": Spec(
        0.925,
        NUM,
        _in(-1, 1),
        "-1..1",
        "--gallery: cosine of a track's aggregate vector to an identity's mean embedding needed to name it",
    ),
    "video.confidence_slope": Spec(
        100.0, NUM, _pos, "> 0", "confidence = 1 / (1 + exp(-slope * (cosine - threshold)))"
    ),
    "video.merge_gap_s": Spec(2.0, NUM, _nonneg, ">= 0", "one identity's tracks this close make one segment"),
    "video.min_segment_s": Spec(0.5, NUM, _nonneg, ">= 0", "shorter segments are dropped"),
    "video.min_confidence": Spec(0.5, NUM, _in(0, 1), "0..1", "less confident segments are dropped"),
    "video.max_seconds": Spec(0.0, NUM, _nonneg, ">= 0", "index only the first N seconds (0: all)"),
    "video.name_frames": Spec(
        8, (int,), _pos, "> 0", "naming a person found in video (`facedata review`) adds this many best frames"
    ),
    "video.name_spacing_s": Spec(
        1.0,
        NUM,
        _nonneg,
        ">= 0",
        "...at least this far apart within one track (near-identical frames teach little)",
    ),
    "video.batch_size": Spec(8, (int,), _pos, "> 0", "frames per detector batch", perf=True),
}

#: Every parameter, by dotted key. Lists of sources are checked by `_check_sources`.
SPEC: dict[str, Spec] = {
    # --- sources / ingest / crawl (lists of sources are checked by facedata.collect.config) ---
    "sources.cast": Spec([], (list,), help="names searched on the web sources: 'Name' or {name, wikidata: Q..}"),
    "sources.folders": Spec([], (list,), help="trees <name>/<images>; the folder name is the queried name"),
    "sources.videos": Spec([], (list,), help="videos whose sampled frames join the collection"),
    "sources.url_lists": Spec([], (list,), help="files of image URLs: one per line, or CSV url,name"),
    "sources.wikimedia": Spec([], (list,), help="Wikimedia Commons search (+ Wikidata P18) per cast name"),
    "sources.web_pages": Spec([], (list,), help="JS-rendered image-search pages read with headless Chromium"),
    "ingest.max_pixels": Spec(50_000_000, (int,), _pos, "> 0", "images with more pixels are refused (bombs)"),
    "ingest.min_side": Spec(32, (int,), _pos, "> 0", "images with a shorter side are refused"),
    "ingest.max_bytes": Spec(40_000_000, (int,), _pos, "> 0", "larger files/downloads are refused"),
    "ingest.near_dup_bits": Spec(4, (int,), _in(0, 32), "0..32", "phash distance marking near duplicates"),
    "ingest.video_fps": Spec(1.0, NUM, _pos, "> 0", "frames sampled per second of video"),
    "ingest.max_frames_per_video": Spec(600, (int,), _pos, "> 0", "cap on candidate frames per video"),
    "ingest.video_scene_threshold": Spec(
        0.35, NUM, _in(0, 1), "0..1", "colour-histogram jump that marks a cut (its frame is sampled); 0: off"
    ),
    "ingest.video_scene_fps": Spec(5.0, NUM, _pos, "> 0", "frames per second analysed for cuts"),
    "ingest.video_faces_only": Spec(True, (bool,), None, "", "keep only frames where YuNet finds a face"),
    "ingest.video_face_min_score": Spec(0.7, NUM, _in(0, 1), "0..1", "YuNet score for a frame's face"),
    "ingest.video_min_face_px": Spec(24, NUM, _nonneg, ">= 0", "smaller faces do not count"),
    "ingest.restore_from_web": Spec(
        True,
        (bool,),
        None,
        "",
        "fetch a stored web image again when its copy went missing or was damaged (same bytes only)",
        perf=True,
    ),
    "ingest.video_dup_bits": Spec(
        5, (int,), _in(-1, 64), "-1..64", "drop frames this close (phash bits) to a kept one; -1: keep all"
    ),
    "crawl.contact": Spec(
        "",
        (str,),
        None,
        "an email or http(s) URL",
        "who runs the crawl (email or URL), sent in the User-Agent; web sources refuse to run without it",
    ),
    "crawl.user_agent": Spec(
        "",
        (str,),
        None,
        "empty, or a string holding crawl.contact",
        "empty: facedata/VERSION (CONTACT) python-requests/VERSION; its first token is matched against robots.txt",
    ),
    "crawl.exclude_restricted": Spec(
        True, (bool,), None, "", "skip Commons files tagged with personality-rights restrictions (status rows)"
    ),
    "crawl.allow_hosts": Spec(
        [], (list,), None, "", "HOST[:PORT] allowed even on private/loopback addresses (intranet archives)"
    ),
    "crawl.respect_robots": Spec(True, (bool,), None, "", "honour robots.txt (turn off only for your own hosts)"),
    "crawl.max_concurrency": Spec(8, (int,), _in(1, 256), "1..256", "requests in flight, all hosts", perf=True),
    "crawl.per_host_concurrency": Spec(2, (int,), _in(1, 64), "1..64", "requests in flight per host"),
    "crawl.per_host_interval_s": Spec(
        0.5, NUM, _nonneg, ">= 0", "min seconds between requests to one host (raised to its Crawl-delay)"
    ),
    "crawl.connect_timeout_s": Spec(5.0, NUM, _pos, "> 0", "TCP/TLS connect timeout"),
    "crawl.read_timeout_s": Spec(15.0, NUM, _pos, "> 0", "longest wait for the next bytes"),
    "crawl.total_timeout_s": Spec(60.0, NUM, _pos, "> 0", "longest time for one attempt, redirects included"),
    "crawl.max_retries": Spec(2, (int,), _in(0, 10), "0..10", "retries of timeouts, resets, 408/429/5xx"),
    "crawl.backoff_base_s": Spec(1.0, NUM, _nonneg, ">= 0", "first retry waits ~this; doubles each time"),
    "crawl.backoff_max_s": Spec(30.0, NUM, _nonneg, ">= 0", "cap on one backoff wait"),
    "crawl.max_retry_after_s": Spec(120.0, NUM, _nonneg, ">= 0", "longer Retry-After: give up until next run"),
    "crawl.max_redirects": Spec(5, (int,), _in(0, 20), "0..20", "redirects followed per URL"),
    "crawl.max_per_name": Spec(
        200, (int,), _nonneg, ">= 0", "new URLs fetched per queried name per run; 0: no cap"
    ),
    "crawl.max_per_run": Spec(5000, (int,), _nonneg, ">= 0", "new URLs fetched per run; 0: no cap"),
    "crawl.checkpoint_seconds": Spec(
        10.0, NUM, _pos, "> 0", "manifests saved this often during a crawl", perf=True
    ),
    "crawl.browser_binary": Spec("/usr/bin/chromium", (str,), None, "", "Chromium for web_pages sources"),
    "crawl.chromedriver": Spec("/usr/bin/chromedriver", (str,), None, "", "its chromedriver"),
    "crawl.browser_args": Spec([], (list,), None, "", "extra Chromium flags (e.g. --host-resolver-rules=...)"),
    "crawl.page_timeout_s": Spec(30.0, NUM, _pos, "> 0", "page load + first results wait, per page"),
    # detect: which detector, what counts as a usable face, how crops are made
    "detect.detector": Spec("retinaface", (str,), *_one_of("retinaface", "yunet", "mtcnn"), "face detector"),
    "detect.device": Spec("auto", (str,), *_DEVICE, "auto uses a GPU when one is present", perf=True),
    "detect.workers": Spec(0, (int,), _nonneg, ">= 0", "worker processes; 0 = one per core", perf=True),
    "detect.batch_size": Spec(
        16, (int,), _pos, "> 0", "images per work unit (results never depend on it)", perf=True
    ),
    "detect.max_side": Spec(1920, (int,), _nonneg, ">= 0", "larger images are shrunk for detection (0: never)"),
    "detect.candidate_score": Spec(0.5, NUM, _in(0, 1), "0..1", "detector floor: weaker candidates are no faces"),
    "detect.min_score": Spec(0.9, NUM, _in(0, 1), "0..1", "faces with a lower detector score are filtered"),
    "detect.min_face_px": Spec(20, NUM, _nonneg, ">= 0", "faces whose box is smaller are filtered"),
    "detect.max_outside": Spec(0.25, NUM, _in(0, 1), "0..1", "faces with more of the box off-image are filtered"),
    "detect.min_blur": Spec(6.0, NUM, _nonneg, ">= 0", "faces whose crop is blurrier are filtered"),
    "detect.max_abs_yaw": Spec(75.0, NUM, _in(0, 180), "0..180", "faces turned further are filtered (deg)"),
    "detect.max_abs_pitch": Spec(90.0, NUM, _in(0, 180), "0..180", "faces tilted further are filtered (deg)"),
    "detect.max_faces_per_image": Spec(20, (int,), _pos, "> 0", "more faces than this: keep the best"),
    "detect.crop_size": Spec(150, (int,), _in(32, 1024), "32..1024", "aligned crop side in pixels"),
    "detect.align_template": Spec(
        "dlib150", (str,), *_one_of("dlib150", "arcface112", "facenet160"), "crop geometry (the recognizer's)"
    ),
    "detect.mtcnn_min_face_size": Spec(20, (int,), _pos, "> 0", "MTCNN's smallest searched face"),
    "detect.mtcnn_thresholds": Spec([0.6, 0.7, 0.7], (list,), lambda v: len(v) == 3, "3 numbers", "P/R/O-Net"),
    # embed: which recognizer, and how
    "embed.model": Spec(
        "dlib-resnet", (str,), _embed_model, "dlib-resnet, facenet-vggface2 or onnx:<path>", "recognizer"
    ),
    "embed.flip": Spec(True, (bool,), None, "", "also embed the mirrored crop and average (better accuracy)"),
    "embed.onnx": Spec({}, (dict,), None, "", "input spec of an onnx:<path> model (see docs/faces.md)"),
    "embed.align_views": Spec(
        [],
        (list,),
        lambda v: all(s in ALIGN_VIEW_SOURCES for s in v) and len(set(v)) == len(v),
        "distinct items of " + ", ".join(ALIGN_VIEW_SOURCES),
        "extra landmark sources; each face is also embedded aligned to theirs, vectors averaged (slower, better)",
    ),
    "embed.jitter": Spec(
        0,
        (int,),
        _in(0, 32),
        "0..32",
        "also embed N slightly rotated/scaled/shifted alignments of each face, vectors averaged (slower, better)",
    ),
    "embed.device": Spec("auto", (str,), *_DEVICE, "", perf=True),
    "embed.workers": Spec(0, (int,), _nonneg, ">= 0", "worker processes; 0 = one per core", perf=True),
    "embed.batch_size": Spec(
        64, (int,), _pos, "> 0", "faces per work unit (results never depend on it)", perf=True
    ),
    # --- cluster; distances are L2 between unit vectors (cosine = 1 - d^2/2) ---
    "cluster.method": Spec("knn_average", (str,), *_CLUSTER, "clustering algorithm (baselines for comparison)"),
    "cluster.threshold": Spec(
        0.31,
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
    "cluster.link": Spec(
        True, (bool,), None, "", "knn_average: second level linking the clusters of one person (see docs)"
    ),
    "cluster.link_k": Spec(20, (int,), _in(1, 1000), "1..1000", "link: each face's nearest faces that vote"),
    "cluster.link_vote": Spec(
        0.7, NUM, _in(0, 1), "0..1", "link: share of B's outside neighbours (beyond chance) that must be in A"
    ),
    "cluster.link_gap": Spec(
        0.2, NUM, _in(0, 2), "0..2", "link: centre distance allowed between two parts of one person"
    ),
    "cluster.link_z": Spec(
        1.4, NUM, _in(0, 10), "0..10", "link: plus this many standard errors of the centres (from their spread)"
    ),
    "cluster.link_open_share": Spec(
        0.1, NUM, _in(0, 1), "0..1", "link: runs with at most this share of faces in small clusters are open"
    ),
    "cluster.link_reach": Spec(
        0.44, NUM, _in(0, 2), "0..2", "link, open runs: small clusters join the cluster they vote for this near"
    ),
    "cluster.refine": Spec(True, (bool,), None, "", "knn_average: eject outliers, let stragglers join"),
    "cluster.join_threshold": Spec(0.31, NUM, _in(0, 2), "0..2", "refine: max distance to a cluster's centre"),
    "cluster.join_max_size": Spec(
        1, (int,), _pos, "> 0", "refine: clusters up to this size may join a bigger one"
    ),
    "cluster.join_margin": Spec(0.02, NUM, _in(0, 2), "0..2", "refine/incremental: lead over the next cluster"),
    "cluster.eject_threshold": Spec(0.62, NUM, _in(0, 2), "0..2", "refine: faces farther from the centre leave"),
    "cluster.cannot_link": Spec(True, (bool,), None, "", "two faces of one image are never one cluster"),
    "cluster.must_link_tracks": Spec(True, (bool,), None, "", "faces tracked across video frames start together"),
    "cluster.track_min_iou": Spec(0.3, NUM, _in(0, 1), "0..1", "box overlap linking faces of adjacent frames"),
    "cluster.track_max_distance": Spec(0.4, NUM, _in(0, 2), "0..2", "track links need faces this close"),
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
        0.36, NUM, _in(0, 2), "0..2", "a name's image joins its dominant cluster if a face is this near its centre"
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
    "models.dir": Spec(
        "",
        (str,),
        None,
        "",
        "folder searched first for model weights, relative to params.yaml "
        "($FACEDATA_MODELS_DIR wins); empty: user cache, packages, download",
    ),
    # --- 3D faces: stage reconstruct3d, `facedata face3d`, `facedata evaluate 3d` ---------------------
    "recon3d.weights": Spec(
        "", (str,), None, "", "fine-tuned regressor from `facedata train 3d` ('' = 3DDFA_V2 mb05)"
    ),
    "recon3d.device": Spec("auto", (str,), *_DEVICE, "", perf=True),
    "recon3d.backend": Spec(
        "auto",
        (str,),
        *_one_of("auto", "onnxruntime", "torch"),
        "auto: onnxruntime on CPU, torch on GPU",
        perf=True,
    ),
    "recon3d.batch_size": Spec(64, (int,), _pos, "> 0", "faces per regressor batch", perf=True),
    "recon3d.box_shift": Spec(0.14, NUM, _in(-1, 1), "-1..1", "first crop: centre moved down by this x box size"),
    "recon3d.box_scale": Spec(1.58, NUM, _in(0.5, 4), "0.5..4", "first crop: side = this x box size"),
    "recon3d.refine_passes": Spec(1, (int,), _in(0, 5), "0..5", "re-crops from the previous pass's landmarks"),
    "recon3d.flip": Spec(True, (bool,), None, "", "average with the mirrored crop in the last pass"),
    "recon3d.deroll": Spec(True, (bool,), None, "", "turn refined crops so the face is upright"),
    "recon3d.min_face_px": Spec(32, NUM, _nonneg, ">= 0", "smaller boxes get status tiny_face"),
    "recon3d.max_outside_fraction": Spec(0.05, NUM, _in(0, 1), "0..1", "more landmarks outside: cut_by_border"),
    "recon3d.max_yaw": Spec(80.0, NUM, _in(0, 90), "0..90", "beyond: extreme_pose, no single-view mesh"),
    "recon3d.max_pitch": Spec(60.0, NUM, _in(0, 90), "0..90", "beyond: extreme_pose, no single-view mesh"),
    "recon3d.fit_iterations": Spec(5, (int,), _in(1, 50), "1..50", "dense fit: camera/shape alternations"),
    "recon3d.lambda_shape": Spec(0.5, NUM, _pos, "> 0", "dense fit: identity shape regularisation"),
    "recon3d.lambda_expression": Spec(1.0, NUM, _pos, "> 0", "dense fit: expression regularisation"),
    "recon3d.max_fit_error": Spec(4.0, NUM, _pos, "> 0", "mesh written only under this landmark error (% face)"),
    "recon3d.texture_size": Spec(256, (int,), _in(64, 2048), "64..2048", "texture map side in pixels"),
    "recon3d.texture_sharpness": Spec(4.0, NUM, _pos, "> 0", "view weights cos(angle)^this when merging"),
    "recon3d.gaze": Spec(True, (bool,), None, "", "estimate gaze (MediaPipe iris + head pose)"),
    "recon3d.glb": Spec(True, (bool,), None, "", "also write mesh.glb (besides OBJ+MTL+PNG)"),
    "recon3d.fuse": Spec(True, (bool,), None, "", "fuse each identity's faces into one mesh"),
    "recon3d.fuse_min_views": Spec(
        2, (int,), _in(2, 100), "2..100", "identities with fewer usable views: no fusion"
    ),
    "recon3d.fuse_max_views": Spec(5, (int,), _in(2, 100), "2..100", "views per fused mesh, spread over yaw"),
    "recon3d.renders": Spec(6, (int,), _nonneg, ">= 0", "faces rendered into the run report", perf=True),
    "recon3d.turntable_frames": Spec(24, (int,), _nonneg, ">= 0", "turntable frames (0 = none)", perf=True),
    # --- `facedata train 3d`: fine-tuning the regressor on pseudo-labels from the dense fits -------------------
    "train3d.steps": Spec(300, (int,), _pos, "> 0", "optimiser steps"),
    "train3d.batch_size": Spec(32, (int,), _pos, "> 0", "faces per step"),
    "train3d.lr": Spec(1e-6, NUM, _pos, "> 0", "SGD (momentum 0.9) learning rate"),
    "train3d.teacher_weight": Spec(0.1, NUM, _nonneg, ">= 0", "keep parameters near the starting network's"),
    "train3d.jitter": Spec(0.05, NUM, _in(0, 0.5), "0..0.5", "random crop shift/scale as a fraction of the side"),
    "train3d.val_fraction": Spec(0.1, NUM, _in(0, 0.9), "0..0.9", "faces held out for validation"),
    "train3d.checkpoint_every": Spec(50, (int,), _pos, "> 0", "steps between checkpoints (resume point)"),
    "train3d.seed": Spec(0, (int,), None, "", "data order and augmentation seed"),
    "train3d.device": Spec("auto", (str,), *_DEVICE, "", perf=True),
    "train3d.threads": Spec(1, (int,), _pos, "> 0", "torch CPU threads (more stall on a busy machine)", perf=True),
    # --- stage train: a recognizer for the dataset's identities; `facedata identify` uses it --------
    **_TRAIN_SPEC,
    # --- `facedata index-video` (issue 19): who is on screen when; defaults measured in BENCHMARKS.md ----------
    **_VIDEO_SPEC,
    # --- scale-out (issue 20): detect / embed / reconstruct3d as shards on a Dask cluster (docs/scale.md) -------
    "execution.dask_address": Spec(
        "",
        (str,),
        lambda v: DASK_ADDRESS.fullmatch(v) is not None,
        "'', local:N or tcp://HOST:PORT",
        "Dask cluster for detect/embed/reconstruct3d shards and the cluster stage's large kNN; '' = this machine "
        "only; $FACEDATA_DASK_ADDRESS (--dask) wins",
        perf=True,
    ),
    "execution.shard_size": Spec(256, (int,), _pos, "> 0", "items per shard (one Dask task)", perf=True),
    "execution.retries": Spec(2, (int,), _in(0, 10), "0..10", "resubmissions of a shard that failed", perf=True),
    "execution.worker_threads": Spec(
        1, (int,), _pos, "> 0", "torch/OpenCV threads per shard on a worker (run one worker per core)", perf=True
    ),
    "execution.worker_timeout_s": Spec(
        120.0, NUM, _pos, "> 0", "how long a stage waits for the cluster's first worker", perf=True
    ),
}


def default(key: str) -> Any:
    """The default of one dotted key: library-level settings (dataclasses callers build without a params.yaml)
    take theirs from here, so a default is written once."""
    return copy.deepcopy(SPEC[key].default)


def settings(cls, section: dict, **override):
    """An instance of the settings dataclass `cls` from a params section (keys `cls` lacks are ignored) and
    the overrides that are not None (command-line options)."""
    values = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
    values.update({k: v for k, v in override.items() if v is not None})
    return cls(**values)


def defaults() -> dict:
    """Every parameter at its default, as `load` returns them: for library callers outside a project."""
    out: dict = {}
    for key, spec in SPEC.items():
        _set(out, key, copy.deepcopy(spec.default))
    return out


def _get(d: dict, dotted: str) -> tuple[bool, Any]:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def has(d: dict, dotted: str) -> bool:
    """Whether the (raw) params hold the dotted key."""
    return _get(d, dotted)[0]


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


#: The sections of params.yaml, in the order `facedata params` lists them.
SECTIONS = tuple(dict.fromkeys(k.split(".", 1)[0] for k in SPEC))


def with_defaults(params: dict) -> dict:
    """Fill defaults and check every value; returns a new dict. Raises ParamsError naming every bad key."""
    checked, errors, missing = check(params)
    if errors:
        raise ParamsError(errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + "; ".join(errors))
    if missing:
        message = f"params.yaml has no {_summary(missing)}: using the defaults"
        if message not in _WARNED:  # once per process, not once per load
            _WARNED.add(message)
            warnings.warn(message, DefaultsUsed, stacklevel=2)
    return checked


def check(params: dict) -> tuple[dict, list[str], list[str]]:
    """(params with defaults filled, every error, the keys that took their default): `with_defaults` without
    raising, for `facedata check`, which reports all problems at once."""
    params = copy.deepcopy(params or {})
    errors: list[str] = []
    for section in list(params):
        value = params[section]
        if section not in SECTIONS:
            errors.append(
                f"unknown section `{section}`{_did_you_mean(str(section), SECTIONS)}; sections: "
                + ", ".join(SECTIONS)
            )
            del params[section]
        elif not isinstance(value, dict):
            shown = "empty" if value is None else f"a {type(value).__name__}"
            errors.append(f"section `{section}` must hold its keys (see `facedata params`), got {shown}")
            del params[section]
    unknown = [k for k in _leaves(params) if k not in SPEC]
    if unknown:
        hints = "".join(_did_you_mean(k, SPEC) for k in unknown[:1])
        errors.append(f"unknown parameter(s) {', '.join(unknown)}{hints}; known keys: see `facedata params`")
    missing = []
    for key, spec in SPEC.items():
        present, value = _get(params, key)
        if not present:
            missing.append(key)
            _set(params, key, copy.deepcopy(spec.default))
        elif (isinstance(value, bool) and bool not in spec.types) or not isinstance(value, spec.types):
            errors.append(f"{key} must be {_type_names(spec)}, got {value!r}")
        elif spec.check is not None and not spec.check(value):
            errors.append(f"{key} must be {spec.rule}, got {value!r}")
    if not any(e.startswith("sources.") for e in errors):
        try:
            _check_sources(params)
        except ParamsError as exc:
            errors.append(str(exc))
    splits = params["export"]["splits"]
    if isinstance(splits, dict) and (
        not splits
        or any(not isinstance(v, NUM) or isinstance(v, bool) or v < 0 for v in splits.values())
        or abs(sum(v for v in splits.values() if isinstance(v, NUM)) - 1.0) > 1e-6
    ):
        errors.append(f"export.splits must be non-negative fractions summing to 1, got {splits!r}")
    return params, errors, missing


def _did_you_mean(name: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _summary(keys: list[str]) -> str:
    """Missing keys for a warning: a section missing whole is named once (`crawl.*`), not key by key."""
    sections: dict[str, list[str]] = {}
    for key in SPEC:
        sections.setdefault(key.split(".", 1)[0], []).append(key)
    gone = set(keys)
    out = []
    for section, members in sections.items():
        if all(k in gone for k in members):
            out.append(f"{section}.*")
        else:
            out.extend(k for k in members if k in gone)
    return ", ".join(out)


def _type_names(spec: Spec) -> str:
    return " or ".join(t.__name__ for t in spec.types)


def _check_sources(params: dict) -> None:
    from facedata.collect.config import check_sources

    try:
        check_sources(params)
    except ValueError as exc:
        raise ParamsError(str(exc)) from exc


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
    return with_defaults(raw)


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
