"""Stage `ingest`: collect images from the sources in params.yaml into the store, `images` and `crawl_log`.

Sources, in this order: folders, videos, then every web source through one polite crawler (URL lists,
Wikimedia, JS-rendered pages), so hosts shared by several sources share one rate limit.

Rows the stage made in an earlier run with the same processing params are reused (a URL is not fetched
again once it is finished; see `facedata.collect.ingest.Previous`). Rows added outside the stage by
`facedata ingest-urls` / `facedata ingest-video` (their lineage names that command) are kept as they are, so
`dvc repro` never drops a collection made by hand. Manifests are checkpointed every
`crawl.checkpoint_seconds` and when the run is interrupted. At the end every stored image the manifest lists is
checked against its sha256 (`facedata.storecheck`): a missing or damaged one is restored from its source, or
its rows say `lost`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator

from facedata import ids, manifest
from facedata.collect.base import SourceItem
from facedata.collect.config import cast_members, names_for
from facedata.collect.crawler import Crawler, CrawlSettings, FetchTask
from facedata.collect.folder import iter_folder_items, walk_folder_source
from facedata.collect.ingest import IngestResult, Previous, ingest_items, reason_code
from facedata.collect.urllist import UrlListError, read_url_list
from facedata.collect.video import Pick, VideoSettings, iter_video_items
from facedata.interrupt import sigterm_as_interrupt
from facedata.pipeline.runner import StageContext
from facedata.storecheck import restore_images

STAGE = "ingest"


def has_web_sources(params: dict) -> bool:
    src = params["sources"]
    return bool(src["url_lists"] or src["wikimedia"] or src["web_pages"])


def web_tasks(ctx: StageContext, crawler: Crawler) -> Iterator[FetchTask]:
    """Every URL the web sources offer, lazily (API calls and pages happen as the crawler asks for more)."""
    from facedata.collect.webpage import iter_page_tasks
    from facedata.collect.wikimedia import iter_wikimedia_tasks

    src, proj = ctx.params["sources"], ctx.project
    cast = cast_members(src["cast"])
    for entry in src["url_lists"]:
        path = proj.resolve(entry["path"])
        name = str(entry["path"])
        try:
            lines = read_url_list(path, entry.get("name"))
        except UrlListError as exc:
            yield FetchTask(name, entry.get("name"), "url", name, error=f"unreadable: {exc}")
            continue
        for line in lines:
            yield FetchTask(line.url, line.name, "url", name, error=line.error)
    crawl = ctx.params["crawl"]
    for entry in src["wikimedia"]:
        yield from iter_wikimedia_tasks(
            crawler, entry, names_for(entry, cast), "wikimedia", exclude_restricted=crawl["exclude_restricted"]
        )
    for entry in src["web_pages"]:
        yield from iter_page_tasks(crawler, entry, names_for(entry, cast), crawl)


def _named(items: Iterable[SourceItem], source_name: str) -> Iterator[SourceItem]:
    for item in items:
        item.extra.setdefault("source_name", source_name)
        yield item


def iter_sources(
    ctx: StageContext, previous: Previous | None = None, crawler: Crawler | None = None, stats: dict | None = None
) -> Iterator[SourceItem]:
    p, proj = ctx.params["ingest"], ctx.project
    stats = stats if stats is not None else {}
    for src in ctx.params["sources"]["folders"]:
        yield from _named(
            iter_folder_items(
                proj.resolve(src["root"]),
                str(src["root"]),
                src.get("names"),
                src.get("max_per_name"),
                bool(src.get("labeled", False)),
                src.get("query_names"),
                p["max_bytes"],
            ),
            str(src["root"]),
        )
    finder = None
    # Frames picked by a reviewer first: a frame the regular sampling also takes is then stored under the
    # picked person's name (the sampled copy is its duplicate), not the other way round.
    for src in sorted(ctx.params["sources"]["videos"], key=lambda s: "frames" not in s):
        picks = picked_frames(src)
        if picks is not None:
            settings = VideoSettings.for_picks(p, len(picks))
        else:
            settings = VideoSettings.from_params(p, fps=src.get("fps"))
        if finder is None and settings.faces_only:
            from facedata.collect.video_faces import LazyFaceFinder

            finder = LazyFaceFinder(settings.face_min_score, settings.min_face_px)
        yield from iter_video_items(
            proj.resolve(src["path"]),
            str(src["path"]),
            settings,
            src.get("query_name"),
            previous,
            finder,
            stats=stats.setdefault("video", {}),
            picks=picks,
        )
    if crawler is not None and has_web_sources(ctx.params):
        yield from crawler.run(web_tasks(ctx, crawler), done=previous.done if previous is not None else None)


def picked_frames(src: dict) -> dict[int, Pick] | None:
    """frame number -> its track and region, for a video source of picked frames (`frames:`; see
    `facedata review`)."""
    if "frames" not in src:
        return None
    n = len(src["frames"])
    tracks, regions = src.get("tracks") or [None] * n, src.get("regions") or [None] * n
    return {
        int(f): Pick(t, tuple(r) if r is not None else None)
        for f, t, r in zip(src["frames"], tracks, regions, strict=True)
    }


def count_sources(ctx: StageContext) -> int | None:
    """Folder items are cheap to count up front (for the progress bar); videos and the web are not."""
    if ctx.params["sources"]["videos"] or has_web_sources(ctx.params):
        return None
    return sum(
        len(walk_folder_source(ctx.project.resolve(s["root"]), s.get("names"), s.get("max_per_name")))
        for s in ctx.params["sources"]["folders"]
    )


def previous_rows(ctx: StageContext) -> Previous:
    """Earlier results made with the same processing params, by log_id, for reuse."""
    log_rows = manifest.read("crawl_log", ctx.root, missing_ok=True).to_pylist()
    image_rows = manifest.read("images", ctx.root, missing_ok=True).to_pylist()
    return Previous.from_tables(log_rows, image_rows, ctx.recipe, ctx.root)


def split_rows(log_rows: list[dict], image_rows: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """Rows made outside the stage (`facedata ingest-urls` / `ingest-video`, their lineage names them)."""
    manual_log = [r for r in log_rows if r["lineage"]["stage"] != STAGE]
    manual_images = {r["image_id"]: r for r in image_rows if r["lineage"]["stage"] != STAGE}
    return manual_log, manual_images


def combine(
    partial: IngestResult,
    manual_log: list[dict],
    manual_images: dict[str, dict],
    old_images: dict[str, dict],
    previous: Previous | None = None,
) -> tuple[list[dict], list[dict]]:
    """This run's rows + rows made by hand (+ earlier stage rows not revisited yet, for checkpoints). A kept
    log row's image (a hand-made duplicate of an image the stage no longer lists) is kept with it."""
    log = {r["log_id"]: r for r in partial.log}
    images = {r["image_id"]: r for r in partial.images}
    if previous is not None:
        for lid, (row, image) in previous.items():
            if lid not in log:
                log[lid] = row
                if image is not None:
                    images.setdefault(image["image_id"], image)
    for row in manual_log:
        log.setdefault(row["log_id"], row)
    for image_id, row in manual_images.items():
        images.setdefault(image_id, row)
    for row in log.values():
        image_id = row["image_id"]
        if (
            image_id
            and row["status"] in ("stored", "duplicate")
            and image_id not in images
            and image_id in old_images
        ):
            images[image_id] = old_images[image_id]
    return list(log.values()), list(images.values())


