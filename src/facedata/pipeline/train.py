"""Stage `train`: a recognizer for the dataset's identities (`facedata.train.recognizer`), written to
data/models/recognizer with its per-epoch history as a DVC plot; the checkpoint lives in data/cache/train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from facedata.pipeline.runner import StageContext, StageFailed

if TYPE_CHECKING:
    from facedata.models import ModelId
    from facedata.project import Project

MODEL_DIR = ("models", "recognizer")
CHECKPOINT = ("cache", "train", "checkpoint.pt")
PLOTS = ("plots", "train.csv")


def model_identity(params: dict, project: Project) -> ModelId:
    """The embedding model the recognizer is trained on (fine-tuning starts from its weights)."""
    from facedata.embed import embedder_identity

    return embedder_identity(params["embed"], project.root)


def run(ctx: StageContext) -> dict:
    from facedata.train.crops import CropError
    from facedata.train.data import TrainDataError
    from facedata.train.recognizer import RUN_ONLY, train_project

    data = ctx.project.data
    try:
        metrics = train_project(
            ctx.root,
            ctx.params,
            data.joinpath(*MODEL_DIR),
            data.joinpath(*CHECKPOINT),
            data.joinpath(*PLOTS),
            progress=lambda total: ctx.progress(total=total, desc="train", unit="step"),
            log=lambda m: print(f"facedata train: {m}", flush=True),
        )
    except (TrainDataError, CropError) as exc:
        raise StageFailed(str(exc)) from exc
    metrics["model"] = ctx.project.relative(metrics["model"])
    ctx.run.update({k: metrics.pop(k) for k in RUN_ONLY if k in metrics})
    return metrics
