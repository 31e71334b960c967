"""Chunked PyTorch NT-Xent primitives: the CPU path, the universal fallback, and the executable spec
that the Triton and CUDA backends mirror.

Notation (rows of Z = cat(z1, z2), C = 2N of them, already L2-normalized to ẑ):
    s_ik      = <ẑ_i, ẑ_k> / tau
    pos(i)    = (i + C/2) mod C                                (the other view of the same image)
    lse_neg_i = log sum_{k != i, pos(i)} exp(s_ik)             (the negatives only)
    lse_i     = log sum_{k != i} exp(s_ik) = logaddexp(lse_neg_i, s_{i,pos(i)})
    loss_i    = lse_i - s_{i,pos(i)} = softplus(lse_neg_i - s_{i,pos(i)})
With g_i the upstream gradient of loss_i, P_ik = exp(s_ik - lse_i), and
    Q_i = 1 - P_{i,pos(i)} = exp(lse_neg_i - lse_i)            (the negatives' probability mass)
symmetry of S gives

    dL/dẑ_i = (1/tau) [ sum_{k != i, pos(i)} (g_i P_ik + g_k P_ki) ẑ_k  -  (g_i Q_i + g_pos(i) Q_pos(i)) ẑ_pos(i) ]

so the backward is one row-parallel pass that needs only the saved lse and lse_neg of every row.

Why two log-sum-exps. The positive column's weight g_i P_i,pos + g_pos P_pos,i - g_i - g_pos is
-(g_i Q_i + g_pos Q_pos). Near convergence P_i,pos -> 1 and Q_i is small; computed as P - 1 from
lse (an fp32 number of size ~1/tau, absolute rounding ~ulp(1/tau) = 2e-6 at tau = 0.05) it keeps only
an absolute error of that size, far more than Q itself. exp(lse_neg - lse) has a relative error of
that size instead, and softplus(lse_neg - s_pos) gives the loss to its own relative precision, where
lse - s_pos would cancel the same way.

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
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row masked log-sum-exps and positive logit.

    Args:
        zr: [M, D] normalized rows to compute (rows of zc, see row_ids).
        zc: [C, D] all normalized columns, same dtype and device; C even.
        row_ids: [M] int64, zr[i] == zc[row_ids[i]].
        inv_temp: 1 / temperature.
        block: rows per block; chosen from BLOCK_BUDGET_BYTES when None.

    Returns:
        lse: [M] fp32 (fp64 for fp64 inputs), log sum_{k != row_ids[i]} exp(inv_temp <zr_i, zc_k>).
        pos_logit: [M], inv_temp <zr_i, zc_pos(row_ids[i])>.
        lse_neg: [M], the same log-sum-exp without the positive column (-inf when C = 2).
        The loss is loss_terms(lse_neg, pos_logit); lse = logaddexp(lse_neg, pos_logit).
    """
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc)
    num_rows, num_cols = zr.shape[0], zc.shape[0]
    block = block or rows_per_block(num_cols)
    lse = torch.empty(num_rows, dtype=acc, device=zr.device)
    pos_logit = torch.empty(num_rows, dtype=acc, device=zr.device)
    lse_neg = torch.empty(num_rows, dtype=acc, device=zr.device)
    for start in range(0, num_rows, block):
        stop = min(start + block, num_rows)
        ids = row_ids[start:stop]
        pos = positive_ids(ids, num_cols)[:, None]
        logits = (zr[start:stop].to(acc) @ cols.T).mul_(inv_temp)  # [B, C]
        pos_logit[start:stop] = logits.gather(1, pos).squeeze(1)
        logits.scatter_(1, ids[:, None], float("-inf")).scatter_(1, pos, float("-inf"))
        lse_neg[start:stop] = torch.logsumexp(logits, dim=1)
    torch.logaddexp(lse_neg, pos_logit, out=lse)
    return lse, pos_logit, lse_neg


def loss_terms(lse_neg: Tensor, pos_logit: Tensor) -> Tensor:
    """loss_i = softplus(lse_neg_i - pos_logit_i): lse_i - pos_logit_i without the cancellation (to
    the loss's own relative precision when P_i,pos -> 1). Shapes: [M] -> [M]."""
    return torch.nn.functional.softplus(lse_neg - pos_logit)


def negative_mass(lse_c: Tensor, lse_neg_c: Tensor) -> Tensor:
    """Q_c = 1 - P_c,pos(c) = exp(lse_neg_c - lse_c), to relative precision ~ulp(lse). [C] -> [C]."""
    return torch.exp(lse_neg_c - lse_c)


def backward_rows(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    lse_neg_c: Tensor,
    g_c: Tensor,
    inv_temp: float,
    block: int | None = None,
) -> Tensor:
    """Gradient of sum_j g_j loss_j with respect to the normalized rows zr.

    Args:
        zr, zc, row_ids, inv_temp: as in forward_rows.
        lse_c: [C] log-sum-exp of every global row (from forward_rows over all rows).
        lse_neg_c: [C] its negatives-only log-sum-exp (forward_rows' third output).
        g_c: [C] upstream gradient of every global row's loss.
        block: rows per block; chosen from BLOCK_BUDGET_BYTES when None.

    Returns:
        [M, D] gradient in the accumulation dtype (fp32, or fp64 for fp64 inputs).
    """
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc)
    lse_c, g_c = lse_c.to(acc), g_c.to(acc)
    # The positive column's weight is -(q_i + q_pos) (module docstring).
    q_c = g_c * negative_mass(lse_c, lse_neg_c.to(acc))
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
        weights.scatter_(1, pos[:, None], -(q_c[ids] + q_c[pos])[:, None])
        grad[start:stop] = (weights @ cols).mul_(inv_temp)
    return grad
