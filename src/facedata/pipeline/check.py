"""Stage `check` and `facedata check`: params.yaml is checked before any stage touches its outputs.

DVC removes a stage's non-persistent outputs (and every metrics file) before it runs the stage's command, so a
stage that refuses a bad parameter has already lost its last good outputs. The `check` stage comes first in
the DAG, depends on the whole of params.yaml and writes one constant file every other stage depends on:
`dvc repro` runs it whenever any parameter changes and stops at its error, before the stages that read the
parameter are touched; when params are fine its output is unchanged, so it reruns nothing by itself.
`facedata build` runs the same check in-process before it starts; CI can run `facedata check`.

The check: the YAML parses to a mapping; no unknown section or key; every value of the right type and in
range; every parameter dvc.yaml tracks present (DVC fails on a missing one); missing keys that DVC does not
track take their default, with a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facedata import atomic
from facedata.params import ParamsError, check, has
from facedata.pipeline.runner import StageContext

#: The check stage's output: constant text, so a passing check never makes the stages after it stale.
OUT = Path("data") / "reports" / "params_check.txt"
OK_TEXT = "params.yaml passed `facedata check`\n"


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_project(root: str | os.PathLike) -> CheckResult:
    """Every problem of the project's params.yaml (and what dvc.yaml needs of it), without raising."""
    root = Path(root)
    path = root / "params.yaml"
    out = CheckResult()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        out.errors.append(f"{path} not found: run this inside a facedata project (or `facedata init DIR`)")
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out.errors.append(f"{path} cannot be read: {exc}")
        return out
    except yaml.YAMLError as exc:
        out.errors.append(f"{path} is not valid YAML: {exc}")
        return out
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        out.errors.append(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
        return out
    _, errors, missing = check(raw)
    out.errors += errors
    tracked = dvc_tracked_params(root)
    absent = [k for k in tracked if not has(raw, k)]
    if absent:
        out.errors.append(
            f"params.yaml has no {', '.join(absent)}: dvc.yaml tracks them, so DVC refuses to run without "
            "them; add them (`facedata params` lists every key and its default)"
        )
    defaulted = [k for k in missing if not any(k == t or k.startswith(t + ".") for t in absent)]
    if defaulted:
        out.warnings.append(f"params.yaml has no {', '.join(defaulted)}: using the defaults")
    return out


def dvc_tracked_params(root: Path) -> list[str]:
    """The params.yaml keys that the project's dvc.yaml lists for its stages (whole-file entries excluded)."""
    try:
        doc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    keys: list[str] = []
    for stage in (doc.get("stages") or {}).values():
        for entry in (stage or {}).get("params", []) or []:
            if isinstance(entry, str):
                keys.append(entry)
            elif isinstance(entry, dict):
                for file, names in entry.items():
                    if file == "params.yaml" and names:
                        keys.extend(names)
    return list(dict.fromkeys(keys))


def run(ctx: StageContext) -> dict:
    result = check_project(ctx.root)
    if not result.ok:
        raise ParamsError("\n".join(result.errors))
    atomic.write_text(ctx.root / OUT, OK_TEXT)
    return {"warnings": result.warnings}
