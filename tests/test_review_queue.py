"""The review queue's order (`facedata.review.queue.review_order`): the faces most likely wrong about a name
first, not the strangers a crawl brings that the build already, rightly, leaves out."""

from __future__ import annotations

import numpy as np

from facedata.review import decisions, queue


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _board(rows: list[dict], x: np.ndarray, status: dict[str, str]) -> queue.Board:
    ids = [f"f{i:02d}" for i in range(len(rows))]
    return queue.Board(
        face_ids=ids,
        row={f: i for i, f in enumerate(ids)},
        cluster=[r["cluster"] for r in rows],
        identity=[r.get("identity") for r in rows],
        query=[r.get("query") for r in rows],
        image_id=[f"i{i:02d}" for i in range(len(rows))],
        doubt=np.array([r["doubt"] for r in rows], dtype=np.float32),
        quality=np.array([r.get("quality", 0.8) for r in rows], dtype=np.float32),
        next_cluster=[r.get("next") for r in rows],
        crop_path={},
        box={},
        x=x,
        names=sorted(status),
        status=status,
    )


def _crawl(seed: int = 0):
    """Name A: 8 faces of one person (one of them wrongly included, a different person but in A's cluster, with
    a low doubt), 6 stranger singletons in A's folder left out (doubt higher than the wrong member's), one true
    face of A left out as a singleton whose nearest cluster is A's, and one face of B's folder put in A."""
    rng = np.random.default_rng(seed)
    d = 64
    a = _unit(rng.normal(size=d))
    rows, xs = [], []
    for _ in range(7):  # A's own faces, tightly around its direction
        rows.append({"cluster": "cA", "identity": "A", "query": "A", "doubt": 0.2, "next": "cS0"})
        xs.append(_unit(a + 0.15 * rng.normal(size=d)))
    wrong = len(rows)  # somebody else, far from A's centre for A's spread, but the stage found it fairly sure
    rows.append({"cluster": "cA", "identity": "A", "query": "A", "doubt": 0.41, "next": "cS0"})
    xs.append(_unit(a + 0.9 * rng.normal(size=d)))
    strangers = []
    for k in range(6):
        strangers.append(len(rows))
        rows.append(
            {"cluster": f"cS{k}", "identity": None, "query": "A", "doubt": 0.46, "next": f"cS{(k + 1) % 6}"}
        )
        xs.append(_unit(rng.normal(size=d)))
    missed = len(rows)
    rows.append({"cluster": "cM", "identity": None, "query": "A", "doubt": 0.45, "next": "cA"})
    xs.append(_unit(a + 0.4 * rng.normal(size=d)))
    b = _unit(rng.normal(size=d))
    for _ in range(4):
        rows.append({"cluster": "cB", "identity": "B", "query": "B", "doubt": 0.2, "next": "cA"})
        xs.append(_unit(b + 0.15 * rng.normal(size=d)))
    cross = len(rows)  # found under B's query only, given A
    rows.append({"cluster": "cA", "identity": "A", "query": "B", "doubt": 0.3, "next": "cB"})
    xs.append(_unit(a + 0.3 * rng.normal(size=d)))
    board = _board(rows, np.stack(xs), {"A": "ok", "B": "ok"})
    return board, wrong, strangers, missed, cross


def test_a_wrong_member_comes_before_the_strangers_rightly_left_out():
    board, wrong, strangers, missed, cross = _crawl()
    cur = queue.current(board, decisions.State())
    order = queue.review_order(board, cur)
    pos = {i: k for k, i in enumerate(order)}
    # by the stage's doubt alone the strangers (0.46) would come before the wrong member (0.41)
    assert all(board.doubt[s] > board.doubt[wrong] for s in strangers)
    assert pos[cross] == 0  # given A though only B's search found it
    assert pos[missed] == 1  # left out, but nearest to A's cluster
    assert pos[wrong] == 2  # A's least typical member
    assert pos[wrong] < min(pos[s] for s in strangers)
    assert sorted(order) == list(range(len(board)))  # nothing dropped from the queue, each face once


def test_reviewed_faces_leave_the_queue_and_an_unsettled_names_recurring_faces_come_first():
    board, wrong, strangers, missed, cross = _crawl(1)
    board.status["B"] = "weak"
    state = decisions.fold(
        [
            {"review_id": "r1", "reviewer": "x", "action": "reject", "face_ids": [board.face_ids[wrong]],
             "target": "A", "reason": "not_this_person", "undoes": None, "other_face_ids": None}
        ]
    )  # fmt: skip
    cur = queue.current(board, state)
    order = queue.review_order(board, cur)
    assert wrong not in order
    # B's faces that recur in its folder (its person) first; the one face of B's folder that looks like nobody
    # else there (A's, given A) after the faces left out near a usable name's cluster, before A's members
    b_own = {i for i, n in enumerate(board.identity) if n == "B"}
    assert set(order[: len(b_own)]) == b_own
    pos = {i: k for k, i in enumerate(order)}
    assert (
        pos[missed]
        < pos[cross]
        < min(pos[i] for i, n in enumerate(board.identity) if n == "A" and i not in (cross, wrong))
    )
    assert sorted(order) == sorted(set(range(len(board))) - {wrong})


def test_atypicality_is_relative_to_each_names_spread():
    board, wrong, *_ = _crawl(2)
    cur = queue.current(board, decisions.State())
    atyp = queue.member_atypicality(board, cur)
    a_members = [i for i, n in enumerate(cur.identity) if n == "A"]
    assert int(np.argmax(np.where([n == "A" for n in cur.identity], atyp, -1))) == wrong
    assert np.median(atyp[a_members]) == np.float64(1.0)  # in units of the name's own spread
    assert atyp[[i for i, n in enumerate(cur.identity) if n is None]].max() == 0.0
