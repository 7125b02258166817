"""Review decisions: the append-only manifest, the fold into a state, conflicts, gold agreement, and decisions
that hold through the cluster stage (rebuild, incremental add, parameter change) and into the export."""

from __future__ import annotations

import datetime as dt
import json
import threading

import numpy as np
import pytest

from facedata import manifest
from facedata.pipeline.runner import run_stage
from facedata.review import decisions
from facedata.review.constraints import clustering_constraints, enforce, identities_of
from facedata.review.decisions import Conflict, ReviewError, append, fold, gold_agreement

from .projects import run_report
from .test_cluster_stage import NAMES, b_label, demo_project, read, write_params

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _rows(*rows: dict) -> list[dict]:
    """Decision rows as the manifest holds them, from the fields a test cares about."""
    base = {"reviewer": "x", "undoes": None, "other_face_ids": None, "reason": None, "target": None}
    return [{**base, **r} for r in rows]


def test_fold_applies_decisions_in_order_and_undo_takes_one_back(tmp_path):
    a = append(tmp_path, {"action": "accept", "face_ids": ["f1", "f2", "f3"], "target": "ann"}, "rev", now=_at(0))
    r = append(
        tmp_path,
        {"action": "reject", "face_ids": ["f3"], "reason": "not_this_person", "target": "ann"},
        "rev",
        now=_at(1),
    )
    s = append(
        tmp_path, {"action": "split", "face_ids": ["f4"], "other_face_ids": ["f5", "f6"]}, "rev", now=_at(2)
    )
    st = fold(decisions.read(tmp_path))
    assert st.label == {"f1": "id:ann", "f2": "id:ann", "f3": "rej:not_this_person", "f4": f"grp:{s['review_id']}"}
    assert st.rejected_from == {"f3": "ann"}
    assert (("f4",), ("f5", "f6")) in st.apart
    assert json.loads(r["before"]) == {"f3": "id:ann"} and json.loads(r["after"]) == {"f3": "rej:not_this_person"}
    append(tmp_path, {"action": "undo", "undoes": r["review_id"]}, "rev", now=_at(3))
    st = fold(decisions.read(tmp_path))
    assert st.label["f3"] == "id:ann" and "f3" not in st.rejected_from
    with pytest.raises(ReviewError, match="already undone"):
        append(tmp_path, {"action": "undo", "undoes": r["review_id"]}, "rev", now=_at(4))
    # Append-only: four rows, key (time) order, the first one untouched.
    rows = decisions.read(tmp_path)
    assert [x["action"] for x in rows] == ["accept", "reject", "split", "undo"]
    assert rows[0]["review_id"] == a["review_id"] and rows[0]["face_ids"] == ["f1", "f2", "f3"]


def test_same_person_joins_groups_and_names_win():
    rows = [
        {"review_id": "1", "action": "merge", "face_ids": ["a", "b"], "target": None},
        {"review_id": "2", "action": "accept", "face_ids": ["c"], "target": "cyd"},
        {"review_id": "3", "action": "same", "face_ids": ["b", "c"], "target": None},
        {"review_id": "4", "action": "different", "face_ids": ["d"], "other_face_ids": ["e"], "target": None},
    ]
    rows = _rows(*rows)
    st = fold(rows)
    assert st.label == {"a": "id:cyd", "b": "id:cyd", "c": "id:cyd"}
    assert (("d",), ("e",)) in st.apart


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"action": "explode", "face_ids": ["a"]}, "unknown action"),
        ({"action": "accept", "face_ids": ["a"]}, "needs a target"),
        ({"action": "reject", "face_ids": ["a"], "reason": "ugly"}, "needs a reason"),
        ({"action": "reject", "face_ids": "a", "reason": "not_a_face"}, "list of face ids"),
        ({"action": "split", "face_ids": ["a"]}, "other_face_ids"),
        ({"action": "same", "face_ids": ["a", "b", "c"]}, "pair"),
        ({"action": "undo"}, "undoes"),
        ({"action": "move", "face_ids": ["a"], "target": " "}, "target must be"),
    ],
)
def test_bad_decisions_are_refused_with_a_reason(tmp_path, bad, message):
    with pytest.raises(ReviewError, match=message):
        append(tmp_path, bad, "rev")
    assert decisions.read(tmp_path) == []


