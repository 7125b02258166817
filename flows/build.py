"""Prefect entry point for the build: `python flows/build.py` or `facedata build`.

Deployments (see `facedata schedule`) point at `flows/build.py:build`. The flow itself lives in
`facedata.flows.build`, where tests import it.
"""

from facedata.flows.build import build_flow as build

if __name__ == "__main__":
    build(root=".")
