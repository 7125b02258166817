"""The web page source in a real headless Chromium, against JS-rendered result pages served locally: results
appear only after JavaScript runs, more load on scroll (infinite scroll, inner scroll containers, virtualised
lists), images are lazy (`data-src` with a `data:` placeholder, or `srcset`) (issue 5). Every request the
browser makes goes through the policy proxy: a page whose scripts, iframes and redirects reach for a server
the policy does not allow gets nothing through (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from facedata import manifest
from facedata.pipeline.runner import run_stage

from .collect_servers import (
    CONTACT,
    LocalServer,
    fast_crawl_params,
    jpeg,
    json_route,
    redirect,
    send,
    static,
    write_project,
)

CHROMIUM = os.path.exists("/usr/bin/chromium") or shutil.which("chromium")
CHROMEDRIVER = os.path.exists("/usr/bin/chromedriver") or shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")

UA = f"facedata-browser-test/1.0 ({CONTACT})"

SEARCH_PAGE = b"""<!doctype html>
<html><head><title>Image search</title>
<style>.result { display: block; width: 300px; height: 420px; margin: 8px; }</style></head>
<body><h1>Results</h1><div id="results"></div>
<script>
const q = new URLSearchParams(location.search).get('q');
let page = 0, loading = false, done = false;
async function more() {
  if (loading || done) return;
  loading = true;
  const r = await fetch('/api/results?q=' + encodeURIComponent(q) + '&page=' + page);
  const data = await r.json();
  if (page === 0 && data.items.length === 0) {
    const p = document.createElement('p'); p.className = 'no-results'; p.textContent = 'No results';
    document.body.appendChild(p);
  }
  for (const item of data.items) {
    const a = document.createElement('a');
    a.href = '/item/' + item.id;
    const img = document.createElement('img');
    img.className = 'result';
    img.src = 'data:image/gif;base64,R0lGODlhAQABAAAAACw=';
    if (item.srcset) img.setAttribute('srcset', item.srcset); else img.setAttribute('data-src', item.src);
    a.appendChild(img);
    document.getElementById('results').appendChild(a);
  }
  page += 1; done = !data.more; loading = false;
}
window.addEventListener('scroll', () => {
  if (window.innerHeight + window.scrollY >= document.body.offsetHeight - 100) more();
});
setTimeout(more, 150);
</script></body></html>
"""


@pytest.fixture()
def site():
    with LocalServer("127.0.0.1") as server:

        def results(req):
            q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
            if q.get("q") != "Ada Lovelace":
                return json_route({"items": [], "more": False})(req)
            page = int(q.get("page", "0"))
            items = []
            for i in range(6):
                n = page * 6 + i
                if n == 17:  # a responsive image: the largest srcset candidate is the one to fetch
                    items.append({"id": n, "srcset": "/img/ada-17-small.jpg 100w, /img/ada-17-big.jpg 400w"})
                elif n == 16:  # a relative URL, resolved against the page
                    items.append({"id": n, "src": "img/ada-16.jpg"})
                else:
                    items.append({"id": n, "src": server.url(f"/img/ada-{n}.jpg")})
            if page == 1:
                items.append({"id": 99, "src": server.url("/img/ada-0.jpg")})  # repeated result
            return json_route({"items": items, "more": page < 2})(req)

        server.routes["/search"] = static(SEARCH_PAGE, "text/html; charset=utf-8")
        server.routes["/api/results"] = results
        server.routes["/robots.txt"] = lambda req: send(
            req, 200, b"User-agent: *\nDisallow: /private/\n", "text/plain"
        )
        for n in range(17):
            server.routes[f"/img/ada-{n}.jpg"] = static(jpeg(500 + n))
        server.routes["/img/ada-17-big.jpg"] = static(jpeg(517, (200, 200)))
        server.routes["/img/ada-17-small.jpg"] = static(jpeg(518))
        yield server


def test_js_rendered_infinite_scroll_page(site, tmp_path):
    project = tmp_path / "p"
    write_project(
        project,
        {
            "sources": {
                "cast": ["Ada Lovelace", "Nobody Known"],
                "web_pages": [
                    {
                        "name": "local-search",
                        "url_template": site.url("/search?q={query}"),
                        "item_selector": "img.result",
                        "link_selector": "a",
                        "empty_selector": "p.no-results",
                        "max_scrolls": 8,
                        "scroll_pause_s": 0.4,
                        "idle_scrolls": 2,
                        "max_per_name": 50,
                    },
                    {
                        "name": "forbidden",
                        "url_template": site.url("/private/search?q={query}"),
                        "item_selector": "img",
                        "names": ["Ada Lovelace"],
                    },
                ],
            },
            "crawl": fast_crawl_params(user_agent=UA, allow_hosts=[f"127.0.0.1:{site.port}"], page_timeout_s=15.0),
        },
    )
    assert run_stage("ingest", project) == 0
    images = manifest.read("images", project).to_pylist()
    log = manifest.read("crawl_log", project).to_pylist()
    by_url = {r["source_uri"]: r for r in images}
    expected = [site.url(f"/img/ada-{n}.jpg") for n in range(17)] + [site.url("/img/ada-17-big.jpg")]
    assert sorted(by_url) == sorted(expected)  # all three scroll pages, srcset's largest, relative resolved
    first = by_url[site.url("/img/ada-3.jpg")]
    assert first["source_kind"] == "web_page" and first["query_name"] == "Ada Lovelace"
    assert first["page_url"] == site.url("/item/3")  # the result's own page
    # every image was downloaded once, by the crawler (the browser runs with images off)
    for url in expected:
        assert site.hits_of(urlsplit(url).path) == 1
    assert site.hits_of("/img/ada-17-small.jpg") == 0
    # the browser sent our user agent, and really ran the page's JavaScript (it called the results API)
    api_calls = [r for r in site.record.requests if r["path"].startswith("/api/results")]
    assert len(api_calls) >= 3 and all(r["headers"].get("User-Agent") == UA for r in api_calls)
    # a name without results and a page that robots.txt forbids are visible as rows
    rows = {
        (r["source_name"], r["query_name"]): r
        for r in log
        if r["source_kind"] == "web_page" and r["image_id"] is None
    }
    assert rows[("local-search", "Nobody Known")]["reason"].startswith("no_results")
    forbidden = rows[("forbidden", "Ada Lovelace")]
    assert forbidden["status"] == "skipped" and forbidden["reason"].startswith("robots")
    assert site.hits_of("/private/search") == 0
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["per_source"]["local-search"]["stored"] == 18


def _escape_page(allowed: LocalServer, other: LocalServer) -> bytes:
    """A result page that reaches for `other` every way a page can, then shows two results."""
    b, port = other.base, other.port
    return f"""<!doctype html>
