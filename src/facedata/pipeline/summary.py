"""The build summary: where a build's outputs are, how each stage went, and the headline metrics. One text,
printed by `facedata build` / `facedata summary` and published as the build's Prefect artifact."""

from __future__ import annotations

import json
from pathlib import Path

LABELLED_KEYS = (
    "purity",
    "inverse_purity",
    "bcubed_f",
    "pairwise_f",
    "nmi",
    "n_clusters",
    "compactness",
    "n_no_face",
)


def build_record_path(root: str | Path) -> Path:
    """How the last build went, stage by stage (`data/reports/runs/build.json`, tracked by neither git nor DVC)."""
    return Path(root) / "data" / "reports" / "runs" / "build.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_lines(root: str | Path, build: dict | None = None, failure_notes: bool = True) -> list[str]:
    """How each stage of `build` (default: the last build) went: ran, skipped (up to date), FAILED (with its
    message unless `failure_notes` is off: `facedata build` says it once, last), not run."""
    build = build if build is not None else _read(build_record_path(root))
    if not build.get("stages"):
        return []
    rev = build.get("revision")
    out = [f"run {build.get('run') or ''}".rstrip() + (f" (revision {rev})" if rev else "")]
    for r in build["stages"]:
        stage = r["stage"]
        secs = f"{r['seconds']:>6.1f}s" if r.get("seconds") is not None else " " * 7
        note = f"  {r['note']}" if r.get("note") and (failure_notes or r["state"] != "FAILED") else ""
        out.append(f"  {stage:<14} {secs}  {r['state']}{note}")
    return out


def summary_text(root: str | Path, build: dict | None = None) -> str:
    """The summary of the project's current outputs, with the stage list of `build` (default: the last build's
    record)."""
    from facedata.pipeline.runner import STAGES

    root = Path(root)
    build = build if build is not None else _read(build_record_path(root))
    metrics = {s: m for s in STAGES if (m := _read(root / "data" / "metrics" / f"{s}.json"))}
    out = stage_lines(root, build)
    if not metrics:
        out.append("no stage has run yet: `facedata build`")
        return "\n".join(out)
    m = lambda s, k, d="-": metrics.get(s, {}).get(k, d)  # noqa: E731
    dataset = root / "data" / "dataset"
    out += [
        "",
        "facedata outputs",
        f"  dataset        {dataset}  ({m('export', 'n_faces')} faces, {m('export', 'n_identities')} identities, "
        f"splits {m('export', 'splits')})",
        f"  manifest       {dataset / 'dataset.parquet'}",
        f"  dataset card   {dataset / 'DATASET.md'}  (contact sheets in {dataset / 'contact_sheets'})",
        f"  all manifests  {root / 'data' / 'manifests'}",
        f"  validation     {root / 'data' / 'reports' / 'validate.html'}  (passed: {m('validate', 'passed')})",
    ]
    if "train" in metrics:
        out.append(
            f"  recognizer     {root / 'data' / 'models' / 'recognizer'}  (test top-1 {m('train', 'top1')}, "
            f"TAR @ FAR 1e-2 {m('train', 'tar_at_far_1e-2')}; `facedata identify PHOTO`)"
        )
    out += [
        "",
        "summary",
        f"  images {m('ingest', 'n_images')} ({m('ingest', 'n_video_frames')} video frames, "
        f"{m('ingest', 'n_failed')} failed, {m('ingest', 'n_duplicates')} duplicates)",
        f"  faces {m('detect', 'n_faces')} ({m('detect', 'n_faces_ok')} usable), detection rate "
        f"{m('detect', 'detection_rate')}",
        f"  clusters {m('cluster', 'n_clusters')}, identities {m('cluster', 'identities')}",
    ]
    lab = metrics.get("cluster", {}).get("labelled")
    if lab:
        out.append("  against labels: " + ", ".join(f"{k} {lab[k]}" for k in LABELLED_KEYS if k in lab))
    out += [
        "",
        "review what the clustering is unsure about: facedata review",
        "trace any dataset face: facedata lineage <face_id or file path>",
    ]
    return "\n".join(out)
