"""The browser's policy proxy on its own, with raw sockets (issue 14): plain http forwarded request by request
and CONNECT tunnels, both only to what the address policy allows; everything else refused with a reason and
without touching the target. And the page source's URL helpers."""

from __future__ import annotations

import socket

import pytest

from facedata.collect.browserproxy import PolicyProxy
from facedata.collect.netpolicy import NetPolicy
from facedata.collect.webpage import fill_template, site_of

from .collect_servers import LocalServer, json_route, static


def _exchange(proxy: PolicyProxy, raw: bytes, then: bytes | None = None) -> tuple[bytes, bytes]:
    """Send `raw` to the proxy and read its answer; with `then`, send it through the tunnel and read again."""
    host, port = proxy.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        first = _read_response(sock)
        second = b""
        if then is not None:
            sock.sendall(then)
            second = _read_response(sock)
    return first, second


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
        None,
    )
    if length is None and not head.startswith(b"HTTP/1.1 200 Connection"):
        while chunk := sock.recv(65536):
            body += chunk
    else:
        while length is not None and len(body) < length:
            body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture()
def servers():
    with LocalServer("127.0.0.1") as allowed, LocalServer("127.0.0.1") as other:
        allowed.routes["/page"] = static(b"hello", "text/plain", headers={"X-Test": "1"})
        allowed.routes["/api"] = json_route(lambda req: {"ua": req.headers.get("User-Agent")})
        other.routes["/secret"] = static(b"secret", "text/plain")
        policy = NetPolicy.from_strings([f"127.0.0.1:{allowed.port}"])
        with PolicyProxy(policy) as proxy:
            yield allowed, other, proxy


def test_plain_http_only_where_the_policy_allows(servers):
    allowed, other, proxy = servers
    answer, _ = _exchange(
        proxy,
        f"GET {allowed.url('/page')} HTTP/1.1\r\nHost: {allowed.host}:{allowed.port}\r\n"
        "Proxy-Connection: keep-alive\r\nUser-Agent: t/1\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello") and b"X-Test: 1" in answer
    assert b"Connection: close" in answer
    assert "Proxy-Connection" not in allowed.record.requests[0]["headers"]  # hop-by-hop headers stay here
    for url in [
        other.url("/secret"),
        f"http://localhost:{other.port}/secret",
        f"http://[::ffff:127.0.0.1]:{other.port}/secret",
        f"http://0.0.0.0:{other.port}/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ]:
        answer, _ = _exchange(proxy, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403") and b"blocked_address" in answer, url
    answer, _ = _exchange(proxy, b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")  # not a proxy request
    assert answer.startswith(b"HTTP/1.1 400")
    assert other.record.requests == []
    assert [d.code for d in proxy.denied] == ["blocked_address"] * 6


def test_connect_tunnels_only_where_the_policy_allows(servers):
    allowed, other, proxy = servers
    request = b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tunnel/1\r\nConnection: close\r\n\r\n"
    answer, inner = _exchange(proxy, f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\n\r\n".encode(), request)
    assert answer.startswith(b"HTTP/1.1 200") and b'"ua": "tunnel/1"' in inner
    for authority in [f"127.0.0.1:{other.port}", f"localhost:{other.port}", "169.254.169.254:443", "[::1]:443"]:
        answer, _ = _exchange(proxy, f"CONNECT {authority} HTTP/1.1\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403"), authority
    answer, _ = _exchange(proxy, b"CONNECT nonsense HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert other.record.requests == []


def test_fill_template_encodes_for_where_the_query_stands():
    assert (
        fill_template("https://a.org/search?q={query}&n=1", "Ada Lovelace")
        == "https://a.org/search?q=Ada+Lovelace&n=1"
    )
    assert (
        fill_template("https://a.org/people/{query}/photos", "AC/DC & Co")
        == "https://a.org/people/AC%2FDC%20%26%20Co/photos"
    )
    assert fill_template("https://a.org/p/{query}?q={query}#{query}", "É b") == (
        "https://a.org/p/%C3%89%20b?q=%C3%89+b#%C3%89%20b"
    )


def test_site_of_counts_an_upgrade_to_https_as_the_same_site():
    assert site_of("http://A.org/x") == site_of("https://a.org/y") == ("a.org", 443)
    assert site_of("http://127.0.0.1:8000/") != site_of("http://127.0.0.1:8001/")
    assert site_of("chrome-error://chromewebdata/") is None and site_of("about:blank") is None
