"""dlib's face recognition ResNet (the model behind face_recognition) as a PyTorch module.

dlib runs this network with its own portable C++ kernels: no BLAS, no batching across cores, no GPU in the
prebuilt wheel. The weights are plain float32 tensors inside dlib's
serialization format, and the architecture is fixed (dlib's `dnn_face_recognition_ex.cpp`, also compiled into
`dlib.face_recognition_model_v1`), so we read the tensors from the `.dat` file and run the same network in
torch: several times faster on one core (BENCHMARKS.md, throughput), batched, and on a GPU when there is
one. The output matches dlib's own to float precision (tests compare both on real faces), so it is the same
model, not an approximation.

Architecture (input 150x150 RGB, dlib's `anet_type`):
    conv 7x7/2 (32) - affine - relu - maxpool 3x3/2
    3 x res(32), res_down(64) + 3 x res(64), res_down(128) + 2 x res(128), res_down(256) + 2 x res(256),
    res_down(256), global average pool, fc 256 -> 128 (no bias)
where res(N) = relu(x + affine(conv3x3(relu(affine(conv3x3(x)))))) and res_down uses stride 2 in the first
conv and a 2x2 average pool on the skip path. dlib specifics kept exactly: strided convs and pools have no
padding (`_padding = stride != 1 ? 0 : size/2`), `affine` is batch norm folded to a per-channel scale and
shift, and a residual sum of tensors of different shapes zero-pads the smaller one at the end of each axis
(channels, bottom rows, right columns), which is what `add_prev` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.embed import TorchEmbedder

#: (blocks, first block downsamples) per level, input side first.
LEVELS = ((3, False), (4, True), (3, True), (3, True), (1, True))


class DlibFormatError(ValueError):
    """The file is not the dlib face recognition network this module knows how to read."""


@dataclass(frozen=True)
class DlibResNetWeights:
    mean_rgb: np.ndarray  # (3,) subtracted from pixels, then divided by 256
    convs: list[tuple[np.ndarray, np.ndarray, int, int]]  # (weight OIHW, bias, stride, padding)
    affines: list[tuple[np.ndarray, np.ndarray]]  # (scale, shift) per channel
    fc: np.ndarray  # (256, 128): out = x @ fc


def _int(b: bytes, i: int) -> tuple[int, int]:
    """dlib's integer encoding: a control byte (bit 7 sign, bits 0-3 byte count), then little-endian bytes."""
    c = b[i]
    n = c & 0x0F
    if n == 0 or n > 8:
        raise DlibFormatError(f"bad integer control byte {c:#x} at offset {i}")
    v = int.from_bytes(b[i + 1 : i + 1 + n], "little")
    return (-v if c & 0x80 else v), i + 1 + n


def _float(b: bytes, i: int) -> tuple[float, int]:
    """dlib's portable float: mantissa and exponent as integers, value = mantissa * 2**exponent."""
    m, i = _int(b, i)
    e, i = _int(b, i)
    return m * 2.0**e, i


def _string(b: bytes, i: int) -> tuple[str, int]:
    n, i = _int(b, i)
    return b[i : i + n].decode("latin-1"), i + n


def _tensor(b: bytes, i: int) -> tuple[np.ndarray, int]:
    """A `resizable_tensor`, serialization version 2: four dims then raw little-endian float32 values."""
    version, i = _int(b, i)
    if version != 2:
        raise DlibFormatError(f"tensor serialization version {version} at offset {i} (expected 2)")
    dims = []
    for _ in range(4):
        v, i = _int(b, i)
        dims.append(v)
    size = int(np.prod(dims))
    if i + 4 * size > len(b):
        raise DlibFormatError("tensor runs past the end of the file (truncated model?)")
    return np.frombuffer(b, "<f4", size, i).copy(), i + 4 * size


_LAYER = re.compile(rb"\x01(\x05con_4|\x07affine_|\x04fc_2|\x15input_rgb_image_sized)")


