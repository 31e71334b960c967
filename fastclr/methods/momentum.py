"""Momentum (EMA) encoders: the MoCo key encoder and the BYOL target, updated with torch's
multi-tensor (_foreach) ops as fastclr/optim/lars.py updates weights.

    target <- m * target + (1 - m) * online          (every parameter; one fused pass per call)

BYOL's rate rises from m_base to 1 along a cosine over the run (Grill et al. 2020, section 3.2):

    m(k) = 1 - (1 - m_base) * (cos(pi k / K) + 1) / 2,   k = optimizer steps done, K = total steps
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(online: nn.Module) -> nn.Module:
    """A copy of `online` that gets no gradient (the target / key encoder)."""
    target = copy.deepcopy(online)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, over all parameters at once.
    Buffers (BN running statistics) are the target's own: it runs in train mode on its batches."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's m(k): `base` at step 0, rising to 1 at `total_steps`."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
