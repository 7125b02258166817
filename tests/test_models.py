"""The model resolver: search order, sha256 checks, offline errors, downloads (from a local server), and the
`facedata models` command."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from facedata import models
from facedata.cli import main
from facedata.models import ModelError, ModelFile, ModelSpec

PAYLOAD = b"weights of a test model\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def spec(monkeypatch, tmp_path):
    """A registered test model, with every search location pointed into tmp_path."""
    monkeypatch.setenv("FACEDATA_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    s = ModelSpec(
        name="test-model",
        kind="embedder",
        folder="test_model",
        version="v1",
        files=(ModelFile("w.bin", SHA, None),),
        license="test",
        description="a test model",
        torch_checkpoints=True,
    )
    monkeypatch.setitem(models.REGISTRY, s.name, s)
    return s


def _put(path, data=PAYLOAD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_search_order_and_sha_check(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEDATA_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"test-model.*w\.bin not found.*downloads are off"):
        models.locate("test-model")
    torch_copy = _put(tmp_path / "torch" / "checkpoints" / "w.bin")
    assert models.locate_file("test-model") == torch_copy
    cache_copy = _put(models.cache_dir() / "test_model" / "w.bin")
    assert models.locate_file("test-model") == cache_copy
    env_copy = _put(tmp_path / "models" / "test_model" / "w.bin")
    assert models.locate_file("test-model") == env_copy
    _put(env_copy, b"substituted")  # a corrupt or swapped file is refused, the next good copy is used
    assert models.locate_file("test-model") == cache_copy
    _put(cache_copy, b"bad")
    _put(torch_copy, b"bad")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.locate("test-model")


def test_package_data_is_found_without_importing_the_package():
    """dlib's models ship in face_recognition_models, whose __init__ needs pkg_resources: found anyway."""
    labels = [label for label, _ in models.candidates(models.get_spec("dlib-resnet"))]
    assert "package face_recognition_models" in labels


class _Server:
    def __init__(self, payload: bytes):
        payload_ = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path != "/w.bin":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload_)))
                self.end_headers()
                self.wfile.write(payload_)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_download_is_checked_and_cached(spec, monkeypatch):
    monkeypatch.setenv("FACEDATA_OFFLINE", "0")
    good = _Server(PAYLOAD)
    try:
        monkeypatch.setitem(
            models.REGISTRY,
            spec.name,
            ModelSpec(**{**spec.__dict__, "files": (ModelFile("w.bin", SHA, f"{good.url}/w.bin"),)}),
        )
        path = models.locate_file("test-model")
        assert path == models.cache_dir() / "test_model" / "w.bin" and path.read_bytes() == PAYLOAD
    finally:
        good.close()
    path.unlink()
    evil = _Server(b"not the weights")
    try:
        monkeypatch.setitem(
            models.REGISTRY,
            spec.name,
            ModelSpec(**{**spec.__dict__, "files": (ModelFile("w.bin", SHA, f"{evil.url}/w.bin"),)}),
        )
        with pytest.raises(ModelError, match="refusing it"):
            models.locate("test-model")
        assert not path.exists() and not list(path.parent.glob("*.part"))
        monkeypatch.setitem(
            models.REGISTRY,
            spec.name,
            ModelSpec(**{**spec.__dict__, "files": (ModelFile("w.bin", SHA, f"{evil.url}/missing.bin"),)}),
        )
        with pytest.raises(ModelError, match="download of .* failed"):
            models.locate("test-model")
    finally:
        evil.close()


def test_models_command_lists_availability(spec, tmp_path):
    _put(tmp_path / "models" / "test_model" / "w.bin")
    res = CliRunner().invoke(main, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["test-model"]["available"] is True
    assert str(tmp_path / "models" / "test_model" / "w.bin") in rows["test-model"]["files"][0]
    assert {"dlib-resnet", "yunet", "retinaface", "mtcnn", "facenet-vggface2"} <= set(rows)
    text = CliRunner().invoke(main, ["models"])
    assert text.exit_code == 0 and "onnx:<path>" in text.output and "test-model" in text.output


def test_models_fetch_offline_is_a_clear_error(spec, monkeypatch):
    monkeypatch.setenv("FACEDATA_OFFLINE", "1")
    res = CliRunner().invoke(main, ["models", "fetch", "test-model"])
    assert res.exit_code != 0
    assert "downloads are off" in res.output
    res = CliRunner().invoke(main, ["models", "fetch", "no-such-model"])
    assert res.exit_code != 0 and "unknown model 'no-such-model'" in res.output


@pytest.mark.shared
def test_every_registered_model_resolves_from_shared_models(shared):
    for name in ("dlib-resnet", "dlib-shape5", "mtcnn", "yunet", "retinaface"):
        for path in models.locate(name, download=False).values():
            assert path.is_file()


def test_identity_follows_the_weights_bytes_and_hashes_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models._sha256_cached.cache_clear()
    weights = tmp_path / "rec.onnx"
    weights.write_bytes(b"a" * (2 << 20))
    first = models.file_identity("onnx:rec.onnx", weights)
    assert first.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert first.version == f"sha256:{first.sha256[:16]}"
    cached = json.loads((tmp_path / "cache" / "facedata" / models.SHA_CACHE_NAME).read_text())
    assert cached[str(weights.resolve())][2] == first.sha256  # (size, mtime, sha256) for the next process
    weights.write_bytes(b"b" * (2 << 20))  # replaced under the same name
    second = models.file_identity("onnx:rec.onnx", weights)
    assert second.sha256 != first.sha256 and second.name == first.name
    with pytest.raises(ModelError, match="not found"):
        models.file_identity("onnx:gone.onnx", tmp_path / "gone.onnx")
    combined = models.combine("m", "v", [first, second])
    assert combined.sha256 not in (first.sha256, second.sha256)
