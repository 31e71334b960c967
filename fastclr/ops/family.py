"""Chunked PyTorch primitives of the contrastive loss family: the executable spec of SupCon,
multi-view SimCLR, NT-Xent with a queue of negatives, decoupled NT-Xent (DCL) and the two-tower CLIP
loss. NT-Xent (fastclr/ops/chunked.py) is the special case: one positive per row, no queue.

Notation. Anchor rows a_i (i < M) against columns b_k (k < C) and optional queue rows q_k (k < K,
negatives only, never anchors, no gradient); c the logit scale (1/tau, or CLIP's logit_scale):
    s_ik   = c <a_i, b_k>                       (and c <a_i, q_k> for the queue columns)
    P(i)   = {k : label_k == label_i, k != self(i)}        positives; |P(i)| = cnt_i
    N(i)   = every column and queue row except self(i)      (decoupled: also except P(i))
    lse_i  = log sum_{k in N(i)} exp(s_ik)
    pos_i  = (1/cnt_i) sum_{k in P(i)} s_ik                (0 when cnt_i = 0)
self(i) is the anchor's own column (row_ids[i]) when the rows are columns too (SupCon, NT-Xent), none
for two towers (CLIP). Every member's per-row loss is built from (lse_i, pos_i) in plain autograd:
SupCon/NT-Xent lse_i - pos_i, DCL lse_i - w_i pos_i, CLIP the same over both towers' rows.

Backward. With upstream gradients u_i = dL/dlse_i and v_i = dL/dpos_i, row i's logit gradient is

    G_ik = u_i exp(s_ik - lse_i) [k in N(i)] + (v_i / cnt_i) [k in P(i)]

and dL/da_i = c sum_k G_ik b_k (row role: the rows' own softmax, queue included). When the columns are
anchors too (the rows of one tower, or the other tower's rows in CLIP), column k is also an anchor
with its own lse_k, u_k, v_k, cnt_k, and b_k's gradient from row i is c G_ki^col a_i; a row-parallel
pass gathers it by symmetry of the masks ([k in N(i)] == [i in N(k)], same for P):

    dL/da_i += c sum_k (u_k exp(s_ik - lse_k) [k in N(i)] + (v_k / cnt_k) [k in P(i)]) b_k

The scale's gradient is dL/dc = (1/c) sum_{i,k} G_ik s_ik over the row roles only (each (anchor,
column) pair once): one extra reduction of tiles the backward holds anyway.

Memory: the rows and columns in the accumulation dtype plus a few [block, C + K] fp32 tiles, never
C x C. Per-row inputs a kernel needs beyond NT-Xent's: a label (int64), the positive count, and in
backward u, v of the row and of every column; per column a label; the queue as extra columns with
no label, no self mask and no column role.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from fastclr.ops.chunked import BLOCK_BUDGET_BYTES, accumulate_dtype


@dataclass(frozen=True)
class AnchorStats:
    """What backward needs of a set of anchors (all [n] in the accumulation dtype): their lse, the
    upstream gradients u = dL/dlse and v = dL/dpos, and the positive counts."""

    lse: Tensor
    grad_lse: Tensor
    grad_pos: Tensor
    count: Tensor


def family_rows_per_block(num_cols: int) -> int:
    """Rows of a [rows, num_cols] fp32 tile that fit eight times in BLOCK_BUDGET_BYTES (at least 1):
    the backward holds up to about eight [block, C + K] fp32 tiles and masks at once (measured by
    tests/test_sup_con_memory.py)."""
    return max(1, BLOCK_BUDGET_BYTES // (8 * 4 * max(num_cols, 1)))


def _tile_masks(
    row_labels: Tensor, col_labels: Tensor, ids: Tensor | None, num_queue: int
) -> tuple[Tensor, Tensor | None]:
    """Positive mask [B, C + K] (queue columns False) and the self index [B, 1] (or None)."""
    positive = row_labels[:, None] == col_labels[None, :]
    if num_queue:
        positive = torch.cat([positive, positive.new_zeros(positive.shape[0], num_queue)], dim=1)
    self_index = None
    if ids is not None:
        self_index = ids[:, None]
        positive.scatter_(1, self_index, False)
    return positive, self_index


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
    block: int | None = None,
    column_stats: bool = False,
) -> tuple[Tensor, ...]:
    """Per-row lse, mean positive logit and positive count (module docstring).

    Args:
        zr: [M, D] anchors; zc: [C, D] columns; queue: [K, D] negative-only columns or None; all
            the same dtype and device (already normalized where the member normalizes).
        row_labels: [M] int64; col_labels: [C] int64: positives share a label.
        inv_temp: the logit scale c (1/tau).
        row_ids: [M] int64, zr[i] == zc[row_ids[i]] (self masked); None for two towers.
        decoupled: leave the positives out of the denominator (DCL).
        block: rows per block; from BLOCK_BUDGET_BYTES when None.
        column_stats: two towers only (no row_ids, no queue): also the columns' own stats as
            anchors against the rows, from the same tiles (column log-sum-exp merged over row
            blocks with logaddexp), so one pass serves both towers.

    Returns:
        lse [M], pos [M] in the accumulation dtype, count [M] int64; with column_stats also the
        columns' lse [C], pos [C], count [C].
    """
    if column_stats and (row_ids is not None or queue is not None):
        raise ValueError("column_stats is for two towers: no row_ids, no queue")
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc) if queue is None else torch.cat([zc, queue]).to(acc)
    num_queue = 0 if queue is None else queue.shape[0]
    num_rows = zr.shape[0]
    block = block or family_rows_per_block(cols.shape[0])
    lse = torch.empty(num_rows, dtype=acc, device=zr.device)
    pos = torch.empty(num_rows, dtype=acc, device=zr.device)
    count = torch.empty(num_rows, dtype=torch.int64, device=zr.device)
    col_lse = torch.full((zc.shape[0],), float("-inf"), dtype=acc, device=zr.device)
    col_pos_sum = torch.zeros(zc.shape[0], dtype=acc, device=zr.device)
    col_count = torch.zeros(zc.shape[0], dtype=torch.int64, device=zr.device)
    for start in range(0, num_rows, block):
        stop = min(start + block, num_rows)
        ids = None if row_ids is None else row_ids[start:stop]
        positive, self_index = _tile_masks(row_labels[start:stop], col_labels, ids, num_queue)
        logits = (zr[start:stop].to(acc) @ cols.T).mul_(inv_temp)  # [B, C + K]
        count[start:stop] = positive.sum(1)
        positive_logits = torch.where(positive, logits, 0.0)
        pos[start:stop] = positive_logits.sum(1) / count[start:stop].clamp(min=1)
        if column_stats:
            col_count += positive.sum(0)
            col_pos_sum += positive_logits.sum(0)
        if self_index is not None:
            logits.scatter_(1, self_index, float("-inf"))
        if decoupled:
            logits.masked_fill_(positive, float("-inf"))
        lse[start:stop] = torch.logsumexp(logits, dim=1)
        if column_stats:
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(logits, dim=0))
    if column_stats:
        return lse, pos, count, col_lse, col_pos_sum / col_count.clamp(min=1), col_count
    return lse, pos, count


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
    block: int | None = None,
    column_grad: bool = False,
    unit_rows: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradient of L with respect to the anchors zr, sum_{i,k} G_ik s_ik, and (two towers) the
    columns' gradient.

    Args:
        zr, zc, row_labels, col_labels, inv_temp, row_ids, queue, decoupled, block: as in
            family_forward_rows.
        rows: the anchors' stats [M]. columns: the columns' stats [C] when the columns are anchors
            too (their column role adds to zr's gradient), None when they are not.
        column_grad: two towers only (columns given, no row_ids, no queue): also return dL/dzc
            from the same tiles, c sum_i (G^rows_ik + G^cols_ik) zr_i accumulated over row blocks,
            so one pass serves both towers; the scalar then covers both roles.
        unit_rows: the caller's promise that zr, zc and the queue are L2-normalized (|s| <= c);
            a fused backend shares one exponential between the roles with it. The spec computes
            each role's exponential exactly and needs no bound, so it ignores the flag.

    Returns:
        grad [M, D], the scalar sum_{i,k} G_ik s_ik over the row roles (and the column roles with
        column_grad), and dL/dzc [C, D] or None; all in the accumulation dtype.
    """
    if column_grad and (columns is None or row_ids is not None or queue is not None):
        raise ValueError("column_grad is for two towers: columns' stats, no row_ids, no queue")
    acc = accumulate_dtype(zc.dtype)
    cols = zc.to(acc) if queue is None else torch.cat([zc, queue]).to(acc)
    num_cols, num_queue = zc.shape[0], 0 if queue is None else queue.shape[0]
    num_rows = zr.shape[0]
    block = block or family_rows_per_block(cols.shape[0])
    grad = torch.empty(num_rows, zc.shape[1], dtype=acc, device=zr.device)
    col_grad = (
        torch.zeros(num_cols, zc.shape[1], dtype=acc, device=zr.device) if column_grad else None
    )
    scale_dot = torch.zeros((), dtype=acc, device=zr.device)
    row_pos_coef = rows.grad_pos / rows.count.clamp(min=1)
    if columns is not None:
        col_pos_coef = columns.grad_pos / columns.count.clamp(min=1)
    for start in range(0, num_rows, block):
        stop = min(start + block, num_rows)
        ids = None if row_ids is None else row_ids[start:stop]
        positive, self_index = _tile_masks(row_labels[start:stop], col_labels, ids, num_queue)
        excluded = positive.clone() if decoupled else torch.zeros_like(positive)
        if self_index is not None:
            excluded.scatter_(1, self_index, True)
        logits = (zr[start:stop].to(acc) @ cols.T).mul_(inv_temp)  # [B, C + K]
        # Row role: the anchors' own softmax (queue included) and positive weights.
        weights = (logits - rows.lse[start:stop, None]).exp_()
        weights.mul_(rows.grad_lse[start:stop, None]).masked_fill_(excluded, 0.0)
        weights += positive * row_pos_coef[start:stop, None]
        scale_dot += (weights * logits).sum()
        if columns is not None:
            # Column role: column k's own softmax at this row, over the C anchor columns only.
            col_logits = logits[:, :num_cols]
            col_weights = (col_logits - columns.lse[None, :]).exp_().mul_(columns.grad_lse[None, :])
            col_weights.masked_fill_(excluded[:, :num_cols], 0.0)
            col_weights += positive[:, :num_cols] * col_pos_coef[None, :]
            weights[:, :num_cols] += col_weights
            if column_grad:
                scale_dot += (col_weights * col_logits).sum()
                col_grad += (weights.T @ zr[start:stop].to(acc)).mul_(inv_temp)
        grad[start:stop] = (weights @ cols).mul_(inv_temp)
    return grad, scale_dot, col_grad
