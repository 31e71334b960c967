"""Split BatchNorm: one process's batch normalized as if it were spread over several GPUs.

MoCo's keys and queries must not share BatchNorm statistics: when the positive key is computed in
the same BN batch as its query's images while the queue's negatives came from other batches, the
network can tell the positive apart by the statistics alone and the contrastive loss falls without
the representation learning anything (He et al. 2020, section 3.3, "Shuffling BN"). MoCo's fix is
per-GPU BN with the keys shuffled across GPUs; on one GPU its authors' CIFAR-10 demo splits the
batch into groups that each get their own statistics (SplitBatchNorm) and shuffles the keys across
the groups. This module is that layer.

    x [N, C, H, W] -> S consecutive groups of rows (torch.tensor_split: sizes within one), each
    normalized with its own mean and biased variance in training; the running statistics become
    the mean over the groups of what each group's update gives (the S ranks' BN buffers averaged).

In eval mode it is a plain BatchNorm2d. Parameters and buffers are BatchNorm2d's, so state_dicts
load either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with training statistics of its own for each of `num_splits` consecutive groups
    of rows (eval: plain BatchNorm2d)."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.num_splits == 1 or not self.track_running_stats:
            return super().forward(x)
        if len(x) < 2 * self.num_splits:
            raise ValueError(
                f"SplitBatchNorm2d: {len(x)} rows cannot make {self.num_splits} groups of >= 2"
            )
        self.num_batches_tracked.add_(1)
        factor = self.momentum
        if factor is None:  # cumulative moving average, as nn.BatchNorm2d
            factor = 1.0 / float(self.num_batches_tracked)
        outputs, means, variances = [], [], []
        for group in x.tensor_split(self.num_splits):
            # Each group updates its own copy of the running statistics, like one rank would.
            mean, var = self.running_mean.clone(), self.running_var.clone()
            outputs.append(
                F.batch_norm(group, mean, var, self.weight, self.bias, True, factor, self.eps)
            )
            means.append(mean)
            variances.append(var)
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """`module` with every BatchNorm2d replaced in place by a SplitBatchNorm2d of `num_splits`
    groups holding the same parameters and buffers (a no-op for num_splits 1)."""
    if num_splits == 1:
        return module
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(
                child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                affine=child.affine, track_running_stats=child.track_running_stats,
            )  # fmt: skip
            # The same tensors, not copies (as torch's convert_sync_batchnorm): device, dtype and
            # any optimizer already holding them stay valid.
            if child.affine:
                split.weight, split.bias = child.weight, child.bias
            if child.track_running_stats:
                split.running_mean, split.running_var = child.running_mean, child.running_var
                split.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, split)
        else:
            split_batchnorm(child, num_splits)
    return module
