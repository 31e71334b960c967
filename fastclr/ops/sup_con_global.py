"""sup_con with every rank's rows as negatives and positives (torch.distributed), exact gradients.

Rank r holds m rows (the same m and D on every rank: checked) with their labels; the global batch is
the rank-order concatenation (global row r·m + i). Labels are compared across ranks, so they must
mean the same on every rank: class ids, or for multi-view SimCLR globally unique sample ids
(rank·B + arange(B)).

Forward: normalize the local rows (plain autograd), all_gather the normalized rows and the labels
(no autograd), the local rows' (lse, pos, count) against all W·m columns (fastclr/ops/family.py),
and one all_gather of every row's lse and count. Backward: one all_gather of the [m, 2] upstream
gradients (dL/dlse, dL/dpos), then backward_rows of the local rows against all columns with every
global row's stats as the column role: no [W·m, D] feature gradient crosses ranks.

Gradient convention: that of fastclr/ops/global_negatives.py (DDP's average over ranks gives the
single-process gradients); the temperature gets this rank's share. Memory per rank: W·m·D gathered
rows plus O(block·W·m) tiles; never (W·m)².
"""

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastclr.errors import UsageError
from fastclr.ops.backends import family_primitives
from fastclr.ops.family import AnchorStats
from fastclr.ops.global_negatives import all_gather_stacked


class GlobalAnchorRows(torch.autograd.Function):
    """Local normalized rows [m, D] with labels [m] -> (lse, pos, count) [m] against all ranks'
    rows, plus this rank's queue [K, D] of negatives if given (no column role, so a queue needs no
    communication), on the named backend's primitives; count is not differentiable."""

    @staticmethod
    def forward(
        ctx,
        z_hat: Tensor,
        labels: Tensor,
        scale: Tensor | None,
        inv_temp: float,
        group: dist.ProcessGroup | None,
        queue: Tensor | None = None,
        decoupled: bool = False,
        backend: str = "chunked",
    ) -> tuple[Tensor, Tensor, Tensor]:
        primitives = family_primitives(backend)
        rank, m = dist.get_rank(group), z_hat.shape[0]
        columns = all_gather_stacked(z_hat.detach(), group).flatten(0, 1)  # [W·m, D]
        col_labels = all_gather_stacked(labels.to(torch.int64), group).flatten()
        ids = torch.arange(m, device=z_hat.device) + rank * m
        lse, pos, count = primitives.family_forward_rows(
            z_hat,
            columns,
            labels.to(torch.int64),
            col_labels,
            inv_temp,
            row_ids=ids,
            queue=queue,
            decoupled=decoupled,
        )
        ranked = all_gather_stacked(torch.stack([lse, count.to(lse.dtype)], dim=1), group)
        every = ranked.flatten(0, 1)  # [W·m, 2]
        ctx.save_for_backward(
            z_hat, columns, labels, col_labels, ids, lse, count, every, scale, queue
        )
        ctx.inv_temp, ctx.group, ctx.decoupled = inv_temp, group, decoupled
        ctx.primitives = primitives
        ctx.mark_non_differentiable(count)
        return lse, pos, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse: Tensor, grad_pos: Tensor, _grad_count: Tensor):
        z_hat, columns, labels, col_labels, ids, lse, count, every, scale, queue = ctx.saved_tensors
        local = torch.stack([grad_lse, grad_pos], dim=1).to(lse.dtype)  # [m, 2]
        grads = all_gather_stacked(local, ctx.group).flatten(0, 1)  # [W·m, 2], 8·W·m bytes
        rows = AnchorStats(lse, local[:, 0], local[:, 1], count)
        cols = AnchorStats(every[:, 0], grads[:, 0], grads[:, 1], every[:, 1].round().long())
        grad, scale_dot, _ = ctx.primitives.family_backward_rows(
            z_hat,
            columns,
            labels.to(torch.int64),
            col_labels,
            ctx.inv_temp,
            rows,
            cols,
            row_ids=ids,
            queue=queue,
            decoupled=ctx.decoupled,
            unit_rows=True,  # z_hat and the queue are normalized by the members
        )
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = (scale_dot / ctx.inv_temp).to(scale.device, scale.dtype)
        return grad.to(z_hat.dtype), None, grad_scale, None, None, None, None, None


def global_reduction(losses: Tensor, has_positive: Tensor, reduction: str) -> Tensor:
    """The global mean (over anchors with a positive, on every rank) or sum of the per-anchor
    losses, with the gradient path of fastclr/ops/global_negatives.py: W x this rank's share.
    One all_reduce of two numbers, read on the host (the empty-positives check)."""
    world = dist.get_world_size()
    totals = torch.stack([losses.detach().sum(), has_positive.sum().to(losses.dtype)])
    dist.all_reduce(totals)
    if totals[1].item() == 0:
        raise UsageError(
            "no label occurs twice across the ranks, so no anchor has a positive: give each "
            "class at least two rows (two views of an image, or two images of a class)"
        )
    if reduction == "mean":
        value, share = totals[0] / totals[1], losses.sum() * (world / totals[1])
    else:
        value, share = totals[0], losses.sum() * world
    return (share - share.detach()) + value
