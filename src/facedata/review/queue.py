"""What a reviewer sees, in what order: the last build's clusters with the decisions made since applied on top.

Per name: its cluster as a grid (most typical faces first), then the faces in doubt, most doubtful first (the
cluster stage's doubt: distance to the cluster's centre against the margin to the next cluster, lowered by a
poor quality score), then the other clusters found among that name's images, largest first. Unnamed clusters
(video people, strangers) come as their own pages. A "same person?" queue holds face pairs near the
threshold: a doubtful face and the most typical face of the cluster it nearly belongs to.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from facedata import manifest
from facedata.review.decisions import State, label_name

#: Members at or above this doubt (0.5 = halfway between their cluster and the next) go to the doubt list.
DOUBT = 0.35
#: Quality below this makes a face more doubtful (bad crops are where detectors and embeddings fail).
LOW_QUALITY = 0.3


@dataclass
class Board:
    """The last build's faces, in clusters-manifest order, with everything the pages show."""

    face_ids: list[str]
    row: dict[str, int]
    cluster: list[str]
    identity: list[str | None]
    query: list[str | None]
    image_id: list[str]
    doubt: np.ndarray
    quality: np.ndarray
    next_cluster: list[str | None]
    crop_path: dict[str, str]
    box: dict[str, tuple[float, float, float, float]]
    x: np.ndarray | None  # embeddings in the same order (None: not available)
    names: list[str]  # the queried names (identities manifest)
    status: dict[str, str] = field(default_factory=dict)  # name -> identities status (ok, weak, conflict...)
    label: dict[str, str | None] = field(default_factory=dict)  # image -> known identity (labelled sources)

    def __len__(self) -> int:
        return len(self.face_ids)


def load(root: str | os.PathLike, model: str | None = None) -> Board:
    """Read the build a review starts from (clusters, faces, images; embeddings of `model` when given)."""
    root = Path(root)
    c = manifest.read(
        "clusters", root, columns=["face_id", "image_id", "cluster_id", "identity", "query_name", "doubt",
                                   "next_cluster_id"]
    )  # fmt: skip
    faces = manifest.read("faces", root, columns=["face_id", "crop_path", "quality", "x1", "y1", "x2", "y2"])
    images = manifest.read("images", root, columns=["image_id", "label"])
    ids = c["face_id"].to_pylist()
    row = {f: i for i, f in enumerate(ids)}
    fpos = pc.index_in(c["face_id"], value_set=faces["face_id"]).to_pylist()
    frows = faces.to_pylist()
    quality = np.array([frows[p]["quality"] if p is not None and frows[p]["quality"] is not None else 1.0
                        for p in fpos], dtype=np.float32)  # fmt: skip
    crop = {f: frows[p]["crop_path"] for f, p in zip(ids, fpos, strict=True) if p is not None}
    box = {
        f: tuple(frows[p][k] for k in ("x1", "y1", "x2", "y2"))
        for f, p in zip(ids, fpos, strict=True)
        if p is not None
    }
    x = None
    if model is not None and ids:  # the clustering's own reader: vectors straight from Arrow into numpy
        from facedata.cluster.faceset import read_faceset

        fs, _, _ = read_faceset(root, model)
        at = {f: i for i, f in enumerate(fs.face_ids)}
        x = np.zeros((len(ids), fs.x.shape[1]), dtype=np.float32)
        have = [(r, at[f]) for r, f in enumerate(ids) if f in at]
        if have:
            rows, src = map(list, zip(*have, strict=True))
            x[rows] = fs.x[src]
    ident = manifest.read("identities", root, missing_ok=True, columns=["query_name", "status"])
    names = ident["query_name"].to_pylist()
    return Board(
        face_ids=ids,
        row=row,
        cluster=c["cluster_id"].to_pylist(),
        identity=c["identity"].to_pylist(),
        query=c["query_name"].to_pylist(),
        image_id=c["image_id"].to_pylist(),
        doubt=c["doubt"].to_numpy(zero_copy_only=False).astype(np.float32),
        quality=quality,
        next_cluster=c["next_cluster_id"].to_pylist(),
        crop_path=crop,
        box=box,
        x=x,
        names=sorted(names),
        status=dict(zip(names, ident["status"].to_pylist(), strict=True)),
        label=dict(zip(images["image_id"].to_pylist(), images["label"].to_pylist(), strict=True)),
    )


@dataclass
class Current:
    """The board as the decisions made so far leave it (before any rebuild)."""

    group: list[str]  # id:NAME | grp:RID | rej:REASON | auto:CLUSTER_ID
    identity: list[str | None]
    reviewed: np.ndarray  # bool per face
    score: np.ndarray  # review priority: doubt, raised for low quality
    usable: set[str] = field(default_factory=set)  # names the export takes: status ok, or accepted in review


