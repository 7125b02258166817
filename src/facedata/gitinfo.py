"""What git says about a project: the revision a build starts from and the params that differ from it.

Used to name build runs and to stamp the dataset card (how to reproduce it). Never fails: a project outside
git gets revision None and no diff.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def _git(root: str | Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def revision(root: str | Path) -> str | None:
    """The full hash of HEAD, or None outside git (or before the first commit)."""
    out = _git(root, "rev-parse", "HEAD")
    return out.strip() if out else None


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def params_changes(root: str | Path) -> dict[str, tuple[object, object]]:
    """`section.key -> (committed, now)` for every parameter of params.yaml that differs from HEAD's (a key
    only on one side has None on the other); empty outside git or when params.yaml is committed as is."""
    committed_text = _git(root, "show", "HEAD:params.yaml")
    if committed_text is None:
        return {}
    try:
        now = yaml.safe_load((Path(root) / "params.yaml").read_text()) or {}
        before = yaml.safe_load(committed_text) or {}
    except (OSError, yaml.YAMLError):
        return {}
    a, b = _flatten(before), _flatten(now)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_changes(changes: dict[str, tuple[object, object]], limit: int = 4) -> str:
    """`detect.min_score=0.6, embed.model=x (+2 more)`: the new values, for run names and tags."""
    parts = [f"{k}={v!s}" for k, (_, v) in list(changes.items())[:limit]]
    more = len(changes) - limit
    return ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")
