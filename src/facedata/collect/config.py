"""The `sources:` and `crawl:` sections of params.yaml: what each source entry may hold, checked up front so
a typo fails before a crawl starts, with the entry and key named."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from facedata import __version__
from facedata.collect.netpolicy import parse_allow_host
from facedata.errors import ParamsError

WIKIDATA_ID = re.compile(r"^Q[1-9][0-9]*$")
COMMONS_API = "https://commons.wikimedia.org/w/api.php"
WIKIDATA_API = "https://www.wikidata.org/w/api.php"
DEFAULT_ATTRIBUTES = ["data-src", "data-lazy-src", "data-original", "srcset", "src"]
#: The only thumbnail widths Wikimedia renders (its `$wgThumbnailSteps`, https://w.wiki/GHai); other widths
#: are rounded up or refused.
WIKIMEDIA_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)

#: Chromium flags that would let the browser around the policy proxy (facedata.collect.browserproxy).
BROWSER_NETWORK_FLAGS = (
    "--proxy",
    "--no-proxy-server",
    "--host-rules",
    "--force-webrtc-ip-handling-policy",
    "--enable-quic",
    "--origin-to-force-quic-on",
)

# Defaults of the optional keys of a source entry (the keys themselves are checked below).
WIKIMEDIA_DEFAULTS = {
    "api": COMMONS_API,
    "wikidata_api": WIKIDATA_API,
    "max_per_name": 20,
    "thumb_width": 1280,
    "search": "{name} filetype:bitmap",
}
WEB_PAGE_DEFAULTS = {
    "attributes": DEFAULT_ATTRIBUTES,
    "wait_s": 10.0,
    "max_scrolls": 10,
    "scroll_pause_s": 2.0,
    "idle_scrolls": 2,
    "max_per_name": 50,
}

# key -> (types, required)
FOLDER_KEYS = {"root": (str, True), "names": (list, False), "max_per_name": (int, False), "labeled": (bool, False)}
FOLDER_KEYS["query_names"] = (dict, False)
VIDEO_KEYS = {
    "path": (str, True),
    "query_name": (str, False),
    "fps": ((int, float), False),
    # Frames a reviewer picked (`facedata review`, naming a person found in the video): exactly these frames
    # are taken, each from the face track in `tracks` at the same position, by the decision `review`; with
    # `regions`, each frame's region [x, y, w, h] round that person's face is stored instead of the frame.
    "frames": (list, False),
    "tracks": (list, False),
    "regions": (list, False),
    "review": (str, False),
}
URL_LIST_KEYS = {"path": (str, True), "name": (str, False)}
WIKIMEDIA_KEYS = {
    "api": (str, False),
    "wikidata_api": (str, False),
    "names": (list, False),
    "max_per_name": (int, False),
    "thumb_width": (int, False),
    "search": (str, False),
}
WEB_PAGE_KEYS = {
    "name": (str, True),
    "url_template": (str, True),
    "item_selector": (str, True),
    "attributes": (list, False),
    "link_selector": (str, False),
    "wait_selector": (str, False),
    "more_selector": (str, False),
    "empty_selector": (str, False),
    "wait_s": ((int, float), False),
    "max_scrolls": (int, False),
    "scroll_pause_s": ((int, float), False),
    "idle_scrolls": (int, False),
    "max_per_name": (int, False),
    "names": (list, False),
}


@dataclass(frozen=True)
class CastMember:
    name: str
    wikidata: str | None = None


def cast_members(entries: list) -> list[CastMember]:
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(CastMember(entry.strip()))
        else:
            out.append(CastMember(str(entry["name"]).strip(), entry.get("wikidata")))
    return out


def with_defaults(entry: dict, defaults: dict) -> dict:
    """A source entry with its optional keys filled in."""
    return {**defaults, **entry}


def names_for(entry: dict, cast: list[CastMember]) -> list[CastMember]:
    """A web source's names: its own `names` (matched to the cast for Wikidata ids) or the whole cast."""
    if not entry.get("names"):
        return cast
    by_name = {c.name: c for c in cast}
    return [by_name.get(n, CastMember(n)) for n in entry["names"]]


