"""robots.txt: the RFC 9309 matcher, and the crawler honouring it against a local server (issue 5)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from facedata.cli import main as cli
from facedata.collect.robots import parse, product_token, url_path

from .collect_servers import CONTACT, LocalServer, fast_crawl_params, jpeg, send, static, write_project

ROBOTS = """\
# comments and blank lines are fine
User-agent: otherbot
Disallow: /

User-agent: FaceData-Test
User-agent: someone-else
Disallow: /private/
Allow: /private/public-*.jpg$
Disallow: /*.gif$
Crawl-delay: 0.3

User-agent: *
Disallow: /
"""


def test_groups_longest_match_and_wildcards():
    rules = parse(ROBOTS, "facedata-test/1.0 (+https://example.invalid)")
    assert rules.crawl_delay == pytest.approx(0.3)
    assert rules.allowed("/ok/a.jpg")
    assert not rules.allowed("/private/x.jpg")
    assert rules.allowed("/private/public-1.jpg")  # the longer Allow beats the shorter Disallow
    assert not rules.allowed("/private/public-1.jpg.html")  # `$` anchors the pattern
    assert not rules.allowed("/img/a.gif") and rules.allowed("/img/a.gif?x=1")
    assert rules.allowed("/robots.txt")
    # other agents fall to their own group or to `*`
    assert not parse(ROBOTS, "otherbot").allowed("/ok/a.jpg")
    assert not parse(ROBOTS, "unknownbot/2.0").allowed("/ok/a.jpg")


def test_rfc_details():
    assert product_token("facedata/0.1 (+url)") == "facedata"
    # equal-length Allow and Disallow: Allow wins
    assert parse("User-agent: *\nDisallow: /a\nAllow: /a\n", "x").allowed("/a")
    # an empty Disallow allows everything; rules before any user-agent line are ignored
    assert parse("Disallow: /\nUser-agent: *\nDisallow:\n", "x").allowed("/anything")
    # several groups for the same agent are merged
    merged = parse("User-agent: x\nDisallow: /a\n\nUser-agent: x\nDisallow: /b\n", "x/1")
    assert not merged.allowed("/a/1") and not merged.allowed("/b/1") and merged.allowed("/c")
    # percent-encoding is compared normalised
    assert not parse("User-agent: *\nDisallow: /caf%C3%A9\n", "x").allowed(url_path("http://h/caf%c3%a9/1.jpg"))
    # Request-rate sets an interval
    assert parse("User-agent: *\nRequest-rate: 1/5s\n", "x").crawl_delay == pytest.approx(5.0)
    assert url_path("http://h/a b?q=1") == "/a%20b?q=1"


def _run(project, urls, out):
    result = CliRunner().invoke(cli, ["ingest-urls", str(urls), "--json", str(out), "--root", str(project)])
    report = json.loads(out.read_text())
    assert result.exit_code == (1 if report["failed"] else 0), result.output  # 1: some URLs were not stored
    return report


@pytest.fixture()
def site():
    with LocalServer("127.0.0.1") as server:
        for i, name in enumerate(["ok/a.jpg", "ok/b.jpg", "ok/c.jpg", "private/x.jpg", "private/public-1.jpg"]):
            server.routes["/" + name] = static(jpeg(100 + i))
        yield server


def _project(tmp_path, server, **crawl):
    project = tmp_path / "p"
    write_project(
        project,
        {
            "crawl": fast_crawl_params(
                user_agent=f"facedata-test/1.0 ({CONTACT})", allow_hosts=[f"127.0.0.1:{server.port}"], **crawl
            )
        },
    )
    urls = tmp_path / "u.txt"
    paths = ["/ok/a.jpg", "/private/x.jpg", "/ok/b.jpg", "/private/public-1.jpg", "/ok/c.jpg"]
    urls.write_text("".join(server.url(p) + "\n" for p in paths))
    return project, urls, paths


def test_crawler_honours_robots_and_crawl_delay(site, tmp_path):
    site.routes["/robots.txt"] = lambda req: send(req, 200, ROBOTS.encode(), "text/plain")
    project, urls, paths = _project(tmp_path, site)
    report = _run(project, urls, tmp_path / "r.json")
    status = {u["url"].rsplit(site.base, 1)[1]: u for u in report["urls"]}
    assert status["/private/x.jpg"]["status"] == "failed"
    assert status["/private/x.jpg"]["reason"].startswith("robots: disallowed by")
    assert [status[p]["status"] for p in paths if p != "/private/x.jpg"] == ["stored"] * 4
    assert site.hits_of("/robots.txt") == 1  # cached per host
    assert site.hits_of("/private/x.jpg") == 0
    # Crawl-delay 0.3 s: request starts on the host are at least that far apart (a lower bound: load only
    # makes the gaps longer)
    times = sorted(r["t"] for r in site.record.requests)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[-1] - times[0] >= len(gaps) * 0.3 * 0.95, gaps  # robots.txt + 4 images, 0.3 s apart
    assert min(gaps) >= 0.15, gaps  # single gaps: a looser bound (server-side timestamps jitter under load)
    # the crawl_log row says skipped (not fetched), not failed
    from facedata import manifest

    rows = {r["source_uri"]: r for r in manifest.read("crawl_log", project).to_pylist()}
    assert rows[site.url("/private/x.jpg")]["status"] == "skipped"
    assert rows[site.url("/private/x.jpg")]["attempts"] == 0 or rows[site.url("/private/x.jpg")]["attempts"] == 1


def test_robots_missing_means_allowed(site, tmp_path):
    project, urls, paths = _project(tmp_path, site)  # no /robots.txt route: 404
    report = _run(project, urls, tmp_path / "r.json")
    assert [u["status"] for u in report["urls"]] == ["stored"] * 5
    assert site.hits_of("/robots.txt") == 1


@pytest.mark.parametrize("status", [500, 429])
def test_robots_unreachable_skips_the_host(site, tmp_path, status):
    site.routes["/robots.txt"] = static(b"oops", "text/plain", status)
    project, urls, paths = _project(tmp_path, site, max_retries=0)
    report = _run(project, urls, tmp_path / "r.json")
    assert all(u["status"] == "failed" and u["reason"].startswith("robots_unavailable") for u in report["urls"])
    assert set(site.record.paths()) == {"/robots.txt"}  # no image was requested


def test_robots_redirect_is_followed_and_can_be_turned_off(site, tmp_path):
    site.routes["/robots.txt"] = lambda req: send(req, 301, b"", "text/plain", {"Location": "/real-robots.txt"})
    site.routes["/real-robots.txt"] = static(b"User-agent: *\nDisallow: /ok/\n", "text/plain")
    project, urls, paths = _project(tmp_path, site)
    report = _run(project, urls, tmp_path / "r.json")
    assert [u["status"] for u in report["urls"]] == ["failed", "stored", "failed", "stored", "failed"]
    project2, urls2, _ = _project(tmp_path / "second", site, respect_robots=False)
    report = _run(project2, urls2, tmp_path / "r2.json")
    assert [u["status"] for u in report["urls"]] == ["stored"] * 5
