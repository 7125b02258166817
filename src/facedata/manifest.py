"""Manifests: the Parquet tables every stage reads and writes, in one place.

Each manifest has a pyarrow schema, a primary key and a file name under `data/manifests/`. The rules:

- Writes are atomic (temp file + rename) and rows are sorted by key, so the same content gives the same bytes.
- `merge` replaces rows with the same key instead of appending, so a rerun never duplicates rows.
- `read` checks the file against the schema and says what is wrong and how to fix it when it does not match.
- Every row carries its parents' ids and a `lineage` struct (see `facedata.lineage`).

Manifests are plain Parquet: `pandas.read_parquet`, `polars.read_parquet` and duckdb's `read_parquet` all work.
What each column means is in one table here (`COLUMN_DOCS`, `MANIFEST_COLUMN_DOCS`, `PATH_BASES` for the base
of every path column), written into each file as the fields' `description` metadata: `describe(name)`, or
`pyarrow.parquet.read_schema(path).field(col).metadata` without facedata.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facedata.atomic import write_with
from facedata.lineage import LINEAGE_TYPE, VOLATILE_FIELDS

SCHEMA_VERSION = "1"
TS = pa.timestamp("us", tz="UTC")


class ManifestError(RuntimeError):
    """A manifest is missing, unreadable or does not match its schema."""


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


def _lineage() -> pa.Field:
    return _f("lineage", LINEAGE_TYPE, nullable=False)


# Source-side columns shared by `images` and `dataset`: where an image came from.
_SOURCE_FIELDS = [
    _f("query_name", pa.string()),
    _f("label", pa.string()),
    _f("source_kind", pa.string(), False),
    _f("source_uri", pa.string(), False),
    _f("page_url", pa.string()),
    _f("final_url", pa.string()),
    _f("http_status", pa.int32()),
    _f("content_type", pa.string()),
    _f("etag", pa.string()),
    _f("last_modified", pa.string()),
    _f("license", pa.string()),
    _f("author", pa.string()),
    _f("license_url", pa.string()),
    _f("usage_terms", pa.string()),
    _f("attribution_required", pa.bool_()),
    _f("restrictions", pa.list_(pa.string())),
    _f("video_id", pa.string()),
    _f("frame_index", pa.int64()),
    _f("timestamp_s", pa.float64()),
    _f("track_id", pa.string()),
    _f("fetched_at", TS, False),
]

#: Names of the source-side columns, in schema order (copied from `images` into `dataset` rows).
SOURCE_COLUMNS = tuple(f.name for f in _SOURCE_FIELDS)
#: The rights a source states for an image: what a dataset card lists and a user must honour.
RIGHTS_COLUMNS = ("license", "author", "license_url", "usage_terms", "attribution_required", "restrictions")

SCHEMAS: dict[str, pa.Schema] = {
    "images": pa.schema(
        [
            _f("image_id", pa.string(), False),
            _f("store_path", pa.string(), False),
            _f("format", pa.string(), False),
            _f("width", pa.int32(), False),
            _f("height", pa.int32(), False),
            _f("n_bytes", pa.int64(), False),
            _f("mode", pa.string(), False),
            _f("n_frames", pa.int32(), False),
            _f("phash", pa.string()),
            _f("dup_of", pa.string()),
            *_SOURCE_FIELDS,
            _lineage(),
        ]
    ),
    "crawl_log": pa.schema(
        [
            _f("log_id", pa.string(), False),
            _f("query_name", pa.string()),
            _f("source_kind", pa.string(), False),
            _f("source_uri", pa.string(), False),
            _f("page_url", pa.string()),
            _f("final_url", pa.string()),
            _f("status", pa.string(), False),
            _f("reason", pa.string()),
            _f("image_id", pa.string()),
            _f("http_status", pa.int32()),
            _f("content_type", pa.string()),
            _f("n_bytes", pa.int64()),
            _f("attempts", pa.int32(), False),
            _f("fetched_at", TS, False),
            _f("source_name", pa.string()),
            _f("video_id", pa.string()),
            _f("frame_index", pa.int64()),
            _f("timestamp_s", pa.float64()),
            _f("track_id", pa.string()),
            _lineage(),
        ]
    ),
    "detections": pa.schema(
        [
            _f("image_id", pa.string(), False),
            _f("detector", pa.string(), False),
            _f("status", pa.string(), False),
            _f("reason", pa.string()),
            _f("n_faces", pa.int32(), False),
            _f("n_kept", pa.int32(), False),
            _lineage(),
        ]
    ),
    "faces": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("image_id", pa.string(), False),
            _f("face_index", pa.int32(), False),
            _f("detector", pa.string(), False),
            _f("x1", pa.float32(), False),
            _f("y1", pa.float32(), False),
            _f("x2", pa.float32(), False),
            _f("y2", pa.float32(), False),
            _f("score", pa.float32(), False),
            _f("landmarks", pa.list_(pa.float32(), 10), False),
            _f("is_primary", pa.bool_(), False),
            _f("size_px", pa.float32(), False),
            _f("outside", pa.float32()),
            _f("blur", pa.float32(), False),
            _f("yaw", pa.float32()),
            _f("pitch", pa.float32()),
            _f("roll", pa.float32()),
            _f("quality", pa.float32()),
            _f("status", pa.string(), False),
            _f("reason", pa.string()),
            _f("crop_path", pa.string()),
            _f("crop_sha256", pa.string()),
            _f("crop_size", pa.int32(), False),
            _f("align_template", pa.string(), False),
            _f("align_matrix", pa.list_(pa.float32(), 6), False),
            _lineage(),
        ]
    ),
    "embeddings": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("model", pa.string(), False),
            _f("model_version", pa.string(), False),
            _f("dim", pa.int32(), False),
            _f("vector", pa.list_(pa.float32()), False),
            _lineage(),
        ]
    ),
    "clusters": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("image_id", pa.string(), False),
            _f("cluster_id", pa.string(), False),
            _f("cluster_size", pa.int32(), False),
            _f("method", pa.string(), False),
            _f("query_name", pa.string()),
            _f("identity", pa.string()),
            _f("absorbed", pa.bool_()),
            _f("doubt", pa.float32(), False),
            _f("distance", pa.float32()),
            _f("margin", pa.float32()),
            _f("next_cluster_id", pa.string()),
            _f("review_decision", pa.string()),
            _f("reviewer", pa.string()),
            _f("review_id", pa.string()),
            _lineage(),
        ]
    ),
    "identities": pa.schema(
        [
            _f("query_name", pa.string(), False),
            _f("cluster_id", pa.string()),
            _f("n_images", pa.int32(), False),
            _f("n_faces", pa.int32(), False),
            _f("n_in_cluster", pa.int32(), False),
            _f("n_members", pa.int32(), False),
            _f("n_absorbed", pa.int32()),
            _f("confidence", pa.float32(), False),
            _f("margin", pa.float32(), False),
            _f("status", pa.string(), False),
            _f("reason", pa.string()),
            _lineage(),
        ]
    ),
    "dataset": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("identity", pa.string(), False),
            _f("split", pa.string(), False),
            _f("file_path", pa.string(), False),
            _f("file_sha256", pa.string(), False),
            _f("image_id", pa.string(), False),
            _f("cluster_id", pa.string(), False),
            _f("store_path", pa.string(), False),
            _f("detector", pa.string(), False),
            _f("x1", pa.float32(), False),
            _f("y1", pa.float32(), False),
            _f("x2", pa.float32(), False),
            _f("y2", pa.float32(), False),
            _f("embedding_model", pa.string(), False),
            _f("reviewed", pa.bool_()),  # a person decided this face (facedata review)
            _f("review_decision", pa.string()),  # that decision (accepted...), null when unreviewed
            _f("reviewer", pa.string()),
            _f("auto_confidence", pa.float32()),  # the automatic assignment's confidence: 1 - doubt
            *_SOURCE_FIELDS,
            _lineage(),
            _f("image_lineage", LINEAGE_TYPE, False),
            _f("face_lineage", LINEAGE_TYPE, False),
            _f("embedding_lineage", LINEAGE_TYPE, False),
            _f("cluster_lineage", LINEAGE_TYPE, False),
        ]
    ),
}

KEYS: dict[str, tuple[str, ...]] = {
    "images": ("image_id",),
    "crawl_log": ("log_id",),
    "detections": ("image_id",),
    "faces": ("face_id",),
    "embeddings": ("face_id", "model"),
    "clusters": ("face_id",),
    "identities": ("query_name",),
    "dataset": ("face_id",),
}

#: Which stage writes each manifest (used in error messages and by `facedata lineage`).
WRITER = {
    "images": "ingest",
    "crawl_log": "ingest",
    "detections": "detect",
    "faces": "detect",
    "embeddings": "embed",
    "clusters": "cluster",
    "identities": "cluster",
    "dataset": "export",
}

# --- meshes (stage reconstruct3d): one row per dataset face, one per fused identity mesh -------------
_F32 = pa.float32()
SCHEMAS["meshes"] = pa.schema(
    [
        _f("mesh_id", pa.string(), False),
        _f("kind", pa.string(), False),
        _f("face_id", pa.string()),
        _f("image_id", pa.string()),
        _f("face_ids", pa.list_(pa.string()), False),
        _f("image_ids", pa.list_(pa.string()), False),
        _f("identity", pa.string()),
        _f("status", pa.string(), False),
        _f("reason", pa.string()),
        _f("n_views", pa.int32(), False),
        _f("yaw", _F32),
        _f("pitch", _F32),
        _f("roll", _F32),
        _f("gaze_status", pa.string()),
        _f("gaze_yaw", _F32),
        _f("gaze_pitch", _F32),
        _f("fit_error", _F32),
        _f("view_errors", pa.list_(_F32)),
        _f("heldout_errors", pa.list_(_F32)),
        _f("single_heldout_errors", pa.list_(_F32)),
        _f("fused_better", pa.bool_()),
        _f("box", pa.list_(_F32, 4)),
        _f("crop", pa.list_(_F32, 4)),
        _f("landmarks68", pa.list_(_F32)),
        _f("fit_landmarks68", pa.list_(_F32)),
        _f("params62", pa.list_(_F32)),
        _f("shape_coeffs", pa.list_(_F32)),
        _f("mesh_dir", pa.string()),
        _f("obj_path", pa.string()),
        _f("glb_path", pa.string()),
        _f("texture_path", pa.string()),
        _f("landmarks_path", pa.string()),
        _f("json_path", pa.string()),
        _f("seconds", _F32),
        _lineage(),
    ]
)
KEYS["meshes"] = ("mesh_id",)
WRITER["meshes"] = "reconstruct3d"

# --- video index (issue 19, `facedata index-video`): one row per face track, one per segment ----------------
SCHEMAS["video_tracks"] = pa.schema(
    [
        _f("track_id", pa.string(), False),  # video_id[:16] + "-t" + number (in order of first appearance)
        _f("video_id", pa.string(), False),  # sha256 of the video file
        _f("video_path", pa.string(), False),  # as given on the command line
        _f("frames", pa.list_(pa.int64()), False),  # frame numbers (0-based) of the track's faces
        _f("timestamps", pa.list_(pa.float64()), False),  # seconds
        _f("boxes", pa.list_(pa.list_(_F32, 4)), False),  # x1, y1, x2, y2 per face, frame pixels
        _f("scores", pa.list_(_F32), False),  # detector score per face
        _f("qualities", pa.list_(_F32), False),  # combined quality per face (the aggregate's weights)
        _f("shots", pa.list_(pa.int32()), False),  # shot number per face
        _f("start", pa.float64(), False),
        _f("end", pa.float64(), False),  # last face's time + one analysis period
        _f("n_faces", pa.int32(), False),
        _f("identity", pa.string(), False),  # a gallery identity, or "unknown"
        _f("score", _F32, False),  # cosine of the track's vector to that identity (unknown: to the nearest)
        _f("confidence", _F32, False),  # calibrated (see facedata.video.naming)
        _f("candidate", pa.string()),  # unknown tracks: candidate person (clustering of unknown tracks)
        _f("vector", pa.list_(_F32), False),  # the quality-weighted aggregate embedding
        _f("thumbnail", pa.string()),  # path of the thumbnail JPEG, relative to the index folder
        _lineage(),
    ]
)
KEYS["video_tracks"] = ("track_id",)
WRITER["video_tracks"] = "index-video"
SCHEMAS["video_segments"] = pa.schema(
    [
        _f("segment_id", pa.string(), False),  # video_id[:16] + identity + start
        _f("video_id", pa.string(), False),
        _f("video_path", pa.string(), False),
        _f("identity", pa.string(), False),
        _f("start", pa.float64(), False),  # seconds
        _f("end", pa.float64(), False),
        _f("confidence", _F32, False),
        _f("track_ids", pa.list_(pa.string()), False),
        _lineage(),
    ]
)
KEYS["video_segments"] = ("segment_id",)
WRITER["video_segments"] = "index-video"

# --- reviews (issue 16, `facedata review`): append-only, one row per decision a person made -----------------
SCHEMAS["reviews"] = pa.schema(
    [
        _f("review_id", pa.string(), False),  # "<UTC time>-<random>": key order is time order
        _f("reviewer", pa.string(), False),
        _f("time", TS, False),
        _f("action", pa.string(), False),  # accept reject move merge split name same different undo
        _f("face_ids", pa.list_(pa.string()), False),  # the faces decided
        _f("target", pa.string()),  # the identity they go to (accept, move, name, merge, split, same)
        _f("reason", pa.string()),  # reject: not_this_person | not_a_face | bad_quality
        _f("other_face_ids", pa.list_(pa.string())),  # faces they were kept apart from (reject, split, different)
        _f("undoes", pa.string()),  # undo: the review_id it takes back
        _f("before", pa.string()),  # JSON {face_id: label} as the reviewer saw it
        _f("after", pa.string()),  # JSON {face_id: label} once applied
        _f("build", pa.string()),  # the build the decision was made on (git revision + clusters hash)
        _f("conflicts_with", pa.list_(pa.string())),  # other reviewers' decisions on these faces it overrode
    ]
)
KEYS["reviews"] = ("review_id",)
WRITER["reviews"] = "facedata review"
#: Manifests of decisions people made, not stage outputs: their provenance is who, when and on which build
#: (`reviewer`, `time`, `build`), not a stage's code/params lineage.
HUMAN = frozenset({"reviews"})

# --- what every column means: the one table (written into each file's Parquet field metadata) ---------------
_PROJECT = "the project root (the folder holding params.yaml)"

#: Column descriptions shared by every manifest that has the column.
COLUMN_DOCS: dict[str, str] = {
    "image_id": "sha256 of the stored image bytes: the image's id in every manifest",
    "face_id": "id of one detected face: hash of its image id, detector and box",
    "cluster_id": "id of a cluster of faces: hash of its smallest member face id",
    "log_id": "id of one collection attempt: hash of source kind, source URI and queried name",
    "mesh_id": "the face_id for a face's mesh; 'm' + hash of the sorted face ids for a fused identity mesh",
    "store_path": "the image file in the content-addressed store",
    "format": "image format sniffed from the bytes: jpeg, png, gif, webp, bmp or tiff",
    "width": "pixels, after EXIF orientation",
    "height": "pixels, after EXIF orientation",
    "n_bytes": "size of the downloaded or read file in bytes",
    "mode": "colour mode as found in the file (RGB, L, CMYK, I;16, RGBA, P...)",
    "n_frames": "frames in the file (animated GIF/WebP keep the first)",
    "phash": "64-bit perceptual hash (hex), for near-duplicates",
    "dup_of": "image_id of a near-identical image kept earlier (ingest.near_dup_bits), else null",
    "query_name": "the name searched for or given to the source (a cast member); null for untargeted frames",
    "label": "ground-truth identity when the source is labelled (folder sources with labeled: true); "
    "evaluation only, never used to build the dataset",
    "identity": "the queried name this face was assigned to (its dominant cluster or absorbed), else null",
    "source_kind": "folder | video | url | web_api | web_page",
    "source_uri": "where the bytes came from: a file path, or the image URL for web sources",
    "source_name": "which configured source: a folder or video as written in params.yaml, a URL list, a template",
    "page_url": "the web page the image was found on",
    "final_url": "the image URL after redirects",
    "http_status": "HTTP status of the image response",
    "content_type": "Content-Type the server sent",
    "etag": "ETag the server sent (revalidation)",
    "last_modified": "Last-Modified the server sent (revalidation)",
    "license": "short license name, e.g. CC BY-SA 4.0",
    "author": "the creator (Commons: Artist, else the uploader), HTML stripped",
    "license_url": "URL of the license text",
    "usage_terms": "the license's long name, e.g. Creative Commons Attribution-Share Alike 4.0",
    "attribution_required": "whether the license requires attribution",
    "restrictions": "warnings on the file, e.g. personality, trademarked (Commons' templates)",
    "video_id": "sha256 of the video file a frame came from",
    "frame_index": "frame number in the video",
    "timestamp_s": "seconds from the start of the video",
    "track_id": "the face track (`facedata index-video`) a frame was picked from when a reviewer named its "
    "person in `facedata review`, else null",
    "fetched_at": "when the bytes were read or downloaded (UTC)",
    "lineage": "stage, run id, git revisions, code version and hash, params hash, model name/version/sha256 "
    "and creation time of the row",
    "status": "outcome of this row's step (values listed per manifest)",
    "reason": "why the status is not ok ('code: message')",
    "attempts": "requests made (0: not fetched: refused, capped or reused)",
    "detector": "the face detector: retinaface, yunet or mtcnn",
    "face_index": "rank of the face by detector score within its image (0 = best)",
    "x1": "face box left edge, image pixels",
    "y1": "face box top edge, image pixels",
    "x2": "face box right edge, image pixels",
    "y2": "face box bottom edge, image pixels",
    "score": "detector confidence",
    "landmarks": "5 landmarks, x, y pairs in image pixels: left eye, right eye, nose, mouth corners (l, r)",
    "is_primary": "the image's subject: its largest, most central usable face",
    "size_px": "shorter side of the face box in pixels",
    "outside": "share of the face box outside the image (cut-off faces)",
    "blur": "variance of the Laplacian of the aligned crop (higher = sharper)",
    "yaw": "head yaw in degrees (left/right turn)",
    "pitch": "head pitch in degrees (up/down)",
    "roll": "head roll in degrees (in-plane tilt)",
    "quality": "combined face quality in [0, 1]: score, size, sharpness, pose, cut-off",
    "crop_path": "the aligned face crop (PNG)",
    "crop_sha256": "sha256 of the crop file (the store check compares)",
    "crop_size": "aligned crop side in pixels",
    "align_template": "landmark template of the crop: dlib150, arcface112 or facenet160",
    "align_matrix": "2x3 affine transform, source image pixels -> crop pixels, row-major",
    "model": "the recognizer (embed.model): dlib-resnet, facenet-vggface2 or onnx:<path>",
    "model_version": "recognizer version, with flip/alignment-view/jitter settings",
    "dim": "vector length",
    "vector": "the face embedding, L2-normalised (distance = L2, cosine = 1 - d^2/2)",
    "cluster_size": "faces in the cluster",
    "method": "clustering method (cluster.method)",
    "absorbed": "kept for `identity` because one of that name's images had it near the cluster centre, "
    "though it is outside the cluster",
    "doubt": "0 = certain; higher = review first (distance and margin to the next cluster combined)",
    "distance": "L2 distance to the centre of the rest of its cluster; null for singletons",
    "margin": "distance to the next cluster's centre minus `distance` (small = ambiguous)",
    "next_cluster_id": "the nearest other cluster (review: should it go there?)",
    "review_decision": "a person's decision on the face: accepted / grouped / rejected:<reason>; null: unreviewed",
    "reviewer": "who made that decision",
    "review_id": "the `reviews` row the decision comes from",
    "reviewed": "whether a person decided on this face (else the automatic decision stands)",
    "auto_confidence": "the clustering's confidence in the automatic decision (1 - doubt)",
    "review_time": "when the decision was made (UTC)",
    "n_images": "images collected for this name",
    "n_faces": "usable faces in those images",
    "n_in_cluster": "of the name's images, how many have a face in its dominant cluster",
    "n_members": "faces in the dominant cluster, from any source",
    "n_absorbed": "more of the name's images whose face joined near the cluster centre",
    "confidence": "n_in_cluster / n_images",
    "split": "train | val | test (identity-disjoint within the split, leakage-free)",
    "file_path": "the exported face image",
    "file_sha256": "sha256 of the exported file",
    "embedding_model": "recognizer whose vectors clustered this face",
    "image_lineage": "lineage of the image row",
    "face_lineage": "lineage of the face row",
    "embedding_lineage": "lineage of the embedding row",
    "cluster_lineage": "lineage of the cluster row",
    "kind": "face (one photo) | fused (one identity, several views)",
    "face_ids": "every face the mesh was made from",
    "image_ids": "the images of those faces",
    "n_views": "photos the mesh was made from",
    "gaze_status": "ok | eyes_not_found | eyes_closed | eyes_too_small | head_turned",
    "gaze_yaw": "gaze yaw in degrees, camera frame",
    "gaze_pitch": "gaze pitch in degrees, camera frame",
    "fit_error": "dense fit: mean landmark error, % of the face size (fused: worst view)",
    "view_errors": "per view (fused), or [fit_error]",
    "heldout_errors": "fused, >= 3 views: per view, error on it of the fit fused without it",
    "single_heldout_errors": "fused, >= 3 views: per view, mean error on it of the other views' single fits",
    "fused_better": "fused, >= 3 views: heldout_errors < single_heldout_errors on every view",
    "box": "detector box in the photo: x1, y1, x2, y2",
    "crop": "final regressor crop: cx, cy, side, theta",
    "landmarks68": "regressor: 68 x (x, y, z) in photo pixels",
    "fit_landmarks68": "dense fit projected: 68 x (x, y) in photo pixels (the training pseudo-labels)",
    "params62": "3DMM parameters (3DDFA_V2 layout)",
    "shape_coeffs": "SFM identity shape coefficients",
    "mesh_dir": "folder of the mesh files",
    "obj_path": "mesh.obj (with .mtl and texture)",
    "glb_path": "mesh.glb",
    "texture_path": "texture PNG",
    "landmarks_path": "68 3D landmarks (.xyz)",
    "json_path": "face3d.json / fused3d.json summary",
    "seconds": "processing time (per face; fused: the fusion)",
}

#: Where one manifest's column means something more specific than `COLUMN_DOCS` says.
MANIFEST_COLUMN_DOCS: dict[tuple[str, str], str] = {
    ("crawl_log", "status"): "stored | duplicate (same bytes as a stored image) | failed | skipped",
    ("crawl_log", "reason"): "'code: message' (for stored rows: a note, e.g. a content-type mismatch)",
    ("crawl_log", "image_id"): "the stored image (stored, duplicate), else null",
    ("detections", "status"): "ok | no_face | error",
    ("detections", "n_faces"): "faces the detector found in the image",
    ("detections", "n_kept"): "of those, faces passing the detect.* quality filters",
    ("faces", "status"): "ok | filtered",
    ("faces", "reason"): "why the face was filtered (which detect.* threshold)",
    ("identities", "query_name"): "the queried name (cast member)",
    ("identities", "cluster_id"): "the name's dominant cluster, null when none could be chosen",
    ("identities", "margin"): "(top - runner-up cluster's images) / n_images",
    ("identities", "status"): "ok | no_faces | weak | conflict",
    ("clusters", "query_name"): "the name queried for the face's image",
    ("meshes", "status"): "ok | tiny_face | cut_by_border | extreme_pose | fit_failed | error",
    ("meshes", "identity"): "the dataset identity of the face(s)",
    ("video_tracks", "track_id"): "video_id[:16] + '-t' + number, in order of first appearance",
    ("video_tracks", "video_path"): "the video as given on the command line",
    ("video_tracks", "frames"): "frame numbers (0-based) of the track's faces",
    ("video_tracks", "timestamps"): "seconds from the start of the video, per face",
    ("video_tracks", "boxes"): "x1, y1, x2, y2 per face, frame pixels",
    ("video_tracks", "scores"): "detector score per face",
    ("video_tracks", "qualities"): "combined quality per face (the aggregate embedding's weights)",
    ("video_tracks", "shots"): "shot number per face",
    ("video_tracks", "start"): "seconds: the track's first face",
    ("video_tracks", "end"): "seconds: the track's last face plus one analysis period",
    ("video_tracks", "n_faces"): "faces in the track",
    ("video_tracks", "identity"): "a gallery identity, or 'unknown'",
    ("video_tracks", "score"): "cosine of the track's vector to that identity (unknown: to the nearest)",
    ("video_tracks", "confidence"): "calibrated confidence of the identity",
    ("video_tracks", "candidate"): "unknown tracks: candidate person (clustering of the unknown tracks)",
    ("video_tracks", "vector"): "the quality-weighted aggregate embedding of the track",
    ("video_tracks", "thumbnail"): "thumbnail JPEG of the track",
    ("video_segments", "segment_id"): "video_id[:16] + identity + start",
    ("video_segments", "video_path"): "the video as given on the command line",
    ("video_segments", "identity"): "the gallery identity on screen",
    ("video_segments", "start"): "seconds from the start of the video",
    ("video_segments", "end"): "seconds from the start of the video",
    ("video_segments", "confidence"): "calibrated confidence of the identity over the segment",
    ("video_segments", "track_ids"): "the tracks the segment is made of",
    ("reviews", "time"): "when the decision was made (UTC)",
    ("reviews", "action"): "accept | reject | move | merge | split | name | same | different | undo",
    ("reviews", "face_ids"): "the faces decided",
    ("reviews", "target"): "the identity they go to (accept, move, name, merge, split, same)",
    ("reviews", "reason"): "reject: not_this_person | not_a_face | bad_quality",
    ("reviews", "other_face_ids"): "faces they were kept apart from (reject, split, different)",
    ("reviews", "undoes"): "undo: the review_id it takes back",
    ("reviews", "before"): "JSON {face_id: label} as the reviewer saw it",
    ("reviews", "after"): "JSON {face_id: label} once applied",
    ("reviews", "build"): "the build the decision was made on (git revision + clusters hash)",
    ("reviews", "conflicts_with"): "other reviewers' decisions on these faces it overrode",
    ("dataset", "identity"): "the identity (class) of the face: a queried name",
}

#: The base of every path column: where a relative path starts.
PATH_BASES: dict[tuple[str, str], str] = {
    **{(m, "store_path"): _PROJECT for m in ("images", "dataset")},
    ("faces", "crop_path"): _PROJECT,
    ("dataset", "file_path"): "the dataset folder (data/dataset)",
    ("video_tracks", "thumbnail"): "the index folder (--out of `facedata index-video`)",
    **{(m, "video_path"): "the directory `facedata index-video` ran in (the path as given on its command line)"
       for m in ("video_tracks", "video_segments")},
    **{(m, "source_uri"): "folder and video sources: the source's path as written in params.yaml (relative "
       "ones from " + _PROJECT + ") and the path below it; web sources: an absolute URL"
       for m in ("images", "crawl_log", "dataset")},
    **{("meshes", c): _PROJECT for c in ("mesh_dir", "obj_path", "glb_path", "texture_path", "landmarks_path",
                                          "json_path")},
}  # fmt: skip


def describe(name: str) -> dict[str, str]:
    """{column: description} of manifest `name`, path bases included (what its Parquet field metadata holds)."""
    out = {}
    for f in SCHEMAS[name]:
        doc = MANIFEST_COLUMN_DOCS.get((name, f.name)) or COLUMN_DOCS.get(f.name, "")
        base = PATH_BASES.get((name, f.name))
        out[f.name] = f"{doc}; path relative to {base}" if base else doc
    return out


MANIFEST_DIR = Path("data") / "manifests"


def register(name: str, schema: pa.Schema, key: Iterable[str], writer: str) -> None:
    """Add a manifest defined by a later part of the pipeline (reviews, meshes...) to the registry."""
    SCHEMAS[name] = schema
    KEYS[name] = tuple(key)
    WRITER[name] = writer


def path_for(name: str, root: str | os.PathLike = ".") -> Path:
    if name == "dataset":
        return Path(root) / "data" / "dataset" / "dataset.parquet"
    _check_name(name)
    return Path(root) / MANIFEST_DIR / f"{name}.parquet"


def _check_name(name: str) -> None:
    if name not in SCHEMAS:
        raise ManifestError(f"unknown manifest {name!r}; known: {', '.join(sorted(SCHEMAS))}")


def schema(name: str) -> pa.Schema:
    """The manifest's schema with each field's `description` and the table's path bases in the metadata."""
    _check_name(name)
    return _schema(name, SCHEMAS[name])


