"""The pure-torch NMS kernel registered when torchvision's compiled ops cannot load (CPU torch + CUDA wheel)."""

from __future__ import annotations

import torch

from facedata import torchvision_compat
from facedata.torchvision_compat import ensure_torchvision, nms_reference


def brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook greedy NMS, one box at a time, written independently of the kernel under test."""

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(iou(boxes[i].tolist(), boxes[k].tolist()) <= thr for k in keep):
            keep.append(i)
    return keep


def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def test_reference_kernel_matches_brute_force():
    for seed in range(5):
        boxes, scores = random_boxes(150, seed)
        for thr in (0.3, 0.5, 0.7):
            assert nms_reference(boxes, scores, thr).tolist() == brute_force_nms(boxes, scores, thr)


def test_empty_input():
    assert nms_reference(torch.zeros((0, 4)), torch.zeros(0), 0.5).numel() == 0


def test_torchvision_ops_work_after_ensure():
    ensure_torchvision()
    import torchvision

    boxes, scores = random_boxes(300, 7)
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == brute_force_nms(boxes, scores, 0.5)
    groups = torch.arange(300) % 3
    kept = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    expected = []
    for g in range(3):
        idx = torch.nonzero(groups == g).flatten()
        expected += [int(idx[i]) for i in brute_force_nms(boxes[idx], scores[idx], 0.5)]
    assert sorted(kept.tolist()) == sorted(expected)


def test_fallback_flag_says_whether_our_kernel_is_registered():
    ensure_torchvision()
    assert torchvision_compat.FALLBACK_ACTIVE is (not torchvision_compat._compiled_ops_load())
