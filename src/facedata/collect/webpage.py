"""Web page source: result pages that only exist after JavaScript runs, read in headless Chromium.

A tool for cooperative sites you configure by hand (your own archive, a partner's catalogue, a site whose
terms and robots.txt allow it), not for the big image-search engines: they disallow `/search` in robots.txt
and answer headless browsers with consent walls and captchas, which this source reports as `page_failed`.
One adapter for any such site, configured in params.yaml (`sources.web_pages`, defaults in
`facedata.collect.config.WEB_PAGE_DEFAULTS`):

    - name: my-archive                                  # label in crawl_log (source_name)
      url_template: https://archive.example/search?q={query}   # {query}: the name, encoded for where it stands
      item_selector: img.result                         # elements that carry an image URL
      attributes: [data-src, data-lazy-src, data-original, srcset, src]   # first usable one wins
      link_selector: a                                  # the result's own page (closest ancestor), optional
      wait_selector: img.result                         # what to wait for before reading (default: items)
      empty_selector: p.no-results                      # shown when nothing matched, optional
      more_selector: button.load-more                   # clicked when present, optional
      wait_s: 10, max_scrolls: 10, scroll_pause_s: 2, idle_scrolls: 2, max_per_name: 50

The browser only discovers URLs. After each read it brings the last item into view (which scrolls inner
scroll containers too) and the window to the bottom, then waits up to `scroll_pause_s` for the items to
change (more of them, or a virtualised list showing others); it stops at `max_per_name` URLs, after
`idle_scrolls` scrolls in a row bring nothing new, or after `max_scrolls`. Only http(s) URLs count: lazy
attributes (`data-src`, `srcset` parsed as HTML does, so URLs with commas survive) are read directly, values
that are not URLs (`data:` placeholders, `javascript:`, JSON blobs) are passed over for the next attribute,
relative URLs resolved against the page. The images are then fetched by the crawler, with every rule of
`facedata.collect.fetch`, each keeping the result page it came from as `page_url`.

Safety: the page URL is checked against the address policy and robots.txt before the browser opens it, and
every request Chromium makes (redirects, scripts, iframes, fetches) goes through
`facedata.collect.browserproxy`, which applies the same address policy; nothing else leaves the browser.
A result page that lands on another host (a consent, captcha or login page, or a redirect the proxy
refused) is `page_failed` with the host it went to. Chromium runs with images off (the crawler fetches each
image once, itself) and the crawl's User-Agent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from urllib.parse import quote, quote_plus, urlsplit

from facedata.collect.browserproxy import PolicyProxy
from facedata.collect.config import WEB_PAGE_DEFAULTS, CastMember, with_defaults
from facedata.collect.crawler import Crawler, FetchTask
from facedata.collect.netpolicy import UrlRefused, check_url, redact_url

BASE_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--blink-settings=imagesEnabled=false",
    "--window-size=1280,2000",
)

#: Every request through the policy proxy, loopback included (Chromium bypasses proxies for loopback unless
#: told `<-loopback>`); no direct UDP for WebRTC, no QUIC, and no name resolution of the browser's own, so the
#: proxy's connections are the only way out.
CONFINE_ARGS = (
    "--proxy-bypass-list=<-loopback>",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

#: Shared helpers of the page scripts: is a value a URL, and the largest candidate of a srcset.
_URL_JS = r"""
function httpUrl(value) {
  // An http(s) URL, resolved against the page, or null: data:/blob:/javascript: values, JSON blobs and other
  // text that is not a URL are no image address.
  if (typeof value !== 'string') return null;
  const v = value.trim();
  if (!v || /[\s"'<>{}`\\]/.test(v)) return null;
  let u;
  try { u = new URL(v, document.baseURI); } catch (e) { return null; }
  return (u.protocol === 'http:' || u.protocol === 'https:') ? u.href : null;
}
function srcsetCandidates(input) {
  // The HTML standard's srcset parser: a URL runs to the next whitespace (so it may hold commas); commas
  // only separate candidates after a URL's end or its descriptors.
  const out = []; let pos = 0; const n = input.length;
  const isSpace = c => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f';
  while (true) {
    while (pos < n && (isSpace(input[pos]) || input[pos] === ',')) pos++;
    if (pos >= n) return out;
    let start = pos;
    while (pos < n && !isSpace(input[pos])) pos++;
    let url = input.slice(start, pos);
    const descriptors = [];
    if (url.endsWith(',')) {
      url = url.replace(/,+$/, '');
    } else {
      let current = '', inParens = false;
      while (true) {
        const c = pos < n ? input[pos] : null;
        if (c === null) { if (current) descriptors.push(current); break; }
        if (inParens) { current += c; if (c === ')') inParens = false; pos++; continue; }
        if (isSpace(c)) { if (current) { descriptors.push(current); current = ''; } pos++; continue; }
        if (c === ',') { pos++; if (current) descriptors.push(current); break; }
        if (c === '(') inParens = true;
        current += c; pos++;
      }
    }
    if (!url) continue;
    let w = null, x = null;
    for (const d of descriptors) {
      const m = /^(\d+(?:\.\d+)?)([wx])$/.exec(d);
      if (m && m[2] === 'w') w = parseFloat(m[1]);
      if (m && m[2] === 'x') x = parseFloat(m[1]);
    }
    out.push({url, w, x: x === null && w === null ? 1 : x});
  }
}
function largestCandidate(srcset) {
  let best = null, bestScore = -1;
  const cands = srcsetCandidates(srcset);
  const byWidth = cands.some(c => c.w !== null);
  for (const c of cands) {
    const score = byWidth ? (c.w === null ? 0 : c.w) : (c.x === null ? 1 : c.x);
    if (httpUrl(c.url) && score > bestScore) { best = c.url; bestScore = score; }
  }
  return best;
}
"""

COLLECT_JS = (
    _URL_JS
    + r"""
const [selector, attrs, linkSelector] = arguments;
const out = [];
for (const el of document.querySelectorAll(selector)) {
  let url = null;
  for (const a of attrs) {
    let v = el.getAttribute(a);
    if (!v) continue;
    if (a.endsWith('srcset')) v = largestCandidate(v);
    url = httpUrl(v);
    if (url) break;
  }
  let link = null;
  if (linkSelector) {
    const a = el.closest(linkSelector) || el.querySelector(linkSelector);
    if (a) link = httpUrl(a.getAttribute('href'));
  }
  out.push([url, link]);
}
return out;
"""
)

#: What the list shows now: how many items, and which is last (a virtualised list keeps its count).
STATE_JS = r"""
const items = document.querySelectorAll(arguments[0]);
const last = items.length ? items[items.length - 1] : null;
return [items.length, last ? last.outerHTML.slice(0, 500) : null];
"""

#: Bring the last item into view (this scrolls every scroll container holding it), then the window's end.
SCROLL_JS = r"""
const items = document.querySelectorAll(arguments[0]);
if (items.length) items[items.length - 1].scrollIntoView({block: 'end', inline: 'nearest'});
const root = document.scrollingElement || document.documentElement;
window.scrollTo(0, root.scrollHeight);
"""

_QUERY = re.compile(r"\{query\}")


class BrowserUnavailable(RuntimeError):
    pass


class PageFailed(Exception):
    """The result page could not be read: `str(exc)` is the reason (without the `page_failed:` code)."""


def fill_template(template: str, name: str) -> str:
    """`url_template` with each `{query}` replaced by `name` encoded for where it stands: `+` for spaces in
    the query string, `%20` (and `/` as `%2F`) in the path or fragment."""
    query_at = template.find("?")
    fragment_at = template.find("#")

    def encode(m: re.Match) -> str:
        at = m.start()
        in_query = query_at != -1 and at > query_at and (fragment_at == -1 or at < fragment_at)
        return quote_plus(name) if in_query else quote(name, safe="")

    return _QUERY.sub(encode, template)


def make_driver(crawl: dict, user_agent: str, proxy_address: str):
    """Headless Chromium through chromedriver (DESIGN.md's verified setup), every request through the
    policy proxy at `proxy_address`; a clear error when Chromium is missing."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary = crawl["browser_binary"] if os.path.exists(crawl["browser_binary"]) else shutil.which("chromium")
    driver_path = crawl["chromedriver"] if os.path.exists(crawl["chromedriver"]) else shutil.which("chromedriver")
    if not binary or not driver_path:
        raise BrowserUnavailable(
            f"web_pages sources need Chromium and chromedriver (crawl.browser_binary={crawl['browser_binary']}, "
            f"crawl.chromedriver={crawl['chromedriver']}); on Debian: apt-get install chromium chromium-driver"
        )
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # browser_args cannot hold network flags (facedata.collect.config.BROWSER_NETWORK_FLAGS); the proxy comes last
    args = [*BASE_ARGS, *CONFINE_ARGS, f"--user-agent={user_agent}", *crawl["browser_args"]]
    args.append(f"--proxy-server=http://{proxy_address}")
    for arg in args:
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        raise BrowserUnavailable(f"Chromium did not start: {str(exc).splitlines()[0]}") from exc
    driver.set_page_load_timeout(float(crawl["page_timeout_s"]))
    driver.set_script_timeout(float(crawl["page_timeout_s"]))
    return driver


def site_of(url: str | None) -> tuple[str, int] | None:
    """(host, port) of a URL, with http's 80 and https's 443 counted as one (an upgrade to https stays on the
    site); None for what is not an http(s) URL."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    return parts.hostname.lower().rstrip("."), 443 if port == 80 else port


def check_landing(driver, page_url: str, proxy: PolicyProxy | None, mark: int) -> None:
    """Raise PageFailed when the browser is no longer on the result page's site (host and port): a consent,
    captcha or login page, an error page, or a redirect the policy proxy refused."""
    current = driver.current_url or ""
    here = site_of(current)
    if here is not None and here == site_of(page_url):
        return
    refused = [d for d in (proxy.denials_since(mark) if proxy else []) if d.code not in ("dns", "connection")]
    hop = next((d for d in refused if d.url == redact_url(current)), None) or next(
        (d for d in refused if here is not None and site_of(d.url) == here), None
    )
    if hop is not None:
        raise PageFailed(f"the result page led to {hop.url}, refused by policy ({hop.code}: {hop.message})")
    where = redact_url(current) if here is not None else f"a browser page ({current[:60] or 'blank'})"
    raise PageFailed(
        f"the result page went to {where} instead of a page on {urlsplit(redact_url(page_url)).netloc} (a "
        "consent, captcha or login page? such sites are not for this source; if the site moved, update "
        "url_template)"
    )


def _state(driver, selector: str):
    return tuple(driver.execute_script(STATE_JS, selector))


def collect_page(
    driver, page_url: str, entry: dict, proxy: PolicyProxy | None = None
) -> list[tuple[str, str | None]]:
    """Open a result page and gather (image URL, result link) pairs, scrolling as configured. Raises
    PageFailed when the page lands elsewhere, TimeoutException when it does not load."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    entry = with_defaults(entry, WEB_PAGE_DEFAULTS)
    item_selector = entry["item_selector"]
    limit = int(entry["max_per_name"])
    pause = float(entry["scroll_pause_s"])
    mark = proxy.mark() if proxy else 0
    driver.get(page_url)
    check_landing(driver, page_url, proxy, mark)
    site = site_of(page_url)
    wanted = [
        ec.presence_of_element_located((By.CSS_SELECTOR, entry.get("wait_selector") or item_selector)),
        lambda d: site_of(d.current_url) != site,  # a script sent the browser elsewhere
    ]
    if entry.get("empty_selector"):
        wanted.append(ec.presence_of_element_located((By.CSS_SELECTOR, entry["empty_selector"])))
    try:
        WebDriverWait(driver, float(entry["wait_s"])).until(ec.any_of(*wanted))
    except TimeoutException:
        check_landing(driver, page_url, proxy, mark)
        return []  # the page stayed but never showed a result
    check_landing(driver, page_url, proxy, mark)
    found: dict[str, str | None] = {}
    idle = 0
    for scroll in range(int(entry["max_scrolls"]) + 1):
        before = len(found)
        pairs = driver.execute_script(COLLECT_JS, item_selector, entry["attributes"], entry.get("link_selector"))
        for url, link in pairs:
            if url and url not in found:
                found[url] = link
        if len(found) >= limit:
            break
        idle = idle + 1 if len(found) == before and scroll > 0 else 0
        if idle >= int(entry["idle_scrolls"]) or scroll == int(entry["max_scrolls"]):
            break
        state = _state(driver, item_selector)
        if entry.get("more_selector"):
            buttons = driver.find_elements(By.CSS_SELECTOR, entry["more_selector"])
            if buttons and buttons[0].is_displayed():
                driver.execute_script("arguments[0].click();", buttons[0])
        driver.execute_script(SCROLL_JS, item_selector)
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline and _state(driver, item_selector) == state:
            time.sleep(0.1)
    check_landing(driver, page_url, proxy, mark)
    return list(found.items())[:limit]


def iter_page_tasks(
    crawler: Crawler, entry: dict, members: list[CastMember], crawl: dict, driver=None
) -> Iterator[FetchTask]:
    """FetchTasks for the images on each name's result page. A page that cannot be read (refused address,
    robots.txt, load failure, landing elsewhere) is one row for the page URL with the reason. Without a
    `driver` given, Chromium is started on first need behind a `PolicyProxy` and closed at the end."""
    from selenium.common.exceptions import TimeoutException, WebDriverException

    source_name = entry["name"]
    proxy: PolicyProxy | None = None
    with contextlib.ExitStack() as stack:
        for member in members:
            page_url = fill_template(entry["url_template"], member.name)

            def row(error: str, skipped: bool = False, url: str = page_url, name: str = member.name) -> FetchTask:
                return FetchTask(url, name, "web_page", source_name, error=error, skipped=skipped)

            try:
                target = check_url(page_url, crawler.policy)
                allowed, reason, _ = crawler.robots.allowed(target)
                if not allowed:
                    code = "robots" if reason and reason.startswith("disallowed") else "robots_unavailable"
                    raise UrlRefused(code, reason or "robots.txt")
            except UrlRefused as exc:
                yield row(f"{exc.code}: {exc.message}", skipped=exc.code == "robots")
                continue
            if driver is None:
                if proxy is None:
                    timeouts = float(crawl["connect_timeout_s"]), float(crawl["page_timeout_s"])
                    proxy = stack.enter_context(PolicyProxy(crawler.policy, *timeouts))
                try:
                    driver = make_driver(crawl, crawler.settings.user_agent, proxy.address)
                except BrowserUnavailable as exc:
                    yield row(f"page_failed: {exc}")
                    continue
                stack.callback(driver.quit)
            time.sleep(crawler.gate.reserve(target.host_key))
            try:
                results = collect_page(driver, page_url, entry, proxy)
            except PageFailed as exc:
                yield row(f"page_failed: {exc}")
                continue
            except TimeoutException:
                yield row(
                    f"page_failed: the page did not load within {crawl['page_timeout_s']} s (crawl.page_timeout_s)"
                )
                continue
            except WebDriverException as exc:
                msg = (str(exc).strip().splitlines() or ["browser error"])[0]
                yield row(f"page_failed: {msg}"[:300])
                continue
            if not results:
                selector = entry.get("wait_selector") or entry["item_selector"]
                wait_s = with_defaults(entry, WEB_PAGE_DEFAULTS)["wait_s"]
                yield row(f"no_results: no image found ({selector!r} within {wait_s} s)", skipped=True)
            for url, link in results:
                yield FetchTask(url, member.name, "web_page", source_name, page_url=link or page_url)
