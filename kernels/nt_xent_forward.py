"""NT-Xent forward: per-row negatives-only log-sum-exp and positive logit, streaming tiles of zr·zcᵀ.

For each row i of zr (global index r = row_ids[i] among the C rows of zc, pos(r) = (r + C/2) mod C):
    s_ik      = inv_temp · <zr_i, zc_k>
    pos_logit = inv_temp · <zr_i, zc_pos(r)>
    lse_neg_i = log Σ_{k≠r,pos(r)} exp(s_ik)                  (the negatives only)
The launcher adds the positive, lse_i = logaddexp(lse_neg_i, pos_logit_i): the loss
softplus(lse_neg − pos_logit) and the backward's negative mass exp(lse_neg − lse) then keep their
relative precision when P(pos) → 1 (fastclr/ops/chunked.py says why).

Each program owns BLOCK_M rows and its share of the C columns (the launcher may split every row
block's column tiles over several programs to fill the GPU; each writes a partial lse_neg, merged by
the launcher), walked in BLOCK_N tiles in base 2: the logits are scaled by inv_temp·log2(e) so the
exponential is one exp2. The shift comes from STATIC_SHIFT, chosen per launch from inv_temp:
- static (inv_temp <= 30): unit rows give |s_ik| <= inv_temp, so lse = inv_temp + log Σ exp(s_ik −
  inv_temp): one FFMA, one EX2 and one add per element. Every term is >= exp(−2·inv_temp) >= e^-60,
  inside fp32's normal range, so none that matters underflows;
- online (smaller temperatures, where exp(−2·inv_temp) could underflow fp32): the running max
  (m_i, l_i) of flash-attention.
The self and positive columns and columns past C are masked with -inf. With SPLIT_MASKS (chosen per
GPU, see kernels/configs.py split_masks) only the tiles that hold them carry the masks
(kernels/nt_xent_tiles.py: the other tiles run in a loop without any); otherwise every tile does.
The positive logit is a separate fp32 dot product of each row with its gathered positive row after
the loop (first split only). Memory: the outputs only; nothing of C x C is ever formed.

Products accumulate in fp32 (tl.dot); fp32 operands use DOT_PRECISION ("tf32" or "tf32x3"). When D fits
in one BLOCK_D (SINGLE_D) the row tile is loaded once; otherwise every column tile loops over D in
BLOCK_D chunks. Offsets are int64, so C·D beyond 2^31 elements is safe.
"""

import triton
import triton.language as tl

