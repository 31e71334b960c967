"""Triton launchers of the loss family's primitives (kernels/family_forward.py, family_backward.py),
with the signatures of the chunked spec's family_forward_rows / family_backward_rows
(fastclr/ops/family.py) for one set of anchors.

Two towers (CLIP) take two calls of each (fastclr/ops/family_function.py TwoTowerRows), one per
tower as the anchors with the other tower as the columns: the backward's column role then gives
each tower's whole gradient from its own call, with no atomics and no column accumulation across
row blocks, at twice the score tiles of the spec's single pass (column_stats / column_grad).

Memory: the outputs ([M] lse, pos, count; [M, D] fp32 gradient, [M] fp32 scale partials) and a
few [C] vectors; nothing of C x C elements. Triton is imported lazily; under TRITON_INTERPRET=1 the
kernels run on CPU tensors (bf16 operands upcast there, see fastclr/ops/triton_backend.py).
"""

import torch
from torch import Tensor

from fastclr.ops.backends import interpreting_triton
from fastclr.ops.family import AnchorStats
from fastclr.ops.triton_backend import (
    SHARED_EXP_MAX_INV_TEMP,
    SUPPORTED_DTYPES,
    device_guard,
    dot_precision,
)


def _check(zr: Tensor, zc: Tensor, row_labels: Tensor, col_labels: Tensor, row_ids, queue) -> None:
    if zr.dim() != 2 or zc.dim() != 2 or zr.shape[1] != zc.shape[1] or zc.shape[1] < 1:
        raise ValueError(
            f"zr and zc must be [M, D] and [C, D] with one D >= 1, got {tuple(zr.shape)} and "
            f"{tuple(zc.shape)}"
        )
    if zr.dtype != zc.dtype or zr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"zr and zc must share one of fp32/fp16/bf16, got {zr.dtype} and {zc.dtype} "
            "(fp64: use backend='chunked')"
        )
    named = [("row_labels", row_labels, zr.shape[0]), ("col_labels", col_labels, zc.shape[0])]
    if row_ids is not None:
        named.append(("row_ids", row_ids, zr.shape[0]))
    for name, vec, length in named:
        if vec.shape != (length,) or vec.dtype != torch.int64 or vec.device != zr.device:
            raise ValueError(
                f"{name} must be int64 [{length}] on {zr.device}, got {vec.dtype} "
                f"{tuple(vec.shape)} on {vec.device}"
            )
    if queue is not None and (
        queue.dim() != 2
        or queue.shape[1] != zc.shape[1]
        or queue.dtype != zc.dtype
        or queue.device != zc.device
    ):
        raise ValueError(
            f"queue must be [K, {zc.shape[1]}] {zc.dtype} on {zc.device}, got {queue.dtype} "
            f"{tuple(queue.shape)} on {queue.device}"
        )


def _operand(t: Tensor) -> Tensor:
    """What the kernels read: bf16 upcast to fp32 under the interpreter (its bf16 tl.dot is wrong,
    triton-lang/triton#11584); on a GPU as is."""
    return t.float() if interpreting_triton() and t.dtype == torch.bfloat16 else t


def _common(zr: Tensor, zc: Tensor, row_ids: Tensor | None, queue: Tensor | None) -> dict:
    """The operands and launch arguments both kernels share."""
    from fastclr.kernels import family_configs

    zr_k, zc_k = _operand(zr), _operand(zc)
    q_k = zc_k if queue is None else _operand(queue)  # any valid pointer when K = 0
    block_d, single_d = family_configs.feature_block(zr.shape[1], zc_k.element_size())
    return {
        "zr": zr_k,
        "zc": zc_k,
        "q": q_k,
        "K": 0 if queue is None else queue.shape[0],
        "constexprs": {
            "BLOCK_D": block_d,
            "SINGLE_D": single_d,
            "HAS_SELF": row_ids is not None,
            "HAS_QUEUE": queue is not None and queue.shape[0] > 0,
            "DOT_PRECISION": dot_precision(zc_k.dtype),
        },
    }


def positive_counts(row_labels: Tensor, col_labels: Tensor, row_ids: Tensor | None) -> Tensor:
    """|P(i)| [M] int64: the columns that share anchor i's label, less its own column. By sorting
    the column labels (O(C log C), no host sync), not per score element in the kernel."""
    ordered = col_labels.sort().values
    count = torch.searchsorted(ordered, row_labels, right=True)
    count -= torch.searchsorted(ordered, row_labels)
    if row_ids is not None:
        count -= (col_labels[row_ids] == row_labels).long()
    return count


