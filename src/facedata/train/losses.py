"""Margin losses on cosine scores (CosFace, ArcFace), weighted per sample, with an optional "unknown" class.

CosFace (Wang et al. 2018) subtracts `margin` from the target cosine; ArcFace (Deng et al. 2019) adds `margin`
radians to the target angle, with insightface's fallback where the angle plus margin would pass pi (the
logit then keeps decreasing in the angle). Both scale by `scale`: the loss asks the true identity to win by a
margin, not just to win.

Open set: trained on the cast alone, a margin head learns what tells the cast apart, not what tells the cast
from everyone else, and strangers end up as close to the prototypes as the cast's own faces (measured:
BENCHMARKS.md). With negatives (faces of people not in the cast) the logits get one more column, a learnt
"unknown" score `scale * b`: a cast face must beat it like any other identity, and a stranger's best cosine
must stay under `b - margin` (the "known unknowns" of open-set recognition).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def margin_logits(cos: torch.Tensor, y: torch.Tensor, loss: str, scale: float, margin: float) -> torch.Tensor:
    onehot = F.one_hot(y, cos.shape[1]).to(cos.dtype)
    if loss == "cosface":
        return scale * (cos - margin * onehot)
    if loss == "arcface":
        c = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - c * c)
        phi = c * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
        phi = torch.where(c > math.cos(math.pi - margin), phi, c - math.sin(math.pi - margin) * margin)
        return scale * (onehot * phi + (1 - onehot) * c)
    raise ValueError(f"unknown loss {loss!r}; one of cosface, arcface")


def with_unknown(logits: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """The logits of cast faces with the unknown column appended."""
    return torch.cat([logits, (scale * bias).expand(len(logits), 1)], dim=1)


def negative_loss(cos: torch.Tensor, bias: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Cross entropy of strangers' scores towards the unknown column (with the margin against them)."""
    logits = torch.cat([scale * cos, (scale * (bias - margin)).expand(len(cos), 1)], dim=1)
    target = torch.full((len(cos),), cos.shape[1], dtype=torch.long, device=cos.device)
    return F.cross_entropy(logits, target)


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy with per-sample weights (a weight-0 sample contributes nothing)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return (ce * w).sum() / w.sum().clamp_min(1e-12)
