"""Stage `ingest`: collect images from the sources in params.yaml into the store, `images` and `crawl_log`."""

from __future__ import annotations

from collections.abc import Iterator

from facedata import manifest
from facedata.ingest import IngestResult, ingest_items
from facedata.pipeline.runner import StageContext
from facedata.sources.base import SourceItem
from facedata.sources.folder import iter_folder_items, list_folder_source
from facedata.sources.video import iter_video_items


def iter_sources(ctx: StageContext) -> Iterator[SourceItem]:
    p, proj = ctx.params["ingest"], ctx.project
    for src in ctx.params["sources"]["folders"]:
        yield from iter_folder_items(
            proj.resolve(src["root"]),
            str(src["root"]),
            src.get("names"),
            src.get("max_per_name"),
            bool(src.get("labeled", False)),
            src.get("query_names"),
            p["max_bytes"],
        )
    for src in ctx.params["sources"]["videos"]:
        fps = float(src.get("fps", p["video_fps"]))
        yield from iter_video_items(
            proj.resolve(src["path"]), str(src["path"]), fps, p["max_frames_per_video"], src.get("query_name")
        )


def count_sources(ctx: StageContext) -> int | None:
    """Folder items are cheap to count up front (for the progress bar); videos are counted as they play."""
    if ctx.params["sources"]["videos"]:
        return None
    return sum(
        len(list_folder_source(ctx.project.resolve(s["root"]), s.get("names"), s.get("max_per_name")))
        for s in ctx.params["sources"]["folders"]
    )


def previous_rows(ctx: StageContext) -> dict[str, tuple[dict, dict | None]]:
    """Earlier results made with the same processing params, by log_id, for reuse."""
    log = manifest.read("crawl_log", ctx.root, missing_ok=True).to_pylist()
    images = {r["image_id"]: r for r in manifest.read("images", ctx.root, missing_ok=True).to_pylist()}
    out = {}
    for row in log:
        if row["lineage"]["params_hash"] != ctx.row_params_hash:
            continue
        image = images.get(row["image_id"]) if row["status"] == "stored" else None
        if row["status"] == "stored" and image is None:
            continue
        out[row["log_id"]] = (row, image)
    return out


def write_result(ctx: StageContext, result: IngestResult) -> None:
    manifest.write("images", manifest.from_rows("images", result.images), ctx.root)
    manifest.write("crawl_log", manifest.from_rows("crawl_log", result.log), ctx.root)


def run(ctx: StageContext) -> dict:
    previous = previous_rows(ctx)
    with ctx.progress(total=count_sources(ctx), desc="ingest", unit="img") as bar:
        result = ingest_items(
            iter_sources(ctx),
            ctx.root,
            ctx.params["ingest"],
            ctx.lineage,
            previous,
            on_progress=bar.update,
            checkpoint=lambda partial: _checkpoint(ctx, partial, previous),
        )
    write_result(ctx, result)
    counts = result.counts()
    images = result.images
    return {
        "n_items": len(result.log),
        "n_images": len(images),
        "n_stored": counts.get("stored", 0),
        "n_duplicates": counts.get("duplicate", 0),
        "n_failed": counts.get("failed", 0),
        "n_near_duplicates": sum(1 for r in images if r["dup_of"]),
        "n_queries": len({r["query_name"] for r in images if r["query_name"]}),
        "n_video_frames": sum(1 for r in images if r["source_kind"] == "video"),
        "n_reused": sum(1 for r in result.log if r["log_id"] in previous),
        "failures": result.failure_reasons(),
    }


def _checkpoint(ctx: StageContext, partial: IngestResult, previous: dict) -> None:
    """Keep partial work on disk: rows from this run plus earlier rows not yet revisited."""
    done = {r["log_id"] for r in partial.log}
    images = {r["image_id"]: r for r in partial.images}
    log = list(partial.log)
    for lid, (row, image) in previous.items():
        if lid not in done:
            log.append(row)
            if image is not None and image["image_id"] not in images:
                images[image["image_id"]] = image
    manifest.write("images", manifest.from_rows("images", list(images.values())), ctx.root)
    manifest.write("crawl_log", manifest.from_rows("crawl_log", log), ctx.root)
