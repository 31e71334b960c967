"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

    z = g(f(x)), p = h(z)                f backbone, g projector, h predictor
    loss = -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2        sg: stop-gradient (detach)

Heads as in the paper: projector 3 x (Linear(2048) -> BN), ReLU between, the last BN without affine
parameters; predictor bottleneck Linear(512) -> BN -> ReLU -> Linear(2048). The predictor trains at
the fixed peak lr (the paper's "fix_pred_lr"; `pred_lr_scale` x the peak when given):
fixed_lr_parameters. SGD, base lr 0.05 x B/256, weight decay 1e-4, momentum 0.9, cosine schedule
without warmup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.methods.base import HeldPredictorLR, Method, feature_width
from fastclr.methods.heads import mlp


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """-mean cos(p, sg(z)) over rows, in fp32; p, z [B, D]; z gets no gradient."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


class SimSiam(HeldPredictorLR, Method):
    name = "simsiam"
    global_bn = ("projector", "predictor")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        hidden = feature_width(config, self.feature_dim)
        proj_dim = config.get("proj_dim") or 2048
        self.projector = mlp(
            self.feature_dim, hidden, proj_dim, config.get("proj_layers") or 3,
            last_batch_norm=True,
        )  # fmt: skip
        self.predictor = mlp(proj_dim, config.get("pred_hidden") or 512, proj_dim, 2)
        scale = config.get("pred_lr_scale")
        self.pred_lr_scale = 1.0 if scale is None else scale  # 0: on the schedule with the rest

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        z = self.projector(self.backbone(torch.cat(views)))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
