"""`facedata evaluate clustering`: the project's detect / embed / cluster on a labelled folder, measured."""

from __future__ import annotations

import json
import sys

import click

from facedata.cli.common import json_option, project_params, set_option


@click.command("clustering")
@click.option(
    "--labeled-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="a folder <identity>/<images>: the sub-folder names are the ground truth",
)
@click.option(
    "--video",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="instead of a folder: a video whose sampled frames are clustered (needs --labels)",
)
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="with --video: CSV frame_index,x1,y1,x2,y2,label of hand-labelled faces (each box counts once)",
)
@click.option(
    "--simulate-crawl",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="also simulate crawls: per identity with >= 5 images, add this fraction of distractor images from "
    "other identities, keep the dominant cluster, report crawl_precision / crawl_recall",
)
@click.option(
    "--per-name",
    is_flag=True,
    help="also the dataset view: each identity queried by its name, the precision and recall of the images kept "
    "for it, and how many clusters a reviewer would merge to complete it",
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
@click.option(
    "--folds",
    type=click.IntRange(0, None),
    default=0,
    show_default=True,
    help="split the people into this many balanced folds instead of hash halves: --split test is fold --fold, "
    "tune the others (cross-validation over people)",
)
@click.option("--fold", type=click.IntRange(0, None), default=0, show_default=True, help="the test fold")
@set_option()
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="where detections and embeddings are cached (default $FACEDATA_CACHE/evaluate or ~/.cache/facedata)",
)
def clustering(
    labeled_dir,
    video,
    labels_csv,
    simulate_crawl,
    per_name,
    seed,
    json_out,
    split,
    split_seed,
    folds,
    fold,
    set_values,
    cache_dir,
) -> None:
    """Cluster a labelled folder (or a video with hand-labelled faces) with the project's detect / embed /
    cluster params and report the metrics.

    \b
    Detections and embeddings are cached per folder, so evaluating other clustering params is fast. Faces go
    into clustering in an order shuffled with --seed; images without a usable face count as singletons
    (n_no_face). Example, tuning on one half of LFW and reporting the other:
      facedata evaluate clustering --labeled-dir ../shared/data/faces/lfw --split tune --json tune.json
      facedata evaluate clustering --labeled-dir ../shared/data/faces/lfw --split test --simulate-crawl 0.3
    Cross-validation over people (two balanced folds, report fold 1) and the per-name dataset view:
      facedata evaluate clustering --labeled-dir ../shared/data/faces/webfaces --folds 2 --fold 1 --split test
      --per-name
    A video (frames sampled as params.yaml's ingest section says, e.g. --set ingest.video_fps=10):
      facedata evaluate clustering --video clip.mp4 --labels clip_faces.csv
    """
    from tqdm import tqdm

    from facedata import atomic
    from facedata.cluster.evaluate import EvaluationError, evaluate, evaluate_faces, json_view
    from facedata.pipeline.evalcache import prepare, prepare_video

    if (labeled_dir is None) == (video is None):
        raise click.UsageError("give exactly one of --labeled-dir and --video")
    if video is not None and (labels_csv is None or simulate_crawl is not None or per_name or split != "all"):
        raise click.UsageError("--video needs --labels, and takes no --simulate-crawl, --per-name or --split")
    params, where = project_params(set_values=set_values)
    click.echo(f"params: {where}", err=True)
    try:
        if video is not None:
            out = json_view(
                evaluate_faces(prepare_video(video, labels_csv, params, cache_dir), params["cluster"], seed)
            )
            result = {}
        else:
            ls = prepare(labeled_dir, params, cache_dir)

            def progress(seq):
                return tqdm(seq, desc="simulated crawls", unit="name", file=sys.stderr)

            result = evaluate(
                ls, params["cluster"], seed, simulate_crawl, split, split_seed, progress, folds, fold, per_name
            )
            out = json_view(result)
    except EvaluationError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    if json_out:
        atomic.write_json(json_out, out)
    worst = sorted(result.get("crawl_identities", []), key=lambda r: r[2] + r[3])[:5]
    for name, n, prec, rec in worst:
        click.echo(f"  crawl {name} ({n} images): precision {prec:.3f} recall {rec:.3f}", err=True)
    click.echo(json.dumps(out, indent=2))


EVALUATE_COMMANDS = [clustering]
