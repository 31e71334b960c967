"""NT-Xent with global negatives across torch.distributed ranks, with exact gradients.

Every rank r holds its local projections z1_r, z2_r [n, D] (the same n and D on every rank: checked).
The global batch is the single-process batch cat(z1_0..z1_{W-1}) / cat(z2_0..z2_{W-1}), in the row
order of the single-device contract:

    Z = cat(all_gather(z1), all_gather(z2))            C = 2·n·W rows
    global ids of rank r's rows:  r·n + arange(n)  (z1)   and   n·W + r·n + arange(n)  (z2)

Forward, on each rank: normalize the local rows (plain autograd, fp32), all_gather the normalized rows
(no autograd through the gather), forward_rows(local rows, all C columns) -> local lse, positive logit
and negatives-only lse_neg, loss_i = softplus(lse_neg_i − pos_logit_i) (= lse_i − pos_logit_i without
its cancellation, see fastclr/ops/chunked.py). The local lse and lse_neg are all_gathered in one
collective and saved (with each rank's loss sum appended, so the global mean needs no extra one).

Backward: with g the upstream gradient of every row's loss, the gradient of Σ_j g_j·loss_j (j over ALL
C rows, whichever rank owns them) with respect to a local normalized row i is

    dẑ_i = (1/τ) [ Σ_{k≠i,pos(i)} (g_i P_ik + g_k P_ki) ẑ_k − (g_i Q_i + g_pos(i) Q_pos(i)) ẑ_pos(i) ]
    P_ik = exp(s_ik − lse_i),   Q_i = 1 − P_i,pos(i) = exp(lse_neg_i − lse_i)

summed over all C columns. It needs lse_k, lse_neg_k and g_k of every global row and nothing else from
the other ranks: the g_k·P_ki term is exactly rank k's use of row i as a negative, and Q_pos(i) is the
positive's own row's (it may live on another rank). So the backward all_gathers the [2n] local
upstream gradients and calls backward_rows(local rows, all columns, lse_all, lse_neg_all, g_all).
Columns need no gradient, and no [C, D] feature gradient is ever communicated.

Bytes each rank receives per step (b = bytes per feature element, 2 for bf16/fp16, 4 for fp32):
    this scheme:   (W−1)·2n·D·b  (features, forward)  +  (W−1)·(4n+1)·4  (lse, lse_neg)
                  +  (W−1)·2n·4  (g)  ≈ C·D·b + 12·C
    gather features + gather their gradients (lightly, solo-learn, VISSL): the same C·D·b forward,
                  then the [C, D] feature gradient in backward: C·D·b with a reduce-scatter, ≈ 2·C·D·b
                  with the all_reduce those GatherLayers use.
At C = 8192, D = 128, bf16: 2 MiB forward for both (+ 64 KiB of lse here); backward 32 KiB here vs 2-4 MiB.

Gradient convention (the one DDP needs). Each rank's autograd computes the gradient of the SUM over
ranks of what the ranks differentiate; DDP then averages parameter gradients over the W ranks, so the
parameters follow the gradient of the MEAN over ranks of the per-rank losses. Hence:
    reduction="mean": every rank returns the global mean (1/C)·Σ_{all C rows} loss_j (the single-process
        value); its gradient path is the local mean (1/2n)·Σ_{local rows}, whose average over ranks is
        the global mean. DDP's averaged parameter gradients equal the single-process gradients.
    reduction="sum": every rank returns the global sum Σ_{all C rows} loss_j; its gradient path is
        W·Σ_{local rows}, whose average over ranks is the global sum. Same guarantee.
    reduction="none": the 2n local per-row losses [2n] (cat(z1_r, z2_r) order), true values; `.mean()`
        of them on every rank gives the global mean's gradients under DDP.
The raw gradient a rank sees for its own z (before DDP) is W times the single-process gradient of those
rows: that factor is what DDP's division by W removes.

Temperature. A tensor τ that requires grad gets, on each rank, −(1/(2τ))·Σ_{local rows i} <ẑ_i, dẑ_i>
(derived in fastclr/ops/function.py): the rank's share. Summed over ranks, the shares are the gradient
of the sum over ranks of what the ranks differentiate, as the z-gradients are; DDP's average of them is
the single-process dL/dτ for "mean"/"sum" (and for `.mean()` of "none"), when τ is a parameter of the
DDP-wrapped module. A τ outside DDP needs its gradient all_reduced and divided by W.

Every rank must call this (same temperature, reduction, dtype) and backpropagate through it, as with DDP.
Memory per rank: the gathered columns C·D in the compute dtype plus the [C] lse, never C x C.
"""

