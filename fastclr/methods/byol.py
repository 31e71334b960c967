"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

    online:  y = f(x), z = g(y), p = q(z)        f backbone, g projector, q predictor (trained)
    target:  z' = g'(f'(x'))                     f', g' <- m f', g' + (1 - m) f, g  (no gradient)
    loss   = L(p1, z'2) + L(p2, z'1),  L(p, z') = mean over the batch of 2 - 2 cos(p, z')

The paper's sum of both directions (its L + L~). Heads as in the paper: projector and predictor
Linear(4096) -> BN -> ReLU -> Linear(256). The target rate m rises from 0.996 to 1 along a cosine
over the run (fastclr/methods/momentum.py). Projector and predictor BN see the global batch under
DDP (SyncBatchNorm, as BYOL's TPU code); backbone BN per rank.

The predictor follows the lr schedule with everything else (the paper) unless `pred_lr_scale` is
above 0: then it trains at that multiple of the schedule's peak, held fixed, as SimSiam's predictor
does at 1. On digits that is 10 (the digits preset): with the predictor on the schedule, the loss
stays near 1.7 and the backbone's kNN falls below the random init's at every rate and weight
decay tried; ten times the peak, held, takes the loss under 0.9 and kNN above it
(bench/results/methods/cpu-amd-epyc/learning-digits-20261129.md, section 7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.methods.base import HeldPredictorLR, Method, feature_width
from fastclr.methods.heads import mlp
from fastclr.methods.momentum import cosine_momentum, ema_update, momentum_copy


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """mean over rows of 2 - 2 cos(p, z) = |p/|p| - z/|z||^2, in fp32; p, z [B, D]."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


class BYOL(HeldPredictorLR, Method):
    name = "byol"
    global_bn = ("projector", "predictor")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        hidden = feature_width(config, self.feature_dim)
        proj_dim = config.get("proj_dim") or 256
        layers = config.get("proj_layers") or 2
        self.projector = mlp(self.feature_dim, hidden, proj_dim, layers)
        self.predictor = mlp(proj_dim, config.get("pred_hidden") or 4096, proj_dim, 2)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.base_momentum = config.get("target_momentum") or 0.996
        self.pred_lr_scale = config.get("pred_lr_scale") or 0.0  # 0: on the schedule (the paper)

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        images = torch.cat(views)
        p1, p2 = self.predictor(self.projector(self.backbone(images))).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_backbone(images)).chunk(2)
        return normalized_mse(p1, t2) + normalized_mse(p2, t1)

    def after_step(self, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update(self.target_backbone, self.backbone, momentum)
        ema_update(self.target_projector, self.projector, momentum)
