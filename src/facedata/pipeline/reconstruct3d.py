"""Stage `reconstruct3d`: a 3D face for every dataset face, and one fused mesh per identity (meshes manifest).

It runs after `export` because fusing the views of one person needs the identities the dataset settled, and
because `facedata train 3d` fine-tunes on exactly the dataset's faces. Faces whose row was made with the same
params (and whose files still exist) are reused; the rest go through in batches of photos, checkpointed, so a
killed run resumes where it stopped. Mesh folders live in `data/meshes/faces/<face_id>/` and
`data/meshes/fused/<mesh_id>/`; the run report (renders + a Prefect artifact page) in
`data/reports/reconstruct3d/`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facedata import manifest
from facedata.imageio import ImageRejected, read_image_file
from facedata.params import canonical_json
from facedata.pipeline.items import reusable, run_items, write_all
from facedata.pipeline.runner import StageContext

if TYPE_CHECKING:
    from facedata.models import ModelId
    from facedata.project import Project
from facedata.recon3d import report, rows
from facedata.recon3d.reconstruct import FaceResult, Reconstructor, View, choose_views

IMAGES_PER_BATCH = 16


def run(ctx: StageContext) -> dict:
    p = ctx.params["recon3d"]  # the params section is named for the area, not the stage
    root = Path(ctx.root)
    faces_dir, fused_dir = root / "data" / "meshes" / "faces", root / "data" / "meshes" / "fused"
    report_dir = ctx.project.reports_dir / "reconstruct3d"
    dataset = manifest.read("dataset", root).to_pylist()
    current = {r["face_id"]: r for r in dataset}
    old = manifest.read("meshes", root, missing_ok=True).to_pylist()
    model = model_identity(ctx.params, ctx.project)
    reused = reusable(
        old,
        ctx,
        lambda r: (
            r["kind"] == "face"
            and r["status"] != "error"
            and r["face_id"] in current
            and rows.files_present(r, root)
        ),
        model,
    )
    # A reused mesh keeps its geometry, but its identity is the dataset's now: review or reclustering may have
    # moved the face to another person since it was reconstructed (fusion groups faces by identity).
    reused = [{**r, "identity": current[r["face_id"]].get("identity")} for r in reused]
    done = {r["face_id"] for r in reused}
    todo_faces = [r for r in dataset if r["face_id"] not in done]
    by_image: dict[str, list[dict]] = defaultdict(list)
    for f in todo_faces:
        by_image[f["image_id"]].append(f)
    # one item per photo: its faces (the columns the reconstruction reads), so a shard carries its own work
    todo = [{"image_id": i, "faces": sorted(by_image[i], key=lambda f: f["face_id"])} for i in sorted(by_image)]

    rec: Reconstructor | None = None
    n_renders = int(p["renders"])

    def reconstructor() -> Reconstructor:
        nonlocal rec
        if rec is None:
            rec = _reconstructor(p)
        return rec

    def lineage() -> dict:
        if reconstructor().model_version != model.version:
            raise RuntimeError(
                f"the 3D models loaded are {reconstructor().model_version}, expected {model.version}"
            )
        return ctx.lineage(model)

    t0 = time.perf_counter()
    # old fused rows ride along in checkpoints, so a run killed before fusion keeps them reusable
    base = {"meshes": reused + [r for r in old if r["kind"] == "fused"]}
    result = run_items(
        ctx,
        todo,
        IMAGES_PER_BATCH,
        _make_worker,
        (p, str(root)),
        _reconstruct_batch,
        _to_rows,
        (str(root), ctx.lineage(model), model.version),
        base,
        model,
        1,  # the regressor and the dense fit use the process's cores; more processes only contend
        desc="reconstruct3d",
        unit="img",
    )
    face_rows = [r for r in result["meshes"] if r["kind"] == "face"]
    face_seconds = time.perf_counter() - t0

    fused_rows, fused_results = _fuse_identities(
        ctx, face_rows, current, old, fused_dir, reconstructor, lineage, model
    )
    _sync()
    write_all(ctx, {"meshes": face_rows + fused_rows})
    _remove_stale(faces_dir, {r["face_id"] for r in face_rows})
    _remove_stale(fused_dir, {r["mesh_id"] for r in fused_rows})

    statuses = Counter(r["status"] for r in face_rows)
    new_rows = [r for r in face_rows if r["face_id"] not in done]
    errs = [r["fit_error"] for r in face_rows if r["fit_error"] is not None]
    metrics = {
        "n_faces": len(face_rows),
        "n_ok": statuses.get("ok", 0),
        "status_counts": dict(sorted(statuses.items())),
        "median_fit_error_percent": round(float(np.median(errs)), 4) if errs else None,
        "n_gaze_ok": sum(1 for r in face_rows if r["gaze_status"] == "ok"),
        "n_fused": len(fused_rows),
        "n_fused_checked": sum(1 for r in fused_rows if r["fused_better"] is not None),
        "n_fused_better_than_single": sum(1 for r in fused_rows if r["fused_better"]),
    }
    ctx.run.update(
        n_processed=len(new_rows),
        n_reused=len(done),
        median_seconds_per_face=round(float(np.median([r["seconds"] for r in new_rows])), 4) if new_rows else None,
        # the whole face loop of this run: decoding, model start-up, files (bench_3d.py times the parts)
        run_faces_per_second=round(len(new_rows) / face_seconds, 2) if new_rows and face_seconds > 0 else None,
    )
    page = {**metrics, **ctx.run}
    kept_results = _render_results(reconstructor, face_rows, done, current, root, n_renders)
    if n_renders > 0:
        # Reused faces and meshes were not reconstructed in this run: render some of them again, so a rerun's
        # report shows as much as the first run's instead of thinning out to what changed.
        _top_up_renders(kept_results, face_rows, current, root, reconstructor, n_renders)
        if not fused_results and int(p["turntable_frames"]) > 0:
            fused_results = _refuse_first(fused_rows, face_rows, current, root, reconstructor)
    if n_renders > 0 and (kept_results or fused_results) and rec is not None:
        picked = [(fid[:12], img, res) for fid, (img, res) in sorted(kept_results.items())]
        fused = [(mid[:12], f) for mid, f in fused_results[:1]]
        ctx.run.update(
            report.write_report(
                report_dir,
                "reconstruct3d",
                picked,
                fused,
                rec.sfm.triangles,
                rec.sfm.uv,
                int(p["turntable_frames"]),
                page,
            )
        )
    else:
        # Nothing new to render (all faces reused, or renders off): the page still says what this run did, and
        # the stage's declared output exists for DVC.
        ctx.run.update(report.write_report(report_dir, "reconstruct3d", [], [], None, None, 0, page))
    return metrics


_LOADED: list = []  # [(key, Reconstructor)]: the last one built in this process


def _reconstructor(p: dict) -> Reconstructor:
    """The 3D models for these params, built once per process: the batches (local run) and the fusion and
    renders after them share one. The key has the weights file's size and time, so replaced weights reload."""
    weights = p.get("weights") or None
    stat = os.stat(weights) if weights and os.path.exists(weights) else None
    key = (canonical_json(p), stat and (stat.st_size, stat.st_mtime_ns))
    if not _LOADED or _LOADED[0][0] != key:
        _LOADED.clear()
        _LOADED.append((key, Reconstructor(p, weights)))
    return _LOADED[0][1]


