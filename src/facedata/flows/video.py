"""`facedata index-video --flow`: the same indexing as a Prefect flow, one task per video, so an archive's
runs, logs and per-video results show in the Prefect UI. Results are written once at the end, like the CLI."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from facedata.video.index import VideoIndexer  # noqa: E402
from facedata.video.run import index_one, save  # noqa: E402


@task(name="index-video", task_run_name="{video}", cache_policy=NO_CACHE)
def index_video_task(indexer: VideoIndexer, video: str):
    result, error = index_one(indexer, video)
    log = get_run_logger()
    if error:
        log.error(error)
    if result is not None:
        log.info(
            "%s: %.1f s of video in %.1f s, %d tracks, %d segments",
            video,
            result.info.seconds,
            result.seconds_processed,
            len(result.rows),
            len(result.segments),
        )
    return result, error


def index_videos_flow(videos: list[str], params: dict, gallery, out: str, root: str | None, wait: float = 0.0):
    """Run the flow. The gallery (numpy arrays, maybe a torch projection) stays in this process: the flow's
    parameters, which Prefect records, are only the videos and the index folder."""
    from pathlib import Path

    @flow(name="facedata-index-video", log_prints=True)
    def index_videos(videos: list[str], out: str) -> dict:
        indexer = VideoIndexer(params, gallery, root)
        results, errors = [], []
        for video in videos:
            result, error = index_video_task(indexer, video)
            if result is not None:
                results.append(result)
            if error:
                errors.append(error)
        report = save(results, errors, params, gallery, Path(out), root, wait)
        lines = ["| video | identity | start | end | confidence |", "|---|---|---|---|---|"]
        lines += [
            f"| {s['video']} | {s['identity']} | {s['start']:.2f} | {s['end']:.2f} | {s['confidence']:.3f} |"
            for s in report["segments"]
        ]
        create_markdown_artifact(markdown="\n".join(lines), key="video-index", description="segments found")
        return report

    return index_videos(videos, out)
