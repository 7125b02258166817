"""The recognizer network: `z = embed(x)` (unit length) and one prototype per identity; scores are cosines.

- `x` is a stored embedding (modes head and centroid) or a normalised aligned crop (mode finetune, through the
  dlib ResNet port, every weight trainable).
- The optional projection is a residual MLP, `z = normalize(x + W2 relu(W1 x))`, with `W2` starting at zero: at
  step 0 the model *is* the embedding model, so training can only move away from a known-good geometry as far
  as the loss asks. That keeps people who are not in the cast where the embedding model put them, which is
  what open-set rejection relies on.
- Prototypes start at the weighted mean direction of each identity's training faces: the zero-training
  baseline is the starting point, and the margin loss sharpens it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Recognizer(nn.Module):
    def __init__(
        self, dim: int, n_classes: int, projection: str, hidden_dim: int, backbone: nn.Module | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.mlp = None
        if projection == "mlp":
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        self.prototypes = nn.Parameter(torch.zeros(n_classes, dim))
        self.unknown_bias = nn.Parameter(torch.tensor(0.8))  # the unknown class's cosine (training with negatives)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            x = self.backbone.forward_normalized(x)
        z = F.normalize(x, dim=1)
        if self.mlp is not None:
            z = F.normalize(z + self.mlp(z), dim=1)
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, scores): the unit vector and its cosine to every identity's prototype."""
        z = self.embed(x)
        return z, z @ F.normalize(self.prototypes, dim=1).T


def class_means(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit mean direction of each class's (weighted) unit vectors."""
    sums = np.zeros((n_classes, x.shape[1]), np.float64)
    np.add.at(sums, y, x.astype(np.float64) * w[:, None])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def build(
    mode: str,
    projection: str,
    hidden_dim: int,
    dim: int,
    prototypes: np.ndarray,
    backbone: nn.Module | None = None,
) -> Recognizer:
    """The network for a mode; `prototypes` (n_classes, dim) are the starting class directions."""
    if mode == "finetune":
        if backbone is None:
            raise ValueError("mode finetune needs the backbone")
        for p in backbone.parameters():
            p.requires_grad_(True)
    net = Recognizer(dim, len(prototypes), "none" if mode == "centroid" else projection, hidden_dim, backbone)
    with torch.no_grad():
        net.prototypes.copy_(torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32)))
    return net
