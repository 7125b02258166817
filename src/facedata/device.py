"""Where models run: `device: auto` in params picks a CUDA GPU when torch sees one, else the CPU."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager


@functools.cache
def resolve_device(setting: str = "auto") -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params ask for device 'cuda' but torch sees no GPU; use 'auto' or 'cpu'")
    return setting


#: Intra-op CPU threads of every model forward pass (detectors, recognizers). oneDNN splits convolutions
#: differently at other thread counts, which changes results in the last float bits; parallelism comes from
#: worker processes (`facedata.faces.pool`, Dask) instead.
INFERENCE_THREADS = 1


@contextmanager
def inference_threads(device: str) -> Iterator[None]:
    """Run the block's torch work on `INFERENCE_THREADS` CPU threads (on a CPU device), whatever the caller set,
    so a face's result does not depend on the caller's thread settings; the caller's setting after."""
    import torch

    before = torch.get_num_threads()
    change = device == "cpu" and before != INFERENCE_THREADS
    if change:
        torch.set_num_threads(INFERENCE_THREADS)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)
