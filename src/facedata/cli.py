"""The `facedata` command. Every command has --help; errors say what to do next."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from facedata import __version__


def _fail(message: str, code: int = 2) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="facedata")
def main() -> None:
    """facedata: build clean, lineage-tracked face datasets from cast lists, web pages and video.

    \b
    Quick start (the demo cast, from inside this repository):
      facedata build              run the whole pipeline (Prefect flow over the DVC stages)
      facedata summary            where the outputs are, and the metrics
      facedata lineage ID         trace a dataset face back to its source
    New project:
      facedata init DIR --folder PHOTOS_ROOT [--video CLIP.mp4]
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--folder",
    "folders",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="a tree <name>/<images>; each sub-folder name is a queried name (repeatable)",
)
@click.option("--labeled", is_flag=True, help="the folder names are ground-truth identities (enables metrics)")
@click.option("--max-per-name", type=int, default=None, help="take at most this many images per name")
@click.option(
    "--video",
    "videos",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="a video whose sampled frames join the collection (repeatable)",
)
@click.option(
    "--models-dir",
    type=click.Path(exists=True, file_okay=False),
    help="folder holding model weights (params models.dir); see `facedata models`",
)
@click.option("--no-git", is_flag=True, help="do not run git init / dvc init")
def init(directory, folders, labeled, max_per_name, videos, models_dir, no_git) -> None:
    """Create a facedata project in DIRECTORY (params.yaml, dvc.yaml, stages/, git + DVC)."""
    from facedata.scaffold import init_project

    def folder_entry(f: str) -> dict:
        entry: dict = {"root": os.path.abspath(f), "labeled": labeled}
        if max_per_name:
            entry["max_per_name"] = max_per_name
        return entry

    sources = {
        "folders": [folder_entry(f) for f in folders],
        "videos": [{"path": os.path.abspath(v)} for v in videos],
    }
    try:
        values = {"models.dir": os.path.abspath(models_dir)} if models_dir else None
        root = init_project(directory, sources, git=not no_git, values=values)
    except (FileExistsError, RuntimeError) as exc:
        _fail(str(exc))
    click.echo(f"created {root}\nnext: cd {directory} && facedata build")


@main.command()
@click.option("--stage", "stages", multiple=True, help="run only these stages (repeatable), in DAG order")
@click.option("--force", is_flag=True, help="rerun stages even when DVC finds them up to date")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def build(stages, force, root) -> None:
    """Run the pipeline: a Prefect flow with one task per DVC stage, in DAG order.

    With no PREFECT_API_URL set, Prefect starts a temporary local server for the run; set PREFECT_API_URL
    (e.g. to a `prefect server start` at http://127.0.0.1:4200/api) to watch runs in the Prefect UI.
    """
    from facedata.project import Project, ProjectError

    try:
        project = Project.find(root)
    except ProjectError as exc:
        _fail(str(exc))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from facedata.flow import build_flow

    click.echo(f"facedata build in {project.root}", err=True)
    try:
        build_flow(root=str(project.root), stages=list(stages) or None, force=force)
    except Exception as exc:  # the flow already logged the details; say what failed and where to look
        click.secho(f"\nbuild failed: {exc}", fg="red", err=True)
        report = project.reports_dir / "validate.html"
        if report.exists():
            click.echo(f"validation report: {report}", err=True)
        sys.exit(1)
    _print_summary(project.root)


@main.command()
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def stage(name, root) -> None:
    """Run one stage directly (what `dvc repro` runs); prefer `facedata build` or `dvc repro`."""
    from facedata.pipeline.runner import run_stage

    sys.exit(run_stage(name, root))


@main.command()
@click.argument("ident")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@click.option("--json", "as_json", is_flag=True, help="print the chain as JSON")
def lineage(ident, root, as_json) -> None:
    """Trace IDENT back to its source: a dataset face id, face id, image id (or a unique prefix of one), or the
    path of a file in the exported dataset."""
    from facedata.manifest import ManifestError
    from facedata.project import Project, ProjectError
    from facedata.trace import TraceError, chain, format_chain

    try:
        steps = chain(Project.find(root).root, ident)
    except (TraceError, ManifestError, ProjectError) as exc:
        _fail(str(exc), 1)
    click.echo(json.dumps(steps, indent=2, default=str) if as_json else format_chain(steps))


