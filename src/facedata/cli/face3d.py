"""`facedata face3d IMAGE... [--multiview]` (3D faces from photos) and `facedata train 3d` (fine-tune the 3D
regressor on the project's faces). The work is in `facedata.recon3d`; this module only parses and reports."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from facedata.cli.common import project_params


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


@click.command("face3d")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--multiview", is_flag=True, help="the photos show one person: also fuse them into one mesh")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="output folder: <out>/<image>/face<k>/ per face, <out>/fused/ for --multiview (default: "
    "<project>/data/face3d/ inside a project, where git ignores it; ./face3d_out outside one)",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a regressor checkpoint from `facedata train 3d` (default: params recon3d.weights / 3DDFA_V2)",
)
@click.option(
    "--render/--no-render",
    default=True,
    show_default=True,
    help="write overlay.png + landmarks.png per face (and turntable.gif for --multiview)",
)
@click.option("--gaze/--no-gaze", default=None, help="estimate gaze (default: params recon3d.gaze)")
@click.option(
    "--json", "as_json", is_flag=True, help="print the summary as JSON (always written to <out>/face3d.json)"
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="take params from this project (default: the project around the current folder, if any)",
)
def face3d(images, multiview, out_dir, weights, render, gaze, as_json, root) -> None:
    """3D faces from photos: for every face, 68 3D landmarks, head pose, gaze, and a dense textured mesh
    (OBJ+MTL+PNG, GLB, landmarks68.xyz, face3d.json).

    \b
    Examples:
      facedata face3d photo.jpg                      every face in the photo
      facedata face3d a.jpg b.jpg c.jpg --multiview  three views of one person -> one fused mesh
    Output goes to --out, by default <project>/data/face3d/ inside a project and ./face3d_out outside one.
    Each face gets a status: ok, tiny_face, cut_by_border, extreme_pose, fit_failed, error (mesh files
    only for ok); a photo with no face is reported as no_face. Params come from the recon3d section of
    params.yaml when run inside a project.
    """
    from facedata.faces.detect import make_detector
    from facedata.imageio import ImageRejected, read_image_file
    from facedata.models import ModelError
    from facedata.recon3d import render as rmod
    from facedata.recon3d.evaluate import primary
    from facedata.recon3d.meshio import encode_png
    from facedata.recon3d.reconstruct import Reconstructor, View

    params, _ = project_params(root)
    p = dict(params["recon3d"])
    if gaze is not None:
        p["gaze"] = gaze
    out = Path(out_dir) if out_dir else default_out(root)
    try:
        detector = make_detector(params["detect"])
        rec = Reconstructor(p, weights or p.get("weights") or None)
    except (ModelError, FileNotFoundError, ValueError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)

    from tqdm import tqdm

    summary: list[dict] = []
    views: list[tuple[str, View]] = []
    render_error = None
    names: set[str] = set()
    for path in tqdm(images, desc="face3d", unit="img", file=sys.stderr, disable=len(images) < 2):
        name = _safe(Path(path).stem)
        while name in names:
            name += "_"
        names.add(name)
        entry: dict = {"image": str(path), "name": name, "faces": []}
        summary.append(entry)
        try:
            rgb = read_image_file(path).rgb
        except (OSError, ImageRejected) as exc:
            entry["status"], entry["reason"] = "unreadable", str(exc)
            continue
        dets = detector.detect([rgb])[0]
        if len(dets) == 0:
            entry["status"], entry["reason"] = "no_face", "the detector found no face"
            continue
        entry["status"] = "ok"
        results = rec.faces([rgb], [dets.boxes])[0]
        main = primary(dets.boxes, rgb.shape[1], rgb.shape[0])
        for r in results:
            folder = out / name / f"face{r.face_index}"
            extra_files = {}
            if render and r.fit is not None and render_error is None:
                try:
                    from facedata.recon3d.report import face_renders

                    extra_files = {
                        f"{k}.png": encode_png(v, 6) for k, v in face_renders(rgb, r, rec.sfm.triangles).items()
                    }
                except rmod.RenderUnavailable as exc:
                    render_error = str(exc)
            rec.write_face(r, folder, {"image": str(path), "face_index": r.face_index}, extra_files)
            entry["faces"].append(_face_line(r, folder, float(dets.scores[r.face_index])))
            if r.face_index == main and r.dense is not None:
                views.append((name, View.from_result(rgb, r, f"{name}/face{r.face_index}")))
    fused_info = None
    if multiview:
        fused_info = _fuse(rec, views, out, render, len(images))
    report = {"out": str(out), "images": summary, "fused": fused_info}
    if render_error:
        report["render_error"] = render_error
    out.mkdir(parents=True, exist_ok=True)
    from facedata import atomic

    atomic.write_json(out / "face3d.json", report)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_table(report)
    n_ok = sum(1 for e in summary for f in e["faces"] if f["status"] == "ok")
    if render_error:
        click.secho(f"renders skipped: {render_error}", fg="yellow", err=True)
    if n_ok == 0 and not (fused_info and fused_info.get("status") == "ok"):
        click.secho("no face could be reconstructed (see the status of each image above)", fg="red", err=True)
        sys.exit(1)


def default_out(root: str | None) -> Path:
    """Where `facedata face3d` writes without --out: under the project's git-ignored data/ inside a project,
    ./face3d_out outside one."""
    from facedata.project import ProjectError, find_root

    try:
        return find_root(root) / "data" / "face3d"
    except ProjectError:
        return Path("face3d_out")


def _face_line(r, folder: Path, score: float) -> dict:
    d = {
        "face": r.face_index,
        "status": r.status,
        "reason": r.reason,
        "score": round(score, 3),
        "dir": str(folder),
    }
    if r.fit is not None:
        d["pose"] = [round(float(v), 1) for v in r.fit.pose]
    if r.fit_error is not None:
        d["fit_error"] = round(r.fit_error, 3)
    if r.gaze is not None:
        d["gaze"] = r.gaze.to_dict()
    d["seconds"] = round(r.seconds, 3)
    return d


def _fuse(rec, views, out: Path, render: bool, n_images: int) -> dict:
    from facedata.recon3d import render as rmod

    if len(views) < 2:
        return {
            "status": "not_enough_views",
            "reason": f"{len(views)} of {n_images} photos gave a usable face; fusion needs 2",
        }
    fused = rec.fuse([v for _, v in views])
    extra = {}
    n_frames = int(rec.params["turntable_frames"])  # 0: no turntable
    if render and n_frames:
        try:
            frames = rmod.turntable(
                fused.dense.vertices(None), rec.sfm.triangles, rec.sfm.uv, fused.texture, frames=n_frames
            )
            extra["turntable.gif"] = rmod.gif_bytes(frames)
        except rmod.RenderUnavailable as exc:
            extra = {}
            click.secho(f"turntable skipped: {exc}", fg="yellow", err=True)
    files = rec.write_fused(fused, out / "fused", {"views": [n for n, _ in views]}, extra)
    return {
        "status": "ok",
        "dir": str(out / "fused"),
        "views": [n for n, _ in views],
        "view_errors": [round(e, 3) for e in fused.view_errors],
        "heldout_errors": _round(fused.heldout_errors),
        "single_heldout_errors": _round(fused.single_heldout_errors),
        "fused_better_on_every_heldout_view": fused.better_than_single,
        "files": sorted(p.name for p in files.values()),
    }


def _round(values: list[float] | None) -> list[float] | None:
    return None if values is None else [round(v, 3) for v in values]


def _print_table(report: dict) -> None:
    for e in report["images"]:
        if e.get("status") != "ok":
            click.echo(f"{e['image']}: {e['status']} ({e.get('reason')})")
            continue
        for f in e["faces"]:
            pose = "yaw/pitch/roll " + "/".join(f"{v:.0f}" for v in f["pose"]) if "pose" in f else ""
            err = f"fit {f['fit_error']:.2f}%" if "fit_error" in f else ""
            g = f.get("gaze") or {}
            gz = (
                f"gaze {g['yaw']:.0f}/{g['pitch']:.0f}"
                if g.get("status") == "ok"
                else f"gaze {g.get('status', '-')}"
            )
            colour = "green" if f["status"] == "ok" else "yellow"
            click.echo(
                f"{e['image']} face {f['face']}: "
                + click.style(f["status"], fg=colour)
                + f"  {pose}  {err}  {gz}  -> {f['dir']}"
                + (f"  ({f['reason']})" if f["reason"] else "")
            )
    fused = report.get("fused")
    if fused:
        if fused["status"] == "ok":
            check = (
                f"leave-one-view-out: fused from the other views {fused['heldout_errors']} vs their single-view "
                f"fits {fused['single_heldout_errors']}"
                if fused["heldout_errors"] is not None
                else "leave-one-view-out check needs 3 views"
            )
            click.echo(
                f"fused mesh of {len(fused['views'])} views -> {fused['dir']}: per-view error "
                f"{fused['view_errors']}; {check} (% of the face size)"
            )
        else:
            click.echo(f"fusion: {fused['status']} ({fused['reason']})")
    click.echo(f"summary: {Path(report['out']) / 'face3d.json'}")


COMMANDS = [face3d]
