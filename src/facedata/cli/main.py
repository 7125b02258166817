"""The `facedata` command. Every command has --help; errors say what to do next."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from facedata import __version__
from facedata.cli.common import add_commands, wait_option


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
    from facedata.pipeline.scaffold import init_project

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


def dask_option():
    return click.option(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="run detect/embed/reconstruct3d shards on a Dask cluster: tcp://HOST:8786 (a `dask scheduler`) or "
        "local:N (N worker processes here); overrides execution.dask_address",
    )


def _use_dask(address: str | None) -> None:
    """Hand --dask to the stages (DVC starts them as subprocesses: the environment reaches them)."""
    if address is None:
        return
    from facedata.scale.connect import ENV, ScaleError, check_address

    try:
        check_address(address)
    except ScaleError as exc:
        _fail(f"--dask: {exc}")
    os.environ[ENV] = address


@main.command()
@click.option("--stage", "stages", multiple=True, help="run only these stages (repeatable), in DAG order")
@click.option("--force", is_flag=True, help="rerun stages even when DVC finds them up to date")
@wait_option()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@click.option("--push", is_flag=True, help="after a successful build, `dvc push` to the default DVC remote")
@dask_option()
def build(stages, force, wait, root, push, dask) -> None:
    """Run the pipeline: a Prefect flow with one task per DVC stage, in DAG order.

    params.yaml is checked first (`facedata check`): a bad parameter stops the build before any stage runs.
    The build holds the project lock: other writers (`ingest-urls`, `ingest-video`, another build) wait or
    refuse until it ends. With no PREFECT_API_URL set, Prefect starts a temporary local server for the run
    (stopped on exit, Ctrl-C and SIGTERM included); set PREFECT_API_URL (e.g. to a `prefect server start` at
    http://127.0.0.1:4200/api) to watch runs in the Prefect UI. With --push, the outputs go to the project's
    default DVC remote (`dvc remote add -d NAME URL`), so teammates get them with `dvc pull` instead of
    rebuilding. With --dask (or execution.dask_address), detect, embed and reconstruct3d run as shards on a
    Dask cluster and the cluster stage's large kNN search too; the results are the same (docs/scale.md).

    \b
    Exit code 0 when every stage succeeded, 1 when a stage failed, 2 for a usage or configuration problem
    (bad params, another writer busy with the project), 130/143 when interrupted (finished work is kept).
    """
    from facedata.lock import ProjectBusy, describe, holder
    from facedata.project import Project, ProjectError

    try:
        project = Project.find(root)
    except ProjectError as exc:
        _fail(str(exc))
    _use_dask(dask)
    if not _report_check(project.root):
        _fail("params.yaml has problems (listed above); nothing was run")
    if stages:
        from facedata.api import check_stage_names

        try:
            check_stage_names(project.root, stages)
        except ValueError as exc:
            _fail(f"{exc}; nothing was run")
    busy = holder(project.root)
    if busy and not wait:
        _fail(f"the project is busy: {describe(busy)} is writing its data; wait for it, or pass --wait SECONDS")
    from facedata.api import load_build_flow

    build_flow = load_build_flow()
    from facedata.flows.build import default_remote, push_outputs
    from facedata.interrupt import sigterm_as_interrupt

    if push and not default_remote(project.root):
        _fail(
            "--push needs a default DVC remote: `dvc remote add -d NAME URL` (a folder, s3://, gs://, ssh://), "
            "then commit .dvc/config"
        )
    click.echo(f"facedata build in {project.root}", err=True)
    started = time.time()
    try:
        with sigterm_as_interrupt():
            build_flow(root=str(project.root), stages=list(stages) or None, force=force, wait=wait)
    except ProjectBusy as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        signal_name = "SIGTERM" if "signal" in str(exc) else "Ctrl-C"
        click.secho(
            f"\nbuild interrupted ({signal_name}): finished work is kept; `facedata build` resumes",
            fg="red",
            err=True,
        )
        sys.exit(143 if signal_name == "SIGTERM" else 130)
    except Exception as exc:  # the stage's own lines are in the log above: say once what failed, where to look
        from facedata.pipeline.summary import build_record_path, stage_lines

        record = build_record_path(project.root)
        if record.exists() and record.stat().st_mtime >= started:  # this build got as far as its stages
            click.echo("\n".join(stage_lines(project.root, failure_notes=False)), err=True)
        click.secho(f"\nbuild failed: {exc}", fg="red", err=True)
        report = project.reports_dir / "validate.html"
        if report.exists() and "quality checks failed" in str(exc):
            click.echo(f"validation report: {report}", err=True)
        sys.exit(1)
    _print_summary(project.root)
    if push:
        try:
            click.echo(push_outputs(project.root), err=True)
        except RuntimeError as exc:
            _fail(str(exc), 1)


@main.command()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def check(root) -> None:
    """Check params.yaml before anything runs: unknown sections or keys, wrong types, values out of range,
    parameters dvc.yaml tracks but params.yaml lacks. `facedata build` and the pipeline's first DVC stage run
    the same check, so a bad parameter never costs a stage its outputs.

    \b
    Exit code 0 when params.yaml is fine (warnings allowed), 1 when it has problems, 2 outside a project.
    """
    from facedata.project import ProjectError, find_root

    try:
        project_root = find_root(root)
    except ProjectError as exc:
        _fail(str(exc))
    sys.exit(0 if _report_check(project_root) else 1)


def _report_check(root: Path) -> bool:
    """Print the pre-flight check's problems and warnings; True when params.yaml is usable."""
    from facedata.pipeline.check import check_project

    result = check_project(root)
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    for error in result.errors:
        click.secho(f"error: {error}", fg="red", err=True)
    if result.ok:
        click.echo(f"params.yaml ok: {root / 'params.yaml'}", err=True)
    return result.ok


@main.command()
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@dask_option()
def stage(name, root, dask) -> None:
    """Run one stage directly (what `dvc repro` runs); prefer `facedata build` or `dvc repro`."""
    from facedata.pipeline.runner import run_stage

    _use_dask(dask)
    sys.exit(run_stage(name, root))


@main.command()
@click.argument("ident")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@click.option("--json", "as_json", is_flag=True, help="print the chain as JSON")
def lineage(ident, root, as_json) -> None:
    """Trace IDENT back to its source: a dataset face id, face id, image id (or a unique prefix of one), or the
    path of a file in the exported dataset."""
    from facedata.lineage.trace import TraceError, chain, format_chain
    from facedata.manifest import ManifestError
    from facedata.project import Project, ProjectError

    try:
        steps = chain(Project.find(root).root, ident)
    except (TraceError, ManifestError, ProjectError) as exc:
        _fail(str(exc), 1)
    click.echo(json.dumps(steps, indent=2, default=str) if as_json else format_chain(steps))


@main.command()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@click.option("--json", "as_json", is_flag=True, help="print as JSON: key, value, from, default, rule, help")
def params(root, as_json) -> None:
    """List every parameter with its value and where it came from: inside a project, its params.yaml (`yaml`)
    or the default (`default`, the key is not in params.yaml); outside one, the defaults. Then what the key
    does and its allowed values."""
    import yaml

    from facedata.params import ParamsError, describe, has
    from facedata.project import Project, ProjectError

    values, raw, where = None, {}, "defaults (no params.yaml here or above)"
    try:
        project = Project.find(root)
        raw = yaml.safe_load((project.root / "params.yaml").read_text(encoding="utf-8")) or {}
        values, where = project.params, str(project.root / "params.yaml")
    except ProjectError as exc:
        if root:
            _fail(str(exc))
    except (ParamsError, yaml.YAMLError) as exc:
        _fail(f"{exc}\n(`facedata check` lists every problem)")
    rows = []
    for key, default, rule, help_ in describe():
        value, source = default, "default"
        if values is not None:
            section, name = key.split(".", 1)
            value = values[section][name]
            source = "yaml" if isinstance(raw, dict) and has(raw, key) else "default"
        rows.append({"key": key, "value": value, "from": source, "default": default, "rule": rule, "help": help_})
    if as_json:
        click.echo(json.dumps({"params": where, "values": rows}, indent=2, default=str))
        return
    click.echo(f"# {where}", err=True)
    for r in rows:
        extra = f"  [{r['rule']}]" if r["rule"] else ""
        changed = f" (default {json.dumps(r['default'])})" if r["value"] != r["default"] else ""
        click.echo(f"{r['key']:<34} {json.dumps(r['value']):<22} {r['from']:<7} {r['help']}{extra}{changed}")


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
    from facedata.pipeline.summary import summary_text

    click.echo(summary_text(root))


@main.command("dvc-yaml")
@click.option("--write", is_flag=True, help="write dvc.yaml (and stages/run.sh) here instead of printing it")
@click.option(
    "--no-code-deps",
    is_flag=True,
    help="code versions from versions.yaml instead of source files as deps (projects using the installed "
    "facedata, as `facedata init` makes them)",
)
@click.option("--check", is_flag=True, help="exit 1 when dvc.yaml here misses a file a stage imports (or more)")
def dvc_yaml(write, no_code_deps, check) -> None:
    """Print (or write) dvc.yaml rendered from the stage DAG definition; code deps come from each stage's
    import graph."""
    from facedata import atomic
    from facedata.pipeline.dag import RUN_SH, RUNNER, refresh_versions, render_dvc_yaml, stale_code_deps
    from facedata.project import Project, ProjectError

    if check:
        if not Path("dvc.yaml").is_file():
            _fail("no dvc.yaml here")
        stale = stale_code_deps("dvc.yaml")
        for stage, files in stale.items():
            click.echo(f"{stage}: " + ", ".join(files))
        if stale:
            _fail("dvc.yaml code deps are out of date: run `facedata dvc-yaml --write`", 1)
        click.echo("dvc.yaml code deps match the stages' imports")
        return
    text = render_dvc_yaml(code_deps=not no_code_deps)
    if write:
        try:
            project = Project(Path.cwd().resolve())
            params = project.params
        except (ProjectError, ValueError) as exc:
            _fail(f"cannot read params.yaml here: {exc}")
        atomic.write_text("dvc.yaml", text)
        atomic.write_text(RUNNER, RUN_SH)
        refresh_versions(project.root, params)
        click.echo(f"wrote dvc.yaml, {RUNNER}, versions.yaml")
    else:
        click.echo(text, nl=False)


add_commands(main, "COMMANDS")

if __name__ == "__main__":
    main()
