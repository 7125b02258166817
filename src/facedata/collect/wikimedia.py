"""Wikimedia source: for each cast name, files from Wikimedia Commons (search + file info), and the images of
the person's Wikidata item (property P18) when a Wikidata id is given, each with the rights Commons states.

Requests (through the crawler's polite `get`, with retries, never robots.txt, which governs crawlers of
pages and not the API), all with `maxlag=5` as Wikimedia's API etiquette asks of bots; a maxlag answer waits
the server's Retry-After (seconds or an HTTP date):

- Wikidata: `wbgetclaims&entity=Q..&property=P18` gives the item's image claims. Deprecated claims (often a
  photo of someone else) are skipped with a status row; preferred ones come first.
- Commons: `query&generator=search&gsrnamespace=6` (the File: namespace) with `prop=imageinfo`,
  `iiprop=url|mime|size|user|extmetadata` gives, per file, a `thumb_width` rendition (one of Wikimedia's
  standard widths, so 40 MB originals are not downloaded), the description page, MIME type, uploader and
  extmetadata: license, license URL, usage terms, whether attribution is required, the author (`Artist`)
  and `Restrictions` (Commons' warning templates, e.g. personality rights).

Continuation follows MediaWiki's `ApiContinuationManager`: while a prop module has more to give, `continue`
repeats the same search batch. For imageinfo with one file in the batch that "more" is the file's upload
history (`iistart`): older versions of the same photo. They are declined (imageinfo is marked finished, so the
next answer advances the search) and a page already seen is never a new image.

Status rows instead of silence: non-raster files (SVG, PDF, video) `skipped: unsupported_mime`; files tagged
with personality rights `skipped: restricted` while `crawl.exclude_restricted` is on; a P18 file that does not
exist on Commons `failed: missing_file`; a failed API call is one `failed: api_error` row for that query
(source_uri = the API URL), so a name whose search failed is visible.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import quote, urlencode

from requests.utils import requote_uri

from facedata.collect.config import WIKIMEDIA_DEFAULTS, CastMember, with_defaults
from facedata.collect.crawler import Crawler, FetchTask
from facedata.collect.fetch import parse_retry_after
from facedata.params import default

RASTER_MIME = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/tiff", "image/bmp"}
#: The extmetadata fields read (Credit is the file's *source*, "Own work" or a URL, not its author).
EXTMETADATA = ("LicenseShortName", "LicenseUrl", "UsageTerms", "AttributionRequired", "Artist", "Restrictions")
#: The `Restrictions` value of Commons' {{Personality rights}} template.
PERSONALITY = "personality"
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


def rights(info: dict) -> dict:
    """What Commons states about a file's use: license, author, terms, attribution, restrictions."""
    ext = info.get("extmetadata") or {}
    required = (_meta(info, "AttributionRequired") or "").lower()
    restrictions = None
    if "Restrictions" in ext:
        restrictions = [r.strip() for r in (_meta(info, "Restrictions") or "").split("|") if r.strip()]
    uploader = info.get("user") if isinstance(info.get("user"), str) and "userhidden" not in info else None
    return {
        "license": _meta(info, "LicenseShortName"),
        "author": _meta(info, "Artist") or strip_html(uploader),
        "license_url": _meta(info, "LicenseUrl"),
        "usage_terms": _meta(info, "UsageTerms"),
        "attribution_required": {"true": True, "false": False}.get(required),
        "restrictions": restrictions,
    }


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
            wait_s = parse_retry_after(res.headers.get("retry-after"))
            time.sleep(min(5.0 if wait_s is None else wait_s, crawler.settings.max_retry_after_s))
            continue
        if err:
            info = err.get("info") if isinstance(err, dict) else str(err)
            code = err.get("code") if isinstance(err, dict) else "error"
            raise ApiError(f"api_error: {code}: {info}")
        return doc
    raise ApiError("api_error: the API stayed lagged (maxlag); try again later")


