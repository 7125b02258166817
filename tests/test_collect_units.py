"""Unit tests of the crawler's parts: address policy, redaction, URL lists, retries, decoding caps, params."""

from __future__ import annotations

import gzip
import ipaddress
import random
import zlib

import pytest

from facedata.collect.crawler import HostGate, backoff_delay
from facedata.collect.fetch import FetchFailed, _check_declared_type, _Decoder, parse_retry_after
from facedata.collect.netpolicy import (
    NetPolicy,
    UrlRefused,
    blocked_reason,
    check_addresses,
    check_url,
    parse_allow_host,
    redact_url,
)
from facedata.collect.urllist import read_url_list
from facedata.params import ParamsError, with_defaults

# Addresses are only classified here (pure functions): no test connects to a private or link-local address.
BLOCKED = [
    "127.0.0.1",
    "127.0.0.2",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "100.64.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("addr", BLOCKED)
def test_blocked_ranges(addr):
    assert blocked_reason(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses(addr):
    assert blocked_reason(ipaddress.ip_address(addr)) is None


def test_check_url_rules():
    policy = NetPolicy.from_strings(["127.0.0.1:8000", "archive.intranet"])
    assert check_url("http://127.0.0.1:8000/a.jpg", policy).host_key == "http://127.0.0.1:8000"
    assert check_url("https://Archive.Intranet./x", policy).host == "archive.intranet"
    for url, code in [
        ("http://127.0.0.1:8001/a.jpg", "blocked_address"),  # allowed on another port only
        ("http://127.0.0.2:8000/a.jpg", "blocked_address"),
        ("http://localhost/a.jpg", "blocked_address"),
        ("http://[::1]/a.jpg", "blocked_address"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.org/a.jpg", "scheme"),
        ("/relative.jpg", "scheme"),
        ("http:///nohost", "bad_url"),
        ("http://exa mple.org/", "bad_url"),
        ("http://example.org:99999/", "bad_url"),
    ]:
        with pytest.raises(UrlRefused) as err:
            check_url(url, policy)
        assert err.value.code == code, url
    # a public name passes the URL check; its addresses are checked at connect time
    assert check_url("http://example.org/a.jpg", NetPolicy()).port == 80
    with pytest.raises(UrlRefused):
        check_addresses("evil.example", 80, [(2, "93.184.216.34"), (2, "10.0.0.5")], NetPolicy())
    check_addresses("ok.example", 80, [(2, "93.184.216.34")], NetPolicy())
    check_addresses("archive.intranet", 443, [(2, "10.0.0.5")], policy)


def test_parse_allow_host():
    assert str(parse_allow_host("127.0.0.1:8000")) == "127.0.0.1:8000"
    assert parse_allow_host("[::1]:80").host == "::1"
    assert parse_allow_host("Host.Example").port is None
    for bad in ("a b", "host:", "host:0", "host:70000", "http://host/"):
        with pytest.raises(ValueError):
            parse_allow_host(bad)


def test_redact_url():
    assert redact_url("http://u:p@h.org/a?token=s3cr3t&w=1") == "http://***@h.org/a?token=***&w=1"
    assert redact_url("https://h.org/a.jpg?X-Amz-Signature=abc&size=2") == (
        "https://h.org/a.jpg?X-Amz-Signature=***&size=2"
    )
    assert redact_url("https://h.org/a.jpg?w=1") == "https://h.org/a.jpg?w=1"
    assert redact_url(None) is None


def test_url_lists(tmp_path):
    plain = tmp_path / "u.txt"
    plain.write_text("# comment\n\nhttp://h/a,b.jpg\n  http://h/c.jpg  \n")
    entries = read_url_list(plain, "Default")
    assert [(e.line, e.url, e.name) for e in entries] == [
        (3, "http://h/a,b.jpg", "Default"),
        (4, "http://h/c.jpg", "Default"),
    ]
    csv = tmp_path / "u.txt"
    csv.write_text('name,url\n"Doe, Jane",http://h/1.jpg\n,http://h/2.jpg\n')
    entries = read_url_list(csv, "Fallback")
    assert [(e.url, e.name) for e in entries] == [("http://h/1.jpg", "Doe, Jane"), ("http://h/2.jpg", "Fallback")]
    headerless = tmp_path / "u.csv"
    headerless.write_text("http://h/1.jpg,Ann\nhttp://h/2.jpg\n,Bob\n")
    entries = read_url_list(headerless)
    assert [(e.url, e.name, bool(e.error)) for e in entries] == [
        ("http://h/1.jpg", "Ann", False),
        ("http://h/2.jpg", None, False),
        (",Bob", "Bob", True),
    ]


def test_retry_after_and_backoff():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 30) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    rng = random.Random(0)
    for attempt in range(1, 8):
        d = backoff_delay(attempt, 1.0, 30.0, rng)
        step = min(30.0, 2 ** (attempt - 1))
        assert step / 2 <= d <= step
    delays = {round(backoff_delay(3, 1.0, 30.0, rng), 6) for _ in range(20)}
    assert len(delays) > 10  # jitter spreads retries


def test_host_gate():
    gate = HostGate(interval=10.0, concurrency=2)
    assert gate.ready_at("h") == 0.0
    gate.start("h", 100.0)
    assert gate.ready_at("h") == pytest.approx(110.0)
    gate.start("h", 110.0)
    assert gate.ready_at("h") is None  # two in flight
    gate.finish("h")
    gate.penalize("h", 500.0)
    assert gate.ready_at("h") == 500.0
    assert gate.ready_at("other") == 0.0


def test_decoder_caps():
    body = b"x" * 10_000
    d = _Decoder("gzip", 20_000)
    d.feed(gzip.compress(body))
    assert d.finish() == body
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(body) + raw.flush()
    d = _Decoder("deflate", 20_000)  # raw deflate, as some servers send
    d.feed(deflated)
    assert d.finish() == body
    d = _Decoder("gzip", 1000)
    with pytest.raises(FetchFailed) as err:
        d.feed(gzip.compress(b"\0" * 10_000_000))
    assert err.value.code == "gzip_bomb" and len(d.out) <= 1001
    with pytest.raises(FetchFailed) as err:
        _Decoder("br", 10)
    assert err.value.code == "unsupported_encoding"
    d = _Decoder("gzip", 20_000)
    d.feed(gzip.compress(body)[:-20])
    with pytest.raises(FetchFailed):
        d.finish()


def test_declared_type_against_magic_bytes():
    jpeg_head = b"\xff\xd8\xff\xe0" + b"\0" * 60
    assert _check_declared_type("image/jpeg", jpeg_head) is None
    assert _check_declared_type("", jpeg_head) is None
    assert "declared image/png" in _check_declared_type("image/png", jpeg_head)
    assert "declared text/plain" in _check_declared_type("text/plain", jpeg_head)
    with pytest.raises(FetchFailed) as err:
        _check_declared_type("application/json", b'{"a": 1}')
    assert err.value.code == "wrong_content_type"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_params_checks():
    base = {"sources": {"url_lists": [{"path": "u.txt"}]}}
    with_defaults(base)
    for bad, words in [
        ({"sources": {"url_lists": [{"file": "u.txt"}]}}, "unknown key"),
        ({"sources": {"cast": [{"name": "X", "wikidata": "42"}]}}, "Wikidata item id"),
        ({"sources": {"wikimedia": [{}]}}, "no names to search"),
        (
            {"sources": {"web_pages": [{"name": "a", "url_template": "http://h/", "item_selector": "img"}]}},
            "{query}",
        ),
        ({"crawl": {"allow_hosts": ["not a host"]}}, "HOST[:PORT]"),
        ({"crawl": {"browser_args": ["--proxy-server=direct://"]}}, "policy proxy"),
        ({"crawl": {"browser_args": ["--no-proxy-server"]}}, "policy proxy"),
        ({"crawl": {"max_concurrency": 0}}, "1..256"),
        ({"ingest": {"video_faces_only": 1}}, "bool"),
    ]:
        with pytest.raises(ParamsError) as err:
            with_defaults(bad)
        assert words in str(err.value), (bad, str(err.value))
