"""One HTTP GET, done safely: the building block of every web source.

`Fetcher.fetch(url)` makes one attempt (retries and politeness belong to `facedata.collect.crawler`) and
never raises for anything a server can do; it returns a `FetchResult` with the bytes or a reason code:

- only http(s); redirects followed by hand, capped, loops detected, every hop checked again (URL rules,
  robots.txt through `hop_check`, and the address check below);
- the address check runs inside the connection (`_connect_checked`): DNS results in private, loopback,
  link-local, multicast or reserved ranges are refused right before connecting, unless the host is allowed;
- connect, read and total timeouts; the total one is enforced on every socket read, so a server that drips
  a byte at a time cannot hold a worker past it;
- the size cap is checked against Content-Length first and then while streaming, on the raw bytes and on
  the decoded bytes (Content-Encoding gzip/deflate are decoded here with a hard output limit: gzip bombs);
- when an image is expected, a declared non-image type is checked against the first bytes (magic numbers)
  and refused without downloading the rest when they are not an image;
- no cookies, no proxies or credentials from the environment (netrc), and every URL in a result or message
  is redacted.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import connection as u3conn

from facedata.collect.netpolicy import (
    NetPolicy,
    Target,
    UrlRefused,
    check_addresses,
    check_url,
    redact_url,
    resolve,
)
from facedata.imageio import ACCEPTED_FORMATS, sniff_format
from facedata.params import default

REDIRECT_CODES = (301, 302, 303, 307, 308)
#: Declared types that say nothing about the content: the magic bytes decide.
GENERIC_TYPES = (
    "",
    "application/octet-stream",
    "binary/octet-stream",
    "application/binary",
    "application/x-binary",
)
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchConfig:
    user_agent: str
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 60.0
    max_bytes: int = default("ingest.max_bytes")


@dataclass
class FetchResult:
    url: str  # as requested (redacted)
    data: bytes | None = None
    code: str | None = None  # reason code when it failed: timeout, http_404, too_large, ...
    message: str | None = None
    status: int | None = None  # the last HTTP status seen
    final_url: str | None = None  # after redirects (redacted)
    headers: dict[str, str] = field(default_factory=dict)  # content-type, etag, last-modified, retry-after...
    retry_after: float | None = None  # seconds, from a 429/503's Retry-After
    redirects: list[str] = field(default_factory=list)
    note: str | None = None  # something worth recording about a success (a mislabelled content type)
    out_of_time: bool = False  # a timeout that used the whole total timeout (crawl.total_timeout_s)

    @property
    def ok(self) -> bool:
        return self.data is not None and self.code is None

    @property
    def error(self) -> str | None:
        return None if self.code is None else f"{self.code}: {self.message}"

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class FetchFailed(Exception):
    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


# ---------------------------------------------------------------------------------------------- connections


def _connect_checked(conn: HTTPConnection, policy: NetPolicy) -> socket.socket:
    """urllib3's `_new_conn`, plus the address policy between DNS resolution and connecting: every address
    the name resolves to is checked, and the socket goes to one of those checked addresses."""
    host, port = conn._dns_host, conn.port  # noqa: SLF001 - urllib3's own name for the host to resolve
    try:
        addresses = resolve(host, port)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    check_addresses(host.lower().rstrip("."), port, addresses, policy)
    last: OSError | None = None
    for _, addr in addresses:
        try:
            sock = u3conn.create_connection(
                (addr, port), conn.timeout, source_address=conn.source_address, socket_options=conn.socket_options
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from exc
        except OSError as exc:
            last = exc
            continue
        peer = sock.getpeername()[0]
        if peer.split("%")[0] not in {a.split("%")[0] for _, a in addresses}:
            sock.close()
            raise UrlRefused("blocked_address", f"connected to {peer}, which DNS did not return for {host}")
        sys.audit("http.client.connect", conn, conn.host, port)
        return sock
    raise NewConnectionError(conn, f"failed to establish a new connection: {last}")


def _adapter(policy: NetPolicy, pool_size: int) -> HTTPAdapter:
    class SafeHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

    class SafeHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

    class SafeHTTPPool(HTTPConnectionPool):
        ConnectionCls = SafeHTTPConnection

    class SafeHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = SafeHTTPSConnection

    class SafeAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": SafeHTTPPool, "https": SafeHTTPSPool}

    return SafeAdapter(pool_connections=max(pool_size, 10), pool_maxsize=pool_size, max_retries=0)


# ------------------------------------------------------------------------------------------------- decoding


class _Decoder:
    """Content-Encoding decoding with a hard cap on the output: a gzip bomb stops at `limit` bytes."""

    def __init__(self, encoding: str, limit: int):
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self.z = None
        elif enc in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self.z = zlib.decompressobj(zlib.MAX_WBITS)
            self.raw_fallback = True
        else:
            raise FetchFailed("unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
        self.encoding = enc
        self.limit = limit
        self.out = bytearray()
        self.started = False

    def feed(self, chunk: bytes) -> None:
        if self.z is None:
            self.out += chunk
            self._check()
            return
        buf = chunk
        while buf:
            try:
                piece = self.z.decompress(buf, self.limit - len(self.out) + 1)
            except zlib.error as exc:
                if self.encoding == "deflate" and not self.started:  # some servers send raw deflate
                    self.z = zlib.decompressobj(-zlib.MAX_WBITS)
                    self.started = True
                    continue
                raise FetchFailed("bad_encoding", f"{self.encoding} data does not decode: {exc}") from exc
            self.started = True
            self.out += piece
            self._check()
            buf = self.z.unconsumed_tail
            if self.z.eof:
                break

    def finish(self) -> bytes:
        if self.z is not None:
            try:
                self.out += self.z.flush(self.limit - len(self.out) + 1)
            except zlib.error as exc:
                raise FetchFailed("bad_encoding", f"{self.encoding} data does not decode: {exc}") from exc
            self._check()
            if not self.z.eof:
                raise FetchFailed("incomplete", f"{self.encoding} stream ended early")
        return bytes(self.out)

    def _check(self) -> None:
        if len(self.out) > self.limit:
            if self.z is None:
                raise FetchFailed("too_large", f"body exceeds the {self.limit}-byte limit (ingest.max_bytes)")
            raise FetchFailed(
                "gzip_bomb", f"{self.encoding} body decodes to more than the {self.limit}-byte limit"
            )


# -------------------------------------------------------------------------------------------------- fetcher


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>)]+")


def _causes(exc: BaseException):
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(
            [
                getattr(e, "reason", None),
                e.__cause__,
                e.__context__,
                *[a for a in e.args if isinstance(a, BaseException)],
            ]
        )


def _has_cause(exc: BaseException, kind: type) -> bool:
    return any(isinstance(e, kind) for e in _causes(exc))


def root_cause(exc: BaseException) -> str:
    """The most specific reason in an exception chain (`[Errno 111] Connection refused`), not urllib3's
    pool and retry wrappers."""
    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno is not None:
            return scrub(f"[Errno {e.errno}] {e.strerror}")
    text = str(exc)
    text = re.sub(r"\w*(Pool|Connection)\(host='[^']*', port=\d+\): ", "", text)
    text = re.sub(r"Max retries exceeded with url: \S+ \(Caused by \w+\(", "", text)
    return scrub(text.strip("()\"' "))


def scrub(text: str) -> str:
    """An exception message with every URL in it redacted, shortened for a log row."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)) or "", str(text))
    return text if len(text) <= 300 else text[:297] + "..."


