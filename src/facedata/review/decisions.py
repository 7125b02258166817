"""Review decisions: the append-only `reviews` manifest, and the state they add up to.

Every decision a person makes is one row, never edited: an undo is a row too (`undoes`). The current state is a
fold of the rows in time order (`fold`), so two reviewers' decisions both stay on record and a rebuild reads
exactly what people decided. Labels a decision gives a face:

- `id:NAME`: the face is NAME (accept, move, name, a merge or split into a named cluster, "same person" with a
  named face);
- `grp:REVIEW_ID`: the faces are one person nobody named yet (merge or split of unnamed clusters, "same person");
- `rej:REASON`: not_this_person / not_a_face / bad_quality: the face leaves the identity and the dataset.

A `name_video` decision names a candidate person found in video (`facedata index-video`: unknown face tracks
grouped): its `face_ids` are video track ids, not faces of the build, so it labels tracks (`State.tracks`), and
`facedata.review.video` turns it into a video source of the person's best frames for the next build.

Besides labels, decisions keep faces apart (`apart`): a split selection from the rest of its cluster, a rejected
face from the faces it was rejected from, a "different people" pair. `facedata.review.constraints` turns the
state into the cluster stage's must-links and cannot-links.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from facedata import manifest
from facedata.lock import writing

ACTIONS = ("accept", "reject", "move", "merge", "split", "name", "same", "different", "name_video", "undo")
REASONS = ("not_this_person", "not_a_face", "bad_quality")
#: Actions whose `target` is an identity name (required) / may be one (else the faces form an unnamed group).
NAMED = ("accept", "move", "name", "name_video")
MAX_FACES = 100_000
MAX_NAME = 200


class ReviewError(ValueError):
    """A decision that cannot be recorded as given (the app answers 400 with the message)."""


class Conflict(RuntimeError):
    """Another reviewer decided some of these faces after the decision's author last looked (409)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        who = sorted({r["reviewer"] for r in rows})
        super().__init__(
            f"{len(rows)} decision(s) by {', '.join(who)} on these faces were made since you loaded the page: "
            "reload to see them, or apply yours anyway (it is recorded as overriding theirs)"
        )


@dataclass
class State:
    """What the active decisions add up to."""

    label: dict[str, str] = field(default_factory=dict)  # face -> id:NAME | grp:RID | rej:REASON
    by: dict[str, dict] = field(default_factory=dict)  # face -> the decision row that set its label
    rejected_from: dict[str, str | None] = field(default_factory=dict)  # face -> the identity it was rejected from
    apart: list[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)  # keep side A from side B
    active: list[dict] = field(default_factory=list)  # decisions in effect, time order
    undone: set[str] = field(default_factory=set)
    tracks: dict[str, dict] = field(default_factory=dict)  # video track id -> the name_video decision naming it

    def faces_of(self, label: str) -> list[str]:
        return sorted(f for f, lab in self.label.items() if lab == label)

    def names(self) -> list[str]:
        return sorted({lab[3:] for lab in self.label.values() if lab.startswith("id:")})


def label_name(label: str | None) -> str | None:
    return label[3:] if label and label.startswith("id:") else None


def decision_of(label: str) -> str:
    """The `review_decision` a label means in clusters and dataset rows."""
    if label.startswith("id:"):
        return "accepted"
    if label.startswith("grp:"):
        return "grouped"
    return "rejected:" + label[4:]


def read(root: str | os.PathLike) -> list[dict]:
    """All decisions, time order (an absent manifest: none)."""
    return manifest.read("reviews", root, missing_ok=True).to_pylist()


def fold(rows: Iterable[dict]) -> State:
    """The state the decisions add up to, applied in time (key) order; undone decisions are skipped."""
    rows = sorted(rows, key=lambda r: r["review_id"])
    st = State()
    for r in rows:
        if r["action"] == "undo" and r["undoes"]:
            st.undone.add(r["undoes"])
    for r in rows:
        if r["action"] == "undo" or r["review_id"] in st.undone:
            continue
        st.active.append(r)
        _apply(st, r)
    return st


def _set(st: State, faces: Iterable[str], label: str, row: dict) -> None:
    for f in faces:
        st.label[f] = label
        st.by[f] = row
        st.rejected_from.pop(f, None)