def _make_worker(p: dict, root: str) -> tuple[Reconstructor, Path]:
    return _reconstructor(p), Path(root)


def _reconstruct_batch(state, batch: list[dict]) -> tuple[str, list[tuple[dict, FaceResult | str]]]:
    """(models' version, (face, result or the reason it could not be read) per face) for a batch of photos;
    each face's mesh files are written to `data/meshes/faces/<face_id>/` as it goes."""
    r3, root = state
    out: list[tuple[dict, FaceResult | str]] = []
    imgs, boxes, groups = [], [], []
    for item in batch:
        group = item["faces"]
        try:
            rgb = read_image_file(root / group[0]["store_path"], min_side=1).rgb
        except (OSError, ImageRejected) as exc:
            out += [(f, f"cannot read stored image: {exc}") for f in group]
            continue
        imgs.append(rgb)
        boxes.append(np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in group], dtype=np.float64))
        groups.append(group)
    for group, results in zip(groups, r3.faces(imgs, boxes) if imgs else [], strict=True):
        for f, res in zip(group, results, strict=True):
            folder = root / "data" / "meshes" / "faces" / f["face_id"]
            r3.write_face(res, folder, {"face_id": f["face_id"], "image_id": f["image_id"]})
            out.append((f, res))
    return r3.model_version, out


