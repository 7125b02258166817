"""Manifests: the Parquet tables every stage reads and writes, in one place.

Each manifest has a pyarrow schema, a primary key and a file name under `data/manifests/`. The rules:

- Writes are atomic (temp file + rename) and rows are sorted by key, so the same content gives the same bytes.
- `merge` replaces rows with the same key instead of appending, so a rerun never duplicates rows.
- `read` checks the file against the schema and says what is wrong and how to fix it when it does not match.
- Every row carries its parents' ids and a `lineage` struct (see `facedata.lineage`).

Manifests are plain Parquet: `pandas.read_parquet`, `polars.read_parquet` and duckdb's `read_parquet` all work.
"""

from __future__ import annotations

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
    _f("query_name", pa.string()),  # the name searched for (cast member); null for untargeted video frames
    _f("label", pa.string()),  # ground-truth identity when the source is labelled (evaluation only)
    _f("source_kind", pa.string(), False),  # folder | video | url | web_api | web_page
    _f("source_uri", pa.string(), False),  # file path (project-relative when possible) or image URL
    _f("page_url", pa.string()),
    _f("final_url", pa.string()),  # after redirects
    _f("http_status", pa.int32()),
    _f("content_type", pa.string()),
    _f("etag", pa.string()),
    _f("last_modified", pa.string()),
    _f("license", pa.string()),  # short name, e.g. "CC BY-SA 4.0"
    _f("author", pa.string()),  # the creator (Commons: Artist, else the uploader), HTML stripped
    _f("license_url", pa.string()),
    _f("usage_terms", pa.string()),  # the license's long name, e.g. "Creative Commons Attribution-Share Alike 4.0"
    _f("attribution_required", pa.bool_()),
    _f("restrictions", pa.list_(pa.string())),  # e.g. ["personality", "trademarked"] (Commons' warning templates)
    _f("video_id", pa.string()),  # sha256 of the video file
    _f("frame_index", pa.int64()),
    _f("timestamp_s", pa.float64()),
    _f("fetched_at", TS, False),
]

#: Names of the source-side columns, in schema order (copied from `images` into `dataset` rows).
SOURCE_COLUMNS = tuple(f.name for f in _SOURCE_FIELDS)
#: The rights a source states for an image: what a dataset card lists and a user must honour.
RIGHTS_COLUMNS = ("license", "author", "license_url", "usage_terms", "attribution_required", "restrictions")

