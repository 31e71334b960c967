"""Learning-rate schedule: linear scaling, linear warmup, then cosine decay, evaluated per step.

    peak_lr = base_lr * batch_size / 256                       (Goyal et al.; SimCLR)
    lr(s)   = peak_lr * (s + 1) / W                             for s < W   (warmup)
    lr(s)   = final_lr + (peak_lr - final_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2     for s >= W

s is the 0-based optimizer step, W the warmup steps, T the total steps. batch_size is the global
batch (all ranks). The schedule is a pure function of s, so resuming needs only the step count.
"""

import math
from dataclasses import dataclass


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule: the lr for `batch_size` given the lr for a batch of 256."""
    return base_lr * batch_size / 256


def warmup_steps_for(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> int:
    """Warmup length in steps: `warmup_epochs`, but never more than a tenth of a short run."""
    return round(min(warmup_epochs, epochs / 10) * steps_per_epoch)


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step) for a run of `total_steps` optimizer steps (see the module docstring)."""

    peak_lr: float
    warmup_steps: int
    total_steps: int
    final_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"WarmupCosine: need 0 <= warmup_steps ({self.warmup_steps}) <= "
                f"total_steps ({self.total_steps}) and total_steps >= 1"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_lr + (self.peak_lr - self.final_lr) * cosine


def build_schedule(
    *,
    base_lr: float,
    batch_size: int,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 10,
) -> WarmupCosine:
    """The SimCLR schedule for a run of `epochs` x `steps_per_epoch` steps at global `batch_size`."""
    total = epochs * steps_per_epoch
    return WarmupCosine(
        peak_lr=scaled_lr(base_lr, batch_size),
        warmup_steps=warmup_steps_for(warmup_epochs, epochs, steps_per_epoch),
        total_steps=total,
    )