import torch
import torch.distributed as dist
from torch import Tensor

from fastclr.ops import primitives
from fastclr.ops.chunked import loss_terms
from fastclr.ops.function import BackwardRows, Primitives, normalized_rows, temperature_grad


def distributed_world_size(group: dist.ProcessGroup | None = None) -> int:
    """World size of `group` when torch.distributed is initialized, else 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


# torch >= 2.14 names it all_gather_single (all_gather_into_tensor warns there); older torch has only
# all_gather_into_tensor. Both take the concatenated output form [W * m, ...], the one gloo accepts.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_gather_stacked(local: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """[m, ...] on each rank -> [W, m, ...] (rank order). No autograd."""
    world = dist.get_world_size(group)
    flat = local.new_empty((world * local.shape[0], *local.shape[1:]))
    _all_gather_single(flat, local.contiguous(), group=group)
    return flat.unflatten(0, (world, local.shape[0]))


def check_same_rows(num_rows: int, dim: int, group: dist.ProcessGroup | None) -> None:
    """Raise ValueError on every rank unless all ranks hold the same [n, D].

    One small all_gather (2·W int64); on CUDA the result is read on the host, a sync point.
    """
    device = collective_device(group)
    local = torch.tensor([num_rows, dim], dtype=torch.int64, device=device)
    shapes = all_gather_stacked(local[None], group).squeeze(1).tolist()
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(
            "gather_distributed=True needs the same z1/z2 shape [n, D] on every rank, got "
            f"{[tuple(s) for s in shapes]} (rank order): drop the last uneven batch "
            "(DataLoader(drop_last=True)) or pad the dataset with DistributedSampler"
        )


def collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """CUDA for NCCL (tensors must live on the current GPU), CPU otherwise."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """[2n, ...] per rank (cat(view1, view2)) -> [W·2n, ...] in global order (all view1, then view2)."""
    ranked = all_gather_stacked(local, group)
    n = local.shape[0] // 2
    # [W, 2, n, ...] -> [2, W, n, ...]: rank-major to view-major, the single-device row order.
    return ranked.unflatten(1, (2, n)).transpose(0, 1).flatten(0, 2)


def global_row_ids(n: int, rank: int, world: int, device: torch.device) -> Tensor:
    """Global index of rank's rows cat(z1_r, z2_r) in Z = cat(all_gather(z1), all_gather(z2))."""
    local = torch.arange(n, device=device) + rank * n
    return torch.cat([local, local + n * world])


