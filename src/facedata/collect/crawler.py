"""The concurrent, polite crawler every web source feeds: URLs in, `SourceItem`s out (one per URL).

Scheduling: a thread pool of `crawl.max_concurrency` workers; each host (scheme + host + port) has its own
queue, at most `crawl.per_host_concurrency` requests in flight and at least `crawl.per_host_interval_s`
between request starts (raised to the host's robots.txt `Crawl-delay`). The dispatcher only hands a worker a
job whose host is ready, so a slow or rate-limited host never holds workers that other hosts could use.

Robustness: transient failures (timeouts, resets, 408/425/429/5xx) are retried up to `crawl.max_retries`
times with exponential backoff and jitter; a `Retry-After` on 429/503 is obeyed (and pauses the whole
host), up to `crawl.max_retry_after_s`. An attempt that used the whole `crawl.total_timeout_s` is not
retried in the same run (a trickling server would hold the run for as long again): its row says so, and the
next run tries the URL again. Everything else is final. robots.txt is fetched once per host and
checked for every URL and every redirect hop. Caps per queried name and per run bound what one run fetches.

Resumability: the caller passes `done(log_id)`; URLs an earlier run finished (stored, duplicate, or failed
for a reason that will not change) are not fetched again, they come out as `reused` items.

Results come out in completion order; every input task yields exactly one item (a repeated task, same URL
and name, is fetched and reported once).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from facedata import __version__, ids
from facedata.collect.base import SourceItem
from facedata.collect.config import user_agent
from facedata.collect.fetch import FetchConfig, Fetcher, FetchResult
from facedata.collect.netpolicy import NetPolicy, Target, UrlRefused, check_url, redact_url
from facedata.collect.robots import RobotsCache
from facedata.params import default

#: Failures worth another attempt within the same run.
RETRY_CODES = frozenset(
    {"timeout", "connection", "incomplete", "http_408", "http_425", "http_429", "http_500", "http_502"}
    | {"http_503", "http_504"}
)
#: Reason codes reported with status `skipped` (deliberately not fetched) rather than `failed`.
SKIP_CODES = frozenset({"robots", "cap_per_name", "cap_per_run"})


@dataclass(frozen=True)
class CrawlSettings:
    """The crawl section of params.yaml (defaults from the params spec) plus the download size cap."""

    user_agent: str = f"facedata/{__version__}"  # built from crawl.contact by `from_params`
    allow_hosts: tuple[str, ...] = ()
    max_concurrency: int = default("crawl.max_concurrency")
    per_host_concurrency: int = default("crawl.per_host_concurrency")
    per_host_interval_s: float = default("crawl.per_host_interval_s")
    connect_timeout_s: float = default("crawl.connect_timeout_s")
    read_timeout_s: float = default("crawl.read_timeout_s")
    total_timeout_s: float = default("crawl.total_timeout_s")
    max_retries: int = default("crawl.max_retries")
    backoff_base_s: float = default("crawl.backoff_base_s")
    backoff_max_s: float = default("crawl.backoff_max_s")
    max_retry_after_s: float = default("crawl.max_retry_after_s")
    max_redirects: int = default("crawl.max_redirects")
    respect_robots: bool = default("crawl.respect_robots")
    max_per_name: int = default("crawl.max_per_name")  # 0: no cap
    max_per_run: int = default("crawl.max_per_run")
    max_bytes: int = default("ingest.max_bytes")
    lookahead: int = 2000  # URLs buffered ahead of the fetchers (not a user setting)

    @classmethod
    def from_params(
        cls, params: dict, extra_allow: Iterable[str] = (), require_contact: bool = True
    ) -> CrawlSettings:
        """Settings from params.yaml; raises ParamsError when `crawl.contact` is needed (`require_contact`:
        any web source) and not set."""
        c = params["crawl"]
        given = {k: c[k] for k in cls.__dataclass_fields__ if k in c and k not in ("allow_hosts", "user_agent")}
        return cls(
            **given,
            user_agent=user_agent(c, required=require_contact),
            allow_hosts=tuple(c["allow_hosts"]) + tuple(extra_allow),
            max_bytes=params["ingest"]["max_bytes"],
        )

    def policy(self) -> NetPolicy:
        return NetPolicy.from_strings(self.allow_hosts, self.max_redirects)

    def fetch_config(self) -> FetchConfig:
        return FetchConfig(
            self.user_agent, self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s, self.max_bytes
        )


@dataclass
class FetchTask:
    """One URL to fetch, with what a source knows about it (copied into the item's `extra`)."""

    url: str
    query_name: str | None
    source_kind: str = "url"  # url | web_api | web_page
    source_name: str | None = None  # which configured source (list file, API, page template)
    page_url: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict)  # license, author, ...
    error: str | None = None  # the source could not produce a fetchable URL ("bad_url: ...")
    skipped: bool = False  # with `error`: not fetched on purpose (robots on the page, a filtered MIME type)

    @property
    def uri(self) -> str:
        return redact_url(self.url) or self.url

    @property
    def log_id(self) -> str:
        return ids.log_id(self.source_kind, self.uri, self.query_name)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so retries spread out
    without ever collapsing to zero."""
    step = min(cap, base * (2 ** max(attempt - 1, 0)))
    return step / 2 + rng.uniform(0, step / 2)


class HostGate:
    """Per-host politeness state shared by the dispatcher and by blocking callers (API sources, redirects)."""

    def __init__(self, interval: float, concurrency: int):
        self.base_interval = interval
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._inflight: Counter[str] = Counter()
        self._delay: dict[str, float] = {}

    def interval(self, host: str) -> float:
        return max(self.base_interval, self._delay.get(host, 0.0))

    def ready_at(self, host: str) -> float | None:
        """When a request to `host` may start; None while the host has its maximum in flight."""
        with self._lock:
            if self._inflight[host] >= self.concurrency:
                return None
            return self._next.get(host, 0.0)

    def start(self, host: str, now: float) -> None:
        with self._lock:
            self._inflight[host] += 1
            self._next[host] = max(now, self._next.get(host, 0.0)) + self.interval(host)

    def finish(self, host: str) -> None:
        with self._lock:
            self._inflight[host] -= 1

    def reserve(self, host: str) -> float:
        """Book the host's next slot for a blocking caller; returns how long to sleep before using it."""
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next.get(host, 0.0))
            self._next[host] = at + self.interval(host)
            return at - now

    def penalize(self, host: str, until: float) -> None:
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), until)

    def set_crawl_delay(self, host: str, seconds: float | None) -> None:
        """Raise the host's interval to its robots.txt Crawl-delay, counting from now (robots.txt itself was
        the last request)."""
        if seconds:
            with self._lock:
                self._delay[host] = float(seconds)
                self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + float(seconds))

    def inflight(self, host: str) -> int:
        with self._lock:
            return self._inflight[host]