def read_weights(path: str | Path) -> DlibResNetWeights:
    """Parse the `.dat` file. Layers are stored input side first; each layer's record starts with its
    version string (`con_4`, `affine_`, `fc_2`, `input_rgb_image_sized`), which is what we anchor on."""
    data = Path(path).read_bytes()
    mean = None
    convs, affines, fc = [], [], None
    for m in _LAYER.finditer(data):
        name, i = _string(data, m.start())
        if name == "input_rgb_image_sized":
            vals = []
            for _ in range(3):
                v, i = _float(data, i)
                vals.append(v)
            mean = np.array(vals, np.float32)
        elif name == "con_4":
            params, i = _tensor(data, i)
            fields = []
            for _ in range(7):  # num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x
                v, i = _int(data, i)
                fields.append(v)
            nf, nr, nc, sy, sx, py, px = fields
            if sy != sx or py != px or nr != nc:
                raise DlibFormatError(f"unexpected non-square conv {fields}")
            cin = (params.size - nf) // (nf * nr * nc)
            if cin * nf * nr * nc + nf != params.size:
                raise DlibFormatError(f"conv params of size {params.size} do not fit {fields}")
            w = params[: nf * cin * nr * nc].reshape(nf, cin, nr, nc)
            convs.append((w, params[nf * cin * nr * nc :], sy, py))
        elif name == "affine_":
            params, i = _tensor(data, i)
            c = params.size // 2
            affines.append((params[:c], params[c:]))
        else:  # fc_2
            n_out, i = _int(data, i)
            n_in, i = _int(data, i)
            params, i = _tensor(data, i)
            if params.size != n_in * n_out:
                raise DlibFormatError(f"fc params of size {params.size}, expected {n_in}x{n_out} without bias")
            fc = params.reshape(n_in, n_out)
    n_conv = 1 + 2 * sum(n for n, _ in LEVELS)
    if mean is None or fc is None or len(convs) != n_conv or len(affines) != n_conv:
        raise DlibFormatError(
            f"{path} is not dlib's face recognition ResNet: found {len(convs)} conv / {len(affines)} affine "
            f"layers (expected {n_conv}), input layer {'found' if mean is not None else 'missing'}, "
            f"fc {'found' if fc is not None else 'missing'}"
        )
    return DlibResNetWeights(mean, convs, affines, fc)


def build_module(weights: DlibResNetWeights):
    """The torch module for these weights (import of torch deferred to here)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def pad_to(x, c: int, h: int, w: int):
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    class DlibResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(weights.mean_rgb).view(1, 3, 1, 1))
            self.convs = nn.ModuleList()
            for w, b, stride, pad in weights.convs:
                conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride, padding=pad)
                conv.weight.data.copy_(torch.from_numpy(w))
                conv.bias.data.copy_(torch.from_numpy(b))
                self.convs.append(conv)
            self.scales = nn.ParameterList(
                [
                    nn.Parameter(torch.from_numpy(g).view(1, -1, 1, 1), requires_grad=False)
                    for g, _ in weights.affines
                ]
            )
            self.shifts = nn.ParameterList(
                [
                    nn.Parameter(torch.from_numpy(s).view(1, -1, 1, 1), requires_grad=False)
                    for _, s in weights.affines
                ]
            )
            self.fc = nn.Parameter(torch.from_numpy(weights.fc), requires_grad=False)

        def _ca(self, k: int, x):
            return self.convs[k](x) * self.scales[k] + self.shifts[k]

        def forward(self, rgb_uint8):
            """(N, 150, 150, 3) uint8 RGB -> (N, 128) float32, dlib's raw (unnormalised) descriptor."""
            return self.forward_normalized((rgb_uint8.permute(0, 3, 1, 2).float() - self.mean) / 256.0)

        def forward_normalized(self, x):
            """The same from (N, 3, 150, 150) float input already normalised as dlib does ((rgb - mean) / 256):
            what fine-tuning (float augmentations) and its ONNX export (input spec: `normalization`) take."""
            x = F.max_pool2d(F.relu(self._ca(0, x)), 3, 2)
            k = 1
            for n_blocks, down in LEVELS:
                for j in range(n_blocks):
                    y = self._ca(k + 1, F.relu(self._ca(k, x)))
                    k += 2
                    skip = F.avg_pool2d(x, 2, 2) if down and j == 0 else x
                    if y.shape != skip.shape:
                        c, h, w = (max(a, b) for a, b in zip(y.shape[1:], skip.shape[1:], strict=True))
                        y, skip = pad_to(y, c, h, w), pad_to(skip, c, h, w)
                    x = F.relu(y + skip)
            return x.mean(dim=(2, 3)) @ self.fc

    return DlibResNet().eval()


def normalization(weights: DlibResNetWeights) -> dict:
    """The input spec (`embed.onnx` keys) of a model taking `forward_normalized` input."""
    return {
        "template": "dlib150",
        "size": 150,
        "mean": [float(v) for v in weights.mean_rgb],
        "std": 256.0,
        "channels": "rgb",
        "layout": "nchw",
    }


class DlibResNetEmbedder(TorchEmbedder):
    """`dlib-resnet`: 128-d, 150x150 crops aligned to the `dlib150` template (dlib's own chip geometry)."""

    name = "dlib-resnet"
    dim = 128
    template = "dlib150"
    crop_size = 150

    def __init__(self, device: str = "auto", flip: bool = False) -> None:
        from facedata import models

        super().__init__(device, flip)
        self.version = models.get_spec(self.name).version
        self.net = build_module(read_weights(models.locate_file(self.name))).to(self.device)

    def _forward(self, x):
        return self.net(x)
