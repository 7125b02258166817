"""`facedata train 3d`: fine-tune the 3D regressor on the project's dataset faces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facedata.cli.common import out_option


@click.command("3d")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="project directory (default: here)")
@out_option("data/models/recon3d in the project")
@click.option("--steps", type=int, default=None, help="optimiser steps (default: params train3d.steps)")
@click.option("--batch-size", type=int, default=None, help="faces per step (default: train3d.batch_size)")
@click.option("--lr", type=float, default=None, help="learning rate (default: train3d.lr)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="default: train3d.device")
@click.option("--max-faces", type=int, default=None, help="use at most this many labelled faces (quick trials)")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue from <out>/checkpoint.pt")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def train_3d(root, out_dir, steps, batch_size, lr, device, max_faces, resume, as_json) -> None:
    """Fine-tune the 3D regressor on the dataset's faces, with pseudo-labels from the dense fits of stage
    reconstruct3d. A share of the photos (train3d.val_fraction; a video's frames count as one photo) is held
    out and only scored, so the reported held-out NME is on faces it never trained on. Writes <out>/model.pt
    (use it with `facedata face3d --weights` or params recon3d.weights), <out>/checkpoint.pt (resume point)
    and <out>/train3d.json (metrics). A GPU is used when present (device auto)."""
    import shutil

    from tqdm import tqdm

    from facedata.manifest import ManifestError
    from facedata.project import Project, ProjectError
    from facedata.recon3d.train import CHECKPOINT, Train3DConfig, TrainError
    from facedata.recon3d.train import train as run_train

    try:
        project = Project.find(root)
    except ProjectError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    params = project.params
    cfg = Train3DConfig.from_params(
        params["train3d"],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        device=device,
        init_weights=params["recon3d"].get("weights") or "",
    )
    out = Path(out_dir) if out_dir else project.data / "models" / "recon3d"
    if not resume and (out / CHECKPOINT).exists():
        shutil.rmtree(out)
    try:
        metrics = run_train(
            project.root,
            out,
            cfg,
            resume=resume,
            max_faces=max_faces,
            progress=lambda total: tqdm(total=total, desc="train 3d", unit="step", file=sys.stderr),
            log=lambda m: click.echo(m, err=True),
        )
    except (TrainError, ManifestError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        held_out = (
            f"held-out NME {metrics['val_nme_before']} -> {metrics['val_nme_after']} % on {metrics['n_val']} "
            "faces never trained on"
            if metrics["n_val"]
            else "no held-out faces (raise train3d.val_fraction to measure on faces it does not train on)"
        )
        click.echo(
            f"trained {metrics['steps']} steps on {metrics['n_train']} faces ({metrics['seconds']} s, "
            f"{metrics['device']}): {held_out}; training faces {metrics['train_nme_before']} -> "
            f"{metrics['train_nme_after']} % (NME against the dense-fit labels, one network pass)\n"
            f"model: {metrics['model']}"
        )


TRAIN_COMMANDS = [train_3d]
