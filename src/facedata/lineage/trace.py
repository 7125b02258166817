"""`facedata lineage`: from a dataset face, a face, an image (ids, unique id prefixes, or a file) back through
every stage to where the image came from, with the code and params version of each step.

A file is identified by its content, never by its name: its sha256 must be a dataset file's recorded
`file_sha256` (an exported crop, wherever it was copied) or an image's id (the stored image, or the original
photo it was collected from). A file inside the dataset folder whose bytes no longer match its row is
reported as modified. The readable form prints every value with control characters escaped, so a crafted
source name cannot forge lines of the output.
"""

from __future__ import annotations

import os
from pathlib import Path

from facedata import manifest
from facedata.ids import sha256_file


class TraceError(LookupError):
    pass


def _rows(root: Path, name: str) -> list[dict]:
    return manifest.read(name, root, missing_ok=True).to_pylist()


def _match(rows: list[dict], key: str, ident: str) -> list[dict]:
    exact = [r for r in rows if r[key] == ident]
    return exact or [r for r in rows if r[key].startswith(ident)]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def resolve(root: str | os.PathLike, ident: str) -> tuple[str, str]:
    """('dataset'|'face'|'image', full id) for an id, a unique prefix of one, or a file (by its content)."""
    root = Path(root)
    dataset = _rows(root, "dataset")
    file = _existing_file(root, ident)
    if file is not None:
        return _resolve_file(root, file, dataset)
    if os.sep in ident or "/" in ident or ident.lower().endswith(IMAGE_SUFFIXES):
        raise TraceError(f"no such file: {printable(ident)}")
    if len(ident) < 6:
        raise TraceError("give at least 6 characters of an id")
    for kind, name, key in (
        ("dataset", "dataset", "face_id"),
        ("face", "faces", "face_id"),
        ("image", "images", "image_id"),
    ):
        hits = dataset if name == "dataset" else None
        hits = _match(hits if hits is not None else _rows(root, name), key, ident)
        if len(hits) == 1:
            return kind, hits[0][key]
        if len(hits) > 1:
            raise TraceError(f"{ident!r} matches {len(hits)} {name} ids; give more characters")
    raise TraceError(f"no dataset face, face or image id starts with {ident!r} in {root}")


def _existing_file(root: Path, ident: str) -> Path | None:
    """The file `ident` names, relative to the working directory or else to the project root."""
    for candidate in (Path(ident), root / ident):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _resolve_file(root: Path, file: Path, dataset: list[dict]) -> tuple[str, str]:
    sha = sha256_file(file)
    try:
        rel = file.relative_to((root / "data" / "dataset").resolve()).as_posix()
    except ValueError:
        rel = None
    at_path = next((r for r in dataset if rel is not None and r["file_path"] == rel), None)
    if at_path is not None:
        if at_path["file_sha256"] != sha:
            raise TraceError(
                f"{printable(file)} was modified after export: its sha256 {sha} is not the recorded "
                f"{at_path['file_sha256']} of dataset face {at_path['face_id']}"
            )
        return "dataset", at_path["face_id"]
    same = [r for r in dataset if r["file_sha256"] == sha]
    if len(same) == 1:
        return "dataset", same[0]["face_id"]
    if len(same) > 1:
        ids = ", ".join(r["face_id"] for r in same[:5])
        raise TraceError(
            f"{printable(file)} has the content of {len(same)} dataset files (faces {ids}); give a face id"
        )
    if any(r["image_id"] == sha for r in _rows(root, "images")):
        return "image", sha
    raise TraceError(
        f"no dataset file or collected image of {root} has the content of {printable(file)} (sha256 {sha})"
    )


def chain(root: str | os.PathLike, ident: str) -> list[dict]:
    """The lineage chain, newest step first: each step is {step, id, fields, lineage}."""
    root = Path(root)
    kind, full = resolve(root, ident)
    steps: list[dict] = []
    face_id = image_id = None
    if kind == "dataset":
        row = next(r for r in _rows(root, "dataset") if r["face_id"] == full)
        steps.append(
            _step("dataset", full, row, ["identity", "split", "file_path", "file_sha256"], row["lineage"])
        )
        face_id = full
    if kind == "face":
        face_id = full
    if face_id is not None:
        cl = next((r for r in _rows(root, "clusters") if r["face_id"] == face_id), None)
        if cl:
            steps.append(
                _step(
                    "cluster", cl["cluster_id"], cl, ["method", "cluster_size", "identity", "doubt"], cl["lineage"]
                )
            )
        for e in (r for r in _rows(root, "embeddings") if r["face_id"] == face_id):
            steps.append(_step("embedding", e["model"], e, ["model_version", "dim"], e["lineage"]))
        face = next((r for r in _rows(root, "faces") if r["face_id"] == face_id), None)
        if face is None:
            raise TraceError(f"face {face_id} is not in the faces manifest (was detect rerun since?)")
        face = {**face, "box": [round(face[k], 1) for k in ("x1", "y1", "x2", "y2")]}
        steps.append(
            _step(
                "face",
                face_id,
                face,
                [
                    "face_index",
                    "detector",
                    "box",
                    "score",
                    "is_primary",
                    "blur",
                    "quality",
                    "status",
                    "reason",
                    "crop_path",
                ],
                face["lineage"],
            )
        )
        image_id = face["image_id"]
    if kind == "image":
        image_id = full
    img = next((r for r in _rows(root, "images") if r["image_id"] == image_id), None)
    if img is None:
        raise TraceError(f"image {image_id} is not in the images manifest")
    steps.append(
        _step(
            "image",
            image_id,
            img,
            ["store_path", "format", "width", "height", "n_bytes", "mode", "phash", "dup_of"],
            img["lineage"],
        )
    )
    src_fields = [
        "source_kind",
        "source_uri",
        "query_name",
        "label",
        "fetched_at",
        "page_url",
        "final_url",
        "http_status",
        "content_type",
        "license",
        "author",
        "license_url",
        "usage_terms",
        "attribution_required",
        "restrictions",
        "video_id",
        "frame_index",
        "timestamp_s",
    ]
    steps.append(_step("source", img["source_uri"], img, src_fields, None))
    for log in (r for r in _rows(root, "crawl_log") if r["image_id"] == image_id):
        steps.append(
            _step("crawl_log", log["log_id"], log, ["status", "reason", "source_uri", "attempts"], log["lineage"])
        )
    return steps


def _step(step: str, ident: str, row: dict, fields: list[str], lineage: dict | None) -> dict:
    return {
        "step": step,
        "id": ident,
        "fields": {k: row.get(k) for k in fields if row.get(k) is not None},
        "lineage": lineage,
    }


def printable(value) -> str:
    """`value` as one line of text: control characters (newlines, escapes, line separators) shown escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def format_chain(steps: list[dict]) -> str:
    lines = []
    for s in steps:
        lines.append(f"{s['step']:<10} {printable(s['id'])}")
        for k, v in s["fields"].items():
            lines.append(f"{'':<10}   {k}: {printable(v)}")
        lin = s["lineage"]
        if lin:
            model = (
                f", model {lin['model_name']} {lin['model_version'] or ''}".rstrip() if lin["model_name"] else ""
            )
            lines.append(
                printable(
                    f"{'':<10}   made by stage {lin['stage']} (facedata {lin['code_version']} @ "
                    f"{lin['git_rev']}, params {lin['params_hash']}{model}) run {lin['run_id']} at "
                    f"{lin['created_at']}"
                )
            )
    return "\n".join(lines)
