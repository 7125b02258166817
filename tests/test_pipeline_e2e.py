"""End to end in a real git + DVC repository, on real faces from ../shared.

One project is built once for the module (the tests below run in file order and share it): a full
`.venv/bin/dvc repro` with no environment activated; a second one skips everything; `facedata lineage`
resolves a dataset file; a clean clone rebuilds identical manifests and metrics; changing one clustering
parameter reruns only cluster and what follows; a team shares the build through a DVC remote; more video
frames join the clustering incrementally with their tracks' must-links.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

from facedata import manifest
from facedata.ids import sha256_bytes
from facedata.pipeline.runner import STAGES

from .projects import BIN, commit, dvc, make_project, run, run_report, set_params

pytestmark = [pytest.mark.slow, pytest.mark.shared]

RAN = re.compile(r"Running stage '([a-z0-9_]+)'")


def ran(output: str) -> list[str]:
    return RAN.findall(output)


@pytest.fixture(scope="module")
def built(tmp_path_factory, lfw, shared):
    base = tmp_path_factory.mktemp("e2e")
    bad = base / "extra" / "Colin_Powell"
    bad.mkdir(parents=True)
    good = (lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    (bad / "copy_of_0001.jpg").write_bytes(good)  # the same bytes as an LFW image: a duplicate
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (bad / "truncated.jpg").write_bytes((lfw / "Colin_Powell" / "Colin_Powell_0002.jpg").read_bytes()[:3000])
    clip = shared / "data" / "video" / "short_hamilton_clip.mp4"
    root = make_project(
        base / "proj",
        lfw,
        extra_folders=[{"root": str(base / "extra")}],
        videos=[{"path": str(clip), "fps": 0.25}],
    )
    # As README says: `.venv/bin/dvc repro` with nothing activated (no venv on PATH, so no `python` of it).
    bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": ""}
    first = run([str(BIN / "dvc"), "repro"], root, extra_env=bare)
    return root, first.stdout + first.stderr


def test_full_build(built):
    root, output = built
    assert ran(output) == list(STAGES)
    log = {Path(r["source_uri"]).name: r for r in manifest.read("crawl_log", root).to_pylist()}
    assert log["broken.jpg"]["status"] == "failed"
    assert log["broken.jpg"]["reason"].split(":")[0] in ("corrupt", "truncated")
    assert log["truncated.jpg"]["status"] == "failed"
    assert log["truncated.jpg"]["reason"].split(":")[0] in ("truncated", "corrupt")
    assert log["copy_of_0001.jpg"]["status"] == "duplicate"
    images = manifest.read("images", root).to_pylist()
    frames = [r for r in images if r["source_kind"] == "video"]
    assert len(frames) >= 3  # sampled every 4 s, plus the first frame after each cut, minus near-duplicates
    assert all(r["video_id"] and r["frame_index"] is not None and r["timestamp_s"] is not None for r in frames)
    assert sum(r["source_kind"] == "folder" for r in images) == 16

    dataset = manifest.read("dataset", root).to_pylist()
    assert {r["identity"] for r in dataset} == {"Bill_Clinton", "Colin_Powell", "Hugo_Chavez", "Winona_Ryder"}
    for r in dataset:
        data = (root / "data" / "dataset" / r["file_path"]).read_bytes()
        assert sha256_bytes(data) == r["file_sha256"]
        assert (root / r["store_path"]).is_file()
        for col in ("lineage", "image_lineage", "face_lineage", "embedding_lineage", "cluster_lineage"):
            lin = r[col]
            assert all(lin[k] for k in ("stage", "run_id", "git_rev", "code_version", "params_hash", "created_at"))
        assert r["embedding_lineage"]["model_name"] == "dlib-resnet"
    metrics = json.loads((root / "data" / "metrics" / "cluster.json").read_text())
    assert metrics["labelled"]["purity"] >= 0.9 and metrics["labelled"]["n_images"] == 16
    assert json.loads((root / "data" / "metrics" / "validate.json").read_text())["passed"] is True
    assert (root / "data" / "reports" / "validate.html").read_text().count("FAIL") == 0


def test_second_repro_skips_every_stage(built):
    root, _ = built
    again = dvc("repro", cwd=root)
    assert ran(again.stdout) == []
    assert "Data and pipelines are up to date" in dvc("status", cwd=root).stdout


def test_lineage_resolves_a_dataset_file_to_its_source(built):
    root, _ = built
    row = next(r for r in manifest.read("dataset", root).to_pylist() if r["source_kind"] == "folder")
    out = run([str(BIN / "facedata"), "lineage", f"data/dataset/{row['file_path']}"], root).stdout
    assert row["source_uri"] in out and row["source_uri"].startswith(str(Path(row["source_uri"]).anchor))
    for step in ("dataset", "cluster", "embedding", "face", "image", "source", "crawl_log"):
        assert re.search(rf"^{step}\s", out, re.M), f"{step} missing from:\n{out}"
    assert "made by stage detect" in out and "model dlib-resnet" in out
    by_prefix = run([str(BIN / "facedata"), "lineage", row["face_id"][:10], "--json"], root).stdout
    assert json.loads(by_prefix)[0]["id"] == row["face_id"]
    missing = run([str(BIN / "facedata"), "lineage", "fffffffff0"], root, check=False)
    assert missing.returncode == 1 and "no dataset face" in missing.stderr
    # By content: a renamed copy anywhere is the same face; a file named like a dataset file is not.
    copy = root.parent / "copies" / "renamed.png"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes((root / "data" / "dataset" / row["file_path"]).read_bytes())
    by_content = run([str(BIN / "facedata"), "lineage", str(copy), "--json"], root).stdout
    assert json.loads(by_content)[0]["id"] == row["face_id"]
    lookalike = root.parent / "copies" / Path(row["file_path"]).name
    lookalike.write_bytes(b"not that face")
    wrong = run([str(BIN / "facedata"), "lineage", str(lookalike)], root, check=False)
    assert wrong.returncode == 1 and "no dataset file or collected image" in wrong.stderr


def api(url: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _stable(root: Path, name: str):
    table = manifest.stable_view(manifest.read(name, root))
    return table.drop_columns([c for c in ("fetched_at",) if c in table.column_names])


def test_clean_clone_reproduces_the_same_manifests(built):
    root, _ = built
    commit(root, "build")
    clone = root.parent / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], root.parent)
    out = dvc("repro", cwd=clone)
    assert ran(out.stdout) == list(STAGES)
    for name in ("images", "crawl_log", "detections", "faces", "embeddings", "clusters", "identities", "dataset"):
        a, b = _stable(root, name), _stable(clone, name)
        differing = [c for c in a.column_names if not a[c].equals(b[c])]
        assert a.num_rows == b.num_rows and not differing, f"{name}: columns {differing} differ in the clone"
    # Metrics hold results only: a rebuild from scratch writes the committed metrics byte for byte (only the
    # outputs' hashes in dvc.lock change: every row has a new run id and time in its lineage).
    assert run(["git", "status", "--porcelain"], clone).stdout.split() == ["M", "dvc.lock"]
    assert dvc("metrics", "diff", cwd=clone).stdout.strip() == ""
    shutil.rmtree(clone)


def test_changing_a_cluster_param_reruns_only_cluster_and_what_follows(built):
    root, _ = built
    set_params(root, cluster={"threshold": 0.38})
    status = dvc("status", cwd=root).stdout
    assert "cluster:" in status and "detect:" not in status and "embed:" not in status
    out = dvc("repro", cwd=root)
    assert ran(out.stdout) == ["check", *STAGES[STAGES.index("cluster") :]]  # any params change: check first
    assert "didn't change" in out.stdout  # ingest, detect, embed were checked and skipped


def test_a_team_shares_the_build_through_a_dvc_remote_and_builds_show_in_a_real_prefect_server(
    built, prefect_server
):
    """README's team workflow with a local folder as the remote: `facedata build --push` after a build; a
    teammate's clean clone `dvc pull`s, `dvc status` is up to date, and `facedata build` runs no stage.
    With PREFECT_API_URL set, `facedata build` reports to that server: runs, tasks and artifacts show in its
    API and UI. The project is up to date, so each task finds its DVC stage unchanged and returns at once."""
    root, _ = built
    server = {"PREFECT_API_URL": prefect_server}
    refused = run([str(BIN / "facedata"), "build", "--push"], root, check=False, extra_env=server)
    assert refused.returncode == 2 and "dvc remote add -d" in refused.stderr
    remote = root.parent / "team-remote"
    dvc("remote", "add", "-d", "team", str(remote), cwd=root)
    commit(root, "team remote")
    pushed = run([str(BIN / "facedata"), "build", "--push"], root, extra_env=server)
    assert "pushed" in pushed.stderr and any(remote.rglob("*"))
    assert run(["git", "status", "--porcelain"], root).stdout == ""

    assert "facedata outputs" in pushed.stdout
    assert "temporary server" not in pushed.stdout + pushed.stderr  # it used the configured server
    # the newest build run (the server is shared by the session: test_flow may have built there too)
    query = {"flows": {"name": {"any_": ["facedata-build"]}}, "sort": "START_TIME_DESC", "limit": 1}
    runs = api(prefect_server, "/flow_runs/filter", query)
    assert len(runs) == 1 and runs[0]["state"]["type"] == "COMPLETED"
    tasks = api(prefect_server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [runs[0]["id"]]}}})
    assert sorted(t["name"] for t in tasks) == sorted(STAGES)
    # this run's artifact (the session's server holds other builds' too)
    mine = {"key": {"any_": ["facedata-build"]}, "flow_run_id": {"any_": [runs[0]["id"]]}}
    arts = api(prefect_server, "/artifacts/filter", {"artifacts": mine})
    assert len(arts) == 1 and "facedata outputs" in arts[0]["data"] and "skipped (up to date)" in arts[0]["data"]
    with urllib.request.urlopen(prefect_server.removesuffix("/api"), timeout=30) as resp:
        assert resp.status == 200 and "<html" in resp.read().decode().lower()

    mate = root.parent / "teammate"
    run(["git", "clone", "-q", str(root), str(mate)], root.parent)
    dvc("pull", cwd=mate)
    assert "Data and pipelines are up to date" in dvc("status", cwd=mate).stdout
    out = run([str(BIN / "facedata"), "build"], mate, extra_env=server)
    assert "facedata outputs" in out.stdout
    runs = mate / "data" / "reports" / "runs"
    assert sorted(p.name for p in runs.glob("*.json")) == ["build.json"]  # the build's summary; no stage ran
    assert run(["git", "status", "--porcelain"], mate).stdout == ""
    assert manifest.read("dataset", mate).equals(manifest.read("dataset", root))
    shutil.rmtree(mate)


def test_more_video_frames_join_incrementally_and_keep_their_tracks(built):
    """Frames sampled more densely from the same clip: ingest adds them, detect and embed only do their faces,
    the clustering adds the new faces to the last one (incremental) and every video track stays one cluster."""
    from facedata.cluster.faceset import constraints, read_faceset
    from facedata.project import Project

    root, _ = built
    before = {r["face_id"] for r in manifest.read("clusters", root).to_pylist()}
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["sources"]["videos"][0]["fps"] = 0.5
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dvc("repro", cwd=root)
    how = run_report(root, "cluster")["assignment"]
    clusters = {r["face_id"]: r["cluster_id"] for r in manifest.read("clusters", root).to_pylist()}
    assert how["mode"] == "incremental" and how["n_new"] == len(set(clusters) - before) > 0
    params = Project(root).params
    fs, _, _ = read_faceset(root, params["embed"]["model"])
    _, must = constraints(fs, params["cluster"])
    assert how["n_must_link_groups"] == len(must) > 0
    for group in must:
        assert len({clusters[fs.face_ids[i]] for i in group}) == 1
