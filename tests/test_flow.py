"""The Prefect build flow over the DVC stages: DAG order, artifacts, retries only for crashes, gates final."""

from __future__ import annotations

import asyncio

import pytest

from facedata.pipeline.runner import STAGES

from .projects import SAMPLE_NAMES, make_project

pytestmark = [pytest.mark.slow, pytest.mark.shared]


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
def flow_project(tmp_path_factory, lfw):
    # Two people whose first three photos cluster at any cut from 0.30 to 0.32 (Bill Clinton's sit 0.31-0.36
    # apart: a sample on the edge of the threshold would test the clustering defaults, not the flow).
    return make_project(tmp_path_factory.mktemp("flow") / "proj", lfw, names=SAMPLE_NAMES[1:3], per_name=3)


def test_build_flow_runs_every_stage_in_dag_order(prefect_harness, flow_project):
    from facedata.flow import build_flow

    state = build_flow(root=str(flow_project), return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert list(results) == list(STAGES)
    assert results["export"]["n_faces"] == 6
    runs = task_runs(state.state_details.flow_run_id)
    assert set(runs) == set(results)
    assert all(r.state.is_completed() for r in runs.values())
    arts = artifacts(state.state_details.flow_run_id)
    assert {f"facedata-{s}" for s in results} | {"facedata-build"} <= set(arts)
    assert "| n_faces | 6 |" in arts["facedata-export"]


def test_a_failed_quality_gate_fails_the_flow_without_retry(prefect_harness, tmp_path, lfw):
    from facedata.flow import StageGateFailed, build_flow

    root = make_project(
        tmp_path / "proj", lfw, names=SAMPLE_NAMES[:2], per_name=3, validate={"min_faces_per_identity": 50}
    )
    state = build_flow(root=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(StageGateFailed, match=r"identities: .*n_members.*failed"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["validate"].run_count == 1  # a gate is final: no retry
    assert all(runs[s].state.is_completed() for s in ("ingest", "detect", "embed", "cluster"))
    assert "export" not in runs  # nothing after the failed stage runs
    assert (root / "data" / "reports" / "validate.html").exists()


def test_a_crashing_stage_is_retried(prefect_harness, tmp_path, lfw):
    from facedata.flow import StageCrashed, build_flow

    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:1], per_name=2)
    (root / "stages" / "ingest.py").write_text("raise SystemExit('simulated crash')\n")
    state = build_flow(root=str(root), stages=["ingest"], return_state=True)
    assert state.is_failed()
    with pytest.raises(StageCrashed, match="simulated crash"):
        state.result()
    assert task_runs(state.state_details.flow_run_id)["ingest"].run_count == 2


def test_a_stage_that_cannot_run_is_not_retried(prefect_harness, tmp_path, lfw):
    from facedata.flow import StageSetupError, build_flow

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
    from facedata.flow import build_flow
    from facedata.params import ParamsError

    from .projects import set_params

    root = make_project(tmp_path / "proj", lfw, names=SAMPLE_NAMES[:1], per_name=2)
    set_params(root, detect={"min_score": 2.0})
    state = build_flow(root=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(ParamsError, match="detect.min_score must be 0..1"):
        state.result()
    assert task_runs(state.state_details.flow_run_id) == {}


def test_project_api_builds_and_reads_manifests(prefect_harness, flow_project):
    """`facedata.Project(path).build()` is the build flow (stage metrics back), `.manifest(name)` a DataFrame."""
    import facedata as fd

    project = fd.Project(flow_project)
    results = project.build()
    assert list(results) == list(STAGES)
    assert results["export"]["n_faces"] == 6
    faces = project.manifest("faces")
    assert (faces["status"] == "ok").sum() == 6
    assert len(project.manifest("dataset")) == 6
