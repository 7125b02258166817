"""Crawl throughput: images per second ingested from a local server with several hosts, facedata's concurrent
crawler (`facedata ingest-urls`: fetch, check, decode, hash, store, manifests) against a plain sequential
`requests` loop feeding the same ingest code, measured side by side in the same run.

Each host is a threaded HTTP server on its own loopback port that answers after `--latency` seconds (a web
server's response time); images are real LFW photos when ../shared is present (else synthetic JPEGs), served
from memory. Every measurement starts from an empty project, so nothing is reused. Reported: median images/s
over `--repeats` runs for each setting, and the crawler / sequential ratio.

    python -m benchmarks crawl -- --hosts 4 --per-host 40 --latency 0.05 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import shutil
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEDATA_SHARED", REPO.parent / "shared"))


def _images(n: int) -> tuple[list[bytes], str]:
    lfw = SHARED / "data" / "faces" / "lfw"
    if lfw.is_dir():
        files = sorted(lfw.glob("*/*.jpg"))[:n]
        if len(files) == n:
            return [f.read_bytes() for f in files], "LFW 250x250 JPEGs"
    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((250, 250))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out, "synthetic 250x250 JPEGs"


class _Host:
    def __init__(self, bodies: dict[str, bytes], latency: float):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                time.sleep(latency)
                body = bodies.get(self.path)
                status, ctype = (200, "image/jpeg") if body is not None else (404, "text/plain")
                body = body if body is not None else b"not found"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # clients closing idle keep-alives
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _project(root: Path, crawl: dict) -> dict:
    from facedata.params import SPEC, with_defaults

    params: dict = {}
    for key, spec in SPEC.items():
        top, leaf = key.split(".", 1)
        params.setdefault(top, {})[leaf] = spec.default
    params["crawl"].update(crawl)
    root.mkdir(parents=True)
    return with_defaults(params)


def _sequential(urls: list[str], root: Path, params: dict) -> int:
    """The reference: one requests.Session, one URL after the other, then the same ingest code."""
    from facedata import manifest
    from facedata.collect.base import SourceItem
    from facedata.collect.ingest import ingest_items
    from facedata.lineage import make_lineage

    session = requests.Session()

    def items():
        for url in urls:
            now = dt.datetime.now(dt.UTC)
            try:
                r = session.get(url, timeout=(5, 15))
                if r.status_code == 200:
                    yield SourceItem("url", url, "bench", now, data=r.content, extra={"http_status": 200})
                else:
                    yield SourceItem("url", url, "bench", now, error=f"http_{r.status_code}")
            except requests.RequestException as exc:
                yield SourceItem("url", url, "bench", now, error=f"connection: {exc}")

    result = ingest_items(items(), root, params["ingest"], lambda: make_lineage("bench", "x", root))
    manifest.write("images", manifest.from_rows("images", result.images), root)
    manifest.write("crawl_log", manifest.from_rows("crawl_log", result.log), root)
    return result.counts().get("stored", 0)


def _crawler(urls: list[str], root: Path, params: dict, list_file: Path) -> int:
    from facedata.pipeline.collect import ingest_url_list

    report, _ = ingest_url_list(root, params, list_file, "bench")
    return report["stored"]


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks crawl --", description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--per-host", type=int, default=40)
    ap.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.0], help="server response times (s)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    n = args.hosts * args.per_host
    bodies, kind = _images(n)
    tmp = Path(tempfile.mkdtemp(prefix="facedata-bench-crawl-"))
    settings = {
        "crawler (8 workers, 2 per host, no interval)": {
            "max_concurrency": 8,
            "per_host_concurrency": 2,
            "per_host_interval_s": 0.0,
        },
        "crawler, polite defaults (2 per host, 0.5 s interval)": {},
    }
    results: dict = {"images": n, "hosts": args.hosts, "image_kind": kind, "scenarios": {}}
    try:
        for latency in args.latency:
            hosts, urls = [], []
            for h in range(args.hosts):
                chunk = {f"/img/{i}.jpg": bodies[h * args.per_host + i] for i in range(args.per_host)}
                host = _Host(chunk, latency)
                hosts.append(host)
                urls += [f"http://127.0.0.1:{host.port}{p}" for p in chunk]
            list_file = tmp / "urls.txt"
            list_file.write_text("\n".join(urls) + "\n")
            allow = [f"127.0.0.1:{h.port}" for h in hosts]
            timings: dict[str, list[float]] = {"sequential requests loop": []}
            timings.update({name: [] for name in settings})
            counts: dict[str, int] = {}
            run = 0
            for _ in range(args.repeats):
                for name in timings:
                    if "polite" in name and latency == 0 and args.repeats > 1 and timings[name]:
                        continue  # rate-limited by design: one run says enough
                    run += 1
                    root = tmp / f"p{run}"
                    crawl = {"allow_hosts": allow, "respect_robots": True, **settings.get(name, {})}
                    params = _project(root, crawl)
                    t0 = time.perf_counter()
                    if name == "sequential requests loop":
                        counts[name] = _sequential(urls, root, params)
                    else:
                        counts[name] = _crawler(urls, root, params, list_file)
                    timings[name].append(time.perf_counter() - t0)
                    shutil.rmtree(root)
            for h in hosts:
                h.close()
            ref = statistics.median(timings["sequential requests loop"])
            scenario = {}
            for name, ts in timings.items():
                med = statistics.median(ts)
                scenario[name] = {
                    "stored": counts[name],
                    "median_s": round(med, 3),
                    "runs_s": [round(t, 3) for t in ts],
                    "images_per_s": round(counts[name] / med, 1),
                    "speedup_vs_sequential": round(ref / med, 2),
                }
            results["scenarios"][f"latency {latency * 1000:g} ms"] = scenario
            print(f"latency {latency * 1000:g} ms:", flush=True)
            for name, s in scenario.items():
                print(f"  {name:<55} {s['images_per_s']:>7} img/s  x{s['speedup_vs_sequential']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
