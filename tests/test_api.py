"""The public Python API (`import facedata`): lazy import, the README example as written, numpy in/out through
the pipeline's own code paths, and `Project` for pipeline users."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from .conftest import REPO, SHARED
from .projects import env, make_project

COLIN = "Colin_Powell/Colin_Powell_000{}.jpg"


def test_import_facedata_loads_no_model_and_no_heavy_library():
    code = (
        "import sys, facedata\n"
        "heavy = [m for m in ('numpy', 'torch', 'cv2', 'prefect', 'pyarrow', 'facedata.api')\n"
        "         if m in sys.modules]\n"
        "print(heavy, 'detect_faces' in dir(facedata), callable(facedata.detect_faces))\n"
        "try:\n    facedata.no_such_thing\nexcept AttributeError as exc:\n    print('AttributeError', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env())
    assert out.stdout.splitlines()[0] == "[] True True"
    assert "no attribute 'no_such_thing'" in out.stdout


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its api-example block"
    return m.group(1)


def test_readme_example_is_ten_lines():
    assert len(readme_example().strip().splitlines()) <= 12


@pytest.mark.shared
@pytest.mark.slow
def test_readme_example_runs_as_written(shared):
    code = readme_example()
    if (REPO.parent / "shared").resolve() != SHARED:  # FACEDATA_SHARED elsewhere: same files, other folder
        code = code.replace('"../shared/', f'"{SHARED}/')
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env(), timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["1 True [0 0]", "ok (3448, 3)"], out.stdout


@pytest.fixture(scope="module")
def fd(shared):
    import facedata

    return facedata


@pytest.mark.shared
def test_detect_and_embed_use_the_pipeline_analyzer(fd, lfw):
    from facedata.faces.analyze import FaceAnalyzer
    from facedata.params import defaults

    img = fd.load_image(lfw / COLIN.format(1))
    assert img.dtype == np.uint8 and img.ndim == 3
    faces = fd.detect_faces(img)
    vecs = fd.embed_faces(img)
    p = defaults()
    ref = FaceAnalyzer(p["detect"], p["embed"]).analyze([img])[0]
    assert len(faces) == len(ref) == len(vecs) >= 1
    np.testing.assert_allclose(faces.boxes, np.array([f.box for f in ref]), atol=1e-4)
    np.testing.assert_allclose(vecs, np.array([f.embedding for f in ref]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert faces.landmarks.shape == (len(faces), 5, 2) and faces.quality.shape == (len(faces),)
    assert faces.ok.all()


@pytest.mark.shared
def test_embed_faces_keeps_the_order_of_the_faces_given(fd, lfw):
    # a photo with two faces: the vectors follow the given order, even reversed
    a, b = fd.load_image(lfw / COLIN.format(1)), fd.load_image(lfw / "AJ_Cook/AJ_Cook_0001.jpg")
    h = max(a.shape[0], b.shape[0])
    pair = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    pair[: a.shape[0], : a.shape[1]], pair[: b.shape[0], a.shape[1] :] = a, b
    faces = fd.detect_faces(pair)
    assert len(faces) >= 2
    fwd = fd.embed_faces(pair, faces)
    rev = fd.Faces(
        faces.boxes[::-1], faces.scores[::-1], faces.landmarks[::-1], faces.quality, faces.pose, faces.ok
    )
    np.testing.assert_allclose(fd.embed_faces(pair, rev), fwd[::-1], atol=1e-5)


def test_distance_and_cluster_faces():
    import facedata as fd
    from facedata.params import defaults

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    x = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.02, size=(12, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = fd.distance(x, x)
    assert d.shape == (12, 12) and np.allclose(np.diag(d), 0, atol=1e-6)
    assert fd.distance(x[0], x[1]) == pytest.approx(np.linalg.norm(x[0] - x[1]))
    assert fd.cluster_faces(x).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    p = defaults()
    p["cluster"]["method"], p["cluster"]["threshold"] = "agglomerative", 1.99
    assert fd.cluster_faces(x, params=p).tolist() == [0] * 12
    # two faces of one image are never one cluster
    apart = fd.cluster_faces(x, cannot_link=np.array([[0, 1]]))
    assert apart[0] != apart[1]


def test_bad_input_is_a_clear_error(tmp_path):
    import facedata as fd
    from facedata.imageio import ImageRejected
    from facedata.params import ParamsError, defaults

    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        fd.detect_faces(np.zeros((10, 10), np.float32))
    (tmp_path / "x.jpg").write_text("<html>not an image</html>")
    with pytest.raises(ImageRejected):
        fd.load_image(tmp_path / "x.jpg")
    p = defaults()
    p["cluster"]["threshold"] = 7
    with pytest.raises(ParamsError, match="cluster.threshold"):
        fd.cluster_faces(np.eye(3), params=p)


@pytest.mark.shared
def test_project_finds_its_root_and_refuses_unknown_stages(tmp_path, lfw):
    import facedata as fd
    from facedata.manifest import ManifestError

    root = make_project(tmp_path / "proj", lfw, names=["Colin_Powell"], per_name=1)
    (root / "sub").mkdir()
    project = fd.Project(root / "sub")
    assert project.root == root.resolve()
    assert project.params["cluster"]["method"] == "knn_average"
    with pytest.raises(ValueError, match=r"clustr \(did you mean `cluster`\?\); stages: check, ingest"):
        project.build(stages=["clustr"])
    assert not any((root / "data" / "metrics").glob("*.json"))  # nothing ran
    with pytest.raises(ManifestError, match="faces"):
        project.manifest("faces")
    assert project.manifest("faces", missing_ok=True).empty


@pytest.mark.shared
def test_params_choose_the_models_as_in_the_pipeline(fd, lfw):
    from facedata.faces.detect import YuNetDetector
    from facedata.params import defaults

    img = fd.load_image(lfw / COLIN.format(1))
    p = defaults()
    p["detect"]["detector"] = "yunet"
    faces = fd.detect_faces(img, params=p)
    ref = YuNetDetector(p["detect"]["candidate_score"], max_side=p["detect"]["max_side"]).detect([img])[0]
    assert len(faces) == len(ref) >= 1
    np.testing.assert_allclose(faces.boxes[0], ref.order_by_score().boxes[0], atol=1e-3)
    assert not np.allclose(faces.boxes[0], fd.detect_faces(img).boxes[0], atol=0.5)  # not RetinaFace's box
