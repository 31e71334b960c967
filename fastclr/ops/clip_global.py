"""clip_loss with every rank's pairs as negatives (torch.distributed), with exact gradients.

Rank r holds n local pairs (a_r, b_r) [n, D]; the global batch is A = cat_r a_r, B = cat_r b_r
(rank order, pair r·n + k on the global diagonal), as OpenCLIP's gather_with_grad without local_loss.

Forward, on each rank: all_gather A and B (no autograd through the gather), the local image rows'
(lse, pos) against all of B and the local text rows' against all of A (fastclr/ops/family.py), then
one all_gather of every row's lse plus each rank's loss sum. Backward: one all_gather of the [n, 4]
upstream gradients (dL/dlse, dL/dpos of both towers), then for the local image rows

    dL/da_i = c sum_k (G^A_ik + G^B_ki) b_k      (k over all W·n text rows)

where the column role G^B_ki needs only the global text rows' lse and upstream gradients: no [N, D]
feature gradient crosses ranks (OpenCLIP's all_gather with grad sends W·n·D of them back). The same
for the text rows with the towers swapped. The logit scale's gradient is this rank's share,
(1/c) sum over its own rows' roles; summed over ranks it is the full one.

Gradient convention: the one of fastclr/ops/global_negatives.py (DDP's average over ranks gives the
single-process gradients): "mean"/"sum" return the global value with a gradient path scaled by W on
the local rows; "none" the [2, n] local rows. Every rank must call it with the same n, D, dtype.
Memory per rank: 2·W·n·D gathered features plus O(block·W·n) tiles; never (W·n)².
"""

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastclr.ops.backends import family_primitives
from fastclr.ops.family import AnchorStats
from fastclr.ops.global_negatives import all_gather_stacked, check_same_rows


class GlobalTwoTowerRows(torch.autograd.Function):
    """Local towers a, b [n, D] -> (lse_a, pos_a, lse_b, pos_b) [n] each against the other tower's
    W·n gathered rows, and the detached global loss sum (both directions)."""

    @staticmethod
    def forward(
        ctx,
        a: Tensor,
        b: Tensor,
        scale: Tensor | None,
        inv_temp: float,
        group: dist.ProcessGroup | None,
        backend: str = "chunked",
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        primitives = family_primitives(backend)
        family_forward_rows = primitives.family_forward_rows
        rank, world, n = dist.get_rank(group), dist.get_world_size(group), a.shape[0]
        columns_a = all_gather_stacked(a.detach(), group).flatten(0, 1)  # [W·n, D]
        columns_b = all_gather_stacked(b.detach(), group).flatten(0, 1)
        ids = torch.arange(n, device=a.device) + rank * n
        labels = torch.arange(world * n, device=a.device)
        lse_a, pos_a, _ = family_forward_rows(a, columns_b, ids, labels, inv_temp)
        lse_b, pos_b, _ = family_forward_rows(b, columns_a, ids, labels, inv_temp)
        local_sum = (lse_a - pos_a).sum() + (lse_b - pos_b).sum()
        ranked = all_gather_stacked(torch.cat([lse_a, lse_b, local_sum.reshape(1)]), group)
        lse_a_all, lse_b_all = ranked[:, :n].flatten(), ranked[:, n : 2 * n].flatten()
        total = ranked[:, -1].sum()
        ctx.save_for_backward(
            a, b, columns_a, columns_b, ids, labels, lse_a, lse_b, lse_a_all, lse_b_all, scale
        )
        ctx.inv_temp, ctx.group, ctx.primitives = inv_temp, group, primitives
        ctx.mark_non_differentiable(total)
        return lse_a, pos_a, lse_b, pos_b, total

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lse_a, g_pos_a, g_lse_b, g_pos_b, _g_total):
        (a, b, columns_a, columns_b, ids, labels, lse_a, lse_b, lse_a_all, lse_b_all, scale) = (
            ctx.saved_tensors
        )
        acc = lse_a.dtype
        local = torch.stack([g_lse_a, g_pos_a, g_lse_b, g_pos_b], dim=1).to(acc)  # [n, 4]
        every = all_gather_stacked(local, ctx.group).flatten(0, 1)  # [W·n, 4], 16·W·n bytes
        one, ones = torch.ones_like(ids), torch.ones_like(labels)
        rows_a = AnchorStats(lse_a, local[:, 0], local[:, 1], one)
        rows_b = AnchorStats(lse_b, local[:, 2], local[:, 3], one)
        all_a = AnchorStats(lse_a_all, every[:, 0], every[:, 1], ones)
        all_b = AnchorStats(lse_b_all, every[:, 2], every[:, 3], ones)
        c, family_backward_rows = ctx.inv_temp, ctx.primitives.family_backward_rows
        grad_a, dot_a, _ = family_backward_rows(a, columns_b, ids, labels, c, rows_a, all_b)
        grad_b, dot_b, _ = family_backward_rows(b, columns_a, ids, labels, c, rows_b, all_a)
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = ((dot_a + dot_b) / c).to(scale.device, scale.dtype)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, None, None, None


def clip_loss_global(
    a: Tensor,
    b: Tensor,
    scale: float,
    reduction: str,
    *,
    scale_tensor: Tensor | None,
    group: dist.ProcessGroup | None = None,
    backend: str = "chunked",
) -> Tensor:
    """clip_loss over the global batch of all ranks (module docstring); inputs already checked.

    backend: the family primitives to run ("chunked" or "triton", fastclr.ops.backends).

    Returns the global mean/sum on every rank (gradient path: W x this rank's rows), or the [2, n]
    local rows for "none".
    """
    world = dist.get_world_size(group)
    check_same_rows(a.shape[0], a.shape[1], group)
    lse_a, pos_a, lse_b, pos_b, total = GlobalTwoTowerRows.apply(
        a, b, scale_tensor, scale, group, backend
    )
    rows = torch.stack([lse_a - pos_a, lse_b - pos_b])
    if reduction == "none":
        return rows
    num_rows = rows.numel() * world
    value = total / num_rows if reduction == "mean" else total
    share = rows.sum() * (world / num_rows if reduction == "mean" else world)
    return (share - share.detach()) + value
