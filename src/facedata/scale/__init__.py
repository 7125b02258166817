"""Scale-out: the per-item stages (detect, embed, reconstruct3d) run their work as shards on a Dask cluster,
and the cluster stage's kNN search runs through `facedata.cluster.knn.knn_dask`, when an address is given
(`execution.dask_address`, `$FACEDATA_DASK_ADDRESS`, `--dask`). Without one nothing here is used and no server
is started. docs/scale.md says why the shards run from inside the DVC stage (DVC stays the owner of every
stage's inputs and outputs) rather than through Prefect's DaskTaskRunner.
"""

from facedata.scale.connect import ScaleError, connect, dask_address
from facedata.scale.shards import ShardJob, run_sharded

__all__ = ["ScaleError", "ShardJob", "connect", "dask_address", "run_sharded"]
