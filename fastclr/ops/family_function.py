"""The autograd Functions of the loss family over the spec primitives of fastclr/ops/family.py.

Each returns per-anchor statistics (lse, mean positive logit, positive count) and saves only the
rows, the labels, the [M] lse and counts: never a C x C tensor. The members build their losses from
the statistics in plain autograd, so a weight on the positive term (DCLW) or a mask on anchors
without positives costs nothing here.

Scale gradient. `scale` is the logit scale c (1/tau, or CLIP's logit_scale) as a 0-dim tensor when
it requires grad, else None; it receives dL/dc = (1/c) sum_{i,k} G_ik s_ik (fastclr/ops/family.py),
and autograd carries it on to tau when c = 1 / tau. Unlike the homogeneity identity of
fastclr/ops/function.py (a factor 1/(2 tau) valid when every column is a scaled row), this form
holds with a queue and with two towers alike.

Backends. `backend` names the primitives (fastclr.ops.backends.family_primitives): "chunked",
the spec, or "triton", the fused kernels (fastclr/ops/family_triton.py), which return fp32
statistics for fp32/fp16/bf16 rows exactly as the spec does.

The backward is first-order only (once_differentiable).
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastclr.ops.backends import family_primitives
from fastclr.ops.family import AnchorStats


def _scale_grad(scale: Tensor, scale_dot: Tensor, inv_temp: float) -> Tensor:
    return (scale_dot / inv_temp).to(scale.device, scale.dtype)


class AnchorRows(torch.autograd.Function):
    """One tower: rows z_hat [C, D] are anchors and columns (self masked), plus an optional queue
    [K, D] of negatives, on the named backend's primitives. -> (lse [C], pos [C], count [C] int64,
    not differentiable)."""

    @staticmethod
    def forward(
        ctx,
        z_hat: Tensor,
        labels: Tensor,
        queue: Tensor | None,
        scale: Tensor | None,
        inv_temp: float,
        decoupled: bool,
        backend: str = "chunked",
    ) -> tuple[Tensor, Tensor, Tensor]:
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        primitives = family_primitives(backend)
        lse, pos, count = primitives.family_forward_rows(
            z_hat,
            z_hat,
            labels,
            labels,
            inv_temp,
            row_ids=row_ids,
            queue=queue,
            decoupled=decoupled,
        )
        ctx.save_for_backward(z_hat, labels, queue, scale, lse, count)
        ctx.inv_temp, ctx.decoupled, ctx.primitives = inv_temp, decoupled, primitives
        ctx.mark_non_differentiable(count)
        return lse, pos, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse: Tensor, grad_pos: Tensor, _grad_count: Tensor):
        z_hat, labels, queue, scale, lse, count = ctx.saved_tensors
        stats = AnchorStats(lse, grad_lse.to(lse.dtype), grad_pos.to(lse.dtype), count)
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        grad, scale_dot, _ = ctx.primitives.family_backward_rows(
            z_hat,
            z_hat,
            labels,
            labels,
            ctx.inv_temp,
            stats,
            stats,
            row_ids=row_ids,
            queue=queue,
            decoupled=ctx.decoupled,
            unit_rows=True,  # z_hat and the queue are normalized by the members
        )
        grad_scale = None
        if ctx.needs_input_grad[3]:
            grad_scale = _scale_grad(scale, scale_dot, ctx.inv_temp)
        return grad.to(z_hat.dtype), None, None, grad_scale, None, None, None


class TwoTowerRows(torch.autograd.Function):
    """Two towers a [N, D], b [N, D]: rows of each are anchors against the other's rows (no self
    mask), positives where labels agree. -> (lse_a, pos_a, lse_b, pos_b), each [N].

    The chunked spec serves both towers from one pass over the tiles of a·bᵀ (column_stats,
    column_grad); the fused kernels are row-parallel, so they take one call per tower as anchors
    (twice the score tiles, no atomics): in backward each call's column role is the other tower's
    softmax, and the two row-role scalars together cover every (anchor, column) pair once."""

    @staticmethod
    def forward(
        ctx,
        a: Tensor,
        b: Tensor,
        labels: Tensor,
        scale: Tensor | None,
        inv_temp: float,
        backend: str = "chunked",
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        primitives = family_primitives(backend)
        if backend == "chunked":
            lse_a, pos_a, count_a, lse_b, pos_b, count_b = primitives.family_forward_rows(
                a, b, labels, labels, inv_temp, column_stats=True
            )
        else:
            lse_a, pos_a, count_a = primitives.family_forward_rows(a, b, labels, labels, inv_temp)
            lse_b, pos_b, count_b = primitives.family_forward_rows(b, a, labels, labels, inv_temp)
        ctx.save_for_backward(a, b, labels, scale, lse_a, count_a, lse_b, count_b)
        ctx.inv_temp, ctx.backend, ctx.primitives = inv_temp, backend, primitives
        return lse_a, pos_a, lse_b, pos_b

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lse_a: Tensor, g_pos_a: Tensor, g_lse_b: Tensor, g_pos_b: Tensor):
        a, b, labels, scale, lse_a, count_a, lse_b, count_b = ctx.saved_tensors
        acc = lse_a.dtype
        stats_a = AnchorStats(lse_a, g_lse_a.to(acc), g_pos_a.to(acc), count_a)
        stats_b = AnchorStats(lse_b, g_lse_b.to(acc), g_pos_b.to(acc), count_b)
        c, backward_rows = ctx.inv_temp, ctx.primitives.family_backward_rows
        if ctx.backend == "chunked":
            grad_a, scale_dot, grad_b = backward_rows(
                a, b, labels, labels, c, stats_a, stats_b, column_grad=True
            )
        else:
            grad_a, dot_a, _ = backward_rows(a, b, labels, labels, c, stats_a, stats_b)
            grad_b, dot_b, _ = backward_rows(b, a, labels, labels, c, stats_b, stats_a)
            scale_dot = dot_a + dot_b
        grad_scale = None
        if ctx.needs_input_grad[3]:
            grad_scale = _scale_grad(scale, scale_dot, c)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), None, grad_scale, None, None


def normalize_rows(z: Tensor) -> Tensor:
    """Rows of z [M, D] L2-normalized in fp32 (fp64 stays fp64), cast back to z's dtype, as
    fastclr.ops.function.normalized_rows does for nt_xent (zero rows stay zero, never NaN)."""
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    return F.normalize(z.to(work), dim=1).to(z.dtype)
