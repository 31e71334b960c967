"""The trained backbone of a `fastclr train` checkpoint, rebuilt as a torchvision ResNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastclr.checkpoint import resolve_checkpoint
from fastclr.methods.base import Method
from fastclr.methods.registry import build_method


def load_trained_model(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[Method, dict[str, Any], Path]:
    """(the run's method (fastclr.methods) with the checkpoint's weights, in eval mode: its
    `.backbone` is the trained encoder, `.feature_dim` its width; the run's resolved config dict;
    the checkpoint file used).

    checkpoint: a checkpoint-*.pt file, or a run folder (its newest readable checkpoint). Raises
    UsageError if it is missing, damaged, or a folder without a readable checkpoint. Checkpoints
    of runs before --method (SimCLR, SimCLRModel's keys) load as SimCLR.
    """
    path, state = resolve_checkpoint(checkpoint)
    config = state["config"]
    # Plain BatchNorm: MoCo's split BN (--bn-splits) is a training device, and a fine-tuned or
    # evaluated encoder is an ordinary torchvision network (eval mode would not split anyway).
    model = build_method({**config, "bn_splits": 1})
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, path


def torchvision_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights with torchvision's key names (no `fc.*`), contiguous fp32 on CPU."""
    return {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in backbone.state_dict().items()
    }
