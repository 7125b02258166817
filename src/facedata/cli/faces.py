"""`facedata models` (what recognizers and detectors are available, and where their weights are) and
`facedata faces` (detect, score and optionally embed faces in image files, for a quick look)."""

from __future__ import annotations

import json
import sys

import click


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="the project whose models.dir to search (default: the project around the current folder, if any)",
)
@click.pass_context
def models(ctx, as_json, root) -> None:
    """List the models facedata knows, whether their weights are available, and where they were found.

    \b
    Weights are looked for in $FACEDATA_MODELS_DIR/<folder>, the user cache (~/.cache/facedata/models), the
    installed packages (and torch's checkpoint cache for FaceNet), then downloaded from the official URL with
    a sha256 check unless FACEDATA_OFFLINE=1. Download ahead of time with `facedata models fetch NAME`.
    Your own ONNX recognizer needs no registration: set `embed.model: onnx:path/to/model.onnx`.
    Inside a project, its params.yaml `models.dir` is searched first (as a build does), unless
    $FACEDATA_MODELS_DIR is set; the models its params use are marked `*`.
    """
    if ctx.invoked_subcommand is not None:
        return
    import os

    from facedata.models import MODELS_DIR_ENV, cache_dir, status

    where, used = _project_models(root)
    rows = status()
    for r in rows:
        r["used_by_project"] = r["name"] in used
    if as_json:
        for r in rows:
            r["models_dir"], r["models_dir_from"] = os.environ.get(MODELS_DIR_ENV), where
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"models dir: {os.environ.get(MODELS_DIR_ENV, '(none)')} ({where}); cache: {cache_dir()}")
    for r in rows:
        mark = click.style("available", fg="green") if r["available"] else click.style("missing", fg="yellow")
        star = "*" if r["used_by_project"] else " "
        click.echo(f"{star}{r['name']:<16} {r['kind']:<10} {mark}  {r['description']}")
        for f in r["files"]:
            click.echo(f"{'':<19}{f}")
        click.echo(f"{'':<19}license: {r['license']}")
    click.echo("onnx:<path>       embedder   any ONNX recognizer; input spec in params.yaml embed.onnx")


def _project_models(root: str | None) -> tuple[str, set[str]]:
    """(where the models dir comes from, the registered models the project's params use): the project's
    `models.dir` becomes $FACEDATA_MODELS_DIR as in a build (`Project.activate`)."""
    import os

    from facedata.models import MODELS_DIR_ENV
    from facedata.params import ParamsError
    from facedata.project import Project, ProjectError

    preset = os.environ.get(MODELS_DIR_ENV)
    try:
        project = Project.find(root)
    except ProjectError as exc:
        if root:
            raise click.UsageError(str(exc)) from exc
        return ("$" + MODELS_DIR_ENV if preset else "no project here: user cache, packages, download"), set()
    if preset:
        where = f"${MODELS_DIR_ENV}, which wins over {project.root / 'params.yaml'}"
    elif os.environ.get(MODELS_DIR_ENV):
        where = f"models.dir of {project.root / 'params.yaml'}"
    else:
        where = f"{project.root / 'params.yaml'} sets no models.dir"
    try:
        p = project.params
    except ParamsError:
        return where + " (its params.yaml has problems: see `facedata check`)", set()
    from facedata.embed import VIEW_MODELS

    used = {p["detect"]["detector"], p["embed"]["model"], *(VIEW_MODELS[v] for v in p["embed"]["align_views"])}
    if p["ingest"]["video_faces_only"] and p["sources"]["videos"]:
        used.add("yunet")
    if "reconstruct3d" in (project.root / "dvc.yaml").read_text(encoding="utf-8", errors="replace"):
        used |= {"3ddfa-v2-mb05", "sfm-3448"}
    return where, used


@models.command("fetch")
@click.argument("names", nargs=-1, required=True)
def fetch(names) -> None:
    """Download (sha256-checked) the weights of the named models into the user cache, unless present."""
    from facedata.models import ModelError, locate

    for name in names:
        try:
            paths = locate(name)
        except ModelError as exc:
            raise click.ClickException(str(exc)) from exc
        for p in paths.values():
            click.echo(f"{name}: {p}")


@click.command("faces")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--embed", "with_embed", is_flag=True, help="also compute each face's embedding (embed params)")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines, one per image")
@click.option("--workers", type=int, default=None, help="worker processes (default: params detect.workers)")
def faces(paths, with_embed, as_json, workers) -> None:
    """Detect faces in image files with this project's `detect` params (the defaults outside a project):
    box, score, landmarks, quality and, for filtered faces, why.

    \b
    Example:  facedata faces photo.jpg other.png --json
    Exit code 0 when every file was read (with or without faces), 1 when some could not be, 2 for usage.
    """
    from facedata.cli.common import exit_for, project_params
    from facedata.faces.analyze import analyze_files
    from facedata.models import ModelError

    params, _ = project_params()
    n = params["detect"]["workers"] if workers is None else workers
    n_failed = 0
    try:
        results = analyze_files(list(paths), params["detect"], params["embed"] if with_embed else None, n)
        for res in results:
            n_failed += res.status == "error"
            faces_out = [
                {
                    "index": f.index,
                    "box": [round(float(v), 1) for v in f.box],
                    "score": round(f.score, 4),
                    "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
                    "primary": f.is_primary,
                    "size_px": round(f.size_px, 1),
                    "blur": round(f.blur, 1),
                    "yaw": round(f.yaw, 1),
                    "pitch": round(f.pitch, 1),
                    "roll": round(f.roll, 1),
                    "quality": round(f.quality, 3),
                    "status": "ok" if f.ok else "filtered",
                    "reason": "; ".join(f.reasons) or None,
                    **(
                        {"embedding": [round(float(v), 6) for v in f.embedding]} if f.embedding is not None else {}
                    ),
                }
                for f in res.faces
            ]
            if as_json:
                click.echo(
                    json.dumps({"path": res.path, "status": res.status, "reason": res.reason, "faces": faces_out})
                )
                continue
            click.echo(
                f"{res.path}: {res.status}" + (f" ({res.reason})" if res.reason else f", {len(res.faces)} face(s)")
            )
            for f in faces_out:
                extra = f"  filtered: {f['reason']}" if f["reason"] else ""
                click.echo(
                    f"  #{f['index']} box {f['box']} score {f['score']} quality {f['quality']} "
                    f"yaw {f['yaw']} pitch {f['pitch']} roll {f['roll']}{extra}"
                )
    except ModelError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    if n_failed:
        click.secho(f"{n_failed} of {len(paths)} file(s) could not be read", fg="red", err=True)
    exit_for(n_failed)


COMMANDS = [models, faces]
