"""The training loop: deterministic, checkpointed, resumable after a kill.

- Determinism: the network starts from `torch.manual_seed(seed)`; epoch e shuffles and augments with a numpy
  generator seeded with (seed, e) and reseeds torch with (seed, e), and torch runs with deterministic
  algorithms on a fixed number of CPU threads. Two runs with the same data, params and thread count end
  with bit-identical weights.
- Checkpoints: after every `checkpoint_every` epochs (and the last), the weights, optimiser state, epoch and
  history are written atomically, with what they were made from (the settings that shape the weights and a
  fingerprint of the training faces). A run that finds a checkpoint of the same origin continues after its
  epoch, so a killed run resumed ends with the same weights as an uninterrupted one; a checkpoint of anything
  else is ignored (and replaced).
- Schedule: SGD with momentum 0.9, learning rate cosine-decayed per epoch (a function of the epoch alone,
  so nothing about it needs saving).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facedata import atomic
from facedata.train.config import TrainConfig
from facedata.train.losses import margin_logits, negative_loss, weighted_cross_entropy, with_unknown


@dataclass
class Batches:
    """The training rows: labels, weights, and how to turn row indices into a network input batch (an
    augmenting `make` gets a numpy generator; evaluation passes None)."""

    y: np.ndarray
    w: np.ndarray
    make: Callable[[np.ndarray, np.random.Generator | None], torch.Tensor]

    def __len__(self) -> int:
        return len(self.y)


@contextmanager
def deterministic(threads: int, device: str) -> Iterator[None]:
    """Deterministic torch kernels on `threads` CPU threads for the block; the previous settings after."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**62))


def lr_factor(epoch: int, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD; the backbone (finetune) at `backbone_lr`, the rest at `lr`; weight decay on weights, not on
    prototypes or biases."""
    groups: dict[str, list] = {"backbone": [], "decay": [], "plain": []}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            groups["backbone"].append(p)
        elif name.startswith("mlp.") and name.endswith("weight"):
            groups["decay"].append(p)
        else:
            groups["plain"].append(p)
    spec = [
        {
            "params": groups["backbone"],
            "lr": cfg.backbone_lr,
            "weight_decay": cfg.weight_decay,
            "name": "backbone",
        },
        {"params": groups["decay"], "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "decay"},
        {"params": groups["plain"], "lr": cfg.lr, "weight_decay": 0.0, "name": "plain"},
    ]
    spec = [g for g in spec if g["params"]]
    for g in spec:
        g["base_lr"] = g["lr"]
    return torch.optim.SGD(spec, momentum=0.9)


def evaluate_batches(net, batches: Batches, cfg: TrainConfig, device: str, size: int = 256) -> dict:
    """Weighted loss (with the margin) and weighted top-1 of `batches`, without augmentation."""
    if len(batches) == 0:
        return {"loss": None, "top1": None}
    net.eval()
    loss_sum, correct, total = 0.0, 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(batches), size):
            idx = np.arange(s, min(s + size, len(batches)))
            y = torch.from_numpy(batches.y[idx]).to(device)
            w = torch.from_numpy(batches.w[idx].astype(np.float32)).to(device)
            _, cos = net(batches.make(idx, None).to(device))
            loss = weighted_cross_entropy(margin_logits(cos, y, cfg.loss, cfg.scale, cfg.margin), y, w)
            loss_sum += float(loss) * float(w.sum())
            correct += float(((cos.argmax(1) == y).float() * w).sum())
            total += float(w.sum())
    return {"loss": loss_sum / total if total else None, "top1": correct / total if total else None}


def fit(
    net: torch.nn.Module,
    train: Batches,
    val: Batches,
    cfg: TrainConfig,
    checkpoint: Path | None,
    origin: dict,
    device: str,
    progress=None,
    log: Callable[[str], None] = print,
    negatives: Batches | None = None,
) -> list[dict]:
    """Train `net` in place for `cfg.epochs`; returns the per-epoch history. `origin` identifies what the
    checkpoint must have been made from to be resumed (None: no checkpoints); `progress(total_steps)` may
    return a tqdm-like bar. With `negatives` (faces of people not in the cast), every step also takes a batch
    of them, cycling, and adds `cfg.negative_weight` x their loss towards the unknown class."""
    opt = optimizer(net, cfg)
    use_neg = negatives is not None and len(negatives) > 0 and cfg.negative_weight > 0
    history: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("origin") == origin:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, history = int(state["epoch"]), list(state["history"])
            log(f"resuming after epoch {start} from {checkpoint}")
        else:
            log(f"ignoring {checkpoint}: it was made from other data or settings")
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    bar = progress(cfg.epochs * steps_per_epoch) if progress else None
    if bar is not None and start:
        bar.update(start * steps_per_epoch)
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(_seed(cfg.seed, epoch))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(epoch, cfg.epochs)
        order = rng.permutation(len(train))
        neg_order = rng.permutation(len(negatives)) if use_neg else None
        net.train()
        loss_sum = correct = total = 0.0
        for step, s in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[s : s + cfg.batch_size]
            y = torch.from_numpy(train.y[idx]).to(device)
            w = torch.from_numpy(train.w[idx].astype(np.float32)).to(device)
            _, cos = net(train.make(idx, rng).to(device))
            logits = margin_logits(cos, y, cfg.loss, cfg.scale, cfg.margin)
            if use_neg:
                logits = with_unknown(logits, net.unknown_bias, cfg.scale)
            loss = weighted_cross_entropy(logits, y, w)
            if use_neg:
                k = (step * cfg.batch_size) % len(negatives)
                j = np.take(neg_order, np.arange(k, k + cfg.batch_size), mode="wrap")
                _, neg_cos = net(negatives.make(j, rng).to(device))
                loss = loss + cfg.negative_weight * negative_loss(neg_cos, net.unknown_bias, cfg.scale, cfg.margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * float(w.sum())
            correct += float(((cos.detach().argmax(1) == y).float() * w).sum())
            total += float(w.sum())
            if bar is not None:
                bar.update(1)
        v = evaluate_batches(net, val, cfg, device)
        history.append(
            {
                "epoch": epoch + 1,
                "lr": round(opt.param_groups[-1]["lr"], 8),
                "train_loss": round(loss_sum / total, 6) if total else None,
                "train_top1": round(correct / total, 6) if total else None,
                "val_loss": None if v["loss"] is None else round(v["loss"], 6),
                "val_top1": None if v["top1"] is None else round(v["top1"], 6),
            }
        )
        if checkpoint is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            state = {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "origin": origin,
            }
            atomic.write_torch(checkpoint, state)
    if bar is not None:
        bar.close()
    net.eval()
    return history
