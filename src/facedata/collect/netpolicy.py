"""Which URLs the crawler may fetch, and which addresses it may connect to.

The rules (security): only http(s); no fetch may reach a private, loopback, link-local, multicast,
reserved or unspecified address unless its host is allowed explicitly (`--allow-host HOST[:PORT]` or
`crawl.allow_hosts`, for tests and intranet archives). A URL check before connecting gives early, readable
reasons; the decisive check is `check_addresses`, run by the HTTP connection itself on the addresses DNS
returned, right before it connects to one of them (see `facedata.collect.fetch`), so a name that resolves to
an internal address (or is re-bound to one between two lookups) is refused on every request and every
redirect hop.

URLs written to manifests, logs and reports go through `redact_url` first: user:password@ and the values of
query parameters that usually carry secrets never reach a log.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from facedata.params import default

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Query parameters whose values are replaced by *** in anything facedata writes.
SECRET_PARAMS = re.compile(
    r"^(access_?token|api_?key|apikey|auth|authorization|client_secret|key|password|passwd|pwd|secret|"
    r"session|sessionid|sig|signature|token|x-amz-signature|x-amz-credential|x-amz-security-token)$",
    re.IGNORECASE,
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")


class UrlRefused(Exception):
    """A URL or address the policy does not allow. `code` is the crawl_log reason code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AllowRule:
    host: str  # lower-case host name or IP literal, without brackets
    port: int | None  # None: any port

    def matches(self, host: str, port: int) -> bool:
        return self.host == host and (self.port is None or self.port == port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_allow_host(text: str) -> AllowRule:
    """`HOST`, `HOST:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`; raises ValueError with the accepted forms."""
    text = text.strip()
    m = _HOST_RE.match(text)
    if not m:
        raise ValueError(f"not a HOST[:PORT] allow rule: {text!r} (e.g. 127.0.0.1:8000, archive.intranet)")
    host = m.group(1).strip("[]").lower().rstrip(".")
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port out of range in allow rule {text!r}")
    return AllowRule(host, port)


@dataclass(frozen=True)
class NetPolicy:
    """The fetch rules for one run: allowed hosts (exempt from the address-range check) and redirect cap."""

    allow: tuple[AllowRule, ...] = ()
    max_redirects: int = default("crawl.max_redirects")

    @classmethod
    def from_strings(cls, hosts: Iterable[str], max_redirects: int = default("crawl.max_redirects")) -> NetPolicy:
        return cls(tuple(parse_allow_host(h) for h in hosts), max_redirects)

    def allowed(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        return any(rule.matches(host, port) for rule in self.allow)


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower-case, no brackets
    port: int

    @property
    def host_key(self) -> str:
        """Politeness, robots.txt and rate limits are per scheme + host + port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def check_url(url: str, policy: NetPolicy) -> Target:
    """Parse and check a URL before any network use; raises UrlRefused(code, message)."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("bad_url", "empty URL")
    url = url.strip()
    if any(c in url for c in "\r\n\t\x00 "):
        raise UrlRefused("bad_url", "URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("bad_url", f"unparsable URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRefused("scheme", f"only http and https are fetched, not {scheme or 'a relative URL'!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("bad_url", "URL has no host")
    port = port or DEFAULT_PORTS[scheme]
    target = Target(url, scheme, host, port)
    if policy.allowed(host, port):
        return target
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise UrlRefused(
                "blocked_address", f"{host} names a local host; allow it explicitly with --allow-host"
            ) from None
        return target
    why = blocked_reason(ip)
    if why:
        raise UrlRefused(
            "blocked_address", f"{host} is {why}; allow it explicitly with --allow-host {host}:{port}"
        )
    return target


def blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address may not be fetched from, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 address itself
            inner = blocked_reason(ip.ipv4_mapped)
            return f"{inner} (as {ip})" if inner else None
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = blocked_reason(embedded)
            if inner:
                return f"{inner} (embedded in {ip})"
    for attr, label in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_private", "a private-range address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, attr):
            return label
    if not ip.is_global:
        return "not a globally routable address"
    return None


def resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(family, address) pairs DNS gives for host, in resolver order, without duplicates."""
    out: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        pair = (family, sockaddr[0])
        if pair not in out:
            out.append(pair)
    return out


def check_addresses(host: str, port: int, addresses: list[tuple[int, str]], policy: NetPolicy) -> None:
    """Refuse the connection when any resolved address is in a blocked range (a name with one internal
    address among public ones is a rebinding trick), unless the host is allowed."""
    if policy.allowed(host, port):
        return
    for _, addr in addresses:
        why = blocked_reason(ipaddress.ip_address(addr.split("%")[0]))
        if why:
            raise UrlRefused(
                "blocked_address",
                f"{host} resolves to {addr}, {why}; allow it explicitly with --allow-host {host}:{port}",
            )


def redact_url(url: str | None) -> str | None:
    """The URL without credentials: no user:password@, secret-looking query values replaced by ***."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAMS.match(k) for k, _ in pairs):
            query = urlencode(
                [(k, "***" if SECRET_PARAMS.match(k) else v) for k, v in pairs], quote_via=quote, safe="*/:,"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
