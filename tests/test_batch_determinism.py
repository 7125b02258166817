"""Detection and embedding results depend on the image or face alone: not on which others share its batch, the
batch size, the order, or the number of CPU threads the caller runs with. `detect.batch_size` and
`embed.batch_size` are speed-only params (outside the params hash), and a run resumed after a kill batches what
is left differently from a fresh run, so anything else would break reuse and byte-identical rebuilds."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from facedata.faces.detect import DETECTORS, make_detector
from facedata.faces.pool import get_threads, set_threads
from facedata.imageio import read_image_file
from facedata.params import defaults

pytestmark = pytest.mark.shared

P = defaults()


@pytest.fixture(scope="module")
def images(shared):
    """Mixed sizes: four 250x250 LFW images (one shape, so they share detector batches) and web photos of
    several sizes, two of one shape."""
    lfw = shared / "data/faces/lfw"
    paths = [sorted((lfw / n).glob("*.jpg"))[0] for n in ("Colin_Powell", "Angelina_Jolie", "Hugo_Chavez")]
    paths += sorted((lfw / "Winona_Ryder").glob("*.jpg"))[:1]
    paths += sorted((shared / "data/faces/webfaces/Angelina_Jolie").glob("*.jpg"))[:4]
    return [read_image_file(p).rgb for p in paths]


def arrangements(n: int) -> dict[str, list[list[int]]]:
    """Ways to cut items 0..n-1 into batches: different sizes, orders and companions."""
    idx = list(range(n))
    rev = idx[::-1]
    return {
        "batch 3": [idx[i : i + 3] for i in range(0, n, 3)],
        "batch 8": [idx[i : i + 8] for i in range(0, n, 8)],
        "batch 3, reversed": [rev[i : i + 3] for i in range(0, n, 3)],
        "all, shuffled": [list(np.random.default_rng(7).permutation(n))],
    }


@contextmanager
def threads(n: int):
    saved = get_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(*saved)


def batched(fn, items: list, batches: list[list[int]]) -> list:
    out: list = [None] * len(items)
    for b in batches:
        for i, r in zip(b, fn([items[i] for i in b]), strict=True):
            out[i] = r
    return out


@pytest.mark.parametrize("name", DETECTORS)
def test_detections_do_not_depend_on_batch_order_or_threads(name, images):
    det = make_detector({**P["detect"], "detector": name, "device": "cpu"})
    with threads(1):
        ref = [det.detect([img])[0] for img in images]
    assert sum(len(d) for d in ref) >= len(images), "the images hold faces"
    runs = {k: (b, 1) for k, b in arrangements(len(images)).items()}
    runs["batch 8, 2 threads"] = (arrangements(len(images))["batch 8"], 2)
    for label, (batches, n_threads) in runs.items():
        with threads(n_threads):
            got = batched(det.detect, images, batches)
        for i, (a, b) in enumerate(zip(ref, got, strict=True)):
            for field in ("boxes", "scores", "landmarks"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), f"{name}, {label}: image {i} {field}"


def test_analyzer_faces_and_vectors_do_not_depend_on_batch_order_or_threads(images):
    from facedata.faces.analyze import FaceAnalyzer

    analyzer = FaceAnalyzer({**P["detect"], "device": "cpu"}, {**P["embed"], "device": "cpu", "flip": True})

    def view(faces):
        return [
            (f.box.tobytes(), f.landmarks.tobytes(), f.score, f.blur, f.quality, f.yaw, f.embedding.tobytes())
            for f in faces
        ]

    with threads(1):
        ref = [view(analyzer.analyze([img])[0]) for img in images]
    assert sum(len(r) for r in ref) >= len(images)
    for label, batches in arrangements(len(images)).items():
        for n_threads in (1, 2):
            with threads(n_threads):
                got = batched(lambda imgs: analyzer.analyze(imgs, keep_crops=False), images, batches)
            assert [view(fs) for fs in got] == ref, f"{label}, {n_threads} thread(s)"


@pytest.fixture(scope="module")
def crops(images):
    from facedata.faces.analyze import FaceAnalyzer

    analyzer = FaceAnalyzer({**P["detect"], "device": "cpu"})
    found = [f.crop for fs in analyzer.analyze(images) for f in fs]
    return found + [np.ascontiguousarray(c[:, ::-1]) for c in found]  # mirrored: more than one forward batch


def _check_embedder(model, crops: list[np.ndarray], thread_counts=(1, 2)) -> None:
    with threads(1):
        ref = np.concatenate([model.embed([c]) for c in crops])
    for label, batches in arrangements(len(crops)).items():
        for n_threads in thread_counts:
            with threads(n_threads):
                got = np.stack(batched(model.embed, crops, batches))
            assert got.tobytes() == ref.tobytes(), f"{label}, {n_threads} thread(s)"


def test_dlib_vectors_do_not_depend_on_batch_order_or_threads(crops):
    from facedata.embed import make_embedder

    assert len(crops) >= 9, "more crops than one forward batch"
    _check_embedder(make_embedder("dlib-resnet", "cpu"), crops)


def test_onnx_vectors_do_not_depend_on_batch_or_order(tmp_path, crops):
    """The dlib network exported to ONNX with a dynamic batch axis, run by onnxruntime."""
    import torch

    from facedata import models
    from facedata.embed.dlib_resnet import build_module, normalization, read_weights
    from facedata.embed.onnx import OnnxEmbedder

    weights = read_weights(models.locate_file("dlib-resnet"))
    net = build_module(weights)

    class Normalized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_normalized(x)

    path = tmp_path / "dlib.onnx"
    torch.onnx.export(
        Normalized().eval(),
        torch.zeros((1, 3, 150, 150)),
        str(path),
        input_names=["img"],
        output_names=["emb"],
        dynamic_axes={"img": {0: "n"}, "emb": {0: "n"}},
        dynamo=False,
    )
    _check_embedder(OnnxEmbedder(path, normalization(weights)), crops, thread_counts=(1,))
