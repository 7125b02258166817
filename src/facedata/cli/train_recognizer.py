"""`facedata train recognizer`: train the project's recognizer by hand (the `train` stage runs the same code
with params.yaml alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facedata.cli.common import out_option, project_params, set_option


@click.command("recognizer")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@out_option("the stage's data/models/recognizer")
@click.option(
    "--mode", type=click.Choice(["head", "finetune", "centroid"]), default=None, help="default: train.mode"
)
@click.option("--epochs", type=int, default=None, help="default: train.epochs")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="default: train.device")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue from the last checkpoint")
@set_option()
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def train_recognizer(root, out_dir, mode, epochs, device, resume, set_values, as_json) -> None:
    """Train a recognizer for the dataset's identities: a margin head (CosFace/ArcFace) on the frozen embeddings
    (mode head, CPU minutes), the dlib ResNet end to end on the crops (mode finetune, for a GPU), or none
    (mode centroid: mean embeddings). Writes model.pt, model.onnx, MODEL_CARD.md and model_card.json to the
    output folder, the per-epoch history to data/plots/train.csv, metrics to <out>/metrics.json.

    \b
    `dvc repro train` (or `facedata build`) does the same from params.yaml; options and --set here make a
    model params.yaml does not describe, so set the same values there to keep DVC's record true. A killed
    run resumes from data/cache/train/checkpoint.pt. Example, on a GPU machine:
      facedata train recognizer --mode finetune --epochs 10 --device cuda
    """
    from tqdm import tqdm

    from facedata import atomic
    from facedata.manifest import ManifestError
    from facedata.models import ModelError
    from facedata.project import Project, ProjectError
    from facedata.train.config import TrainConfig
    from facedata.train.crops import CropError
    from facedata.train.data import TrainDataError
    from facedata.train.recognizer import train_project

    try:
        project = Project.find(root)
    except ProjectError as exc:
        raise click.UsageError(str(exc)) from exc
    params, _ = project_params(str(project.root), set_values)
    cfg = TrainConfig.from_params(params["train"], mode=mode, epochs=epochs, device=device)
    out = Path(out_dir) if out_dir else project.data / "models" / "recognizer"
    checkpoint = project.data / "cache" / "train" / "checkpoint.pt"
    if not resume:
        checkpoint.unlink(missing_ok=True)
    try:
        metrics = train_project(
            project.root,
            params,
            out,
            checkpoint,
            project.data / "plots" / "train.csv",
            progress=lambda total: tqdm(total=total, desc="train", unit="step", file=sys.stderr),
            log=lambda m: click.echo(m, err=True),
            cfg=cfg,
        )
    except (TrainDataError, CropError, ManifestError, ModelError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    atomic.write_json(out / "metrics.json", metrics)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    b = metrics["baseline"]
    click.echo(
        f"{metrics['mode']}: {metrics['n_classes']} identities, {metrics['n_train']} training faces, "
        f"{metrics['epochs_run']} epochs in {metrics['train_seconds']} s ({metrics['device']})\n"
        f"test top-1 {metrics['top1']} (embedding distance {b['top1']}), TAR @ FAR 1e-2 "
        f"{metrics['tar_at_far_1e-2']} ({b['tar_at_far_1e-2']}), 1e-3 {metrics['tar_at_far_1e-3']} "
        f"({b['tar_at_far_1e-3']}); impostors: {metrics['open_set_protocol']}\nmodel: {metrics['model']}"
    )


TRAIN_COMMANDS = [train_recognizer]
