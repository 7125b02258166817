"""The model card written beside every trained model (`MODEL_CARD.md`, and `model_card.json` for tools):
what it was trained on (dataset revision, counts, review coverage), how well it does, how it was made, and the
licenses that bind it (the data's, as the sources state them, and the base weights')."""

from __future__ import annotations

import json
from pathlib import Path

from facedata import atomic

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"


def base_weights(embed_model: str) -> dict:
    from facedata import models

    if embed_model.startswith("onnx:"):
        return {
            "name": embed_model,
            "license": "as stated by the ONNX model's provider (not recorded by facedata)",
        }
    try:
        spec = models.get_spec(embed_model)
    except Exception:  # an unknown name: say so rather than fail the card
        return {"name": embed_model, "license": "unknown"}
    return {"name": spec.name, "version": spec.version, "license": spec.license, "description": spec.description}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def write(out: Path, card: dict) -> None:
    atomic.write_text(out / CARD_JSON, json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    atomic.write_text(out / CARD_MD, render(card))


def render(card: dict) -> str:
    d, m, cfg = card["data"], card["metrics"], card["config"]
    rev = card["review"]
    lines = [
        f"# Model card: facedata recognizer ({cfg['mode']})",
        "",
        f"A face recognizer for the {d['n_classes']} identities of this project's curated dataset: each face gets "
        "a unit embedding and a cosine score per identity; below the threshold it is `unknown`. Made by the "
        f"`train` stage of facedata {card['facedata_version']} (when, on what device and how long: the stage's "
        "run report, data/reports/runs/train.json).",
        "",
        "## Use",
        "",
        "```bash",
        "facedata identify photo.jpg [--json out.json]      # uses data/models/recognizer/model.pt",
        "```",
        "",
        f"Files: `model.pt` (state_dict + meta), `model.onnx` (input `{card['input']}`, outputs `embedding`, "
        f"`scores` in the order of `classes` in model_card.json). Threshold: {card['threshold']:.4f} (cosine; "
        f"chosen so that {_pct(cfg['far'])} of impostors ({card['open_set_protocol']}) are accepted).",
    ]
    if card.get("onnx_input"):
        lines += [
            "",
            "The ONNX model also works as facedata's embedding model (its output 0 is the embedding):",
            "",
            "```yaml",
            "embed:",
            "  model: onnx:data/models/recognizer/model.onnx",
            f"  onnx: {json.dumps(card['onnx_input'])}",
            "```",
        ]
    lines += [
        "",
        "## Training data",
        "",
        f"- dataset: `{d['dataset']}`, sha256 `{d['dataset_sha256']}`",
        f"- made by export run `{d['export_run_id']}` at {d['export_created_at']}, "
        f"code revision `{d['export_git_rev']}`",
        f"- embeddings: `{d['embedding_model']}`",
        f"- faces: {d['n_faces']} ({', '.join(f'{k} {v}' for k, v in d['splits'].items())}); identities: "
        f"{d['n_classes']} (faces per identity in train: min {d['per_identity']['min']}, median "
        f"{d['per_identity']['median']}, max {d['per_identity']['max']})",
    ]
    if rev["has_review_columns"]:
        lines.append(
            f"- human review: {rev['n_reviewed']} faces ({_pct(rev['reviewed_fraction'])}) reviewed by "
            f"{rev['reviewers']} reviewer(s); decisions {rev['decisions']}; mean clustering confidence of the "
            f"rest {rev['mean_auto_confidence']}"
        )
    else:
        lines.append(
            "- human review: none recorded (the dataset has no review columns); labels are the clustering's"
        )
    lines.append(
        f"- sample weights: reviewed {cfg['weight_reviewed']}, unreviewed {cfg['weight_unreviewed']}"
        + (" x clustering confidence" if cfg["confidence_weighting"] else "")
    )
    lines += ["", "## Metrics (the dataset's test split)", "", "| | top-1 | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 |"]
    lines.append("|---|---|---|---|")
    for label, row in (("this model", m["test"]), ("embedding distance (no training)", m["baseline"])):
        lines.append(
            f"| {label} | {_pct(row['top1'])} | {_pct(row.get('tar_at_far_1e-2'))} | "
            f"{_pct(row.get('tar_at_far_1e-3'))} |"
        )
    lines.append("")
    lines.append(
        f"{m['test']['n_test_faces']} test faces; {m['test']['n_impostors']} impostors "
        f"({card['open_set_protocol']})."
    )
    if m.get("verification"):
        v = m["verification"]
        lines += [
            "",
            f"LFW-style pairs ({v['pairs']}): accuracy {v['after']['accuracy']} "
            f"(base model {v['before']['accuracy']}), "
            f"TAR @ FAR 1e-3 {v['after']['tar_at_far_1e-3']} (base {v['before']['tar_at_far_1e-3']}).",
        ]
    lines += [
        "",
        "## How it was made",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        f"{card['epochs_run']} epochs.",
        "",
        "## Licenses",
        "",
        f"- base weights: {card['base_weights']['name']}: {card['base_weights']['license']}",
        "- training images, as their sources state them (faces per license): "
        + ", ".join(f"{k}: {v}" for k, v in d["licenses"].items()),
        "- images whose license is 'not stated' came from folders, videos or pages that state none: check you may "
        "use them. Face data is personal data: have a lawful basis to process it.",
        "",
    ]
    return "\n".join(lines)
