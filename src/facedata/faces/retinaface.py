"""RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019), as trained in biubug6's
Face-Detector-1MB-with-landmark (MIT), in plain torch.

A single-shot detector with an FPN over three strides (8, 16, 32) and two anchors per location; each anchor
predicts a face score, a box and five landmarks. ~0.43 M parameters: a few ms for a small image on a CPU, and
it batches on a GPU. The weights (`mobilenet0.25_Final.pth`) load with `weights_only=True` into the modules
below, whose names match that state dict. That repository's variant differs from Pytorch_Retinaface in two
ways that matter: plain ReLU everywhere (no leaky slope) and smaller anchors (10/20, 32/64, 128/256 px); with
the other variant's settings the same weights give boxes about twice too large (checked on LFW).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN_BGR = (104.0, 117.0, 123.0)
MIN_SIZES = ((10, 20), (32, 64), (128, 256))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)


def _conv_bn(inp: int, oup: int, stride: int = 1, k: int = 3, relu: bool = True):
    layers = [nn.Conv2d(inp, oup, k, stride, k // 2, bias=False), nn.BatchNorm2d(oup)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(inp: int, oup: int, stride: int):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class _MobileNetV1(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2),
            _conv_dw(8, 16, 1),
            _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2),
            _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class _FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, k=1)
        self.output2 = _conv_bn(in_channels[1], out, k=1)
        self.output3 = _conv_bn(in_channels[2], out, k=1)
        self.merge1 = _conv_bn(out, out)
        self.merge2 = _conv_bn(out, out)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return o1, o2, o3


class _SSH(nn.Module):
    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(inp, out // 2, relu=False)
        self.conv5X5_1 = _conv_bn(inp, out // 4)
        self.conv5X5_2 = _conv_bn(out // 4, out // 4, relu=False)
        self.conv7X7_2 = _conv_bn(out // 4, out // 4)
        self.conv7x7_3 = _conv_bn(out // 4, out // 4, relu=False)

    def forward(self, x):
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, inp: int, n: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(inp, n, 1)

    def forward(self, x):
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, out.shape[3] // 2)


class RetinaFaceNet(nn.Module):
    """Outputs per anchor: box deltas (4), class logits (2), landmark deltas (10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _MobileNetV1()
        self.fpn = _FPN((64, 128, 256), 64)
        self.ssh1, self.ssh2, self.ssh3 = _SSH(64, 64), _SSH(64, 64), _SSH(64, 64)
        self.ClassHead = nn.ModuleList([_Head(64, 2 * 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(64, 2 * 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(64, 2 * 10) for _ in range(3)])

    def forward(self, x):
        feats = self.fpn(self.body(x))
        feats = (self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2]))
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        lms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return boxes, logits, lms


def priors(height: int, width: int) -> np.ndarray:
    """Anchor boxes (cx, cy, w, h), in pixels, in the order the heads emit them."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        for i, j in itertools.product(range(fh), range(fw)):
            for s in sizes:
                out.append(((j + 0.5) * step, (i + 0.5) * step, s, s))
    return np.asarray(out, dtype=np.float32)


def decode(deltas: torch.Tensor, lm_deltas: torch.Tensor, anchors: torch.Tensor):
    """Box (x1, y1, x2, y2) and landmarks (5, 2) in pixels from the network's deltas."""
    v0, v1 = VARIANCE
    centre = anchors[:, :2] + deltas[..., :2] * v0 * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(deltas[..., 2:] * v1)
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    lms = anchors[:, None, :2] + lm_deltas.reshape(*lm_deltas.shape[:-1], 5, 2) * v0 * anchors[:, None, 2:]
    return boxes, lms