class _DaemonPool:
    """A minimal thread pool with daemon workers. ThreadPoolExecutor joins its (non-daemon) workers at exit,
    so Ctrl-C would wait for every download in flight (up to crawl.total_timeout_s); daemon workers let an
    interrupted run checkpoint and exit at once."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()
        self._workers = workers

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(exc)

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        self._queue.put((fut, fn, args))
        return fut

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._queue.put(None)


@dataclass
class _Job:
    task: FetchTask
    target: Target
    attempts: int = 0


class Crawler:
    def __init__(self, settings: CrawlSettings, seed: int | None = None):
        self.settings = settings
        self.policy = settings.policy()
        self.fetcher = Fetcher(settings.fetch_config(), self.policy, pool_size=max(settings.max_concurrency, 4))
        self.gate = HostGate(settings.per_host_interval_s, settings.per_host_concurrency)
        self.robots = RobotsCache(
            lambda url: self.fetcher.fetch(url, expect_image=False, max_bytes=2_000_000),
            settings.user_agent,
            settings.respect_robots,
        )
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()  # requests, retries, robots fetches (observability)
        self._stats_lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def close(self) -> None:
        self.fetcher.close()

    def __enter__(self) -> Crawler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ blocking single GET

    def get(
        self, url: str, *, expect_image: bool = False, robots: bool = False, max_bytes: int | None = None
    ) -> FetchResult:
        """One URL with politeness and retries, blocking: for API calls and pages. `robots=False` for APIs,
        whose terms of use (not robots.txt, written for crawlers of pages) govern them."""
        attempt = 0
        while True:
            attempt += 1
            try:
                target = check_url(url, self.policy)
            except UrlRefused as exc:
                return FetchResult(url=redact_url(url) or url, code=exc.code, message=exc.message)
            time.sleep(self.gate.reserve(target.host_key))
            self._count("requests")
            res = self.fetcher.fetch(
                url, expect_image=expect_image, max_bytes=max_bytes, hop_check=self._hop_check(target, robots)
            )
            wait_s = self._retry_delay(res, attempt)
            if wait_s is None:
                return res
            self._count("retries")
            if res.code in ("http_429", "http_503"):
                self.gate.penalize(target.host_key, time.monotonic() + wait_s)
            time.sleep(wait_s)

    def _retry_delay(self, res: FetchResult, attempt: int) -> float | None:
        """Seconds before the next attempt, or None when `res` is final (and then possibly rewritten)."""
        s = self.settings
        if res.code not in RETRY_CODES:
            return None
        if res.out_of_time:
            res.message = (
                f"{res.message}; the attempt used the whole crawl.total_timeout_s ({s.total_timeout_s:g} s): "
                "not retried in this run, the next run tries again"
            )
            return None
        if attempt > s.max_retries:
            return None
        delay = backoff_delay(attempt, s.backoff_base_s, s.backoff_max_s, self.rng)
        if res.retry_after is not None:
            if res.retry_after > s.max_retry_after_s:
                res.message = (
                    f"{res.message}; Retry-After {res.retry_after:g} s exceeds crawl.max_retry_after_s "
                    f"{s.max_retry_after_s:g}: try again in a later run"
                )
                return None
            delay = max(delay, res.retry_after)
        return delay

    def _hop_check(self, first: Target, robots: bool) -> Callable[[Target, int], None]:
        def check(target: Target, hop: int) -> None:
            if robots and self.settings.respect_robots:
                allowed, reason, fetched = self.robots.allowed(target)
                if fetched:
                    self._count("robots_fetches")
                    rules = self.robots.known(target.host_key)
                    self.gate.set_crawl_delay(target.host_key, rules.crawl_delay if rules else None)
                if not allowed:
                    code = "robots" if reason and reason.startswith("disallowed") else "robots_unavailable"
                    raise UrlRefused(code, reason or "robots.txt")
                if fetched:  # robots.txt was a request too: keep the host's spacing before the next one
                    time.sleep(self.gate.reserve(target.host_key))
            if hop > 0:
                self._count("redirects")
                if target.host_key != first.host_key:
                    time.sleep(self.gate.reserve(target.host_key))

        return check

    # -------------------------------------------------------------------------------------- concurrent crawl

    def run(self, tasks: Iterable[FetchTask], done: Callable[[str], bool] | None = None) -> Iterator[SourceItem]:
        """Fetch every task; yields one SourceItem per distinct (source kind, URL, name)."""
        s = self.settings
        source = iter(tasks)
        exhausted = False
        queues: dict[str, deque[_Job]] = {}
        delayed: list[tuple[float, int, _Job]] = []
        seq = itertools.count()
        inflight: dict[Future, _Job] = {}
        buffered = 0
        admitted: set[str] = set()
        per_name: Counter[str | None] = Counter()
        n_new = 0
        rr = 0
        pool = _DaemonPool(s.max_concurrency, "facedata-crawl")
        try:
            while True:
                # Take new tasks a batch at a time, so slow task sources (API calls, browser pages) alternate
                # with dispatching downloads instead of all running first.
                pulled = 0
                while not exhausted and buffered < s.lookahead and pulled < 64:
                    pulled += 1
                    try:
                        task = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    lid = task.log_id
                    if lid in admitted:
                        continue
                    admitted.add(lid)
                    if task.error is not None:
                        yield self._item(task, error=task.error, skipped=task.skipped)
                        continue
                    if done is not None and done(lid):
                        yield self._item(task, reused=True)
                        continue
                    try:
                        target = check_url(task.url, self.policy)
                    except UrlRefused as exc:
                        yield self._item(task, error=f"{exc.code}: {exc.message}")
                        continue
                    if s.max_per_run and n_new >= s.max_per_run:
                        yield self._item(
                            task, error=f"cap_per_run: crawl.max_per_run {s.max_per_run} reached", skipped=True
                        )
                        continue
                    if s.max_per_name and per_name[task.query_name] >= s.max_per_name:
                        yield self._item(
                            task,
                            error=f"cap_per_name: crawl.max_per_name {s.max_per_name} reached for this name",
                            skipped=True,
                        )
                        continue
                    n_new += 1
                    per_name[task.query_name] += 1
                    queues.setdefault(target.host_key, deque()).append(_Job(task, target))
                    buffered += 1

                now = time.monotonic()
                while delayed and delayed[0][0] <= now:
                    _, _, job = heapq.heappop(delayed)
                    queues.setdefault(job.target.host_key, deque()).appendleft(job)

                hosts = [h for h, q in queues.items() if q]
                if hosts:
                    rr = (rr + 1) % len(hosts)
                    hosts = hosts[rr:] + hosts[:rr]
                wake = [d[0] for d in delayed[:1]]
                for host in hosts:
                    q = queues[host]
                    while q and len(inflight) < s.max_concurrency:
                        if s.respect_robots and self.robots.known(host) is None and self.gate.inflight(host):
                            break  # one request first: it reads robots.txt (and its Crawl-delay) for the host
                        at = self.gate.ready_at(host)
                        if at is None:
                            break
                        if at > now:
                            wake.append(at)
                            break
                        job = q.popleft()
                        self.gate.start(host, now)
                        job.attempts += 1
                        self._count("requests")
                        inflight[pool.submit(self._attempt, job)] = job
                    if len(inflight) >= s.max_concurrency:
                        break

                if exhausted and not inflight and buffered == 0:
                    return
                timeout = max(0.001, min(wake) - time.monotonic()) if wake else 0.5
                if not exhausted and buffered < s.lookahead:
                    timeout = 0.0  # more tasks to read first; collect whatever has finished meanwhile
                if not inflight:
                    if timeout == 0.0:
                        continue
                    time.sleep(min(timeout, 0.5))
                    continue
                finished, _ = wait(list(inflight), timeout=min(timeout, 0.5), return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = inflight.pop(fut)
                    self.gate.finish(job.target.host_key)
                    res = fut.result()
                    wait_s = self._retry_delay(res, job.attempts)
                    if wait_s is not None:
                        self._count("retries")
                        due = time.monotonic() + wait_s
                        if res.code in ("http_429", "http_503"):
                            self.gate.penalize(job.target.host_key, due)
                        heapq.heappush(delayed, (due, next(seq), job))
                        continue
                    buffered -= 1
                    yield self._result_item(job, res)
        finally:
            for fut in inflight:
                fut.cancel()
            pool.shutdown()

    def _attempt(self, job: _Job) -> FetchResult:
        try:
            return self.fetcher.fetch(job.task.url, expect_image=True, hop_check=self._hop_check(job.target, True))
        except Exception as exc:  # noqa: BLE001 - a bug here must cost one URL, never the batch
            return FetchResult(url=job.task.uri, code="internal", message=f"{type(exc).__name__}: {exc}"[:300])

    # ------------------------------------------------------------------------------------------------ items

    def _item(self, task: FetchTask, *, error: str | None = None, skipped: bool = False, reused: bool = False):
        return SourceItem(
            source_kind=task.source_kind,
            source_uri=task.uri,
            query_name=task.query_name,
            fetched_at=dt.datetime.now(dt.UTC),
            error=error,
            label=task.label,
            extra=self._extra(task),
            attempts=0,
            skipped=skipped,
            reused=reused,
        )

    def _extra(self, task: FetchTask) -> dict:
        return {"page_url": redact_url(task.page_url), "source_name": task.source_name, **task.meta}

    def _result_item(self, job: _Job, res: FetchResult) -> SourceItem:
        extra = self._extra(job.task)
        extra.update(
            final_url=res.final_url,
            http_status=res.status,
            content_type=res.content_type,
            etag=res.headers.get("etag"),
            last_modified=res.headers.get("last-modified"),
            note=res.note,
        )
        return SourceItem(
            source_kind=job.task.source_kind,
            source_uri=job.task.uri,
            query_name=job.task.query_name,
            fetched_at=dt.datetime.now(dt.UTC),
            data=res.data if res.ok else None,
            error=res.error,
            label=job.task.label,
            extra=extra,
            attempts=job.attempts,
            skipped=res.code in SKIP_CODES,
        )
