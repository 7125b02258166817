"""`facedata identify`: who is in each photo, with the project's trained recognizer or a gallery folder."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from facedata.cli.common import project_params


@click.command("identify")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--project", type=click.Path(file_okay=False), default=None, help="project directory (default: here)"
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a trained model.pt (default: the project's data/models/recognizer/model.pt)",
)
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="instead of a model: a folder <identity>/<photos>, matched by the embedding model's own distance",
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help="cosine similarity a face needs to be named (default: the model's own, or identify.gallery_threshold)",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), default=None, help="also write the result here"
)
@click.option("--workers", type=int, default=None, help="worker processes (default: params detect.workers)")
def identify(images, project, model_path, gallery, threshold, json_out, workers) -> None:
    """Name the people in each IMAGE, open-set: a face whose best match scores under the threshold is
    `unknown`.

    \b
    Examples:
      facedata identify photo.jpg                          # the project's trained model (stage train)
      facedata identify a.jpg b.jpg --json who.json
      facedata identify photo.jpg --gallery known_people/  # no model: <identity>/<photos>
    --json writes {"images": [{"path", "faces": [{"box": [x1, y1, x2, y2], "identity", "confidence"}]}]};
    confidence is the cosine similarity to the named identity (or, for `unknown`, to the nearest one).
    Exit code 1 when an image could not be read.
    """
    from tqdm import tqdm

    from facedata.train.identify import identify_files

    params, where = project_params(project)
    n_workers = params["detect"]["workers"] if workers is None else workers
    g, root = load_gallery(params, where, project, model_path, gallery, threshold, n_workers, "identify")
    with (
        gallery_errors(),
        tqdm(total=len(images), desc="identify", unit="img", file=sys.stderr, disable=None) as bar,
    ):
        results = list(identify_files(g, images, params["detect"], n_workers, root, progress=bar))
    for r in results:
        if r["status"] == "error":
            click.echo(f"{r['path']}: unreadable ({r['reason']})")
            continue
        click.echo(f"{r['path']}: {len(r['faces'])} face(s)")
        for f in r["faces"]:
            flag = "" if f["quality_ok"] else "  (low quality)"
            click.echo(f"  {f['identity']:<24} {f['confidence']:.3f}  box {f['box']}{flag}")
    out = {"model": g.source, "threshold": round(g.threshold, 6), "images": results}
    if json_out:
        from facedata import atomic

        atomic.write_json(Path(json_out), out)
        click.echo(f"wrote {json_out}", err=True)
    sys.exit(1 if any(r["status"] == "error" for r in results) else 0)


@contextlib.contextmanager
def gallery_errors():
    """A gallery or model that cannot be used is a usage problem: say why, exit 2."""
    from facedata.manifest import ManifestError
    from facedata.models import ModelError
    from facedata.train.export import ModelFileError
    from facedata.train.identify import IdentifyError

    try:
        yield
    except (IdentifyError, ModelFileError, ModelError, ManifestError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


def load_gallery(
    params, where, project, model_path, gallery, threshold, workers, command, allow_empty=False, key="identify"
):
    """(Gallery, project root or None) for `--model PATH`, `--gallery DIR` or, with neither, the project's
    trained recognizer (`data/models/recognizer/model.pt`); shared by `identify` and `index-video`. A gallery's
    threshold defaults to params `<key>.gallery_threshold`."""
    from tqdm import tqdm

    from facedata.project import Project, ProjectError
    from facedata.train.export import MODEL
    from facedata.train.identify import from_folder, from_model

    if model_path and gallery:
        raise click.UsageError("give --model or --gallery, not both")
    root = None
    if not model_path and not gallery:
        try:
            root = Project.find(project).root
        except ProjectError as exc:
            raise click.UsageError(f"{exc}; or pass --model PATH or --gallery DIR") from exc
        model_path = root / "data" / "models" / "recognizer" / MODEL
        if not model_path.is_file():
            raise click.UsageError(
                f"no trained model at {model_path}: run `dvc repro train` (or `facedata build`) in {root}, "
                "or pass --gallery DIR (a folder <identity>/<photos>)"
            )
    with gallery_errors():
        if gallery:
            t = params[key]["gallery_threshold"] if threshold is None else threshold
            with tqdm(desc="gallery", unit="img", file=sys.stderr, disable=None) as bar:
                g = from_folder(gallery, params["detect"], params["embed"], t, workers, bar, allow_empty)
            for note in g.notes:
                click.echo(f"warning: {note}", err=True)
        else:
            g = from_model(model_path, params["embed"], threshold)
    click.echo(
        f"{command}: {len(g.classes)} identities from {g.source}, threshold {g.threshold:.4f}; params: {where}",
        err=True,
    )
    return g, root


COMMANDS = [identify]