def test_conflicting_decision_is_refused_unless_forced_and_then_recorded(tmp_path):
    first = append(tmp_path, {"action": "accept", "face_ids": ["f1"], "target": "ann"}, "alice", now=_at(0))
    seen = first["review_id"]
    append(tmp_path, {"action": "move", "face_ids": ["f1"], "target": "bob"}, "carol", seen=seen, now=_at(1))
    with pytest.raises(Conflict, match="carol"):
        append(tmp_path, {"action": "move", "face_ids": ["f1"], "target": "cyd"}, "alice", seen=seen, now=_at(2))
    row = append(
        tmp_path,
        {"action": "move", "face_ids": ["f1"], "target": "cyd"},
        "alice",
        seen=seen,
        force=True,
        now=_at(3),
    )
    assert row["conflicts_with"] and len(decisions.conflicts(decisions.read(tmp_path))) == 1
    # Having seen the latest, or only one's own decisions since, is no conflict.
    for k, name in enumerate(("dee", "eve")):
        move = {"action": "move", "face_ids": ["f1"], "target": name}
        append(tmp_path, move, "alice", seen=row["review_id"], now=_at(4 + k))


def test_concurrent_appends_lose_nothing(tmp_path):
    errors = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                append(
                    tmp_path, {"action": "accept", "face_ids": [f"w{k}-{i}"], "target": "ann"}, f"r{k}", wait=60
                )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = decisions.read(tmp_path)
    assert len(rows) == 20 and len({r["review_id"] for r in rows}) == 20


def test_gold_agreement_scores_each_reviewer():
    truth = {"a": "ann", "b": "ann", "c": "bob"}
    rows = [
        {"review_id": "1", "reviewer": "x", "action": "accept", "face_ids": ["a", "c"], "target": "ann"},
        {"review_id": "2", "reviewer": "y", "action": "reject", "face_ids": ["c"], "target": "ann",
         "reason": "not_this_person"},
        {"review_id": "3", "reviewer": "y", "action": "same", "face_ids": ["a", "b"], "target": None},
    ]  # fmt: skip
    rows = _rows(*rows)
    got = gold_agreement(rows, truth)
    assert got["x"] == {"n": 2, "agree": 1, "rate": 0.5}
    assert got["y"] == {"n": 2, "agree": 2, "rate": 1.0}


def test_enforce_makes_groups_whole_rejects_alone_and_apart_faces_separate():
    faces = [f"f{i}" for i in range(6)]
    labels = np.array([0, 0, 0, 1, 1, 1])
    rows = [
        {"review_id": "1", "action": "merge", "face_ids": ["f0", "f3"], "target": "ann"},
        {"review_id": "2", "action": "reject", "face_ids": ["f1"], "target": "ann", "reason": "not_a_face"},
        {"review_id": "3", "action": "different", "face_ids": ["f4"], "other_face_ids": ["f5"], "target": None},
    ]
    rows = _rows(*rows)
    st = fold(rows)
    out = enforce(labels, st, faces)
    assert out[0] == out[3]
    assert out[1] not in set(np.delete(out, 1))
    assert out[4] != out[5]
    cannot, must = clustering_constraints(st, faces)
    assert [sorted(g.tolist()) for g in must] == [[0, 3]]
    assert [4, 5] in cannot.tolist()
    ident, cluster_of = identities_of(faces, out, st, ["bob"] * 6)
    assert ident[0] == ident[3] == "ann" and ident[1] is None
    assert cluster_of == {"ann": int(out[0])}


def _faces_of(b, name):
    return [f["face_id"] for f in b.faces if b_label(b, f) == name]


