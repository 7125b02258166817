"""Embedders: dlib-resnet (default), facenet-vggface2 (weights through the resolver) and generic ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.embed import l2_normalize, make_embedder, model_version_label
from facedata.faces.align import align
from facedata.faces.detect import YuNetDetector
from facedata.imageio import read_image_file
from facedata.models import ModelError

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def lfw_faces(lfw):
    """Landmarks of two photos each of two people."""
    det = YuNetDetector()
    out = {}
    for name in ("Colin_Powell", "Meryl_Streep"):
        for path in sorted((lfw / name).glob("*.jpg"))[:2]:
            rgb = read_image_file(path).rgb
            d = det.detect([rgb])[0]
            out[path.stem] = (rgb, d.landmarks[0])
    return out


def _crops(faces, template, size):
    return [align(rgb, lm, template, size)[0] for rgb, lm in faces.values()]


def test_dlib_resnet_unit_vectors_that_separate_people(lfw_faces):
    for flip in (False, True):
        m = make_embedder("dlib-resnet", "cpu", flip=flip)
        v = m.embed(_crops(lfw_faces, m.template, m.crop_size))
        assert v.shape == (4, 128) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        d = np.linalg.norm(v[:, None] - v[None], axis=2)
        assert d[0, 1] < 0.45 and d[2, 3] < 0.45  # same person (threshold ~0.43 on LFW)
        assert d[:2, 2:].min() > 0.5
    assert m.name == "dlib-resnet" and m.version == "dlib_face_recognition_resnet_model_v1"
    assert model_version_label(m.version, True).endswith("+flip")
    assert m.embed([]).shape == (0, 128)
    with pytest.raises(ValueError, match="150x150"):
        m.embed([np.zeros((112, 112, 3), np.uint8)])


def test_flip_averaging_is_the_mean_of_the_two_views(lfw_faces):
    plain = make_embedder("dlib-resnet", "cpu")
    flipped = make_embedder("dlib-resnet", "cpu", flip=True)
    crops = _crops(lfw_faces, plain.template, plain.crop_size)
    a = plain.embed(crops)
    b = plain.embed([c[:, ::-1].copy() for c in crops])
    np.testing.assert_allclose(flipped.embed(crops), l2_normalize(a + b), atol=1e-5)


def test_facenet_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEDATA_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError, match=r"facenet-vggface2.*20180402-114759-vggface2\.pt.*downloads are off"):
        make_embedder("facenet-vggface2", "cpu")


def test_facenet_embedder_runs_a_state_dict_through_the_right_preprocessing(tmp_path, lfw_faces):
    """Real architecture and loading path (weights_only=True); random weights, since the released file is
    not on this machine. Checks shape, normalisation, and that (x - 127.5) / 128 is what the net sees."""
    import torch

    from facedata.embed.facenet import FacenetEmbedder
    from facedata.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    ref = InceptionResnetV1(pretrained=None, classify=False).eval()
    path = tmp_path / "w.pt"
    torch.save(ref.state_dict(), path)
    m = FacenetEmbedder("cpu", weights=str(path))
    crops = _crops(lfw_faces, m.template, m.crop_size)[:2]
    v = m.embed(crops)
    assert v.shape == (2, 512)
    with torch.inference_mode():
        x = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() - 127.5) / 128
        expected = torch.nn.functional.normalize(ref(x), dim=1).numpy()
    np.testing.assert_allclose(v, expected, atol=1e-4)


def _export_onnx(path, size=112, layout="nchw", dynamic=True, seed=0):
    """A small deterministic conv net exported to ONNX (a stand-in recognizer with a known function)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 16),
    ).eval()
    model = net if layout == "nchw" else torch.nn.Sequential(_Permute(), net)
    shape = (1, 3, size, size) if layout == "nchw" else (1, size, size, 3)
    torch.onnx.export(
        model,
        torch.zeros(shape),
        str(path),
        input_names=["img"],
        output_names=["emb"],
        dynamic_axes={"img": {0: "n"}, "emb": {0: "n"}} if dynamic else None,
        dynamo=False,
    )
    return net


class _Permute(__import__("torch").nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def test_onnx_embedder_applies_the_input_spec(tmp_path, lfw_faces):
    import torch

    path = tmp_path / "rec.onnx"
    net = _export_onnx(path)
    spec = {"template": "arcface112", "mean": [127.5, 127.5, 127.5], "std": 128.0, "channels": "bgr"}
    m = make_embedder(f"onnx:{path}", onnx_spec=spec)
    assert (m.crop_size, m.dim, m.template, m.layout) == (112, 16, "arcface112", "nchw")
    assert m.name == "onnx:rec.onnx" and m.version.startswith("sha256:")
    crops = _crops(lfw_faces, "arcface112", 112)
    v = m.embed(crops)
    with torch.inference_mode():
        x = (torch.from_numpy(np.stack(crops)[..., ::-1].copy()).permute(0, 3, 1, 2).float() - 127.5) / 128
        expected = l2_normalize(net(x).numpy())
    np.testing.assert_allclose(v, expected, atol=1e-4)
    path2 = tmp_path / "nhwc.onnx"
    _export_onnx(path2, layout="nhwc")
    m2 = make_embedder(f"onnx:{path2}", onnx_spec={"mean": 127.5, "std": 128.0, "channels": "bgr"})
    assert m2.layout == "nhwc"
    np.testing.assert_allclose(m2.embed(crops), expected, atol=1e-4)
    path3 = tmp_path / "batch1.onnx"  # exported with a fixed batch of one: run crop by crop
    _export_onnx(path3, dynamic=False)
    m3 = make_embedder(f"onnx:{path3}", onnx_spec=spec)
    assert m3.one_at_a_time
    np.testing.assert_allclose(m3.embed(crops), expected, atol=1e-4)


def test_onnx_spec_errors_are_clear(tmp_path):
    from facedata.embed.onnx import OnnxSpecError

    path = tmp_path / "rec.onnx"
    _export_onnx(path)
    with pytest.raises(OnnxSpecError, match="unknown key"):
        make_embedder(f"onnx:{path}", onnx_spec={"colour": "rgb"})
    with pytest.raises(OnnxSpecError, match="does not match the model's input size 112"):
        make_embedder(f"onnx:{path}", onnx_spec={"size": 160})
    with pytest.raises(OnnxSpecError, match="template"):
        make_embedder(f"onnx:{path}", onnx_spec={"template": "square"})
    with pytest.raises(FileNotFoundError, match="not found"):
        make_embedder(f"onnx:{tmp_path / 'missing.onnx'}")
    with pytest.raises(ValueError, match="unknown embedding model"):
        make_embedder("arcface")
