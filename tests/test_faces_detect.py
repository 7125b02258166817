"""The three detectors on real photos: the face in the middle of LFW images, several faces in a group photo,
landmark order, and the shrink-for-detection mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedata.faces.detect import DETECTORS, Detections, _drop_contained, _shrink, make_detector
from facedata.imageio import read_image_file
from facedata.params import defaults

pytestmark = pytest.mark.shared

DETECT = defaults()["detect"]


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request):
    return make_detector({**DETECT, "detector": request.param, "device": "cpu"})


@pytest.fixture(scope="module")
def lfw_images(lfw):
    paths = [
        sorted((lfw / n).glob("*.jpg"))[0]
        for n in ("Colin_Powell", "Angelina_Jolie", "Hugo_Chavez", "Winona_Ryder")
    ]
    return [read_image_file(p).rgb for p in paths]


def _check_geometry(d: Detections, i: int) -> None:
    box, lm = d.boxes[i], d.landmarks[i]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0], "left eye/mouth corner (image left) first"
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min(), "eyes above nose above mouth"
    inside = (lm[:, 0] > box[0] - 5) & (lm[:, 0] < box[2] + 5) & (lm[:, 1] > box[1] - 5) & (lm[:, 1] < box[3] + 5)
    assert inside.all()


def test_finds_the_centred_lfw_face(detector, lfw_images):
    dets = detector.detect(lfw_images)
    assert len(dets) == len(lfw_images)
    for d in dets:
        assert len(d) >= 1
        assert d.boxes.dtype == np.float32 and d.landmarks.shape == (len(d), 5, 2)
        assert list(d.scores) == sorted(d.scores, reverse=True)
        i = int(
            np.argmin(
                np.hypot((d.boxes[:, 0] + d.boxes[:, 2]) / 2 - 125, (d.boxes[:, 1] + d.boxes[:, 3]) / 2 - 125)
            )
        )
        x1, y1, x2, y2 = d.boxes[i]
        assert x1 < 125 < x2 and y1 < 125 < y2 and 60 < x2 - x1 < 180
        assert d.scores[i] > 0.9
        _check_geometry(d, i)
    assert isinstance(detector.version, str) and detector.version


def test_group_photo_and_blank_image(detector, shared):
    rgb = read_image_file(shared / "data" / "video" / "test_photos" / "obama_and_biden.jpg").rgb
    rgb = cv2.resize(rgb, (700, 500), interpolation=cv2.INTER_AREA)  # 2000 px is slow for MTCNN's pyramid
    blank = np.full((240, 320, 3), 128, np.uint8)
    d, empty = detector.detect([rgb, blank])
    # Obama and Biden, large; a child's face lower right may be found too (it is a face)
    strong = d.boxes[d.scores > 0.8]
    widths = np.sort(strong[:, 2] - strong[:, 0])[::-1]
    assert len(strong) in (2, 3) and widths[1] > 50
    for i in range(len(d)):
        _check_geometry(d, i)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_large_images_are_shrunk_for_detection_and_mapped_back(lfw_images):
    big = cv2.resize(lfw_images[0], (1000, 1000), interpolation=cv2.INTER_CUBIC)
    small, back = _shrink(big, 500)
    assert small.shape[:2] == (500, 500) and back == 2.0
    assert _shrink(lfw_images[0], 500)[1] == 1.0 and _shrink(big, 0)[1] == 1.0
    det = make_detector({**DETECT, "detector": "yunet", "max_side": 500})
    full = make_detector({**DETECT, "detector": "yunet", "max_side": 0})
    a, b = det.detect([big])[0], full.detect([big])[0]
    assert len(a) and len(b)
    from facedata.faces.evaluate import iou

    assert iou(a.boxes[:1].astype(float), b.boxes[0].astype(float))[0] > 0.85  # same face, in source pixels


def test_close_up_portraits_give_one_face_not_its_parts(shared):
    """RetinaFace's anchors stop at 256 px: without the image pyramid a 700 px close-up face was missed and the
    net fired on its forehead and eyes instead (scores up to 0.95)."""
    det = make_detector({**DETECT, "detector": "retinaface", "device": "cpu"})
    paths = sorted((shared / "data" / "multiview" / "hrn_celebahq_same_person").glob("*.jpg"))
    assert len(paths) == 3
    for p in paths:
        rgb = read_image_file(p).rgb
        d = det.detect([rgb])[0]
        assert len(d) == 1, f"{p.name}: {d.boxes.tolist()} {d.scores.tolist()}"
        x1, y1, x2, y2 = d.boxes[0]
        assert x2 - x1 > 500 and d.scores[0] > 0.99
        _check_geometry(d, 0)


def test_face_parts_are_dropped_but_neighbouring_faces_kept():
    big = [200, 200, 800, 900]
    boxes = np.array(
        [
            big,
            [300, 120, 520, 340],  # forehead: 58% inside, centre inside, 1/9 of the area
            [380, 450, 460, 520],  # an eye: wholly inside
            [820, 300, 1000, 520],  # the next person, beside
            [700, 100, 900, 300],  # a face behind the shoulder: corner overlap only
        ],
        dtype=np.float32,
    )
    assert _drop_contained(boxes).tolist() == [True, False, False, True, True]
    assert _drop_contained(boxes[:1]).tolist() == [True]


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        make_detector({**DETECT, "detector": "haar"})
