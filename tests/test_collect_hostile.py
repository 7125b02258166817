"""`facedata ingest-urls` against a hostile local server: every kind of bad answer ends in exactly one status
row, valid images are stored once, refused hosts see no traffic, and nothing crashes (issue 5)."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facedata import manifest
from facedata.cli import main as cli

from .collect_servers import (
    CONTACT,
    HTML,
    SVG,
    LocalServer,
    animated,
    bomb_png,
    chunked,
    drip,
    encode,
    exif_rotated_jpeg,
    fail_then,
    fast_crawl_params,
    gzip_bomb,
    gzipped,
    jpeg,
    noise_image,
    png,
    redirect,
    reset,
    send,
    short_body,
    stall,
    static,
    write_project,
)

UA = f"facedata-test/1.0 ({CONTACT})"
MAX_BYTES = 2_000_000


def oversize_declared(req) -> None:
    """Content-Length far over the cap; the client must refuse from the header alone."""
    req.send_response(200)
    req.send_header("Content-Type", "image/jpeg")
    req.send_header("Content-Length", str(50_000_000))
    req.end_headers()
    try:
        for _ in range(100):
            req.wfile.write(b"\x00" * 65536)
            time.sleep(0.01)
    except OSError:
        pass


def sixteen_bit_png() -> bytes:
    arr = (np.arange(96 * 80, dtype=np.uint32).reshape(80, 96) * 8).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def cases(other: LocalServer) -> list[tuple[str, object, str, str | None]]:
    """(path, route, expected JSON status, expected reason code) — 30+ kinds of answers."""
    dup = jpeg(8)
    return [
        (
            "/ok/1.jpg",
            static(jpeg(1), headers={"ETag": '"v1-abc"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            "stored",
            None,
        ),
        ("/near-dup.jpg", static(encode(noise_image(1), "JPEG", quality=55)), "stored", None),
        ("/../../etc/passwd.jpg", static(jpeg(23)), "stored", None),
        ("/404.jpg", static(b"nope", "text/plain", 404), "failed", "http_404"),
        ("/gone.jpg", static(b"gone", "text/plain", 410), "failed", "http_410"),
        ("/flaky.jpg", fail_then(jpeg(2), "image/jpeg", 500), "stored", None),
        ("/ratelimited.jpg", fail_then(jpeg(3), "image/jpeg", 429, headers={"Retry-After": "1"}), "stored", None),
        ("/always503.jpg", static(b"busy", "text/plain", 503, {"Retry-After": "0"}), "failed", "http_503"),
        ("/retry-after-long.jpg", static(b"", "text/plain", 429, {"Retry-After": "3600"}), "failed", "http_429"),
        ("/drip.jpg", drip(), "failed", "timeout"),
        ("/stall.jpg", stall(), "failed", "timeout"),
        ("/oversize.jpg", oversize_declared, "failed", "too_large"),
        ("/oversize-chunked.jpg", chunked(3 * MAX_BYTES), "failed", "too_large"),
        ("/html-as.jpg", static(HTML, "image/jpeg"), "failed", "html"),
        ("/page.html", static(HTML, "text/html; charset=utf-8"), "failed", "wrong_content_type"),
        ("/truncated.jpg", static(jpeg(4, (300, 300))[:1500], "image/jpeg"), "failed", "truncated"),
        ("/incomplete.jpg", short_body(jpeg(5)), "failed", "incomplete"),
        ("/bomb.png", static(bomb_png(), "image/png"), "failed", "decompression_bomb"),
        ("/gzip-bomb.jpg", gzip_bomb(), "failed", "gzip_bomb"),
        ("/gzipped.png", gzipped(png(6), "image/png"), "stored", None),
        ("/loop1", redirect("/loop2"), "failed", "redirect_loop"),
        ("/chain/0", redirect("/chain/1"), "failed", "too_many_redirects"),
        ("/to-other-host.jpg", redirect(other.url("/ok/1.jpg")), "failed", "blocked_address"),
        ("/to-ftp.jpg", redirect("ftp://127.0.0.1/x.jpg"), "failed", "scheme"),
        ("/redirected.jpg", redirect("/target/7.jpg", 301), "stored", None),
        ("/dup-a.jpg", static(dup), "stored|duplicate", None),  # whichever arrives first is stored
        ("/dup-b.jpg", static(dup), "stored|duplicate", None),
        ("/text-plain.jpg", static(jpeg(9), "text/plain"), "stored", "content_type_mismatch"),
        ("/octet.png", static(png(10), "application/octet-stream"), "stored", None),
        ("/svg.svg", static(SVG, "image/svg+xml"), "failed", "svg"),
        ("/svg-as.png", static(SVG, "image/png"), "failed", "svg"),
        ("/reset.jpg", reset(), "failed", "connection"),
        ("/empty.jpg", static(b"", "image/jpeg"), "failed", "empty"),
        ("/tiny.png", static(png(11, (8, 8)), "image/png"), "failed", "too_small"),
        ("/cmyk.jpg", static(encode(noise_image(12).convert("CMYK"), "JPEG")), "stored", None),
        ("/16bit.png", static(sixteen_bit_png(), "image/png"), "stored", None),
        ("/anim.gif", static(animated("GIF", 13), "image/gif"), "stored", None),
        ("/anim.webp", static(animated("WEBP", 16), "image/webp"), "stored", None),
        ("/rgba.png", static(png(19, mode="RGBA"), "image/png"), "stored", None),
        ("/gray.jpg", static(encode(noise_image(20).convert("L"), "JPEG")), "stored", None),
        ("/exif.jpg", static(exif_rotated_jpeg(21)), "stored", None),
        ("/private/secret.jpg", static(jpeg(22)), "failed", "robots"),
    ]


@pytest.fixture()
def servers():
    with LocalServer("127.0.0.1") as main, LocalServer("127.0.0.2") as other:
        other.routes["/ok/1.jpg"] = static(jpeg(1))
        yield main, other


def _setup(main: LocalServer, other: LocalServer, tmp_path):
    expected = {}
    for path, route, status, code in cases(other):
        main.routes[path] = route
        expected[main.url(path)] = (status, code)
    main.routes["/loop2"] = redirect("/loop1")
    for i in range(1, 9):
        main.routes[f"/chain/{i}"] = redirect(f"/chain/{i + 1}")
    main.routes["/target/7.jpg"] = static(jpeg(7))
    main.routes["/etc/passwd.jpg"] = main.routes["/../../etc/passwd.jpg"]  # clients remove dot segments
    main.routes["/robots.txt"] = lambda req: send(req, 200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
    lines = list(expected)
    secret = main.url("/ok/1.jpg").replace("http://", "http://user:hunter2@") + "?token=abc123&size=big"
    extra = {
        "not a url": ("failed", "bad_url"),
        "ftp://127.0.0.1/x.jpg": ("failed", "scheme"),
        other.url("/ok/1.jpg"): ("failed", "blocked_address"),
        f"http://localhost:{main.port}/ok/1.jpg": ("failed", "blocked_address"),
        # a name (not an IP literal) that resolves to loopback: refused by the check after DNS resolution
        f"http://127.1:{main.port}/ok/1.jpg": ("failed", "blocked_address"),
        secret: ("duplicate", None),  # same bytes as /ok/1.jpg
        main.url("/ok/1.jpg"): ("duplicate", "repeated"),  # the same line twice
    }
    lines += list(extra)
    project = tmp_path / "proj"
    write_project(
        project,
        {
            "ingest": {"max_bytes": MAX_BYTES, "max_pixels": 20_000_000},
            "crawl": fast_crawl_params(user_agent=UA, allow_hosts=[f"127.0.0.1:{main.port}"], max_redirects=5),
        },
    )
    urls = tmp_path / "urls.txt"
    urls.write_text("# hostile list\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return project, urls, lines, expected, extra, secret


def _run(project, urls, out, *extra_args):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "ingest-urls",
            str(urls),
            "--name",
            "Test Person",
            "--json",
            str(out),
            "--root",
            str(project),
            *extra_args,
        ],
    )
    return result


@pytest.mark.slow
def test_hostile_server(servers, tmp_path):
    main, other = servers
    project, urls, lines, expected, extra, secret = _setup(main, other, tmp_path)
    out = tmp_path / "report.json"
    result = _run(project, urls, out)
    assert result.exit_code == 0, result.output + str(result.exception)
    report = json.loads(out.read_text())

    # exactly one entry per URL line, in order, each with a status
    assert len(report["urls"]) == len(lines)
    assert [u["url"] for u in report["urls"]][: len(expected)] == list(expected)
    for u, line in zip(report["urls"], lines, strict=True):
        want_status, want_code = expected.get(line) or extra[line]
        if line == main.url("/ok/1.jpg") and u is report["urls"][-1]:
            want_status, want_code = extra[line]
        assert u["status"] in want_status.split("|"), (line, u)
        if want_code is not None:
            assert (u["reason"] or "").startswith(want_code) or want_code in (u["reason"] or ""), (line, u)
        if u["status"] in ("stored", "duplicate"):
            assert u["image_id"] and len(u["image_id"]) == 64
        else:
            assert u["image_id"] is None and u["reason"]
    dups = [u["status"] for u in report["urls"] if u["url"].endswith(("/dup-a.jpg", "/dup-b.jpg"))]
    assert sorted(dups) == ["duplicate", "stored"]
    n = {s: sum(1 for u in report["urls"] if u["status"] == s) for s in ("stored", "duplicate", "failed")}
    assert (report["stored"], report["duplicates"], report["failed"]) == (n["stored"], n["duplicate"], n["failed"])

    # manifests: one crawl_log row per distinct (URL, name); each stored image once, in the store
    log = manifest.read("crawl_log", project).to_pylist()
    images = manifest.read("images", project).to_pylist()
    assert len(log) == len(set(lines))
    assert {r["status"] for r in log} <= {"stored", "duplicate", "failed", "skipped"}
    stored = [r for r in log if r["status"] == "stored"]
    assert len(images) == len(stored) == len({r["image_id"] for r in stored})
    store_files = [p for p in (project / "data" / "store" / "images").rglob("*") if p.is_file()]
    assert len(store_files) == len(images)
    by_uri = {r["source_uri"]: r for r in log}
    assert by_uri[main.url("/private/secret.jpg")]["status"] == "skipped"
    assert by_uri[main.url("/flaky.jpg")]["attempts"] == 2
    assert by_uri[main.url("/ratelimited.jpg")]["attempts"] == 2
    redirected = by_uri[main.url("/redirected.jpg")]
    assert redirected["final_url"] == main.url("/target/7.jpg") and redirected["http_status"] == 200
    img = {r["source_uri"]: r for r in images}
    assert (img[main.url("/exif.jpg")]["width"], img[main.url("/exif.jpg")]["height"]) == (60, 120)
    assert img[main.url("/cmyk.jpg")]["mode"] == "CMYK"
    assert img[main.url("/16bit.png")]["mode"].startswith("I")
    assert img[main.url("/anim.gif")]["n_frames"] == 3
    assert img[main.url("/ok/1.jpg")]["content_type"] == "image/jpeg"
    assert img[main.url("/ok/1.jpg")]["etag"] == '"v1-abc"'
    assert img[main.url("/ok/1.jpg")]["last_modified"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    near, first = img[main.url("/near-dup.jpg")], img[main.url("/ok/1.jpg")]
    assert {near["dup_of"], first["dup_of"]} == {None, first["image_id"]} or {near["dup_of"], first["dup_of"]} == {
        None,
        near["image_id"],
    }  # whichever was processed second points at the other
    assert "resolves to 127.0.0.1" in by_uri[f"http://127.1:{main.port}/ok/1.jpg"]["reason"]
    # store paths come from content hashes, never from the URL
    for row in images:
        assert (
            row["store_path"]
            == f"data/store/images/{row['image_id'][-2:]}/{row['image_id']}.{row['store_path'].rsplit('.', 1)[1]}"
        )
    assert img[main.url("/ok/1.jpg")]["query_name"] == "Test Person"
    assert img[main.url("/ok/1.jpg")]["fetched_at"] is not None

    # no credentials anywhere in what was written
    for blob in (out.read_text(), json.dumps(log, default=str), json.dumps(images, default=str), result.output):
        assert "hunter2" not in blob and "abc123" not in blob
    assert any("***@" in r["source_uri"] and "token=***" in r["source_uri"] for r in log)

    # politeness and safety: robots.txt read once, disallowed path and the other host never requested
    assert main.hits_of("/robots.txt") == 1
    assert main.hits_of("/private/secret.jpg") == 0
    assert other.record.paths() == []
    assert all(r["headers"].get("User-Agent") == UA for r in main.record.requests)

    # a rerun resumes: finished URLs are not fetched again, transient failures are retried
    before = {p: main.hits_of(p) for p in ("/ok/1.jpg", "/404.jpg", "/dup-a.jpg", "/bomb.png", "/drip.jpg")}
    result2 = _run(project, urls, tmp_path / "report2.json")
    assert result2.exit_code == 0, result2.output
    report2 = json.loads((tmp_path / "report2.json").read_text())
    assert [u["status"] for u in report2["urls"]] == [u["status"] for u in report["urls"]]
    assert main.hits_of("/ok/1.jpg") == before["/ok/1.jpg"]
    assert main.hits_of("/404.jpg") == before["/404.jpg"]
    assert main.hits_of("/dup-a.jpg") == before["/dup-a.jpg"]
    assert main.hits_of("/bomb.png") == before["/bomb.png"]
    assert main.hits_of("/drip.jpg") > before["/drip.jpg"]  # a timeout is worth another try next run
    assert len(manifest.read("crawl_log", project)) == len(set(lines))


def test_refused_before_connecting(tmp_path):
    """A URL list aimed only at not-allowed loopback hosts makes no connection at all."""
    with LocalServer("127.0.0.2") as other:
        other.routes["/a.jpg"] = static(jpeg(1))
        project = tmp_path / "p"
        write_project(project, {"crawl": fast_crawl_params()})
        urls = tmp_path / "u.txt"
        urls.write_text(f"{other.url('/a.jpg')}\nhttp://[::1]:{other.port}/a.jpg\n", encoding="utf-8")
        result = _run(project, urls, tmp_path / "r.json")
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "r.json").read_text())
        assert [u["status"] for u in report["urls"]] == ["failed", "failed"]
        assert all(u["reason"].startswith("blocked_address") for u in report["urls"])
        assert other.record.paths() == []
        # allowing the host explicitly makes the same list work
        result = _run(project, urls, tmp_path / "r2.json", "--allow-host", f"127.0.0.2:{other.port}")
        report = json.loads((tmp_path / "r2.json").read_text())
        assert report["urls"][0]["status"] == "stored"
        assert report["urls"][1]["reason"].startswith("blocked_address")  # [::1] is still not allowed


def test_bad_allow_host_and_missing_project(tmp_path):
    urls = tmp_path / "u.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    result = CliRunner().invoke(cli, ["ingest-urls", str(urls), "--root", str(tmp_path)])
    assert result.exit_code == 2 and "params.yaml" in result.output
    write_project(tmp_path / "p", {})
    result = CliRunner().invoke(
        cli, ["ingest-urls", str(urls), "--root", str(tmp_path / "p"), "--allow-host", "a b"]
    )
    assert result.exit_code == 2 and "HOST[:PORT]" in result.output


def test_unused_port_is_a_connection_failure(tmp_path):
    """Connection refused (nothing listens) is a failed row, not a crash."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    project = tmp_path / "p"
    crawl = fast_crawl_params(allow_hosts=[f"127.0.0.1:{port}"], max_retries=0, respect_robots=False)
    write_project(project, {"crawl": crawl})
    urls = tmp_path / "u.txt"
    urls.write_text(f"http://127.0.0.1:{port}/a.jpg\n")
    result = _run(project, urls, tmp_path / "r.json")
    assert result.exit_code == 0
    (entry,) = json.loads((tmp_path / "r.json").read_text())["urls"]
    assert entry["status"] == "failed" and entry["reason"].startswith("connection")
    assert "Connection refused" in entry["reason"] and len(entry["reason"]) < 120
    # with robots.txt honoured, an unreachable host is skipped for the run (RFC 9309: unreachable = disallow)
    write_project(project, {"crawl": fast_crawl_params(allow_hosts=[f"127.0.0.1:{port}"], max_retries=0)})
    _run(project, urls, tmp_path / "r2.json")
    (entry,) = json.loads((tmp_path / "r2.json").read_text())["urls"]
    assert entry["status"] == "failed" and entry["reason"].startswith("robots_unavailable")
