"""3DMM regression: our MobileNet with the 3DDFA_V2 mb05 weights, crops, pose conventions, AFLW2000-3D NME."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from .recon3d_helpers import AFLW, EXAMPLES, boxes_of, detector, read_rgb, regressor


@pytest.mark.shared
def test_mobilenet_takes_every_mb05_weight_and_is_the_published_size():
    import torch

    from facedata.recon3d.mobilenet import MobileNet3DMM, convert_state_dict
    from facedata.recon3d.regress import default_weights

    state = torch.load(default_weights(), map_location="cpu", weights_only=True)["state_dict"]
    net = MobileNet3DMM()
    net.load_state_dict(convert_state_dict(state), strict=True)  # every tensor of ours, nothing missing
    used = {k for k in state if not k.startswith("module.fc_lm.")}
    assert len(used) == len(net.state_dict())
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.85e6, rel=0.05)
    assert net.eval()(torch.zeros(2, 3, 120, 120)).shape == (2, 62)


@pytest.mark.shared
def test_onnxruntime_and_torch_backends_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, (5, 3, 120, 120)).astype(np.float32)
    a = regressor(backend="onnxruntime").run_network(x)
    b = regressor(backend="torch").run_network(x)
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()


def test_crop_frame_round_trip_with_turned_crops():
    from facedata.recon3d import crop
    from facedata.recon3d.train import photo_to_frame

    rng = np.random.default_rng(1)
    pts = rng.uniform(100, 300, (3, 68, 2))
    crops = crop.from_landmarks(pts, theta=np.radians([0.0, 17.0, -35.0]))
    frame = photo_to_frame(pts, crops)  # (3, 2, 68)
    back = crop.to_image(np.concatenate([frame, np.ones((3, 1, 68))], axis=1), crops)
    assert np.allclose(back[:, :, :2], pts, atol=1e-9)


@pytest.mark.shared
def test_flip_index_mirrors_the_68_points():
    from facedata.recon3d.bfm import FLIP_68, load_bases

    assert sorted(FLIP_68) == list(range(68))
    assert (FLIP_68[FLIP_68] == np.arange(68)).all()
    mean = load_bases().u  # the mean shape is left/right symmetric: mirrored x of each point's partner
    centre = mean[0].mean()
    assert np.abs((2 * centre - mean[0][FLIP_68]) - mean[0]).max() < 0.05 * np.ptp(mean[0])


def _crop_resize_3ddfa(image_bgr, roi):
    """3DDFA_V2's own `crop_img` (integer box, zero padding) + `cv2.resize`: the reference for our warp."""
    h, w = image_bgr.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi)
    res = np.zeros((ey - sy, ex - sx, 3), np.uint8)
    dsx, dsy = max(0, -sx), max(0, -sy)
    sx0, sy0, ex0, ey0 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    res[dsy : dsy + ey0 - sy0, dsx : dsx + ex0 - sx0] = image_bgr[sy0:ey0, sx0:ex0]
    return cv2.resize(res, (120, 120), interpolation=cv2.INTER_LINEAR)


@pytest.mark.shared
def test_warp_samples_like_3ddfa_crop_and_resize():
    from facedata.recon3d import crop

    img = cv2.imread(str(EXAMPLES / "JianzhuGuo.jpg"))
    box = np.array([[100.3, 80.7, 350.2, 330.9]])
    c = crop.from_boxes(box)
    x1, y1 = c[0, 0] - c[0, 2] / 2, c[0, 1] - c[0, 2] / 2
    ours = crop.warp(img, c)[0].astype(float)
    ref = _crop_resize_3ddfa(img, [x1, y1, x1 + c[0, 2], y1 + c[0, 2]]).astype(float)
    assert np.abs(ours - ref)[5:-5, 5:-5].mean() < 4.0  # same sampling, up to 3DDFA's integer box


