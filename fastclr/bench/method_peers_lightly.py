"""lightly's SimCLR, MoCo v2, BYOL, SimSiam and SwAV on fastclr's backbone, for `fastclr bench methods`.

Written as lightly's own examples (examples/pytorch/<method>.py) and its CIFAR-10 benchmark write
them, with lightly's parts only:

    simclr   SimCLRProjectionHead + NTXentLoss(temperature)
    moco     MoCoProjectionHead (v2: no BN), momentum copies (deactivate_requires_grad,
             update_momentum at a constant rate), NTXentLoss(temperature, memory_bank_size=(K, D)):
             lightly's MemoryBankModule is the queue; symmetric loss as in lightly's benchmark
    byol     BYOLProjectionHead + BYOLPredictionHead, momentum target with the rate rising from its
             base to 1 (lightly.utils.scheduler.cosine_schedule), NegativeCosineSimilarity
    simsiam  SimSiamProjectionHead + SimSiamPredictionHead, stop-gradient, NegativeCosineSimilarity
    swav     SwaVProjectionHead + SwaVPrototypes (frozen for the first steps, renormalized before
             every step), SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon)

Widths, temperature, queue, momentum and prototypes come from fastclr's resolved run config
(`settings`: the config.json of the fastclr run of the same method), so both implementations train
the same sizes. Each view goes through the network on its own (lightly's examples), where fastclr
runs both views as one batch of 2B; the momentum update comes first in the step (lightly's order).

    model = build_lightly_model("byol", backbone, feature_dim=512, settings=config)
    loss = model.training_loss(view1, view2, step=s, total_steps=T)   # views [B, 3, S, S]
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastclr.bench.method_peers_settings import METHODS
from fastclr.errors import UsageError


def setting(settings: Mapping[str, Any], name: str, default: Any) -> Any:
    """settings[name], or `default` where the config does not have it or left it unset (None)."""
    value = settings.get(name)
    return default if value is None else value


def momentum_copy(module: nn.Module) -> nn.Module:
    """lightly's way: a deep copy whose parameters take no gradient."""
    from lightly.models.utils import deactivate_requires_grad

    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


class LightlySimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, settings: Mapping[str, Any]) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(
            feature_dim,
            setting(settings, "proj_hidden", feature_dim),
            setting(settings, "proj_dim", 128),
            num_layers=setting(settings, "proj_layers", 2),
        )
        self.criterion = NTXentLoss(temperature=setting(settings, "temperature", 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_loss(self, x0: Tensor, x1: Tensor, step: int, total_steps: int) -> Tensor:
        return self.criterion(self(x0), self(x1))


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, settings: Mapping[str, Any]) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead

        super().__init__()
        proj_dim = setting(settings, "proj_dim", 128)
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(
            feature_dim,
            setting(settings, "proj_hidden", feature_dim),
            proj_dim,
            num_layers=setting(settings, "proj_layers", 2),
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.momentum = setting(settings, "target_momentum", 0.999)
        queue = setting(settings, "queue_size", 65536)
        self.criterion = NTXentLoss(
            temperature=setting(settings, "temperature", 0.2), memory_bank_size=(queue, proj_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    @torch.no_grad()
    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))

    def training_loss(self, x0: Tensor, x1: Tensor, step: int, total_steps: int) -> Tensor:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.momentum)
        loss_01 = self.criterion(self(x0), self.forward_momentum(x1))
        return 0.5 * (loss_01 + self.criterion(self(x1), self.forward_momentum(x0)))


class LightlyBYOL(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, settings: Mapping[str, Any]) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        super().__init__()
        proj_dim = setting(settings, "proj_dim", 256)
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(
            feature_dim, setting(settings, "proj_hidden", 4096), proj_dim
        )
        self.prediction_head = BYOLPredictionHead(
            proj_dim, setting(settings, "pred_hidden", 4096), proj_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.base_momentum = setting(settings, "target_momentum", 0.996)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    @torch.no_grad()
    def forward_momentum(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))

    def training_loss(self, x0: Tensor, x1: Tensor, step: int, total_steps: int) -> Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        momentum = cosine_schedule(step, total_steps, self.base_momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        p0, p1 = self(x0), self(x1)
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class LightlySimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, settings: Mapping[str, Any]) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__()
        proj_dim = setting(settings, "proj_dim", 2048)
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(
            feature_dim, setting(settings, "proj_hidden", 2048), proj_dim
        )
        self.prediction_head = SimSiamPredictionHead(
            proj_dim, setting(settings, "pred_hidden", 512), proj_dim
        )
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return z.detach(), self.prediction_head(z)

    def training_loss(self, x0: Tensor, x1: Tensor, step: int, total_steps: int) -> Tensor:
        (z0, p0), (z1, p1) = self(x0), self(x1)
        return 0.5 * (self.criterion(z0, p1) + self.criterion(z1, p0))


class LightlySwAV(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        settings: Mapping[str, Any],
        steps_per_epoch: int,
    ) -> None:
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        super().__init__()
        if setting(settings, "queue_size", 0) or setting(settings, "local_views", 0):
            raise UsageError(
                "the lightly SwAV of `fastclr bench methods` trains on the two global views "
                "without a queue: run fastclr's side with --queue-size 0 and no --local-views"
            )
        proj_dim = setting(settings, "proj_dim", 128)
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(
            feature_dim, setting(settings, "proj_hidden", 2048), proj_dim
        )
        self.prototypes = SwaVPrototypes(
            proj_dim,
            n_prototypes=setting(settings, "prototypes", 3000),
            n_steps_frozen_prototypes=setting(settings, "freeze_prototypes_steps", steps_per_epoch),
        )
        self.criterion = SwaVLoss(
            temperature=setting(settings, "temperature", 0.1),
            sinkhorn_iterations=setting(settings, "sinkhorn_iterations", 3),
            sinkhorn_epsilon=setting(settings, "sinkhorn_epsilon", 0.05),
        )

    def forward(self, x: Tensor, step: int) -> Tensor:
        x = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return self.prototypes(F.normalize(x, dim=1, p=2), step)

    def training_loss(self, x0: Tensor, x1: Tensor, step: int, total_steps: int) -> Tensor:
        self.prototypes.normalize()
        return self.criterion([self(x0, step), self(x1, step)], [])


def build_lightly_model(
    method: str,
    backbone: nn.Module,
    *,
    feature_dim: int,
    settings: Mapping[str, Any],
    steps_per_epoch: int,
) -> nn.Module:
    """lightly's `method` on `backbone` (h [B, feature_dim]); training_loss(x0, x1, step, T)."""
    if method == "simclr":
        return LightlySimCLR(backbone, feature_dim, settings)
    if method == "moco":
        return LightlyMoCo(backbone, feature_dim, settings)
    if method == "byol":
        return LightlyBYOL(backbone, feature_dim, settings)
    if method == "simsiam":
        return LightlySimSiam(backbone, feature_dim, settings)
    if method == "swav":
        return LightlySwAV(backbone, feature_dim, settings, steps_per_epoch)
    raise UsageError(f"method {method!r}: choose one of {', '.join(METHODS)}")
