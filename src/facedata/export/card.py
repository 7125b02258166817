"""The dataset card: what is in an exported dataset, where it came from, under which rights, how good it is,
how much of it a person checked, which gates it passed, and how to build it again.

`card.json` holds everything (the full attribution list included); `DATASET.md` renders it for people, and a
contact sheet per identity shows its faces at a glance. Nothing here reads a clock: the same dataset and
revision give the same bytes.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter, defaultdict

from facedata.manifest import RIGHTS_COLUMNS

#: Rows of the attribution table DATASET.md shows (card.json lists all of them).
MD_ATTRIBUTIONS = 100
#: Faces on one contact sheet (the first of each split in turn, by face id).
SHEET_FACES = 100
SHEET_COLUMNS = 10
SHEET_THUMB = 96
_SPLIT_COLOURS = ((46, 160, 67), (31, 111, 235), (219, 109, 40), (137, 87, 229), (120, 120, 120))


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "mean": _r(statistics.fmean(values)),
        "min": _r(ordered[0]),
        "p10": _r(ordered[int(0.1 * (len(ordered) - 1))]),
        "median": _r(statistics.median(values)),
    }


def dataset_card(
    dataset: list[dict],
    *,
    splits: list[str],
    faces: dict[str, dict],
    clusters: dict[str, dict],
    identities: dict[str, dict],
    validate_report: dict,
    revision: str | None,
    params_changed: dict[str, tuple[object, object]],
    left_out: list[str],
    sheets: dict[str, str],
) -> dict:
    """The card of one export (`dataset` rows as written to dataset.parquet)."""
    per_identity: dict[str, Counter] = defaultdict(Counter)
    for r in dataset:
        per_identity[r["identity"]][r["split"]] += 1
    images = {r["image_id"]: r for r in dataset}
    faces_per_image = Counter(r["image_id"] for r in dataset)

    sources: dict[str, dict] = defaultdict(lambda: {"images": 0, "faces": 0})
    for image_id, r in images.items():
        sources[r["source_kind"]]["images"] += 1
        sources[r["source_kind"]]["faces"] += faces_per_image[image_id]
    licenses: dict[tuple, dict] = {}
    restrictions: Counter = Counter()
    attribution = []
    for image_id, r in sorted(images.items()):
        key = (r.get("license"), r.get("license_url"), r.get("usage_terms"))
        entry = licenses.setdefault(
            key, {"license": key[0], "license_url": key[1], "usage_terms": key[2], "images": 0, "faces": 0}
        )
        entry["images"] += 1
        entry["faces"] += faces_per_image[image_id]
        restrictions.update(r.get("restrictions") or [])
        if any(r.get(c) for c in RIGHTS_COLUMNS):
            attribution.append(
                {
                    "image_id": image_id,
                    **{c: r.get(c) for c in RIGHTS_COLUMNS},
                    "page_url": r.get("page_url"),
                    "source_uri": r.get("source_uri"),
                }
            )
    license_rows = sorted(licenses.values(), key=lambda e: (-e["images"], str(e["license"])))

    labelled = [r for r in dataset if r.get("label")]
    quality = {
        "face_quality": _stats(
            [
                faces[r["face_id"]]["quality"]
                for r in dataset
                if faces.get(r["face_id"], {}).get("quality") is not None
            ]
        ),
        "cluster_doubt": _stats([clusters[r["face_id"]]["doubt"] for r in dataset if r["face_id"] in clusters]),
        "identities": {
            name: {"confidence": _r(identities[name]["confidence"]), "margin": _r(identities[name]["margin"])}
            for name in sorted(per_identity)
            if name in identities
        },
        "label_precision": (
            {
                "n_labelled": len(labelled),
                "precision": _r(sum(r["label"] == r["identity"] for r in labelled) / len(labelled)),
            }
            if labelled
            else None
        ),
    }
    reviewed = [r for r in dataset if r.get("reviewed")]
    review = {
        "reviewed": len(reviewed),
        "coverage": _r(len(reviewed) / len(dataset)) if dataset else 0.0,
        "decisions": dict(sorted(Counter(str(r.get("review_decision")) for r in reviewed).items())),
        "reviewers": sorted({str(r["reviewer"]) for r in reviewed if r.get("reviewer")}),
    }
    gates = {
        "passed": bool(validate_report.get("success")),
        "n_checks": sum(len(m.get("checks", [])) for m in validate_report.get("manifests", {}).values()),
        "failures": list(validate_report.get("failures", [])),
        "report": "data/reports/validate.html",
    }
    per_split = Counter(r["split"] for r in dataset)
    return {
        "format": "facedata dataset card 1",
        "revision": revision,
        "params_changed": {k: {"committed": a, "used": b} for k, (a, b) in params_changed.items()},
        "reproduce": (
            f"git checkout {revision} && dvc pull && dvc repro" if revision else "git init; commit; dvc repro"
        ),
        "totals": {
            "faces": len(dataset),
            "identities": len(per_identity),
            "images": len(images),
            "videos": len({r["video_id"] for r in dataset if r.get("video_id")}),
        },
        "splits": {s: per_split.get(s, 0) for s in splits},
        "identities": {
            name: {**{s: c.get(s, 0) for s in splits}, "total": sum(c.values())}
            for name, c in sorted(per_identity.items())
        },
        "identities_left_out": list(left_out),
        "sources": dict(sorted(sources.items())),
        "licenses": license_rows,
        "restrictions": dict(sorted(restrictions.items())),
        "attribution": attribution,
        "quality": quality,
        "review": review,
        "gates": gates,
        "contact_sheets": dict(sorted(sheets.items())),
    }


def _cell(v) -> str:
    text = "" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def card_markdown(card: dict) -> str:
    """DATASET.md: the card for people."""
    splits = list(card["splits"])
    t = card["totals"]
    rev = card["revision"] or "(not in git)"
    out = [
        "# Dataset card",
        "",
        f"{t['faces']} faces of {t['identities']} identities from {t['images']} images"
        + (f" ({t['videos']} videos)" if t["videos"] else "")
        + f"; built from revision `{rev}`.",
        "",
        "## How to reproduce",
        "",
        "```",
        card["reproduce"],
        "```",
    ]
    if card["params_changed"]:
        out += ["", "Built with params.yaml changed from that revision (commit them to reproduce exactly):", ""]
        out += [f"- `{k}`: {v['committed']!r} -> {v['used']!r}" for k, v in card["params_changed"].items()]
    out += ["", "## Identities and splits", "", "| identity | " + " | ".join(splits) + " | total | sheet |"]
    out.append("|---" * (len(splits) + 3) + "|")
    for name, c in card["identities"].items():
        sheet = card["contact_sheets"].get(name)
        out.append(
            f"| {_cell(name)} | "
            + " | ".join(str(c[s]) for s in splits)
            + f" | {c['total']} | "
            + (f"[sheet]({sheet})" if sheet else "")
            + " |"
        )
    out.append("| **all** | " + " | ".join(str(card["splits"][s]) for s in splits) + f" | {t['faces']} | |")
    if card["identities_left_out"]:
        out += ["", "Left out (too few faces): " + ", ".join(card["identities_left_out"])]
    out += [
        "",
        "Faces from one source image, one video or near-duplicate images never span two splits.",
        "",
        "## Sources",
        "",
        "| source kind | images | faces |",
        "|---|---|---|",
    ]
    out += [f"| {k} | {v['images']} | {v['faces']} |" for k, v in card["sources"].items()]
    out += ["", "## Licenses", "", "| license | terms | images | faces |", "|---|---|---|---|"]
    for e in card["licenses"]:
        name = e["license"] or "unknown (no license stated by the source)"
        link = f"[{_cell(name)}]({e['license_url']})" if e["license_url"] else _cell(name)
        out.append(f"| {link} | {_cell(e['usage_terms'])} | {e['images']} | {e['faces']} |")
    if card["restrictions"]:
        out += [
            "",
            "Restrictions stated by sources: " + ", ".join(f"{k} ({n})" for k, n in card["restrictions"].items()),
        ]
    attribution = card["attribution"]
    if attribution:
        out += ["", "## Attribution", "", "| image | author | license | page |", "|---|---|---|---|"]
        for a in attribution[:MD_ATTRIBUTIONS]:
            out.append(
                f"| {a['image_id'][:12]} | {_cell(a['author'])} | {_cell(a['license'])} | "
                f"{_cell(a['page_url'] or a['source_uri'])} |"
            )
        if len(attribution) > MD_ATTRIBUTIONS:
            out.append(f"\n{len(attribution) - MD_ATTRIBUTIONS} more in card.json (`attribution`).")
    q = card["quality"]
    out += ["", "## Quality", ""]
    fq, cd = q["face_quality"], q["cluster_doubt"]
    if fq["n"]:
        out.append(
            f"- face quality (0..1): mean {fq['mean']}, median {fq['median']}, "
            f"10th percentile {fq['p10']}, min {fq['min']}"
        )
    if cd["n"]:
        out.append(f"- clustering doubt (0 = certain): mean {cd['mean']}, median {cd['median']}")
    if q["label_precision"]:
        lp = q["label_precision"]
        out.append(f"- against source labels: precision {lp['precision']} over {lp['n_labelled']} labelled faces")
    for name, v in q["identities"].items():
        out.append(f"- {_cell(name)}: dominant-cluster confidence {v['confidence']}, margin {v['margin']}")
    rv = card["review"]
    out += [
        "",
        "## Review",
        "",
        f"{rv['reviewed']} of {t['faces']} faces checked by a person (coverage {rv['coverage']}); "
        "the rest carry the automatic decision.",
    ]
    if rv["decisions"]:
        out.append("Decisions: " + ", ".join(f"{k} {n}" for k, n in rv["decisions"].items()))
    g = card["gates"]
    out += [
        "",
        "## Quality gates",
        "",
        f"{'passed' if g['passed'] else 'FAILED'}: {g['n_checks']} checks; report `{g['report']}`.",
    ]
    out += [f"- {f}" for f in g["failures"]]
    return "\n".join(out) + "\n"


def contact_sheet(title: str, faces: list[tuple[str, bytes]], splits: list[str]) -> bytes:
    """A PNG grid of face crops (`(split, png bytes)`, in the order given), each framed in its split's colour,
    under a title line and a colour legend."""
    from PIL import Image, ImageDraw, ImageFont

    faces = faces[:SHEET_FACES]
    cols = max(1, min(SHEET_COLUMNS, len(faces)))
    rows = max(1, -(-len(faces) // cols))
    pad, head = 4, 40
    width = max(cols * (SHEET_THUMB + pad) + pad, 360)
    sheet = Image.new("RGB", (width, head + rows * (SHEET_THUMB + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    draw.text((pad, 3), title, fill="black", font=font)
    x = pad
    for i, split in enumerate(splits):
        colour = _SPLIT_COLOURS[min(i, len(_SPLIT_COLOURS) - 1)]
        draw.rectangle((x, 24, x + 10, 34), fill=colour)
        draw.text((x + 14, 22), split, fill="black", font=font)
        x += 24 + int(draw.textlength(split, font=font))
    for i, (split, data) in enumerate(faces):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (SHEET_THUMB + pad), head + pad + r * (SHEET_THUMB + pad)
        with Image.open(io.BytesIO(data)) as im:
            thumb = im.convert("RGB").resize((SHEET_THUMB - 4, SHEET_THUMB - 4), Image.Resampling.LANCZOS)
        colour = (
            _SPLIT_COLOURS[min(splits.index(split), len(_SPLIT_COLOURS) - 1)] if split in splits else (0, 0, 0)
        )
        draw.rectangle((x0, y0, x0 + SHEET_THUMB - 1, y0 + SHEET_THUMB - 1), fill=colour)
        sheet.paste(thumb, (x0 + 2, y0 + 2))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
