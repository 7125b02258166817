"""Make `import torchvision` work with the CPU build of torch.

The package registry here only has the CUDA build of torchvision 0.28.0. Paired with the CPU torch 2.13.0 its
compiled ops fail to load, and torchvision's import then dies registering fake kernels for `torchvision::nms`
and `torchvision::qnms`, ops that do not exist. facenet-pytorch (MTCNN) imports torchvision, so detection would
be impossible. When, and only when, the compiled library fails to load, we define those two ops ourselves with
a pure-torch CPU kernel before torchvision is imported. On a machine where torchvision's own ops load (a GPU
machine with a matching CUDA torch) nothing is touched.

Call `ensure_torchvision()` before importing torchvision or facenet_pytorch.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import torch

_lock = threading.Lock()
_done = False
#: True once this process registered our fallback kernels (so a caller or a bug report can tell which NMS runs).
FALLBACK_ACTIVE = False


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, the semantics of `torchvision.ops.nms`.

    Boxes are (x1, y1, x2, y2); returns indices of kept boxes sorted by decreasing score. Overlap is
    IoU > threshold (strictly greater suppresses), as in torchvision's C++ kernel. Each kept box is compared
    only with the boxes not yet suppressed: O(n * kept) time and O(n) memory, because MTCNN's first stage hands
    over thousands of boxes per batch (an n x n IoU matrix there costs seconds per image).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    b = boxes.detach().to("cpu", torch.float32).numpy()
    order = np.argsort(-scores.detach().to("cpu", torch.float32).numpy(), kind="stable")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    remaining = order
    while remaining.size:
        i = remaining[0]
        keep.append(int(i))
        rest = remaining[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        remaining = rest[~(iou > iou_threshold)]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _compiled_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = list(spec.submodule_search_locations)[0]
    lib = next((f for f in os.listdir(folder) if f.startswith("_C.") and f.endswith((".so", ".pyd"))), None)
    if lib is None:
        return False
    try:
        torch.ops.load_library(os.path.join(folder, lib))
        return True
    except (OSError, RuntimeError):
        return False


def _register_fallback() -> None:
    global FALLBACK_ACTIVE
    schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    for name in ("nms", "qnms"):
        torch.library.define(f"torchvision::{name}", schema)
        torch.library.impl(f"torchvision::{name}", "CPU")(nms_reference)
    FALLBACK_ACTIVE = True


def ensure_torchvision() -> None:
    """Idempotently make torchvision importable; a no-op when its compiled ops work."""
    global _done
    with _lock:
        if _done:
            return
        if importlib.util.find_spec("torchvision") is not None and not _compiled_ops_load():
            if not _op_exists("nms"):
                _register_fallback()
            import torchvision.extension

            # torchvision.ops.nms asks `_has_ops()` before dispatching; our kernels now answer. Other compiled
            # ops (roi_align, deform_conv...) still fail, with torch's "operator does not exist" error.
            torchvision.extension._has_ops = lambda: True
        _done = True


def _op_exists(name: str) -> bool:
    try:
        return getattr(torch.ops.torchvision, name).default is not None
    except (AttributeError, RuntimeError):
        return False
