"""The stage DAG, defined once: `dvc.yaml` is rendered from it (the repository's own, and the one
`facedata init` writes for a new project), and the Prefect flow orders its tasks by reading dvc.yaml back.

A stage's code is what it imports (`facedata.lineage.codedeps`), never a hand-kept list. In this repository each
stage depends on exactly those source files, so editing one reruns the stages that import it. A project made with
`facedata init` runs the installed package, which DVC cannot see: there each stage depends on its `code` entry
in `versions.yaml` (the hash of the same files). Model weights are not DVC deps either (they live outside the
project, or behind a name like `onnx:rec.onnx`): a stage with a model depends on its `model` entry there (name,
version, sha256 of the weights). `facedata build` rewrites versions.yaml before running DVC, so upgrading
facedata or replacing a weights file reruns the stages concerned; and every row's lineage carries the same
hashes, so those stages recompute what the old code or model made instead of reusing it.

Stage commands run `sh stages/run.sh <stage>`, which finds the Python that has facedata (the one DVC runs in),
so `.venv/bin/dvc repro` works without an activated environment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

M = "data/manifests"


@dataclass(frozen=True)
class StageDef:
    name: str
    deps: tuple[str, ...]  # data inputs
    params: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()  # outs kept between runs (incremental stages)
    plots: tuple[str, ...] = ()  # DVC plots files (kept in git like metrics; drawn by PLOTS)
    desc: str = ""
    model: bool = False  # runs a model: `facedata.pipeline.<name>.model_identity(params, project)`
    extra: dict = field(default_factory=dict)
    params_file: bool = False  # tracks the whole of params.yaml (every key, unknown ones included)


#: The check stage's output, a dependency of every other stage (see facedata.pipeline.check).
CHECKED = "data/reports/params_check.txt"

STAGE_DEFS: tuple[StageDef, ...] = (
    # First: params.yaml is checked before DVC removes any stage's outputs to run it.
    StageDef(
        "check",
        (),
        (),
        (CHECKED,),
        desc="params.yaml checked (unknown keys, types, ranges, missing sections) before any stage runs",
        params_file=True,
    ),
    StageDef(
        "ingest",
        (),
        ("sources", "ingest", "crawl"),
        ("data/store/images", f"{M}/images.parquet", f"{M}/crawl_log.parquet"),
        persist=("data/store/images", f"{M}/images.parquet", f"{M}/crawl_log.parquet"),
        desc="collect images from the sources into the content-addressed store",
    ),
    StageDef(
        "detect",
        (f"{M}/images.parquet", "data/store/images"),
        ("detect",),
        ("data/store/crops", f"{M}/detections.parquet", f"{M}/faces.parquet"),
        persist=("data/store/crops", f"{M}/detections.parquet", f"{M}/faces.parquet"),
        desc="find, align and quality-score every face",
        model=True,
    ),
    StageDef(
        "embed",
        (f"{M}/faces.parquet", "data/store/crops", f"{M}/images.parquet", "data/store/images"),
        ("embed",),
        (f"{M}/embeddings.parquet",),
        persist=(f"{M}/embeddings.parquet",),
        desc="one unit vector per usable face",
        model=True,
    ),
    StageDef(
        "cluster",
        # crawl_log: the labelled metrics count every file of a labelled folder, those that failed to ingest too;
        # reviews: people's decisions, constraints on the clustering
        (
            f"{M}/images.parquet",
            f"{M}/crawl_log.parquet",
            f"{M}/faces.parquet",
            f"{M}/embeddings.parquet",
            f"{M}/reviews.parquet",
        ),
        ("cluster", "embed.model"),
        (f"{M}/clusters.parquet", f"{M}/identities.parquet"),
        persist=(f"{M}/clusters.parquet",),  # the last clustering, so new faces can join it incrementally
        desc="group faces by identity; pick each name's dominant cluster; apply the review decisions",
    ),
    StageDef(
        "validate",
        tuple(
            f"{M}/{n}.parquet"
            for n in ("images", "crawl_log", "detections", "faces", "embeddings", "clusters", "identities")
        ),
        ("validate",),
        ("data/reports/validate.json", "data/reports/validate.html"),
        desc="quality gates (Great Expectations) on every manifest",
    ),
    StageDef(
        "export",
        ("data/reports/validate.json", f"{M}/clusters.parquet", f"{M}/identities.parquet", "data/store/crops"),
        ("export", "embed.model"),
        ("data/dataset",),
        desc="ImageFolder of aligned crops + dataset.parquet with lineage",
    ),
    # Recognizer: trained on the exported dataset; its checkpoint (data/cache/train) is no out, so
    # that DVC does not delete it before a rerun and a killed run resumes.
    StageDef(
        "train",
        ("data/dataset", f"{M}/embeddings.parquet"),
        ("train", "embed", "detect"),
        ("data/models/recognizer",),
        plots=("data/plots/train.csv",),
        desc="a recognizer for the cast: trained, evaluated, exported (model.pt, model.onnx, model card)",
        model=True,
    ),
    # 3D faces: after export, because fusing a person's views needs the dataset's identities and
    # `facedata train 3d` fine-tunes on exactly the dataset's faces.
    StageDef(
        "reconstruct3d",
        ("data/dataset/dataset.parquet", "data/store/images"),
        ("recon3d",),
        ("data/meshes", f"{M}/meshes.parquet", "data/reports/reconstruct3d"),
        persist=("data/meshes", f"{M}/meshes.parquet"),
        desc="3DMM landmarks, pose, gaze, dense textured meshes per face; one fused mesh per identity",
        model=True,
    ),
)

#: What DVC cannot see of each stage, as a DVC params file: its code version (projects on the installed
#: facedata) and its model's identity.
VERSIONS = "versions.yaml"

#: The stage command: `stages/run.sh` (written beside the stage modules) picks the Python that has facedata.
RUNNER = "stages/run.sh"

#: How `dvc plots show` draws the plots files (top-level `plots:` of dvc.yaml).
PLOTS = (
    {
        "train top-1": {
            "x": "epoch",
            "y": {"data/plots/train.csv": ["train_top1", "val_top1"]},
            "title": "recognizer top-1 by epoch (train split; val split)",
        }
    },
    {
        "train loss": {
            "x": "epoch",
            "y": {"data/plots/train.csv": ["train_loss", "val_loss"]},
            "title": "recognizer margin loss by epoch",
        }
    },
)

HEADER = """\
# The facedata pipeline, rendered from facedata.pipeline.dag (edit that, then `facedata dvc-yaml --write`).
# Each stage is `sh stages/run.sh <name>`: `python -m stages.<name>` (a thin entry point into
# facedata.pipeline.<name>) with the Python that has facedata. Code deps are the files each stage imports.
# Manifests, the image store and crops persist between runs, so reruns only process what is new. Source
# folders are not deps (web sources cannot be): after changing files in a source folder, run
# `dvc repro --force ingest`.
# `check` runs first whenever params.yaml changes and stops `dvc repro` on a bad parameter before DVC
# removes any stage's outputs.
"""

RUN_SH = """\
#!/bin/sh
# Runs one facedata stage: `sh stages/run.sh NAME` is `python -m stages.NAME` (dvc.yaml's cmd) with a Python
# that has facedata: $FACEDATA_PYTHON when set; else the interpreter of the DVC process that started this
# command, so `.venv/bin/dvc repro` works without an activated environment; else python3 or python on PATH.
set -u
stage="$1"
has_facedata() { [ -n "$1" ] && "$1" -c "import facedata" >/dev/null 2>&1; }
run() { exec "$1" -m "stages.$stage"; }
if [ -n "${FACEDATA_PYTHON:-}" ]; then run "$FACEDATA_PYTHON"; fi
pid=$$
for _ in 1 2 3 4 5; do
    if [ -r "/proc/$pid/status" ]; then
        pid=$(sed -n "s/^PPid:[[:space:]]*//p" "/proc/$pid/status")
        exe=$(tr "\\000" "\\n" < "/proc/$pid/cmdline" 2>/dev/null | head -n 1)
    else
        pid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d " ")
        exe=$(ps -o args= -p "$pid" 2>/dev/null | cut -d " " -f 1)
    fi
    [ -n "$pid" ] && [ "$pid" -gt 1 ] || break
    case "$exe" in
        *python*) if has_facedata "$exe"; then run "$exe"; fi ;;
    esac