def _check_entries(kind: str, entries: list, keys: dict) -> None:
    for i, entry in enumerate(entries):
        where = f"sources.{kind}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping with keys {sorted(keys)}")
        unknown = set(entry) - set(keys)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {sorted(unknown)}; allowed: {sorted(keys)}")
        for key, (types, required) in keys.items():
            if key not in entry:
                if required:
                    raise ValueError(f"{where} needs a `{key}`" + (" folder" if key == "root" else ""))
                continue
            value = entry[key]
            if isinstance(value, bool) and types is not bool:
                raise ValueError(f"{where}.{key} must not be true/false")
            if not isinstance(value, types):
                raise ValueError(f"{where}.{key} has the wrong type ({type(value).__name__})")
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and value <= 0
                and key not in ("fps", "wait_s", "scroll_pause_s")
            ):
                raise ValueError(f"{where}.{key} must be a positive integer")
            if key in ("fps", "wait_s", "scroll_pause_s") and value <= 0:
                raise ValueError(f"{where}.{key} must be > 0")
            if key in ("names", "attributes") and not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{where}.{key} must be a list of non-empty strings")


def check_picked_frames(entry: dict, where: str) -> None:
    """A video source of picked frames: distinct frame numbers, a track per frame, a name to file them under."""
    if "frames" not in entry:
        if "tracks" in entry or "review" in entry or "regions" in entry:
            raise ValueError(f"{where}: `tracks`, `regions` and `review` go with `frames` (the frames picked)")
        return
    frames = entry["frames"]
    if not frames or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in frames):
        raise ValueError(f"{where}.frames must be a non-empty list of frame numbers (integers >= 0)")
    if len(set(frames)) != len(frames):
        raise ValueError(f"{where}.frames lists a frame twice")
    tracks = entry.get("tracks")
    if tracks is not None and (
        len(tracks) != len(frames) or not all(isinstance(t, str) and t.strip() for t in tracks)
    ):
        raise ValueError(f"{where}.tracks must give one track id (a string) per frame in `frames`")
    regions = entry.get("regions")
    if regions is not None and (
        len(regions) != len(frames)
        or not all(
            isinstance(r, list)
            and len(r) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            and r[0] >= 0
            and r[1] >= 0
            and r[2] > 0
            and r[3] > 0
            for r in regions
        )
    ):
        raise ValueError(
            f"{where}.regions must give one [x, y, width, height] (integers, x and y >= 0, sizes > 0) per frame"
        )
    if not str(entry.get("query_name") or "").strip():
        raise ValueError(f"{where}: picked `frames` need a `query_name`, the person they show")
    if "fps" in entry:
        raise ValueError(f"{where}: `fps` samples a video, `frames` picks from it: give one of them")


