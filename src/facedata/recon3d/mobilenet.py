"""The 3DMM regressor: MobileNet-V1 (width 0.5, 120x120 BGR input, 62 outputs) in plain torch.

The layer names and shapes match 3DDFA_V2's `mb05_120x120.pth` (after stripping `module.` and renaming
`fc_param` to `fc`), so its published weights load as they are; the network is ours, not an import of 3DDFA_V2
code. It is small (0.85M parameters, ~0.05 GFLOP per face), which is what makes >= 100 faces/s on a laptop
CPU possible when faces are batched.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

INPUT_SIZE = 120
NUM_PARAMS = 62


class DepthWiseBlock(nn.Module):
    """3x3 depth-wise conv + BN + ReLU, then 1x1 point-wise conv + BN + ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv_dw = nn.Conv2d(inplanes, inplanes, 3, stride=stride, padding=1, groups=inplanes, bias=False)
        self.bn_dw = nn.BatchNorm2d(inplanes)
        self.conv_sep = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


# (name, in, out, stride) at width 1.0; the width factor scales every channel count.
_BLOCKS = (
    ("dw2_1", 32, 64, 1),
    ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1),
    ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1),
    ("dw4_2", 256, 512, 2),
    ("dw5_1", 512, 512, 1),
    ("dw5_2", 512, 512, 1),
    ("dw5_3", 512, 512, 1),
    ("dw5_4", 512, 512, 1),
    ("dw5_5", 512, 512, 1),
    ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
)


class MobileNet3DMM(nn.Module):
    """MobileNet-V1 regressing the 62 normalised 3DMM parameters (12 pose, 40 shape, 10 expression)."""

    def __init__(self, widen_factor: float = 0.5, num_classes: int = NUM_PARAMS):
        super().__init__()
        w = lambda c: int(c * widen_factor)  # noqa: E731
        self.conv1 = nn.Conv2d(3, w(32), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w(32))
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in _BLOCKS:
            setattr(self, name, DepthWiseBlock(w(cin), w(cout), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w(1024), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def convert_state_dict(state: dict) -> OrderedDict:
    """3DDFA_V2 checkpoint keys -> ours: drop the DataParallel `module.` prefix, `fc_param` -> `fc`.

    The released checkpoint also holds `fc_lm`, an auxiliary 136-output landmark head used only in training;
    inference never reads it, so it is left out."""
    out = OrderedDict()
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("fc_lm."):
            continue
        if key.startswith("fc_param."):
            key = "fc." + key[len("fc_param.") :]
        out[key] = value
    return out


def load_checkpoint(path: str | Path, device: str = "cpu") -> MobileNet3DMM:
    """A network in eval mode with weights from a 3DDFA_V2 checkpoint or one written by `facedata train 3d`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else ckpt
    net = MobileNet3DMM()
    missing, unexpected = net.load_state_dict(convert_state_dict(state), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a MobileNet-0.5 3DMM checkpoint: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return net.to(device).eval()
