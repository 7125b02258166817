"""The lineage record every manifest row carries: which stage made it, in which run, from which code and
parameters, with which model, and when.

One struct type (`LINEAGE_TYPE`) is shared by every manifest. `run_id` and `created_at` are the only fields
that change between two runs over the same inputs; everything else is a pure function of code, parameters and
data, which is what the determinism tests rely on.

A row is reused by a later run only when everything that made it is unchanged (`Recipe.made`): the params
hash, the stage's code hash (`facedata.lineage.codedeps`: the source files the stage runs) and the model's
identity (name, version, sha256 of its weights). Rows written before code hashes were recorded have none, so
they are recomputed once.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from facedata import __version__

if TYPE_CHECKING:
    from facedata.models import ModelId

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
        # added later, so nullable: manifests written before them stay readable (and their rows are not reused)
        pa.field("code_hash", pa.string()),  # facedata.lineage.codedeps.code_hash(stage)
        pa.field("model_sha256", pa.string()),  # sha256 of the model's weights (models.ModelId)
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
    model: ModelId | None = None,
    code_hash: str | None = None,
    created_at: dt.datetime | None = None,
) -> dict:
    """A lineage dict matching `LINEAGE_TYPE`."""
    return {
        "stage": stage,
        "run_id": current_run_id(),
        "git_rev": git_revision(str(Path(root).resolve())),
        "code_version": __version__,
        "params_hash": params_hash,
        "model_name": model.name if model else None,
        "model_version": model.version if model else None,
        "created_at": created_at or now_utc(),
        "code_hash": code_hash,
        "model_sha256": model.sha256 if model else None,
    }


@dataclass(frozen=True)
class Recipe:
    """How a stage makes its rows in this run: the one place that stamps lineage and decides reuse."""

    stage: str  # the name rows carry (`ingest-urls` for rows made by that command)
    params_hash: str
    code_hash: str

    def lineage(self, root: str | Path, model: ModelId | None = None) -> dict:
        return make_lineage(self.stage, self.params_hash, root, model, self.code_hash)

    def made(self, lineage: dict | None, model: ModelId | None = None) -> bool:
        """Whether a row with `lineage` is what this run would make: same params, same code and, when the stage
        uses a model, the same model name, version and weights. Rows without a code hash (older facedata) are
        not."""
        if not lineage or lineage.get("params_hash") != self.params_hash:
            return False
        if not lineage.get("code_hash") or lineage["code_hash"] != self.code_hash:
            return False
        if model is None:
            return True
        return (lineage.get("model_name"), lineage.get("model_version"), lineage.get("model_sha256")) == (
            model.name,
            model.version,
            model.sha256,
        )


def model_of(lineages: list[dict]) -> ModelId | None:
    """The one model identity rows were made with (e.g. every embedding a clustering used), or None when they
    name none, or several."""
    from facedata.models import ModelId

    found = {(lin.get("model_name"), lin.get("model_version"), lin.get("model_sha256")) for lin in lineages}
    if len(found) != 1:
        return None
    name, version, sha = found.pop()
    return ModelId(name, version, sha) if name and version and sha else None
