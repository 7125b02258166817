"""CLI command modules. Each module here may define `COMMANDS`, a list of click commands or groups, which
`facedata.cli` registers on the `facedata` command. Keeping each area's commands in its own module keeps
`cli.py` small; a module's imports should stay light (heavy libraries are imported inside the commands)."""
