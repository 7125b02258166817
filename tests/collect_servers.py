"""Local servers and test images for the collection tests (issue 5). Servers listen on loopback only:
127.0.0.1 (allowed explicitly in the tests) and 127.0.0.2 (the not-allowed host, which must see no traffic).
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

# ------------------------------------------------------------------------------------------------- images


def noise_image(seed: int, size: tuple[int, int] = (96, 80), mode: str = "RGB") -> Image.Image:
    """Distinct, deterministic images: blocks of random colour (their perceptual hashes differ widely)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)
    return img.convert(mode) if mode != "RGB" else img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg(seed: int, size=(96, 80)) -> bytes:
    return encode(noise_image(seed, size), "JPEG", quality=90)


def png(seed: int, size=(96, 80), mode: str = "RGB") -> bytes:
    return encode(noise_image(seed, size, mode), "PNG")


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (the pixel-count guard must refuse it)."""
    data = png(1, (8, 8))
    ihdr = bytearray(data[8 : 8 + 25])
    ihdr[8:12] = struct.pack(">I", width)
    ihdr[12:16] = struct.pack(">I", height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])) & 0xFFFFFFFF)
    return data[:8] + bytes(ihdr[:21]) + crc + data[33:]


def exif_rotated_jpeg(seed: int) -> bytes:
    """A 120x60 JPEG with EXIF orientation 6 (rotate 90): decoded it is 60 wide, 120 high."""
    img = noise_image(seed, (120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes())


def animated(fmt: str, seed: int) -> bytes:
    frames = [noise_image(seed + i, (64, 64)) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>'
HTML = b"<!DOCTYPE html><html><head><title>not an image</title></head><body>hello</body></html>"


# ------------------------------------------------------------------------------------------------- server


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    def add(self, path: str, headers) -> None:
        with self.lock:
            self.requests.append({"path": path, "headers": dict(headers), "t": time.monotonic()})

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths() if p == path)


Route = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # hostile routes break sockets on purpose
        pass


class LocalServer:
    """A threaded HTTP/1.1 server on a loopback address with a route table {path: handler(req)}."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes: dict[str, Route] = {}
        self.record = Recorder()
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                server.record.add(self.path, self.headers)
                with server.record.lock:
                    server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    send(self, 404, b"not found", "text/plain")
                    return
                route(self)

        self.httpd = _Server((host, port), Handler)
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits_of(self, path: str) -> int:
        with self.record.lock:
            return self.hits.get(path, 0)


def send(req: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str | None, headers: dict | None = None):
    req.send_response(status)
    if ctype is not None:
        req.send_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        req.send_header(k, v)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def static(body: bytes, ctype: str | None = "image/jpeg", status: int = 200, headers: dict | None = None) -> Route:
    return lambda req: send(req, status, body, ctype, headers)


def redirect(location: str, status: int = 302) -> Route:
    return lambda req: send(req, status, b"", "text/plain", {"Location": location})


def fail_then(body: bytes, ctype: str, first_status: int, times: int = 1, headers: dict | None = None) -> Route:
    """`first_status` for the first `times` requests of this route, then the body."""
    state = {"n": 0}
    lock = threading.Lock()

    def route(req):
        with lock:
            state["n"] += 1
            n = state["n"]
        if n <= times:
            send(req, first_status, b"try later", "text/plain", headers)
        else:
            send(req, 200, body, ctype)

    return route


def drip(total: int = 100_000, every: float = 0.2) -> Route:
    """Headers at once, then one byte every `every` seconds: only a total timeout stops it."""

    def route(req):
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(total))
        req.end_headers()
        try:
            for _ in range(total):
                req.wfile.write(b"\xff")
                req.wfile.flush()
                time.sleep(every)
        except OSError:
            pass

    return route


def stall(seconds: float = 8.0) -> Route:
    """Accept the request and say nothing: a read timeout."""
    return lambda req: time.sleep(seconds)


def chunked(total: int, piece: int = 64 * 1024, ctype: str = "image/jpeg") -> Route:
    """A body with no Content-Length (chunked), larger than the cap: caught while streaming."""

    def route(req):
        req.send_response(200)
        req.send_header("Content-Type", ctype)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        sent = 0
        block = b"\xff\xd8\xff" + b"\x00" * (piece - 3)
        try:
            while sent < total:
                req.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
            req.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    return route


def short_body(body: bytes, ctype: str = "image/jpeg") -> Route:
    """Content-Length says the whole body; half is sent, then the connection closes."""

    def route(req):
        req.send_response(200)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body[: len(body) // 2])
        req.wfile.flush()
        req.close_connection = True
        req.connection.shutdown(socket.SHUT_WR)

    return route


def reset() -> Route:
    """Close the connection with a TCP reset before answering."""

    def route(req):
        req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        req.close_connection = True
        req.connection.close()
        req.wfile = io.BytesIO()  # the handler's own flush must not fail loudly

    return route


def gzip_bomb(decoded_size: int = 100_000_000) -> Route:
    body = gzip.compress(b"\x00" * decoded_size, compresslevel=9)
    return static(body, "image/jpeg", headers={"Content-Encoding": "gzip"})


def gzipped(body: bytes, ctype: str) -> Route:
    return static(gzip.compress(body), ctype, headers={"Content-Encoding": "gzip"})


def json_route(obj_or_fn) -> Route:
    def route(req):
        obj = obj_or_fn(req) if callable(obj_or_fn) else obj_or_fn
        send(req, 200, json.dumps(obj).encode(), "application/json; charset=utf-8")

    return route


def write_project(root, params: dict) -> None:
    """A minimal facedata project: params.yaml with every key at its default, updated with `params`."""
    import copy

    import yaml

    from facedata.params import SPEC

    full: dict = {}
    for key, spec in SPEC.items():
        top, leaf = key.split(".", 1)
        full.setdefault(top, {})[leaf] = copy.deepcopy(spec.default)
    for section, values in params.items():
        full.setdefault(section, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False), encoding="utf-8")


def fast_crawl_params(**crawl) -> dict:
    """Fast, strict crawl settings for tests (the real defaults are slower and politer)."""
    base = {
        "per_host_interval_s": 0.0,
        "per_host_concurrency": 4,
        "max_concurrency": 8,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 1.0,
        "total_timeout_s": 2.0,
        "max_retries": 1,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "max_retry_after_s": 5.0,
        "checkpoint_seconds": 0.2,
        "browser_args": ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
    }
    base.update(crawl)
    return base
