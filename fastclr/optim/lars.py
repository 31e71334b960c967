"""LARS (You et al. 2017) as used by SimCLR, written with torch's multi-tensor (_foreach) ops.

For each parameter tensor w with gradient g in an adapted group (conv and linear weights):

    g     <- g + weight_decay * w
    trust  = trust_coefficient * ||w|| / ||g||      (1 where ||w|| = 0 or ||g|| = 0)
    v     <- momentum * v + trust * g
    w     <- w - lr * v

Groups with `lars_adapt=False` (BN parameters and biases: see `param_groups`) skip the decay and the
trust ratio and take plain momentum SGD steps, as in SimCLR's reference implementation.

All norms and trust ratios stay on the device as tensors: one `_foreach_norm` per list and no
`.item()`, so a step never waits for the GPU (no per-parameter host sync).
"""

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def param_groups(
    model: nn.Module,
    weight_decay: float,
    fixed_lr: Iterable[Tensor] = (),
    fixed_lr_scale: float = 1.0,
) -> list[dict]:
    """Split parameters into LARS-adapted weights and excluded BN parameters and biases.

    A parameter with at most one dimension (BN weight/bias, Linear/Conv bias) gets no weight decay
    and no trust-ratio adaptation. The `lars_adapt` key is ignored by SGD and AdamW. Parameters in
    `fixed_lr` (a predictor) go to groups marked `fixed_lr=True` and
    `peak_lr_scale=fixed_lr_scale`: the trainer holds their lr at that multiple of the schedule's
    peak. Parameters that take no gradient (momentum encoders) are left out.
    """
    fixed = {id(p) for p in fixed_lr}
    groups = []
    for is_fixed in (False, True):
        adapted, excluded = [], []
        for param in model.parameters():
            if param.requires_grad and (id(param) in fixed) == is_fixed:
                (excluded if param.ndim <= 1 else adapted).append(param)
        if is_fixed and not adapted and not excluded:
            break
        groups += [
            {"params": adapted, "weight_decay": weight_decay, "lars_adapt": True},
            {"params": excluded, "weight_decay": 0.0, "lars_adapt": False},
        ]
        if is_fixed:
            for group in groups[-2:]:
                group.update(fixed_lr=True, peak_lr_scale=fixed_lr_scale)
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (SimCLR's optimizer).

    Args:
        params: parameters or groups; a group may set `lars_adapt=False` to skip adaptation and
            decay (use `param_groups(model, weight_decay)` for SimCLR's split).
        lr: learning rate (the schedule overwrites it every step).
        momentum: heavy-ball momentum, 0.9 recommended.
        weight_decay: L2 coefficient added to the gradient of adapted tensors, 1e-6 recommended.
        trust_coefficient: eta in trust = eta * ||w|| / ||g||, 0.001 recommended.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS: lr={lr}, momentum={momentum}, weight_decay={weight_decay} must be >= 0 "
                f"and trust_coefficient={trust_coefficient} > 0"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars_adapt"]:
                if group["weight_decay"] != 0:
                    # Out of place: p.grad itself stays the raw gradient.
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where(
                    (w_norm > 0) & (g_norm > 0),
                    group["trust_coefficient"] * w_norm / g_norm,
                    torch.ones_like(w_norm),
                )
                grads = torch._foreach_mul(grads, list(trust.unbind(0)))
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss
