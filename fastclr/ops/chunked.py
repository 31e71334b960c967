"""Chunked PyTorch NT-Xent primitives: the CPU path, the universal fallback, and the executable spec
that the Triton and CUDA backends mirror.

Notation (rows of Z = cat(z1, z2), C = 2N of them, already L2-normalized to ẑ):
    s_ik      = <ẑ_i, ẑ_k> / tau
    lse_i     = log sum_{k != i} exp(s_ik)                     (self-similarity masked out)
    pos(i)    = (i + C/2) mod C                                (the other view of the same image)
    loss_i    = lse_i - s_{i,pos(i)}
With g_i the upstream gradient of loss_i and P_ik = exp(s_ik - lse_i), symmetry of S gives

    dL/dẑ_i = (1/tau) [ sum_{k != i} (g_i P_ik + g_k P_ki) ẑ_k  -  (g_i + g_pos(i)) ẑ_pos(i) ]

so the backward is one row-parallel pass that needs only the saved lse of every row.

Both functions walk blocks of rows; a block holds a few [block, C] fp32 tiles, so peak extra memory is
O(C·D + block·C), never C x C. Rows may be a subset of the columns (multi-GPU: the local rows against
all gathered columns), identified by their global index `row_ids`.
"""

import torch
from torch import Tensor

# Upper bound on the bytes of the [block, C] temporaries one row block may hold (about three of them
# live at once in backward). 64 MiB keeps the CPU cache-friendly and is noise next to a GPU's memory.
BLOCK_BUDGET_BYTES = 64 * 2**20


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp16/bf16/fp32 inputs; fp64 stays fp64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rows_per_block(num_cols: int, budget_bytes: int | None = None) -> int:
    """How many rows of a [rows, num_cols] fp32 tile fit three times in the budget (at least 1).

    The budget defaults to BLOCK_BUDGET_BYTES as it is at the call (tests shrink it).
    """
    budget = BLOCK_BUDGET_BYTES if budget_bytes is None else budget_bytes
    return max(1, budget // (3 * 4 * max(num_cols, 1)))


def positive_ids(row_ids: Tensor, num_cols: int) -> Tensor:
    """Global index of each row's positive: the same image's other view."""
    return (row_ids + num_cols // 2) % num_cols


def forward_rows(
    zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float, block: int | None = None
) -> tuple[Tensor, Tensor]:
    """Per-row masked log-sum-exp and positive logit.

    Args:
        zr: [M, D] normalized rows to compute (rows of zc, see row_ids).
        zc: [C, D] all normalized columns, same dtype and device; C even.
        row_ids: [M] int64, zr[i] == zc[row_ids[i]].
        inv_temp: 1 / temperature.
        block: rows per block; chosen from BLOCK_BUDGET_BYTES when None.

    Returns:
        lse: [M] fp32 (fp64 for fp64 inputs), log sum_{k != row_ids[i]} exp(inv_temp <zr_i, zc_k>).
        pos_logit: [M], inv_temp <zr_i, zc_pos(row_ids[i])>.
    """
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc)
    num_rows, num_cols = zr.shape[0], zc.shape[0]
    block = block or rows_per_block(num_cols)
    lse = torch.empty(num_rows, dtype=acc, device=zr.device)
    pos_logit = torch.empty(num_rows, dtype=acc, device=zr.device)
    for start in range(0, num_rows, block):
        stop = min(start + block, num_rows)
        ids = row_ids[start:stop]
        logits = (zr[start:stop].to(acc) @ cols.T).mul_(inv_temp)  # [B, C]
        pos_logit[start:stop] = logits.gather(1, positive_ids(ids, num_cols)[:, None]).squeeze(1)
        logits.scatter_(1, ids[:, None], float("-inf"))
        lse[start:stop] = torch.logsumexp(logits, dim=1)
    return lse, pos_logit


def backward_rows(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    g_c: Tensor,
    inv_temp: float,
    block: int | None = None,
) -> Tensor:
    """Gradient of sum_j g_j loss_j with respect to the normalized rows zr.

    Args:
        zr, zc, row_ids, inv_temp: as in forward_rows.
        lse_c: [C] log-sum-exp of every global row (from forward_rows over all rows).
        g_c: [C] upstream gradient of every global row's loss.
        block: rows per block; chosen from BLOCK_BUDGET_BYTES when None.

    Returns:
        [M, D] gradient in the accumulation dtype (fp32, or fp64 for fp64 inputs).
    """
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc)
    lse_c, g_c = lse_c.to(acc), g_c.to(acc)
    num_rows, num_cols = zr.shape[0], zc.shape[0]
    block = block or rows_per_block(num_cols)
    grad = torch.empty(num_rows, zc.shape[1], dtype=acc, device=zr.device)
    for start in range(0, num_rows, block):
        stop = min(start + block, num_rows)
        ids = row_ids[start:stop]
        pos = positive_ids(ids, num_cols)
        g_row = g_c[ids]
        logits = (zr[start:stop].to(acc) @ cols.T).mul_(inv_temp)  # [B, C]
        # weights_ik = g_i P_ik + g_k P_ki, the softmax of row i and of every column k's own row.
        weights = (logits - lse_c[ids, None]).exp_().mul_(g_row[:, None])
        weights += logits.sub_(lse_c[None, :]).exp_().mul_(g_c[None, :])
        weights.scatter_(1, ids[:, None], 0.0)
        weights.scatter_add_(1, pos[:, None], -(g_row + g_c[pos])[:, None])
        grad[start:stop] = (weights @ cols).mul_(inv_temp)
    return grad
