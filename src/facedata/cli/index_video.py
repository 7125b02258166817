"""`facedata index-video`: who is on screen when, in each video, against a gallery or the trained recognizer."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facedata.cli.common import json_option, project_params, set_option, wait_option
from facedata.cli.identify import load_gallery


@click.command("index-video")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="a folder <identity>/<photos> of the people to find (empty: only track and group people)",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a trained model.pt (stage train); default with neither option: the project's recognizer",
)
@click.option(
    "--project", type=click.Path(file_okay=False), default=None, help="project directory (default: here)"
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help="cosine a track needs to be named (default: the model's own, or video.gallery_threshold)",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="index folder (default: <project>/data/video_index in a project, else ./video_index)",
)
@json_option('write {"segments": [...], "tracks": N, "unknown_tracks": N, ...} here')
@click.option("--flow", "as_flow", is_flag=True, help="run as a Prefect flow, one task per video")
@set_option()
@wait_option()
def index_video(
    videos, gallery, model_path, project, threshold, out_dir, json_out, as_flow, set_values, wait
) -> None:
    """Find who appears when in each VIDEO: faces are tracked, each track is named open-set (`unknown`
    when nobody in the gallery matches), and each person's time on screen becomes segments.

    \b
    Examples:
      facedata index-video clip.mp4 --gallery known_people/ --json who.json
      facedata index-video ep1.mp4 ep2.mp4                  # the project's trained recognizer
      facedata index-video ep*.mp4 --model model.pt --flow   # one Prefect task per video
    Writes video_tracks.parquet, video_segments.parquet, thumbs/<track>.jpg and timelines/<video>.png in the
    index folder (a video indexed again replaces its rows). Settings: params.yaml `video` (`facedata params`).
    Exit code 1 when a video could not be indexed, or only up to damage in the file.
    """
    from facedata.project import Project, ProjectError

    params, where = project_params(project, set_values)
    g, root = load_gallery(params, where, project, model_path, gallery, threshold, 0, "index-video", True, "video")
    if root is None:
        try:
            root = Project.find(project).root
        except ProjectError:
            root = None
    out = Path(out_dir) if out_dir else (Project(root).video_index_dir if root else Path("video_index"))
    if as_flow:
        from facedata.flows.video import index_videos_flow

        report = index_videos_flow(list(videos), params, g, str(out), str(root) if root else None, wait)
    else:
        from facedata.video.run import index_videos

        report = index_videos(list(videos), params, g, out, root, wait, echo=_echo)
    for v in report["videos"]:
        click.echo(
            f"{v['video']}: {v['seconds']:.1f} s, {v['tracks']} tracks ({v['unknown_tracks']} unknown, "
            f"{v['candidates']} candidate people)"
        )
        for s in report["segments"]:
            if s["video"] == v["video"]:
                click.echo(
                    f"  {s['identity']:<24} {s['start']:8.2f} - {s['end']:8.2f} s  conf {s['confidence']:.3f}"
                )
    for err in report["errors"]:
        click.secho(f"error: {err}", fg="red", err=True)
    click.echo(
        f"index: {out}; {report['video_seconds']:.1f} s of video in {report['seconds_processed']:.1f} s",
        err=True,
    )
    if json_out:
        from facedata import atomic

        atomic.write_json(Path(json_out), report)
        click.echo(f"wrote {json_out}", err=True)
    sys.exit(1 if report["errors"] else 0)


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


COMMANDS = [index_video]
