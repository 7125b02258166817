"""Which Dask cluster a stage uses, and connecting to it.

The address comes from `$FACEDATA_DASK_ADDRESS` (what `--dask` sets, so it reaches the stages DVC starts) or
else `execution.dask_address`: empty means no cluster, `local:N` a `LocalCluster` of N single-threaded worker
processes on 127.0.0.1 started for the stage and stopped after it, anything else (`tcp://host:8786`,
`tls://...`) the scheduler of a running cluster (`dask scheduler` + `dask worker` on each machine).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from facedata.params import DASK_ADDRESS

ENV = "FACEDATA_DASK_ADDRESS"
_LOCAL = re.compile(r"local:(\d+)")


class ScaleError(RuntimeError):
    """The Dask cluster cannot be used (bad address, scheduler unreachable, workers running other code)."""


def dask_address(params: dict) -> str:
    """The cluster address in force ('' for none): `$FACEDATA_DASK_ADDRESS` over `execution.dask_address`
    (which `facedata check` validates with the same forms as `check_address`)."""
    address = os.environ.get(ENV) or (params.get("execution") or {}).get("dask_address") or ""
    address = address.strip()
    check_address(address)
    return address


def check_address(address: str) -> None:
    if not DASK_ADDRESS.fullmatch(address):
        raise ScaleError(
            f"dask address {address!r} is not one of: '' (no cluster), local:N (N >= 1 worker processes here), "
            "tcp://HOST:PORT (a running `dask scheduler`)"
        )


@contextmanager
def connect(address: str, timeout: float = 30.0) -> Iterator:
    """A `distributed.Client` for `address` (see the module docstring), closed on exit."""
    from distributed import Client, LocalCluster

    check_address(address)
    m = _LOCAL.fullmatch(address)
    if m:
        with (
            LocalCluster(
                n_workers=int(m.group(1)),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # any free port, this machine only
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ScaleError(
            f"cannot reach the Dask scheduler at {address} ({exc}): start one (`dask scheduler`, then "
            "`dask worker ADDRESS` on each machine), or unset execution.dask_address / --dask to run here"
        ) from exc
    with client:
        yield client


def dashboard_link(client) -> str | None:
    """The cluster's dashboard URL, when its scheduler serves the dashboard's pages: its HTTP server runs
    without bokeh too, but then /status only asks for bokeh, so a link is given only where the scheduler has it."""
    try:
        services = client.scheduler_info().get("services", {})
        pages = "dashboard" in services and client.run_on_scheduler(_has_bokeh)
    except Exception:  # an old or locked-down scheduler, or a closing client: no link is not an error
        return None
    return client.dashboard_link if pages else None


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None
