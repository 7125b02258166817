"""Export: the curated dataset as an ImageFolder tree of aligned crops plus `dataset.parquet`, where every row
carries its source and the lineage of each stage that touched it.

Splits are assigned over *leakage groups*: faces that share a source image, a video, or a near-duplicate image
(`dup_of`, or the same perceptual hash) are joined into one group (across identities too: a photo of two cast
members is one group), and a group lands in exactly one split. Groups are cut per identity (a group that holds
several identities follows the one with most faces in it), ordered by hashing (seed, identity, group), so the
assignment is independent of row order and the same data always lands in the same split.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_dirname(name: str) -> str:
    """A folder name that cannot escape the dataset directory; distinct names stay distinct."""
    cleaned = _SAFE.sub("_", name).strip("._") or "identity"
    if cleaned != name:
        cleaned = f"{cleaned[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return cleaned


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def leakage_groups(rows: list[dict]) -> dict[str, str]:
    """face_id -> group key. Faces are joined when they share an image, a video, a `dup_of` target (or are
    that target) or a perceptual hash; the key is the smallest member key, so it does not depend on order."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for r in rows:
        face = f"face:{r['face_id']}"
        union(face, f"image:{r['image_id']}")
        if r.get("video_id"):
            union(face, f"video:{r['video_id']}")
        if r.get("dup_of"):
            union(face, f"image:{r['dup_of']}")
        if r.get("phash"):
            union(face, f"phash:{r['phash']}")
    # Name each group by its smallest image/video key (stable whatever the face ids are).
    names: dict[str, str] = {}
    for k in sorted(parent):
        if not k.startswith("face:"):
            names.setdefault(find(k), k)
    return {r["face_id"]: names[find(f"face:{r['face_id']}")] for r in rows}


def assign_splits(rows: list[dict], splits: dict[str, float], seed: int) -> dict[str, str]:
    """face_id -> split name, no leakage group spanning two splits (see `leakage_groups`). Within an identity,
    its groups are ordered by hash and cut at the cumulative fractions (by group position), so a 10-group
    identity at 0.8/0.1/0.1 gets 8/1/1 groups."""
    names = list(splits)
    bounds, acc = [], 0.0
    for name in names:
        acc += splits[name]
        bounds.append(acc)
    group_of = leakage_groups(rows)
    members: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        members[group_of[r["face_id"]]].append(r)
    by_identity: dict[str, list[str]] = defaultdict(list)
    for group, faces in members.items():
        counts = Counter(r["identity"] for r in faces)
        owner = min(counts, key=lambda n: (-counts[n], n))
        by_identity[owner].append(group)
    out: dict[str, str] = {}
    for identity, groups in by_identity.items():
        ordered = sorted(groups, key=lambda g: (_unit_hash(str(seed), identity, g), g))
        for pos, group in enumerate(ordered):
            q = (pos + 0.5) / len(ordered)
            split = next((n for n, b in zip(names, bounds, strict=True) if q < b), names[-1])
            for r in members[group]:
                out[r["face_id"]] = split
    return out
