"""A facedata project: a directory with params.yaml and dvc.yaml, and its data/ tree.

Every path a stage writes is derived here, so the layout is defined once:

    data/store/images/   content-addressed images          data/manifests/   Parquet manifests
    data/store/crops/    aligned face crops                data/metrics/     one JSON per stage (DVC metrics)
    data/dataset/        exported ImageFolder + parquet    data/reports/     validation reports
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from facedata import params as params_mod

PROJECT_ENV = "FACEDATA_PROJECT"


class ProjectError(RuntimeError):
    pass


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest directory at or above `start` (default: $FACEDATA_PROJECT or cwd) holding params.yaml."""
    here = Path(start or os.environ.get(PROJECT_ENV) or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file():
            return candidate
    raise ProjectError(
        f"no params.yaml in {here} or above: run this inside a facedata project, or create one with "
        "`facedata init DIR`"
    )


@dataclass
class Project:
    root: Path

    @classmethod
    def find(cls, start: str | os.PathLike | None = None) -> Project:
        project = cls(find_root(start))
        project.activate()
        return project

    def activate(self) -> None:
        """Apply the project's environment settings: `models.dir` from params.yaml becomes $FACEDATA_MODELS_DIR
        (unless that is set), so every stage, worker process and evaluation finds the same weights. Read
        leniently: a broken params.yaml is reported by whatever loads the params, not here."""
        import yaml

        from facedata.models import MODELS_DIR_ENV

        try:
            raw = yaml.safe_load((self.root / "params.yaml").read_text(encoding="utf-8")) or {}
            models_dir = (raw.get("models") or {}).get("dir") or ""
        except (OSError, yaml.YAMLError, AttributeError):
            return
        if models_dir and not os.environ.get(MODELS_DIR_ENV):
            os.environ[MODELS_DIR_ENV] = str(self.resolve(models_dir))

    @cached_property
    def params(self) -> dict:
        return params_mod.load(self.root / "params.yaml")

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path from params.yaml: relative paths are relative to the project root."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else (self.root / p)

    def relative(self, path: str | os.PathLike) -> str:
        """How a path is recorded in manifests: relative to the root when possible, so clones agree."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return Path(os.path.relpath(p, self.root)).as_posix()
        except ValueError:
            return p.as_posix()

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def metrics_dir(self) -> Path:
        return self.data / "metrics"

    @property
    def reports_dir(self) -> Path:
        return self.data / "reports"

    @property
    def dataset_dir(self) -> Path:
        return self.data / "dataset"

    @property
    def video_index_dir(self) -> Path:
        """Where `facedata index-video` writes the project's index, and the review app reads it."""
        return self.data / "video_index"

    def metrics_path(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.json"
