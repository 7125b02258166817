"""Index a list of videos into one index folder: the loop `facedata index-video` and the Prefect flow share.

One bad video never stops the others: it gets an entry in `errors` with the reason. A video damaged part way
is indexed up to the damage and also listed in `errors`, so the exit code says the index is incomplete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from facedata.train.identify import Gallery
from facedata.video.decode import VideoError
from facedata.video.index import VideoIndex, VideoIndexer, lineage_for, summary, write_index


def index_one(indexer: VideoIndexer, video: str, progress_factory=None) -> tuple[VideoIndex | None, str | None]:
    """(result, error): a video that cannot be read gives (None, why); a damaged one (result, why)."""
    try:
        if progress_factory is None:
            result = indexer.index(video)
        else:
            with progress_factory(video) as bar:
                result = indexer.index(video, progress=bar)
    except VideoError as exc:
        return None, str(exc)
    return result, (f"{video}: {result.info.problem}" if result.info.problem else None)


def save(results: list[VideoIndex], errors: list[str], params, gallery, out: Path, root, wait: float) -> dict:
    """Write the results (under the project lock when the folder is in a project) and return the summary."""
    lock = contextlib.nullcontext()
    if root is not None and Path(out).resolve().is_relative_to(Path(root).resolve()):
        from facedata.lock import project_lock

        lock = project_lock(root, "facedata index-video", wait=wait)
    if results:
        with lock:
            write_index(results, out, lineage_for(params, gallery, root or "."))
    report = summary(results)
    report["errors"] = errors
    report["model"] = gallery.source
    report["threshold"] = round(float(gallery.threshold), 6)
    return report


def index_videos(
    videos: list[str],
    params: dict,
    gallery: Gallery,
    out: Path,
    root=None,
    wait: float = 0.0,
    echo: Callable[[str], None] = print,
) -> dict:
    import sys

    from tqdm import tqdm

    def bar(video: str):
        return tqdm(desc=Path(video).name, unit="frame", file=sys.stderr, disable=None)

    indexer = VideoIndexer(params, gallery, root)
    results, errors = [], []
    for video in videos:
        result, error = index_one(indexer, video, bar)
        if result is not None:
            results.append(result)
        if error:
            errors.append(error)
            echo(f"error: {error}")
    return save(results, errors, params, gallery, out, root, wait)
