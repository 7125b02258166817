"""The cluster *stage* at scale: manifests on disk in, manifests out, in its own process.

    python -m benchmarks cluster_stage -- [--faces 1000000] [--threshold 0.43] [--keep DIR]

Synthetic embeddings with identity structure (`facedata.cluster.synthetic`, 128-d, as `bench_cluster --scale`)
become a project's images, faces and embeddings manifests (one face per image; every image queried and
labelled with its identity, so the stage also picks a dominant cluster per name and measures itself against
the labels). The stage then runs as DVC runs it, `python -m stages.cluster`, and we record its wall time,
CPU time and peak RSS (the child's max RSS from `getrusage`), next to the algorithm alone on the same vectors
in another child (kNN graph + knn_average: the reference, as `bench_cluster --scale` measures it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]


def write_project(root: Path, n: int, threshold: float, seed: int = 1) -> dict:
    """A project whose images/faces/embeddings manifests hold `n` synthetic faces; returns sizes on disk."""
    import yaml

    from facedata import manifest
    from facedata.cluster.synthetic import make_embeddings
    from facedata.lineage import LINEAGE_TYPE, make_lineage
    from facedata.models import ModelId
    from facedata.params import defaults
    from facedata.pipeline.dag import RUN_SH, RUNNER

    params = defaults()
    params["cluster"]["threshold"] = threshold
    params["sources"]["folders"] = []
    params["sources"]["videos"] = []
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages" / "__init__.py").write_text("")
    (root / "stages" / "cluster.py").write_text(
        "from facedata.pipeline.runner import main\n\nif __name__ == '__main__':\n    main('cluster')\n"
    )
    (root / RUNNER).write_text(RUN_SH)

    x, labels = make_embeddings(n, seed=seed)
    ids = np.char.mod("%064x", np.arange(n, dtype=np.uint64))  # stand-ins for sha256 ids, unique and sortable
    image_ids = pa.array(np.char.add("i", ids.astype(str)).tolist(), pa.string())
    face_ids = pa.array(np.char.add("f", ids.astype(str)).tolist(), pa.string())
    names = pa.array(np.char.add("person", labels.astype(str)).tolist(), pa.string())
    now = dt.datetime.now(dt.UTC)

    def lineage(stage, model=None):
        return pa.repeat(pa.scalar(make_lineage(stage, "bench", root, model, "bench"), LINEAGE_TYPE), n)

    def const(value, typ):
        return pa.repeat(pa.scalar(value, typ), n)

    images = {
        "image_id": image_ids,
        "store_path": pa.array(["data/store/images/" + i for i in image_ids.to_pylist()], pa.string()),
        "format": const("jpeg", pa.string()),
        "width": const(250, pa.int32()),
        "height": const(250, pa.int32()),
        "n_bytes": const(10_000, pa.int64()),
        "mode": const("RGB", pa.string()),
        "n_frames": const(1, pa.int32()),
        "query_name": names,
        "label": names,
        "source_kind": const("folder", pa.string()),
        "source_uri": image_ids,
        "fetched_at": const(now, manifest.TS),
        "lineage": lineage("ingest"),
    }
    faces = {
        "face_id": face_ids,
        "image_id": image_ids,
        "face_index": const(0, pa.int32()),
        "detector": const("retinaface", pa.string()),
        "x1": const(50.0, pa.float32()),
        "y1": const(50.0, pa.float32()),
        "x2": const(150.0, pa.float32()),
        "y2": const(170.0, pa.float32()),
        "score": const(0.99, pa.float32()),
        "landmarks": pa.repeat(
            pa.scalar([80.0, 90, 120, 90, 100, 110, 85, 140, 115, 140], pa.list_(pa.float32(), 10)), n
        ),
        "is_primary": const(True, pa.bool_()),
        "size_px": const(100.0, pa.float32()),
        "blur": const(100.0, pa.float32()),
        "status": const("ok", pa.string()),
        "crop_size": const(150, pa.int32()),
        "align_template": const("dlib150", pa.string()),
        "align_matrix": pa.repeat(pa.scalar([1.0, 0, 0, 0, 1, 0], pa.list_(pa.float32(), 6)), n),
        "lineage": lineage("detect", ModelId("retinaface", "bench", "0" * 64)),
    }
    model = ModelId("dlib-resnet", "bench", "1" * 64)
    embeddings = {
        "face_id": face_ids,
        "model": const("dlib-resnet", pa.string()),
        "model_version": const("bench", pa.string()),
        "dim": const(x.shape[1], pa.int32()),
        "vector": pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * x.shape[1], x.shape[1], dtype=np.int32)), pa.array(x.reshape(-1))
        ),
        "lineage": lineage("embed", model),
    }
    del x
    sizes = {}
    for name, cols in (("images", images), ("faces", faces), ("embeddings", embeddings)):
        table = manifest.conform(name, pa.table(cols), fill_missing=True)
        path = manifest.write(name, table, root)
        sizes[name] = round(path.stat().st_size / 1e6, 1)
        del table
    return {"n_identities": int(np.unique(labels).size), "manifest_mb": sizes}


def _child(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run `cmd`; its wall and CPU seconds and peak RSS in GB (each child measured in a fresh wrapper)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:])\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps([p.returncode, time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss]),"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True, env=_env()
    )
    rc, wall, cpu, rss_kb = json.loads(proc.stderr.strip().splitlines()[-1])
    proc.returncode = rc
    return proc, round(wall, 1), round(cpu, 1), round(rss_kb / 1e6, 2)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "FACEDATA_RUN_ID": "bench-cluster-stage"}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks cluster_stage --")
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--threshold", type=float, default=0.43, help="suits the synthetic geometry (BENCHMARKS.md)")
    ap.add_argument("--keep", type=Path, default=None, help="build the project here and keep it")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="facedata-cluster-stage-"))
    try:
        t = time.perf_counter()
        made = write_project(root, args.faces, args.threshold)
        made["prepare_s"] = round(time.perf_counter() - t, 1)
        stage, wall, cpu, rss = _child([sys.executable, "-m", "stages.cluster"], root)
        if stage.returncode != 0:
            return {**made, "error": stage.stderr[-3000:]}
        metrics = json.loads((root / "data" / "metrics" / "cluster.json").read_text())
        report = json.loads((root / "data" / "reports" / "runs" / "cluster.json").read_text())
        out_mb = {
            n: round((root / "data" / "manifests" / f"{n}.parquet").stat().st_size / 1e6, 1)
            for n in ("clusters", "identities")
        }
        ref_code = (
            "from benchmarks.bench_cluster import scale_child; "
            f"import json; print(json.dumps(scale_child({args.faces}, {args.threshold})))"
        )
        ref, ref_wall, ref_cpu, ref_rss = _child([sys.executable, "-c", ref_code], REPO)
        reference = (
            json.loads(ref.stdout.strip().splitlines()[-1])
            if ref.returncode == 0
            else {"error": ref.stderr[-2000:]}
        )
        return {
            "faces": args.faces,
            "threshold": args.threshold,
            **made,
            "stage": {
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_gb": rss,
                "assignment": report.get("assignment", {}).get("mode"),
                "n_clusters": metrics["n_clusters"],
                "bcubed_f": metrics.get("labelled", {}).get("bcubed_f"),
                "purity": metrics.get("labelled", {}).get("purity"),
                "identities": metrics["identities"],
                "output_mb": out_mb,
            },
            "algorithm_alone": {
                "process_wall_s": ref_wall,
                "process_cpu_s": ref_cpu,
                "peak_rss_gb": ref_rss,
                "clustering_wall_s": reference.get("wall_s"),
                "bcubed_f": reference.get("bcubed_f"),
            },
            "stage_vs_algorithm_rss": round(rss / ref_rss, 2) if ref_rss else None,
            "load_average": os.getloadavg(),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
