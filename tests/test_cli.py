"""Every command answers --help; the CLI is wired to the package."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from facedata.cli import main


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [(), *all_commands(main)])
def test_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_core_commands_present():
    names = set(main.commands)
    assert {"init", "build", "stage", "lineage", "params", "models", "summary", "evaluate", "dvc-yaml"} <= names


def test_params_lists_every_key():
    from facedata.params import SPEC

    out = CliRunner().invoke(main, ["params"]).output
    assert all(key in out for key in SPEC)


def test_outside_a_project_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACEDATA_PROJECT", raising=False)
    result = CliRunner().invoke(main, ["summary"])
    assert result.exit_code == 2
    assert "facedata init" in result.output