def write_rows(root, log: list[dict], images: list[dict]) -> None:
    manifest.write("images", manifest.from_rows("images", images), root)
    manifest.write("crawl_log", manifest.from_rows("crawl_log", log), root)


def per_source_counts(log_rows: list[dict]) -> dict[str, dict]:
    out: dict[str, Counter] = {}
    kinds: dict[str, str] = {}
    for row in log_rows:
        key = row.get("source_name") or row["source_kind"]
        kinds[key] = row["source_kind"]
        out.setdefault(key, Counter())[row["status"]] += 1
    return {
        k: {"kind": kinds[k], **{s: int(v.get(s, 0)) for s in ("stored", "duplicate", "failed", "skipped")}}
        for k, v in sorted(out.items())
    }


def reason_counts(log_rows: list[dict], status: str) -> dict[str, int]:
    counts = Counter(reason_code(r["reason"]) for r in log_rows if r["status"] == status)
    return dict(sorted(counts.items()))


def run(ctx: StageContext) -> dict:
    with sigterm_as_interrupt():  # the runner holds the project lock
        log_rows = manifest.read("crawl_log", ctx.root, missing_ok=True).to_pylist()
        image_rows = manifest.read("images", ctx.root, missing_ok=True).to_pylist()
        previous = Previous.from_tables(log_rows, image_rows, ctx.recipe, ctx.root)
        manual_log, manual_images = split_rows(log_rows, image_rows)
        old_images = {r["image_id"]: r for r in image_rows}
        stats: dict = {}
        settings = CrawlSettings.from_params(ctx.params, require_contact=has_web_sources(ctx.params))
        with (
            Crawler(settings) as crawler,
            ctx.progress(total=count_sources(ctx), desc="ingest", unit="img") as bar,
        ):

            def checkpoint(partial: IngestResult) -> None:
                write_rows(ctx.root, *combine(partial, manual_log, manual_images, old_images, previous))

            result = ingest_items(
                iter_sources(ctx, previous, crawler, stats),
                ctx.root,
                ctx.params["ingest"],
                ctx.lineage,
                previous,
                on_progress=bar.update,
                checkpoint=checkpoint,
                checkpoint_seconds=float(ctx.params["crawl"]["checkpoint_seconds"]),
                known=manual_images,
            )
            log, images = combine(result, manual_log, manual_images, old_images)
            # Every stored file the manifest vouches for is checked; what is gone comes back or is marked lost.
            no_refetch = refetch_refusal(ctx.params)
            refetch = None if no_refetch else web_refetch(crawler)
            images, log, store_report = restore_images(
                ctx.root, images, log, ctx.project.resolve, refetch, no_refetch=no_refetch or ""
            )
            crawl_stats = dict(crawler.stats)
        write_rows(ctx.root, log, images)
    if store_report.summary():
        print(f"facedata ingest: {store_report.summary()}", file=sys.stderr)
    final = {r["log_id"]: r for r in log}
    counts = IngestResult(log=[final[r["log_id"]] for r in result.log]).counts()
    ctx.run.update(
        n_reused=sum(1 for r in result.log if r["log_id"] in previous),
        crawl={k: int(v) for k, v in sorted(crawl_stats.items())},
        video=stats.get("video", {}),
    )
    return {
        "n_items": len(result.log),
        "n_images": len(images),
        "n_stored": counts.get("stored", 0),
        "n_duplicates": counts.get("duplicate", 0),
        "n_failed": counts.get("failed", 0),
        "n_skipped": counts.get("skipped", 0),
        "n_near_duplicates": sum(1 for r in images if r["dup_of"]),
        "n_queries": len({r["query_name"] for r in images if r["query_name"]}),
        "n_video_frames": sum(1 for r in images if r["source_kind"] == "video"),
        "n_manual_rows": len({r["log_id"] for r in manual_log} - {r["log_id"] for r in result.log}),
        "failures": reason_counts(result.log, "failed"),
        "skip_reasons": reason_counts(result.log, "skipped"),
        "per_source": per_source_counts(result.log),
        "store": store_report.metrics(),
    }


