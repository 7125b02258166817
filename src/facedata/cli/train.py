"""`facedata train ...`: train models on the project's dataset.

Subcommands live in modules named `facedata.cli.train_<area>`, each exporting `TRAIN_COMMANDS`."""

from __future__ import annotations

import click

from facedata.cli.common import add_commands


@click.group()
def train() -> None:
    """Train models on the project's dataset (see the subcommands)."""


COMMANDS = [add_commands(train, "TRAIN_COMMANDS", "train_")]
