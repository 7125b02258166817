"""Shared test setup: the real data in ../shared, models resolved from ../shared/models, everything offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared")).resolve()
HAVE_SHARED = (SHARED / "data").is_dir() and (SHARED / "models").is_dir()
LFW = SHARED / "data" / "faces" / "lfw"
VIDEO = SHARED / "data" / "video"

# Models come from ../shared/models (or the installed packages); never from the network.
if HAVE_SHARED:
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
os.environ["FACEDATA_OFFLINE"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=f"real data not found at {SHARED} (../shared is absent)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared" in item.keywords and not HAVE_SHARED:
            item.add_marker(needs_shared)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not HAVE_SHARED:
        pytest.skip(f"real data not found at {SHARED} (../shared is absent)")
    return SHARED


@pytest.fixture(scope="session")
def lfw(shared) -> Path:
    return LFW


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server + database for the whole session (starting one takes ~9 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
