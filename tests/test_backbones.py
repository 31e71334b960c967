"""Any torchvision classifier as the SimCLR backbone: feature width, stems, heads, bad names."""

import importlib.util

import pytest
import torch

from fastclr.backbones import build_backbone, check_arch, resolve_stem, torchvision_archs
from fastclr.errors import UsageError
from fastclr.model import ProjectionHead, SimCLRModel, build_model

# One small member of each family whose classifier sits in a different place, with a side it accepts.
FAMILIES = [
    ("resnet18", 32, 512),  # fc, CIFAR stem
    ("mobilenet_v3_small", 32, 1024),  # classifier[-1] after a hidden Linear
    ("efficientnet_b0", 32, 1280),  # classifier[1]
    ("convnext_tiny", 32, 768),  # classifier[2] after LayerNorm2d + Flatten
    ("vit_b_32", 64, 768),  # heads.head; position embeddings sized by image_size
    ("swin_t", 64, 768),  # head
    ("densenet121", 32, 1024),  # classifier (a bare Linear)
    ("googlenet", 64, 1024),  # fc, auxiliary classifiers off
    ("regnet_x_400mf", 32, 400),  # fc, not a ResNet: ImageNet stem
]


@pytest.mark.parametrize(("arch", "size", "width"), FAMILIES)
def test_backbone_outputs_its_classifier_input_and_trains(arch, size, width):
    torch.manual_seed(0)
    model = build_model(arch, image_size=size)
    assert model.feature_dim == width
    model.train()
    h, z = model(torch.randn(3, 3, size, size).to(memory_format=torch.channels_last))
    assert h.shape == (3, width) and z.shape == (3, 128)
    z.square().sum().backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_cifar_stem_only_on_resnets_and_auto_picks_it_for_small_resnets():
    assert resolve_stem("auto", 32, "resnet50") == "cifar"
    assert resolve_stem("auto", 96, "resnet50") == "imagenet"
    assert resolve_stem("auto", 32, "wide_resnet50_2") == "cifar"
    assert resolve_stem("auto", 32, "convnext_tiny") == "imagenet"
    backbone, _ = build_backbone("resnet18", "cifar", 32)
    assert backbone.conv1.kernel_size == (3, 3) and isinstance(backbone.maxpool, torch.nn.Identity)
    with pytest.raises(UsageError, match="--stem cifar applies to the ResNet family only"):
        resolve_stem("cifar", 32, "vit_b_32")


def test_unknown_arch_lists_close_matches():
    with pytest.raises(UsageError, match="did you mean.*resnet50"):
        check_arch("resnet5")
    with pytest.raises(UsageError, match="--arch 'not_a_model'"):
        check_arch("not_a_model")
    assert "convnext_tiny" in torchvision_archs()


def test_model_without_a_linear_classifier_is_refused():
    with pytest.raises(UsageError, match="no linear classifier"):
        build_backbone("squeezenet1_0")


def test_timm_name_without_timm_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "timm" else real_find_spec(name)
    )
    with pytest.raises(UsageError, match="pip install timm"):
        check_arch("timm:resnet18")


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_timm_backbone():
    model = build_model("timm:resnet18", image_size=32)
    assert model.feature_dim == 512
    h, _ = model(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, 512)
    with pytest.raises(UsageError, match="timm:no_such_model"):
        build_model("timm:no_such_model", image_size=32)


def test_projection_head_layers():
    v1 = ProjectionHead(8, 8, 4, layers=2)
    # SimCLR v1's head keeps its module names, so checkpoints written before --proj-layers load.
    assert list(v1.state_dict()) == [
        "net.0.weight", "net.1.weight", "net.1.bias", "net.1.running_mean", "net.1.running_var",
        "net.1.num_batches_tracked", "net.3.weight", "net.3.bias",
    ]  # fmt: skip
    v2 = ProjectionHead(8, 8, 4, layers=3)
    linears = [m for m in v2.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and v2(torch.randn(5, 8)).shape == (5, 4)
    with pytest.raises(UsageError, match="--proj-layers 0"):
        ProjectionHead(8, 8, 4, layers=0)


def test_resnet_backbone_loads_strictly_into_torchvision():
    import torchvision

    model = SimCLRModel("resnet50", "imagenet")
    target = torchvision.models.resnet50()
    missing, unexpected = target.load_state_dict(model.backbone.state_dict(), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