def family_forward_rows(
    zr: Tensor,
    zc: Tensor,
    row_labels: Tensor,
    col_labels: Tensor,
    inv_temp: float,
    *,
    row_ids: Tensor | None = None,
    queue: Tensor | None = None,
    decoupled: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-anchor lse [M] fp32, mean positive logit [M] fp32 and positive count [M] int64, as
    fastclr.ops.family.family_forward_rows (same arguments; labels and row_ids int64, any strides
    for zr, zc, queue)."""
    import triton

    from fastclr.kernels.family_forward import family_forward_kernel

    _check(zr, zc, row_labels, col_labels, row_ids, queue)
    common = _common(zr, zc, row_ids, queue)
    zr_k, zc_k, q_k = common["zr"], common["zc"], common["q"]
    num_rows, num_features = zr.shape
    lse = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    pos = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    row_labels = row_labels.contiguous()
    count = positive_counts(row_labels, col_labels, row_ids)
    if num_rows == 0:
        return lse, pos, count

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]),)

    with device_guard(zr.device):
        family_forward_kernel[grid](
            zr_k,
            zc_k,
            q_k,
            row_labels,
            col_labels.contiguous(),
            row_labels if row_ids is None else row_ids.contiguous(),
            count,
            lse,
            pos,
            num_rows,
            zc.shape[0],
            common["K"],
            num_features,
            zr_k.stride(0),
            zr_k.stride(1),
            zc_k.stride(0),
            zc_k.stride(1),
            q_k.stride(0),
            q_k.stride(1),
            float(inv_temp),
            DECOUPLED=decoupled,
            **common["constexprs"],
        )
    return lse, pos, count


def _stats_vectors(stats: AnchorStats, inv_temp: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(lse, u, v / max(count, 1), a = u exp(c - lse)) as contiguous fp32 vectors; a is the shared
    exponential's factor (kernels/family_backward.py), 0 where lse = -inf (an empty N(i))."""
    lse, u = stats.lse.float().contiguous(), stats.grad_lse.float().contiguous()
    coef = stats.grad_pos.float() / stats.count.clamp(min=1).float()
    factor = torch.where(torch.isfinite(lse), u * torch.exp(float(inv_temp) - lse), 0.0)
    return lse, u, coef.contiguous(), factor


def family_backward_rows(
    zr: Tensor,
    zc: Tensor,
    row_labels: Tensor,
    col_labels: Tensor,
    inv_temp: float,
    rows: AnchorStats,
    columns: AnchorStats | None,
    *,
    row_ids: Tensor | None = None,
    queue: Tensor | None = None,
    decoupled: bool = False,
    unit_rows: bool = False,
) -> tuple[Tensor, Tensor, None]:
    """dL/dzr [M, D] fp32 and the fp32 scalar sum_{i,k} G_ik s_ik over the anchors' row roles, as
    fastclr.ops.family.family_backward_rows without column_grad (same arguments; rows [M] and
    columns [C] stats, columns None when the columns are not anchors). unit_rows: zr, zc and the
    queue are L2-normalized, so with inv_temp <= 30 the two roles share one exponential."""
    import triton

    from fastclr.kernels.family_backward import family_backward_kernel

    _check(zr, zc, row_labels, col_labels, row_ids, queue)
    num_rows, num_features = zr.shape
    num_cols = zc.shape[0]
    for name, stats, length in (("rows", rows, num_rows), ("columns", columns, num_cols)):
        if stats is not None and stats.lse.shape != (length,):
            raise ValueError(f"{name} stats must be [{length}], got {tuple(stats.lse.shape)}")
    common = _common(zr, zc, row_ids, queue)
    zr_k, zc_k, q_k = common["zr"], common["zc"], common["q"]
    grad = torch.empty(num_rows, num_features, dtype=torch.float32, device=zr.device)
    sdot = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    if num_rows == 0:
        return grad, sdot.sum(), None
    lse_r, u_r, vc_r, a_r = _stats_vectors(rows, inv_temp)
    lse_c, u_c, vc_c, a_c = (
        (lse_r, u_r, vc_r, a_r) if columns is None else _stats_vectors(columns, inv_temp)
    )
    scale_weights = zc_k.dtype == torch.float16
    # fp16 weight bound over the column role, a [1] tensor (no host sync); 0 without it.
    w_max = torch.zeros(1, dtype=torch.float32, device=zr.device)
    if scale_weights and columns is not None and num_cols:
        w_max = (u_c.abs() + vc_c.abs()).amax().reshape(1)
    block_d = common["constexprs"]["BLOCK_D"]

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]), triton.cdiv(num_features, block_d))

    with device_guard(zr.device):
        family_backward_kernel[grid](
            zr_k,
            zc_k,
            q_k,
            row_labels.contiguous(),
            col_labels.contiguous(),
            row_labels if row_ids is None else row_ids.contiguous(),
            lse_r,
            u_r,
            vc_r,
            a_r,
            lse_c,
            u_c,
            vc_c,
            a_c,
            w_max,
            grad,
            sdot,
            num_rows,
            num_cols,
            common["K"],
            num_features,
            zr_k.stride(0),
            zr_k.stride(1),
            zc_k.stride(0),
            zc_k.stride(1),
            q_k.stride(0),
            q_k.stride(1),
            grad.stride(0),
            grad.stride(1),
            float(inv_temp),
            HAS_COLUMN_ROLE=columns is not None,
            DECOUPLED=decoupled,
            SHARED_EXP=unit_rows and float(inv_temp) <= SHARED_EXP_MAX_INV_TEMP,
            SCALE_WEIGHTS=scale_weights,
            **common["constexprs"],
        )
    return grad, sdot.sum(), None
