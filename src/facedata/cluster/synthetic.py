"""Synthetic face embeddings with identity structure, for scale tests and benchmarks.

Real recognizers do not spread identities uniformly over the sphere: measured on LFW, dlib's 128-d unit vectors
of two different people have a median cosine of ~0.83 (L2 ~0.58), two photos of one person ~0.95 (L2 ~0.31),
and the two overlap around cosine 0.90-0.91. The defaults reproduce those statistics (slightly thinner tails),
so clustering at scale faces realistic neighbourhoods:

- identity centres c = normalize(m + spread * g) share a common direction m (g Gaussian), so centres sit at
  cosine ~ 1 / (1 + spread^2) from each other;
- a face is normalize(c + noise * h), with a per-identity noise level (some people vary more than others);
- identity sizes are heavy-tailed (log-normal), so there are many singletons and a few very large identities,
  as in LFW or a crawl.

Generation is chunked and float32 throughout, so a million faces fit in well under a gigabyte.
"""

from __future__ import annotations

import numpy as np


def identity_sizes(n: int, rng: np.random.Generator, mean_log: float = 1.0, sigma_log: float = 1.2) -> np.ndarray:
    """Heavy-tailed identity sizes summing to exactly `n`."""
    sizes: list[np.ndarray] = []
    total = 0
    while total < n:
        s = 1 + np.floor(rng.lognormal(mean_log, sigma_log, size=max(1024, (n - total) // 4))).astype(np.int64)
        sizes.append(s)
        total += int(s.sum())
    out = np.concatenate(sizes)
    cum = np.cumsum(out)
    last = int(np.searchsorted(cum, n))
    out = out[: last + 1].copy()
    out[-1] -= int(cum[last] - n)
    return out[out > 0]


def make_embeddings(
    n: int,
    dim: int = 128,
    seed: int = 0,
    spread: float = 0.38,
    noise: tuple[float, float] = (0.17, 0.30),
    chunk: int = 200_000,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels): `n` unit vectors (float32, n x dim) and their identity (int64), rows in random order."""
    if n <= 0:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, rng)
    n_ids = sizes.size
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = common + (spread / np.sqrt(dim)) * rng.standard_normal((n_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = rng.uniform(noise[0], noise[1], n_ids).astype(np.float32)
    labels = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    labels = labels[rng.permutation(n)]
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        h = rng.standard_normal((lab.size, dim), dtype=np.float32) * (sigma[lab, None] / np.sqrt(dim))
        block = centres[lab] + h
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + chunk] = block
    return x, labels