def test_decisions_hold_through_rebuild_incremental_add_and_param_change(tmp_path):
    b = demo_project(tmp_path)
    assert run_stage("cluster", tmp_path) == 0
    ann, bob, cyd = _faces_of(b, "ann"), _faces_of(b, "bob"), _faces_of(b, "cyd")
    video = [f["face_id"] for f in b.faces if f["image_id"] in {r["image_id"] for r in b.images if r["video_id"]}]
    # A person's decisions, deliberately against the clustering: one of ann's faces is "not ann", one of bob's
    # faces belongs to cyd, the video track is named "fay tv", two of cyd's faces are split off.
    append(tmp_path, {"action": "reject", "face_ids": [ann[0]], "reason": "not_this_person", "target": "ann"}, "r")
    append(tmp_path, {"action": "move", "face_ids": [bob[0]], "target": "cyd"}, "r")
    append(tmp_path, {"action": "name", "face_ids": video, "target": "fay tv"}, "r")
    split = append(tmp_path, {"action": "split", "face_ids": cyd[:2], "other_face_ids": cyd[2:]}, "r")

    def check(mode: str) -> None:
        assert run_report(tmp_path, "cluster")["assignment"]["mode"] == mode
        c = {r["face_id"]: r for r in read(tmp_path, "clusters")}
        assert c[ann[0]]["identity"] is None and c[ann[0]]["review_decision"] == "rejected:not_this_person"
        assert c[ann[0]]["cluster_id"] not in {c[f]["cluster_id"] for f in ann[1:]}
        assert c[bob[0]]["identity"] == "cyd" and c[bob[0]]["reviewer"] == "r"
        assert {c[f]["identity"] for f in video} == {"fay tv"}
        assert {c[f]["cluster_id"] for f in cyd[:2]}.isdisjoint({c[f]["cluster_id"] for f in cyd[2:]})
        assert len({c[f]["cluster_id"] for f in cyd[:2]}) == 1
        assert c[cyd[0]]["review_id"] == split["review_id"] and c[cyd[0]]["review_decision"] == "grouped"
        ident = {r["query_name"]: r for r in read(tmp_path, "identities")}
        assert ident["fay tv"]["status"] == "ok" and ident["fay tv"]["reason"] == "accepted in review"

    assert run_stage("cluster", tmp_path) == 0  # nothing new: the old labels, the decisions enforced on them
    check("incremental")
    for name in NAMES[:3]:
        b.image(name, name, [name])
    b.write()
    assert run_stage("cluster", tmp_path) == 0
    check("incremental")
    write_params(tmp_path, threshold=0.45)
    assert run_stage("cluster", tmp_path) == 0
    check("full")
    write_params(tmp_path, threshold=0.45, method="dbscan", incremental=False)  # a method without constraints
    assert run_stage("cluster", tmp_path) == 0
    check("full")

    # Export: rejected faces leave the dataset; every row says whether a person checked it.
    write_params(tmp_path, threshold=0.43)
    assert run_stage("cluster", tmp_path) == 0
    assert run_stage("export", tmp_path) == 0
    ds = {r["face_id"]: r for r in manifest.read("dataset", tmp_path).to_pylist()}
    assert ann[0] not in ds
    assert ds[bob[0]]["identity"] == "cyd" and ds[bob[0]]["reviewed"] and ds[bob[0]]["reviewer"] == "r"
    assert ds[bob[0]]["review_decision"] == "accepted"
    plain = ds[ann[1]]
    assert plain["reviewed"] is False and plain["review_decision"] is None and 0 < plain["auto_confidence"] <= 1


def test_a_few_faces_moved_out_do_not_carry_their_old_cluster_with_them():
    """Regression (found by `python -m benchmarks review`): two people's faces in one cluster, the reviewer
    moves the minority person's faces to their name; the majority must keep its own name after a rebuild."""
    faces = [f"f{i}" for i in range(8)]
    labels = np.zeros(8, dtype=np.int64)
    rows = [{"review_id": "1", "action": "accept", "face_ids": ["f6", "f7"], "target": "yoriko"}]
    rows = _rows(*rows)
    st = fold(rows)
    out = enforce(labels, st, faces)
    assert out[6] == out[7] and out[6] != out[0] and len(set(out[:6].tolist())) == 1
    ident, _ = identities_of(faces, out, st, ["megawati"] * 6 + [None, None])
    assert ident == ["megawati"] * 6 + ["yoriko", "yoriko"]


def test_init_makes_an_empty_reviews_manifest_that_git_keeps(tmp_path):
    import subprocess

    from facedata.pipeline.scaffold import init_project

    root = init_project(tmp_path / "p", {"folders": [], "videos": []})
    path = manifest.path_for("reviews", root)
    assert path.exists() and decisions.read(root) == []
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root)
    assert ignored.returncode == 1  # not ignored: decisions are versioned with the project
    assert "data/manifests/reviews.parquet" in (root / "dvc.yaml").read_text()


def test_a_name_accepted_in_review_passes_the_confidence_gate(tmp_path):
    import yaml

    b = demo_project(tmp_path)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["validate"].update(min_dominant_confidence=0.9)  # bob: 6 of 7 images in his cluster
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))

    def confidence_failures() -> list:
        run_stage("cluster", tmp_path)
        run_stage("validate", tmp_path)
        report = json.loads((tmp_path / "data" / "reports" / "validate.json").read_text())
        checks = report["manifests"]["identities"]["checks"]
        bad = [e for e in checks if e["column"] == "confidence" and not e["success"]]
        return [ex["query_name"] for e in bad for ex in e["examples"]]

    assert "bob" in confidence_failures()
    append(tmp_path, {"action": "accept", "face_ids": _faces_of(b, "bob"), "target": "bob"}, "r")
    assert "bob" not in confidence_failures()
    ident = {r["query_name"]: r for r in read(tmp_path, "identities")}
    assert ident["bob"]["reason"] == "accepted in review" and ident["bob"]["confidence"] < 0.9


def test_review_command_outside_a_project_is_a_usage_error(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from facedata.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["review", "--port", "9"])
    assert result.exit_code == 2 and "facedata review:" in result.output
    assert CliRunner().invoke(main, ["review", "--help"]).exit_code == 0
