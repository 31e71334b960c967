"""Global batch norm across ranks: SimCLR's BN statistics over the whole global batch.

On CUDA this is torch's own nn.SyncBatchNorm. torch's SyncBatchNorm rejects CPU tensors, so gloo/CPU
workers (`fastclr train --nproc N`, the distributed tests) get GlobalBatchNorm: the same math (mean and
biased variance over every rank's rows, two all_reduce calls with autograd) in plain PyTorch.
"""

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is again the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the rows of every rank (training mode, process group initialized), any device.

    Statistics: mean = Σ_ranks Σ x / count, var = Σ_ranks Σ (x − mean)² / count (two-pass, biased for
    normalizing, unbiased for the running estimate), as nn.BatchNorm on the concatenated batch.
    Every rank must call forward and backward (collectives).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input [B, C, ...], got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [d for d in range(input.dim()) if d != 1]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
        local_count = x.numel() // x.shape[1]
        packed = torch.cat([x.sum(dims), x.new_full((1,), float(local_count))])
        packed = AllReduceSum.apply(packed)
        count = packed[-1].detach()
        mean = packed[:-1] / count
        centered = x - mean.reshape(shape)
        var = AllReduceSum.apply(centered.square().sum(dims)) / count
        out = centered * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            self.update_running_stats(mean.detach(), var.detach(), count)
        return out.to(input.dtype)

    @torch.no_grad()
    def update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Every BatchNorm in `module` made global across ranks: nn.SyncBatchNorm on CUDA,
    GlobalBatchNorm elsewhere (gloo/CPU). Parameters and running statistics are kept."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        like = next(iter([*module.parameters(), *module.buffers()]), None)
        converted = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=None if like is None else like.device,
            dtype=None if like is None else like.dtype,
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