def next_continue(nxt: object) -> dict | None:
    """The continuation parameters for the next request, or None when the query is complete.

    A `continue` holding `iistart` repeats the same search batch to list the next older version of its one
    file; instead imageinfo is declared finished (added to the modules after `||`), so the server advances
    the search generator and restarts imageinfo on the next batch."""
    if not isinstance(nxt, dict) or not nxt:
        return None
    cont = {str(k): str(v) for k, v in nxt.items()}
    if "iistart" in cont:
        del cont["iistart"]
        generator, _, finished = cont.get("continue", "||").partition("||")
        modules = [m for m in finished.split("|") if m and m != "imageinfo"] + ["imageinfo"]
        cont["continue"] = f"{generator}||{'|'.join(modules)}"
    return cont


def _imageinfo_params(width: int) -> dict:
    return {
        "prop": "imageinfo",
        "iiprop": "url|mime|size|user|extmetadata",
        "iiurlwidth": str(width),
        "iiextmetadatafilter": "|".join(EXTMETADATA),
    }


def file_page_url(api: str, title: str) -> str:
    """The description page of `title` on the wiki whose API is `api` (for rows about a file we cannot fetch)."""
    if api.endswith("/w/api.php"):
        page = quote(title.replace(" ", "_"), safe=";@$!*(),/~:")  # as MediaWiki's wfUrlencode writes it
        return f"{api[: -len('/w/api.php')]}/wiki/{page}"
    return f"{api}?" + urlencode({"title": title})


class _Pages:
    """Turns API pages into fetch tasks for one name, each page once."""

    def __init__(self, member: CastMember, source_name: str, api: str, exclude_restricted: bool):
        self.member, self.source_name, self.api = member, source_name, api
        self.exclude_restricted = exclude_restricted
        self.seen: set = set()
        self.deprecated: dict[str, str] = {}  # title -> why (a deprecated Wikidata claim)

    def task(self, page: dict, origin: str) -> FetchTask | None:
        """The page's task, or None when the answer has no file info for it (imageinfo skipped this round)
        or it was seen before."""
        title = str(page.get("title") or "")
        key = page.get("pageid") or title
        if key in self.seen:
            return None
        infos = page.get("imageinfo") or []
        gone = "missing" in page or "invalid" in page or (page.get("imagerepository") == "" and not infos)
        if not infos and not gone:
            return None
        self.seen.add(key)
        if gone:
            return self._row(
                file_page_url(self.api, title),
                f"missing_file: {title or 'a file'} does not exist on {self.api} (deleted or renamed; {origin})",
            )
        info = infos[0]
        url = info.get("thumburl") or info.get("url")
        if not url:
            why = "its file is hidden" if "filehidden" in info else "the API gave no file URL"
            return self._row(file_page_url(self.api, title), f"missing_file: {title}: {why} ({origin})")
        url = requote_uri(url)  # the API's URLs are encoded already; this only mends stray spaces
        task = FetchTask(
            url=url,
            query_name=self.member.name,
            source_kind="web_api",
            source_name=self.source_name,
            page_url=info.get("descriptionurl"),
            meta=rights(info),
        )
        mime = (info.get("mime") or "").lower()
        restrictions = task.meta["restrictions"] or []
        if mime not in RASTER_MIME:
            task.error = f"unsupported_mime: {title} is {mime or 'of unknown type'} ({origin})"
            task.skipped = True
        elif title in self.deprecated:
            task.error, task.skipped = self.deprecated[title], True
        elif self.exclude_restricted and PERSONALITY in restrictions:
            task.error = (
                f"restricted: {title} carries Commons' personality-rights warning (Restrictions: "
                f"{'|'.join(restrictions)}); set crawl.exclude_restricted: false to collect such files ({origin})"
            )
            task.skipped = True
        return task

    def _row(self, url: str, error: str, skipped: bool = False) -> FetchTask:
        return FetchTask(
            url, self.member.name, "web_api", self.source_name, page_url=url, error=error, skipped=skipped
        )

    def deprecated_row(self, title: str, entity: str) -> FetchTask:
        why = f"deprecated_claim: Wikidata {entity} ranks {title} deprecated for P18 (often another person)"
        self.deprecated[title] = why
        return self._row(file_page_url(self.api, title), why, skipped=True)


