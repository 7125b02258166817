"""`facedata evaluate ...`: quality measurements that use the params of the project they run in.

Subcommands live in modules named `facedata.commands.eval_<area>`, each exporting `EVALUATE_COMMANDS`, so
each area (faces, clustering, 3D) keeps its evaluation code to itself."""

from __future__ import annotations

import importlib
import pkgutil

import click


@click.group()
def evaluate() -> None:
    """Measure quality: verification, detection, clustering, 3D landmarks."""


def _register() -> None:
    from facedata import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("eval_"):
            module = importlib.import_module(f"facedata.commands.{info.name}")
            for command in getattr(module, "EVALUATE_COMMANDS", []):
                evaluate.add_command(command)


_register()

COMMANDS = [evaluate]
