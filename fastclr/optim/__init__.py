"""Optimizers and learning-rate schedules for SimCLR training."""

from fastclr.optim.factory import OPTIMIZER_DEFAULTS, build_optimizer
from fastclr.optim.lars import LARS, param_groups
from fastclr.optim.schedule import WarmupCosine, build_schedule, scaled_lr, warmup_steps_for

__all__ = [
    "LARS",
    "OPTIMIZER_DEFAULTS",
    "WarmupCosine",
    "build_optimizer",
    "build_schedule",
    "param_groups",
    "scaled_lr",
    "warmup_steps_for",
]