class Fetcher:
    """A requests session that only makes safe GETs. Thread-safe for concurrent `fetch` calls."""

    def __init__(self, config: FetchConfig, policy: NetPolicy, pool_size: int = 16):
        self.config = config
        self.policy = policy
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc credentials from the environment
        self.session.cookies.set_policy(_NoCookies())
        adapter = _adapter(policy, pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.clear()
        self.session.headers.update(
            {"User-Agent": config.user_agent, "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}
        )

    def close(self) -> None:
        self.session.close()

    def fetch(
        self,
        url: str,
        *,
        expect_image: bool = True,
        accept: str | None = None,
        max_bytes: int | None = None,
        hop_check: Callable[[Target, int], None] | None = None,
    ) -> FetchResult:
        """GET `url` following redirects. `hop_check(target, hop)` runs before every request (hop 0 is `url`
        itself) and may raise UrlRefused (robots.txt, politeness); it is where the crawler plugs in."""
        result = FetchResult(url=redact_url(url) or url)
        limit = max_bytes or self.config.max_bytes
        deadline = time.monotonic() + self.config.total_timeout
        accept = accept or (
            "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5" if expect_image else "*/*"
        )
        seen: set[str] = set()
        current = url
        try:
            for hop in range(self.policy.max_redirects + 1):
                target = check_url(current, self.policy)
                if current in seen:
                    raise FetchFailed("redirect_loop", f"redirected back to {redact_url(current)}")
                seen.add(current)
                if hop_check is not None:
                    hop_check(target, hop)
                result.final_url = redact_url(current)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FetchFailed("timeout", f"total time over {self.config.total_timeout:g} s")
                resp = self.session.get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=(
                        min(self.config.connect_timeout, remaining),
                        min(self.config.read_timeout, remaining),
                    ),
                    headers={"Accept": accept},
                )
                with contextlib.closing(resp):
                    result.status = resp.status_code
                    if resp.status_code in REDIRECT_CODES and resp.headers.get("Location"):
                        nxt = urljoin(current, resp.headers["Location"].strip())
                        result.redirects.append(redact_url(nxt) or nxt)
                        current = nxt
                        continue
                    self._read_final(resp, result, limit, deadline, expect_image)
                    return result
            raise FetchFailed(
                "too_many_redirects", f"more than {self.policy.max_redirects} redirects (crawl.max_redirects)"
            )
        except FetchFailed as exc:
            result.code, result.message = exc.code, exc.message
        except UrlRefused as exc:
            result.code, result.message = exc.code, exc.message
        except requests.exceptions.ConnectTimeout as exc:
            result.code, result.message = "timeout", f"connect timed out ({scrub(exc)})"
        except (requests.exceptions.ReadTimeout, ReadTimeoutError, TimeoutError):
            result.code = "timeout"
            result.message = f"no answer within {self.config.read_timeout:g} s (crawl.read_timeout_s)"
        except requests.exceptions.SSLError as exc:
            result.code, result.message = "tls", root_cause(exc)
        except requests.exceptions.ConnectionError as exc:
            dns = _has_cause(exc, NameResolutionError) or "NameResolutionError" in str(exc)
            result.code, result.message = ("dns" if dns else "connection"), root_cause(exc)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError) as exc:
            result.code, result.message = "bad_url", scrub(exc)
        except (ProtocolError, requests.exceptions.ChunkedEncodingError, OSError) as exc:
            incomplete = "IncompleteRead" in str(exc) or "incomplete" in str(exc).lower()
            result.code = "incomplete" if incomplete else "connection"
            result.message = _incomplete_message(exc, None) if incomplete else root_cause(exc)
        except requests.exceptions.RequestException as exc:
            result.code, result.message = "request_error", scrub(exc)
        result.data = None
        # A server that drips bytes keeps every read alive until the total timeout ends the attempt: another
        # attempt in this run would cost the same again.
        result.out_of_time = result.code == "timeout" and time.monotonic() >= deadline - 0.1
        return result

    def _read_final(
        self, resp: requests.Response, result: FetchResult, limit: int, deadline: float, expect_image: bool
    ) -> None:
        h = resp.headers
        for key in ("content-type", "content-length", "content-encoding", "etag", "last-modified", "retry-after"):
            if h.get(key) is not None:
                result.headers[key] = h[key][:500]
        status = resp.status_code
        if not 200 <= status < 300 or status in (204, 205, 206):
            result.retry_after = parse_retry_after(h.get("retry-after")) if status in (429, 503) else None
            reason = (resp.reason or "").strip()[:80]
            raise FetchFailed(f"http_{status}", f"server answered {status} {reason}".rstrip(), status)
        length = h.get("content-length")
        if length and length.strip().isdigit() and int(length) > limit:
            raise FetchFailed("too_large", f"Content-Length {int(length)} exceeds the {limit}-byte limit")
        declared = (h.get("content-type") or "").split(";")[0].strip().lower()
        if expect_image and declared == "image/svg+xml":
            raise FetchFailed("svg", "declared image/svg+xml: SVG is not a raster image")
        decoder = _Decoder(h.get("content-encoding") or "", limit)
        raw_total = 0
        checked_type = not expect_image
        sock = _socket_of(resp)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchFailed("timeout", f"total time over {self.config.total_timeout:g} s while downloading")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(min(self.config.read_timeout, remaining))
            try:
                chunk = resp.raw.read1(CHUNK, decode_content=False)
            except (ReadTimeoutError, TimeoutError) as exc:
                if time.monotonic() >= deadline - 0.05:
                    raise FetchFailed(
                        "timeout", f"total time over {self.config.total_timeout:g} s while downloading"
                    ) from exc
                raise FetchFailed(
                    "timeout",
                    f"no bytes for {self.config.read_timeout:g} s while downloading (crawl.read_timeout_s)",
                ) from exc
            except ProtocolError as exc:
                raise FetchFailed("incomplete", _incomplete_message(exc, raw_total)) from exc
            if not chunk:
                break
            raw_total += len(chunk)
            if raw_total > limit:
                raise FetchFailed("too_large", f"body exceeds the {limit}-byte limit (ingest.max_bytes)")
            decoder.feed(chunk)
            if not checked_type and len(decoder.out) >= 64:
                result.note = _check_declared_type(declared, bytes(decoder.out[:4096]))
                checked_type = True
        data = decoder.finish()
        if not checked_type:
            result.note = _check_declared_type(declared, data[:4096])
        result.data = data


