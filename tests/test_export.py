"""Export without leakage, and the dataset card: unit level (the stage runs in test_flow / test_pipeline_e2e)."""

from __future__ import annotations

import io
import json
import random

from PIL import Image

from facedata.export.card import card_markdown, contact_sheet, dataset_card
from facedata.export.splits import assign_splits, leakage_groups

SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _face(fid, identity, image, video=None, dup_of=None, phash=None):
    return {
        "face_id": fid,
        "identity": identity,
        "image_id": image,
        "video_id": video,
        "dup_of": dup_of,
        "phash": phash,
    }


def leaky_rows() -> list[dict]:
    """Per identity: 30 plain images; a near-duplicate of one of them (`dup_of`); two images with the same
    perceptual hash; a video whose frames are separate images; and a group photo of two identities."""
    rows = []
    for who in ("ann", "bob"):
        rows += [_face(f"{who}-{i}", who, f"{who}-img{i}", phash=f"{who}-ph{i}") for i in range(30)]
        rows += [_face(f"{who}-dup{i}", who, f"{who}-dupimg{i}", dup_of=f"{who}-img{i}") for i in range(10)]
        rows += [_face(f"{who}-ph{i}", who, f"{who}-phimg{i}", phash=f"{who}-ph{i + 10}") for i in range(10)]
        rows += [_face(f"{who}-v{i}", who, f"{who}-frame{i}", video=f"{who}-video") for i in range(8)]
    rows += [_face("group-ann", "ann", "group-photo"), _face("group-bob", "bob", "group-photo")]
    return rows


def _groups(rows: list[dict]) -> list[set[str]]:
    """The leakage groups the test data was built with, written out independently of the code under test."""
    sets = []
    for who in ("ann", "bob"):
        for i in range(10):
            sets.append({f"{who}-{i}", f"{who}-dup{i}"})
            sets.append({f"{who}-{i + 10}", f"{who}-ph{i}"})
        sets.append({f"{who}-v{i}" for i in range(8)})
    sets.append({"group-ann", "group-bob"})
    return sets


def test_no_leakage_group_spans_two_splits():
    rows = leaky_rows()
    split_of = assign_splits(rows, SPLITS, seed=0)
    assert set(split_of) == {r["face_id"] for r in rows}
    for group in _groups(rows):
        assert len({split_of[f] for f in group}) == 1, f"{sorted(group)} spans {[split_of[f] for f in group]}"
    # Every split is used, and groups, not faces, are cut: ann's 30 + 1 groups land near 60/20/20.
    ann = [split_of[r["face_id"]] for r in rows if r["identity"] == "ann"]
    assert {"train", "val", "test"} == set(ann)


def test_groups_and_splits_do_not_depend_on_row_order():
    rows = leaky_rows()
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    assert leakage_groups(rows) == leakage_groups(shuffled)
    assert assign_splits(rows, SPLITS, 0) == assign_splits(shuffled, SPLITS, 0)
    assert assign_splits(rows, SPLITS, 0) != assign_splits(rows, SPLITS, 1)


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (112, 112), colour).save(buf, format="PNG")
    return buf.getvalue()


def _dataset() -> list[dict]:
    base = {
        "license": None,
        "license_url": None,
        "usage_terms": None,
        "attribution_required": None,
        "restrictions": None,
        "author": None,
        "page_url": None,
        "video_id": None,
        "label": None,
    }
    rows = []
    for i in range(6):
        rows.append(
            {
                **base,
                "face_id": f"a{i}",
                "identity": "Ann | Lee",
                "split": "train" if i < 4 else "test",
                "image_id": f"img{i}",
                "source_kind": "web_api",
                "source_uri": f"https://commons.example/a{i}.jpg",
                "page_url": f"https://commons.example/File:a{i}.jpg",
                "license": "CC BY-SA 4.0",
                "license_url": "https://creativecommons.org/licenses/by-sa/4.0",
                "author": "Jo Photographer",
                "attribution_required": True,
                "restrictions": ["personality"],
                "label": "Ann | Lee" if i else "Bob",
                "reviewed": i < 2,
                "review_decision": "accept" if i < 2 else None,
                "reviewer": "rev1" if i < 2 else None,
            }
        )
    rows.append(
        {
            **base,
            "face_id": "b0",
            "identity": "Bob",
            "split": "val",
            "image_id": "frame0",
            "source_kind": "video",
            "source_uri": "clip.mp4",
            "video_id": "v1",
        }
    )
    return rows


