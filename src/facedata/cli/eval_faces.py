"""`facedata evaluate verification` and `facedata evaluate detection`: the recognizer and the detector,
measured with the `detect` and `embed` params of the project they run in (the defaults outside a project),
with any `--set` overrides."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from facedata.cli.common import json_option, project_params, set_option


def _write_json(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    if out:
        from facedata import atomic

        atomic.write_json(Path(out), result)
        click.echo(f"wrote {out}", err=True)
    click.echo(text)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None)


@click.command("verification")
@click.option(
    "--pairs",
    "pairs_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="LFW-style pairs file",
)
@click.option(
    "--root",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="folder of Name/Name_%04d.jpg images",
)
@json_option()
@click.option("--limit", type=int, default=0, help="use only the first N pairs (quick checks; 0 = all)")
@click.option("--workers", type=int, default=None, help="worker processes (default: params detect.workers)")
@set_option()
def verification(pairs_file, root, json_out, limit, workers, set_values) -> None:
    """Face verification accuracy on LFW-style pairs (10-fold threshold selection) and TAR at FAR 1e-3.

    \b
    Lines are `Name i j` (same person) or `Name1 i Name2 j` (different people); images are
    ROOT/Name/Name_%04d.jpg. Each image's centred face is detected and embedded with this project's
    `detect` and `embed` params. A pair with an unreadable image or no face counts as an error.
    Example:
      facedata evaluate verification --pairs ../shared/data/faces/lfw/pairs_shared.txt \\
          --root ../shared/data/faces/lfw --json verification.json
      facedata evaluate verification ... --set embed.jitter=8     # the same with another setting
    """
    import numpy as np

    from facedata.faces.analyze import labelled_embeddings
    from facedata.faces.evaluate import PairsError, parse_pairs, verification_metrics
    from facedata.models import ModelError

    params, where = project_params(set_values=set_values)
    try:
        pairs = parse_pairs(pairs_file, limit)
    except PairsError as exc:
        raise click.ClickException(str(exc)) from exc
    files = sorted({p.a for p in pairs} | {p.b for p in pairs})
    click.echo(
        f"verification: {len(pairs)} pairs, {len(files)} images; detector {params['detect']['detector']}, "
        f"model {params['embed']['model']} (flip {params['embed']['flip']}, "
        f"align views {params['embed']['align_views'] or 'none'}, jitter {params['embed']['jitter']}); "
        f"params: {where}",
        err=True,
    )
    emb: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    n_workers = params["detect"]["workers"] if workers is None else workers
    try:
        with _progress(len(files), "verification") as bar:
            results = labelled_embeddings(
                [Path(root) / f for f in files], params["detect"], params["embed"], n_workers, progress=bar
            )
            for rel, (res, vec) in zip(files, results, strict=True):
                if vec is None:
                    failures[rel] = res.reason or ("no face" if not res.faces else "no centred face")
                else:
                    emb[rel] = vec
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    seconds = time.perf_counter() - t0
    dist = np.array([np.linalg.norm(emb[p.a] - emb[p.b]) if p.a in emb and p.b in emb else np.inf for p in pairs])
    result = verification_metrics(dist, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    result.update(
        {
            "n_images": len(files),
            "n_failed_images": len(failures),
            "failed_images": dict(sorted(failures.items())[:50]),
            "detector": params["detect"]["detector"],
            "model": params["embed"]["model"],
            "flip": params["embed"]["flip"],
            "align_views": params["embed"]["align_views"],
            "jitter": params["embed"]["jitter"],
            "seconds": round(seconds, 1),
        }
    )
    _write_json(result, json_out)


@click.command("detection")
@click.option(
    "--labeled-dir", required=True, type=click.Path(exists=True, file_okay=False), help="folder of labelled images"
)
@json_option()
@click.option("--limit", type=int, default=0, help="use only the first N images, sorted by path (0 = all)")
@click.option("--workers", type=int, default=None, help="worker processes (default: params detect.workers)")
@set_option()
def detection(labeled_dir, json_out, limit, workers, set_values) -> None:
    """Share of images in which the labelled face is found, with this project's `detect` params.

    \b
    The label is a box from LABELED_DIR/labels.csv (columns path,x1,y1,x2,y2; IoU >= 0.5) when present,
    otherwise the face at the image centre (LFW's convention). Also reports how many of the found faces pass
    the quality filters (`usable_rate`). Example:
      facedata evaluate detection --labeled-dir ../shared/data/faces/lfw --json detection.json
    """
    import numpy as np

    from facedata.faces.analyze import analyze_files
    from facedata.faces.evaluate import labelled_face_index, labelled_images
    from facedata.models import ModelError

    params, where = project_params(set_values=set_values)
    images, labels = labelled_images(labeled_dir)
    if limit:
        images = images[:limit]
    if not images:
        raise click.ClickException(f"no images under {labeled_dir}")
    rule = "labels.csv boxes" if labels else "the centred face"
    click.echo(
        f"detection: {len(images)} images, label = {rule}; "
        f"detector {params['detect']['detector']}; params: {where}",
        err=True,
    )
    found = usable = failed = n_faces = 0
    missed: list[str] = []
    t0 = time.perf_counter()
    n_workers = params["detect"]["workers"] if workers is None else workers
    try:
        with _progress(len(images), "detection") as bar:
            for path, res in zip(
                images, analyze_files(images, params["detect"], None, n_workers, progress=bar), strict=True
            ):
                rel = path.relative_to(labeled_dir).as_posix()
                if res.status == "error":
                    failed += 1
                    missed.append(f"{rel}: {res.reason}")
                    continue
                n_faces += len(res.faces)
                boxes = np.array([f.box for f in res.faces]).reshape(-1, 4)
                i = labelled_face_index(boxes, res.width, res.height, labels.get(rel))
                if i >= 0:
                    found += 1
                    usable += res.faces[i].ok
                else:
                    missed.append(rel)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    n = len(images)
    result = {
        "detection_rate": round(found / n, 5),
        "usable_rate": round(usable / n, 5),
        "n_images": n,
        "n_found": found,
        "n_failed_images": failed,
        "faces_per_image": round(n_faces / max(1, n - failed), 3),
        "label_rule": rule,
        "detector": params["detect"]["detector"],
        "seconds": round(time.perf_counter() - t0, 1),
        "missed": missed[:50],
    }
    _write_json(result, json_out)


EVALUATE_COMMANDS = [verification, detection]
