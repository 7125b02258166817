"""The lineage record every manifest row carries: which stage made it, in which run, from which code and
parameters, with which model, and when.

One struct type (`LINEAGE_TYPE`) is shared by every manifest. `run_id` and `created_at` are the only fields
that change between two runs over the same inputs; everything else is a pure function of code, parameters and
data, which is what the determinism tests rely on.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import uuid
from pathlib import Path

import pyarrow as pa

from facedata import __version__

LINEAGE_TYPE = pa.struct(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("git_rev", pa.string(), nullable=False),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("params_hash", pa.string(), nullable=False),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

#: Lineage fields that legitimately differ between two runs of the same inputs.
VOLATILE_FIELDS = ("run_id", "created_at")

RUN_ID_ENV = "FACEDATA_RUN_ID"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@functools.cache
def current_run_id() -> str:
    """The orchestrator's run id when there is one (the Prefect flow sets it), else a fresh one per process."""
    return os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex[:16]


#: What a row's `git_rev` describes: the code and parameters that produced it (not data or lock files).
CODE_PATHS = ("src", "stages", "flows", "params.yaml", "dvc.yaml")


def _git(root: str, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


@functools.cache
def git_revision(root: str) -> str:
    """The last commit that touched the project's code or params (`CODE_PATHS`), plus '-dirty' when those
    differ from it. Committing a build's dvc.lock or metrics does not change it, so a clean clone reproduces
    rows with the same revision; editing code or params does."""
    try:
        rev = _git(root, "log", "-1", "--format=%H", "--", *CODE_PATHS) or _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return rev + ("-dirty" if dirty else "")


def make_lineage(
    stage: str,
    params_hash: str,
    root: str | Path = ".",
    model_name: str | None = None,
    model_version: str | None = None,
    created_at: dt.datetime | None = None,
) -> dict:
    """A lineage dict matching `LINEAGE_TYPE`."""
    return {
        "stage": stage,
        "run_id": current_run_id(),
        "git_rev": git_revision(str(Path(root).resolve())),
        "code_version": __version__,
        "params_hash": params_hash,
        "model_name": model_name,
        "model_version": model_version,
        "created_at": created_at or now_utc(),
    }