def check_sources(params: dict) -> None:
    """Raise ValueError naming the offending entry/key; `params` has defaults filled in already."""
    src = params["sources"]
    for i, entry in enumerate(src["cast"]):
        where = f"sources.cast[{i}]"
        if isinstance(entry, str):
            if not entry.strip():
                raise ValueError(f"{where} is an empty name")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ValueError(f"{where} must be a name or a mapping {{name: ..., wikidata: Q...}}")
        if set(entry) - {"name", "wikidata"}:
            raise ValueError(f"{where} has unknown key(s) {sorted(set(entry) - {'name', 'wikidata'})}")
        if "wikidata" in entry and not (
            isinstance(entry["wikidata"], str) and WIKIDATA_ID.match(entry["wikidata"])
        ):
            raise ValueError(f"{where}.wikidata must be a Wikidata item id like Q42, got {entry['wikidata']!r}")
    _check_entries("folders", src["folders"], FOLDER_KEYS)
    _check_entries("videos", src["videos"], VIDEO_KEYS)
    for i, entry in enumerate(src["videos"]):
        check_picked_frames(entry, f"sources.videos[{i}]")
    _check_entries("url_lists", src["url_lists"], URL_LIST_KEYS)
    _check_entries("wikimedia", src["wikimedia"], WIKIMEDIA_KEYS)
    _check_entries("web_pages", src["web_pages"], WEB_PAGE_KEYS)
    for i, entry in enumerate(src["web_pages"]):
        if "{query}" not in entry["url_template"]:
            raise ValueError(f"sources.web_pages[{i}].url_template must contain {{query}} (the URL-encoded name)")
    for i, entry in enumerate(src["wikimedia"]):
        width = entry.get("thumb_width", WIKIMEDIA_DEFAULTS["thumb_width"])
        if width not in WIKIMEDIA_WIDTHS:
            raise ValueError(
                f"sources.wikimedia[{i}].thumb_width must be one of Wikimedia's standard thumbnail widths "
                f"{', '.join(map(str, WIKIMEDIA_WIDTHS))} (got {width}; other widths are rounded up or refused)"
            )
    names = {e["name"] for e in src["web_pages"]}
    if len(names) != len(src["web_pages"]):
        raise ValueError("sources.web_pages entries need distinct `name`s")
    if (src["wikimedia"] or src["web_pages"]) and not src["cast"]:
        for kind in ("wikimedia", "web_pages"):
            for i, entry in enumerate(src[kind]):
                if not entry.get("names"):
                    raise ValueError(
                        f"sources.{kind}[{i}] has no names to search: set sources.cast or its `names`"
                    )
    crawl = params.get("crawl", {})
    for i, host in enumerate(crawl.get("allow_hosts", [])):
        if not isinstance(host, str):
            raise ValueError(f"crawl.allow_hosts[{i}] must be a string HOST[:PORT]")
        parse_allow_host(host)
    if not all(isinstance(a, str) for a in crawl.get("browser_args", [])):
        raise ValueError("crawl.browser_args must be a list of strings")
    confining = [a for a in crawl.get("browser_args", []) if a.startswith(BROWSER_NETWORK_FLAGS)]
    if confining:
        raise ValueError(
            f"crawl.browser_args may not change how Chromium reaches the network ({', '.join(confining)}): every "
            "request of the browser goes through facedata's policy proxy (see docs/collect.md)"
        )
    contact = crawl.get("contact", "")
    if contact.strip() and (why := contact_problem(contact.strip())):
        raise ValueError(f"crawl.contact {contact!r} {why}")


# ------------------------------------------------------------------------------------- who is crawling

_EMAIL = re.compile(r"^[^@\s]+@([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$")
#: Domains reserved for documentation (RFC 2606): a contact there reaches nobody.
_PLACEHOLDER_DOMAINS = re.compile(r"(^|\.)(example\.(com|net|org)|example|invalid)$", re.IGNORECASE)

CONTACT_HELP = (
    "web sources (url_lists, wikimedia, web_pages, `facedata ingest-urls`) need crawl.contact: an email "
    "address or URL where the operators of the sites you crawl can reach you. It goes into the User-Agent "
    "of every request (Wikimedia requires this and rate-limits, then blocks, clients without it). Set it in "
    "params.yaml, e.g.\n  crawl:\n    contact: data-team@your-org.org"
)


def contact_problem(contact: str) -> str | None:
    """Why `contact` cannot identify an operator (None when it can): an email address or an http(s) URL."""
    if any(c in contact for c in "()\r\n;"):
        return "must not contain parentheses, semicolons or line breaks (it goes into the User-Agent)"
    if contact.lower().startswith(("http://", "https://")):
        host = urlsplit(contact).hostname or ""
        if "." not in host:
            return "is not a URL with a host name"
    elif _EMAIL.match(contact):
        host = contact.rsplit("@", 1)[1]
    else:
        return "is neither an email address nor an http(s) URL"
    if _PLACEHOLDER_DOMAINS.search(host.rstrip(".")):
        return f"uses {host}, a domain reserved for examples: give one where you can be reached"
    return None


def user_agent(crawl: dict, required: bool = True) -> str:
    """The User-Agent of every request: `crawl.user_agent` when set (it must name `crawl.contact`), else
    `facedata/VERSION (CONTACT) python-requests/VERSION`, the form Wikimedia's User-Agent policy asks for.
    Raises ParamsError saying what to set when web sources need a contact (`required`) and none is set."""
    import requests

    contact = str(crawl.get("contact") or "").strip()
    given = str(crawl.get("user_agent") or "").strip()
    if not contact:
        if required:
            raise ParamsError(CONTACT_HELP)
        return given or f"facedata/{__version__}"
    if not given:
        return f"facedata/{__version__} ({contact}) python-requests/{requests.__version__}"
    if contact not in given:
        raise ParamsError(
            f"crawl.user_agent {given!r} does not include crawl.contact {contact!r}: sites must be able to reach "
            "you from the User-Agent; add it, or leave crawl.user_agent empty to have it built from the contact"
        )
    return given