def current(board: Board, state: State) -> Current:
    group, identity = [], []
    reviewed = np.zeros(len(board), dtype=bool)
    for i, f in enumerate(board.face_ids):
        lab = state.label.get(f)
        if lab is None:
            group.append(f"auto:{board.cluster[i]}")
            identity.append(board.identity[i])
        else:
            reviewed[i] = True
            group.append(lab)
            identity.append(label_name(lab))
    # A grp: group named nowhere keeps no name; an auto cluster whose faces were all moved keeps its own.
    score = board.doubt + np.where(board.quality < LOW_QUALITY, 0.25, 0.0).astype(np.float32)
    accepted = {r["target"] for r in state.active if r["action"] in ("accept", "name") and r["target"]}
    usable = {n for n, st in board.status.items() if st == "ok"} | accepted
    return Current(group, identity, reviewed, score, usable)


def members(cur: Current, group: str) -> list[int]:
    return [i for i, g in enumerate(cur.group) if g == group]


def name_view(board: Board, cur: Current, name: str) -> dict:
    """The sections of a name's page: grid (typical first), doubt (most doubtful first), other clusters."""
    mine = [i for i, n in enumerate(cur.identity) if n == name]
    doubtful = sorted(
        (i for i in mine if not cur.reviewed[i] and cur.score[i] >= DOUBT), key=lambda i: -cur.score[i]
    )
    in_doubt = set(doubtful)
    grid = sorted((i for i in mine if i not in in_doubt), key=lambda i: (not cur.reviewed[i], cur.score[i]))
    others: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(board.query):
        if q == name and cur.identity[i] != name and not cur.group[i].startswith("rej:"):
            others[cur.group[i]].append(i)
    centre = centres(board, cur).get(name)

    def nearness(rows: list[int]) -> float:  # the closest face to the name's centre first, else the largest
        if centre is None:
            return -len(rows)
        return float(np.min(np.linalg.norm(board.x[rows] - centre, axis=1)))

    other = [
        {"group": g, "faces": sorted(rows, key=lambda i: cur.score[i]), "identity": _group_identity(cur, rows)}
        for g, rows in sorted(others.items(), key=lambda kv: (nearness(kv[1]), kv[0]))
    ]
    return {"grid": grid, "doubt": doubtful, "other": other}


def _group_identity(cur: Current, rows: list[int]) -> str | None:
    names = {cur.identity[i] for i in rows} - {None}
    return sorted(names)[0] if names else None


def group_view(cur: Current, group: str) -> list[int]:
    """An unnamed cluster's faces, typical first."""
    return sorted(members(cur, group), key=lambda i: cur.score[i])


def unnamed_groups(cur: Current, min_size: int = 2) -> list[tuple[str, int]]:
    """(group, size) of clusters without a name, largest first."""
    sizes: dict[str, int] = defaultdict(int)
    for g, n in zip(cur.group, cur.identity, strict=True):
        if n is None and not g.startswith("rej:"):
            sizes[g] += 1
    return sorted(((g, k) for g, k in sizes.items() if k >= min_size), key=lambda gk: (-gk[1], gk[0]))


def names(board: Board, cur: Current) -> list[dict]:
    """Every name with its counts: members, in doubt, reviewed."""
    stats: dict[str, dict] = {n: {"name": n, "n": 0, "doubt": 0, "reviewed": 0} for n in board.names}
    for i, n in enumerate(cur.identity):
        if n is None:
            continue
        s = stats.setdefault(n, {"name": n, "n": 0, "doubt": 0, "reviewed": 0})
        s["n"] += 1
        s["reviewed"] += int(cur.reviewed[i])
        s["doubt"] += int(not cur.reviewed[i] and cur.score[i] >= DOUBT)
    return [stats[k] for k in sorted(stats)]


def _rows_by(values: list[str | None]) -> dict[str, list[int]]:
    """Row numbers per value (a name, a query), None left out."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, v in enumerate(values):
        if v is not None:
            rows[v].append(i)
    return rows


def centres(board: Board, cur: Current) -> dict[str, np.ndarray]:
    """Unit mean embedding of each name's current faces."""
    if board.x is None or board.x.shape[1] == 0:
        return {}
    rows = _rows_by(cur.identity)
    out = {}
    for n, r in rows.items():
        c = board.x[r].mean(axis=0)
        out[n] = c / max(float(np.linalg.norm(c)), 1e-12)
    return out


