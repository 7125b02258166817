"""The web page source in a real headless Chromium, against a JS-rendered image-search site served locally:
results appear only after JavaScript runs, more load on scroll (infinite scroll), images are lazy
(`data-src` with a `data:` placeholder, or `srcset`) (issue 5)."""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest

from facedata import manifest
from facedata.pipeline.runner import run_stage

from .collect_servers import LocalServer, fast_crawl_params, jpeg, json_route, send, static, write_project

CHROMIUM = os.path.exists("/usr/bin/chromium") or shutil.which("chromium")
CHROMEDRIVER = os.path.exists("/usr/bin/chromedriver") or shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")

UA = "facedata-browser-test/1.0"

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
