"""Backbones by name: any torchvision classification model, or `timm:NAME` when timm is installed.

    x [B, 3, H, W] --backbone--> h [B, F]

The model's last nn.Linear (its classifier: `fc`, `classifier[-1]`, `heads.head`, `head`) becomes an
Identity, so h is what that classifier read and F is its `in_features`. Everything else keeps
torchvision's module names, so a trained backbone's state_dict loads into the plain torchvision
model with `strict=False` (only the classifier's keys are missing); for ResNets it is exact
(`fastclr export`).

Small images (CIFAR, digits) get the CIFAR stem of the SimCLR paper (appendix B.9) on the ResNet
family (resnet*, resnext*, wide_resnet*): a 3x3 stride-1 first convolution and no max-pool, so a
32 px image is not reduced to 8 px before the first block. Other families keep their own stem.
"""

from __future__ import annotations

import difflib
import importlib.util

import torchvision
from torch import nn

from fastclr.errors import UsageError

STEMS = ("auto", "cifar", "imagenet")
TIMM_PREFIX = "timm:"

# Below this input size the ImageNet stem (7x7 stride 2 + max-pool, /4) throws away most pixels.
CIFAR_STEM_MAX_SIZE = 64

# Families whose torchvision builders take the input side (position embeddings are sized by it).
_SIZED_FAMILIES = {"vit_": "image_size", "maxvit_": "input_size"}
# Auxiliary classifiers change what forward() returns in training mode; SimCLR needs one output.
_AUX_LOGITS_FAMILIES = ("googlenet", "inception_v3")


def torchvision_archs() -> list[str]:
    """Names of torchvision's ImageNet classification models (resnet18, convnext_tiny, vit_b_16, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_arch(arch: str) -> str:
    """`arch` if it names a buildable backbone, else a UsageError listing close matches."""
    if arch.startswith(TIMM_PREFIX):
        if importlib.util.find_spec("timm") is None:
            raise UsageError(
                f"--arch {arch}: timm is not installed; `pip install timm` (or `pip install "
                f"'fastclr[timm]'`), or use a torchvision name such as resnet50"
            )
        return arch
    names = torchvision_archs()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(names)}"
        raise UsageError(f"--arch {arch!r} is not a torchvision classification model: {hint}")
    return arch


def has_cifar_stem(arch: str) -> bool:
    """True for the torchvision ResNet family, whose conv1 + max-pool the CIFAR stem replaces."""
    return arch.startswith(("resnet", "resnext", "wide_resnet"))


def resolve_stem(stem: str, image_size: int, arch: str = "resnet18") -> str:
    """'auto' -> 'cifar' for a ResNet at most 64 px wide, else 'imagenet' (the model's own stem)."""
    if stem not in STEMS:
        raise UsageError(f"--stem {stem!r}: choose one of {', '.join(STEMS)}")
    if stem == "auto":
        small = image_size <= CIFAR_STEM_MAX_SIZE
        return "cifar" if small and has_cifar_stem(arch) else "imagenet"
    if stem == "cifar" and not has_cifar_stem(arch):
        raise UsageError(
            f"--stem cifar applies to the ResNet family only, not --arch {arch}: "
            "use --stem auto or imagenet"
        )
    return stem


def build_backbone(
    arch: str, stem: str = "imagenet", image_size: int | None = None
) -> tuple[nn.Module, int]:
    """A randomly initialized backbone without its classifier: (module, feature width F).

    Args:
        arch: a torchvision model name (see `torchvision_archs()`) or `timm:NAME`.
        stem: "cifar" or "imagenet" (resolve "auto" with `resolve_stem` first).
        image_size: the input side; ViT/MaxViT size their position embeddings by it (default 224).
    """
    check_arch(arch)
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r}: resolve 'auto' with resolve_stem() first")
    if arch.startswith(TIMM_PREFIX):
        return _timm_backbone(arch.removeprefix(TIMM_PREFIX))
    model = torchvision.models.get_model(arch, weights=None, **_builder_kwargs(arch, image_size))
    if stem == "cifar":
        resolve_stem(stem, image_size or 0, arch)  # refuses non-ResNets
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model, _drop_classifier(model, arch)


def _builder_kwargs(arch: str, image_size: int | None) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for prefix, key in _SIZED_FAMILIES.items():
        if arch.startswith(prefix) and image_size is not None:
            kwargs[key] = image_size
    if arch in _AUX_LOGITS_FAMILIES:
        kwargs.update(aux_logits=False, init_weights=False)
    return kwargs


def _drop_classifier(model: nn.Module, arch: str) -> int:
    """Replace the model's last nn.Linear by an Identity in place; return its in_features."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UsageError(
            f"--arch {arch} has no linear classifier to replace (e.g. squeezenet's is a "
            "convolution): choose another model"
        )
    *parent_path, leaf = linears[-1].split(".")
    parent = model.get_submodule(".".join(parent_path)) if parent_path else model
    width = getattr(parent, leaf).in_features
    setattr(parent, leaf, nn.Identity())
    return width


def _timm_backbone(name: str) -> tuple[nn.Module, int]:
    import timm

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as error:  # timm's "Unknown model" error
        raise UsageError(f"--arch timm:{name}: {error}") from None
    return model, int(model.num_features)