@functools.lru_cache(maxsize=64)
def _schema(name: str, base: pa.Schema) -> pa.Schema:
    docs = describe(name)
    fields = [f.with_metadata({"description": docs[f.name]}) if docs[f.name] else f for f in base]
    bases = {c: b for (m, c), b in PATH_BASES.items() if m == name}
    meta = {"facedata.manifest": name, "facedata.schema_version": SCHEMA_VERSION}
    if bases:
        meta["facedata.path_bases"] = json.dumps(bases, sort_keys=True)
    return pa.schema(fields, metadata=meta)


def empty(name: str) -> pa.Table:
    return schema(name).empty_table()


def from_rows(name: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a table from dicts; missing nullable columns become null, wrong types raise a clear error."""
    sch = schema(name)
    rows = list(rows)
    try:
        return pa.Table.from_pylist([{f.name: r.get(f.name) for f in sch} for r in rows], schema=sch)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"rows for manifest {name!r} do not fit its schema: {exc}") from exc


def conform(name: str, table: pa.Table, fill_missing: bool = False, columns: list[str] | None = None) -> pa.Table:
    """Select and cast `table` to the manifest schema (or to its `columns` only), with a message naming the
    offending columns.

    With `fill_missing`, nullable columns the table lacks are added as nulls: manifests written before a column
    was added stay readable (schema changes are additive). A missing required column is always an error.
    """
    sch = schema(name)
    if columns is not None:
        unknown = [c for c in columns if c not in sch.names]
        if unknown:
            raise ManifestError(f"manifest {name!r} has no columns {unknown}")
        sch = pa.schema([sch.field(c) for c in columns], metadata=sch.metadata)
    missing = [f.name for f in sch if f.name not in table.column_names]
    if fill_missing:
        for f in sch:
            if f.name in missing and f.nullable:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
        missing = [m for m in missing if not sch.field(m).nullable]
    if missing:
        raise ManifestError(f"manifest {name!r} is missing columns {missing}")
    problems = []
    cols = []
    for f in sch:
        col = table.column(f.name)
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                problems.append(f"{f.name}: {col.type} (expected {f.type})")
                continue
        if not f.nullable and col.null_count:
            problems.append(f"{f.name}: {col.null_count} null value(s) in a required column")
        cols.append(col)
    if problems:
        raise ManifestError(f"manifest {name!r} does not match its schema: " + "; ".join(problems))
    return pa.Table.from_arrays(cols, schema=sch)


def read(
    name: str, root: str | os.PathLike = ".", missing_ok: bool = False, columns: list[str] | None = None
) -> pa.Table:
    """Read and check a manifest (only `columns`, when given: big manifests are read no wider than needed).
    With `missing_ok`, an absent file reads as an empty table."""
    path = path_for(name, root)
    if not path.exists():
        if missing_ok:
            return empty(name) if columns is None else empty(name).select(columns)
        raise ManifestError(
            f"manifest {name!r} not found at {path}; run the stage that writes it first "
            f"(`dvc repro {WRITER.get(name, name)}` or `facedata build`)"
        )
    try:
        if columns is None:
            table = pq.read_table(path)
        else:  # columns an older file lacks are filled in by `conform`
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in columns if c in present])
    except (OSError, pa.ArrowInvalid) as exc:
        raise ManifestError(
            f"manifest {name!r} at {path} is damaged: not readable Parquet ({exc}). Restore the version DVC "
            f"last recorded with `dvc checkout --force {_display(path, root)}`, or delete it and run "
            f"`dvc repro --force {WRITER.get(name, name)}` to rebuild it"
        ) from exc
    try:
        return conform(name, table, fill_missing=True, columns=columns)
    except ManifestError as exc:
        raise ManifestError(
            f"{exc} (file {path}); it was probably written by another facedata version: rerun "
            f"`dvc repro --force {WRITER.get(name, name)}` to rebuild it"
        ) from exc


def iter_batches(
    name: str, root: str | os.PathLike = ".", columns: list[str] | None = None, batch_size: int = 65536
) -> Iterable[pa.Table]:
    """A manifest's rows a slice at a time (each checked like `read`), for tables too big to hold twice:
    a million embeddings go into one numpy array without a full Arrow copy beside it."""
    path = path_for(name, root)
    if not path.exists():
        return
    try:
        pf = pq.ParquetFile(path)
        present = set(pf.schema_arrow.names)
        wanted = [c for c in (columns or schema(name).names) if c in present]
        batches = pf.iter_batches(batch_size=batch_size, columns=wanted)
        for batch in batches:
            yield conform(name, pa.Table.from_batches([batch]), fill_missing=True, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ManifestError(
            f"manifest {name!r} at {path} is damaged: not readable Parquet ({exc}). Restore the version DVC "
            f"last recorded with `dvc checkout --force {_display(path, root)}`, or delete it and run "
            f"`dvc repro --force {WRITER.get(name, name)}` to rebuild it"
        ) from exc


def _display(path: Path, root) -> str:
    try:
        return path.relative_to(Path(root)).as_posix()
    except ValueError:
        return str(path)


def read_pandas(name: str, root: str | os.PathLike = ".", missing_ok: bool = False):
    return read(name, root, missing_ok=missing_ok).to_pandas()


def sort_by_key(name: str, table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    return table.sort_by([(k, "ascending") for k in KEYS[name]])


def write(
    name: str, table: pa.Table, root: str | os.PathLike = ".", path: str | os.PathLike | None = None
) -> Path:
    """Atomically write a manifest, rows sorted by key; refuses duplicate keys."""
    table = sort_by_key(name, conform(name, table))
    dup = duplicate_keys(name, table)
    if dup:
        raise ManifestError(f"manifest {name!r} would hold duplicate keys, e.g. {dup[:3]}")
    target = Path(path) if path is not None else path_for(name, root)
    write_with(target, lambda tmp: pq.write_table(table, tmp, compression="zstd", use_dictionary=True))
    return target


def duplicate_keys(name: str, table: pa.Table) -> list:
    keys = KEYS[name]
    if table.num_rows == 0:
        return []
    grouped = table.group_by(list(keys)).aggregate([([], "count_all")])
    dups = grouped.filter(pc.greater(grouped["count_all"], 1))
    return dups.select(list(keys)).to_pylist()


def merge(name: str, old: pa.Table, new: pa.Table) -> pa.Table:
    """Union of `old` and `new` by key; a row in `new` replaces the row with the same key in `old`."""
    old = conform(name, old)
    new = conform(name, new)
    if new.num_rows == 0:
        return sort_by_key(name, old)
    if duplicate_keys(name, new):
        raise ManifestError(f"new rows for manifest {name!r} repeat a key: {duplicate_keys(name, new)[:3]}")
    keys = list(KEYS[name])
    if old.num_rows:
        new_keys = _key_array(new, keys)
        old = old.filter(pc.invert(pc.is_in(_key_array(old, keys), value_set=new_keys)))
    return sort_by_key(name, pa.concat_tables([old, new]))


def _key_array(table: pa.Table, keys: list[str]) -> pa.Array:
    if len(keys) == 1:
        return table.column(keys[0]).combine_chunks()
    parts = [pc.cast(table.column(k), pa.string()) for k in keys]
    return pc.binary_join_element_wise(*parts, "\x1f").combine_chunks()


def update(name: str, new: pa.Table, root: str | os.PathLike = ".") -> pa.Table:
    """Merge `new` into the manifest on disk and write it back."""
    merged = merge(name, read(name, root, missing_ok=True), new)
    write(name, merged, root)
    return merged


def stable_view(table: pa.Table) -> pa.Table:
    """The table without run-varying lineage fields: equal for two runs over the same inputs."""
    cols, fields = [], []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_struct(f.type) and f.type.equals(LINEAGE_TYPE):
            keep = [i for i in range(f.type.num_fields) if f.type.field(i).name not in VOLATILE_FIELDS]
            arr = col.combine_chunks()
            col = pa.StructArray.from_arrays([arr.field(i) for i in keep], fields=[f.type.field(i) for i in keep])
            f = pa.field(f.name, col.type)
        cols.append(col)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))