from fastclr.kernels import configs
from fastclr.kernels.nt_xent_tiles import (
    chunked_dots,
    load_column_tile,
    mask_windows,
    plain_tile_count,
    plain_tile_start,
    split_range,
    window_tile_start,
)

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _softmax_tile(
    zr,
    ZR_ptr,
    ZC_ptr,
    offs_m,
    row_mask,
    row_ids,
    pos_ids,
    offs_d,
    start_n,
    m_i,
    l_i,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    STATIC_SHIFT: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Update of the softmax state (m_i, l_i) with the column tile at start_n (with STATIC_SHIFT m_i
    stays the static shift). MASKED: the tile may hold a self or positive column (and, unless EVEN_N,
    columns past C), compared in int32 relative to start_n."""
    if SINGLE_D:
        zc = load_column_tile(
            ZC_ptr, start_n, offs_d, C, D, stride_zcn, stride_zcd, BLOCK_N, EVEN_N, EVEN_D
        )
        dots = tl.dot(zr, tl.trans(zc), input_precision=DOT_PRECISION)
    else:
        dots = chunked_dots(
            ZR_ptr, ZC_ptr, offs_m, row_mask, start_n, offs_d, C, D,
            stride_zrm, stride_zrd, stride_zcn, stride_zcd,
            BLOCK_M, BLOCK_N, BLOCK_D, EVEN_N, DOT_PRECISION,
        )  # fmt: skip
    s = dots * scale
    if MASKED:
        cols = tl.arange(0, BLOCK_N)
        keep = (cols[None, :] != (row_ids - start_n).to(tl.int32)[:, None]) & (
            cols[None, :] != (pos_ids - start_n).to(tl.int32)[:, None]
        )
        if not EVEN_N:
            keep = keep & (cols < C - start_n)[None, :]
        s = tl.where(keep, s, float("-inf"))
    if STATIC_SHIFT:
        return m_i, l_i + tl.sum(tl.exp2(s - m_i[:, None]), 1)
    # A row may have seen no finite entry yet (C = 2 has no negatives at all; a split may start at
    # a window tile of only masked columns): the shift is then 0, so exp2(-inf - -inf) = NaN never
    # happens and l_i stays 0.
    m_new = tl.maximum(m_i, tl.max(s, 1))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - shift[:, None])
    l_i = l_i * tl.exp2(m_i - shift) + tl.sum(p, 1)
    return m_new, l_i


@triton.autotune(
    configs=configs.forward_configs(),
    key=["M", "C", "D", "STATIC_SHIFT", "SPLIT_MASKS"],
    prune_configs_by={"early_config_prune": configs.prune_forward},
)
@triton.heuristics(
    {
        "EVEN_N": lambda args: args["C"] % args["BLOCK_N"] == 0,
        "EVEN_D": lambda args: args["D"] % args["BLOCK_D"] == 0,
    }
)
@triton.jit
def nt_xent_forward_kernel(
    ZR_ptr,
    ZC_ptr,
    ROW_IDS_ptr,
    LSE_NEG_ptr,
    POS_LOGIT_ptr,
    M,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    inv_temp,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    STATIC_SHIFT: tl.constexpr,
    SPLIT_MASKS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)  # this program's share of the column tiles
    splits = tl.num_programs(1)
    offs_m = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0)
    pos_ids = (row_ids + C // 2) % C
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    scale = inv_temp * LOG2E  # logits in base 2: exp(s) = exp2(s · log2 e)

    if SINGLE_D:
        zr_ptrs = ZR_ptr + offs_m[:, None] * stride_zrm + offs_d[None, :] * stride_zrd
        if EVEN_D:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None], other=0.0)
        else:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    else:
        zr = None  # chunked D: the tiles reload the rows chunk by chunk

    if STATIC_SHIFT:
        m_i = tl.full([BLOCK_M], 0.0, dtype=tl.float32) + scale  # the largest possible logit
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    if SPLIT_MASKS:
        lo1, hi1, lo2, hi2 = mask_windows(row_ids, row_mask, C, BLOCK_N, EVEN_N, True)
        j_lo, j_hi = split_range(plain_tile_count(C, lo1, hi1, lo2, hi2, BLOCK_N), split, splits)
        for j in range(j_lo, j_hi):
            m_i, l_i = _softmax_tile(
                zr, ZR_ptr, ZC_ptr, offs_m, row_mask, row_ids, pos_ids, offs_d,
                plain_tile_start(j, lo1, hi1, lo2, hi2, BLOCK_N), m_i, l_i, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, True, EVEN_D, STATIC_SHIFT, False,
                DOT_PRECISION,
            )  # fmt: skip
        k_lo, k_hi = split_range((hi1 - lo1) + (hi2 - lo2), split, splits)
        for k in range(k_lo, k_hi):
            m_i, l_i = _softmax_tile(
                zr, ZR_ptr, ZC_ptr, offs_m, row_mask, row_ids, pos_ids, offs_d,
                window_tile_start(k, lo1, hi1, lo2, BLOCK_N), m_i, l_i, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, EVEN_N, EVEN_D, STATIC_SHIFT, True,
                DOT_PRECISION,
            )  # fmt: skip
    else:
        # One loop, every tile masked: fewer live values where the split schedule spills.
        t_lo, t_hi = split_range(tl.cdiv(C, BLOCK_N), split, splits)
        for start_n in range(t_lo * BLOCK_N, t_hi * BLOCK_N, BLOCK_N):
            m_i, l_i = _softmax_tile(
                zr, ZR_ptr, ZC_ptr, offs_m, row_mask, row_ids, pos_ids, offs_d,
                start_n, m_i, l_i, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, EVEN_N, EVEN_D, STATIC_SHIFT, True,
                DOT_PRECISION,
            )  # fmt: skip
    # -inf when this split has no negative for a row (C = 2, or no tile: l_i = 0).
    lse_neg = (m_i + tl.log2(l_i)) * LN2

    # Partial log-sum-exp of this split's columns, [splits, M]: the launcher merges the splits.
    tl.store(LSE_NEG_ptr + split.to(tl.int64) * M + offs_m, lse_neg, mask=row_mask)
    if split == 0:
        # Positive logit: fp32 dot of each row with its positive, gathered by global index.
        pos_dot = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start_d in range(0, D, BLOCK_D):
            cols_d = start_d + offs_d
            mask = row_mask[:, None] & (cols_d < D)[None, :]
            zr_d = tl.load(
                ZR_ptr + offs_m[:, None] * stride_zrm + cols_d[None, :] * stride_zrd,
                mask=mask,
                other=0.0,
            )
            zp_d = tl.load(
                ZC_ptr + pos_ids[:, None] * stride_zcn + cols_d[None, :] * stride_zcd,
                mask=mask,
                other=0.0,
            )
            pos_dot += tl.sum(zr_d.to(tl.float32) * zp_d.to(tl.float32), 1)

        tl.store(POS_LOGIT_ptr + offs_m, pos_dot * inv_temp, mask=row_mask)
