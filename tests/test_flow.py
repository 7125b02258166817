"""The Prefect build flow over the DVC stages: DAG order, artifacts, retries only for crashes, gates final;
skipped and not-run stages marked; runs named by revision; one failure message; a real server and its UI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time

import pytest

from facedata.pipeline.runner import STAGES

from .projects import SAMPLE_NAMES, copy_project, make_project

pytestmark = [pytest.mark.slow, pytest.mark.shared]


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
)


def screenshot(url: str, path, wait_for: str, timeout: float = 90.0) -> str:
    """Open `url` in headless Chromium (DESIGN.md's setup), wait until the page shows `wait_for`, save a PNG
    of it to `path`; returns the page's text."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from facedata.collect.webpage import BASE_ARGS

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the crawler's headless setup, with images on (a screenshot), no lookups beyond 127.0.0.1
    keep = [a for a in BASE_ARGS if not a.startswith(("--blink-settings", "--window-size"))]
    for arg in (*keep, "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = driver.find_element("tag name", "body").text
            if wait_for in text:
                break
            time.sleep(1)
        time.sleep(2)  # let the state badges and the task list finish rendering
        driver.save_screenshot(str(path))
        return driver.find_element("tag name", "body").text
    finally:
        driver.quit()


def task_runs(flow_run_id) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return {r.name: r for r in runs}

    return asyncio.run(read())


def flow_run_of(flow_run_id):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    return asyncio.run(read())


def logs(flow_run_id) -> list[tuple[int, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            found = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return [(r.level, r.message) for r in found]

    return asyncio.run(read())


def artifacts(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return {a.key: a.data for a in arts}

    return asyncio.run(read())


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory, small_build):
    """A copy of the session's small build (2 people x 3 photos), made by the build flow: the tests below change
    it, the session's stays as built."""
    return copy_project(small_build, tmp_path_factory.mktemp("flow") / "proj")


def test_build_flow_runs_every_stage_in_dag_order(small_build_run, flow_project):
    """The session's small build ran the build flow on a fresh project (conftest.small_build_run)."""
    from facedata import gitinfo

    _, state = small_build_run
    assert state.is_completed(), state.message
    results = state.result()
    assert list(results) == list(STAGES)
    assert results["export"]["n_faces"] == 6
    run_id = state.state_details.flow_run_id
    runs = task_runs(run_id)
    assert set(runs) == set(results)
    assert all(r.state.is_completed() and r.state.name == "Completed" for r in runs.values())
    rev = gitinfo.revision(flow_project)
    fr = flow_run_of(run_id)
    assert fr.name == f"build {rev[:10]}" and f"rev:{rev[:10]}" in fr.tags
    arts = artifacts(run_id)
    assert {f"facedata-{s}" for s in results} | {"facedata-build"} <= set(arts)
    assert "| n_faces | 6 |" in arts["facedata-export"]
    # The validation artifact lists every check and links the report; the card, sheets and review link show.
    assert "checks passed" in arts["facedata-validation"] and "validate.html" in arts["facedata-validation"]
    assert "| identities | expect_" in arts["facedata-validation"]
    assert "git checkout " + rev in arts["facedata-dataset-card"]
    assert arts["facedata-contact-sheets"].count("data:image/jpeg;base64,") == 2
    assert "facedata review" in arts["facedata-review"]
    # The build artifact is the summary `facedata build` prints: stage by stage, then the outputs.
    assert "ran" in arts["facedata-build"] and "facedata outputs" in arts["facedata-build"]
    # No DVC chatter and no third-party warnings above DEBUG in the task logs; the stage's own lines are there.
    said = [m for level, m in logs(run_id) if level >= logging.INFO]
    assert any("facedata export: done" in m for m in said)
    assert not any("To track the changes with git" in m or "auto staging" in m or "Warning: " in m for m in said)


def test_project_api_builds_and_reads_manifests(prefect_harness, flow_project):
    """`facedata.Project(path).build()` is the build flow (stage metrics back), `.manifest(name)` a DataFrame.
    Here, right after the first build (nothing to rerun): after the forced export of the test below, it would
    rerun train and reconstruct3d, which test_build_flow_runs_every_stage_in_dag_order has run already."""
    import facedata as fd

    project = fd.Project(flow_project)
    results = project.build()
    assert list(results) == list(STAGES)
    assert results["export"]["n_faces"] == 6
    faces = project.manifest("faces")
    assert (faces["status"] == "ok").sum() == 6
    assert len(project.manifest("dataset")) == 6


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")
def test_a_build_shows_in_a_real_prefect_server_and_its_ui(prefect_server, flow_project, test_artifacts, tmp_path):
    """`facedata ui` finds the running server and prints what to export; `facedata build` against it shows a
    run named after the revision, one task per stage (skipped ones marked) and the artifacts in the API; the
    run page renders in Chromium (screenshot saved as a test artifact)."""
    import urllib.request

    from .projects import BIN, run

    port = prefect_server.removesuffix("/api").rsplit(":", 1)[1]
    found = run([str(BIN / "facedata"), "ui", "--port", port], flow_project)
    assert "found a Prefect server" in found.stderr
    assert f"export PREFECT_API_URL={prefect_server}" in found.stdout

    out = run([str(BIN / "facedata"), "build"], flow_project, extra_env={"PREFECT_API_URL": prefect_server})
    assert "skipped (up to date)" in out.stdout and "facedata outputs" in out.stdout

    def api(path: str, body: dict):
        req = urllib.request.Request(
            f"{prefect_server}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    runs = api("/flow_runs/filter", {"flows": {"name": {"any_": ["facedata-build"]}}, "sort": "START_TIME_DESC"})
    flow_run = runs[0]
    assert flow_run["state"]["type"] == "COMPLETED" and flow_run["name"].startswith("build ")
    assert any(t.startswith("rev:") for t in flow_run["tags"])
    tasks = api("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    assert sorted(t["name"] for t in tasks) == sorted(STAGES)
    assert {t["state"]["name"] for t in tasks} == {"Skipped"}
    arts = api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})
    assert {"facedata-build", "facedata-detect"} <= {a["key"] for a in arts}

    shot = test_artifacts / "prefect_flow_run.png"
    text = screenshot(f"{prefect_server.removesuffix('/api')}/runs/flow-run/{flow_run['id']}", shot, "Skipped")
    assert flow_run["name"] in text and "Skipped" in text
    assert shot.stat().st_size > 10_000


def test_an_up_to_date_build_marks_every_stage_skipped(prefect_harness, flow_project):
    """Nothing changed since the last build: each task says so, and old metrics are not republished as new."""
    from facedata import gitinfo
    from facedata.flows.build import build_flow

    state = build_flow(root=str(flow_project), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["export"]["n_faces"] == 6  # the results of the build that made the outputs
    runs = task_runs(state.state_details.flow_run_id)
    assert set(runs) == set(STAGES)
    assert {r.state.name for r in runs.values()} == {"Skipped"}
    assert {r.state.message for r in runs.values()} == {"skipped (up to date)"}
    arts = artifacts(state.state_details.flow_run_id)
    assert "skipped (up to date)" in arts["facedata-detect"] and "n_processed" not in arts["facedata-detect"]
    assert "facedata-dataset-card" not in arts
    assert arts["facedata-build"].count("skipped (up to date)") == len(STAGES)

    # The card and contact sheets the first build wrote: byte-identical when the stage runs again.
    dataset = flow_project / "data" / "dataset"
    card = json.loads((dataset / "card.json").read_text())
    assert (
        card["totals"]["faces"] == 6
        and card["revision"] == gitinfo.revision(flow_project)
        and card["gates"]["passed"] is True
    )
    assert sorted(p.name for p in (dataset / "contact_sheets").iterdir()) == [
        "Colin_Powell.png",
        "Hugo_Chavez.png",
    ]
    before = {
        p.relative_to(dataset): p.read_bytes()
        for p in dataset.rglob("*")
        if p.is_file() and p.suffix != ".parquet"
    }
    again = build_flow(root=str(flow_project), stages=["export"], force=True, return_state=True)
    assert again.is_completed()
    after = {
        p.relative_to(dataset): p.read_bytes()
        for p in dataset.rglob("*")
        if p.is_file() and p.suffix != ".parquet"
    }
    assert after == before


def test_a_failed_quality_gate_fails_the_flow_without_retry(prefect_harness, tmp_path, small_build):
    from facedata.flows.build import StageGateFailed, build_flow

    from .projects import commit, set_params

    # A built project (the session's small build) whose gate now asks for more faces than there are: DVC
    # skips ingest to cluster, the gate runs and fails.
    root = copy_project(small_build, tmp_path / "proj")
    set_params(root, validate={"min_faces_per_identity": 50})
    commit(root, "a gate the project cannot pass")
    set_params(root, export={"seed": 3})  # a params change not committed: the run's name says so
    state = build_flow(root=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(
        StageGateFailed, match=r"^stage validate failed \(exit 1\): 1 of \d+ quality checks failed"
    ):
        state.result()
    with pytest.raises(StageGateFailed, match=r"identities: .*n_members.*failed"):
        state.result()
    run_id = state.state_details.flow_run_id
    runs = task_runs(run_id)
    assert runs["validate"].run_count == 1  # a gate is final: no retry
    assert runs["validate"].state.is_failed()
    assert all(runs[s].state.is_completed() for s in ("ingest", "detect", "embed", "cluster"))
    # nothing after the failed stage runs, and the run shows it
    assert {runs[s].state.name for s in STAGES[STAGES.index("validate") + 1 :]} == {"NotRun"}
    assert (root / "data" / "reports" / "validate.html").exists()
    assert flow_run_of(run_id).name.endswith(" export.seed=3")
    # The failing check is in the log at ERROR (the UI's level filter finds it), and in an artifact.
    errors = [m for level, m in logs(run_id) if level >= logging.ERROR]
    assert any("FAILED" in m for m in errors) and any("n_members" in m for m in errors)
    assert not any("Traceback" in m for _, m in logs(run_id))
    arts = artifacts(run_id)
    assert "FAILED" in arts["facedata-validation"] and "n_members" in arts["facedata-validation"]
    assert "not run" in arts["facedata-build"]

    # On the terminal: the stage's own lines, the stage table, and one failure message with the real exit code.
    # (Reporting to the session's server: the temporary one `facedata build` starts is test_faults' to check.)
    from prefect.settings import PREFECT_API_URL

    from .projects import BIN, run

    out = run(
        [str(BIN / "facedata"), "build"], root, check=False, extra_env={"PREFECT_API_URL": PREFECT_API_URL.value()}
    )
    said = out.stdout + out.stderr
    assert out.returncode == 1, said
    assert said.count("build failed: stage validate failed (exit 1): 1 of ") == 1
    assert said.count("quality checks failed") == 2  # the stage's own line, then the one failure message
    assert "Traceback" not in said and "dvc exit code" not in said and "To track the changes" not in said
    assert "not run" in said and "validation report:" in said


def test_a_crashing_stage_is_retried(prefect_harness, tmp_path, lfw, monkeypatch):
    from facedata.flows import build as flow
    from facedata.flows.build import StageCrashed, build_flow

    # the retry itself is what is checked here, not the product's pause before it
    monkeypatch.setattr(flow, "run_stage_task", flow.run_stage_task.with_options(retry_delay_seconds=0))
    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:1], per_name=2)
    (root / "stages" / "ingest.py").write_text("raise SystemExit('simulated crash')\n")
    state = build_flow(root=str(root), stages=["ingest"], return_state=True)
    assert state.is_failed()
    with pytest.raises(StageCrashed, match="simulated crash"):
        state.result()
    assert task_runs(state.state_details.flow_run_id)["ingest"].run_count == 2


def test_a_stage_that_cannot_run_is_not_retried(prefect_harness, tmp_path, lfw):
    from facedata.flows.build import StageSetupError, build_flow

    from .projects import commit, set_params

    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:1], per_name=2)
    set_params(root, sources={"folders": [{"root": str(tmp_path / "gone")}], "videos": []})
    commit(root, "a source folder that does not exist")
    state = build_flow(root=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(StageSetupError, match="gone does not exist"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["ingest"].run_count == 1 and runs["check"].state.is_completed()


def test_bad_params_stop_the_flow_before_any_stage(prefect_harness, tmp_path, lfw):
    from facedata.flows.build import build_flow
    from facedata.params import ParamsError

    from .projects import set_params

    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:1], per_name=2)
    set_params(root, detect={"min_score": 2.0})
    state = build_flow(root=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(ParamsError, match="detect.min_score must be 0..1"):
        state.result()
    assert task_runs(state.state_details.flow_run_id) == {}
