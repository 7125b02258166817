"""Wikimedia source: for each cast name, files from Wikimedia Commons (search + file info), and the image of
the person's Wikidata item (property P18) when a Wikidata id is given, each with its license and author.

Requests (through the crawler's polite `get`, with retries, never robots.txt, which governs crawlers of
pages and not the API):

- Wikidata: `wbgetclaims&entity=Q..&property=P18` gives the file names of the item's images;
- Commons: `query&generator=search&gsrnamespace=6` (the File: namespace) with `prop=imageinfo` and
  `iiprop=url|mime|size|extmetadata` gives, per file, the image URL (a `thumb_width` rendition, so 40 MB
  originals are not downloaded), its description page, MIME type, license and author; `continue` pages on
  until `max_per_name` files. `maxlag=5`, as Wikimedia's API etiquette asks of bots; a maxlag answer waits
  the server's Retry-After.

Non-raster files (SVG, PDF, video) are reported as `skipped` rows rather than fetched. A failed API call is
one `failed` row for that query (source_uri = the API URL), so a name whose search failed is visible.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import urlencode

from requests.utils import requote_uri

from facedata.sources.config import COMMONS_API, WIKIDATA_API, CastMember
from facedata.sources.crawler import Crawler, FetchTask

RASTER_MIME = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/tiff", "image/bmp"}
_TAG = re.compile(r"<[^>]+>")


class ApiError(Exception):
    pass


def strip_html(value: str | None) -> str | None:
    if not value:
        return None
    text = html.unescape(_TAG.sub("", value))
    text = re.sub(r"\s+", " ", text).strip()
    return text[:500] or None


def _meta(info: dict, key: str) -> str | None:
    field = (info.get("extmetadata") or {}).get(key) or {}
    value = field.get("value") if isinstance(field, dict) else None
    return strip_html(value) if isinstance(value, str) else None


def api_json(crawler: Crawler, url: str, max_lag_retries: int = 3) -> dict:
    """GET an API URL and parse its JSON; raises ApiError with a short reason."""
    for _ in range(max_lag_retries + 1):
        res = crawler.get(url, expect_image=False, robots=False, max_bytes=20_000_000)
        if not res.ok:
            raise ApiError(res.error)
        try:
            doc = json.loads(res.data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(f"api_error: the API answered something that is not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise ApiError("api_error: the API answered JSON that is not an object")
        err = doc.get("error")
        if isinstance(err, dict) and err.get("code") == "maxlag":
            time.sleep(min(float(res.headers.get("retry-after", "5") or 5), crawler.settings.max_retry_after_s))
            continue
        if err:
            info = err.get("info") if isinstance(err, dict) else str(err)
            code = err.get("code") if isinstance(err, dict) else "error"
            raise ApiError(f"api_error: {code}: {info}")
        return doc
    raise ApiError("api_error: the API stayed lagged (maxlag); try again later")


def _imageinfo_params(width: int) -> dict:
    return {
        "prop": "imageinfo",
        "iiprop": "url|mime|size|extmetadata",
        "iiurlwidth": str(width),
        "iiextmetadatafilter": "LicenseShortName|Artist|Credit|LicenseUrl",
    }


def _tasks_from_pages(pages: list[dict], member: CastMember, source_name: str, origin: str) -> Iterator[FetchTask]:
    for page in sorted(pages, key=lambda p: (p.get("index", 0), p.get("title", ""))):
        infos = page.get("imageinfo") or []
        if not infos:
            continue
        info = infos[0]
        url = info.get("thumburl") or info.get("url")
        if not url:
            continue
        url = requote_uri(url)  # the API's URLs are encoded already; this only mends stray spaces
        meta = {
            "license": _meta(info, "LicenseShortName"),
            "author": _meta(info, "Artist") or _meta(info, "Credit"),
        }
        task = FetchTask(
            url=url,
            query_name=member.name,
            source_kind="web_api",
            source_name=source_name,
            page_url=info.get("descriptionurl"),
            meta=meta,
        )
        mime = (info.get("mime") or "").lower()
        if mime not in RASTER_MIME:
            task.error = f"unsupported_mime: {page.get('title')} is {mime or 'of unknown type'} ({origin})"
            task.skipped = True
        yield task


def iter_wikimedia_tasks(
    crawler: Crawler, entry: dict, members: list[CastMember], source_name: str = "wikimedia"
) -> Iterator[FetchTask]:
    api = entry.get("api", COMMONS_API)
    wikidata_api = entry.get("wikidata_api", WIKIDATA_API)
    limit = int(entry.get("max_per_name", 20))
    width = int(entry.get("thumb_width", 1024))
    search_template = entry.get("search", "{name} filetype:bitmap")
    for member in members:
        emitted = 0
        if member.wikidata:
            url = f"{wikidata_api}?" + urlencode(
                {"action": "wbgetclaims", "entity": member.wikidata, "property": "P18", "format": "json"}
            )
            try:
                doc = api_json(crawler, url)
                files = [
                    c["mainsnak"]["datavalue"]["value"]
                    for c in (doc.get("claims") or {}).get("P18", [])
                    if c.get("mainsnak", {}).get("snaktype") == "value"
                ]
                if files:
                    info_url = f"{api}?" + urlencode(
                        {
                            "action": "query",
                            "format": "json",
                            "formatversion": "2",
                            "titles": "|".join(f"File:{f}" for f in files[:50]),
                            "maxlag": "5",
                            **_imageinfo_params(width),
                        }
                    )
                    pages = (api_json(crawler, info_url).get("query") or {}).get("pages") or []
                    for task in _tasks_from_pages(pages, member, source_name, f"Wikidata {member.wikidata} P18"):
                        task.meta["wikidata"] = member.wikidata
                        emitted += 1
                        yield task
            except (ApiError, KeyError, TypeError, ValueError) as exc:
                yield FetchTask(url, member.name, "web_api", source_name, error=_api_reason(exc))
        cont: dict = {}
        while emitted < limit:
            params = {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "generator": "search",
                "gsrsearch": search_template.format(name=member.name),
                "gsrnamespace": "6",
                "gsrlimit": str(min(50, limit - emitted)),
                "maxlag": "5",
                **_imageinfo_params(width),
                **cont,
            }
            url = f"{api}?" + urlencode(params)
            try:
                doc = api_json(crawler, url)
            except ApiError as exc:
                yield FetchTask(url, member.name, "web_api", source_name, error=_api_reason(exc))
                break
            pages = (doc.get("query") or {}).get("pages") or []
            if isinstance(pages, dict):  # formatversion=1 servers answer a mapping
                pages = list(pages.values())
            for task in _tasks_from_pages(pages, member, source_name, "Commons search"):
                if emitted >= limit:
                    break
                emitted += 1
                yield task
            nxt = doc.get("continue")
            if not pages or not isinstance(nxt, dict):
                break
            cont = {k: str(v) for k, v in nxt.items()}


def _api_reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, ApiError):
        return text if ":" in text else f"api_error: {text}"
    return f"api_error: unexpected answer shape ({type(exc).__name__}: {text})"[:300]
