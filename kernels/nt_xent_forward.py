"""NT-Xent forward: per-row masked log-sum-exps and positive logit, streaming tiles of zr·zcᵀ.

For each row i of zr (global index r = row_ids[i] among the C rows of zc, pos(r) = (r + C/2) mod C):
    s_ik      = inv_temp · <zr_i, zc_k>
    pos_logit = inv_temp · <zr_i, zc_pos(r)>
    lse_neg_i = log Σ_{k≠r,pos(r)} exp(s_ik)                  (the negatives only)
    lse_i     = log Σ_{k≠r} exp(s_ik) = logaddexp(lse_neg_i, pos_logit_i)

Each program owns BLOCK_M rows and walks the C columns in BLOCK_N tiles with the online softmax state
(m_i, l_i) of flash-attention, in base 2: the logits are scaled by inv_temp·log2(e) so the exponential
is one exp2. The self and positive columns and columns past C are masked with -inf. The positive
logit is a separate fp32 dot product of each row with its gathered positive row after the loop, and
joins lse only there: the loss softplus(lse_neg − pos_logit) and the backward's negative mass
exp(lse_neg − lse) then keep their relative precision when P(pos) → 1 (fastclr/ops/chunked.py says
why). Memory: the outputs only (3·M fp32); nothing of C x C is ever formed.

Products accumulate in fp32 (tl.dot); fp32 operands use DOT_PRECISION ("tf32" or "tf32x3"). When D fits
in one BLOCK_D (SINGLE_D) the row tile is loaded once; otherwise every column tile loops over D in
BLOCK_D chunks. Offsets are int64, so C·D beyond 2^31 elements is safe.
"""

import triton
import triton.language as tl

from fastclr.kernels import configs

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.autotune(
    configs=configs.forward_configs(),
    key=["M", "C", "D"],
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
    LSE_ptr,
    POS_LOGIT_ptr,
    LSE_NEG_ptr,
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
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0)
    pos_ids = (row_ids + C // 2) % C
    # The masks compare 32-bit column indices relative to the tile (C < 2^31, checked by the
    # launcher) with the tile's constant arange: one ISETP each in the hot loop, where an int64
    # compare of global indices takes two and more registers.
    self_col = row_ids.to(tl.int32)
    pos_col = pos_ids.to(tl.int32)
    tile_cols = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    scale = inv_temp * LOG2E  # logits in base 2: exp(s) = exp2(s · log2 e)

    if SINGLE_D:
        zr_ptrs = ZR_ptr + offs_m[:, None] * stride_zrm + offs_d[None, :] * stride_zrd
        if EVEN_D:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None], other=0.0)
        else:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None] & (offs_d[None, :] < D), other=0.0)

    # A finite start: with C = 2 every column is masked (no negatives) and exp2(m_i − m_new) must not
    # see -inf − -inf; every finite logit (|s| ≤ inv_temp·log2 e) exceeds it.
    m_i = tl.full([BLOCK_M], -1e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, C, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = offs_n < C
        if SINGLE_D:
            zc_ptrs = ZC_ptr + offs_n[:, None] * stride_zcn + offs_d[None, :] * stride_zcd
            if EVEN_N & EVEN_D:
                zc = tl.load(zc_ptrs)
            else:
                zc = tl.load(zc_ptrs, mask=col_mask[:, None] & (offs_d[None, :] < D), other=0.0)
            dots = tl.dot(zr, tl.trans(zc), input_precision=DOT_PRECISION)
        else:
            dots = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for start_d in range(0, D, BLOCK_D):
                cols_d = start_d + offs_d  # int64: no overflow for any stride
                d_mask = cols_d < D
                zr = tl.load(
                    ZR_ptr + offs_m[:, None] * stride_zrm + cols_d[None, :] * stride_zrd,
                    mask=row_mask[:, None] & d_mask[None, :],
                    other=0.0,
                )
                zc = tl.load(
                    ZC_ptr + offs_n[:, None] * stride_zcn + cols_d[None, :] * stride_zcd,
                    mask=col_mask[:, None] & d_mask[None, :],
                    other=0.0,
                )
                dots = tl.dot(zr, tl.trans(zc), dots, input_precision=DOT_PRECISION)
        s = dots * scale
        self_rel = self_col - start_n
        pos_rel = pos_col - start_n
        keep = (tile_cols[None, :] != self_rel[:, None]) & (tile_cols[None, :] != pos_rel[:, None])
        if not EVEN_N:
            keep = keep & col_mask[None, :]
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(p, 1)
        m_i = m_new
    lse_neg = (m_i + tl.log2(l_i)) * LN2  # -inf when C = 2 (l_i = 0)

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

    pos_logit = pos_dot * inv_temp
    top = tl.maximum(lse_neg, pos_logit)
    lse = top + tl.log(tl.exp(lse_neg - top) + tl.exp(pos_logit - top))
    tl.store(LSE_ptr + offs_m, lse, mask=row_mask)
    tl.store(POS_LOGIT_ptr + offs_m, pos_logit, mask=row_mask)
    tl.store(LSE_NEG_ptr + offs_m, lse_neg, mask=row_mask)
