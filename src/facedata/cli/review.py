"""`facedata review`: the local web app to check and correct a build's faces (see docs/review.md)."""

from __future__ import annotations

import sys

import click


@click.command("review")
@click.option(
    "--project", type=click.Path(file_okay=False), default=None, help="project directory (default: here)"
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (others can reach it!)")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--reviewer", default=None, help="your name in the decisions (default: your login name)")
def review(project, host, port, reviewer) -> None:
    """Open the project's current build for review in the browser: per name, its faces, the ones in doubt
    first; reject, move, merge, split, name, undo; a "same person?" queue. Every decision is appended to
    data/manifests/reviews.parquet and applied by the next build (`facedata build`).

    \b
    Examples:
      facedata review                       # http://127.0.0.1:8765
      facedata review --reviewer ana --port 9000
    """
    import getpass

    from facedata.project import Project, ProjectError
    from facedata.review.app import serve
    from facedata.review.decisions import ensure

    try:
        proj = Project.find(project)
        model = proj.params["embed"]["model"]
    except (ProjectError, ValueError) as exc:
        click.echo(f"facedata review: {exc}", err=True)
        sys.exit(2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can see the project's images "
            "(the decisions still need the page's CSRF token)",
            err=True,
        )
    try:
        who = reviewer or getpass.getuser()
    except (KeyError, OSError):
        who = "reviewer"
    ensure(proj.root)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"facedata review: http://{shown}:{port}/ (reviewer {who}); Ctrl-C to stop")
    serve(proj.root, host, port, who, model)


COMMANDS = [review]