done
for py in python3 python; do
    if has_facedata "$(command -v "$py")"; then run "$(command -v "$py")"; fi
done
echo "stages/run.sh: no Python with facedata found; set FACEDATA_PYTHON or activate its environment" >&2
exit 2
"""


def stage_defs() -> dict[str, StageDef]:
    return {s.name: s for s in STAGE_DEFS}


def stage_cmd(name: str) -> str:
    return f"sh {RUNNER} {name}"


def stage_code_deps(name: str) -> list[str]:
    """The source files stage `name` runs, as this repository's dvc.yaml lists them (`src/facedata/...`)."""
    from facedata.lineage.codedeps import stage_code_files

    return [f"src/{f}" for f in stage_code_files(name)]


def render_dvc_yaml(code_deps: bool) -> str:
    """dvc.yaml for this repository (`code_deps`: the stages' source files are deps) or for a project made by
    `facedata init` (their hash in `versions.yaml` is a param); model identities are params in both."""
    stages = {}
    for s in STAGE_DEFS:
        deps = [f"stages/{s.name}.py"]
        params: list = list(s.params)
        if code_deps:
            deps += stage_code_deps(s.name)
        if not code_deps or s.model:
            params.append({VERSIONS: [s.name]})
        deps += list(s.deps) + ([] if s.params_file else [CHECKED])
        outs = []
        for o in s.outs:
            opts = {}
            if o in s.persist:
                opts["persist"] = True
            outs.append({o: opts} if opts else o)
        stages[s.name] = {
            "desc": s.desc,
            "cmd": stage_cmd(s.name),
            "deps": deps,
            "params": ([{"params.yaml": None}] if s.params_file else []) + params,
            "outs": outs,
            "metrics": [{f"data/metrics/{s.name}.json": {"cache": False}}],
        }
        if s.plots:
            stages[s.name]["plots"] = [{p: {"cache": False}} for p in s.plots]
    return HEADER + yaml.safe_dump({"stages": stages, "plots": list(PLOTS)}, sort_keys=False, width=110)


