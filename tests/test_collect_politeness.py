"""Politeness: per-host concurrency and rate limit (observed by the servers), caps per name and per run."""

from __future__ import annotations

import json
import threading
import time

from click.testing import CliRunner

from facedata import manifest
from facedata.cli import main as cli

from .collect_servers import LocalServer, drip, fast_crawl_params, jpeg, send, static, write_project


def counting(body: bytes, state: dict, lock: threading.Lock, delay: float = 0.1):
    """Serve `body` slowly, recording the most requests this server had in flight at once."""

    def route(req):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(delay)
        with lock:  # before answering: the client cannot send its next request before this point
            state["active"] -= 1
        send(req, 200, body, "image/jpeg")

    return route


def _run(project, urls, out, *args):
    result = CliRunner().invoke(cli, ["ingest-urls", str(urls), "--json", str(out), "--root", str(project), *args])
    report = json.loads(out.read_text())
    assert result.exit_code == (1 if report["failed"] else 0), result.output  # 1: some URLs were not stored
    return report


def test_per_host_concurrency_and_interval(tmp_path):
    with LocalServer("127.0.0.1") as a, LocalServer("127.0.0.1") as b:
        states = {}
        for server, name in ((a, "a"), (b, "b")):
            state, lock = {"active": 0, "peak": 0}, threading.Lock()
            states[name] = state
            for i in range(8):
                server.routes[f"/{i}.jpg"] = counting(jpeg(hash((name, i)) % 10_000), state, lock)
        project = tmp_path / "p"
        crawl = fast_crawl_params(
            allow_hosts=[f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
            per_host_concurrency=1,
            per_host_interval_s=0.15,
            max_concurrency=8,
            respect_robots=False,
        )
        write_project(project, {"crawl": crawl})
        urls = tmp_path / "u.txt"
        # all of host a first, then host b: the crawler must still work on both at once
        urls.write_text(
            "".join(a.url(f"/{i}.jpg") + "\n" for i in range(8))
            + "".join(b.url(f"/{i}.jpg") + "\n" for i in range(8))
        )
        report = _run(project, urls, tmp_path / "r.json")
        assert report["stored"] == 16
        assert states["a"]["peak"] == 1 and states["b"]["peak"] == 1  # one request at a time per host
        for server in (a, b):
            # Request starts as the server saw them: 8 requests span at least 7 intervals. (Server-side
            # timestamps jitter under load, so single gaps get a looser bound than the whole span.)
            starts = sorted(r["t"] for r in server.record.requests)
            gaps = [y - x for x, y in zip(starts, starts[1:], strict=False)]
            assert starts[-1] - starts[0] >= 7 * 0.15 * 0.95, gaps
            assert min(gaps) >= 0.15 / 2, gaps
        # the two hosts were crawled side by side, not one after the other
        a_times = [r["t"] for r in a.record.requests]
        b_times = [r["t"] for r in b.record.requests]
        assert min(b_times) < max(a_times)


def test_caps_per_name_and_per_run(tmp_path):
    with LocalServer("127.0.0.1") as s:
        for i in range(10):
            s.routes[f"/{i}.jpg"] = lambda req, i=i: send(req, 200, jpeg(700 + i), "image/jpeg")
        project = tmp_path / "p"
        write_project(
            project,
            {"crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{s.port}"], max_per_name=3, max_per_run=5)},
        )
        urls = tmp_path / "u.csv"
        urls.write_text(
            "url,name\n" + "".join(f"{s.url(f'/{i}.jpg')},{'Ann' if i < 6 else 'Bob'}\n" for i in range(10))
        )
        report = _run(project, urls, tmp_path / "r.json")
        statuses = [(u["status"], (u["reason"] or "").split(":")[0]) for u in report["urls"]]
        assert statuses[:3] == [("stored", "")] * 3
        assert statuses[3:6] == [("failed", "cap_per_name")] * 3
        assert statuses[6:8] == [("stored", "")] * 2
        assert statuses[8:] == [("failed", "cap_per_run")] * 2
        assert sum(s.hits_of(f"/{i}.jpg") for i in range(10)) == 5
        rows = manifest.read("crawl_log", project).to_pylist()
        assert sum(r["status"] == "skipped" for r in rows) == 5
        # capped URLs are not final: the next run fetches them (caps count new fetches, not reused rows)
        report = _run(project, urls, tmp_path / "r2.json")
        assert sum(u["status"] == "stored" for u in report["urls"]) == 10
        assert all(s.hits_of(f"/{i}.jpg") == 1 for i in range(10))


def test_a_trickling_server_is_not_retried_in_the_same_run(tmp_path):
    """A URL whose attempt used the whole total timeout (the server drips a byte every 0.2 s, so no read ever
    times out) is not retried in that run: with 2 retries it held a 30-URL crawl for 3 total timeouts plus
    backoff. Its row says why; the next run tries it again."""
    with LocalServer("127.0.0.1") as s:
        for i in range(29):
            s.routes[f"/{i}.jpg"] = static(jpeg(800 + i))
        s.routes["/trickle.jpg"] = drip(every=0.2)
        project = tmp_path / "p"
        crawl = fast_crawl_params(
            allow_hosts=[f"127.0.0.1:{s.port}"], total_timeout_s=1.5, read_timeout_s=1.0, max_retries=2
        )
        write_project(project, {"crawl": crawl})
        urls = tmp_path / "u.txt"
        urls.write_text("".join(s.url(f"/{i}.jpg") + "\n" for i in range(15)) + s.url("/trickle.jpg") + "\n")
        urls.write_text(urls.read_text() + "".join(s.url(f"/{i}.jpg") + "\n" for i in range(15, 29)))
        report = _run(project, urls, tmp_path / "r.json", "--name", "Ann")
        by_url = {u["url"].rsplit("/", 1)[1]: u for u in report["urls"]}
        assert sum(u["status"] == "stored" for u in report["urls"]) == 29
        trickle = by_url["trickle.jpg"]
        assert trickle["status"] == "failed" and trickle["reason"].startswith("timeout: total time over 1.5 s")
        assert "not retried in this run, the next run tries again" in trickle["reason"]
        row = next(
            r for r in manifest.read("crawl_log", project).to_pylist() if r["source_uri"].endswith("trickle.jpg")
        )
        assert row["attempts"] == 1 and s.hits_of("/trickle.jpg") == 1
        _run(project, urls, tmp_path / "r2.json", "--name", "Ann")
        assert s.hits_of("/trickle.jpg") == 2  # tried again by the next run
        assert all(s.hits_of(f"/{i}.jpg") == 1 for i in range(29))
