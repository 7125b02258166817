"""Export: the curated dataset as an ImageFolder tree of aligned crops plus `dataset.parquet`, where every row
carries its source and the lineage of each stage that touched it.

Splits are assigned per identity over *groups* (one video's frames form one group, any other image is its own
group), so near-identical frames never straddle train and test. Assignment hashes (seed, identity, group) and
is independent of row order, so the same data always lands in the same split.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

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


def assign_splits(rows: list[dict], splits: dict[str, float], seed: int) -> dict[str, str]:
    """face_id -> split name. Within an identity, groups are ordered by hash and cut at the cumulative
    fractions (by group position), so a 10-group identity at 0.8/0.1/0.1 gets 8/1/1 groups."""
    names = list(splits)
    bounds, acc = [], 0.0
    for name in names:
        acc += splits[name]
        bounds.append(acc)
    by_identity: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        group = f"video:{r['video_id']}" if r.get("video_id") else f"image:{r['image_id']}"
        by_identity[r["identity"]][group].append(r["face_id"])
    out: dict[str, str] = {}
    for identity, groups in by_identity.items():
        ordered = sorted(groups, key=lambda g: (_unit_hash(str(seed), identity, g), g))
        for pos, group in enumerate(ordered):
            q = (pos + 0.5) / len(ordered)
            split = next((n for n, b in zip(names, bounds, strict=True) if q < b), names[-1])
            for fid in groups[group]:
                out[fid] = split
    return out
