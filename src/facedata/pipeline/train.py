"""Stage `train`: a recognizer for the dataset's identities (`facedata.train.recognizer`), written to
data/models/recognizer with its per-epoch history as a DVC plot; the checkpoint lives in data/cache/train."""

from __future__ import annotations

from facedata.pipeline.runner import StageContext, StageFailed

MODEL_DIR = ("models", "recognizer")
CHECKPOINT = ("cache", "train", "checkpoint.pt")
PLOTS = ("plots", "train.csv")


def run(ctx: StageContext) -> dict:
    from facedata.train.crops import CropError
    from facedata.train.data import TrainDataError
    from facedata.train.recognizer import train_project

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
    return metrics