@main.command()
def params() -> None:
    """List every parameter of params.yaml with its default and allowed values."""
    from facedata.params import describe

    for key, default, rule, help_ in describe():
        extra = f"  [{rule}]" if rule else ""
        click.echo(f"{key:<34} {json.dumps(default):<22} {help_}{extra}")


@main.command()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def summary(root) -> None:
    """Where the outputs of the last build are, and its headline metrics."""
    from facedata.project import Project, ProjectError

    try:
        _print_summary(Project.find(root).root)
    except ProjectError as exc:
        _fail(str(exc))


def _print_summary(root: Path) -> None:
    from facedata.pipeline.runner import STAGES

    metrics = {}
    for s in STAGES:
        p = root / "data" / "metrics" / f"{s}.json"
        if p.exists():
            metrics[s] = json.loads(p.read_text())
    if not metrics:
        click.echo("no stage has run yet: `facedata build`")
        return
    m = lambda s, k, d="-": metrics.get(s, {}).get(k, d)  # noqa: E731
    click.echo("\nfacedata outputs")
    click.echo(
        f"  dataset        {root / 'data' / 'dataset'}  ({m('export', 'n_faces')} faces, "
        f"{m('export', 'n_identities')} identities, splits {m('export', 'splits')})"
    )
    click.echo(f"  manifest       {root / 'data' / 'dataset' / 'dataset.parquet'}")
    click.echo(f"  all manifests  {root / 'data' / 'manifests'}")
    click.echo(
        f"  validation     {root / 'data' / 'reports' / 'validate.html'}  (passed: {m('validate', 'passed')})"
    )
    if "train" in metrics:
        click.echo(
            f"  recognizer     {root / 'data' / 'models' / 'recognizer'}  (test top-1 {m('train', 'top1')}, "
            f"TAR @ FAR 1e-2 {m('train', 'tar_at_far_1e-2')}; `facedata identify PHOTO`)"
        )
    click.echo("\nsummary")
    click.echo(
        f"  images {m('ingest', 'n_images')} ({m('ingest', 'n_video_frames')} video frames, "
        f"{m('ingest', 'n_failed')} failed, {m('ingest', 'n_duplicates')} duplicates)"
    )
    click.echo(
        f"  faces {m('detect', 'n_faces')} ({m('detect', 'n_faces_ok')} usable), detection rate "
        f"{m('detect', 'detection_rate')}"
    )
    click.echo(f"  clusters {m('cluster', 'n_clusters')}, identities {m('cluster', 'identities')}")
    lab = metrics.get("cluster", {}).get("labelled")
    if lab:
        click.echo(
            "  against labels: "
            + ", ".join(
                f"{k} {lab[k]}"
                for k in (
                    "purity",
                    "inverse_purity",
                    "bcubed_f",
                    "pairwise_f",
                    "nmi",
                    "n_clusters",
                    "compactness",
                    "n_no_face",
                )
                if k in lab
            )
        )
    click.echo("\ntrace any dataset face: facedata lineage <face_id or file path>")


@main.command("dvc-yaml")
@click.option("--write", is_flag=True, help="write dvc.yaml in the current directory instead of printing it")
@click.option("--no-code-deps", is_flag=True, help="leave out the facedata source files as deps (installed use)")
def dvc_yaml(write, no_code_deps) -> None:
    """Print (or write) dvc.yaml rendered from the stage DAG definition."""
    from facedata.pipeline.dag import render_dvc_yaml

    text = render_dvc_yaml(code_deps=not no_code_deps)
    if write:
        Path("dvc.yaml").write_text(text, encoding="utf-8")
        click.echo("wrote dvc.yaml")
    else:
        click.echo(text, nl=False)


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    from facedata import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"facedata.commands.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            main.add_command(command)


_register_command_modules()

if __name__ == "__main__":
    main()
