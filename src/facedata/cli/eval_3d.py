"""`facedata evaluate 3d --aflw2000 DIR`: 68-landmark NME on AFLW2000-3D, our own detector choosing the crop."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facedata.cli.common import json_option


@click.command("3d")
@click.option(
    "--aflw2000",
    "aflw_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="folder of AFLW2000-3D imageNNNNN.jpg + imageNNNNN.mat pairs",
)
@json_option("also write the results here")
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a regressor checkpoint from `facedata train 3d` (default: params recon3d.weights / 3DDFA_V2)",
)
@click.option("--root", type=click.Path(file_okay=False), default=None, help="take params from this project")
def evaluate_3d(aflw_dir, json_out, weights, root) -> None:
    """NME (%) of the 68 landmarks, 2D, normalised by sqrt(w*h) of the ground-truth landmark box, per yaw bin
    [0,30) [30,60) [60,90] and overall, plus the median time per face (regression only).

    The detector of params `detect` picks the face (the primary one when it finds several); the crop recipe
    is params `recon3d`. Keys of --json: nme_mean, nme_by_yaw, n_images, n_failed, ms_per_face (and
    per_image, failed, nme_balanced, n_evaluated)."""
    from tqdm import tqdm

    from facedata import atomic
    from facedata.cli.common import project_params
    from facedata.faces.detect import make_detector
    from facedata.models import ModelError
    from facedata.recon3d.evaluate import DatasetError, evaluate, load_aflw2000
    from facedata.recon3d.regress import Regressor, RegressorConfig

    params, _ = project_params(root)
    try:
        samples = load_aflw2000(aflw_dir)
        detector = make_detector(params["detect"])
        regressor = Regressor(RegressorConfig.from_params(params["recon3d"], weights))
    except (DatasetError, ModelError, FileNotFoundError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    result = evaluate(
        samples, detector, regressor, progress=lambda it: tqdm(it, desc="evaluate 3d", unit="img", file=sys.stderr)
    )
    if json_out:
        atomic.write_json(Path(json_out), result)
    bins = ", ".join(f"{k} {v if v is not None else '-'}" for k, v in result["nme_by_yaw"].items())
    click.echo(
        f"AFLW2000-3D ({result['n_images']} images, {result['n_failed']} failed): mean NME {result['nme_mean']} %"
        f" | by yaw: {bins} | {result['ms_per_face']} ms/face"
    )
    if json_out:
        click.echo(f"wrote {json_out}")


EVALUATE_COMMANDS = [evaluate_3d]
