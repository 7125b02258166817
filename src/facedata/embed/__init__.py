"""Face embedders: aligned crops in, L2-normalised float32 vectors out.

Each embedder says which alignment template and crop size it expects (`template`, `crop_size`), so faces
cropped for another model are re-aligned from the source image instead of being fed a wrong geometry, and
carries its `name` and `version`, which every stored vector is labelled with.

| `embed.model`      | network                                  | dim | input           |
|--------------------|------------------------------------------|-----|-----------------|
| `dlib-resnet`      | dlib ResNet-29 (face_recognition's), torch port, exact | 128 | 150 px `dlib150` |
| `facenet-vggface2` | FaceNet InceptionResnetV1 (facenet-pytorch) | 512 | 160 px `facenet160` |
| `onnx:<path>`      | any ONNX recognizer (onnxruntime), input spec in `embed.onnx` | model's | model's |

`embed.flip: true` also embeds the mirrored crop and averages the two unit vectors (test-time flip
augmentation): twice the compute, and on LFW pairs a measurably better verification accuracy (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from facedata.params import default

if TYPE_CHECKING:
    from facedata.models import ModelId


class Embedder(Protocol):
    name: str
    version: str
    dim: int
    template: str
    crop_size: int

    def embed(self, crops: list[np.ndarray]) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def check_crops(crops: list[np.ndarray], size: int, name: str) -> None:
    for c in crops:
        if c.shape != (size, size, 3) or c.dtype != np.uint8:
            raise ValueError(f"{name} needs {size}x{size} RGB uint8 crops, got {c.shape} {c.dtype}")


#: Crops per recognizer forward pass, always: the last pass of a call is padded with blank crops. A convolution
#: over N crops differs in the last float bits between values of N, so a fixed N (and fixed threads,
#: `facedata.device.inference_threads`) makes a face's vector independent of how many faces, and which, are
#: embedded with it (`embed.batch_size` is speed-only; a resumed run batches differently). At a fixed N a
#: crop's result does not depend on its position or companions (tests/test_batch_determinism.py); 8 runs
#: within a few % of the fastest batch on a CPU core (BENCHMARKS.md).
FORWARD_BATCH = 8


def fixed_batches(x: np.ndarray, size: int = FORWARD_BATCH) -> Iterator[tuple[np.ndarray, int]]:
    """`x` cut into chunks of exactly `size` rows, the last padded with zeros, each with its count of real rows."""
    for s in range(0, len(x), size):
        chunk = x[s : s + size]
        n = len(chunk)
        if n < size:
            chunk = np.concatenate([chunk, np.zeros((size - n, *x.shape[1:]), x.dtype)])
        yield chunk, n


class TorchEmbedder:
    """Shared by the torch models: fixed-size forward batches, device placement, flip averaging,
    normalisation."""

    name = ""
    version = ""
    dim = 0
    template = ""
    crop_size = 0

    def __init__(self, device: str = "auto", flip: bool = False) -> None:
        from facedata.device import resolve_device

        self.device = resolve_device(device)
        self.flip = flip
        self.net = None  # set by subclasses

    def _forward(self, x):  # (N, H, W, 3) uint8 tensor -> (N, dim) float tensor
        raise NotImplementedError

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        import torch

        from facedata.device import inference_threads

        if not crops:
            return np.zeros((0, self.dim), np.float32)
        check_crops(crops, self.crop_size, self.name)
        out = []
        with torch.inference_mode(), inference_threads(self.device):
            for chunk, n in fixed_batches(np.stack(crops)):
                x = torch.from_numpy(chunk).to(self.device)
                v = torch.nn.functional.normalize(self._forward(x).float(), dim=1)
                if self.flip:
                    v = v + torch.nn.functional.normalize(self._forward(x.flip(2)).float(), dim=1)
                out.append(v[:n].cpu().numpy())
        return l2_normalize(np.concatenate(out))


def embedder_names() -> list[str]:
    return ["dlib-resnet", "facenet-vggface2", "onnx:<path>"]


def make_embedder(
    name: str,
    device: str = default("embed.device"),
    flip: bool = False,
    onnx_spec: dict | None = None,
) -> Embedder:
    """The embedder for params.yaml `embed.model` (`dlib-resnet`, `facenet-vggface2` or `onnx:<path>`)."""
    if name == "dlib-resnet":
        from facedata.embed.dlib_resnet import DlibResNetEmbedder

        return DlibResNetEmbedder(device, flip)
    if name == "facenet-vggface2":
        from facedata.embed.facenet import FacenetEmbedder

        return FacenetEmbedder(device, flip)
    if name.startswith("onnx:"):
        from facedata.embed.onnx import OnnxEmbedder

        return OnnxEmbedder(name[len("onnx:") :], onnx_spec or {}, flip)
    raise ValueError(f"unknown embedding model {name!r}; available: {', '.join(embedder_names())}")


#: The registered model behind each `embed.align_views` source.
VIEW_MODELS = {"retinaface": "retinaface", "yunet": "yunet", "mtcnn": "mtcnn", "dlib5": "dlib-shape5"}


def resolve_model_name(name: str, root: str | Path | None) -> str:
    """`onnx:<path>` with a relative path is relative to the project root."""
    if name.startswith("onnx:") and root is not None:
        p = Path(name[len("onnx:") :]).expanduser()
        if not p.is_absolute():
            return f"onnx:{Path(root) / p}"
    return name


def embedder_identity(embed_params: dict, root: str | Path | None = None) -> ModelId:
    """The identity of the vectors the `embed:` params make, without loading a network: the recognizer's name,
    its version label (`model_version_label`) and the sha256 of every weights file involved (the recognizer's,
    and the landmark models of `embed.align_views`). A different file behind `onnx:<path>` is another model."""
    from facedata import models

    p = embed_params
    name = resolve_model_name(p["model"], root)
    if name.startswith("onnx:"):
        path = Path(name[len("onnx:") :])
        if not path.is_file():
            raise FileNotFoundError(
                f"ONNX model {path} not found (embed.model: onnx:<path>, relative to the project)"
            )
        base = models.file_identity(f"onnx:{path.name}", path)
    elif name in embedder_names():
        base = models.identity(name)
    else:
        raise ValueError(f"unknown embedding model {name!r}; available: {', '.join(embedder_names())}")
    views = list(p.get("align_views") or [])
    version = model_version_label(base.version, bool(p.get("flip")), views, int(p.get("jitter") or 0))
    parts = [base, *(models.identity(VIEW_MODELS[v]) for v in views)]
    return models.combine(base.name, version, parts) if views else models.ModelId(base.name, version, base.sha256)


def model_version_label(
    version: str, flip: bool, views: list[str] | tuple[str, ...] = (), jitter: int = default("embed.jitter")
) -> str:
    """The version stored with each vector: vectors made with flip averaging, alignment views or jitter
    (`facedata.faces.views`) are not bit-identical to plain ones, so they say so."""
    label = f"{version}+flip" if flip else version
    label = f"{label}+views={','.join(views)}" if views else label
    return f"{label}+jitter={jitter}" if jitter else label