def _incomplete_message(exc: BaseException, got: int | None) -> str:
    m = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", str(exc))
    if m:
        return f"the connection closed after {m.group(1)} bytes, {m.group(2)} more were announced"
    return root_cause(exc) if got is None else f"the connection broke after {got} bytes ({root_cause(exc)})"


def _check_declared_type(declared: str, head: bytes) -> str | None:
    """Compare the declared Content-Type with the magic bytes; refuse early when neither says raster image."""
    real = sniff_format(head)
    if declared.startswith("image/") or declared in GENERIC_TYPES:
        if (
            declared.startswith("image/")
            and real in ACCEPTED_FORMATS
            and declared.split("/")[1]
            not in (
                real,
                {"jpeg": "jpg", "tiff": "tif"}.get(real, real),
                "pjpeg",
            )
        ):
            return f"content_type_mismatch: declared {declared}, the bytes are {real}"
        return None
    if real in ACCEPTED_FORMATS:
        return f"content_type_mismatch: declared {declared}, the bytes are {real}"
    raise FetchFailed(
        "wrong_content_type", f"declared {declared or 'nothing'} and the bytes are {real or 'not an image'}"
    )


def _socket_of(resp: requests.Response) -> socket.socket | None:
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    return getattr(conn, "sock", None)


class _NoCookies:
    """A cookie policy that accepts nothing: a crawler has no session to keep, and cookies leak."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False

    def domain_return_ok(self, domain, request) -> bool:
        return False

    def path_return_ok(self, path, request) -> bool:
        return False