class GlobalNTXentRows(torch.autograd.Function):
    """Local normalized rows [2n, D] -> (their losses [2n] against all C = 2nW rows, sum of all C
    losses). The second output is a detached scalar (the global loss sum, for the reported value).
    `temperature` is None or the 0-dim tensor tau (value 1 / inv_temp) that receives this rank's
    share of dL/dtau.
    """

    @staticmethod
    def forward(
        ctx,
        z_local: Tensor,
        temperature: Tensor | None,
        inv_temp: float,
        backend: Primitives,
        group: dist.ProcessGroup | None,
    ) -> tuple[Tensor, Tensor]:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        n = z_local.shape[0] // 2
        columns = gather_rows(z_local.detach(), group)  # [C, D], C·D·b bytes on the wire
        row_ids = global_row_ids(n, rank, world, z_local.device)
        lse, pos_logit, lse_neg = backend.forward_rows(z_local, columns, row_ids, inv_temp)
        losses = loss_terms(lse_neg, pos_logit)
        # One collective for the lse and lse_neg of every row and each rank's loss sum: [W, 4n + 1].
        packed = torch.cat([lse, lse_neg, losses.sum().reshape(1)])
        ranked = all_gather_stacked(packed, group)
        lse_all, lse_neg_all = (
            ranked[:, part : part + 2 * n].unflatten(1, (2, n)).transpose(0, 1).flatten()
            for part in (0, 2 * n)
        )
        total = ranked[:, -1].sum()
        ctx.save_for_backward(z_local, columns, row_ids, lse_all, lse_neg_all, temperature)
        ctx.inv_temp, ctx.backend, ctx.group = inv_temp, backend, group
        ctx.mark_non_differentiable(total)
        return losses, total

    @staticmethod
    def backward(ctx, grad_rows: Tensor, _grad_total: Tensor):
        z_local, columns, row_ids, lse_all, lse_neg_all, temperature = ctx.saved_tensors
        g_all = gather_rows(grad_rows.to(lse_all.dtype), ctx.group)  # [C], 4·C bytes
        grad = BackwardRows.apply(
            z_local, columns, row_ids, lse_all, lse_neg_all, g_all, ctx.inv_temp, ctx.backend
        )
        grad_tau = None
        if ctx.needs_input_grad[1]:
            grad_tau = temperature_grad(z_local, grad, ctx.inv_temp, temperature)
        return grad.to(z_local.dtype), grad_tau, None, None, None


def nt_xent_global(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    reduction: str,
    backend: str,
    group: dist.ProcessGroup | None = None,
    *,
    temperature_tensor: Tensor | None = None,
) -> Tensor:
    """NT-Xent where every rank's rows use all ranks' rows as negatives (see the module docstring).

    Args:
        z1, z2: [n, D] local projections (unnormalized, same n, D and dtype on every rank; checked).
            Global batch: cat over ranks in rank order, so rank r's row k is global image r·n + k.
        temperature: tau's value, a float > 0.
        reduction: "mean" / "sum": the global value on every rank, with gradients that DDP's
            averaging turns into the single-process gradients of the global batch. "none": the [2n]
            local per-row losses (cat(z1, z2) order).
        backend: a registered backend name (fastclr.ops.backends); "reference" runs the chunked
            primitives, its executable spec (the reference itself needs all rows).
        group: process group (default: the world).
        temperature_tensor: the 0-dim tensor holding tau when it requires grad (see the module
            docstring for the gradient each rank gets).

    Returns:
        fp32 (fp64 for fp64 inputs) scalar, or [2n].

    Needs an initialized process group; nt_xent(..., gather_distributed=True) computes the
    single-process loss without one, or with a world size of 1.

    Communication per call: all_gather of the normalized rows (C·D elements in the inputs' dtype),
    of the lse and lse_neg (+ loss sums, 2·C + W fp32) and in backward of the upstream gradients (C fp32), plus a
    2·W int64 shape check. Memory: C·D + O(block·C); no C x C tensor.
    """
    world = distributed_world_size(group)
    check_same_rows(z1.shape[0], z1.shape[1], group)
    ops = primitives.NAMED["chunked" if backend == "reference" else backend]
    rows, total = GlobalNTXentRows.apply(
        normalized_rows(z1, z2), temperature_tensor, 1.0 / temperature, ops, group
    )
    if reduction == "none":
        return rows
    num_global = rows.shape[0] * world
    # Value: the global reduction. Gradient: this rank's share scaled by W (DDP divides by W).
    value = total / num_global if reduction == "mean" else total
    share = rows.sum() * (world / num_global if reduction == "mean" else world)
    return (share - share.detach()) + value