def _to_rows(result: tuple[str, list], args: tuple[str, dict, str]) -> dict[str, list[dict]]:
    version, out = result
    root, lineage, expected = args
    if version != expected:
        raise RuntimeError(f"the 3D models loaded are {version}, expected {expected}")
    faces_dir = Path(root) / "data" / "meshes" / "faces"
    return {
        "meshes": [
            rows.error_row(f, res, lineage)
            if isinstance(res, str)
            else rows.face_row(res, f, Path(root), faces_dir / f["face_id"], lineage)
            for f, res in out
        ]
    }


def _render_results(reconstructor, face_rows, done, current, root: Path, n: int) -> dict:
    """The first `n` faces made ok by this run (by photo), reconstructed again here for the report's renders
    (the same result: the model is deterministic), wherever the run itself went (local or on Dask workers)."""
    new_ok = sorted(
        (r["image_id"], r["face_id"]) for r in face_rows if r["status"] == "ok" and r["face_id"] not in done
    )
    picked = [fid for _, fid in new_ok[:n]] if n > 0 else []
    return _reconstruct_again(reconstructor, picked, current, root)


def _reconstruct_again(reconstructor, face_ids: list[str], current: dict, root: Path) -> dict:
    """{face_id: (rgb, result)} for the faces whose photo can still be read, reconstructed here."""
    out: dict = {}
    for fid in face_ids:
        f = current[fid]
        try:
            rgb = read_image_file(root / f["store_path"], min_side=1).rgb
        except (OSError, ImageRejected):
            continue
        box = np.array([[f["x1"], f["y1"], f["x2"], f["y2"]]], dtype=np.float64)
        [[res]] = reconstructor().faces([rgb], [box])
        out[fid] = (rgb, res)
    return out


def rows_model_name() -> str:
    from facedata.recon3d.bfm import MODEL_NAME
    from facedata.recon3d.dense import MODEL_NAME as SFM_NAME

    return f"{MODEL_NAME}+{SFM_NAME}"


def model_identity(params: dict, project: Project) -> ModelId:
    """The 3D models' identity without loading them: the regressor (registered weights, or fine-tuned ones from
    `recon3d.weights`) with its bases, and the Surrey Face Model; versions as `Reconstructor.model_version`."""
    from facedata import models
    from facedata.recon3d.bfm import MODEL_NAME
    from facedata.recon3d.dense import MODEL_NAME as SFM_NAME

    p = params["recon3d"]
    weights = project.resolve(p["weights"]) if p.get("weights") else None
    parts = [models.identity(MODEL_NAME), models.identity(SFM_NAME)]
    reg_version = parts[0].version
    if weights is not None:
        parts.append(models.file_identity(f"finetuned:{weights.name}", weights))
        reg_version = f"finetuned:{weights.name}"
    return models.combine(rows_model_name(), f"{reg_version}+{parts[1].version}", parts)