def review_order(board: Board, cur: Current) -> list[int]:
    """The faces a reviewer looks at one by one, in the app's order (its /queue page and the review-effort
    benchmark). Reviewed faces are left out; every other face comes once.

    1. the names the build could not settle (status weak / conflict): the faces of their folders that recur
       there as much as a settled name's members do (`folder_recurrence`), and the faces given the name, most
       recurring first, across those names (the person a folder was crawled for is the one who recurs in it);
    2. faces given a usable name although only another name's query found their image, least typical first;
    3. faces left out of a usable name whose nearest other cluster is that name's (a likely missed member),
       most doubtful first;
    4. the rest of the unsettled names' folders, most recurring first;
    5. the usable names' members, least typical first (`member_atypicality`: a face far out for a tight name
       before a typical one of a loose name);
    6. everything else (the strangers a crawl brings, rightly left out), by the cluster stage's doubt.

    By the doubt alone those strangers, each about halfway between its own singleton and the nearest
    cluster, would come before the members that really are wrong."""
    unsettled = sorted((n for n in board.names if n not in cur.usable), key=lambda n: n)
    recur = folder_recurrence(board)
    settled = [i for i, n in enumerate(cur.identity) if n in cur.usable and board.query[i] == n]
    typical = float(np.percentile(recur[settled], 5)) if settled else -np.inf
    unsettled_faces = [i for i, q in enumerate(board.query) if q in unsettled and not cur.reviewed[i]]
    first = sorted(
        (i for i in unsettled_faces if recur[i] >= typical or cur.identity[i] == board.query[i]),
        key=lambda i: (-recur[i], -cur.score[i], i),
    )
    seen = set(first)
    later = sorted((i for i in unsettled_faces if i not in seen), key=lambda i: (-recur[i], -cur.score[i], i))
    seen.update(later)
    todo = [i for i in range(len(board)) if i not in seen and not cur.reviewed[i]]
    atypical = member_atypicality(board, cur)
    home = _name_clusters(board, cur)
    cross, missed, members_, rest = [], [], [], []
    for i in todo:
        name, query = cur.identity[i], board.query[i]
        if name in cur.usable:
            (cross if query is not None and query != name else members_).append(i)
        elif query in cur.usable and not cur.group[i].startswith("rej:"):
            (missed if board.next_cluster[i] in home.get(query, ()) else rest).append(i)
        else:
            rest.append(i)
    return (
        first
        + sorted(cross, key=lambda i: (-atypical[i], i))
        + sorted(missed, key=lambda i: (-cur.score[i], i))
        + later
        + sorted(members_, key=lambda i: (-atypical[i], i))
        + sorted(rest, key=lambda i: (-cur.score[i], i))
    )


def folder_recurrence(board: Board, k: int = 3) -> np.ndarray:
    """Per face: the mean cosine similarity to its `k` most similar faces among the other faces of its query's
    folder. The person a folder was crawled for recurs in it; the strangers a crawl brings mostly do not."""
    out = np.zeros(len(board), dtype=np.float64)
    if board.x is None or board.x.shape[1] == 0:
        return out
    for rows in _rows_by(board.query).values():
        if len(rows) < 2:
            continue
        x = board.x[rows].astype(np.float64)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        top = -np.sort(-sim, axis=1)[:, : min(k, len(rows) - 1)]
        out[rows] = top.mean(axis=1)
    return out


def member_atypicality(board: Board, cur: Current) -> np.ndarray:
    """Per face given a name: its distance to the centre of the rest of that name's faces over the name's
    spread (median of that distance over its members; the median over all names for a name of fewer than 3
    faces), plus 0.5 for a poor quality score. 0 for faces without a name or without embeddings."""
    out = np.zeros(len(board), dtype=np.float64)
    if board.x is None or board.x.shape[1] == 0:
        return out
    rows = _rows_by(cur.identity)
    spread: dict[str, float] = {}
    for n, r in rows.items():
        if len(r) < 2:
            continue
        x = board.x[r].astype(np.float64)
        rest = x.sum(axis=0) - x
        rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-12)
        out[r] = np.linalg.norm(x - rest, axis=1)
        if len(r) >= 3:
            spread[n] = float(np.median(out[r]))
    overall = float(np.median(list(spread.values()))) if spread else 1.0
    for n, r in rows.items():
        out[r] /= max(spread.get(n, overall), 1e-6)
    low = board.quality < LOW_QUALITY
    return out + np.where(low & np.array([n is not None for n in cur.identity], dtype=bool), 0.5, 0.0)


def _name_clusters(board: Board, cur: Current) -> dict[str, set[str]]:
    """Each name's clusters as the board has them (the clusters its faces are in)."""
    out: dict[str, set[str]] = defaultdict(set)
    for i, n in enumerate(cur.identity):
        if n is not None:
            out[n].add(board.cluster[i])
    return out


def similar(board: Board, face: str, limit: int = 200) -> list[int]:
    """ "More like this": faces by cosine similarity to `face`, most similar first (itself first)."""
    if board.x is None or face not in board.row or board.x.shape[1] == 0:
        return []
    sims = board.x @ board.x[board.row[face]]
    order = np.argsort(-sims, kind="stable")[:limit]
    return [int(i) for i in order]


def pairs(board: Board, cur: Current, limit: int = 200) -> list[tuple[int, int, float]]:
    """The "same person?" queue: (face, typical face of the cluster it nearly belongs to, doubt), nearest to
    the halfway point first. Faces already reviewed are left out."""
    by_cluster: dict[str, int] = {}
    for i in np.argsort(board.doubt, kind="stable"):
        by_cluster.setdefault(board.cluster[int(i)], int(i))
    out = []
    for i, nxt in enumerate(board.next_cluster):
        if nxt is None or cur.reviewed[i] or nxt not in by_cluster:
            continue
        j = by_cluster[nxt]
        if cur.reviewed[j] and cur.group[j] == cur.group[i]:
            continue
        out.append((i, j, float(board.doubt[i])))
    out.sort(key=lambda t: (abs(t[2] - 0.5), t[0]))
    return out[:limit]
