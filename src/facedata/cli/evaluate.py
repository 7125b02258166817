"""`facedata evaluate ...`: quality measurements that use the params of the project they run in.

Subcommands live in modules named `facedata.cli.eval_<area>`, each exporting `EVALUATE_COMMANDS`, so
each area (faces, clustering, 3D) keeps its evaluation code to itself."""

from __future__ import annotations

import click

from facedata.cli.common import add_commands


@click.group()
def evaluate() -> None:
    """Measure quality: verification, detection, clustering, 3D landmarks."""


COMMANDS = [add_commands(evaluate, "EVALUATE_COMMANDS", "eval_")]
