"""Collecting by hand, outside `dvc repro`: `facedata ingest-urls` and `facedata ingest-video`.

Both write into the project they run in, exactly as the `ingest` stage does (same store, same manifests,
same checks, same reuse of finished items), with their own name in each row's lineage (`ingest-urls`,
`ingest-video`); the stage keeps such rows on later runs. The manifests are merged, never replaced, and
saved every `crawl.checkpoint_seconds` and on interruption, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from facedata import manifest
from facedata.collect.base import SourceItem
from facedata.collect.crawler import Crawler, CrawlSettings, FetchTask
from facedata.collect.ingest import IngestResult, Previous, ingest_items
from facedata.collect.urllist import UrlEntry, read_url_list
from facedata.collect.video import VideoSettings, iter_video_items
from facedata.interrupt import sigterm_as_interrupt
from facedata.lineage import Recipe
from facedata.lineage.codedeps import code_hash
from facedata.lock import writing
from facedata.params import params_hash


def ingest_recipe(params: dict, command: str = "ingest") -> Recipe:
    """How the `ingest` stage makes its rows (params and code), stamped with `command`'s name."""
    from facedata.pipeline.runner import ROW_PARAMS

    return Recipe(command, params_hash(params, ROW_PARAMS["ingest"]), code_hash("ingest"))


@dataclass
class ManualRun:
    result: IngestResult
    rows_by_log_id: dict[str, dict] = field(default_factory=dict)
    crawl_stats: dict = field(default_factory=dict)


def run_manual(
    root: Path,
    params: dict,
    command: str,
    make_items: Callable[[Previous], Iterable[SourceItem]],
    on_progress: Callable[[int], None] | None = None,
    wait: float = 0.0,
) -> ManualRun:
    """Ingest `make_items(previous)` into the project at `root`, merging into its manifests. Holds the project
    lock (and DVC's lock on the ingest stage's outputs), waiting up to `wait` seconds for another writer."""
    from facedata.pipeline.dag import stage_defs

    root = Path(root)
    recipe = ingest_recipe(params, command)
    outs = stage_defs()["ingest"].outs
    with writing(root, None, wait, dvc_outs=outs), sigterm_as_interrupt():
        log_rows = manifest.read("crawl_log", root, missing_ok=True).to_pylist()
        image_rows = manifest.read("images", root, missing_ok=True).to_pylist()
        previous = Previous.from_tables(log_rows, image_rows, recipe, root)
        base_log = {r["log_id"]: r for r in log_rows}
        base_images = {r["image_id"]: r for r in image_rows}

        def save(partial: IngestResult) -> None:
            log = {**base_log, **{r["log_id"]: r for r in partial.log}}
            images = {**base_images, **{r["image_id"]: r for r in partial.images}}
            manifest.write("images", manifest.from_rows("images", list(images.values())), root)
            manifest.write("crawl_log", manifest.from_rows("crawl_log", list(log.values())), root)

        run = ManualRun(IngestResult())

        def on_item(item: SourceItem, row: dict) -> None:
            run.rows_by_log_id[row["log_id"]] = row

        run.result = ingest_items(
            make_items(previous),
            root,
            params["ingest"],
            lambda: recipe.lineage(root),
            previous,
            on_progress=on_progress,
            checkpoint=save,
            checkpoint_seconds=float(params["crawl"]["checkpoint_seconds"]),
            known=base_images,
            on_item=on_item,
        )
        save(run.result)
    return run


