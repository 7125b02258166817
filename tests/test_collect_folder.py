"""The folder source: every entry it does not take gets a crawl_log row saying why, nothing outside the root
is read (links are resolved and refused first), and special files are refused unread."""

from __future__ import annotations

import os
import threading

from facedata import manifest
from facedata.pipeline.ingest import run
from facedata.pipeline.runner import make_context

from .test_ingest import jpeg, make_tree, project


def _rows(root) -> dict[str, dict]:
    return {r["source_uri"]: r for r in manifest.read("crawl_log", root).to_pylist()}


def test_every_entry_gets_a_row_and_nothing_outside_the_root_is_read(tmp_path):
    src = tmp_path / "photos"
    outside = tmp_path / "elsewhere"
    make_tree(
        src,
        {
            "Ann/1.jpg": jpeg(1),
            "Ann/2.jpg": jpeg(2),
            "Ann/3.jpg": jpeg(3),
            "Ann/.hidden.jpg": jpeg(4),
            "Ann/Thumbs.db": b"x",
            "Ann/album/4.jpg": jpeg(5),
            "..Bob/1.jpg": jpeg(6),
            "loose.jpg": jpeg(7),
        },
    )
    make_tree(outside, {"secret.jpg": jpeg(8), "locked.jpg": jpeg(9)})
    os.chmod(outside / "locked.jpg", 0)
    os.symlink(outside / "secret.jpg", src / "Ann" / "0_outside.jpg")  # a photo outside the root
    os.symlink(outside / "locked.jpg", src / "Ann" / "0_locked.jpg")  # unreadable: read would say so
    os.symlink("/etc/passwd", src / "Ann" / "0_passwd.jpg")
    os.symlink(src / "Ann" / "1.jpg", src / "Ann" / "0_inside.jpg")  # inside the root: followed
    os.symlink("loop_b.jpg", src / "Ann" / "loop_a.jpg")
    os.symlink("loop_a.jpg", src / "Ann" / "loop_b.jpg")
    os.symlink("gone.jpg", src / "Ann" / "broken.jpg")
    os.mkfifo(src / "Ann" / "pipe.jpg")
    os.symlink(outside, src / "Linked")  # a name folder outside the root
    project(tmp_path, [{"root": "photos", "labeled": True, "max_per_name": 4}])

    done = threading.Event()
    result: dict = {}

    def go():
        result["metrics"] = run(make_context("ingest", tmp_path))
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(120), "the walk blocked (a FIFO was opened?)"
    rows = _rows(tmp_path)
    reason = {
        uri.removeprefix("photos/"): (r["status"], (r["reason"] or "").split(":")[0]) for uri, r in rows.items()
    }
    assert reason == {
        "Ann/0_inside.jpg": ("stored", ""),
        "Ann/0_locked.jpg": ("failed", "outside_root"),
        "Ann/0_outside.jpg": ("failed", "outside_root"),
        "Ann/0_passwd.jpg": ("failed", "outside_root"),
        "Ann/1.jpg": ("duplicate", "same bytes as photos/Ann/0_inside.jpg"),
        "Ann/2.jpg": ("stored", ""),
        "Ann/3.jpg": ("stored", ""),
        "Ann/.hidden.jpg": ("skipped", "hidden"),
        "Ann/Thumbs.db": ("skipped", "os_metadata"),
        "Ann/album": ("skipped", "subfolder"),
        "Ann/broken.jpg": ("failed", "broken_link"),
        "Ann/loop_a.jpg": ("failed", "symlink_loop"),
        "Ann/loop_b.jpg": ("failed", "symlink_loop"),
        "Ann/pipe.jpg": ("failed", "special_file"),
        "..Bob": ("skipped", "hidden"),
        "Linked": ("failed", "outside_root"),
        "loose.jpg": ("skipped", "no_name"),
    }
    assert "FIFO" in rows["photos/Ann/pipe.jpg"]["reason"]
    assert "/etc/passwd" in rows["photos/Ann/0_passwd.jpg"]["reason"]
    stored = {r["source_uri"] for r in manifest.read("images", tmp_path).to_pylist()}
    assert stored == {"photos/Ann/0_inside.jpg", "photos/Ann/2.jpg", "photos/Ann/3.jpg"}
    metrics = result["metrics"]
    assert metrics["n_items"] == len(reason)
    # Rerun: the same rows, nothing new read.
    again = run(make_context("ingest", tmp_path))
    assert again["n_items"] == len(reason) and again["n_stored"] == 3


def test_max_per_name_leaves_a_row_for_each_file_it_leaves_out(tmp_path):
    make_tree(tmp_path / "photos", {f"Ann/{i}.jpg": jpeg(i) for i in range(4)})
    project(tmp_path, [{"root": "photos", "names": ["Ann"], "max_per_name": 2}])
    metrics = run(make_context("ingest", tmp_path))
    assert metrics["n_stored"] == 2 and metrics["skip_reasons"] == {"cap_per_name": 2}
    raised = project(tmp_path, [{"root": "photos", "names": ["Ann"], "max_per_name": 3}])
    assert raised is None
    metrics = run(make_context("ingest", tmp_path))
    assert metrics["n_stored"] == 3 and metrics["skip_reasons"] == {"cap_per_name": 1}