def _fuse_identities(ctx, face_rows, current, old, fused_dir, reconstructor, lineage, model):
    """One fused mesh per identity with enough usable views (reused when its views and params are unchanged)."""
    p = ctx.params["recon3d"]  # the params section is named for the area, not the stage
    root = Path(ctx.root)
    if not p["fuse"]:
        return [], []
    usable = defaultdict(list)
    for r in face_rows:
        good = r["status"] in ("ok", "extreme_pose") and r["fit_error"] is not None and r["identity"]
        if good and r["fit_error"] <= p["max_fit_error"] and r["landmarks68"] and r["shape_coeffs"]:
            usable[r["identity"]].append(r)

    def reuse(r: dict) -> bool:  # rows from before the leave-one-view-out check are redone
        checked = r["n_views"] < 3 or r["heldout_errors"] is not None
        return r["kind"] == "fused" and checked and rows.files_present(r, root)

    old_fused = {r["mesh_id"]: r for r in reusable(old, ctx, reuse, model)}
    out_rows, results = [], []
    for identity in sorted(usable):
        cands = sorted(usable[identity], key=lambda r: r["face_id"])
        if len(cands) < p["fuse_min_views"]:
            continue
        picked = [cands[i] for i in choose_views([r["yaw"] for r in cands], p["fuse_max_views"])]
        mesh_id = rows.fused_mesh_id([r["face_id"] for r in picked])
        if mesh_id in old_fused:
            out_rows.append({**old_fused[mesh_id], "identity": identity})
            continue
        views = _load_views(picked, current, root)
        if len(views) < p["fuse_min_views"]:
            continue
        t0 = time.perf_counter()
        rec = reconstructor()
        fused = rec.fuse(views)
        folder = fused_dir / rows.fused_mesh_id([v.face_id for v in views])
        rec.write_fused(fused, folder, {"identity": identity, "face_ids": [v.face_id for v in views]})
        seconds = time.perf_counter() - t0
        image_ids = [current[v.face_id]["image_id"] for v in views]
        out_rows.append(rows.fused_row(fused, identity, image_ids, root, folder, seconds, lineage()))
        results.append((out_rows[-1]["mesh_id"], fused))
    return out_rows, results


def _load_views(picked: list[dict], current: dict[str, dict], root: Path) -> list[View]:
    """The views fusion needs (image, landmarks, shape, yaw) for face rows; unreadable images are left out."""
    views = []
    for r in picked:
        try:
            rgb = read_image_file(root / current[r["face_id"]]["store_path"], min_side=1).rgb
        except (OSError, ImageRejected):
            continue
        lm = np.asarray(r["landmarks68"], dtype=np.float64).reshape(68, 3)
        views.append(View(rgb, lm, np.asarray(r["shape_coeffs"]), float(r["yaw"]), r["face_id"]))
    return views


def _top_up_renders(kept: dict, face_rows: list[dict], current: dict, root: Path, reconstructor, n: int) -> None:
    """Reconstruct again the first ok faces (by face id) that this run reused, until `kept` holds `n`."""
    extra = sorted(
        (r for r in face_rows if r["status"] == "ok" and r["face_id"] not in kept), key=lambda r: r["face_id"]
    )
    kept.update(
        _reconstruct_again(reconstructor, [r["face_id"] for r in extra[: max(0, n - len(kept))]], current, root)
    )


def _refuse_first(fused_rows: list[dict], face_rows: list[dict], current: dict, root: Path, reconstructor) -> list:
    """The first fused mesh (by id) fused again from its views, for the report's turntable; [] when none."""
    ok = sorted((r for r in fused_rows if r.get("face_ids")), key=lambda r: r["mesh_id"])
    if not ok:
        return []
    by_id = {r["face_id"]: r for r in face_rows}
    views = _load_views([by_id[f] for f in ok[0]["face_ids"] if f in by_id], current, root)
    return [(ok[0]["mesh_id"], reconstructor().fuse(views))] if views else []


def _sync() -> None:
    """Mesh files are not fsynced one by one (see recon3d.meshio); flush them before the manifest commits."""
    if hasattr(os, "sync"):
        os.sync()


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Mesh folders no manifest row points at any more (faces that left the dataset)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