SCHEMAS: dict[str, pa.Schema] = {
    "images": pa.schema(
        [
            _f("image_id", pa.string(), False),  # sha256 of the stored bytes
            _f("store_path", pa.string(), False),  # project-relative path in the content-addressed store
            _f("format", pa.string(), False),
            _f("width", pa.int32(), False),
            _f("height", pa.int32(), False),
            _f("n_bytes", pa.int64(), False),
            _f("mode", pa.string(), False),  # colour mode as found (RGB, L, CMYK, I;16, RGBA, P...)
            _f("n_frames", pa.int32(), False),
            _f("phash", pa.string()),  # 64-bit perceptual hash, hex
            _f("dup_of", pa.string()),  # image_id of a near-identical image kept earlier
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
            _f("status", pa.string(), False),  # stored | duplicate | failed | skipped
            _f("reason", pa.string()),  # "code: message" (for stored rows: a note, e.g. a content-type mismatch)
            _f("image_id", pa.string()),
            _f("http_status", pa.int32()),
            _f("content_type", pa.string()),
            _f("n_bytes", pa.int64()),
            _f("attempts", pa.int32(), False),  # requests made (0: not fetched: refused, capped, reused)
            _f("fetched_at", TS, False),
            _f("source_name", pa.string()),  # which configured source: list file, folder, video, page template
            _f("video_id", pa.string()),  # for video frames, kept or not: sha256 of the video file
            _f("frame_index", pa.int64()),
            _f("timestamp_s", pa.float64()),
            _lineage(),
        ]
    ),
    "detections": pa.schema(
        [
            _f("image_id", pa.string(), False),
            _f("detector", pa.string(), False),
            _f("status", pa.string(), False),  # ok | no_face | error
            _f("reason", pa.string()),
            _f("n_faces", pa.int32(), False),  # found by the detector
            _f("n_kept", pa.int32(), False),  # passing the quality filters
            _lineage(),
        ]
    ),
    "faces": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("image_id", pa.string(), False),
            _f("face_index", pa.int32(), False),  # rank by detector score within the image
            _f("detector", pa.string(), False),
            _f("x1", pa.float32(), False),
            _f("y1", pa.float32(), False),
            _f("x2", pa.float32(), False),
            _f("y2", pa.float32(), False),
            _f("score", pa.float32(), False),
            _f("landmarks", pa.list_(pa.float32(), 10), False),  # eyes (l, r), nose, mouth (l, r): x, y pairs
            _f("is_primary", pa.bool_(), False),  # the image's subject: large and central
            _f("size_px", pa.float32(), False),  # shorter side of the box
            _f("outside", pa.float32()),  # share of the box outside the image (cut-off faces)
            _f("blur", pa.float32(), False),  # variance of the Laplacian of the aligned crop
            _f("yaw", pa.float32()),
            _f("pitch", pa.float32()),
            _f("roll", pa.float32()),
            _f("quality", pa.float32()),  # combined score in [0, 1]
            _f("status", pa.string(), False),  # ok | filtered
            _f("reason", pa.string()),  # why a face was filtered
            _f("crop_path", pa.string()),  # project-relative aligned crop
            _f("crop_sha256", pa.string()),  # its content hash (the store check compares)
            _f("crop_size", pa.int32(), False),
            _f("align_template", pa.string(), False),
            _f("align_matrix", pa.list_(pa.float32(), 6), False),  # 2x3 affine, source image -> crop
            _lineage(),
        ]
    ),
    "embeddings": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("model", pa.string(), False),
            _f("model_version", pa.string(), False),
            _f("dim", pa.int32(), False),
            _f("vector", pa.list_(pa.float32()), False),  # L2-normalised
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
            _f("identity", pa.string()),  # the queried name whose dominant cluster this is, if any
            _f("absorbed", pa.bool_()),  # kept for `identity` by its name's images, outside the cluster
            _f("doubt", pa.float32(), False),  # 0 = certain; higher = review first
            _f("distance", pa.float32()),  # L2 to the centre of the rest of its cluster; null for singletons
            _f("margin", pa.float32()),  # distance to the next cluster's centre minus `distance`
            _f("next_cluster_id", pa.string()),  # the nearest other cluster (review: "should it go there?")
            _lineage(),
        ]
    ),
    "identities": pa.schema(
        [
            _f("query_name", pa.string(), False),
            _f("cluster_id", pa.string()),  # the dominant cluster, null when none could be chosen
            _f("n_images", pa.int32(), False),  # images collected for this name
            _f("n_faces", pa.int32(), False),  # usable faces in those images
            _f("n_in_cluster", pa.int32(), False),  # of those images, how many have a face in the cluster
            _f("n_members", pa.int32(), False),  # faces in the cluster, any source
            _f("n_absorbed", pa.int32()),  # more of the name's images whose face joined near the cluster centre
            _f("confidence", pa.float32(), False),  # n_in_cluster / n_images
            _f("margin", pa.float32(), False),  # (top - runner-up) / n_images
            _f("status", pa.string(), False),  # ok | no_faces | weak | conflict
            _f("reason", pa.string()),
            _lineage(),
        ]
    ),
    "dataset": pa.schema(
        [
            _f("face_id", pa.string(), False),
            _f("identity", pa.string(), False),
            _f("split", pa.string(), False),
            _f("file_path", pa.string(), False),  # relative to the dataset directory
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

# --- meshes (issue 6, stage reconstruct3d): one row per dataset face, one per fused identity mesh -------------
_F32 = pa.float32()
SCHEMAS["meshes"] = pa.schema(
    [
        _f("mesh_id", pa.string(), False),  # the face_id for a face; "m" + hash of the sorted face ids when fused
        _f("kind", pa.string(), False),  # face | fused
        _f("face_id", pa.string()),  # the face (kind face)
        _f("image_id", pa.string()),
        _f("face_ids", pa.list_(pa.string()), False),  # every face it was made from (lineage of a fused mesh)
        _f("image_ids", pa.list_(pa.string()), False),
        _f("identity", pa.string()),
        _f("status", pa.string(), False),  # ok | tiny_face | cut_by_border | extreme_pose | fit_failed | error
        _f("reason", pa.string()),
        _f("n_views", pa.int32(), False),
        _f("yaw", _F32),  # head pose, degrees (kind face)
        _f("pitch", _F32),
        _f("roll", _F32),
        _f("gaze_status", pa.string()),
        _f("gaze_yaw", _F32),
        _f("gaze_pitch", _F32),
        _f("fit_error", _F32),  # dense fit: mean landmark error, % of the face size (fused: worst view)
        _f("view_errors", pa.list_(_F32)),  # per view (fused), or [fit_error]
        _f("heldout_errors", pa.list_(_F32)),  # fused, >= 3 views: per view, the fit fused without it, on it
        _f("single_heldout_errors", pa.list_(_F32)),  # ... and the other views' single fits on it (mean)
        _f("fused_better", pa.bool_()),  # fused, >= 3 views: heldout < single_heldout on every view
        _f("box", pa.list_(_F32, 4)),  # detector box in the photo
        _f("crop", pa.list_(_F32, 4)),  # final regressor crop: cx, cy, side, theta
        _f("landmarks68", pa.list_(_F32)),  # regressor: 68 x (x, y, z) photo pixels
        _f("fit_landmarks68", pa.list_(_F32)),  # dense fit projected: 68 x (x, y), the training pseudo-labels
        _f("params62", pa.list_(_F32)),  # 3DMM parameters (3DDFA_V2 layout)
        _f("shape_coeffs", pa.list_(_F32)),  # SFM identity coefficients
        _f("mesh_dir", pa.string()),  # project-relative folder of the files below
        _f("obj_path", pa.string()),
        _f("glb_path", pa.string()),
        _f("texture_path", pa.string()),
        _f("landmarks_path", pa.string()),
        _f("json_path", pa.string()),
        _f("seconds", _F32),  # processing time (per face; fused: the fusion)
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
    _check_name(name)
    return SCHEMAS[name].with_metadata({"facedata.manifest": name, "facedata.schema_version": SCHEMA_VERSION})


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
