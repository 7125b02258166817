"""`facedata init`: a new project directory that `dvc repro` and `facedata build` run in as they are.

It holds params.yaml (every parameter at its default, sources from the command line), dvc.yaml (rendered
from the DAG definition), versions.yaml (each stage's code version and model identity, which DVC tracks),
thin `stages/` entry points with their launcher `stages/run.sh`, a .gitignore and .dvcignore, and initialised
git and DVC repositories (DVC analytics off).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from facedata.params import SPEC, with_defaults
from facedata.pipeline.dag import RUN_SH, RUNNER, STAGE_DEFS, VERSIONS, render_dvc_yaml, render_versions
from facedata.review.decisions import ensure as ensure_reviews

GITIGNORE = """\
# facedata: data/ is DVC-managed; stage metrics stay in git so `dvc metrics diff` can compare runs, and the
# review decisions (made by people, not rebuilt by any stage) stay in git with the revision they apply to.
/data/*
!/data/metrics/
!/data/plots/
!/data/manifests/
/data/manifests/*
!/data/manifests/reviews.parquet
__pycache__/
.venv/
"""


#: What DVC must never hash: Python's byte-code caches differ between machines and runs.
DVCIGNORE = ("__pycache__/", "*.pyc")


def ensure_dvcignore(root: Path) -> None:
    """Add the `DVCIGNORE` patterns to the project's .dvcignore (kept as the user wrote it otherwise)."""
    path = root / ".dvcignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    missing = [p for p in DVCIGNORE if p not in text.splitlines()]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        path.write_text(text + sep + "\n".join(missing) + "\n", encoding="utf-8")


def render_params_yaml(sources: dict, values: dict[str, object] | None = None) -> str:
    """params.yaml with every key at its default (or `values[key]`), a comment per key, and the given sources."""
    values = values or {}
    out = [
        "# facedata parameters (see `facedata params` for every key and its allowed values).",
        "# Paths are relative to this file.",
        "",
    ]
    # Every source list appears (empty when unused), so the user sees what can be collected from.
    all_sources = {k.split(".", 1)[1]: spec.default for k, spec in SPEC.items() if k.startswith("sources.")}
    all_sources.update(sources)
    out.append(yaml.safe_dump({"sources": all_sources}, sort_keys=False, width=110).rstrip())
    section = None
    for key, spec in SPEC.items():
        top, _, leaf = key.partition(".")
        if top == "sources":
            continue
        if top != section:
            out += ["", f"{top}:"]
            section = top
        value = yaml.safe_dump(values.get(key, spec.default), default_flow_style=True, width=1000).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        comment = f"  # {spec.help}" if spec.help else ""
        out.append(f"  {leaf}: {value}{comment}")
    return "\n".join(out) + "\n"


def stage_module(name: str) -> str:
    return (
        f'"""DVC stage `{name}` (see dvc.yaml). The logic lives in `facedata.pipeline.{name}`."""\n\n'
        "from facedata.pipeline.runner import main\n\n"
        f'if __name__ == "__main__":\n    main("{name}")\n'
    )


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}")


def init_project(
    directory: str | Path, sources: dict, git: bool = True, values: dict[str, object] | None = None
) -> Path:
    """Create the project; refuses a directory that already holds params.yaml or dvc.yaml."""
    root = Path(directory).resolve()
    if (root / "params.yaml").exists() or (root / "dvc.yaml").exists():
        raise FileExistsError(f"{root} already holds a facedata/DVC project (params.yaml or dvc.yaml)")
    root.mkdir(parents=True, exist_ok=True)
    text = render_params_yaml(sources, values)
    params = with_defaults(yaml.safe_load(text))  # never write a params file the project would then refuse
    (root / "params.yaml").write_text(text, encoding="utf-8")
    (root / "dvc.yaml").write_text(render_dvc_yaml(code_deps=False), encoding="utf-8")
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages" / "__init__.py").write_text('"""DVC stage entry points."""\n', encoding="utf-8")
    for s in STAGE_DEFS:
        (root / "stages" / f"{s.name}.py").write_text(stage_module(s.name), encoding="utf-8")
    (root / RUNNER).write_text(RUN_SH, encoding="utf-8")
    (root / VERSIONS).write_text(render_versions(root, params, code=True), encoding="utf-8")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (root / "data" / "metrics").mkdir(parents=True, exist_ok=True)
    ensure_reviews(root)  # the cluster stage's DVC dep: empty until someone reviews
    if git:
        if not (root / ".git").exists():
            _run(["git", "init", "-q"], root)
        dvc = str(Path(sys.executable).parent / "dvc")
        if not (root / ".dvc").exists():
            _run([dvc, "init", "-q"], root)
        _run([dvc, "config", "core.analytics", "false"], root)
    ensure_dvcignore(root)
    return root
