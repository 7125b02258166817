"""`facedata evaluate clustering`: the project's detect / embed / cluster on a labelled folder, measured."""

from __future__ import annotations

import json
import sys

import click

from facedata.commands import json_option, project_params, set_option


@click.command("clustering")
@click.option(
    "--labeled-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="a folder <identity>/<images>: the sub-folder names are the ground truth",
)
@click.option(
    "--simulate-crawl",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="also simulate crawls: per identity with >= 5 images, add this fraction of distractor images from "
    "other identities, keep the dominant cluster, report crawl_precision / crawl_recall",
)
@click.option("--seed", type=int, default=0, show_default=True, help="shuffles the input order and distractors")
@json_option("write the metrics here")
@click.option(
    "--split",
    type=click.Choice(["all", "tune", "test"]),
    default="all",
    show_default=True,
    help="measure every identity, or one of two halves (by a seeded hash of the name): tune on one, report the "
    "other",
)
@click.option("--split-seed", type=int, default=0, show_default=True, help="which halves --split makes")
@set_option()
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="where detections and embeddings are cached (default $FACEDATA_CACHE/evaluate or ~/.cache/facedata)",
)
def clustering(labeled_dir, simulate_crawl, seed, json_out, split, split_seed, set_values, cache_dir) -> None:
    """Cluster a labelled folder with the project's detect / embed / cluster params and report the metrics.

    \b
    Detections and embeddings are cached per folder, so evaluating other clustering params is fast. Faces go
    into clustering in an order shuffled with --seed; images without a usable face count as singletons
    (n_no_face). Example, tuning on one half of LFW and reporting the other:
      facedata evaluate clustering --labeled-dir ../shared/data/faces/lfw --split tune --json tune.json
      facedata evaluate clustering --labeled-dir ../shared/data/faces/lfw --split test --simulate-crawl 0.3
    """
    from tqdm import tqdm

    from facedata import atomic
    from facedata.cluster.evaluate import EvaluationError, evaluate, json_view, prepare

    params, where = project_params(set_values=set_values)
    click.echo(f"params: {where}", err=True)
    try:
        ls = prepare(labeled_dir, params, cache_dir)

        def progress(seq):
            return tqdm(seq, desc="simulated crawls", unit="name", file=sys.stderr)

        result = evaluate(ls, params["cluster"], seed, simulate_crawl, split, split_seed, progress)
    except EvaluationError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    out = json_view(result)
    if json_out:
        atomic.write_json(json_out, out)
    worst = sorted(result.get("crawl_identities", []), key=lambda r: r[2] + r[3])[:5]
    for name, n, prec, rec in worst:
        click.echo(f"  crawl {name} ({n} images): precision {prec:.3f} recall {rec:.3f}", err=True)
    click.echo(json.dumps(out, indent=2))


EVALUATE_COMMANDS = [clustering]
