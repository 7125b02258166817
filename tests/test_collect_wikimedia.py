"""The Wikimedia source (Commons search + file info, Wikidata P18) against `FakeMediaWiki`, a local server that
answers as MediaWiki's own code does (issues 5 and 14): continuation per ApiContinuationManager (including
`iistart` for a batch of one file with older versions), missing files, ranked claims, extmetadata with
restrictions, maxlag with Retry-After."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
import requests

from facedata import __version__, manifest
from facedata.collect.config import CastMember, user_agent
from facedata.collect.crawler import Crawler, CrawlSettings
from facedata.collect.wikimedia import iter_wikimedia_tasks, next_continue
from facedata.params import ParamsError, with_defaults
from facedata.pipeline.runner import run_stage

from .collect_servers import CONTACT, FakeMediaWiki, LocalServer, fast_crawl_params, write_project
from .projects import run_report

pytestmark = pytest.mark.filterwarnings("ignore:params.yaml has no:UserWarning")


@pytest.fixture()
def wiki():
    with LocalServer("127.0.0.1") as server:
        yield FakeMediaWiki(server)


def _source(wiki: FakeMediaWiki, **kw) -> dict:
    return {"api": wiki.api, "wikidata_api": wiki.wikidata_api, **kw}


def _tasks(wiki: FakeMediaWiki, names: list, exclude_restricted: bool = True, **entry) -> list:
    params = with_defaults({"crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{wiki.server.port}"])})
    members = [n if isinstance(n, CastMember) else CastMember(n) for n in names]
    with Crawler(CrawlSettings.from_params(params)) as crawler:
        return list(
            iter_wikimedia_tasks(crawler, _source(wiki, **entry), members, "wikimedia", exclude_restricted)
        )


def test_wikimedia_source_through_the_stage(wiki, tmp_path):
    wiki.add("File:Ada Lovelace portrait.jpg")
    wiki.add("File:Ada Lovelace signature.svg", mime="image/svg+xml")
    wiki.add("File:Ada Lovelace 1840.jpg", artist='<a href="//x/wiki/User:A" title="User:A">Alfred Chalon</a>')
    wiki.add("File:Ada Lovelace daguerreotype.jpg")
    wiki.add("File:Ada Lovelace in 1852.png", mime="image/png")
    wiki.add("File:Ada Byron daguerreotype by Antoine Claudet 1843 or 1850.jpg")
    wiki.searches["Ada Lovelace filetype:bitmap"] = [t for t in wiki.files if "Claudet" not in t]
    wiki.failing.add("Grace Hopper filetype:bitmap")
    wiki.claims["Q7259"] = [("Ada Byron daguerreotype by Antoine Claudet 1843 or 1850.jpg", "normal")]
    wiki.lag_headers = {"Retry-After": "1"}  # the first call: the servers are lagged, come back in a second
    wiki.max_limit = 3
    project = tmp_path / "p"
    write_project(
        project,
        {
            "sources": {
                "cast": [{"name": "Ada Lovelace", "wikidata": "Q7259"}, "Grace Hopper"],
                "wikimedia": [_source(wiki, max_per_name=10)],
            },
            "crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{wiki.server.port}"]),
        },
    )
    assert run_stage("ingest", project) == 0
    log = manifest.read("crawl_log", project).to_pylist()
    images = manifest.read("images", project).to_pylist()
    stored = {r["page_url"].rsplit(":", 1)[1]: r for r in images}
    assert len(images) == 5  # 4 raster search results + the Wikidata image
    ada = stored["Ada_Lovelace_1840.jpg"]
    assert ada["source_kind"] == "web_api" and ada["query_name"] == "Ada Lovelace"
    assert ada["license"] == "CC BY-SA 4.0" and ada["author"] == "Alfred Chalon"
    assert ada["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0"
    assert ada["usage_terms"] == "Creative Commons Attribution-Share Alike 4.0"
    assert ada["attribution_required"] is True and ada["restrictions"] == []
    assert ada["page_url"] == "https://commons.wikimedia.org/wiki/File:Ada_Lovelace_1840.jpg"
    assert ada["http_status"] == 200 and ada["content_type"] == "image/jpeg"
    assert "/1280px-" in ada["source_uri"]  # the default width is a standard Wikimedia width
    p18 = [r for r in images if "Claudet" in r["source_uri"]]
    assert len(p18) == 1 and p18[0]["author"] == "Jane Roe"
    svg = [r for r in log if r["source_uri"].endswith("signature.svg")]
    assert len(svg) == 1 and svg[0]["status"] == "skipped" and svg[0]["reason"].startswith("unsupported_mime")
    # the failed search for Grace Hopper is one failed row naming the API's reason
    grace = [r for r in log if r["query_name"] == "Grace Hopper"]
    assert len(grace) == 1 and grace[0]["status"] == "failed"
    assert "internal_api_error" in grace[0]["reason"] and grace[0]["source_kind"] == "web_api"
    # API etiquette: maxlag on every call, the operator's user agent, continuation followed, maxlag waited out
    searches = [q for q in wiki.calls if q.get("generator") == "search"]
    assert all(q.get("maxlag") == "5" and q["gsrnamespace"] == "6" for q in searches)
    assert any(q.get("gsroffset") == "3" for q in searches)
    ua = f"facedata/{__version__} ({CONTACT}) python-requests/{requests.__version__}"
    assert all(r["headers"].get("User-Agent") == ua for r in wiki.server.record.requests)
    # robots.txt was read for the image host but the API was used anyway
    assert wiki.server.hits_of("/robots.txt") == 1
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["per_source"]["wikimedia"]["stored"] == 5
    assert metrics["per_source"]["wikimedia"]["skipped"] == 1
    assert metrics["failures"] == {"api_error": 1}
    assert metrics["skip_reasons"] == {"unsupported_mime": 1}

    # a rerun of the stage reuses everything: no image is downloaded again
    image_hits = len(wiki.image_requests())
    assert run_stage("ingest", project) == 0
    assert len(wiki.image_requests()) == image_hits
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["n_images"] == 5 and run_report(project, "ingest")["n_reused"] >= 6


def test_upload_history_is_not_walked(wiki):
    """A search batch of one file with older versions continues with `iistart` (ApiQueryImageInfo) and
    repeats the same search (ApiContinuationManager): the older versions are not new photos."""
    wiki.add("File:Rare Person 2019.jpg", versions=3)
    wiki.searches["Rare Person filetype:bitmap"] = ["File:Rare Person 2019.jpg"]
    for i in range(4):  # a second name whose last batch (gsrlimit capped at 3) holds one file with history
        wiki.add(f"File:Common Person {i}.jpg", versions=2 if i == 3 else 1)
    wiki.searches["Common Person filetype:bitmap"] = [f"File:Common Person {i}.jpg" for i in range(4)]
    wiki.max_limit = 3
    tasks = _tasks(wiki, ["Rare Person", "Common Person"], max_per_name=10)
    rare = [t for t in tasks if t.query_name == "Rare Person"]
    common = [t for t in tasks if t.query_name == "Common Person"]
    assert len(rare) == 1 and "/archive/" not in rare[0].url
    assert sorted(t.page_url.rsplit("_", 1)[1] for t in common) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert all("/archive/" not in t.url for t in tasks)
    # one search, then one more to move the generator on (imageinfo declared finished): never a third
    rare_calls = [q for q in wiki.calls if q.get("gsrsearch", "").startswith("Rare")]
    assert len(rare_calls) == 2 and "iistart" not in rare_calls[1]
    assert rare_calls[1]["continue"] == "||imageinfo"
    common_calls = [q for q in wiki.calls if q.get("gsrsearch", "").startswith("Common")]
    assert [q.get("gsroffset") for q in common_calls] == [None, "3", "3"]


def test_next_continue():
    assert next_continue(None) is None and next_continue({}) is None
    assert next_continue({"gsroffset": 20, "continue": "gsroffset||"}) == {
        "gsroffset": "20",
        "continue": "gsroffset||",
    }
    assert next_continue({"iistart": "2019-01-01T00:00:00Z", "continue": "||"}) == {"continue": "||imageinfo"}
    assert next_continue({"iistart": "x", "gsroffset": "3", "continue": "gsroffset||info"}) == {
        "gsroffset": "3",
        "continue": "gsroffset||info|imageinfo",
    }


def test_author_is_the_artist_or_the_uploader_never_the_credit(wiki):
    wiki.add("File:A.jpg", artist='<span class="fn value"><a href="//x">Ann <b>Artist</b></a></span>')
    wiki.add("File:B.jpg", artist=None, user="Bob Uploader")
    wiki.searches["Someone filetype:bitmap"] = ["File:A.jpg", "File:B.jpg"]
    authors = {t.page_url.rsplit(":", 1)[1]: t.meta["author"] for t in _tasks(wiki, ["Someone"])}
    assert authors == {"A.jpg": "Ann Artist", "B.jpg": "Bob Uploader"}
    assert all("user" in q["iiprop"].split("|") for q in wiki.calls if "iiprop" in q)


def test_wikidata_ranks_and_missing_files(wiki):
    wiki.add("File:Normal.jpg")
    wiki.add("File:Someone else.jpg")
    wiki.add("File:Preferred.jpg")
    wiki.claims["Q1"] = [
        ("Normal.jpg", "normal"),
        ("Someone else.jpg", "deprecated"),
        ("Preferred.jpg", "preferred"),
        ("Deleted since.jpg", "normal"),
    ]
    wiki.searches["Person One filetype:bitmap"] = ["File:Someone else.jpg", "File:Normal.jpg"]
    tasks = _tasks(wiki, [CastMember("Person One", "Q1")])
    fetched = [t.page_url.rsplit(":", 1)[1] for t in tasks if t.error is None]
    assert fetched == ["Preferred.jpg", "Normal.jpg"]  # preferred first; the search's copies are not repeated
    rows = {t.url.rsplit(":", 1)[1]: t for t in tasks if t.error is not None}
    assert rows["Someone_else.jpg"].skipped and rows["Someone_else.jpg"].error.startswith("deprecated_claim")
    missing = rows["Deleted_since.jpg"]
    assert not missing.skipped and missing.error.startswith("missing_file: File:Deleted since.jpg")
    assert missing.url == f"http://127.0.0.1:{wiki.server.port}/commons/wiki/File:Deleted_since.jpg"
    # the deprecated file found again by the search is skipped with the same reason, not fetched
    search_copy = [t for t in tasks if "Someone_else" in t.url and "/thumb/" in t.url]
    assert len(search_copy) == 1 and search_copy[0].error.startswith("deprecated_claim")


def test_restrictions_kept_and_personality_rights_excluded(wiki, tmp_path):
    wiki.add("File:Public figure.jpg", restrictions="trademarked")
    wiki.add("File:Private person.jpg", restrictions="personality", attribution_required="false")
    wiki.searches["Some Name filetype:bitmap"] = ["File:Public figure.jpg", "File:Private person.jpg"]
    project = tmp_path / "p"
    params = {
        "sources": {"cast": ["Some Name"], "wikimedia": [_source(wiki)]},
        "crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{wiki.server.port}"]),
    }
    write_project(project, params)
    assert run_stage("ingest", project) == 0
    images = manifest.read("images", project).to_pylist()
    assert [r["restrictions"] for r in images] == [["trademarked"]]
    log = {r["page_url"].rsplit(":", 1)[1]: r for r in manifest.read("crawl_log", project).to_pylist()}
    private = log["Private_person.jpg"]
    assert private["status"] == "skipped" and private["reason"].startswith("restricted: File:Private person.jpg")
    assert "crawl.exclude_restricted" in private["reason"] and private["image_id"] is None
    assert not any("Private_person" in p for p in wiki.image_requests())

    # turned off, the file is collected on the next run, with its restriction recorded
    params["crawl"]["exclude_restricted"] = False
    write_project(project, params)
    assert run_stage("ingest", project) == 0
    rows = {r["page_url"].rsplit(":", 1)[1]: r for r in manifest.read("images", project).to_pylist()}
    assert rows["Private_person.jpg"]["restrictions"] == ["personality"]
    assert rows["Private_person.jpg"]["attribution_required"] is False

    # a restriction added on Commons since then reaches the stored row on the next run, without a download
    downloads = len(wiki.image_requests())
    wiki.files["File:Public figure.jpg"].restrictions = "personality|trademarked"
    assert run_stage("ingest", project) == 0
    rows = {r["page_url"].rsplit(":", 1)[1]: r for r in manifest.read("images", project).to_pylist()}
    assert rows["Public_figure.jpg"]["restrictions"] == ["personality", "trademarked"]
    assert len(wiki.image_requests()) == downloads
    # and the rights travel with every image into the dataset rows (export copies the source columns)
    assert {"license_url", "usage_terms", "attribution_required", "restrictions"} <= set(
        manifest.schema("dataset").names
    )


def test_maxlag_with_an_http_date_retry_after(wiki):
    wiki.add("File:Lagged.jpg")
    wiki.searches["Lagged filetype:bitmap"] = ["File:Lagged.jpg"]
    wiki.lag_headers = {"Retry-After": email.utils.formatdate(time.time() + 1, usegmt=True)}
    tasks = _tasks(wiki, ["Lagged"])
    assert [t.error for t in tasks] == [None]
    assert len([q for q in wiki.calls if q.get("gsrsearch") == "Lagged filetype:bitmap"]) == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_thumb_width_must_be_a_standard_width(wiki):
    with pytest.raises(ParamsError, match="standard thumbnail widths 20, 40"):
        with_defaults({"sources": {"cast": ["X"], "wikimedia": [{"thumb_width": 1024}]}})
    with_defaults({"sources": {"cast": ["X"], "wikimedia": [{"thumb_width": 960}]}})
    wiki.add("File:W.jpg")
    wiki.searches["W filetype:bitmap"] = ["File:W.jpg"]
    _tasks(wiki, ["W"])
    assert {q["iiurlwidth"] for q in wiki.calls} == {"1280"}


def test_web_sources_refuse_to_run_without_a_contact(wiki, tmp_path, capsys):
    wiki.add("File:C.jpg")
    project = tmp_path / "p"
    crawl = fast_crawl_params(allow_hosts=[f"127.0.0.1:{wiki.server.port}"])
    crawl["contact"] = ""
    write_project(project, {"sources": {"cast": ["C"], "wikimedia": [_source(wiki)]}, "crawl": crawl})
    assert run_stage("ingest", project) == 2
    err = capsys.readouterr().err
    assert "crawl.contact" in err and "contact: data-team@your-org.org" in err
    assert wiki.server.record.requests == []  # nothing was sent with an anonymous User-Agent


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_contact_and_user_agent_rules():
    assert user_agent({"contact": "https://lab.uni.edu/crawler"}).startswith(
        f"facedata/{__version__} (https://lab.uni.edu/crawler) python-requests/"
    )
    assert (
        user_agent({"contact": "ops@lab.org", "user_agent": "LabBot/2 (ops@lab.org)"}) == "LabBot/2 (ops@lab.org)"
    )
    with pytest.raises(ParamsError, match="does not include crawl.contact"):
        user_agent({"contact": "ops@lab.org", "user_agent": "LabBot/2"})
    with pytest.raises(ParamsError, match="need crawl.contact"):
        user_agent({"contact": ""})
    assert user_agent({"contact": ""}, required=False) == f"facedata/{__version__}"
    for bad, words in [
        ("you@example.org", "reserved for examples"),
        ("not a contact", "neither an email"),
        ("https://localhost/x", "host name"),
        ("a (b)@c.org", "parentheses"),
    ]:
        with pytest.raises(ParamsError, match=words):
            with_defaults({"crawl": {"contact": bad}})
    assert "placeholder" not in user_agent({"contact": "ops@lab.org"})