def stage_versions(root: str | Path, params: dict, code: bool) -> dict[str, dict[str, str]]:
    """versions.yaml's content: per stage, its code hash (when `code`) and its model identity; a model that
    cannot be resolved is recorded as unavailable (the stage then fails with the reason when it runs)."""
    import importlib

    from facedata.lineage.codedeps import code_hash
    from facedata.models import ModelError, no_downloads
    from facedata.project import Project

    project = Project.find(root)
    out: dict[str, dict[str, str]] = {}
    for s in STAGE_DEFS:
        entry: dict[str, str] = {}
        if code:
            entry["code"] = code_hash(s.name)
        if s.model:
            identity = importlib.import_module(f"facedata.pipeline.{s.name}").model_identity
            try:
                with no_downloads():  # a missing model is the stage's to fetch (or report), not this file's
                    m = identity(params, project)
                entry["model"] = f"{m.name} {m.version} sha256:{m.sha256}"
            except (ModelError, OSError, ValueError) as exc:
                entry["model"] = f"unavailable: {exc}"
        if entry:
            out[s.name] = entry
    return out


def render_versions(root: str | Path, params: dict, code: bool) -> str:
    head = (
        "# What DVC cannot see of each facedata stage (dvc.yaml tracks it as params): the hash of the facedata\n"
        "# source files it runs (projects on the installed facedata) and its model's name, version and weights\n"
        "# sha256. `facedata build` rewrites it, so a stage whose code or model changed reruns. Commit it.\n"
    )
    return head + yaml.safe_dump(stage_versions(root, params, code), sort_keys=False, width=1000)


def refresh_versions(root: str | Path, params: dict) -> bool:
    """Rewrite the project's versions.yaml when its dvc.yaml uses one and what the running facedata would
    record differs; True when it changed."""
    from facedata import atomic

    root = Path(root)
    dvc_yaml = root / "dvc.yaml"
    text = dvc_yaml.read_text(encoding="utf-8") if dvc_yaml.is_file() else ""
    if VERSIONS not in text:
        return False
    code = not any("- src/facedata/" in line for line in text.splitlines())
    path = root / VERSIONS
    new = render_versions(root, params, code)
    if path.is_file() and path.read_text(encoding="utf-8") == new:
        return False
    atomic.write_text(path, new)
    return True


def stale_code_deps(dvc_yaml: str | Path) -> dict[str, list[str]]:
    """Per stage of a dvc.yaml with code deps, the files the stage imports that are not among its deps (and
    listed deps it no longer imports, prefixed with '-')."""
    doc = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}
    out = {}
    for name, stage in (doc.get("stages") or {}).items():
        listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("src/")}
        wanted = set(stage_code_deps(name)) if name in stage_defs() else set()
        problems = sorted(wanted - listed) + [f"-{d}" for d in sorted(listed - wanted)]
        if problems:
            out[name] = problems
    return out


def read_dag(dvc_yaml: str | Path) -> list[str]:
    """Stage names of a dvc.yaml in dependency order: a stage comes after every stage whose outs it depends on.

    Ties keep the file's order, so the order is stable. Used by the Prefect flow, which must follow the DAG
    because `dvc repro --single-item` does not run stale upstream stages.
    """
    doc = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}
    stages = doc.get("stages") or {}
    outs_of: dict[str, str] = {}
    for name, st in stages.items():
        for o in st.get("outs", []) + st.get("metrics", []) + st.get("plots", []):
            path = o if isinstance(o, str) else next(iter(o))
            outs_of[path.rstrip("/")] = name
    needs: dict[str, set[str]] = defaultdict(set)
    for name, st in stages.items():
        for d in st.get("deps", []):
            d = d if isinstance(d, str) else next(iter(d))
            d = d.rstrip("/")
            for out, producer in outs_of.items():
                if producer != name and (d == out or d.startswith(out + "/") or out.startswith(d + "/")):
                    needs[name].add(producer)
    order: list[str] = []
    remaining = list(stages)
    while remaining:
        ready = [s for s in remaining if needs[s] <= set(order)]
        if not ready:
            raise ValueError(f"dvc.yaml has a dependency cycle among {remaining}")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order