def refetch_refusal(params: dict) -> str | None:
    """Why lost web images may not be fetched again (None: they may)."""
    if not params["ingest"]["restore_from_web"]:
        return "ingest.restore_from_web is false"
    if not str(params["crawl"].get("contact") or "").strip():
        return "crawl.contact is not set"
    return None


def web_refetch(crawler: Crawler):
    """How the store check fetches lost web images again: through the same polite, safe crawler."""

    def refetch(rows: list[dict]) -> dict[str, bytes]:
        tasks = [FetchTask(r["source_uri"], r["query_name"], r["source_kind"], "restore") for r in rows]
        return {ids.sha256_bytes(item.data): item.data for item in crawler.run(tasks) if item.data is not None}

    return refetch


def crawl_report_markdown(metrics: dict, run: dict | None = None) -> str:
    """The Prefect artifact of a crawl: per-source counts and failure reasons (`metrics`), requests made
    (`run`, the run report)."""
    run = run or {}
    lines = [
        "### facedata crawl",
        "",
        "| source | kind | stored | duplicate | failed | skipped |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in (metrics.get("per_source") or {}).items():
        lines.append(
            f"| {name} | {c['kind']} | {c['stored']} | {c['duplicate']} | {c['failed']} | {c['skipped']} |"
        )
    lines += ["", "| status | reason | rows |", "|---|---|---|"]
    reasons = [("failed", c, n) for c, n in (metrics.get("failures") or {}).items()]
    reasons += [("skipped", c, n) for c, n in (metrics.get("skip_reasons") or {}).items()]
    for status, code, n in sorted(reasons, key=lambda r: -r[2]):
        lines.append(f"| {status} | {code} | {n} |")
    if not reasons:
        lines.append("| - | (none) | 0 |")
    crawl = run.get("crawl") or {}
    if crawl:
        lines += ["", "requests: " + ", ".join(f"{k} {v}" for k, v in crawl.items())]
    return "\n".join(lines)