<html><head><title>results</title>
<link rel="stylesheet" href="http://localhost:{port}/css">
<link rel="prefetch" href="{b}/prefetch">
<script src="{b}/script.js"></script></head>
<body><h1>Results</h1>
<iframe src="{b}/iframe"></iframe>
<iframe src="/bounce?to={b}/iframe-redirect"></iframe>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="{b}/form" target="sink"><input name="x" value="1"></form>
<div id="results"></div>
<script>
const quiet = p => p.catch(() => null);
quiet(fetch('{b}/fetch'));
quiet(fetch('/bounce?to={b}/fetch-redirect'));
quiet(fetch('{b}/post', {{method: 'POST', body: 'secret', mode: 'no-cors'}}));
quiet(fetch('http://[::ffff:127.0.0.1]:{port}/v6-mapped'));
quiet(fetch('http://0.0.0.0:{port}/zero'));
quiet(fetch('http://127.1:{port}/short'));
quiet(fetch('http://2130706433:{port}/decimal'));
quiet(fetch('https://127.0.0.1:{port}/tls'));
try {{ new WebSocket('ws://127.0.0.1:{port}/ws'); }} catch (e) {{}}
navigator.sendBeacon('{b}/beacon', 'x');
const x = new XMLHttpRequest(); x.open('GET', '{b}/xhr'); x.send();
new Worker(URL.createObjectURL(new Blob(["fetch('{b}/worker').catch(() => 0)"])));
document.getElementById('f').submit();
setTimeout(() => {{
  for (const n of [1, 2]) {{
    const img = document.createElement('img');
    img.className = 'result';
    img.setAttribute('data-src', '/img/ok-' + n + '.jpg');
    document.getElementById('results').appendChild(img);
  }}
}}, 400);
</script></body></html>""".encode()


def test_no_browser_request_escapes_the_address_policy(tmp_path):
    """Chromium runs behind facedata's policy proxy: the allowed test host works, a second local server on
    another port, not allowed, sees no request at all, whatever the page tries; result pages that land
    elsewhere (a refused redirect, a script navigation, a consent page on another allowed host) are
    `page_failed` rows saying where they went, not `no_results`."""
    with (
        LocalServer("127.0.0.1") as site,
        LocalServer("127.0.0.1") as other,
        LocalServer("127.0.0.1") as consent,
    ):

        def search(req):
            q = parse_qs(urlsplit(req.path).query).get("q", [""])[0]
            if q == "Redirected Name":
                return redirect(f"{other.base}/landing")(req)
            if q == "Consent Name":
                return redirect(consent.url("/consent?continue=/search"))(req)
            if q == "Script Away":
                body = f"<html><body><script>location.href = '{other.base}/js-nav';</script></body></html>"
                return static(body.encode(), "text/html")(req)
            return static(_escape_page(site, other), "text/html; charset=utf-8")(req)

        def bounce(req):
            return redirect(parse_qs(urlsplit(req.path).query)["to"][0])(req)

        site.routes.update({"/search": search, "/bounce": bounce})
        site.routes["/img/ok-1.jpg"] = static(jpeg(601))
        site.routes["/img/ok-2.jpg"] = static(jpeg(602))
        consent.routes["/consent"] = static(
            b"<html><body><form>Accept all cookies?</form></body></html>", "text/html"
        )
        project = tmp_path / "p"
        write_project(
            project,
            {
                "sources": {
                    "cast": ["Ada Lovelace", "Redirected Name", "Consent Name", "Script Away"],
                    "web_pages": [
                        {
                            "name": "local",
                            "url_template": site.url("/search?q={query}"),
                            "item_selector": "img.result",
                            "wait_s": 5,
                            "max_scrolls": 1,
                            "scroll_pause_s": 0.3,
                        }
                    ],
                },
                "crawl": fast_crawl_params(
                    allow_hosts=[f"127.0.0.1:{site.port}", f"127.0.0.1:{consent.port}"], page_timeout_s=15.0
                ),
            },
        )
        assert run_stage("ingest", project) == 0
        time.sleep(0.5)  # anything still in flight would have arrived by now
        assert other.record.requests == []  # nothing the page tried reached the server that is not allowed
        images = manifest.read("images", project).to_pylist()
        assert sorted(r["source_uri"] for r in images) == [site.url("/img/ok-1.jpg"), site.url("/img/ok-2.jpg")]
        assert site.hits_of("/bounce") >= 2  # the page's own requests to the allowed host went through
        rows = {r["query_name"]: r for r in manifest.read("crawl_log", project).to_pylist() if not r["image_id"]}
        for name, words in [
            ("Redirected Name", f"led to {other.base}/landing, refused by policy (blocked_address"),
            ("Script Away", f"led to {other.base}/js-nav, refused by policy (blocked_address"),
            ("Consent Name", f"went to {consent.base}/consent?continue=/search instead of a page on 127.0.0.1:"),
        ]:
            assert rows[name]["status"] == "failed" and rows[name]["reason"].startswith("page_failed: "), name
            assert words in rows[name]["reason"], (name, rows[name]["reason"])
        assert consent.hits_of("/consent") == 1


VIRTUAL_PAGE = b"""<!doctype html>
<html><head><title>photos</title></head><body>
<div id="list" style="height: 600px; overflow-y: auto; width: 400px; border: 1px solid #888">
  <div id="spacer" style="position: relative; height: 3000px"></div>
