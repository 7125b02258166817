"""Web page source: image-search result pages that only exist after JavaScript runs, read in headless Chromium.

One adapter for any such site, configured in params.yaml (`sources.web_pages`):

    - name: my-archive                                  # label in crawl_log (source_name)
      url_template: https://archive.example/search?q={query}   # {query}: the URL-encoded name
      item_selector: img.result                         # elements that carry an image URL
      attributes: [data-src, data-lazy-src, data-original, srcset, src]   # first usable one wins
      link_selector: a                                  # the result's own page (closest ancestor), optional
      wait_selector: img.result                         # what to wait for before reading (default: items)
      empty_selector: p.no-results                      # shown when nothing matched, optional
      more_selector: button.load-more                   # clicked when present, optional
      wait_s: 10, max_scrolls: 10, scroll_pause_s: 0.5, idle_scrolls: 2, max_per_name: 50

The browser only discovers URLs: it scrolls to the bottom (infinite scroll) until `max_per_name` URLs, or
`idle_scrolls` scrolls in a row bring nothing new, or `max_scrolls`; lazy-loading attributes (`data-src`,
`srcset`...) are read directly, `data:` placeholders are ignored, relative URLs resolved against the page.
The images themselves are then fetched by the crawler, with every rule of `facedata.sources.fetch`, and
each keeps the result page it came from as `page_url`. Chromium runs with images off (the crawler fetches
each image once, itself), the project's user agent, and the page URL is checked against the address policy
and robots.txt before the browser opens it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from urllib.parse import quote_plus

from facedata.sources.config import DEFAULT_ATTRIBUTES, CastMember
from facedata.sources.crawler import Crawler, FetchTask
from facedata.sources.netpolicy import UrlRefused, check_url

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

COLLECT_JS = """
const [selector, attrs, linkSelector] = arguments;
const out = [];
function largest(srcset) {
  let best = null, bestW = -1;
  for (const part of srcset.split(',')) {
    const bits = part.trim().split(/\\s+/);
    if (!bits[0]) continue;
    const w = bits[1] ? parseFloat(bits[1]) : 1;
    if (w > bestW) { best = bits[0]; bestW = w; }
  }
  return best;
}
for (const el of document.querySelectorAll(selector)) {
  let url = null;
  for (const a of attrs) {
    let v = el.getAttribute(a);
    if (!v) continue;
    v = v.trim();
    if (a.endsWith('srcset')) v = largest(v);
    if (!v || /^(data|blob|javascript|about):/i.test(v)) continue;
    try { url = new URL(v, document.baseURI).href; } catch (e) { continue; }
    break;
  }
  let link = null;
  if (linkSelector) {
    const a = el.closest(linkSelector) || el.querySelector(linkSelector);
    if (a && a.href) link = a.href;
  }
  out.push([url, link]);
}
return out;
"""


class BrowserUnavailable(RuntimeError):
    pass


def make_driver(crawl: dict):
    """Headless Chromium through chromedriver, as DESIGN.md verified; a clear error when it is missing."""
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
    for arg in (*BASE_ARGS, f"--user-agent={crawl['user_agent']}", *crawl["browser_args"]):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        raise BrowserUnavailable(f"Chromium did not start: {str(exc).splitlines()[0]}") from exc
    driver.set_page_load_timeout(float(crawl["page_timeout_s"]))
    driver.set_script_timeout(float(crawl["page_timeout_s"]))
    return driver


def collect_page(driver, page_url: str, entry: dict, timeout: float) -> list[tuple[str, str | None]]:
    """Open a result page and gather (image URL, result link) pairs, scrolling as configured."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    item_selector = entry["item_selector"]
    attributes = entry.get("attributes") or DEFAULT_ATTRIBUTES
    link_selector = entry.get("link_selector")
    limit = int(entry.get("max_per_name", 50))
    max_scrolls = int(entry.get("max_scrolls", 10))
    pause = float(entry.get("scroll_pause_s", 0.5))
    idle_limit = int(entry.get("idle_scrolls", 2))
    driver.get(page_url)
    wanted = [ec.presence_of_element_located((By.CSS_SELECTOR, entry.get("wait_selector") or item_selector))]
    if entry.get("empty_selector"):
        wanted.append(ec.presence_of_element_located((By.CSS_SELECTOR, entry["empty_selector"])))
    try:
        WebDriverWait(driver, float(entry.get("wait_s", 10.0))).until(ec.any_of(*wanted))
    except TimeoutException:
        return []  # the page loaded but never showed a result
    found: dict[str, str | None] = {}
    idle = 0
    for scroll in range(max_scrolls + 1):
        before = len(found)
        for url, link in driver.execute_script(COLLECT_JS, item_selector, attributes, link_selector):
            if url and url not in found:
                found[url] = link
        if len(found) >= limit:
            break
        idle = idle + 1 if len(found) == before and scroll > 0 else 0
        if idle >= idle_limit or scroll == max_scrolls:
            break
        if entry.get("more_selector"):
            buttons = driver.find_elements(By.CSS_SELECTOR, entry["more_selector"])
            if buttons and buttons[0].is_displayed():
                driver.execute_script("arguments[0].click();", buttons[0])
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
        time.sleep(pause)
    return list(found.items())[:limit]


def iter_page_tasks(
    crawler: Crawler, entry: dict, members: list[CastMember], crawl: dict, driver=None
) -> Iterator[FetchTask]:
    """FetchTasks for the images on each name's result page. A page that cannot be opened (refused address,
    robots.txt, load failure) is one row for the page URL with the reason."""
    from selenium.common.exceptions import TimeoutException, WebDriverException

    source_name = entry["name"]
    own_driver = driver is None
    try:
        for member in members:
            page_url = entry["url_template"].replace("{query}", quote_plus(member.name))
            try:
                target = check_url(page_url, crawler.policy)
                allowed, reason, _ = crawler.robots.allowed(target)
                if not allowed:
                    code = "robots" if reason and reason.startswith("disallowed") else "robots_unavailable"
                    raise UrlRefused(code, reason or "robots.txt")
            except UrlRefused as exc:
                yield FetchTask(
                    page_url,
                    member.name,
                    "web_page",
                    source_name,
                    error=f"{exc.code}: {exc.message}",
                    skipped=exc.code == "robots",
                )
                continue
            if driver is None:
                try:
                    driver = make_driver(crawl)
                except BrowserUnavailable as exc:
                    yield FetchTask(page_url, member.name, "web_page", source_name, error=f"page_failed: {exc}")
                    continue
            time.sleep(crawler.gate.reserve(target.host_key))
            try:
                results = collect_page(driver, page_url, entry, float(crawl["page_timeout_s"]))
            except TimeoutException:
                yield FetchTask(
                    page_url,
                    member.name,
                    "web_page",
                    source_name,
                    error=f"page_failed: the page did not load within {crawl['page_timeout_s']} s "
                    "(crawl.page_timeout_s)",
                )
                continue
            except WebDriverException as exc:
                msg = (str(exc).strip().splitlines() or ["browser error"])[0]
                yield FetchTask(page_url, member.name, "web_page", source_name, error=f"page_failed: {msg}"[:300])
                continue
            if not results:
                selector = entry.get("wait_selector") or entry["item_selector"]
                yield FetchTask(
                    page_url,
                    member.name,
                    "web_page",
                    source_name,
                    error=f"no_results: no image found ({selector!r} within {entry.get('wait_s', 10.0)} s)",
                    skipped=True,
                )
            for url, link in results:
                yield FetchTask(url, member.name, "web_page", source_name, page_url=link or page_url)
    finally:
        if own_driver and driver is not None:
            driver.quit()
