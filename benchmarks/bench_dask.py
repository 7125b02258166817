"""Scale-out benchmark (issue 20): detect + embed images/s on a Dask cluster of 1 and 2 workers against the local
run, same images, same run, with the CPU time each configuration used and what the machine gave it.

One project of N LFW images is ingested once; each configuration then runs the detect and embed stages from
scratch on a copy of it, `--rounds` times, configurations in turn each round (so a load change on the shared
machine hits every configuration alike); medians over the rounds.

- `local_1`: no cluster, one process (`detect.workers: 1`, `embed.workers: 1`), in this process: the reference.
- `local_2`: no cluster, facedata's local pool of 2 worker processes (started by each stage, as in a build).
- `dask_1`, `dask_2`: a `LocalCluster` of 1 / 2 single-threaded worker processes on 127.0.0.1, started and
  warmed up (one untimed detect + embed of a few images: imports and models loaded, as on a cluster that is
  already running) before the clock starts.

For each configuration: wall time; CPU time of facedata's processes (`cpu_s`: this process, which runs the
stages and hosts the LocalClusters' schedulers and nannies, plus the local pool's or the Dask workers'
processes; `cpu_s_dask_workers`: the Dask workers' part); `cores_used` = CPU time / wall time; and what the
whole machine did meanwhile (`/proc/stat`: CPU seconds busy outside this benchmark, and the 1-minute load
average sampled every 0.5 s). Where `cores_used` of a 2-worker configuration is well below 2
while `others_cpu_s` is high, the machine did not give each worker a core, and its wall-time ratio says little;
the CPU seconds per image still compare the configurations' costs.

Each configuration's manifests are compared with the reference's (stable view): a speed-up that changes the
result is reported as such.

`model_passes_12x8_crops`: what one model pass costs in this process, on a Dask worker as Dask's nanny starts it
(`MALLOC_TRIM_THRESHOLD_=65536`), and on a worker facedata has set up (`facedata.scale.worker`): CPU and system
seconds and minor page faults of 12 dlib-resnet passes over 8 flipped crops, medians of 3.

Usage: python -m benchmarks dask [-- --images 96 --rounds 3 --shard-size 16]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
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
CONFIGS = ("local_1", "local_2", "dask_1", "dask_2")
TABLES = ("detections", "faces", "embeddings")


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


def _machine_busy() -> tuple[float, int]:
    """(CPU seconds the whole machine has been busy since boot, cores), from /proc/stat (steal and idle aside)."""
    with open("/proc/stat") as f:
        head = f.readline().split()
        cores = sum(1 for line in f if line.startswith("cpu"))
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in head[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), cores


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the local pool's workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _workers_cpu(client) -> float:
    return sum(client.run(time.process_time).values()) if client is not None else 0.0


@contextmanager
def _measure(client):
    """Wall time, facedata's CPU time and the machine's load while the block runs (filled in on exit)."""
    out: dict = {}
    loads: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    busy0, cores = _machine_busy()
    own0, workers0 = _own_cpu(), _workers_cpu(client)
    t0 = time.perf_counter()
    sampler.start()
    try:
        yield out
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        own, workers = _own_cpu() - own0, _workers_cpu(client) - workers0
        ours = own + workers
        busy = _machine_busy()[0] - busy0
        loads = loads or [os.getloadavg()[0]]
        out.update(
            wall_s=wall,
            cpu_s=ours,
            cpu_s_dask_workers=workers,
            others_cpu_s=max(0.0, busy - ours),
            idle_cpu_s=max(0.0, wall * cores - busy),
            load_mean=statistics.mean(loads),
            load_max=max(loads),
        )


def model_passes(n: int = 12) -> dict:
    """CPU cost of `n` dlib-resnet passes over 8 flipped crops in the calling process (model loaded and one pass
    made first): CPU and system seconds, minor page faults."""
    import numpy as np

    from facedata.embed import make_embedder

    model = make_embedder("dlib-resnet", "cpu", True, False)
    crops = [np.random.default_rng(i).integers(0, 255, (150, 150, 3), dtype=np.uint8) for i in range(8)]
    model.embed(crops)
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    for _ in range(n):
        model.embed(crops)
    r1, c1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    return {
        "cpu_s": round(c1 - c0, 2),
        "system_s": round(r1.ru_stime - r0.ru_stime, 2),
        "minor_page_faults": r1.ru_minflt - r0.ru_minflt,
    }


def _passes_where(clusters: dict, raw) -> dict:
    """`model_passes` here, on a Dask worker as the nanny starts it, and on one set up by facedata's stages
    (`facedata.scale.worker.WorkerSetup`, which the warm-up registered): medians of 3 alternating runs."""
    where = {
        "in_process": model_passes,
        "dask_worker_as_started": lambda: raw.submit(model_passes, pure=False).result(),
        "dask_worker_set_up": lambda: clusters[1][1].submit(model_passes, pure=False).result(),
    }
    got: dict[str, list[dict]] = {k: [] for k in where}
    for _ in range(3):
        for k, f in where.items():
            got[k].append(f())
    return {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in got.items()}


def _run(base: Path, dest: Path, params: dict, address: str | None, client) -> dict:
    from facedata.pipeline.runner import run_stage
    from facedata.scale.connect import ENV

    shutil.copytree(base, dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    if address:
        os.environ[ENV] = address
    else:
        os.environ.pop(ENV, None)
    try:
        with _measure(client) as m:
            for stage in ("detect", "embed"):
                if run_stage(stage, dest) != 0:
                    raise RuntimeError(f"{stage} failed in {dest}")
    finally:
        os.environ.pop(ENV, None)
    return m


def _same(a: Path, b: Path) -> bool:
    from facedata import manifest

    return all(
        manifest.stable_view(manifest.read(n, a)).equals(manifest.stable_view(manifest.read(n, b))) for n in TABLES
    )


def _ingest(root: Path, params: dict) -> int:
    from facedata import manifest
    from facedata.pipeline.runner import run_stage

    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    if run_stage("ingest", root) != 0:
        raise RuntimeError(f"ingest failed in {root}")
    return manifest.read("images", root).num_rows


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks dask")
    ap.add_argument("--images", type=int, default=96, help="LFW images (spread over 6 people)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=16)
    args = ap.parse_args(argv)
    lfw = SHARED / "data" / "faces" / "lfw"
    if not lfw.is_dir():
        raise SystemExit(f"{lfw} not found: this benchmark reads LFW from ../shared")
    os.environ.setdefault("FACEDATA_MODELS_DIR", str(SHARED / "models"))
    from distributed import Client, LocalCluster

    from facedata.faces.pool import available_cores

    per_name = -(-args.images // len(NAMES))
    started = time.time()
    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        base, warm = Path(tmp) / "base", Path(tmp) / "warm"
        n_images = _ingest(base, _params(lfw, per_name, args.shard_size, 1))
        _ingest(warm, _params(lfw, 2, args.shard_size, 1))
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
        raw_cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        raw = Client(raw_cluster)
        try:
            for config in CONFIGS:  # untimed: imports and first model loads, in this process and on the workers
                kind, n = config.split("_")
                if kind != "local" or n == "1":
                    address = clusters[int(n)][0].scheduler_address if kind == "dask" else None
                    _run(warm, Path(tmp) / f"warm_{config}", _params(lfw, 2, 4, 1), address, None)
            for r in range(args.rounds):
                for config in CONFIGS:
                    kind, n = config.split("_")
                    workers = int(n) if kind == "local" else 1
                    params = _params(lfw, per_name, args.shard_size, workers)
                    lc, client = clusters[int(n)] if kind == "dask" else (None, None)
                    dest = Path(tmp) / f"{config}_{r}"
                    runs[config].append(_run(base, dest, params, lc.scheduler_address if lc else None, client))
                    if r == 0 and config != "local_1":
                        same[config] = _same(dest, Path(tmp) / "local_1_0")
                    if r > 0:
                        shutil.rmtree(dest)
            passes = _passes_where(clusters, raw)
        finally:
            for lc, client in [*clusters.values(), (raw_cluster, raw)]:
                client.close()
                lc.close()

    def med(config: str, key: str) -> float:
        return statistics.median(m[key] for m in runs[config])

    table = {}
    for c in CONFIGS:
        wall, cpu = med(c, "wall_s"), med(c, "cpu_s")
        table[c] = {
            "wall_s": round(wall, 2),
            "images_per_s": round(n_images / wall, 2),
            "cpu_s": round(cpu, 2),
            "cpu_s_dask_workers": round(med(c, "cpu_s_dask_workers"), 2),
            "cpu_ms_per_image": round(1000 * cpu / n_images, 1),
            "cores_used": round(cpu / wall, 2),
            "others_cpu_s": round(med(c, "others_cpu_s"), 2),
            "idle_cpu_s": round(med(c, "idle_cpu_s"), 2),
            "load_mean": round(med(c, "load_mean"), 2),
            "load_max": round(max(m["load_max"] for m in runs[c]), 2),
        }
    ips = {c: table[c]["images_per_s"] for c in CONFIGS}
    cpu = {c: table[c]["cpu_s"] for c in CONFIGS}
    return {
        "images": n_images,
        "rounds": args.rounds,
        "shard_size": args.shard_size,
        "cores_available": available_cores(),
        "minutes": round((time.time() - started) / 60, 1),
        "per_config_medians": table,
        "ratio_dask_2_vs_dask_1": round(ips["dask_2"] / ips["dask_1"], 2),
        "ratio_dask_1_vs_local_1": round(ips["dask_1"] / ips["local_1"], 2),
        "ratio_dask_2_vs_local_1": round(ips["dask_2"] / ips["local_1"], 2),
        "ratio_local_2_vs_local_1": round(ips["local_2"] / ips["local_1"], 2),
        "cpu_ratio_dask_1_vs_local_1": round(cpu["dask_1"] / cpu["local_1"], 2),
        "same_manifests_as_local_1": same,
        "model_passes_12x8_crops": passes,
        "runs": {c: [{k: round(v, 2) for k, v in m.items()} for m in runs[c]] for c in CONFIGS},
    }
