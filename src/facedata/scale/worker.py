"""What a Dask worker sets up for facedata before its first shard (imported only where a cluster is used: it
needs `distributed`)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from facedata.faces.pool import keep_model_buffers


class WorkerSetup(WorkerPlugin):
    """Registered by each sharded stage (idempotent: once per cluster), so it runs on every worker there is and
    on each that joins later: glibc keeps model buffers between forward passes (`keep_model_buffers`), which
    Dask's nanny settings would otherwise page-fault in again on every pass."""

    name = "facedata-worker-setup"
    idempotent = True  # registered again by the next stage: kept as it is

    def setup(self, worker) -> None:
        keep_model_buffers()
