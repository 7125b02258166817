"""Where models run: `device: auto` in params picks a CUDA GPU when torch sees one, else the CPU."""

from __future__ import annotations

import functools


@functools.cache
def resolve_device(setting: str = "auto") -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params ask for device 'cuda' but torch sees no GPU; use 'auto' or 'cpu'")
    return setting
