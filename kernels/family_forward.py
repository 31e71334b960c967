"""Loss-family forward: per-anchor log-sum-exp over the denominator set and mean positive logit,
streaming tiles of zr·zcᵀ (and zr·qᵀ for a queue). The Triton form of fastclr/ops/family.py's
family_forward_rows (its docstring has the notation).

For anchor i (label l_i; its own column r = row_ids[i] when the rows are columns too, HAS_SELF):
    s_ik  = inv_temp · <zr_i, zc_k>            k < C     (and inv_temp · <zr_i, q_k>, k < K)
    P(i)  = {k < C : col_label_k == l_i, k != r}
    N(i)  = {k < C : k != r} ∪ queue             (DECOUPLED: minus P(i))
    lse_i = log Σ_{k in N(i)} exp(s_ik),  pos_i = (1/|P(i)|) Σ_{k in P(i)} s_ik (0 if P(i) is empty).
The counts |P(i)| come in (COUNT_ptr): they depend on the labels only, and the launcher gets them by
sorting (fastclr/ops/family_triton.py positive_counts). Counting them here cost ~10 SASS instructions
per score element (a per-tile integer reduction across the warps), a third of the loop.

Each program owns BLOCK_M anchors and walks the C columns, then the K queue rows, in BLOCK_N tiles
with the online log-sum-exp state (m_i, l_i) in base 2 (logits scaled by inv_temp·log2 e, one exp2
per element); the positive sum is accumulated from the same fp32 dot products, so the queue pass
carries no label work. An anchor whose N(i) is empty gets lse = -inf (as the spec's logsumexp).
Memory: the outputs only (two fp32 per anchor); nothing of C x C is formed.

Products accumulate in fp32 (tl.dot); fp32 operands use DOT_PRECISION. Single-D / chunked-D as in
kernels/nt_xent_forward.py (kernels/tiles.py score_tile). Offsets are int64.
"""

import triton
import triton.language as tl

from fastclr.kernels import family_configs
from fastclr.kernels.tiles import family_masks, load_tile, online_lse, score_tile

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.autotune(
    configs=family_configs.forward_configs(),
    key=["M", "C", "K", "D"],
    prune_configs_by={"early_config_prune": family_configs.prune_forward},
)
@triton.heuristics(
    {
        "EVEN_N": lambda args: args["C"] % args["BLOCK_N"] == 0,
        "EVEN_D": lambda args: args["D"] % args["BLOCK_D"] == 0,
    }
)
@triton.jit
def family_forward_kernel(
    ZR_ptr,
    ZC_ptr,
    Q_ptr,
    ROW_LABELS_ptr,
    COL_LABELS_ptr,
    ROW_IDS_ptr,
    COUNT_ptr,
    LSE_ptr,
    POS_ptr,
    M,
    C,
    K,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    stride_qn,
    stride_qd,
    inv_temp,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    HAS_SELF: tl.constexpr,
    HAS_QUEUE: tl.constexpr,
    DECOUPLED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_labels = tl.load(ROW_LABELS_ptr + offs_m, mask=row_mask, other=0)
    # Without a self column row_ids is unused.
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0) if HAS_SELF else offs_m
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    scale = inv_temp * LOG2E  # logits in base 2: exp(s) = exp2(s · log2 e)

    if SINGLE_D:
        zr = load_tile(
            ZR_ptr, offs_m, row_mask, offs_d, D, stride_zrm, stride_zrd, True, not EVEN_D
        )
    else:
        zr = tl.zeros([BLOCK_M, BLOCK_D], dtype=ZR_ptr.dtype.element_ty)  # unused: chunks reloaded

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    pos_dot = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, C, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = offs_n < C
        dots, _ = score_tile(
            zr, ZR_ptr, ZC_ptr, offs_m, row_mask, offs_n, col_mask, offs_d, offs_d, D,
            stride_zrm, stride_zrd, stride_zcn, stride_zcd,
            BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, not EVEN_N, not EVEN_D, DOT_PRECISION,
        )  # fmt: skip
        if EVEN_N:
            col_labels = tl.load(COL_LABELS_ptr + offs_n)
        else:
            col_labels = tl.load(COL_LABELS_ptr + offs_n, mask=col_mask, other=0)
        positive, keep = family_masks(
            row_labels, row_ids, col_labels, start_n, col_mask, BLOCK_N, HAS_SELF, DECOUPLED,
            not EVEN_N,
        )  # fmt: skip
        pos_dot += tl.sum(tl.where(positive, dots, 0.0), 1)
        m_i, l_i = online_lse(m_i, l_i, tl.where(keep, dots * scale, float("-inf")))
    if HAS_QUEUE:
        # Queue rows: negatives of every anchor, no labels, no self column.
        for start_k in range(0, K, BLOCK_N):
            offs_k = start_k + tl.arange(0, BLOCK_N).to(tl.int64)
            queue_mask = offs_k < K
            dots, _ = score_tile(
                zr, ZR_ptr, Q_ptr, offs_m, row_mask, offs_k, queue_mask, offs_d, offs_d, D,
                stride_zrm, stride_zrd, stride_qn, stride_qd,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, True, not EVEN_D, DOT_PRECISION,
            )  # fmt: skip
            s2 = tl.where(queue_mask[None, :], dots * scale, float("-inf"))
            m_i, l_i = online_lse(m_i, l_i, s2)

    lse = (m_i + tl.log2(l_i)) * LN2
    count = tl.load(COUNT_ptr + offs_m, mask=row_mask, other=1)
    pos = pos_dot * inv_temp / tl.maximum(count, 1).to(tl.float32)
    tl.store(LSE_ptr + offs_m, lse, mask=row_mask)
    tl.store(POS_ptr + offs_m, pos, mask=row_mask)
