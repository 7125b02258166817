"""Alignment views (`embed.align_views`): extra landmark sources give extra crops of the same face, and the
embedding averages every view."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.embed import make_embedder, model_version_label
from facedata.faces.analyze import FaceAnalyzer
from facedata.faces.detect import RetinaFaceDetector
from facedata.faces.views import JITTERS, ViewAligner, _perturbations, check_sources, embed_views
from facedata.imageio import read_image_file
from facedata.params import defaults, with_defaults

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def photo(lfw):
    rgb = read_image_file(lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").rgb
    return rgb, RetinaFaceDetector("cpu").detect([rgb])[0]


def test_each_source_that_finds_the_face_adds_a_crop(photo):
    rgb, dets = photo
    aligner = ViewAligner(["retinaface", "yunet", "mtcnn", "dlib5"], "dlib150", 150, "cpu")
    centre = dets.boxes[:1]
    crops = aligner.crops(rgb, centre, "retinaface")[0]
    assert len(crops) == 3  # yunet, mtcnn, dlib5: retinaface found the face and gave the base view already
    assert sorted(aligner._detectors) == ["mtcnn", "yunet"]  # the face's own detector is never even loaded
    assert all(c.shape == (150, 150, 3) and c.dtype == np.uint8 for c in crops)
    # every view is the same face, nearly the same framing
    model = make_embedder("dlib-resnet", "cpu")
    v = model.embed(crops)
    assert np.linalg.norm(v - v.mean(0), axis=1).max() < 0.3
    # a box where no detector sees a face gets no detector view; dlib5 fits its points inside any box
    empty = np.array([[0, 0, 40, 40]], dtype=np.float32)
    assert len(aligner.crops(rgb, empty, "retinaface")[0]) == 1
    assert ViewAligner(["yunet"], "dlib150", 150, "cpu").crops(rgb, empty, "retinaface") == [[]]


def test_jitter_adds_fixed_perturbed_alignments_of_the_face(photo):
    rgb, dets = photo
    box, points = dets.boxes[:1], dets.landmarks[:1]
    crops = ViewAligner([], "dlib150", 150, "cpu", jitter=4).crops(rgb, box, "retinaface", points)[0]
    assert len(crops) == 4 and all(c.shape == (150, 150, 3) for c in crops)
    again = ViewAligner([], "dlib150", 150, "cpu", jitter=2).crops(rgb, box, "retinaface", points)[0]
    assert all(np.array_equal(a, b) for a, b in zip(again, crops[:2], strict=True))  # N takes the first N
    assert _perturbations(4) == JITTERS[:4]  # a fixed sequence, not this process's random state
    for deg, scale, dx, dy in JITTERS:
        assert abs(deg) <= 3 and 0.97 <= scale <= 1.03 and abs(dx) <= 0.02 and abs(dy) <= 0.02
    base = ViewAligner(["yunet"], "dlib150", 150, "cpu")
    assert not any(np.array_equal(c, base.crops(rgb, box, "retinaface")[0][0]) for c in crops)
    model = make_embedder("dlib-resnet", "cpu")
    v = model.embed(crops)
    assert np.linalg.norm(v - v.mean(0), axis=1).max() < 0.3  # the same face, slightly moved
    with pytest.raises(ValueError, match="needs each face's landmarks"):
        ViewAligner([], "dlib150", 150, "cpu", jitter=1).crops(rgb, box, "retinaface")


def test_embed_views_averages_unit_vectors():
    class Fixed:
        """Embeds a crop as the unit vector its first pixel names."""

        def embed(self, crops):
            out = np.zeros((len(crops), 3), np.float32)
            for i, c in enumerate(crops):
                out[i, int(c[0, 0, 0])] = 1.0
            return out

    def crop(axis):
        c = np.zeros((2, 2, 3), np.uint8)
        c[0, 0, 0] = axis
        return c

    got = embed_views(Fixed(), [crop(0), crop(1)], [[crop(1)], []])
    np.testing.assert_allclose(got[0], [2**-0.5, 2**-0.5, 0], atol=1e-6)  # two views averaged
    np.testing.assert_allclose(got[1], [0, 1, 0], atol=1e-6)  # no extra view: the base vector
    np.testing.assert_allclose(embed_views(Fixed(), [crop(2)], None), [[0, 0, 1]])


def test_bad_sources_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="distinct items of retinaface, yunet, mtcnn, dlib5"):
        check_sources(["yunet", "yunet"])
    with pytest.raises(ValueError, match="embed.align_views"):
        with_defaults({"embed": {"align_views": ["hog"]}})
    with pytest.raises(ValueError, match="only fits the dlib150 template"):
        ViewAligner(["dlib5"], "arcface112", 112, "cpu")
    for bad in (-1, 33, True, 2.5):
        with pytest.raises(ValueError, match="embed.jitter must be 0..32"):
            ViewAligner([], "dlib150", 150, "cpu", jitter=bad)
    with pytest.raises(ValueError, match="embed.jitter"):
        with_defaults({"embed": {"jitter": 100}})


def test_analyzer_with_views_embeds_closer_to_the_person(lfw):
    """The views average: same-person photos stay close, and the vectors differ from the single view's."""
    p = defaults()
    plain = FaceAnalyzer(p["detect"], {**p["embed"], "device": "cpu"})
    views = FaceAnalyzer(p["detect"], {**p["embed"], "device": "cpu", "align_views": ["yunet", "dlib5"]})
    paths = sorted((lfw / "Colin_Powell").glob("*.jpg"))[:2] + sorted((lfw / "Meryl_Streep").glob("*.jpg"))[:1]
    imgs = [read_image_file(p).rgb for p in paths]
    a = np.stack([fs[0].embedding for fs in plain.analyze(imgs)])
    b = np.stack([fs[0].embedding for fs in views.analyze(imgs)])
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-4)  # the extra views changed the vectors
    assert np.all(np.sum(a * b, axis=1) > 0.95)  # ... but they still describe the same faces
    d = lambda v, i, j: float(np.linalg.norm(v[i] - v[j]))  # noqa: E731
    assert d(b, 0, 1) < 0.6 < d(b, 0, 2)  # same person close, another person far (dlib's 0.6)


def test_version_label_names_the_views():
    assert model_version_label("v1", True, ["yunet", "dlib5"]) == "v1+flip+views=yunet,dlib5"
    assert model_version_label("v1", False) == "v1"
    assert model_version_label("v1", True, (), 8) == "v1+flip+jitter=8"
