"""`facedata train ...`: train models on the project's dataset.

Subcommands live in modules named `facedata.commands.train_<area>`, each exporting `TRAIN_COMMANDS`."""

from __future__ import annotations

import click

from facedata.commands import collect_subcommands


@click.group()
def train() -> None:
    """Train models on the project's dataset (see the subcommands)."""


COMMANDS = [collect_subcommands(train, "train_", "TRAIN_COMMANDS")]
