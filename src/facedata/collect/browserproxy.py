"""The browser's only way out: a forward proxy on 127.0.0.1 that applies the crawler's address policy to every
request Chromium makes.

Checking the result page's URL is not enough: Chromium follows redirects, runs the page's scripts, loads
iframes, workers and fetches, to any address. So the browser source starts Chromium with this proxy as its
proxy for everything (`--proxy-server`, and `--proxy-bypass-list=<-loopback>` because Chromium otherwise
goes straight to loopback addresses). Each request is checked here with `facedata.collect.netpolicy`, the same
rules as the crawler's own downloads: the URL (scheme, host, IP literal, `localhost` names), then the name
is resolved here and every address checked, and the connection goes to one of those checked addresses (no
second lookup a rebinding DNS server could answer differently). A redirect is the browser's next request,
so every hop is checked again. Plain http is forwarded request by request; https and WebSockets arrive as
CONNECT tunnels to a host and port, which are checked the same way. Anything refused gets a 403 and is
recorded in `denied`; anything else the proxy cannot handle gets an error, never a pass-through.
"""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from facedata.collect.netpolicy import NetPolicy, UrlRefused, check_addresses, check_url, redact_url, resolve

#: Headers that belong to one connection, not to the request or response passed on (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te"}
    | {"trailer", "transfer-encoding", "upgrade"}
)
MAX_REQUEST_BODY = 20_000_000
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Denial:
    url: str  # redacted; `https://host:port/` for a CONNECT
    code: str  # blocked_address | scheme | bad_url | dns | connection
    message: str

    def __str__(self) -> str:
        return f"{self.url}: {self.code}: {self.message}"


class PolicyProxy:
    """`with PolicyProxy(policy) as proxy:` serves on `proxy.address` until the block ends."""

    def __init__(self, policy: NetPolicy, connect_timeout: float = 5.0, idle_timeout: float = 60.0):
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.denied: list[Denial] = []  # every request refused by the policy or that could not connect
        self.requests = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="facedata-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> PolicyProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_sockets, self._sockets = list(self._sockets), set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> PolicyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def denials_since(self, mark: int) -> list[Denial]:
        with self._lock:
            return self.denied[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.denied)

    # ------------------------------------------------------------------------------------- policy + connect

    def connect(self, url: str) -> socket.socket:
        """A socket to `url`'s host and port, checked like the crawler's connections; raises UrlRefused."""
        with self._lock:
            self.requests += 1
        try:
            target = check_url(url, self.policy)
            try:
                addresses = resolve(target.host, target.port)
            except (socket.gaierror, UnicodeError) as exc:
                raise UrlRefused("dns", f"{target.host} does not resolve ({exc})") from exc
            check_addresses(target.host, target.port, addresses, self.policy)
            last: OSError | None = None
            for _, addr in addresses:
                try:
                    sock = socket.create_connection((addr, target.port), timeout=self.connect_timeout)
                except OSError as exc:
                    last = exc
                    continue
                self._track(sock)
                return sock
            raise UrlRefused("connection", f"cannot connect to {target.host}:{target.port} ({last})")
        except UrlRefused as exc:
            with self._lock:
                self.denied.append(Denial(redact_url(url) or url, exc.code, exc.message))
            raise

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: PolicyProxy

    def handle_error(self, request, client_address) -> None:  # a browser closing a tunnel is not news
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.proxy.idle_timeout)

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = f"facedata policy proxy: {code}: {message}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Facedata-Refused", code)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    # ------------------------------------------------------------------------------------------- CONNECT

    def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
        proxy = self.server.proxy
        authority = self.path.strip()
        try:
            port = urlsplit(f"//{authority}").port
        except ValueError:
            port = None
        if not port or "/" in authority or "@" in authority:
            self._refuse(400, "bad_url", f"CONNECT needs HOST:PORT, got {authority!r}")
            return
        try:
            upstream = proxy.connect(f"https://{authority}/")
        except UrlRefused as exc:
            self._refuse(403, exc.code, exc.message)
            return
        try:
            self.send_response(200, "Connection Established")
            self.end_headers()
            self.close_connection = True
            _relay(self.connection, upstream, proxy.idle_timeout)
        finally:
            proxy._untrack(upstream)  # noqa: SLF001 - the proxy's own handler

    # ---------------------------------------------------------------------------------------- plain http

    def _forward(self) -> None:
        proxy = self.server.proxy
        url = self.path
        parts = urlsplit(url)
        if parts.scheme.lower() != "http" or not parts.netloc:
            self._refuse(400, "scheme", f"only absolute http:// requests and CONNECT are proxied ({url[:80]!r})")
            return
        if self.headers.get("Transfer-Encoding"):
            self._refuse(411, "bad_request", "request bodies must have a Content-Length")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            self._refuse(413, "too_large", f"request body over {MAX_REQUEST_BODY} bytes")
            return
        body = self.rfile.read(length) if length else None
        try:
            upstream = proxy.connect(url)
        except UrlRefused as exc:
            self._refuse(403, exc.code, exc.message)
            return
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=proxy.idle_timeout)
        conn.sock = upstream
        answered = False
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP and key.lower() not in connection_tokens:
                    conn.putheader(key, value)
            conn.putheader("Connection", "close")
            conn.endheaders(body)
            resp = conn.getresponse()
            answered = True
            self.send_response_only(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command != "HEAD" and resp.status not in (204, 304) and resp.status >= 200:
                while chunk := resp.read1(CHUNK):
                    self.wfile.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            if not answered:
                self._refuse(502, "connection", f"no answer from the server ({type(exc).__name__}: {exc})"[:200])
            self.close_connection = True
        finally:
            conn.close()
            proxy._untrack(upstream)  # noqa: SLF001 - the proxy's own handler

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward  # noqa: N815


def _relay(client: socket.socket, upstream: socket.socket, idle_timeout: float) -> None:
    """Copy bytes both ways until either side closes or nothing moves for `idle_timeout` seconds."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, upstream)
    sel.register(upstream, selectors.EVENT_READ, client)
    try:
        while True:
            events = sel.select(timeout=idle_timeout)
            if not events:
                return
            for key, _ in events:
                try:
                    data = key.fileobj.recv(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                try:
                    key.data.sendall(data)
                except OSError:
                    return
    finally:
        sel.close()
