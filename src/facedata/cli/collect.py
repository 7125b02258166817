"""`facedata ingest-urls`, `facedata ingest-video`, `facedata schedule`: collection commands."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from facedata.cli.common import exit_for, json_option, wait_option


def _fail(message: str, code: int = 2) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _resumable(items: str, *errors: type[BaseException]) -> Iterator[None]:
    """Expected `errors` become one red line (exit 2), a full disk too (exit 1); Ctrl-C or SIGTERM says the
    finished `items` are kept (exit 130)."""
    from facedata.pipeline.runner import DISK_FULL, disk_full_message

    try:
        yield
    except errors as exc:
        _fail(str(exc))
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        click.secho(f"error: {disk_full_message(exc)}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished {items} are saved; rerun the same command to resume", err=True)
        sys.exit(130)


def _project(root):
    from facedata.params import ParamsError
    from facedata.project import Project, ProjectError

    try:
        project = Project.find(root)
        project.params  # noqa: B018 - load and check params.yaml now, with a clear message
    except (ProjectError, ParamsError) as exc:
        _fail(str(exc))
    return project


def _write_json(path: str, obj: dict) -> None:
    from facedata import atomic

    atomic.write_json(path, obj)


def _summary(counts: dict, failures: dict) -> str:
    text = ", ".join(f"{k} {v}" for k, v in counts.items())
    if failures:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(failures.items(), key=lambda kv: -kv[1])) + ")"
    return text


@click.command("ingest-urls")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="the queried name of URLs whose line names none")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="fetch from this host even on a private/loopback address (repeatable; adds to crawl.allow_hosts)",
)
@json_option("write a report here")
@wait_option()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def ingest_urls(file, name, allow_hosts, json_out, wait, root) -> None:
    """Download the images listed in FILE into this project's store.

    FILE has one URL per line, or is a CSV with `url,name` columns (a header naming a `url` column, or a
    .csv name). Blank lines and #-comments are ignored. Every URL gets one crawl_log row with its final
    status (stored, duplicate, failed or skipped, with the reason); the crawl follows params.yaml `crawl:`
    (robots.txt, rate limits, retries, timeouts, size caps, address rules). Rerunning resumes: URLs already
    finished are not fetched again.

    \b
    Exit code 0 when every URL was stored (or is a duplicate), 1 when some failed, 2 for a usage or setup
    problem (another writer busy with the project included: see --wait).
    --json OUT: {"stored": N, "duplicates": N, "failed": N, "urls": [one entry per URL line, in order:
    {"url", "status": stored|duplicate|failed, "reason", "image_id"}]}.
    """
    from tqdm import tqdm

    from facedata.collect.netpolicy import parse_allow_host
    from facedata.collect.urllist import UrlListError
    from facedata.params import ParamsError
    from facedata.pipeline.collect import ingest_url_list

    project = _project(root)
    for host in allow_hosts:
        try:
            parse_allow_host(host)
        except ValueError as exc:
            _fail(str(exc))
    with (
        _resumable("URLs", UrlListError, ParamsError, RuntimeError),
        tqdm(desc="ingest-urls", unit="url", file=sys.stderr, disable=None) as bar,
    ):
        report, run = ingest_url_list(
            project.root,
            project.params,
            Path(file).resolve(),
            name,
            allow_hosts,
            file,
            on_progress=bar.update,
            wait=wait,
        )
    if json_out:
        _write_json(json_out, report)
    failures: dict[str, int] = {}
    for u in report["urls"]:
        if u["status"] == "failed":
            code = (u["reason"] or "unknown").split(":")[0]
            failures[code] = failures.get(code, 0) + 1
    counts = {k: report[k] for k in ("stored", "duplicates", "failed")}
    click.echo(f"{len(report['urls'])} URLs: {_summary(counts, failures)}")
    if json_out:
        click.echo(f"report: {json_out}")
    exit_for(report["failed"])


@click.command("ingest-video")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="the queried name recorded with the frames (who the video is about)")
@click.option("--fps", type=float, default=None, help="frames sampled per second (default ingest.video_fps)")
@click.option(
    "--scene-threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="colour-histogram jump marking a cut, whose first frame is sampled too; 0 turns it off",
)
@click.option("--all-frames", is_flag=True, help="keep frames without a face too")
@click.option("--keep-near-identical", is_flag=True, help="keep frames nearly identical to a kept one")
@json_option("write a report here")
@wait_option()
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def ingest_video(files, name, fps, scene_threshold, all_frames, keep_near_identical, json_out, wait, root) -> None:
    """Add frames of broadcast video FILES to this project: frames sampled at a fixed rate plus the first frame
    of every shot, only frames with faces, near-identical frames dropped.

    Each kept frame is a lossless PNG in the store with its video id (sha256 of the file), frame index and
    timestamp; every candidate frame gets a crawl_log row (stored, or skipped: no_face / near_identical).
    Defaults come from params.yaml `ingest.video_*`.

    \b
    Exit code 0 when every video was read to its end, 1 when a video or some of its frames failed (skipped
    frames - no face, near-identical - are not failures), 2 for a usage or setup problem (see --wait).
    """
    from tqdm import tqdm

    from facedata.models import ModelError
    from facedata.pipeline.collect import ingest_video_files

    project = _project(root)
    if fps is not None and fps <= 0:
        _fail("--fps must be > 0")
    overrides = {
        "fps": fps,
        "scene_threshold": scene_threshold,
        "faces_only": False if all_frames else None,
        "dup_bits": -1 if keep_near_identical else None,
    }
    with (
        _resumable("frames", RuntimeError, ModelError),
        tqdm(desc="ingest-video", unit="frame", file=sys.stderr, disable=None) as bar,
    ):
        report, _ = ingest_video_files(
            project.root,
            project.params,
            [Path(f).resolve() for f in files],
            name,
            overrides,
            list(files),
            on_progress=bar.update,
            wait=wait,
        )
    if json_out:
        _write_json(json_out, report)
    for v in report["videos"]:
        click.echo(
            f"{v['path']}: {v['candidates']} candidate frames ({v['scene_changes']} at cuts), kept {v['kept']}, "
            + _summary({"skipped": v["skipped"], "failed": v["failed"]}, v["reasons"])
        )
    exit_for(sum(v["failed"] for v in report["videos"]))


@click.command("schedule")
@click.option("--cron", required=True, help='when to crawl and rebuild, e.g. "0 3 * * *" (03:00 every day)')
@click.option("--timezone", default=None, help="IANA time zone of the cron expression (default UTC)")
@click.option("--name", default="facedata-scheduled-build", show_default=True, help="deployment name")
@click.option("--stage", "stages", multiple=True, help="run only these stages (repeatable); default all")
@click.option("--no-recrawl", is_flag=True, help="do not force the ingest stage (DVC decides, as in build)")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
def schedule(cron, timezone, name, stages, no_recrawl, root) -> None:
    """Crawl and rebuild on a schedule: a Prefect deployment of the build flow, served by this process.

    Needs a Prefect server that stays up (PREFECT_API_URL; e.g. `prefect server start`). The deployment is
    registered there with the cron schedule; this command then keeps running and executes each scheduled
    run (stop it with Ctrl-C: the schedule is paused). Each run forces `ingest` (web sources are not DVC
    dependencies) and lets DVC rerun what changed; the Prefect UI shows the runs, their logs and a
    `facedata-crawl` artifact with per-source counts and failure reasons.
    """
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from facedata.flows.schedule import ScheduleError, api_url, make_deployment, serve_schedule

    project = _project(root)
    try:
        url = api_url()
        deployment = make_deployment(project.root, cron, name, list(stages) or None, timezone, not no_recrawl)
    except ScheduleError as exc:
        _fail(str(exc))
    except ValueError as exc:  # e.g. an unknown time zone
        _fail(f"cannot make the schedule: {exc}")
    click.echo(f"serving deployment facedata-build/{name} on {url} ('{cron}'); Ctrl-C stops it", err=True)
    serve_schedule(deployment)


COMMANDS = [ingest_urls, ingest_video, schedule]
