"""Stage `export`: write the dataset (ImageFolder of aligned crops + dataset.parquet with full lineage), its
card (DATASET.md + card.json) and a contact sheet per identity."""

from __future__ import annotations

import json
import shutil
from collections import Counter

from facedata import atomic, gitinfo, manifest
from facedata.export.card import card_markdown, contact_sheet, dataset_card
from facedata.export.splits import assign_splits, safe_dirname
from facedata.ids import sha256_bytes
from facedata.manifest import SOURCE_COLUMNS
from facedata.pipeline.runner import StageContext, StageFailed
from facedata.storecheck import Verifier, bad_crops


def run(ctx: StageContext) -> dict:
    p = ctx.p
    model = ctx.params["embed"]["model"]
    images = {r["image_id"]: r for r in manifest.read("images", ctx.root).to_pylist()}
    faces = {r["face_id"]: r for r in manifest.read("faces", ctx.root).to_pylist()}
    emb = {r["face_id"]: r for r in manifest.read("embeddings", ctx.root).to_pylist() if r["model"] == model}
    identities = {r["query_name"]: r for r in manifest.read("identities", ctx.root).to_pylist()}
    clusters = {c["face_id"]: c for c in manifest.read("clusters", ctx.root).to_pylist()}
    chosen = [
        c for c in clusters.values() if c["identity"] is not None and identities[c["identity"]]["status"] == "ok"
    ]  # faces rejected in review have no identity: they leave the dataset

    sizes = Counter(c["identity"] for c in chosen)
    small = sorted(n for n, k in sizes.items() if k < p["min_faces_per_identity"])
    chosen = [c for c in chosen if sizes[c["identity"]] >= p["min_faces_per_identity"]]
    missing = [
        c["face_id"]
        for c in chosen
        if c["face_id"] not in faces or c["face_id"] not in emb or faces[c["face_id"]]["image_id"] not in images
    ]
    if missing:
        raise StageFailed(
            f"{len(missing)} dataset faces do not trace back to a stored image, e.g. {missing[:3]}; "
            "rerun `dvc repro` from detect"
        )

    with Verifier(ctx.root) as verifier:
        bad = bad_crops([faces[c["face_id"]] for c in chosen], verifier)
    if bad:
        raise StageFailed(
            f"{len(bad)} dataset faces' stored crops are missing or damaged (e.g. "
            + ", ".join(f"{k}: {v}" for k, v in list(bad.items())[:3])
            + "); run `dvc repro detect` (it makes them again) or `facedata build`"
        )

    rows = [
        {
            "face_id": c["face_id"],
            "identity": c["identity"],
            "image_id": c["image_id"],
            "video_id": images[c["image_id"]]["video_id"],
            "dup_of": images[c["image_id"]]["dup_of"],
            "phash": images[c["image_id"]]["phash"],
        }
        for c in chosen
    ]
    split_of = assign_splits(rows, p["splits"], p["seed"])
    out_dir = ctx.project.dataset_dir
    for split in p["splits"]:
        shutil.rmtree(out_dir / split, ignore_errors=True)
    from facedata.pipeline.runner import embeddings_model

    lineage = ctx.lineage(embeddings_model(ctx.root, model))
    dataset = []
    for c in ctx.progress(chosen, desc="export", unit="face"):
        face, image = faces[c["face_id"]], images[c["image_id"]]
        data = (ctx.root / face["crop_path"]).read_bytes()
        if face["crop_sha256"] and sha256_bytes(data) != face["crop_sha256"]:
            raise StageFailed(f"the crop of face {c['face_id']} changed while exporting; run the stage again")
        rel = f"{split_of[c['face_id']]}/{safe_dirname(c['identity'])}/{c['face_id']}.png"
        atomic.write_bytes(out_dir / rel, data)
        row = {
            "face_id": c["face_id"],
            "identity": c["identity"],
            "split": split_of[c["face_id"]],
            "file_path": rel,
            "file_sha256": sha256_bytes(data),
            "image_id": image["image_id"],
            "cluster_id": c["cluster_id"],
            "store_path": image["store_path"],
            "detector": face["detector"],
            "x1": face["x1"],
            "y1": face["y1"],
            "x2": face["x2"],
            "y2": face["y2"],
            "embedding_model": model,
            "reviewed": c["review_decision"] is not None,
            "review_decision": c["review_decision"],
            "reviewer": c["reviewer"],
            "auto_confidence": round(1.0 - float(c["doubt"]), 4),
            "lineage": lineage,
            "image_lineage": image["lineage"],
            "face_lineage": face["lineage"],
            "embedding_lineage": emb[c["face_id"]]["lineage"],
            "cluster_lineage": c["lineage"],
        }
        row.update({k: image[k] for k in SOURCE_COLUMNS})
        dataset.append(row)
    manifest.write("dataset", manifest.from_rows("dataset", dataset), ctx.root)
    write_card(ctx, dataset, faces, clusters, identities, small)
    per_split = Counter(r["split"] for r in dataset)
    return {
        "n_faces": len(dataset),
        "n_identities": len({r["identity"] for r in dataset}),
        "splits": {s: per_split.get(s, 0) for s in p["splits"]},
        "n_from_video": sum(1 for r in dataset if r["source_kind"] == "video"),
        "n_reviewed": sum(1 for r in dataset if r["reviewed"]),
        "identities_left_out": small,
        "dataset_dir": ctx.project.relative(out_dir),
    }


def write_card(
    ctx: StageContext,
    dataset: list[dict],
    faces: dict[str, dict],
    clusters: dict[str, dict],
    identities: dict[str, dict],
    left_out: list[str],
) -> dict:
    """DATASET.md, card.json and contact_sheets/<identity>.png beside the dataset (stale sheets removed)."""
    out_dir = ctx.project.dataset_dir
    splits = list(ctx.p["splits"])
    sheet_dir = out_dir / "contact_sheets"
    shutil.rmtree(sheet_dir, ignore_errors=True)
    by_identity: dict[str, list[dict]] = {}
    for r in dataset:
        by_identity.setdefault(r["identity"], []).append(r)
    sheets = {}
    for identity, rows in sorted(by_identity.items()):
        rows = sorted(rows, key=lambda r: (splits.index(r["split"]), r["face_id"]))
        counts = Counter(r["split"] for r in rows)
        title = f"{identity}: {len(rows)} faces (" + ", ".join(f"{s} {counts.get(s, 0)}" for s in splits) + ")"
        png = contact_sheet(title, [(r["split"], (out_dir / r["file_path"]).read_bytes()) for r in rows], splits)
        rel = f"contact_sheets/{safe_dirname(identity)}.png"
        atomic.write_bytes(out_dir / rel, png)
        sheets[identity] = rel
    report_path = ctx.project.reports_dir / "validate.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    card = dataset_card(
        dataset,
        splits=splits,
        faces=faces,
        clusters=clusters,
        identities=identities,
        validate_report=report,
        revision=gitinfo.revision(ctx.root),
        params_changed=gitinfo.params_changes(ctx.root),
        left_out=left_out,
        sheets=sheets,
    )
    atomic.write_text(out_dir / "card.json", json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    atomic.write_text(out_dir / "DATASET.md", card_markdown(card))
    return card