def url_list_report(entries: list[UrlEntry], tasks: list[FetchTask], rows: dict[str, dict]) -> dict:
    """The `--json` report of `facedata ingest-urls`: one entry per URL line, in file order."""
    out = []
    first_line: dict[str, int] = {}
    for entry, task in zip(entries, tasks, strict=True):
        lid = task.log_id
        row = rows.get(lid)
        if lid in first_line:
            status, reason = "duplicate", f"repeated: same URL and name as line {first_line[lid]}"
            image_id = row["image_id"] if row else None
        elif row is None:
            status, reason, image_id = "failed", "internal: no result was recorded for this line", None
        else:
            first_line[lid] = entry.line
            status = row["status"] if row["status"] in ("stored", "duplicate") else "failed"
            reason, image_id = row["reason"], row["image_id"]
            if row["status"] == "skipped":
                reason = f"{reason} (not fetched)"
        out.append({"url": task.uri, "status": status, "reason": reason, "image_id": image_id})
    counts = {s: sum(1 for u in out if u["status"] == s) for s in ("stored", "duplicate", "failed")}
    return {"stored": counts["stored"], "duplicates": counts["duplicate"], "failed": counts["failed"], "urls": out}


def ingest_url_list(
    root: Path,
    params: dict,
    path: Path,
    name: str | None,
    allow_hosts: Iterable[str] = (),
    label: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    wait: float = 0.0,
) -> tuple[dict, ManualRun]:
    """Fetch every URL of a list file into the project; returns the JSON report and the run. `label` is the
    list's path as the user wrote it (the rows' source_name)."""
    settings = CrawlSettings.from_params(params, extra_allow=allow_hosts)  # refuses to run without a contact
    entries = read_url_list(path, name)
    source_name = label or str(path)
    tasks = [FetchTask(e.url, e.name, "url", source_name, error=e.error) for e in entries]
    with Crawler(settings) as crawler:
        run = run_manual(
            root,
            params,
            "ingest-urls",
            lambda prev: crawler.run(tasks, done=prev.done),
            on_progress=on_progress,
            wait=wait,
        )
        run.crawl_stats = dict(crawler.stats)
    return url_list_report(entries, tasks, run.rows_by_log_id), run


def ingest_video_files(
    root: Path,
    params: dict,
    paths: list[Path],
    name: str | None,
    overrides: dict,
    labels: list[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    wait: float = 0.0,
) -> tuple[dict, ManualRun]:
    """Sample, gate and store the frames of each video; returns a per-video report and the run. `labels` are
    the paths as the user wrote them, recorded as the frames' source (default: the paths)."""
    from facedata.collect.video_faces import LazyFaceFinder

    labels = labels or [str(p) for p in paths]
    params = copy.deepcopy(params)
    settings = VideoSettings.from_params(params["ingest"], **overrides)
    # The effective settings go into the row params hash, so rows made with other settings are not reused.
    params["ingest"].update(
        video_fps=settings.fps,
        video_scene_threshold=settings.scene_threshold,
        video_faces_only=settings.faces_only,
        video_dup_bits=settings.dup_bits,
    )
    per_video: dict[str, dict] = {}
    finder = LazyFaceFinder(settings.face_min_score, settings.min_face_px)

    def items(previous: Previous):
        for path, label in zip(paths, labels, strict=True):
            stats = per_video.setdefault(label, {})
            yield from iter_video_items(path, label, settings, name, previous, finder, stats=stats)

    run = run_manual(root, params, "ingest-video", items, on_progress=on_progress, wait=wait)
    videos = []
    for uri in labels:
        rows = [r for r in run.result.log if r["source_uri"] == uri or r["source_uri"].startswith(uri + "#frame=")]
        by_status = {
            s: sum(1 for r in rows if r["status"] == s) for s in ("stored", "duplicate", "failed", "skipped")
        }
        reasons: dict[str, int] = {}
        for r in rows:
            if r["status"] in ("failed", "skipped"):
                code = (r["reason"] or "unknown").split(":")[0]
                reasons[code] = reasons.get(code, 0) + 1
        videos.append(
            {
                "path": uri,
                "video_id": next((r["video_id"] for r in rows if r.get("video_id")), None),
                "candidates": sum(1 for r in rows if r.get("frame_index") is not None),
                "kept": by_status["stored"] + by_status["duplicate"],
                **by_status,
                "reasons": dict(sorted(reasons.items())),
                "scene_changes": per_video.get(uri, {}).get("scene_changes", 0),
            }
        )
    return {"videos": videos}, run
