"""The review app, driven in headless Chromium: `facedata review` started as users start it, a name opened, a
face rejected with the keyboard, a split, a merge, an undo, a pair answered, drag and shift-click selection;
the `reviews` manifest checked after each; a rebuild keeps every decision. Plus what the app must refuse:
a POST without the CSRF token or from another origin, paths in image requests, an unexpected Host.
Screenshots go to the test's tmp dir (and to $FACEDATA_TEST_ARTIFACTS when set)."""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facedata import manifest
from facedata.pipeline.runner import run_stage
from facedata.review import decisions

from .conftest import free_port
from .test_cluster_stage import NAMES, b_label, demo_project

CHROMIUM = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or (
    os.path.exists("/usr/bin/chromedriver") and "/usr/bin/chromedriver"
)


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((112, 112, 3), colour, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def built(tmp_path):
    """The demo project from the cluster tests, clustered, with real PNG crops (one colour per person)."""
    root = tmp_path / "project"
    root.mkdir()
    b = demo_project(root)
    colours = {
        n: tuple(int(v) for v in np.random.default_rng(k).integers(40, 230, 3)) for k, n in enumerate(NAMES)
    }
    for f in b.faces:
        (root / f["crop_path"]).write_bytes(_png(colours.get(b_label(b, f) or "fay", (128, 128, 128))))
    assert run_stage("cluster", root) == 0
    decisions.ensure(root)
    return root, b


@contextlib.contextmanager
def review_app(root: Path, tmp_path: Path, ready: str = "/"):
    """`facedata review` started as users start it (reviewer `selenium`), its URL once `ready` answers 200."""
    port = free_port()
    log = open(tmp_path / "review.log", "w")  # noqa: SIM115 - closed below
    exe = Path(sys.executable).parent / "facedata"
    proc = subprocess.Popen(
        [str(exe), "review", "--project", str(root), "--port", str(port), "--reviewer", "selenium"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", ready)
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the review app did not start: " + (tmp_path / "review.log").read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def chromium():
    """Headless Debian Chromium driven by chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--window-size=1400,1000", "--disable-background-networking"):  # fmt: skip
        options.add_argument(arg)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def app_url(built, tmp_path):
    with review_app(built[0], tmp_path) as url:
        yield url


def _raw_get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (no client-side normalisation of `..`)."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    r = conn.getresponse()
    return r.status, r.read()


def test_requests_the_app_must_refuse(app_url, built):
    root, b = built
    for path in ("/crop/..%2F..%2Fparams.yaml", "/image/../../params.yaml", "/crop/../../../etc/passwd",
                 "/image/%2e%2e%2f%2e%2e%2fparams.yaml", "/static/../app.py", "/crop/" + "0" * 32):  # fmt: skip
        status, body = _raw_get(app_url, path)
        assert status in (400, 404), (path, status)
        assert b"sources:" not in body and b"root:" not in body
    assert _raw_get(app_url, "/", host="evil.example:80")[0] == 400  # DNS rebinding
    face = b.faces[0]["face_id"]
    assert _raw_get(app_url, f"/crop/{face}")[0] == 200
    for page in ("/", "/queue", "/pairs", "/name/ann", f"/face/{face}", f"/similar/{face}"):
        assert _raw_get(app_url, page)[0] == 200, page
    assert _raw_get(app_url, "/name/nobody")[0] == 404
    conn = http.client.HTTPConnection(app_url.split("//")[1], timeout=10)
    for headers in ({"Origin": app_url}, {"Origin": "http://evil.example", "X-CSRF-Token": "x"}, {}):
        conn.request("POST", "/api/decide", body='{"action": "undo", "undoes": "last"}',
                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
        r = conn.getresponse()
        assert r.status == 403, headers
        r.read()
    assert decisions.read(root) == []


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")
def test_review_in_a_real_browser_and_decisions_survive_a_rebuild(app_url, built, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    root, b = built
    shots = tmp_path / "screenshots"
    shots.mkdir()
    extra = os.environ.get("FACEDATA_TEST_ARTIFACTS")
    driver = chromium()
    wait = WebDriverWait(driver, 20)

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(shots / f"{name}.png", Path(extra) / f"review-{name}.png")

    def rows() -> list[dict]:
        return decisions.read(root)

    def settle(n: int) -> None:
        """Wait for the n-th decision to be saved and the page to reload."""
        wait.until(lambda d: len(rows()) >= n)
        wait.until(ec.presence_of_element_located((By.ID, "title")))

    def tiles(section: str = "grid"):
        return driver.find_elements(By.CSS_SELECTOR, f'[data-section="{section}"] .face')

    def key(k: str) -> None:
        ActionChains(driver).send_keys(k).perform()

    def reload_then(action) -> None:
        old = driver.find_element(By.TAG_NAME, "html")
        action()
        try:
            wait.until(ec.staleness_of(old))
        except Exception as exc:
            shot("failed")
            status = driver.find_element(By.ID, "status").text
            raise AssertionError(f"the page did not reload; status: {status}") from exc

    try:
        driver.get(app_url + "/")
        assert "facedata review" in driver.title
        shot("index")
        driver.find_element(By.LINK_TEXT, "ann").click()
        wait.until(ec.presence_of_element_located((By.ID, "title")))
        assert driver.find_element(By.ID, "title").text == "ann"
        imgs = driver.find_elements(By.CSS_SELECTOR, ".face img")
        assert imgs and all(i.get_attribute("loading") == "lazy" for i in imgs)
        wait.until(
            lambda d: d.execute_script("return document.images[0].complete && document.images[0].naturalWidth") > 0
        )
        shot("name-ann")

        # Shift-click range and drag selection.
        grid = tiles()
        grid[0].click()
        ActionChains(driver).key_down(Keys.SHIFT).click(grid[3]).key_up(Keys.SHIFT).perform()
        assert len(driver.find_elements(By.CSS_SELECTOR, ".face.selected")) == 4
        key(Keys.ESCAPE)
        assert not driver.find_elements(By.CSS_SELECTOR, ".face.selected")
        first, third = grid[0].rect, grid[2].rect
        corner = (-first["width"] / 2 + 2, -first["height"] / 2 + 2)
        chain = ActionChains(driver).move_to_element_with_offset(grid[0], *corner).click_and_hold()
        chain.move_by_offset(20, 5).move_by_offset(third["x"] - first["x"], 20).release().perform()
        assert len(driver.find_elements(By.CSS_SELECTOR, ".face.selected")) == 3
        shot("drag-selection")
        key(Keys.ESCAPE)

        # Reject one face with the keyboard: x = not this person.
        victim = tiles()[-1].get_attribute("data-face")
        driver.find_element(By.CSS_SELECTOR, f'.face[data-face="{victim}"]').click()
        reload_then(lambda: key("x"))
        settle(1)
        r = rows()[-1]
        assert (r["action"], r["reason"], r["target"], r["face_ids"]) == (
            "reject",
            "not_this_person",
            "ann",
            [victim],
        )
        assert r["reviewer"] == "selenium" and r["build"]
        assert victim not in [t.get_attribute("data-face") for t in tiles()]
        shot("after-reject")

        # Split two of cyd's faces off into a new cluster (s).
        driver.get(app_url + "/name/cyd")
        cyd = tiles()
        split = [cyd[0].get_attribute("data-face"), cyd[1].get_attribute("data-face")]
        cyd[0].click()
        cyd[1].click()
        reload_then(lambda: key("s"))
        settle(2)
        r = rows()[-1]
        assert r["action"] == "split" and sorted(r["face_ids"]) == sorted(split)
        assert len(r["other_face_ids"]) == len(cyd) - 2
        # The split faces are now an unnamed cluster: it is listed on the index page.
        driver.get(app_url + "/")
        group_links = driver.find_elements(By.CLASS_NAME, "group-link")
        assert f"grp:{r['review_id']}" in [g.text for g in group_links]

        # Merge it back with cyd's cluster (g) from "more like this".
        driver.get(app_url + f"/similar/{split[0]}")
        near = tiles()
        assert near[0].get_attribute("data-face") == split[0]  # the face itself is the most similar
        other_cyd = next(t for t in near if t.get_attribute("data-group").startswith("auto:"))
        near[0].click()
        other_cyd.click()
        shot("merge-selection")
        reload_then(lambda: key("g"))
        settle(3)
        r = rows()[-1]
        assert r["action"] == "merge" and r["target"] == "cyd" and set(split) <= set(r["face_ids"])
        state = decisions.fold(rows())
        assert all(state.label[f] == "id:cyd" for f in split)

        # Undo (u) takes the merge back: the split holds again.
        reload_then(lambda: key("u"))
        settle(4)
        r = rows()[-1]
        assert r["action"] == "undo" and r["undoes"] == rows()[-2]["review_id"]
        state = decisions.fold(rows())
        assert all(state.label[f].startswith("grp:") for f in split)

        # The "same person?" queue: y.
        driver.get(app_url + "/pairs")
        pair = driver.find_elements(By.CSS_SELECTOR, ".pair")
        if pair:
            a, bb = pair[0].get_attribute("data-a"), pair[0].get_attribute("data-b")
            shot("pairs")
            reload_then(lambda: key("y"))
            wait.until(lambda d: len(rows()) >= 5)
            r = rows()[-1]
            assert r["action"] == "same" and sorted(r["face_ids"]) == sorted([a, bb])
        else:
            pytest.fail("the pairs queue is empty on a build with doubtful faces")

        # The gold sample (the demo's folders are labelled) scores the reviewer on the index page.
        driver.get(app_url + "/")
        assert "selenium" in driver.find_element(By.CSS_SELECTOR, "table.gold").text
        # A POST without the token is refused by the app, from inside the page too.
        status = driver.execute_async_script(
            "const done = arguments[0];"
            "fetch('/api/decide', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({action: 'undo', undoes: 'last'})}).then(r => done(r.status));"
        )
        assert status == 403
        driver.get(app_url + "/face/" + victim)
        assert driver.find_element(By.CSS_SELECTOR, ".source .box")
        assert "source_uri" in driver.find_element(By.CSS_SELECTOR, "table.lineage").text
        shot("face-lineage")
    finally:
        driver.quit()

    # Rebuild: every decision holds in the clusters manifest.
    n = len(rows())
    assert run_stage("cluster", root) == 0
    c = {r["face_id"]: r for r in manifest.read("clusters", root).to_pylist()}
    assert c[victim]["identity"] is None and c[victim]["review_decision"] == "rejected:not_this_person"
    assert len({c[f]["cluster_id"] for f in split}) == 1 and c[split[0]]["review_decision"] == "grouped"
    rest = [f["face_id"] for f in b.faces if b_label(b, f) == "cyd" and f["face_id"] not in split]
    assert c[split[0]]["cluster_id"] not in {c[f]["cluster_id"] for f in rest}
    assert len(rows()) == n


def _client(root: Path, **kw):
    import warnings

    from facedata.review.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = create_app(root, "tester", {"testserver"}, "dlib-resnet", **kw)
    client = TestClient(app)
    client.headers.update({"X-CSRF-Token": app.state.csrf_token, "Origin": "http://testserver"})
    return client


def test_api_explains_what_it_cannot_do(built):
    root, b = built
    c = _client(root)
    ann = [f["face_id"] for f in b.faces if b_label(b, f) == "ann"]
    bob = [f["face_id"] for f in b.faces if b_label(b, f) == "bob"]
    cases = [
        ({"action": "merge", "face_ids": [ann[1], bob[1]]}, 400, "belong to ann, bob"),
        ({"action": "merge", "face_ids": [ann[1], ann[2]]}, 400, "at least two clusters"),
        ({"action": "reject", "face_ids": ["f" * 32], "reason": "not_a_face"}, 400, "unknown face ids"),
        ({"action": "reject", "face_ids": [ann[1]], "reason": "boring"}, 400, "needs a reason"),
        ({"action": "undo", "undoes": "last"}, 400, "nothing of yours to undo"),
    ]
    for body, status, message in cases:
        r = c.post("/api/decide", json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    assert (
        c.post("/api/decide", content=b"{not json", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert decisions.read(root) == []
    # A reject from a name's page is kept apart from that name's typical faces (a cannot-link for the build).
    r = c.post("/api/decide", json={"action": "reject", "face_ids": [ann[1]], "reason": "not_this_person"})
    row = decisions.read(root)[-1]
    assert r.status_code == 200 and row["target"] == "ann" and ann[2] in row["other_face_ids"]


def test_a_decision_during_a_build_is_refused_not_lost(built):
    from facedata.lock import project_lock

    root, b = built
    c = _client(root, lock_wait=0.3)
    face = b.faces[0]["face_id"]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from facedata.lock import project_lock\n"
         "with project_lock(sys.argv[1], 'dvc repro'):\n    print('held', flush=True); time.sleep(30)", str(root)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        r = c.post("/api/decide", json={"action": "reject", "face_ids": [face], "reason": "not_a_face"})
        assert r.status_code == 503 and "busy" in r.json()["error"]
    finally:
        holder.kill()
        holder.wait()
    assert decisions.read(root) == []
    with project_lock(root, "test"):
        pass
    assert (
        c.post("/api/decide", json={"action": "reject", "face_ids": [face], "reason": "not_a_face"}).status_code
        == 200
    )
