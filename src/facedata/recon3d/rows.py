"""Rows of the `meshes` manifest (schema in `facedata.manifest`): one per face, one per fused identity mesh.

Paths are project-relative so a clone of the project reads the same manifest. A fused mesh's id hashes its
sorted face ids, so the same views give the same id and a rerun replaces the row instead of adding one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from facedata.recon3d.reconstruct import FaceResult, FusedResult


def fused_mesh_id(face_ids: list[str]) -> str:
    return "m" + hashlib.sha256("\x1f".join(sorted(face_ids)).encode()).hexdigest()[:32]


def _flat(a) -> list[float] | None:
    if a is None:
        return None
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _rel(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _file_columns(files: dict[str, Path], mesh_dir: Path, root: Path) -> dict:
    """The mesh folder and its files (see `Reconstructor.write_face`), relative to the project root."""
    return {
        "mesh_dir": _rel(mesh_dir, root),
        **{f"{kind}_path": _rel(files.get(kind), root) for kind in ("obj", "glb", "texture", "landmarks", "json")},
    }


def face_row(r: FaceResult, face: dict, root: Path, mesh_dir: Path, lineage: dict) -> dict:
    """`face` holds face_id, image_id and identity (a dataset row)."""
    fit, g = r.fit, r.gaze
    return {
        **_face_keys(face, r.status, r.reason),
        "yaw": None if fit is None else float(fit.pose[0]),
        "pitch": None if fit is None else float(fit.pose[1]),
        "roll": None if fit is None else float(fit.pose[2]),
        "gaze_status": None if g is None else g.status,
        "gaze_yaw": None if g is None else g.yaw,
        "gaze_pitch": None if g is None else g.pitch,
        "fit_error": r.fit_error,
        "view_errors": None if r.fit_error is None else [r.fit_error],
        "heldout_errors": None,
        "single_heldout_errors": None,
        "fused_better": None,
        "box": _flat(r.box),
        "crop": None if fit is None else _flat(fit.crop),
        "landmarks68": None if fit is None else _flat(fit.landmarks),
        "fit_landmarks68": _flat(r.fit_landmarks()),
        "params62": None if fit is None else _flat(fit.params),
        "shape_coeffs": None if r.dense is None else _flat(r.dense.shape),
        **_file_columns(r.files, mesh_dir, root),
        "seconds": float(r.seconds),
        "lineage": lineage,
    }


def error_row(face: dict, reason: str, lineage: dict) -> dict:
    """A face whose photo could not be read (or processed at all)."""
    return {**_face_keys(face, "error", reason), "lineage": lineage}


def _face_keys(face: dict, status: str, reason: str | None) -> dict:
    """The columns every one-face row has, from its dataset row."""
    return {
        "mesh_id": face["face_id"],
        "kind": "face",
        "face_id": face["face_id"],
        "image_id": face["image_id"],
        "face_ids": [face["face_id"]],
        "image_ids": [face["image_id"]],
        "identity": face.get("identity"),
        "status": status,
        "reason": reason,
        "n_views": 1,
    }


def fused_row(
    f: FusedResult,
    identity: str | None,
    image_ids: list[str],
    root: Path,
    mesh_dir: Path,
    seconds: float,
    lineage: dict,
) -> dict:
    face_ids = [v.face_id for v in f.views]
    return {
        "mesh_id": fused_mesh_id(face_ids),
        "kind": "fused",
        "face_id": None,
        "image_id": None,
        "face_ids": face_ids,
        "image_ids": image_ids,
        "identity": identity,
        "status": "ok",
        "reason": _fused_reason(f),
        "n_views": len(f.views),
        "fit_error": float(max(f.view_errors)),
        "view_errors": [float(e) for e in f.view_errors],
        "heldout_errors": _floats(f.heldout_errors),
        "single_heldout_errors": _floats(f.single_heldout_errors),
        "fused_better": f.better_than_single,
        "shape_coeffs": _flat(f.dense.shape),
        **_file_columns(f.files, mesh_dir, root),
        "seconds": float(seconds),
        "lineage": lineage,
    }


def _floats(values: list[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _fused_reason(f: FusedResult) -> str | None:
    if f.better_than_single is None:
        return "2 views: no leave-one-view-out check"
    if f.better_than_single:
        return None
    worse = [i for i, (a, b) in enumerate(zip(f.heldout_errors, f.single_heldout_errors, strict=True)) if a >= b]
    return f"held-out view(s) {worse}: the other views fused explain it no better than their single fits"


def files_present(row: dict, root: Path) -> bool:
    """Every file the row names exists (a reused row must still point at real files)."""
    keys = ("obj_path", "glb_path", "texture_path", "landmarks_path", "json_path")
    return all((root / row[k]).is_file() for k in keys if row.get(k))
