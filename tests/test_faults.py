"""Fault injection on real git + DVC projects: the faults a real team will hit.

Each case asserts three things: nothing already finished is lost, the next run repairs the damage or names
the problem (with what to do), and no wrong answer comes with exit code 0. The cases: bad params of every
kind, kill -9 inside every stage, files deleted or damaged in the store, a truncated manifest, a writer racing
a build, a full disk, SIGTERM to `facedata build` (its temporary Prefect server must be gone).

One reference project is built once; a clone of it (same commits, so the same lineage) is built through a
kill -9 in every stage and must end identical to the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from facedata import manifest
from facedata.lock import holder
from facedata.pipeline.runner import STAGES

from .projects import BIN, copy_project, dvc, env, run

pytestmark = [pytest.mark.slow, pytest.mark.shared]

RAN = re.compile(r"Running stage '([a-z0-9_]+)'")
COMPARED = ("images", "crawl_log", "detections", "faces", "embeddings", "clusters", "identities", "dataset")


def stable(root: Path) -> dict[str, object]:
    out = {}
    for name in COMPARED:
        table = manifest.stable_view(manifest.read(name, root))
        out[name] = table.drop_columns([c for c in ("fetched_at",) if c in table.column_names])
    return out


def assert_same(a: dict, b: dict) -> None:
    for name in COMPARED:
        differing = [c for c in a[name].column_names if not a[name][c].equals(b[name][c])]
        assert a[name].num_rows == b[name].num_rows and not differing, f"{name}: {differing} differ"


def outputs(root: Path) -> dict[str, str]:
    """sha256 of every file a build produced (store, manifests, metrics, reports, dataset, meshes)."""
    out = {}
    for path in sorted((root / "data").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(("data/.", "data/store/.")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_readable(root: Path) -> None:
    """Every manifest on disk is complete Parquet with unique keys (a killed run leaves no torn file)."""
    for name in (*COMPARED, "meshes"):
        if manifest.path_for(name, root).exists():
            table = manifest.read(name, root)
            assert not manifest.duplicate_keys(name, table), name


def ran(output: str) -> list[str]:
    return RAN.findall(output)


@pytest.fixture(scope="module")
def projects(tmp_path_factory, small_build):
    """The reference: a copy of the session's small build (2 people x 3 photos, batches of 2). The victim: a
    clone of its commit, not built yet."""
    base = tmp_path_factory.mktemp("faults")
    ref = copy_project(small_build, base / "ref")
    victim = base / "victim"
    run(["git", "clone", "-q", str(ref), str(victim)], base)
    return ref, victim


# --- bad params: refused before DVC removes anything -------------------------------------------------------

BAD_PARAMS = {
    "unknown key": (lambda p: p["cluster"].update(treshold=0.5), "unknown parameter(s) cluster.treshold"),
    "unknown section": (lambda p: p.update(clusterr={"threshold": 0.5}), "unknown section `clusterr`"),
    "wrong type": (lambda p: p["cluster"].update(threshold="0.5"), "cluster.threshold must be int or float"),
    "negative value": (lambda p: p["cluster"].update(threshold=-1), "cluster.threshold must be 0..2"),
    "missing section": (lambda p: p.pop("cluster"), "cluster"),
    "empty section": (lambda p: p.update(validate=None), "section `validate` must hold its keys"),
}


CHECK_OUTS = ("data/reports/params_check.txt", "data/metrics/check.json")  # the check stage's own, remade


def test_bad_params_of_each_kind_cost_no_output(projects):
    ref, _ = projects
    good = (ref / "params.yaml").read_text()
    before = {k: v for k, v in outputs(ref).items() if k not in CHECK_OUTS}
    try:
        for kind, (patch, message) in BAD_PARAMS.items():
            raw = yaml.safe_load(good)
            patch(raw)
            (ref / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            check = run([str(BIN / "facedata"), "check"], ref, check=False)
            assert check.returncode == 1 and message in check.stderr, (kind, check.stderr)
            build = run([str(BIN / "facedata"), "build"], ref, check=False, timeout=120)
            assert build.returncode == 2 and "nothing was run" in build.stderr, (kind, build.stderr)
            out = dvc("repro", cwd=ref, check=False)
            assert out.returncode != 0, kind
            assert ran(out.stdout) in ([], ["check"]), (kind, out.stdout)  # stopped at the check, or by DVC
            after = {k: v for k, v in outputs(ref).items() if k not in CHECK_OUTS}
            assert after == before, f"{kind}: outputs changed: {set(after) ^ set(before)}"
        (ref / "params.yaml").write_text("cluster: [unclosed\n")
        assert run([str(BIN / "facedata"), "check"], ref, check=False).returncode == 1
        assert dvc("repro", cwd=ref, check=False).returncode != 0
    finally:
        (ref / "params.yaml").write_text(good)
    out = dvc("repro", cwd=ref)
    assert ran(out.stdout) in ([], ["check"])  # a passing check reruns nothing after it
    assert {k: v for k, v in outputs(ref).items() if k not in CHECK_OUTS} == before


# --- the store: deleted or damaged files come back ----------------------------------------------------------


def test_files_deleted_or_damaged_in_the_store_are_restored(projects):
    ref, _ = projects
    before = stable(ref)
    images = manifest.read("images", ref).to_pylist()[:3]
    crops = [f for f in manifest.read("faces", ref).to_pylist() if f["status"] == "ok"][-3:]
    for row in images:
        (ref / row["store_path"]).unlink()
    for face in crops[:2]:
        (ref / face["crop_path"]).unlink()
    damaged = ref / crops[2]["crop_path"]
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"\0" * 10)
    out = dvc("repro", cwd=ref)
    ingest = json.loads((ref / "data" / "metrics" / "ingest.json").read_text())
    detect_run = json.loads((ref / "data" / "reports" / "runs" / "detect.json").read_text())
    assert ingest["store"]["n_restored"] == 3 and ingest["store"]["n_lost"] == 0, out.stderr
    assert detect_run["n_crops_restored"] >= 3
    assert ingest["n_stored"] == ingest["n_images"] == len(manifest.read("images", ref))
    for row in manifest.read("images", ref).to_pylist():
        assert hashlib.sha256((ref / row["store_path"]).read_bytes()).hexdigest() == row["image_id"]
    for row in manifest.read("dataset", ref).to_pylist():
        data = (ref / "data" / "dataset" / row["file_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["file_sha256"]
    assert_same(before, stable(ref))
    assert "up to date" in dvc("status", cwd=ref).stdout


def test_a_truncated_manifest_is_named_and_dvc_checkout_restores_it(projects):
    ref, _ = projects
    before = stable(ref)
    path = manifest.path_for("faces", ref)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = dvc("repro", cwd=ref, check=False)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "faces" in said and "damaged" in said and "dvc checkout --force data/manifests/faces.parquet" in said, (
        said
    )
    dvc("checkout", "--force", "data/manifests/faces.parquet", cwd=ref)
    again = dvc("repro", cwd=ref)
    # DVC removed detect's metrics file before the failed run (metrics are not cached): detect runs once more,
    # reusing every row, and nothing after it changes.
    assert ran(again.stdout) in ([], ["detect"])
    assert_same(before, stable(ref))
    assert "up to date" in dvc("status", cwd=ref).stdout


# --- kill -9 inside every stage ------------------------------------------------------------------------------


def _stage_running(root: Path, stage: str, proc: subprocess.Popen, timeout: float = 300) -> str | None:
    """Wait until `stage` or a later one holds the project lock and return its name; None if `proc` ended first.
    A later one counts too: a stage as quick as `check` may come and go between two looks, and waiting for the
    whole build to end instead would leave nothing to kill in the iterations after."""
    names = set(STAGES[STAGES.index(stage) :])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        name = (holder(root) or {}).get("command", "").removeprefix("facedata stage ")
        if name in names:
            return name
        time.sleep(0.05)
    return None


def _outs_changed(root: Path, stage: str, since: float, timeout: float) -> None:
    from facedata.pipeline.dag import stage_defs

    paths = [root / o for o in stage_defs()[stage].outs]
    deadline = time.monotonic() + timeout
    # Also stop waiting once the stage no longer holds the lock (it finished before writing anything after
    # `since`, e.g. `check`): waiting on would let DVC run the next, fast stages to the end before the kill.
    while time.monotonic() < deadline and (holder(root) or {}).get("command") == f"facedata stage {stage}":
        for p in paths:
            files = [p] if p.is_file() else (list(p.rglob("*")) if p.is_dir() else [])
            if any(f.is_file() and f.stat().st_mtime > since for f in files):
                return
        time.sleep(0.05)


def test_kill_9_in_every_stage_then_the_next_run_finishes_the_same(projects):
    ref, victim = projects
    killed = []
    e = {**env(), "FACEDATA_CHECKPOINT_SECONDS": "0"}
    for stage in STAGES:
        proc = subprocess.Popen(
            [str(BIN / "dvc"), "repro"],
            cwd=victim,
            env=e,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            running = _stage_running(victim, stage, proc)
            if running:
                _outs_changed(victim, running, time.time(), timeout=3.0)  # mid-write when the stage checkpoints
                os.killpg(proc.pid, signal.SIGKILL)
                killed.append(running)
        finally:
            proc.wait()
        deadline = time.monotonic() + 30  # the stage dies a moment after DVC, with the group
        while holder(victim) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder(victim) is None  # the kernel released the project lock with its holder
        assert_readable(victim)
    assert len(set(killed)) >= len(STAGES) - 1, killed  # the check stage may finish before it can be killed
    out = dvc("repro", cwd=victim)
    assert "up to date" in dvc("status", cwd=victim).stdout, out.stdout
    assert_same(stable(ref), stable(victim))
    for row in manifest.read("dataset", victim).to_pylist():
        assert (victim / "data" / "dataset" / row["file_path"]).is_file()


# --- SIGTERM to `facedata build` -----------------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_in(root: Path) -> list[int]:
    """Processes whose working directory is the project (dvc, its stages)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == root:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_sigterm_to_build_stops_the_stage_and_the_temporary_server(projects, tmp_path):
    ref, victim = projects
    e = {
        **env(),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    e.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [str(BIN / "facedata"), "build", "--force"],
        cwd=victim,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port, lines = None, []
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"temporary server on http://127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else port
        if "Task run 'detect'" in line:  # the stage's own output (DVC's "Running stage" is at DEBUG)
            break
    assert port and _listening(port), "".join(lines[-30:])
    assert holder(victim)["command"] == "facedata build"
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, "".join(lines[-20:]) + rest
    assert "interrupted (SIGTERM)" in rest
    assert not _listening(port), "the temporary Prefect server is still listening"
    assert _processes_in(victim) == [], "dvc or a stage outlived the build"
    assert holder(victim) is None
    assert_readable(victim)
    again = subprocess.run(
        [str(BIN / "facedata"), "build"], cwd=victim, env=e, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert_same(stable(ref), stable(victim))


# --- a writer racing a build ---------------------------------------------------------------------------------


def test_a_writer_racing_a_stage_is_refused_or_waits_and_no_image_is_lost(projects, shared):
    ref, _ = projects
    clip = shared / "data" / "video" / "short_hamilton_clip.mp4"
    raw = yaml.safe_load((ref / "params.yaml").read_text())
    raw["detect"]["min_score"] = 0.91  # detect must run again, as in the report
    (ref / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dvc("repro", "--single-item", "check", cwd=ref)
    images_path = manifest.path_for("images", ref)
    processed = hashlib.md5(images_path.read_bytes()).hexdigest()
    repro = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "--single-item", "detect"],
        cwd=ref,
        env={**env(), "FACEDATA_CHECKPOINT_SECONDS": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ingest = [str(BIN / "facedata"), "ingest-video", str(clip), "--name", "Hamilton", "--fps", "0.5"]
    try:
        assert _stage_running(ref, "detect", repro) == "detect"
        refused = run(ingest, ref, check=False, timeout=300)
        assert refused.returncode == 2 and "is busy" in refused.stderr
        assert "facedata stage detect" in refused.stderr or "stages.detect" in refused.stderr, refused.stderr
        waited = run([*ingest, "--wait", "600"], ref, check=False, timeout=900)
        assert waited.returncode == 0, waited.stderr
    finally:
        out, _ = repro.communicate(timeout=600)
    assert repro.returncode == 0, out
    lock = yaml.safe_load((ref / "dvc.lock").read_text())
    recorded = next(d["md5"] for d in lock["stages"]["detect"]["deps"] if d["path"].endswith("images.parquet"))
    assert recorded == processed  # DVC vouches for the images detect saw, not for the ones added after
    assert hashlib.md5(images_path.read_bytes()).hexdigest() != processed
    images = manifest.read("images", ref)
    assert sum(r == "video" for r in images.column("source_kind").to_pylist()) > 0
    assert "detect" in dvc("status", "detect", cwd=ref).stdout  # images.parquet changed after detect: DVC knows
    again = dvc("repro", "--single-item", "detect", cwd=ref)
    assert ran(again.stdout) == ["detect"]
    assert manifest.read("detections", ref).num_rows == images.num_rows  # every image detected

    # The other way round: while a writer holds the project, DVC refuses the stages that read its outputs.
    hold = (
        "import sys, time\nfrom facedata.lock import writing\n"
        "with writing(sys.argv[1], 'facedata ingest-urls list.txt', dvc_outs=['data/manifests/images.parquet',"
        " 'data/store/images']):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", hold, str(ref)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert writer.stdout.readline().strip() == "held"
        blocked = dvc("repro", "--force", "--single-item", "detect", cwd=ref, check=False)
        said = blocked.stdout + blocked.stderr
        assert blocked.returncode != 0 and "is busy" in said and "facedata ingest-urls list.txt" in said, said
    finally:
        writer.kill()
        writer.wait()


# --- a full disk ---------------------------------------------------------------------------------------------


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
        capture_output=True,
    )
    return probe.returncode == 0


FULL_DISK = """
set -u
{mount}
cd "$1"
"$2" ingest-video "$3" --name Hamilton --fps 0.5 --all-frames --keep-near-identical --scene-threshold 0
echo "FIRST_RC=$?"
"$4" -c "
from facedata import manifest
log = manifest.read('crawl_log', '.', missing_ok=True).to_pylist()  # none if the disk filled first
print('ROWS_AFTER_FULL', len(log), sorted(r['status'] for r in log))
"
{grow}
"$2" ingest-video "$3" --name Hamilton --fps 0.5 --all-frames --keep-near-identical --scene-threshold 0
echo "SECOND_RC=$?"
"$4" -c "
from facedata import manifest
log = manifest.read('crawl_log', '.').to_pylist()
print('ROWS_AFTER_RESUME', len(log), sorted(r['status'] for r in log))
"
"""


def test_a_full_disk_fails_cleanly_and_the_next_run_resumes(tmp_path, shared):
    """A real ENOSPC on a 300 kB tmpfs (in a user + mount namespace) where the kernel allows it; otherwise a
    file-size limit (RLIMIT_FSIZE: EFBIG on the big writes), the same failure for the code that writes."""
    from .collect_servers import write_project

    clip = shared / "data" / "video" / "short_hamilton_clip.mp4"
    project = tmp_path / "p"
    write_project(project, {})
    if _tmpfs_available():
        script = FULL_DISK.format(
            mount='p=$(cat "$1/params.yaml"); mount -t tmpfs -o size=300k tmpfs "$1"; echo "$p" >"$1/params.yaml"',
            grow='mount -o remount,size=64m tmpfs "$1"',
        )
        cmd = ["unshare", "-rm", "bash", "-c", script]
    else:
        script = FULL_DISK.format(mount="ulimit -S -f 150", grow="ulimit -S -f unlimited")
        cmd = ["bash", "-c", script]
    out = subprocess.run(
        [*cmd, "full-disk", str(project), str(BIN / "facedata"), str(clip), sys.executable],
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    said = out.stdout + out.stderr
    first = int(re.search(r"FIRST_RC=(\d+)", said).group(1))
    assert first == 1 and ("no space left" in said), said  # a clear message, not exit 0
    assert "Traceback" not in said.split("SECOND_RC")[0], said
    rows = re.search(r"ROWS_AFTER_FULL (\d+)", said)
    assert rows is not None, said  # the manifests are readable after the failure
    assert int(re.search(r"SECOND_RC=(\d+)", said).group(1)) == 0, said
    assert "ROWS_AFTER_RESUME 5 ['stored', 'stored', 'stored', 'stored', 'stored']" in said, said
