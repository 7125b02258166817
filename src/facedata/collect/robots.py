"""robots.txt, as RFC 9309 says, fetched once per host per run and cached.

Python's `urllib.robotparser` takes the first matching rule and knows no `*` or `$`; real robots.txt files
rely on the RFC's longest-match rule (`Disallow: /private/` + `Allow: /private/public.jpg`) and wildcards,
so the matcher here implements the RFC:

- the groups whose user-agent matches our product token (the user agent up to its first `/`), else `*`;
- the longest matching Allow/Disallow pattern wins, Allow on a tie; `*` matches any run, `$` ends the path;
- 2xx: the rules apply; 4xx: no rules (everything allowed); 5xx, 429, network failure: everything
  disallowed for this run (the RFC's "unreachable"); redirects are followed (the fetcher caps them);
- only the first 512 KiB are parsed; `Crawl-delay` and `Request-rate` (non-standard, widely used) set the
  host's minimum interval between requests.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from facedata.collect.netpolicy import Target

MAX_ROBOTS_BYTES = 512 * 1024


@dataclass
class Rules:
    """The rules of one host for our user agent."""

    rules: list[tuple[bool, str]] = field(default_factory=list)  # (allow, pattern)
    crawl_delay: float | None = None
    disallow_all: bool = False
    reason: str | None = None  # why everything is disallowed
    source: str = ""  # robots.txt URL

    def allowed(self, path: str) -> bool:
        if self.disallow_all:
            return False
        if path == "/robots.txt":
            return True
        best_len, best_allow = -1, True
        for allow, pattern in self.rules:
            if _matches(pattern, path):
                n = len(pattern)
                if n > best_len or (n == best_len and allow and not best_allow):
                    best_len, best_allow = n, allow
        return best_allow


def product_token(user_agent: str) -> str:
    """The part of a user agent robots.txt groups are matched against: `facedata/0.1 (+url)` -> `facedata`."""
    token = user_agent.strip().split("/")[0].split()[0] if user_agent.strip() else "*"
    return token.lower()


def parse(text: str, user_agent: str) -> Rules:
    """The rules that apply to `user_agent` in a robots.txt body."""
    token = product_token(user_agent)
    groups: list[tuple[list[str], list[tuple[bool, str]], list[float]]] = []
    agents: list[str] = []
    rules: list[tuple[bool, str]] = []
    delays: list[float] = []
    in_rules = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("user-agent", "useragent"):
            if in_rules:
                groups.append((agents, rules, delays))
                agents, rules, delays, in_rules = [], [], [], False
            agents.append(value.lower())
        elif key in ("allow", "disallow"):
            in_rules = True
            if not agents:
                continue  # rules before any user-agent line belong to no group
            if value:
                rules.append((key == "allow", _normalise(value)))
        elif key == "crawl-delay":
            in_rules = True
            with contextlib.suppress(ValueError):
                delays.append(max(0.0, float(value)))
        elif key == "request-rate":
            in_rules = True
            m = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*([smhd]?)", value)
            if m and int(m.group(1)) > 0:
                unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(3)]
                delays.append(int(m.group(2)) * unit / int(m.group(1)))
    if agents:
        groups.append((agents, rules, delays))
    mine = [g for g in groups if any(a != "*" and a == token for a in g[0])]
    if not mine:
        mine = [g for g in groups if "*" in g[0]]
    out = Rules()
    for _, group_rules, group_delays in mine:
        out.rules.extend(group_rules)
        if group_delays:
            out.crawl_delay = max([out.crawl_delay or 0.0, *group_delays])
    return out


def _normalise(path: str) -> str:
    """Percent-encode what needs it and decode what needn't, so patterns and paths compare alike."""
    return quote(unquote(path), safe="/*$?=&;:@!,+~%-._")


def _matches(pattern: str, path: str) -> bool:
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    regex = "".join(".*" if c == "*" else re.escape(c) for c in body)
    return re.match(regex + ("$" if anchored else ""), path) is not None


def url_path(url: str) -> str:
    parts = urlsplit(url)
    path = _normalise(parts.path or "/")
    return path + ("?" + parts.query if parts.query else "")


class RobotsCache:
    """Fetches each host's robots.txt once (one fetch at a time per host) and answers `allowed(target)`.

    `fetch` is a callable `(url) -> FetchResult` (the crawler passes its Fetcher with the address policy on
    and robots checks off, so robots.txt itself never asks about robots.txt)."""

    def __init__(self, fetch, user_agent: str, enabled: bool = True):
        self.fetch = fetch
        self.user_agent = user_agent
        self.enabled = enabled
        self._rules: dict[str, Rules] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetched: list[str] = []  # robots.txt URLs fetched, in order (observability, tests)

    def rules_for(self, target: Target) -> tuple[Rules, bool]:
        """The host's rules, and whether this call fetched them."""
        key = target.host_key
        if key in self._rules:
            return self._rules[key], False
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._rules:
                return self._rules[key], False
            rules = self._load(target)
            self._rules[key] = rules
            return rules, True

    def known(self, host_key: str) -> Rules | None:
        return self._rules.get(host_key)

    def _load(self, target: Target) -> Rules:
        host = f"[{target.host}]" if ":" in target.host else target.host
        default_port = {"http": 80, "https": 443}[target.scheme]
        netloc = host if target.port == default_port else f"{host}:{target.port}"
        url = f"{target.scheme}://{netloc}/robots.txt"
        self.fetched.append(url)
        res = self.fetch(url)
        if res.ok:
            text = res.data[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            rules = parse(text, self.user_agent)
        elif (
            res.code
            and res.code.startswith("http_")
            and res.status is not None
            and 400 <= res.status < 500
            and (res.status != 429)
        ):
            rules = Rules()  # RFC 9309 2.3.1.3: unavailable, any URL may be fetched
        else:
            rules = Rules(disallow_all=True, reason=f"robots.txt unreachable ({res.error}): host skipped this run")
        rules.source = url
        return rules

    def allowed(self, target: Target) -> tuple[bool, str | None, bool]:
        """(allowed, reason when not, whether robots.txt was fetched by this call)."""
        if not self.enabled:
            return True, None, False
        rules, fetched = self.rules_for(target)
        if rules.disallow_all:
            return False, rules.reason, fetched
        path = url_path(target.url)
        if rules.allowed(path):
            return True, None, fetched
        return False, f"disallowed by {rules.source} for {product_token(self.user_agent)}", fetched
