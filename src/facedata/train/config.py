"""Training settings: params.yaml `train` as a dataclass (defaults from the params spec, written once)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from facedata.params import default, settings


@dataclass(frozen=True)
class TrainConfig:
    mode: str = default("train.mode")
    loss: str = default("train.loss")
    scale: float = default("train.scale")
    margin: float = default("train.margin")
    projection: str = default("train.projection")
    hidden_dim: int = default("train.hidden_dim")
    epochs: int = default("train.epochs")
    batch_size: int = default("train.batch_size")
    lr: float = default("train.lr")
    backbone_lr: float = default("train.backbone_lr")
    weight_decay: float = default("train.weight_decay")
    augment: bool = default("train.augment")
    weight_reviewed: float = default("train.weight_reviewed")
    weight_unreviewed: float = default("train.weight_unreviewed")
    confidence_weighting: bool = default("train.confidence_weighting")
    negative_weight: float = default("train.negative_weight")
    far: float = default("train.far")
    distractors: list = field(default_factory=lambda: default("train.distractors"))
    eval_pairs: str = default("train.eval_pairs")
    eval_pairs_limit: int = default("train.eval_pairs_limit")
    seed: int = default("train.seed")
    checkpoint_every: int = default("train.checkpoint_every")
    device: str = default("train.device")
    threads: int = default("train.threads")

    @classmethod
    def from_params(cls, p: dict, **override) -> TrainConfig:
        return settings(cls, p, **override)

    def identity(self) -> dict:
        """What must match for a checkpoint to be resumed: everything that shapes the weights (not where or how
        often it runs, nor what is evaluated after; the distractor faces are part of the data fingerprint)."""
        d = asdict(self)
        for k in ("device", "threads", "checkpoint_every", "far", "distractors", "eval_pairs", "eval_pairs_limit"):
            d.pop(k)
        return d
