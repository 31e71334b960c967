"""The SimCLR network: a torchvision ResNet backbone and a 2-layer MLP projection head.

    x [B, 3, H, W] --backbone--> h [B, F] --head--> z [B, 128]

Downstream tasks (kNN, linear probe, export) use h; the contrastive loss uses z. The backbone is a
plain torchvision ResNet whose `fc` is an Identity, so its state_dict keys are torchvision's own
(minus `fc.*`) and `fastclr export` writes a file that `torchvision.models.resnet50()` loads.

Small images (CIFAR, digits) get the CIFAR stem of the SimCLR paper (appendix B.9): a 3x3 stride-1
first convolution and no max-pool, so a 32 px image is not reduced to 8 px before the first block.
"""

import torch
import torchvision
from torch import Tensor, nn

ARCHS = ("resnet18", "resnet50")
STEMS = ("auto", "cifar", "imagenet")

# Below this input size the ImageNet stem (7x7 stride 2 + max-pool, /4) throws away most pixels.
CIFAR_STEM_MAX_SIZE = 64


def resolve_stem(stem: str, image_size: int) -> str:
    """'auto' -> 'cifar' for images of at most 64 px, else 'imagenet'."""
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r}: choose one of {STEMS}")
    if stem == "auto":
        return "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    return stem


def build_backbone(arch: str, stem: str = "imagenet") -> tuple[nn.Module, int]:
    """A randomly initialized torchvision ResNet without its classifier.

    Returns (backbone, feature width): 512 for resnet18, 2048 for resnet50.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: choose one of {ARCHS}")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r}: resolve 'auto' with resolve_stem() first")
    backbone = getattr(torchvision.models, arch)(weights=None)
    if stem == "cifar":
        backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.maxpool = nn.Identity()
    feature_dim = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return backbone, feature_dim


class ProjectionHead(nn.Module):
    """SimCLR's g(.): Linear -> BN -> ReLU -> Linear, hidden width = input width.

    The BN here is the one that must see the global batch under multi-GPU training
    (SyncBatchNorm, converted by the trainer when world_size > 1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class SimCLRModel(nn.Module):
    """Backbone f and projection head g. forward(x) -> (h = f(x) [B, F], z = g(h) [B, proj_dim])."""

    def __init__(self, arch: str = "resnet18", stem: str = "cifar", proj_dim: int = 128) -> None:
        super().__init__()
        self.arch, self.stem = arch, stem
        self.backbone, self.feature_dim = build_backbone(arch, stem)
        self.head = ProjectionHead(self.feature_dim, self.feature_dim, proj_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return h, self.head(h)


def build_model(
    arch: str, *, image_size: int, stem: str = "auto", proj_dim: int = 128
) -> SimCLRModel:
    """SimCLRModel with the stem resolved for `image_size`, in channels_last memory format."""
    model = SimCLRModel(arch, resolve_stem(stem, image_size), proj_dim)
    return model.to(memory_format=torch.channels_last)