def _apply(st: State, r: dict) -> None:
    faces = list(r["face_ids"])
    others = tuple(r["other_face_ids"] or ())
    action, rid = r["action"], r["review_id"]
    own = f"id:{r['target']}" if r["target"] else f"grp:{rid}"
    if action == "name_video":
        for t in faces:
            st.tracks[t] = r
    elif action in NAMED or action in ("merge", "split"):
        _set(st, faces, own, r)
        if action == "split" and others:
            st.apart.append((tuple(faces), others))
    elif action == "reject":
        _set(st, faces, f"rej:{r['reason']}", r)
        for f in faces:
            st.rejected_from[f] = r["target"]
        if others:
            st.apart.append((tuple(faces), others))
    elif action == "same":
        known = [st.label[f] for f in faces if st.label.get(f, "")[:3] in ("id:", "grp")]
        named = [lab for lab in known if lab.startswith("id:")]
        label = own if r["target"] else (named[0] if named else known[0] if known else own)
        merged = set(faces)
        for lab in known:  # a "same person" answer joins the two faces' whole groups
            if lab != label:
                merged.update(st.faces_of(lab))
        _set(st, sorted(merged), label, r)
    elif action == "different":
        st.apart.append((tuple(faces), others))


def validate(d: dict) -> dict:
    """A decision as posted, checked and normalised (raises ReviewError with what is wrong)."""
    action = d.get("action")
    if action not in ACTIONS:
        raise ReviewError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    faces = d.get("face_ids") or []
    others = d.get("other_face_ids") or []
    for name, v in (("face_ids", faces), ("other_face_ids", others)):
        if not isinstance(v, list) or not all(isinstance(f, str) and 0 < len(f) <= 128 for f in v):
            raise ReviewError(f"{name} must be a list of face ids")
        if len(v) > MAX_FACES:
            raise ReviewError(f"{name}: at most {MAX_FACES} faces per decision")
    target = d.get("target")
    if target is not None:
        if not isinstance(target, str) or not target.strip() or len(target) > MAX_NAME or "\x00" in target:
            raise ReviewError(f"target must be a name of 1..{MAX_NAME} characters")
        target = " ".join(target.split())
    reason = d.get("reason")
    if action == "undo":
        if not isinstance(d.get("undoes"), str) or not d["undoes"]:
            raise ReviewError("undo needs `undoes`: the review_id to take back")
        return {"action": action, "face_ids": [], "undoes": d["undoes"]}
    if not faces:
        raise ReviewError(f"{action} needs at least one face in face_ids")
    if action in NAMED and not target:
        raise ReviewError(f"{action} needs a target identity name")
    if action == "reject" and reason not in REASONS:
        raise ReviewError(f"reject needs a reason: one of {', '.join(REASONS)}")
    if action in ("same", "different") and len(set(faces) | set(others)) != 2:
        raise ReviewError(f"{action} answers a pair: two faces (face_ids and other_face_ids)")
    if action == "same":
        faces, others = sorted(set(faces) | set(others)), []
    if action == "split" and not others:
        raise ReviewError("split needs other_face_ids: the faces of the cluster that stay")
    if set(faces) & set(others):
        raise ReviewError("a face cannot be both decided and kept apart from itself")
    return {
        "action": action,
        "face_ids": sorted(set(faces)),
        "target": target,
        "reason": reason if action == "reject" else None,
        "other_face_ids": sorted(set(others)) or None,
    }