</div>
<script>
// A virtualised list in an inner scroll container: only the rows near the viewport exist in the DOM, the
// window itself never scrolls.
const total = 30, rowH = 100, list = document.getElementById('list'), spacer = document.getElementById('spacer');
function row(i) {
  const a = document.createElement('a');
  a.href = i === 3 ? 'javascript:void(0)' : '/photo/' + i;
  a.style = 'position: absolute; top: ' + (i * rowH) + 'px; height: 90px; width: 90px; display: block';
  const img = document.createElement('img');
  img.className = 'result';
  img.src = 'data:image/gif;base64,R0lGODlhAQABAAAAACw=';
  if (i % 5 === 0) {
    img.setAttribute('srcset', '/img/c_fill,w_100/v-' + i + '.jpg 100w, /img/c_fill,w_400/v-' + i + '.jpg 400w');
  } else if (i === 1) {
    img.setAttribute('data-src', '{"src": "/img/v-1.jpg", "w": 400}');
    img.setAttribute('src', '/img/v-1.jpg');
  } else if (i === 2) {
    img.setAttribute('data-src', 'javascript:alert(1)');
    img.setAttribute('src', '/img/v-2.jpg');
  } else {
    img.setAttribute('data-src', '/img/v-' + i + '.jpg');
  }
  a.appendChild(img);
  return a;
}
function render() {
  const first = Math.max(0, Math.floor(list.scrollTop / rowH) - 2);
  const last = Math.min(total, Math.floor((list.scrollTop + 600) / rowH) + 6);
  spacer.replaceChildren(...Array.from({length: last - first}, (_, k) => row(first + k)));
}
list.addEventListener('scroll', () => setTimeout(render, 150));
setTimeout(render, 100);
</script></body></html>
"""


def test_inner_scroll_virtualised_list_srcset_and_path_query(tmp_path):
    """`{query}` in a path is %20-encoded; the last item is scrolled into view inside its own scroll container
    and the reader waits for the list to change; srcset URLs with commas survive; attribute values that are
    not http(s) URLs (JSON, javascript:) give way to the next attribute; a javascript: link is no page_url."""
    with LocalServer("127.0.0.1") as site:
        site.routes["/people/Ada%20Lovelace/photos"] = static(VIRTUAL_PAGE, "text/html; charset=utf-8")
        expected = []
        for i in range(30):
            path = f"/img/c_fill,w_400/v-{i}.jpg" if i % 5 == 0 else f"/img/v-{i}.jpg"
            site.routes[path] = static(jpeg(700 + i))
            expected.append(site.url(path))
        project = tmp_path / "p"
        write_project(
            project,
            {
                "sources": {
                    "cast": ["Ada Lovelace"],
                    "web_pages": [
                        {
                            "name": "virtual",
                            "url_template": site.url("/people/{query}/photos?size=large"),
                            "item_selector": "img.result",
                            "link_selector": "a",
                            "max_scrolls": 12,
                            "scroll_pause_s": 1.5,
                            "idle_scrolls": 2,
                        }
                    ],
                },
                "crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{site.port}"], page_timeout_s=15.0),
            },
        )
        assert run_stage("ingest", project) == 0
        images = {r["source_uri"]: r for r in manifest.read("images", project).to_pylist()}
        log = manifest.read("crawl_log", project).to_pylist()
        assert sorted(images) == sorted(expected), sorted(set(expected) - set(images))
        assert [r for r in log if r["status"] != "stored"] == []  # no junk URL was tried
        assert not any("%7B" in p or "javascript" in p or "w_100" in p for p in site.record.paths())
        page = site.url("/people/Ada%20Lovelace/photos?size=large")
        assert images[site.url("/img/v-3.jpg")]["page_url"] == page
        assert images[site.url("/img/v-4.jpg")]["page_url"] == site.url("/photo/4")