def _card(**over) -> dict:
    dataset = _dataset()
    kwargs = {
        "splits": ["train", "val", "test"],
        "faces": {r["face_id"]: {"quality": 0.5 + 0.05 * i} for i, r in enumerate(dataset)},
        "clusters": {r["face_id"]: {"doubt": 0.1} for r in dataset},
        "identities": {"Ann | Lee": {"confidence": 0.9, "margin": 0.5}},
        "validate_report": {
            "success": True,
            "manifests": {"faces": {"checks": [{}, {}]}, "images": {"checks": [{}]}},
            "failures": [],
        },
        "revision": "0123456789abcdef",
        "params_changed": {"export.seed": (0, 3)},
        "left_out": ["Carl"],
        "sheets": {"Ann | Lee": "contact_sheets/Ann_Lee-1.png"},
    }
    kwargs.update(over)
    return dataset_card(dataset, **kwargs)


def test_card_counts_sources_rights_review_and_gates():
    card = _card()
    assert card["totals"] == {"faces": 7, "identities": 2, "images": 7, "videos": 1}
    assert card["splits"] == {"train": 4, "val": 1, "test": 2}
    assert card["identities"]["Ann | Lee"] == {"train": 4, "val": 0, "test": 2, "total": 6}
    assert card["sources"] == {"video": {"images": 1, "faces": 1}, "web_api": {"images": 6, "faces": 6}}
    lic = {e["license"]: e for e in card["licenses"]}
    assert lic["CC BY-SA 4.0"]["images"] == 6 and lic[None]["images"] == 1
    assert card["restrictions"] == {"personality": 6}
    assert len(card["attribution"]) == 6 and card["attribution"][0]["author"] == "Jo Photographer"
    assert card["review"] == {
        "reviewed": 2,
        "coverage": round(2 / 7, 4),
        "decisions": {"accept": 2},
        "reviewers": ["rev1"],
    }
    assert card["gates"]["passed"] is True and card["gates"]["n_checks"] == 3
    assert card["quality"]["label_precision"] == {"n_labelled": 6, "precision": round(5 / 6, 4)}
    assert card["reproduce"] == "git checkout 0123456789abcdef && dvc pull && dvc repro"
    md = card_markdown(card)
    assert "Ann \\| Lee" in md and "git checkout 0123456789abcdef && dvc pull && dvc repro" in md
    assert "`export.seed`: 0 -> 3" in md and "Jo Photographer" in md and "personality (6)" in md
    assert "2 of 7 faces checked by a person" in md and "passed: 3 checks" in md
    json.dumps(card)  # card.json is plain JSON


def test_card_without_review_columns_counts_zero_reviewed():
    dataset = [{k: v for k, v in r.items() if not k.startswith("review")} for r in _dataset()]
    card = dataset_card(
        dataset,
        splits=["train", "val", "test"],
        faces={},
        clusters={},
        identities={},
        validate_report={"success": False, "manifests": {}, "failures": ["faces: x failed"]},
        revision=None,
        params_changed={},
        left_out=[],
        sheets={},
    )
    assert card["review"]["reviewed"] == 0 and card["review"]["coverage"] == 0.0
    md = card_markdown(card)
    assert "FAILED" in md and "- faces: x failed" in md and "(not in git)" in md


def test_contact_sheet_is_a_deterministic_png_grid():
    faces = [("train", _png((200, 10, 10)))] * 12 + [("test", _png((10, 10, 200)))] * 3
    a = contact_sheet("Ann: 15 faces", faces, ["train", "val", "test"])
    assert a == contact_sheet("Ann: 15 faces", faces, ["train", "val", "test"])
    with Image.open(io.BytesIO(a)) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w >= 10 * 96 and h >= 2 * 96  # 10 columns, 2 rows
        assert im.convert("RGB").getpixel((4 + 48, 40 + 4 + 48))[0] > 150  # first face: red crop
