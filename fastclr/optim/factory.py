"""build_optimizer: LARS, SGD or AdamW over the parameter groups of lars.param_groups, with
recommended defaults."""

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from fastclr.optim.lars import LARS, param_groups

# name -> (base lr for batch 256, weight decay). LARS values are SimCLR's (0.3 x batch/256, 1e-6).
OPTIMIZER_DEFAULTS: dict[str, tuple[float, float]] = {
    "lars": (0.3, 1e-6),
    "sgd": (0.06, 5e-4),
    "adamw": (1e-3, 1e-6),
}


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    fixed_lr: Iterable[Tensor] = (),
    fixed_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """Optimizer `name` ("lars", "sgd", "adamw"); BN parameters and biases get no weight decay.

    `lr` is the initial value only: the trainer sets every group's lr from the schedule each step
    (the groups of `fixed_lr` parameters, marked fixed_lr=True, to `fixed_lr_scale` x the
    schedule's peak).
    """
    groups = param_groups(model, weight_decay, fixed_lr, fixed_lr_scale)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r}: choose one of {tuple(OPTIMIZER_DEFAULTS)}")
