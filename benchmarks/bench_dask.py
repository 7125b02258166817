"""Scale-out benchmark (issue 20): detect + embed images/s on a Dask cluster of 1 and 2 workers against the local
run, same images, same run.

One project of N LFW images is ingested once; each configuration then runs the detect and embed stages from
scratch on a copy of it, `--rounds` times, in turn (so a load change on the shared machine hits every
configuration alike); the median wall time of detect + embed per configuration is reported as images/s.

- `local_1`: no cluster, one process (`detect.workers: 1`, `embed.workers: 1`): the reference.
- `local_2`: no cluster, facedata's local pool of 2 worker processes.
- `dask_1`, `dask_2`: a `LocalCluster` of 1 / 2 single-threaded worker processes on 127.0.0.1 (started before
  the clock starts, as a running cluster would be; model loading on the workers is inside the time).

Each configuration's manifests are compared with the reference's (stable view): a speed-up that changes the
result is reported as such. The machine's load average is recorded at start and end: on a 2-core machine
shared with other jobs a second worker only helps when a core is free for it.

Usage: python -m benchmarks dask [-- --images 64 --rounds 2 --shard-size 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAMES = [
    "Colin_Powell",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Hugo_Chavez",
    "Jean_Chretien",
    "Junichiro_Koizumi",
]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _params(lfw: Path, per_name: int, shard_size: int, workers: int) -> dict:
    return {
        "sources": {
            "folders": [{"root": str(lfw), "labeled": True, "names": NAMES, "max_per_name": per_name}],
            "videos": [],
        },
        # batches of 8 everywhere (a shard is whole batches; the batch size is the same in every configuration)
        "detect": {"workers": workers, "batch_size": 8},
        "embed": {"workers": workers, "batch_size": 8},
        "execution": {"shard_size": shard_size},
    }


def _run(base: Path, dest: Path, params: dict, address: str | None) -> float:
    from facedata.pipeline.runner import run_stage
    from facedata.scale.connect import ENV

    shutil.copytree(base, dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    if address:
        os.environ[ENV] = address
    else:
        os.environ.pop(ENV, None)
    t0 = time.perf_counter()
    try:
        for stage in ("detect", "embed"):
            if run_stage(stage, dest) != 0:
                raise RuntimeError(f"{stage} failed in {dest}")
    finally:
        os.environ.pop(ENV, None)
    return time.perf_counter() - t0


def _same(a: Path, b: Path) -> bool:
    from facedata import manifest

    return all(
        manifest.stable_view(manifest.read(n, a)).equals(manifest.stable_view(manifest.read(n, b)))
        for n in ("detections", "faces", "embeddings")
    )


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks dask")
    ap.add_argument("--images", type=int, default=64, help="LFW images (spread over 6 people)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=16)
    args = ap.parse_args(argv)
    lfw = SHARED / "data" / "faces" / "lfw"
    if not lfw.is_dir():
        raise SystemExit(f"{lfw} not found: this benchmark reads LFW from ../shared")
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    from distributed import Client, LocalCluster

    from facedata import manifest
    from facedata.faces.pool import available_cores
    from facedata.pipeline.runner import run_stage

    per_name = -(-args.images // len(NAMES))
    load_start = _load()
    times: dict[str, list[float]] = {c: [] for c in ("local_1", "local_2", "dask_1", "dask_2")}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        (base / "params.yaml").write_text(yaml.safe_dump(_params(lfw, per_name, args.shard_size, 1)))
        if run_stage("ingest", base) != 0:
            raise RuntimeError("ingest failed")
        n_images = manifest.read("images", base).num_rows
        clusters = {}
        for n in (1, 2):
            lc = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
            clusters[n] = (lc, Client(lc))
        try:
            for r in range(args.rounds):
                for config in times:
                    kind, n = config.split("_")
                    workers = int(n) if kind == "local" else 1
                    params = _params(lfw, per_name, args.shard_size, workers)
                    address = clusters[int(n)][0].scheduler_address if kind == "dask" else None
                    dest = Path(tmp) / f"{config}_{r}"
                    times[config].append(_run(base, dest, params, address))
                    if r == 0 and config != "local_1":
                        same[config] = _same(dest, Path(tmp) / "local_1_0")
                    if r > 0:
                        shutil.rmtree(dest)
        finally:
            for lc, client in clusters.values():
                client.close()
                lc.close()
    median = {c: statistics.median(t) for c, t in times.items()}
    ips = {c: round(n_images / s, 2) for c, s in median.items()}
    return {
        "images": n_images,
        "rounds": args.rounds,
        "shard_size": args.shard_size,
        "cores_available": available_cores(),
        "load_average_at_start": load_start,
        "load_average_at_end": _load(),
        "median_seconds_detect_embed": {c: round(s, 2) for c, s in median.items()},
        "images_per_second": ips,
        "ratio_dask_2_vs_dask_1": round(ips["dask_2"] / ips["dask_1"], 2),
        "ratio_dask_2_vs_local_1": round(ips["dask_2"] / ips["local_1"], 2),
        "ratio_dask_1_vs_local_1": round(ips["dask_1"] / ips["local_1"], 2),
        "ratio_local_2_vs_local_1": round(ips["local_2"] / ips["local_1"], 2),
        "same_manifests_as_local_1": same,
    }
