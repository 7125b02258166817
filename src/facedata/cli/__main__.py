"""`python -m facedata.cli ...`: the same as the `facedata` command."""

from facedata.cli.main import main

main()
