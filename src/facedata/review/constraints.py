"""Review decisions as clustering constraints, so a rebuild never undoes them.

Two layers. The constraints go into the clustering itself (full or incremental): each review label's faces are
a must-link group (one starting cluster), and faces kept apart are cannot-link pairs, so the neighbours of a
decided face follow the decision. Then `enforce` makes the decisions hold on the labels whatever the method
(baselines ignore constraints; an incremental rerun with no new faces keeps the old labels): each review group
ends in one cluster of its own, rejected faces end alone, faces kept apart end in different clusters.
Finally `identities_of` says who each face is: the review's name first, then the automatic choice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from facedata.review.decisions import State, decision_of, label_name

#: At most this many faces of the other side per cannot-link decision go into the clustering (the nearest
#: are not known here; `enforce` applies the decision to every face whatever this cap).
MAX_APART = 200


def review_groups(state: State, rows_of: dict[str, int]) -> dict[str, np.ndarray]:
    """Rows of the faces each id:/grp: label holds (faces absent from this build skipped)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for f, lab in state.label.items():
        if not lab.startswith("rej:") and f in rows_of:
            groups[lab].append(rows_of[f])
    return {lab: np.asarray(sorted(r), dtype=np.int64) for lab, r in sorted(groups.items())}


def apart_pairs(state: State, rows_of: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows A, rows B) kept apart: explicit decisions, and each not_this_person face vs its old identity."""
    sides = [(list(a), list(b)) for a, b in state.apart]
    for f, name in state.rejected_from.items():
        if name and state.label.get(f) == "rej:not_this_person":
            sides.append(([f], state.faces_of(f"id:{name}")))
    out = []
    for a, b in sides:
        ra = np.asarray(sorted(rows_of[f] for f in a if f in rows_of), dtype=np.int64)
        rb = np.asarray(sorted(rows_of[f] for f in b if f in rows_of), dtype=np.int64)
        if ra.size and rb.size:
            out.append((ra, rb))
    return out


def clustering_constraints(state: State, face_ids: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(cannot-link pairs, must-link groups) over rows of `face_ids` for the clustering algorithm."""
    rows_of = {f: i for i, f in enumerate(face_ids)}
    must = [g for g in review_groups(state, rows_of).values() if g.size > 1]
    pairs = [
        np.stack(np.meshgrid(a, b[:MAX_APART], indexing="ij"), -1).reshape(-1, 2)
        for a, b in apart_pairs(state, rows_of)
    ]
    cannot = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    return cannot.astype(np.int64), must


def enforce(labels: np.ndarray, state: State, face_ids: Sequence[str]) -> np.ndarray:
    """Labels in which every decision holds (see module docstring); unreviewed faces keep theirs unless they
    share a cluster with faces they must be kept apart from."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    if not len(labels) or not state.label and not state.apart:
        return labels
    rows_of = {f: i for i, f in enumerate(face_ids)}
    nxt = int(labels.max()) + 1
    claimed: dict[int, str] = {}
    reviewed = np.zeros(len(labels), dtype=bool)
    groups = review_groups(state, rows_of)
    sizes = Counter(labels.tolist())
    for lab, rows in sorted(groups.items(), key=lambda kv: (-kv[1].size, kv[0])):
        counts = Counter(int(v) for v in labels[rows] if int(v) not in claimed)
        target = min(counts, key=lambda v: (-counts[v], v)) if counts else None
        # The group takes over the cluster most of its faces are in only when they are at least half of it:
        # a few faces moved out of someone else's cluster must not carry that cluster with them.
        if target is None or 2 * counts[target] < sizes[target]:
            target, nxt = nxt, nxt + 1
        claimed[target] = lab
        labels[rows] = target
        reviewed[rows] = True
    for f, lab in state.label.items():  # rejected faces: alone
        if lab.startswith("rej:") and f in rows_of:
            labels[rows_of[f]] = nxt
            reviewed[rows_of[f]] = True
            nxt += 1
    for a, b in apart_pairs(state, rows_of):
        for shared in sorted(set(labels[a].tolist()) & set(labels[b].tolist())):
            # Move whichever side's faces there are unreviewed (the reviewed side's label is its decision).
            for side in (b, a):
                loose = side[(labels[side] == shared) & ~reviewed[side]]
                if loose.size:
                    labels[loose] = nxt
                    nxt += 1
                    break
    return labels


def identities_of(
    face_ids: Sequence[str], labels: np.ndarray, state: State, auto: Sequence[str | None]
) -> tuple[list[str | None], dict[str, int]]:
    """Each face's identity: its review name; none when rejected; else the name reviewed for its cluster (the
    name most of the cluster's reviewed faces were given); else the automatic one. Also each reviewed name's
    cluster label (the one holding most of its reviewed faces)."""
    rows_of = {f: i for i, f in enumerate(face_ids)}
    named_cluster: dict[str, Counter] = defaultdict(Counter)
    names_in: dict[int, Counter] = defaultdict(Counter)
    for f, lab in state.label.items():
        name = label_name(lab)
        if name and f in rows_of:
            named_cluster[name][int(labels[rows_of[f]])] += 1
            names_in[int(labels[rows_of[f]])][name] += 1
    cluster_of = {n: min(c, key=lambda v: (-c[v], v)) for n, c in named_cluster.items()}
    name_of_cluster = {v: min(c, key=lambda n: (-c[n], n)) for v, c in names_in.items()}
    out: list[str | None] = []
    for i, f in enumerate(face_ids):
        lab = state.label.get(f)
        here = name_of_cluster.get(int(labels[i]))
        if lab is not None:
            # rej: -> None; grp: -> the cluster's reviewed name, if any
            out.append(label_name(lab) or (here if lab.startswith("grp:") else None))
        else:
            out.append(here or auto[i])
    return out, cluster_of


def review_columns(face_ids: Sequence[str], state: State) -> dict[str, list]:
    """The clusters manifest's review columns: decision, reviewer, review id (null when unreviewed)."""
    cols: dict[str, list] = {"review_decision": [], "reviewer": [], "review_id": []}
    for f in face_ids:
        lab, row = state.label.get(f), state.by.get(f)
        cols["review_decision"].append(decision_of(lab) if lab else None)
        cols["reviewer"].append(row["reviewer"] if row else None)
        cols["review_id"].append(row["review_id"] if row else None)
    return cols
