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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

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
        "contact": CONTACT,
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


#: The operator contact every test crawl names (web sources refuse to run without one).
CONTACT = "facedata-tests@facedata.test"


# ------------------------------------------------------------------------------------ a fake MediaWiki


@dataclass
class FakeFile:
    """One Commons file: its upload history (newest first) and what its description page states."""

    title: str  # "File:Ada Lovelace 1840.jpg"
    pageid: int
    versions: list[str]  # upload timestamps, newest first, ISO 8601 ("2019-05-01T10:00:00Z")
    mime: str = "image/jpeg"
    artist: str | None = '<a href="//commons.wikimedia.org/wiki/User:Jane" title="User:Jane">Jane Roe</a>'
    credit: str = '<span class="int-own-work" lang="en">Own work</span>'
    user: str = "Uploader Bot"
    license: str = "CC BY-SA 4.0"
    license_url: str = "https://creativecommons.org/licenses/by-sa/4.0"
    usage_terms: str = "Creative Commons Attribution-Share Alike 4.0"
    attribution_required: str = "true"
    restrictions: str = ""  # "personality", "personality|trademarked"...

    @property
    def stem(self) -> str:
        return self.title.split(":", 1)[1].replace(" ", "_")


class FakeMediaWiki:
    """Commons' and Wikidata's APIs as they answer (formatversion=2), on a LocalServer.

    Commons: `generator=search` (File: namespace) with `prop=imageinfo`, `titles=` lookups (missing files
    answer `missing` and an empty `imagerepository`), `iiprop` and `iiextmetadatafilter` honoured (only the
    requested fields come back), `gsrlimit` capped at `max_limit`, and continuation the way MediaWiki's
    ApiContinuationManager and ApiQueryImageInfo do it: while imageinfo has more to give for a batch that
    holds exactly one file with older versions, `continue` carries `iistart` plus the *current* generator
    parameters, repeating the same search; naming `imageinfo` after `||` in `continue` marks it finished.
    A `maxlag` error can be sent once first (`lag_headers`). Wikidata: `wbgetclaims` with ranked P18 claims.
    `calls` holds the parameters of every API call; image URLs (one per version and width) are served.
    """

    def __init__(self, server: LocalServer, max_limit: int = 50):
        self.server = server
        self.max_limit = max_limit
        self.files: dict[str, FakeFile] = {}
        self.searches: dict[str, list[str]] = {}  # gsrsearch -> titles in rank order
        self.failing: set[str] = set()  # gsrsearch values answered with an internal_api_error
        self.claims: dict[str, list[tuple[str, str]]] = {}  # entity -> [(file name, rank)]
        self.lag_headers: dict | None = None
        self.calls: list[dict] = []
        server.routes["/commons/w/api.php"] = self._commons
        server.routes["/wikidata/w/api.php"] = self._wikidata
        # robots.txt governs crawlers of pages, not the API: the API paths are disallowed, images are not
        server.routes["/robots.txt"] = static(
            b"User-agent: *\nDisallow: /commons/w/\nDisallow: /wikidata/w/\n", "text/plain"
        )

    @property
    def api(self) -> str:
        return self.server.url("/commons/w/api.php")

    @property
    def wikidata_api(self) -> str:
        return self.server.url("/wikidata/w/api.php")

    def add(self, title: str, versions: int = 1, **kw) -> FakeFile:
        stamps = [f"20{20 - i:02d}-01-01T00:00:00Z" for i in range(versions)]
        f = FakeFile(title, 1000 + len(self.files), stamps, **kw)
        self.files[title] = f
        return f

    def thumb_path(self, f: FakeFile, version: int, width: int) -> str:
        from urllib.parse import quote

        if version == 0:
            return quote(f"/thumb/{f.stem}/{width}px-{f.stem}")
        stamp = f.versions[version].replace("-", "").replace(":", "").replace("T", "").rstrip("Z")
        return quote(f"/thumb/archive/{stamp}!{f.stem}/{width}px-{f.stem}")

    def image_requests(self) -> list[str]:
        return [p for p in self.server.record.paths() if p.startswith("/thumb/")]

    # ----------------------------------------------------------------------------------------- answers

    def _imageinfo(self, f: FakeFile, version: int, q: dict) -> dict:
        from urllib.parse import quote

        width = int(q.get("iiurlwidth", "-1"))
        props = set(q.get("iiprop", "timestamp|user").split("|"))
        info: dict = {}
        if "timestamp" in props:
            info["timestamp"] = f.versions[version]
        if "user" in props:
            info["user"] = f.user
        if "size" in props:
            info.update(size=123456, width=2000, height=1500)
        if "url" in props:
            if width > 0:
                path = self.thumb_path(f, version, width)
                self.server.routes[path] = static(jpeg(5000 + f.pageid * 10 + version))
                info.update(thumburl=self.server.url(path), thumbwidth=width, thumbheight=width * 3 // 4)
            info["url"] = self.server.url(f"/orig/{quote(f.stem)}")
            page = quote(f.title.replace(" ", "_"), safe=";@$!*(),/~:")  # MediaWiki's wfUrlencode
            info["descriptionurl"] = f"https://commons.wikimedia.org/wiki/{page}"
            info["descriptionshorturl"] = f"https://commons.wikimedia.org/w/index.php?curid={f.pageid}"
        if "mime" in props:
            info["mime"] = f.mime
        if "extmetadata" in props:
            fields = {
                "LicenseShortName": f.license,
                "LicenseUrl": f.license_url,
                "UsageTerms": f.usage_terms,
                "AttributionRequired": f.attribution_required,
                "Artist": f.artist,
                "Credit": f.credit,
                "Restrictions": f.restrictions,
            }
            wanted = q.get("iiextmetadatafilter")
            info["extmetadata"] = {
                k: {"value": v, "source": "commons-desc-page", "hidden": ""}
                for k, v in fields.items()
                if v is not None and (wanted is None or k in wanted.split("|"))
            }
        return info

    def _page_infos(self, pages: list[dict], q: dict, run_imageinfo: bool) -> str | None:
        """imageinfo for each page; returns the `iistart` continuation when ApiQueryImageInfo sets one."""
        if not run_imageinfo:
            return None
        start = q.get("iistart")
        cont = None
        for page in pages:
            f = self.files.get(page["title"])
            if f is None:
                continue
            versions = [i for i, stamp in enumerate(f.versions) if start is None or stamp <= start]
            page["imagerepository"] = "local"
            if versions:
                page["imageinfo"] = [self._imageinfo(f, versions[0], q)]
            if len(versions) > 1 and len(pages) == 1:  # iilimit=1: one more version, and only one title
                cont = f.versions[versions[1]]
        return cont

    def _commons(self, req) -> None:
        q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
        self.calls.append(q)
        if self.lag_headers is not None:
            headers, self.lag_headers = self.lag_headers, None
            body = b'{"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds lagged"}}'
            send(req, 200, body, "application/json", headers)
            return
        if "titles" in q:
            return json_route(self._titles(q))(req)
        if q.get("gsrsearch") in self.failing:
            return json_route({"error": {"code": "internal_api_error", "info": "search backend down"}})(req)
        return json_route(self._search(q))(req)

    def _titles(self, q: dict) -> dict:
        pages, normalized = [], []
        for asked in q["titles"].split("|"):
            title = asked.replace("_", " ")
            if title != asked:
                normalized.append({"fromencoded": False, "from": asked, "to": title})
            f = self.files.get(title)
            if f is None:
                pages.insert(0, {"ns": 6, "title": title, "missing": True, "imagerepository": ""})
            else:
                pages.append({"pageid": f.pageid, "ns": 6, "title": title})
        cont = self._page_infos([p for p in pages if "missing" not in p], q, True)
        doc: dict = {"query": {"pages": pages}}
        if normalized:
            doc["query"]["normalized"] = normalized
        if cont and len(pages) == 1:
            doc["continue"] = {"iistart": cont, "continue": "||"}
        else:
            doc["batchcomplete"] = True
        return doc

    def _search(self, q: dict) -> dict:
        generator_keys: list[str] = []
        skip: list[str] = []
        generator_done = False
        if q.get("continue"):
            generator, sep, finished = q["continue"].partition("||")
            if not sep:
                return {"error": {"code": "badcontinue", "info": "Invalid continue param."}}
            generator_done = generator == "-"
            skip = finished.split("|")
            generator_keys = [k for k in generator.split("|") if k and k in q] if not generator_done else []
        titles = self.searches.get(q.get("gsrsearch", ""), [])
        offset = int(q.get("gsroffset", "0"))
        limit = min(int(q.get("gsrlimit", "10")), self.max_limit)
        batch = [] if generator_done else titles[offset : offset + limit]
        pages = [
            {"pageid": self.files[t].pageid, "ns": 6, "title": t, "index": offset + i + 1}
            for i, t in enumerate(batch)
        ]
        iistart = self._page_infos(pages, q, "imageinfo" not in skip and not generator_done)
        doc: dict = {"query": {"pages": pages}} if pages else {}
        if iistart is not None:  # imageinfo unfinished: repeat this batch (ApiContinuationManager)
            doc["continue"] = {"iistart": iistart, **{k: q[k] for k in generator_keys}}
            doc["continue"]["continue"] = "|".join(generator_keys) + "||"
        elif not generator_done and offset + limit < len(titles):
            doc["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
            doc["batchcomplete"] = True
        else:
            doc["batchcomplete"] = True
        return doc

    def _wikidata(self, req) -> None:
        q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
        self.calls.append(q)
        assert q["action"] == "wbgetclaims" and q["property"] == "P18"
        statements = [
            {
                "mainsnak": {
                    "snaktype": "value",
                    "property": "P18",
                    "hash": f"{i:040x}",
                    "datavalue": {"value": name, "type": "string"},
                    "datatype": "commonsMedia",
                },
                "type": "statement",
                "id": f"{q['entity']}${i:08d}-0000-0000-0000-000000000000",
                "rank": rank,
            }
            for i, (name, rank) in enumerate(self.claims.get(q["entity"], []))
        ]
        json_route({"claims": {"P18": statements} if statements else {}})(req)
