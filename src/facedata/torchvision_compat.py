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

import torch

_lock = threading.Lock()
_done = False
#: True once our fallback kernels are registered (for tests and `facedata doctor`).
FALLBACK_ACTIVE = False


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, the semantics of `torchvision.ops.nms`.

    Boxes are (x1, y1, x2, y2); returns indices of kept boxes sorted by decreasing score. Overlap is
    IoU > threshold (strictly greater suppresses), as in torchvision's C++ kernel.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.argsort(scores, descending=True, stable=True)
    # Pairwise IoU in one shot: MTCNN calls this with at most a few thousand boxes per image, where a
    # vectorised matrix is far faster than a Python loop over boxes.
    xx1 = torch.maximum(x1[order, None], x1[None, order])
    yy1 = torch.maximum(y1[order, None], y1[None, order])
    xx2 = torch.minimum(x2[order, None], x2[None, order])
    yy2 = torch.minimum(y2[order, None], y2[None, order])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    a = areas[order]
    iou = inter / (a[:, None] + a[None, :] - inter)
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool)
    iou_over = (iou > iou_threshold).cpu()
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou_over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


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