def new_id(now: dt.datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def build_revision(root: str | os.PathLike) -> str:
    """The build a decision was made on: the project's git revision and the clusters manifest's hash."""
    root = Path(root)
    rev = ""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        rev = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    path = manifest.path_for("clusters", root)
    try:
        st = path.stat()
        digest = _digest(str(path), st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        digest = ""
    return f"{rev or 'no-git'}:{digest or 'no-clusters'}"


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """Hash of the clusters manifest, once per version of the file (it can be large)."""
    from facedata.ids import sha256_file

    return sha256_file(path)[:12]


def append(
    root: str | os.PathLike,
    decision: dict,
    reviewer: str,
    seen: str | None = None,
    force: bool = False,
    label_before: dict[str, str] | None = None,
    build: str | None = None,
    now: dt.datetime | None = None,
    wait: float = 10.0,
    then: Callable[[dict, State], None] | None = None,
    check: Callable[[State], None] | None = None,
) -> dict:
    """Record one decision (validated) under the project lock, atomically; returns the row.

    `seen`: the last review_id the reviewer had when deciding. A later active decision by another reviewer on
    the same faces raises `Conflict` unless `force` (then the row names them in `conflicts_with`). `check(state
    before it)` runs under the lock before anything is written and may refuse the decision by raising (a check
    made before the lock can be outdated by the time it is taken). `then(row, state after it)` runs under the
    same lock once the row is written (what else the decision changes)."""
    d = validate(decision)
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > MAX_NAME:
        raise ReviewError("reviewer must be a name")
    with writing(root, "facedata review", wait=wait, dvc_outs=["data/manifests/reviews.parquet"]):
        old = manifest.read("reviews", root, missing_ok=True)
        rows = old.to_pylist()
        st = fold(rows)
        if check is not None:
            check(st)
        if d["action"] == "undo":
            target = next((r for r in rows if r["review_id"] == d["undoes"]), None)
            if target is None:
                raise ReviewError(f"no decision {d['undoes']!r} to undo")
            if target["action"] == "undo" or d["undoes"] in st.undone:
                raise ReviewError(f"decision {d['undoes']} is already undone (or is itself an undo)")
            d["face_ids"] = list(target["face_ids"])
        touched = set(d["face_ids"]) | set(d.get("other_face_ids") or ())
        clash = [
            r
            for r in st.active
            if (seen is None or r["review_id"] > seen)
            and r["reviewer"] != reviewer
            and touched & (set(r["face_ids"]) | set(r["other_face_ids"] or ()))
        ]
        if clash and not force:
            raise Conflict(clash)
        now = now or dt.datetime.now(dt.UTC)
        if rows and new_id(now) <= rows[-1]["review_id"]:  # clocks go back: keep key order = decision order
            now = rows[-1]["time"] + dt.timedelta(microseconds=1)
        row = {
            **{k: None for k in manifest.schema("reviews").names},
            **d,
            "review_id": new_id(now),
            "reviewer": reviewer.strip(),
            "time": now,
            "build": build if build is not None else build_revision(root),
            "conflicts_with": [r["review_id"] for r in clash] or None,
        }
        before = {f: (label_before or {}).get(f) or _label(st, f) for f in d["face_ids"]}
        after_state = fold([*rows, row])
        row["before"] = json.dumps(before, sort_keys=True)
        row["after"] = json.dumps({f: _label(after_state, f) for f in d["face_ids"]}, sort_keys=True)
        table = pa.concat_tables([old, manifest.from_rows("reviews", [row])])
        manifest.write("reviews", table, root)
        if then is not None:
            then(row, after_state)
    return row


def _label(st: State, face_or_track: str) -> str | None:
    if face_or_track in st.tracks:
        return f"id:{st.tracks[face_or_track]['target']}"
    return st.label.get(face_or_track)


def ensure(root: str | os.PathLike) -> Path:
    """The reviews manifest, created empty when absent (the cluster stage's DVC dep must exist)."""
    path = manifest.path_for("reviews", root)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest.write("reviews", manifest.empty("reviews"), root)
    return path


def conflicts(rows: list[dict]) -> list[dict]:
    """Active decisions that overrode another reviewer's (shown in the app)."""
    st = fold(rows)
    return [r for r in st.active if r["conflicts_with"]]


def gold_agreement(rows: list[dict], truth: dict[str, str]) -> dict[str, dict]:
    """Per reviewer, how many of their active decisions on gold faces (`truth`: face -> known identity, from
    labelled sources) agree with the known answer. Accept/move/name agree when the face is that person; a
    not_this_person reject when it is not the identity it was rejected from; a same/different pair when the two
    labels are equal/differ. Grouping decisions without a name say nothing checkable about one face."""
    out: dict[str, dict] = defaultdict(lambda: {"n": 0, "agree": 0})
    for r in fold(rows).active:
        checks: list[bool] = []
        faces = [f for f in r["face_ids"] if f in truth]
        if r["action"] in NAMED or (r["action"] in ("merge", "split") and r["target"]):
            checks = [truth[f] == r["target"] for f in faces]
        elif r["action"] == "reject" and r["reason"] == "not_this_person" and r["target"]:
            checks = [truth[f] != r["target"] for f in faces]
        elif r["action"] in ("same", "different"):
            pair = [*r["face_ids"], *(r["other_face_ids"] or [])]
            if len(pair) == 2 and all(f in truth for f in pair):
                checks = [(truth[pair[0]] == truth[pair[1]]) == (r["action"] == "same")]
        s = out[r["reviewer"]]
        s["n"] += len(checks)
        s["agree"] += sum(checks)
    return {k: {**v, "rate": round(v["agree"] / v["n"], 4) if v["n"] else None} for k, v in sorted(out.items())}
