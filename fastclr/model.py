"""The SimCLR network: a backbone f (any torchvision classifier, see fastclr/backbones.py) and an
MLP projection head g.

    x [B, 3, H, W] --backbone--> h [B, F] --head--> z [B, proj_dim]

Downstream tasks (kNN, linear probe, fine-tuning, export) use h; the contrastive loss uses z.
"""

import torch
from torch import Tensor, nn

from fastclr.backbones import build_backbone, resolve_stem
from fastclr.errors import UsageError
from fastclr.methods.heads import mlp

__all__ = ["ProjectionHead", "SimCLRModel", "build_model", "resolve_stem"]


class ProjectionHead(nn.Module):
    """SimCLR's g(.): (Linear -> BN -> ReLU) x (layers - 1) -> Linear [-> BN].

    layers=2 is SimCLR v1's head; SimCLR v2 uses 3 (and fine-tunes from the first hidden layer).
    last_batch_norm: the output Linear has no bias and is followed by a BN, as in SimCLR's code
    (google-research/simclr: the final projection layer has use_bn=True, no bias; lightly's
    SimCLRProjectionHead too). Without it (the default) module names are those of v1's head for
    layers=2 (net.0 ... net.3), so checkpoints from before the option existed load.
    The BNs here are the ones that must see the global batch under multi-GPU training
    (SyncBatchNorm, converted by the trainer when world_size > 1).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int = 128,
        layers: int = 2,
        last_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise UsageError(f"--proj-layers {layers}: use 2 (SimCLR v1) or 3 (SimCLR v2)")
        self.net = mlp(
            in_dim, hidden_dim, out_dim, layers, last_batch_norm=last_batch_norm, last_affine=True
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class SimCLRModel(nn.Module):
    """Backbone f and projection head g. forward(x) -> (h = f(x) [B, F], z = g(h) [B, proj_dim])."""

    def __init__(
        self,
        arch: str = "resnet18",
        stem: str = "cifar",
        proj_dim: int = 128,
        proj_layers: int = 2,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.arch, self.stem = arch, stem
        self.backbone, self.feature_dim = build_backbone(arch, stem, image_size)
        self.head = ProjectionHead(self.feature_dim, self.feature_dim, proj_dim, proj_layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return h, self.head(h)


def build_model(
    arch: str, *, image_size: int, stem: str = "auto", proj_dim: int = 128, proj_layers: int = 2
) -> SimCLRModel:
    """SimCLRModel with the stem resolved for `arch` and `image_size`, in channels_last format."""
    stem = resolve_stem(stem, image_size, arch)
    model = SimCLRModel(arch, stem, proj_dim, proj_layers, image_size)
    return model.to(memory_format=torch.channels_last)
