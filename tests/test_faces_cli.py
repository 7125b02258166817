"""`facedata faces` on real photos and on a file that is not an image; `facedata params` shows the keys."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from facedata.cli import main


@pytest.mark.shared
def test_faces_command_reports_faces_and_bad_files(shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    photo = shared / "data" / "video" / "test_photos" / "obama_and_biden.jpg"
    res = CliRunner().invoke(main, ["faces", "--json", "--embed", "--workers", "1", str(photo), str(bad)])
    assert res.exit_code == 1, res.output  # one of the two files could not be read
    lines = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert [r["status"] for r in lines] == ["ok", "error"]
    faces = lines[0]["faces"]
    assert len([f for f in faces if f["status"] == "ok"]) >= 2
    assert all(len(f["embedding"]) == 128 and len(f["landmarks"]) == 5 for f in faces)
    assert sum(f["primary"] for f in faces) == 1
    assert "not_an_image" in lines[1]["reason"]
    text = CliRunner().invoke(main, ["faces", "--workers", "1", str(photo)])
    assert text.exit_code == 0 and "#0 box" in text.output
    only_bad = CliRunner().invoke(main, ["faces", "--workers", "1", str(bad), str(bad)])
    assert only_bad.exit_code == 1 and "2 of 2 file(s) could not be read" in only_bad.output


def test_params_lists_the_faces_keys():
    res = CliRunner().invoke(main, ["params"])
    assert res.exit_code == 0
    for key in ("detect.detector", "detect.max_abs_yaw", "detect.max_outside", "embed.flip", "embed.onnx"):
        assert key in res.output
