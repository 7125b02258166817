"""The stage DAG, defined once: `dvc.yaml` is rendered from it (the repository's own, and the one
`facedata init` writes for a new project), and the Prefect flow orders its tasks by reading dvc.yaml back.

In this repository stages also depend on the facedata source files they run, so editing the code reruns the
stages it affects. A project made with `facedata init` runs the installed package instead; there the code
version is recorded in every row's lineage.
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
    code: tuple[str, ...]  # facedata sources the stage runs (paths under src/facedata)
    deps: tuple[str, ...]  # data inputs
    params: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()  # outs kept between runs (incremental stages)
    uncached: tuple[str, ...] = ()  # outs kept out of the DVC cache (small reports)
    plots: tuple[str, ...] = ()  # DVC plots files (kept in git like metrics; drawn by PLOTS)
    desc: str = ""
    extra: dict = field(default_factory=dict)


STAGE_DEFS: tuple[StageDef, ...] = (
    StageDef(
        "ingest",
        ("pipeline/ingest.py", "ingest.py", "sources", "imageio.py"),
        (),
        ("sources", "ingest", "crawl"),
        ("data/store/images", f"{M}/images.parquet", f"{M}/crawl_log.parquet"),
        persist=("data/store/images", f"{M}/images.parquet", f"{M}/crawl_log.parquet"),
        desc="collect images from the sources into the content-addressed store",
    ),
    StageDef(
        "detect",
        ("pipeline/detect.py", "faces", "imageio.py", "models.py", "device.py"),
        (f"{M}/images.parquet", "data/store/images"),
        ("detect",),
        ("data/store/crops", f"{M}/detections.parquet", f"{M}/faces.parquet"),
        persist=("data/store/crops", f"{M}/detections.parquet", f"{M}/faces.parquet"),
        desc="find, align and quality-score every face",
    ),
    StageDef(
        "embed",
        ("pipeline/embed.py", "embed", "faces", "imageio.py", "models.py", "device.py"),
        (f"{M}/faces.parquet", "data/store/crops", f"{M}/images.parquet", "data/store/images"),
        ("embed",),
        (f"{M}/embeddings.parquet",),
        persist=(f"{M}/embeddings.parquet",),
        desc="one unit vector per usable face",
    ),
    StageDef(
        "cluster",
        ("pipeline/cluster.py", "cluster"),
        (f"{M}/images.parquet", f"{M}/faces.parquet", f"{M}/embeddings.parquet"),
        ("cluster", "embed.model"),
        (f"{M}/clusters.parquet", f"{M}/identities.parquet"),
        persist=(f"{M}/clusters.parquet",),  # the last clustering, so new faces can join it incrementally
        desc="group faces by identity; pick each name's dominant cluster",
    ),
    StageDef(
        "validate",
        ("pipeline/validate.py", "validation.py"),
        tuple(
            f"{M}/{n}.parquet"
            for n in ("images", "crawl_log", "detections", "faces", "embeddings", "clusters", "identities")
        ),
        ("validate",),
        ("data/reports/validate.json", "data/reports/validate.html"),
        uncached=("data/reports/validate.json", "data/reports/validate.html"),
        desc="quality gates (Great Expectations) on every manifest",
    ),
    StageDef(
        "export",
        ("pipeline/export.py", "export.py"),
        ("data/reports/validate.json", f"{M}/clusters.parquet", f"{M}/identities.parquet", "data/store/crops"),
        ("export", "embed.model"),
        ("data/dataset",),
        desc="ImageFolder of aligned crops + dataset.parquet with lineage",
    ),
    # Recognizer (issue 18): trained on the exported dataset; its checkpoint (data/cache/train) is no out, so
    # that DVC does not delete it before a rerun and a killed run resumes.
    StageDef(
        "train",
        ("pipeline/train.py", "train", "embed", "faces", "imageio.py", "models.py", "device.py"),
        ("data/dataset", f"{M}/embeddings.parquet"),
        ("train", "embed", "detect"),
        ("data/models/recognizer",),
        plots=("data/plots/train.csv",),
        desc="a recognizer for the cast: trained, evaluated, exported (model.pt, model.onnx, model card)",
    ),
    # 3D faces (issue 6): after export, because fusing a person's views needs the dataset's identities and
    # `facedata train 3d` fine-tunes on exactly the dataset's faces.
    StageDef(
        "reconstruct3d",
        ("pipeline/reconstruct3d.py", "recon3d", "imageio.py", "models.py"),
        ("data/dataset/dataset.parquet", "data/store/images"),
        ("recon3d",),
        ("data/meshes", f"{M}/meshes.parquet", "data/reports/reconstruct3d"),
        persist=("data/meshes", f"{M}/meshes.parquet"),
        uncached=("data/reports/reconstruct3d",),
        desc="3DMM landmarks, pose, gaze, dense textured meshes per face; one fused mesh per identity",
    ),
)

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

#: Code every stage shares: a change to these reruns everything.
COMMON_CODE = ("manifest.py", "lineage.py", "params.py", "pipeline/runner.py")

HEADER = """\
# The facedata pipeline, rendered from facedata.pipeline.dag (edit that, then `facedata dvc-yaml --write`).
# Each stage is `python -m stages.<name>`, a thin entry point into facedata.pipeline.<name>. Manifests, the
# image store and crops persist between runs, so reruns only process what is new. Source folders are not
# deps (web sources cannot be): after changing files in a source folder, run `dvc repro --force ingest`.
"""


def stage_defs() -> dict[str, StageDef]:
    return {s.name: s for s in STAGE_DEFS}


def render_dvc_yaml(code_deps: bool) -> str:
    stages = {}
    for s in STAGE_DEFS:
        deps = [f"stages/{s.name}.py"]
        if code_deps:
            deps += [f"src/facedata/{c}" for c in (*s.code, *COMMON_CODE)]
        deps += list(s.deps)
        outs = []
        for o in s.outs:
            opts = {}
            if o in s.persist:
                opts["persist"] = True
            if o in s.uncached:
                opts["cache"] = False
            outs.append({o: opts} if opts else o)
        stages[s.name] = {
            "desc": s.desc,
            "cmd": f"python -m stages.{s.name}",
            "deps": deps,
            "params": list(s.params),
            "outs": outs,
            "metrics": [{f"data/metrics/{s.name}.json": {"cache": False}}],
        }
        if s.plots:
            stages[s.name]["plots"] = [{p: {"cache": False}} for p in s.plots]
    return HEADER + yaml.safe_dump({"stages": stages, "plots": list(PLOTS)}, sort_keys=False, width=110)


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
