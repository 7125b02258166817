"""The torch port of dlib's face recognition ResNet against dlib itself, on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from facedata import models
from facedata.embed.dlib_resnet import DlibFormatError, build_module, read_weights

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def chips(lfw):
    """dlib's own 150x150 chips (HOG detector, 5-point predictor, get_face_chip) of a few LFW faces."""
    import dlib
    from PIL import Image

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(models.locate_file("dlib-shape5")))
    out = []
    for name in ("Colin_Powell", "Meryl_Streep", "Hugo_Chavez"):
        for path in sorted((lfw / name).glob("*.jpg"))[:2]:
            img = np.asarray(Image.open(path).convert("RGB"))
            rects = det(img, 1)
            assert rects, path
            out.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
    return out


def test_weights_parse_into_the_known_architecture():
    w = read_weights(models.locate_file("dlib-resnet"))
    assert len(w.convs) == 29 and len(w.affines) == 29
    assert w.fc.shape == (256, 128)
    assert w.convs[0][0].shape == (32, 3, 7, 7) and w.convs[0][2:] == (2, 0)  # stride 2, no padding
    np.testing.assert_allclose(w.mean_rgb, [122.782, 117.001, 104.298], atol=1e-3)


def test_torch_port_matches_dlib_descriptor(chips):
    import dlib
    import torch

    ref = np.array(
        [
            np.asarray(v)
            for v in dlib.face_recognition_model_v1(
                str(models.locate_file("dlib-resnet"))
            ).compute_face_descriptor(chips)
        ]
    )
    net = build_module(read_weights(models.locate_file("dlib-resnet")))
    with torch.inference_mode():
        got = net(torch.from_numpy(np.stack(chips))).numpy()
    assert got.shape == (len(chips), 128)
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()
    # one at a time gives the same as a batch (no batch-dependent layers)
    with torch.inference_mode():
        one = net(torch.from_numpy(chips[0][None])).numpy()
    assert np.abs(one[0] - got[0]).max() < 1e-5


def test_not_a_dlib_network_is_refused(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x05con_4\x01\x03" + b"\x00" * 64)
    with pytest.raises(DlibFormatError):
        read_weights(bad)
    src = models.locate_file("dlib-resnet").read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(DlibFormatError):
        read_weights(cut)
