"""The Wikimedia source (Commons search + file info, Wikidata P18) through the `ingest` stage, against a local
server answering JSON shaped like the real APIs (issue 5)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from facedata import manifest
from facedata.pipeline.runner import run_stage

from .collect_servers import LocalServer, fast_crawl_params, jpeg, json_route, send, static, write_project
from .projects import run_report

UA = "facedata-wiki-test/1.0 (mailto:test@example.invalid)"


def _imageinfo(server: LocalServer, title: str, mime: str = "image/jpeg", artist: str = "Jane Roe") -> dict:
    stem = title.split(":", 1)[1].replace(" ", "_")
    return {
        "size": 123456,
        "width": 2000,
        "height": 1500,
        "thumburl": server.url(f"/thumb/{stem}"),
        "thumbwidth": 1024,
        "thumbheight": 768,
        "url": server.url(f"/orig/{stem}"),
        "descriptionurl": f"https://commons.wikimedia.org/wiki/{title}",
        "descriptionshorturl": "https://commons.wikimedia.org/w/index.php?curid=1",
        "mime": mime,
        "extmetadata": {
            "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page", "hidden": ""},
            "Artist": {
                "value": f'<a href="//commons.wikimedia.org/wiki/User:X" title="User:X">{artist}</a>',
                "source": "x",
            },
            "Credit": {"value": "<span>Own work</span>", "source": "x"},
        },
    }


def _page(server, title, index, **kw) -> dict:
    return {
        "pageid": 1000 + index,
        "ns": 6,
        "title": title,
        "index": index,
        "imagerepository": "local",
        "imageinfo": [_imageinfo(server, title, **kw)],
    }


@pytest.fixture()
def wiki():
    with LocalServer("127.0.0.1") as server:
        state = {"lagged": False}
        seen: list[dict] = []

        def commons(req):
            q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
            seen.append(q)
            if not state["lagged"]:  # the first call: the servers are lagged, come back in a second
                state["lagged"] = True
                body = b'{"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds lagged"}}'
                send(req, 200, body, "application/json", {"Retry-After": "1"})
                return
            if "titles" in q:
                titles = q["titles"].split("|")
                return json_route(
                    {"batchcomplete": True, "query": {"pages": [_page(server, t, 0) for t in titles]}}
                )(req)
            search = q.get("gsrsearch", "")
            if search.startswith("Grace Hopper"):
                return json_route({"error": {"code": "internal_api_error", "info": "search backend down"}})(req)
            offset = int(q.get("gsroffset", "0"))
            files = [
                ("File:Ada Lovelace portrait.jpg", {}),
                ("File:Ada Lovelace signature.svg", {"mime": "image/svg+xml"}),
                ("File:Ada Lovelace 1840.jpg", {"artist": "Alfred Chalon"}),
                ("File:Ada Lovelace daguerreotype.jpg", {}),
                ("File:Ada Lovelace in 1852.png", {"mime": "image/png"}),
            ]
            batch = files[offset : offset + 3]
            doc = {
                "batchcomplete": True,
                "query": {"pages": [_page(server, t, offset + i + 1, **kw) for i, (t, kw) in enumerate(batch)]},
            }
            if offset + 3 < len(files):
                doc["continue"] = {"gsroffset": offset + 3, "continue": "gsroffset||"}
            return json_route(doc)(req)

        def wikidata(req):
            q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
            assert q["action"] == "wbgetclaims" and q["property"] == "P18"
            claims = {
                "P18": [
                    {
                        "mainsnak": {
                            "snaktype": "value",
                            "property": "P18",
                            "datavalue": {
                                "value": "Ada Byron daguerreotype by Antoine Claudet 1843 or 1850.jpg",
                                "type": "string",
                            },
                            "datatype": "commonsMedia",
                        },
                        "type": "statement",
                        "rank": "normal",
                    }
                ]
            }
            return json_route({"claims": claims if q["entity"] == "Q7259" else {}})(req)

        server.routes["/commons/w/api.php"] = commons
        server.routes["/wikidata/w/api.php"] = wikidata
        # robots.txt governs crawlers of pages, not the API: the API paths are disallowed, images are not
        server.routes["/robots.txt"] = static(
            b"User-agent: *\nDisallow: /commons/w/\nDisallow: /wikidata/w/\n", "text/plain"
        )
        for i, stem in enumerate(
            [
                "Ada Lovelace portrait.jpg",
                "Ada Lovelace 1840.jpg",
                "Ada Lovelace daguerreotype.jpg",
                "Ada Lovelace in 1852.png",
                "Ada Byron daguerreotype by Antoine Claudet 1843 or 1850.jpg",
            ]
        ):
            from urllib.parse import quote

            server.routes[quote(f"/thumb/{stem}".replace(" ", "_"))] = static(jpeg(300 + i))
        yield server, seen


def test_wikimedia_source_through_the_stage(wiki, tmp_path):
    server, seen = wiki
    project = tmp_path / "p"
    write_project(
        project,
        {
            "sources": {
                "cast": [{"name": "Ada Lovelace", "wikidata": "Q7259"}, "Grace Hopper"],
                "wikimedia": [
                    {
                        "api": server.url("/commons/w/api.php"),
                        "wikidata_api": server.url("/wikidata/w/api.php"),
                        "max_per_name": 10,
                        "thumb_width": 1024,
                    }
                ],
            },
            "crawl": fast_crawl_params(user_agent=UA, allow_hosts=[f"127.0.0.1:{server.port}"]),
        },
    )
    assert run_stage("ingest", project) == 0
    log = manifest.read("crawl_log", project).to_pylist()
    images = manifest.read("images", project).to_pylist()
    stored = {r["source_uri"].rsplit("/", 1)[1]: r for r in images}
    assert len(images) == 5  # 4 raster search results + the Wikidata image
    ada = stored["Ada_Lovelace_1840.jpg"]
    assert ada["source_kind"] == "web_api" and ada["query_name"] == "Ada Lovelace"
    assert ada["license"] == "CC BY-SA 4.0" and ada["author"] == "Alfred Chalon"
    assert ada["page_url"] == "https://commons.wikimedia.org/wiki/File:Ada Lovelace 1840.jpg"
    assert ada["http_status"] == 200 and ada["content_type"] == "image/jpeg"
    p18 = [r for r in images if "Claudet" in r["source_uri"]]
    assert len(p18) == 1 and p18[0]["author"] == "Jane Roe"
    svg = [r for r in log if r["source_uri"].endswith("signature.svg")]
    assert len(svg) == 1 and svg[0]["status"] == "skipped" and svg[0]["reason"].startswith("unsupported_mime")
    # the failed search for Grace Hopper is one failed row naming the API's reason
    grace = [r for r in log if r["query_name"] == "Grace Hopper"]
    assert len(grace) == 1 and grace[0]["status"] == "failed"
    assert "internal_api_error" in grace[0]["reason"] and grace[0]["source_kind"] == "web_api"
    # API etiquette: maxlag on every call, our user agent, continuation followed, maxlag answer waited out
    searches = [q for q in seen if q.get("generator") == "search"]
    assert all(q.get("maxlag") == "5" and q["gsrnamespace"] == "6" for q in searches)
    assert any(q.get("gsroffset") == "3" for q in searches)
    assert all(r["headers"].get("User-Agent") == UA for r in server.record.requests)
    # robots.txt was read for the image host but the API was used anyway
    assert server.hits_of("/robots.txt") == 1
    import json

    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["per_source"]["wikimedia"]["stored"] == 5
    assert metrics["per_source"]["wikimedia"]["skipped"] == 1
    assert metrics["failures"] == {"api_error": 1}
    assert metrics["skip_reasons"] == {"unsupported_mime": 1}

    # a rerun of the stage reuses everything: no image is downloaded again
    image_hits = sum(1 for p in server.record.paths() if p.startswith("/thumb/"))
    assert run_stage("ingest", project) == 0
    assert sum(1 for p in server.record.paths() if p.startswith("/thumb/")) == image_hits
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["n_images"] == 5 and run_report(project, "ingest")["n_reused"] >= 6
