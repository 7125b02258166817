"""Pipeline backbone benchmarks (issue 2), each against a reference measured in the same run.

1. Manifest I/O at scale: facedata's `manifest.write` + `manifest.read` (schema check, sort by key, duplicate-key
   check, atomic rename) on 100k embeddings x 512-d, vs plain `pyarrow.parquet.write_table` / `read_table`.
2. Merge-by-id: 10k new rows into 100k, vs the pandas idiom (concat + drop_duplicates(keep="last")).
3. Incremental rerun on real faces: a project of N LFW images is built (ingest, detect, embed); then ~10% new
   images are added. Reference: the same stages from scratch on all images. facedata: the rerun, which only
   processes the new images. Reported as seconds and the speed-up ratio.

Usage: python -m benchmarks pipeline [-- --rows 100000 --repeats 3 --images 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedata import manifest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _lineage() -> dict:
    return {
        "stage": "embed",
        "run_id": "bench",
        "git_rev": "x",
        "code_version": "0",
        "params_hash": "p",
        "model_name": "m",
        "model_version": "1",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


def embeddings_table(n: int, dim: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"f{i:031x}" for i in rng.permutation(n)]
    lin = _lineage()
    flat = pa.array(vecs.reshape(-1))
    vector = pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), flat)
    return pa.table(
        {
            "face_id": ids,
            "model": ["m"] * n,
            "model_version": ["1"] * n,
            "dim": pa.array([dim] * n, pa.int32()),
            "vector": vector,
            "lineage": pa.array([lin] * n, manifest.SCHEMAS["embeddings"].field("lineage").type),
        },
        schema=manifest.SCHEMAS["embeddings"],
    )


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_io(rows: int, dim: int, repeats: int) -> dict:
    table = embeddings_table(rows, dim)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref_path = root / "ref.parquet"
        ref_write = _median_time(lambda: pq.write_table(table, ref_path, compression="zstd"), repeats)
        ref_read = _median_time(lambda: pq.read_table(ref_path), repeats)
        fd_write = _median_time(lambda: manifest.write("embeddings", table, root), repeats)
        fd_read = _median_time(lambda: manifest.read("embeddings", root), repeats)
        new = embeddings_table(rows // 10, dim, seed=1)
        old = manifest.read("embeddings", root)
        fd_merge = _median_time(lambda: manifest.merge("embeddings", old, new), repeats)

        def pandas_merge():
            import pandas as pd

            both = pd.concat([old.to_pandas(), new.to_pandas()])
            return both.drop_duplicates(subset=["face_id", "model"], keep="last")

        ref_merge = _median_time(pandas_merge, repeats)
    return {
        "rows": rows,
        "dim": dim,
        "repeats": repeats,
        "write_s": {
            "pyarrow": round(ref_write, 3),
            "facedata": round(fd_write, 3),
            "ratio": round(fd_write / ref_write, 2),
        },
        "read_s": {
            "pyarrow": round(ref_read, 3),
            "facedata": round(fd_read, 3),
            "ratio": round(fd_read / ref_read, 2),
        },
        "merge_10pct_s": {
            "pandas": round(ref_merge, 3),
            "facedata": round(fd_merge, 3),
            "speedup": round(ref_merge / fd_merge, 2),
        },
    }


def bench_incremental(n_images: int) -> dict:
    import shutil
    import subprocess
    import sys

    lfw = SHARED / "data" / "faces" / "lfw"
    if not lfw.is_dir():
        return {"skipped": f"{lfw} not found"}
    names = sorted(p.name for p in lfw.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 4)[: n_images // 4]
    files = [f for n in names for f in sorted((lfw / n).iterdir())[:4]]
    n_new = max(1, len(files) // 10)
    base, extra = files[: len(files) - n_new], files[len(files) - n_new :]
    dvc = str(Path(sys.executable).parent / "dvc")
    env_bin = str(Path(sys.executable).parent)
    import os

    env = {
        **os.environ,
        "PATH": env_bin + os.pathsep + os.environ.get("PATH", ""),
        "FACEDATA_MODELS_DIR": os.environ.get("FACEDATA_MODELS_DIR", str(SHARED / "models")),
    }
    from facedata.pipeline.scaffold import init_project

    def build(root: Path, images: list[Path]) -> float:
        src = root.parent / f"{root.name}_src"
        for f in images:
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / f.parent.name / f.name)
        if not (root / "dvc.yaml").exists():
            init_project(root, {"folders": [{"root": str(src), "labeled": True}], "videos": []})
        t = time.perf_counter()
        subprocess.run([dvc, "repro", "--force", "embed"], cwd=root, env=env, check=True, capture_output=True)
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scratch = build(tmp / "scratch", files)  # reference: all images from nothing
        build(tmp / "incr", base)
        incremental = build(tmp / "incr", extra)  # same project, ~10% new images
    return {
        "images": len(files),
        "new_images": n_new,
        "from_scratch_s": round(scratch, 2),
        "incremental_s": round(incremental, 2),
        "speedup": round(scratch / incremental, 2),
    }


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pipeline --")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=80)
    args = ap.parse_args(argv)
    return {
        "manifest_io": bench_io(args.rows, args.dim, args.repeats),
        "incremental": bench_incremental(args.images),
    }
