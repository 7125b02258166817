"""The `facedata` command line (click). `main` is the entry point; one module per command group."""

from facedata.cli.main import main

__all__ = ["main"]