@pytest.mark.shared
def test_aflw2000_nme_on_the_8_development_images():
    """A regression guard, not an accuracy claim: the crop recipe was chosen on these same 8 images."""
    from facedata.recon3d.evaluate import evaluate, load_aflw2000

    samples = load_aflw2000(AFLW)
    result = evaluate(samples, detector(), regressor())
    assert result["n_images"] == 8 and result["n_failed"] == 0
    assert result["nme_mean"] <= 3.5, result
    assert set(result["nme_by_yaw"]) == {"[0,30)", "[30,60)", "[60,90]"}
    one_pass = evaluate(samples, detector(), regressor(refine_passes=0, flip=False))
    assert one_pass["nme_mean"] > result["nme_mean"] + 0.2  # the refinement is what gets us there


@pytest.mark.shared
def test_yaw_sign_agrees_with_aflw_and_roll_follows_an_in_plane_turn():
    import scipy.io

    path = AFLW / "image00475.jpg"  # yaw 65.6 in the ground truth
    fit = regressor().fit([cv2.imread(str(path))], [boxes_of(str(path))[:1]])[0][0]
    gt_yaw = np.degrees(scipy.io.loadmat(path.with_suffix(".mat"))["Pose_Para"][0, 1])
    assert np.sign(fit.pose[0]) == np.sign(gt_yaw) and abs(fit.pose[0] - gt_yaw) < 10

    path = AFLW / "image00050.jpg"  # near frontal
    img = cv2.imread(str(path))
    base = regressor().fit([img], [boxes_of(str(path))[:1]])[0][0]
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)  # +20 degrees: counter-clockwise in the image
    turned = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    box = detector().detect([np.ascontiguousarray(turned[:, :, ::-1])])[0].boxes[:1]
    fit = regressor().fit([turned], [box])[0][0]
    assert fit.pose[2] - base.pose[2] == pytest.approx(20, abs=4)  # roll > 0: counter-clockwise
    assert abs(fit.pose[0] - base.pose[0]) < 5
    # the landmarks turn with the photo
    moved = base.landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    size = np.sqrt(np.prod(np.ptp(moved, axis=0)))
    assert np.linalg.norm(fit.landmarks[:, :2] - moved, axis=1).mean() / size < 0.04


@pytest.mark.shared
def test_batched_faces_equal_one_at_a_time():
    paths = [EXAMPLES / "trump_hillary.jpg", AFLW / "image00514.jpg"]
    imgs = [cv2.imread(str(p)) for p in paths]
    boxes = [boxes_of(str(p)) for p in paths]
    assert len(boxes[0]) >= 2  # several faces in one photo
    together = regressor().fit(imgs, boxes)
    for img, bx, fits in zip(imgs, boxes, together, strict=True):
        alone = [regressor().fit([img], [b[None]])[0][0] for b in bx]
        assert len(fits) == len(bx)
        for a, b in zip(fits, alone, strict=True):
            assert np.allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert np.allclose(a.pose, b.pose, atol=1e-3)


@pytest.mark.shared
def test_no_boxes_gives_empty_results():
    img = read_rgb(AFLW / "image00050.jpg")
    assert regressor().fit([img, img], [np.zeros((0, 4)), np.zeros((0, 4))]) == [[], []]


def test_held_out_faces_are_whole_photos_and_videos():
    """Faces of one photo, or frames of one video, are held out together (a near-identical frame of a scored
    face is never trained on); the choice is stable when faces are added."""
    from pathlib import Path

    from facedata.recon3d.train import Sample, split

    label = np.zeros((68, 2))
    faces = [Sample(f"f{i}", Path("x.jpg"), label, f"video:{i % 7}") for i in range(70)]
    faces += [Sample(f"g{i}", Path("y.jpg"), label, f"image:{i}") for i in range(200)]
    train, val = split(faces, 0.3, seed=0)
    groups = lambda part: {s.group for s in part}  # noqa: E731
    assert val and train and not groups(train) & groups(val)
    assert 0.15 < len(val) / len(faces) < 0.45
    more = faces + [Sample(f"h{i}", Path("z.jpg"), label, f"image:new{i}") for i in range(30)]
    assert {s.face_id for s in val} <= {s.face_id for s in split(more, 0.3, seed=0)[1]}
