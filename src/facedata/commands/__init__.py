"""CLI command modules. Each module here may define `COMMANDS`, a list of click commands or groups, which
`facedata.cli` registers on the `facedata` command. Keeping each area's commands in its own module keeps
`cli.py` small; a module's imports should stay light (heavy libraries are imported inside the commands).

Two groups collect subcommands from several modules: `facedata evaluate` (modules `eval_<area>` exporting
`EVALUATE_COMMANDS`) and `facedata train` (modules `train_<area>` exporting `TRAIN_COMMANDS`)."""

from __future__ import annotations

import importlib
import pkgutil

import click


def collect_subcommands(group: click.Group, prefix: str, attr: str) -> click.Group:
    """Add to `group` every command listed in `attr` by the modules of this package named `<prefix>*`."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith(prefix):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for command in getattr(module, attr, []):
                group.add_command(command)
    return group
