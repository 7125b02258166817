"""What the CLI's command modules share. Each module of `facedata.cli` may define `COMMANDS`, a list of click
commands or groups, which `facedata.cli.main` registers on the `facedata` command. Keeping each area's commands
in its own module keeps `main.py` small; a module's imports should stay light (heavy libraries are imported
inside the commands).

Two groups collect subcommands from several modules: `facedata evaluate` (modules `eval_<area>` exporting
`EVALUATE_COMMANDS`) and `facedata train` (modules `train_<area>` exporting `TRAIN_COMMANDS`)."""

from __future__ import annotations

import copy
import importlib
import pkgutil
from pathlib import Path

import click


def add_commands(group: click.Group, attr: str, prefix: str = "") -> click.Group:
    """Add to `group` every command listed in `attr` by the modules of `facedata.cli` named `<prefix>*`."""
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith(prefix) and info.name not in ("main", "common"):
            module = importlib.import_module(f"facedata.cli.{info.name}")
            for command in getattr(module, attr, []):
                group.add_command(command)
    return group


def json_option(help: str = "also write the result to this JSON file"):  # noqa: A002 - click's own name
    """`--json FILE` (parameter `json_out`), the same on every command that reports a result."""
    return click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help=help)


def wait_option():
    """`--wait SECONDS` (parameter `wait`): how long to wait for another writer of the project to finish."""
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help="when another command is writing this project's data, wait this long for it (0: refuse at once)",
    )


def exit_for(n_failed: int) -> None:
    """The exit code that says whether everything succeeded: 0 all ok, 1 some (or all) inputs failed."""
    import sys

    sys.exit(1 if n_failed else 0)


def out_option(default: str):
    """`--out DIR` (parameter `out_dir`): where a command writes its files; `default` says where otherwise."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        default=None,
        help=f"output folder (default: {default})",
    )


def set_option():
    """`--set SECTION.KEY=VALUE` (parameter `set_values`, repeatable): a parameter override for this run only."""
    return click.option(
        "--set",
        "set_values",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="override a parameter for this run, e.g. --set embed.jitter=8 (repeatable)",
    )


def project_params(root: str | None = None, set_values: tuple[str, ...] = ()) -> tuple[dict, str]:
    """(params, where they came from) for a command: the project's params.yaml found from `root` (or the
    working directory), else every default; then the `--set` overrides, validated. A named root that is not a
    project, a broken params.yaml or a bad override is a usage error (exit 2) that says what to fix."""
    import yaml

    from facedata.params import ParamsError, defaults, with_defaults
    from facedata.project import Project, ProjectError

    try:
        project = Project.find(root)
        params, where = project.params, str(project.root / "params.yaml")
    except ProjectError as exc:
        if root:
            raise click.UsageError(str(exc)) from exc
        params, where = defaults(), "defaults (no params.yaml here or above)"
    except ParamsError as exc:
        raise click.UsageError(str(exc)) from exc
    if not set_values:
        return params, where
    params = copy.deepcopy(params)  # the project's params are cached: overrides must not leak into them
    for item in set_values:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            expected = f"{item!r}: expected SECTION.KEY=VALUE, e.g. cluster.threshold=0.5"
            raise click.BadParameter(expected, param_hint="--set")
        section, _, leaf = key.partition(".")
        params.setdefault(section, {})[leaf] = yaml.safe_load(raw)
    try:
        params = with_defaults(params)
    except ParamsError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    return params, f"{where} with {', '.join(set_values)}"