def _wikidata_tasks(crawler: Crawler, pages: _Pages, entry: dict, width: int) -> Iterator[FetchTask]:
    """The item's P18 images: preferred claims first, deprecated ones as skipped rows."""
    member = pages.member
    url = f"{entry['wikidata_api']}?" + urlencode(
        {"action": "wbgetclaims", "entity": member.wikidata, "property": "P18", "format": "json", "maxlag": "5"}
    )
    try:
        claims = (api_json(crawler, url).get("claims") or {}).get("P18") or []
        files = [
            (c.get("rank"), f"File:{c['mainsnak']['datavalue']['value']}")
            for c in claims
            if c.get("mainsnak", {}).get("snaktype") == "value"
        ]
        url = f"{entry['api']}?"
        for rank, title in files:
            if rank == "deprecated":
                yield pages.deprecated_row(title, member.wikidata)
        ranked = sorted((f for f in files if f[0] != "deprecated"), key=lambda f: f[0] != "preferred")
        titles = list(dict.fromkeys(title for _, title in ranked))[:50]
        if not titles:
            return
        url += urlencode(
            {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "titles": "|".join(titles),
                "maxlag": "5",
                **_imageinfo_params(width),
            }
        )
        query = api_json(crawler, url).get("query") or {}
        found = query.get("pages") or []
        if isinstance(found, dict):  # formatversion=1 servers answer a mapping
            found = list(found.values())
        renamed = {n.get("from"): n.get("to") for n in query.get("normalized") or [] if isinstance(n, dict)}
        order = {renamed.get(t, t): i for i, t in enumerate(titles)}
        ordered = sorted(found, key=lambda p: order.get(p.get("title"), len(order)))
    except (ApiError, AttributeError, KeyError, TypeError, ValueError) as exc:
        yield FetchTask(url, member.name, "web_api", pages.source_name, error=_api_reason(exc))
        return
    for page in ordered:
        task = pages.task(page, f"Wikidata {member.wikidata} P18")
        if task is not None:
            task.meta["wikidata"] = member.wikidata
            yield task


def iter_wikimedia_tasks(
    crawler: Crawler,
    entry: dict,
    members: list[CastMember],
    source_name: str = "wikimedia",
    exclude_restricted: bool = default("crawl.exclude_restricted"),
) -> Iterator[FetchTask]:
    entry = with_defaults(entry, WIKIMEDIA_DEFAULTS)
    limit = int(entry["max_per_name"])
    width = int(entry["thumb_width"])
    for member in members:
        pages = _Pages(member, source_name, entry["api"], exclude_restricted)
        emitted = 0
        if member.wikidata:
            for task in _wikidata_tasks(crawler, pages, entry, width):
                emitted += not (task.error or "").startswith("deprecated_claim")
                yield task
        cont: dict | None = {}
        asked: set[str] = set()
        while emitted < limit and cont is not None:
            params = {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "generator": "search",
                "gsrsearch": entry["search"].format(name=member.name),
                "gsrnamespace": "6",
                "gsrlimit": str(min(50, limit)),
                "maxlag": "5",
                **_imageinfo_params(width),
                **cont,
            }
            url = f"{entry['api']}?" + urlencode(params)
            if url in asked:  # a server repeating its continuation would loop forever
                break
            asked.add(url)
            try:
                doc = api_json(crawler, url)
            except ApiError as exc:
                yield FetchTask(url, member.name, "web_api", source_name, error=_api_reason(exc))
                break
            found = (doc.get("query") or {}).get("pages") or []
            if isinstance(found, dict):  # formatversion=1 servers answer a mapping
                found = list(found.values())
            for page in sorted(found, key=lambda p: (p.get("index", 0), p.get("title", ""))):
                if emitted >= limit:
                    break
                task = pages.task(page, "Commons search")
                if task is not None:
                    emitted += 1
                    yield task
            cont = next_continue(doc.get("continue"))


def _api_reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, ApiError):
        return text if ":" in text else f"api_error: {text}"
    return f"api_error: unexpected answer shape ({type(exc).__name__}: {text})"[:300]
