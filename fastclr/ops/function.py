"""The one torch.autograd.Function behind every memory-efficient backend.

A backend supplies two primitives (see fastclr/ops/chunked.py for their contract): `forward_rows`
(per-row log-sum-exp and positive logit) and `backward_rows` (the gradient of the normalized rows,
recomputing similarity tiles from the saved log-sum-exp). This Function saves only the normalized
rows [C, D] and the [C] log-sum-exp: never a C x C tensor.

Normalization stays outside the Function, in plain autograd (F.normalize in fp32), so every backend
shares one well-tested normalization backward and its eps behaviour for zero rows.
"""

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor


class NTXentRows(torch.autograd.Function):
    """Per-row NT-Xent losses of already-normalized rows: [C, D] -> [C]."""

    @staticmethod
    def forward(ctx, z_hat: Tensor, inv_temp: float, backend: ModuleType) -> Tensor:
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        lse, pos_logit = backend.forward_rows(z_hat, z_hat, row_ids, inv_temp)
        ctx.save_for_backward(z_hat, lse)
        ctx.inv_temp, ctx.backend = inv_temp, backend
        return lse - pos_logit

    @staticmethod
    def backward(ctx, grad_rows: Tensor) -> tuple[Tensor, None, None]:
        z_hat, lse = ctx.saved_tensors
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        grad = ctx.backend.backward_rows(
            z_hat, z_hat, row_ids, lse, grad_rows.to(lse.dtype), ctx.inv_temp
        )
        return grad.to(z_hat.dtype), None, None


def normalized_rows(z1: Tensor, z2: Tensor) -> Tensor:
    """cat(z1, z2) L2-normalized in fp32 (fp64 stays fp64), then cast to the compute dtype.

    Returns [2N, D] in the inputs' dtype: fp16/bf16 tiles feed tensor cores, fp32 accumulates.
    Zero rows normalize to zero (F.normalize's eps), never NaN.
    """
    z = torch.cat([z1, z2], dim=0)
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    return F.normalize(z.to(work), dim=1).to(z.dtype)


def nt_xent_rows(z1: Tensor, z2: Tensor, temperature: float, backend: ModuleType) -> Tensor:
    """The 2N per-row losses through a memory-efficient backend; differentiable in z1 and z2."""
    return NTXentRows.apply(normalized_rows(z1, z2), 1.0 / temperature, backend)
