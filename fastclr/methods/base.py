"""The contract every self-supervised method keeps with the trainer.

A method is an nn.Module that owns everything its training state needs (online backbone and heads,
momentum encoders, queues, prototypes, as parameters and buffers), so `state_dict()` saves it and
`load_state_dict()` restores it exactly. The trainer calls, per optimizer step s (0-based):

    loss = method(views, labels, s)      views: list of [B, 3, S_v, S_v] (global views first, then
                                         any small multi-crop views); labels: [B] int64, -1 unknown
    loss.backward(); method.after_backward(s)
    optimizer.step(); method.after_step(s, total_steps)   (momentum updates, queue writes)

`method.backbone` is the online encoder x [B, 3, H, W] -> h [B, feature_dim] that kNN, linear
evaluation, fine-tuning and export use; its state_dict keys are "backbone.*" in every method.
`global_bn` names the heads whose BatchNorm must see the whole batch across GPUs (SyncBatchNorm
under DDP); backbones keep per-rank BN, as the papers' multi-GPU code does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from fastclr.backbones import build_backbone, resolve_stem


class Method(nn.Module):
    name = "method"
    global_bn: tuple[str, ...] = ()
    fixed_lr_scale = 1.0  # fixed_lr_parameters() train at this multiple of the schedule's peak lr

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.arch = config["arch"]
        self.stem = resolve_stem(config.get("stem", "auto"), config.get("image_size"), self.arch)
        self.backbone, self.feature_dim = build_backbone(
            self.arch, self.stem, config.get("image_size")
        )

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        """The scalar loss of one step (fp32)."""
        raise NotImplementedError

    def after_backward(self, step: int) -> None:
        """Between backward and the optimizer step (e.g. SwAV drops its prototypes' gradient)."""

    def after_step(self, step: int, total_steps: int) -> None:
        """After the optimizer step `step` (momentum encoders, queues)."""

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at `fixed_lr_scale` x the peak lr throughout, outside the schedule
        (SimSiam's predictor; BYOL's when given pred_lr_scale)."""
        return []

    def check_data(self, num_images: int, batch_size: int) -> None:
        """UsageError if the method cannot train on `num_images` images at global `batch_size`."""


class HeldPredictorLR:
    """BYOL's and SimSiam's predictor lr, for a Method with a `predictor`: held at
    `pred_lr_scale` x the schedule's peak when that is above 0, else on the schedule with the rest.
    The method sets `pred_lr_scale` (its paper's default when the config has none)."""

    predictor: nn.Module
    pred_lr_scale: float

    @property
    def fixed_lr_scale(self) -> float:
        return self.pred_lr_scale or 1.0

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters()) if self.pred_lr_scale else []


def feature_width(config: Mapping[str, Any], feature_dim: int) -> int:
    """The projector's hidden width: config's proj_hidden, or the backbone's width when unset."""
    return config.get("proj_hidden") or feature_dim
