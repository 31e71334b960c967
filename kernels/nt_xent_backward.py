"""NT-Xent backward: gradient of Σ_j g_j loss_j with respect to the normalized rows, one row-parallel
pass that recomputes the similarity tiles from the saved log-sum-exp.

For row i of zr with global index r = row_ids[i] among the C rows of zc, pos = (r + C/2) mod C,
s_ik = inv_temp · <zr_i, zc_k>, and P_ik = exp(s_ik − lse_r) (S is symmetric, so P_ki =
exp(s_ik − lse_k)):
    w_ik    = g_r · exp(s_ik − lse_r) + g_k · exp(s_ik − lse_k)        (k ≠ r, pos)
    w_ir    = 0
    w_i,pos = −(q_r + q_pos),   q_k = g_k · Q_k = g_k · exp(lse_neg_k − lse_k)   (Q_ptr, [C])
    grad_i  = inv_temp · Σ_k w_ik zc_k

Each program owns BLOCK_M rows and one BLOCK_D-wide slice of the feature dimension (the whole of D on the
single-D fast path) and walks the C columns in BLOCK_N tiles: s = zr·zc_tileᵀ, then w, then
acc += w·zc_tile into an fp32 [BLOCK_M, BLOCK_D] accumulator. The positive column's weight
g_r P_r,pos + g_pos P_pos,r − g_r − g_pos is −(q_r + q_pos), with Q = 1 − P(pos) the negatives' mass
from the forward's two log-sum-exps (the launcher computes the [C] vector q once): near convergence
P(pos) → 1, and the tile's own P − 1 would keep only an absolute error of ~ulp(lse) instead of Q's
relative one (fastclr/ops/chunked.py). The select replaces that column's weight, so the hot loop is
unchanged. No atomics; memory: the [M, D] fp32
output only.

Exponentials: with SHARED_EXP (chosen by the launcher for inv_temp ≤ 30) both terms of w share one
exp2, since |s_ik| ≤ inv_temp for unit rows:
    w_ik = exp(s_ik − inv_temp) · (b_r + b_k),  b_k = g_k exp(inv_temp − lse_k)
with inv_temp ≤ 30 every factor stays inside fp32 range (exp(±2·inv_temp) = e^±60, with room for
|g| up to ~1e12, e.g. AMP loss scaling). For bf16/fp32 the launcher computes the [C] vector b once
(COL_W_ptr), so the tile loop issues one MUFU.EX2 per element; fp16 (SCALE_WEIGHTS) computes b per
tile, 1.5 MUFU.EX2 per element: loading it there raised the register spills of sm_86/sm_89 fp16
configs. Otherwise two exp2 per element.

The second product runs in the operand dtype (tensor cores for fp16/bf16). fp16 cannot hold the weights
(they are ~g/C, far below fp16's smallest normal), so with SCALE_WEIGHTS each row's weights are
multiplied by 2^14 / (|g_r| + max_k |g_k|) — they are bounded by |g_r| + max|g| since 0 ≤ P ≤ 1 — and the
accumulator is divided back at the end.
"""

import triton
import triton.language as tl

from fastclr.kernels import configs

LOG2E = tl.constexpr(1.4426950408889634)
WEIGHT_RANGE = tl.constexpr(16384.0)  # fp16 weights are scaled into [-2^14, 2^14]
MIN_WEIGHT_BOUND = tl.constexpr(2.0**-86)  # caps the fp16 weight scale at 2^14 / 2^-86 = 2^100


@triton.autotune(
    configs=configs.backward_configs(),
    key=["M", "C", "D"],
    prune_configs_by={"early_config_prune": configs.prune_backward},
)
@triton.heuristics(
    {
        "EVEN_N": lambda args: args["C"] % args["BLOCK_N"] == 0,
        "EVEN_D": lambda args: args["D"] % args["BLOCK_D"] == 0,
    }
)
@triton.jit
def nt_xent_backward_kernel(
    ZR_ptr,
    ZC_ptr,
    ROW_IDS_ptr,
    LSE_ptr,
    G_ptr,
    Q_ptr,
    COL_W_ptr,
    G_MAX_ptr,
    GRAD_ptr,
    M,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    stride_gradm,
    stride_gradd,
    inv_temp,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
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
    offs_out = pid_d * BLOCK_D + offs_d  # the feature slice this program writes
    out_mask = offs_out < D
    scale = inv_temp * LOG2E  # logits in base 2

    lse_r = tl.load(LSE_ptr + row_ids) * LOG2E
    g_r = tl.load(G_ptr + row_ids)
    # The positive column's weight −(q_r + q_pos), q = g·Q from the launcher (module docstring).
    w_pos = -(tl.load(Q_ptr + row_ids) + tl.load(Q_ptr + pos_ids))
    if SHARED_EXP:
        b_r = g_r * tl.exp2(scale - lse_r)  # = COL_W[row_ids]
    if SCALE_WEIGHTS:
        # Rows past M get zero weights: their s = 0 may exceed lse_r, where w is not bounded.
        g_bound = tl.abs(g_r) + tl.load(G_MAX_ptr)
        scalable = row_mask & (g_bound > 0)
        # The scale is capped at 2^100 like the CUDA kernel's shift: WEIGHT_RANGE / g_bound overflows
        # fp32 for g_bound < ~4.8e-35, and an infinite scale makes the zero self weight 0·inf = NaN.
        g_bound = tl.maximum(g_bound, MIN_WEIGHT_BOUND)
        w_scale = tl.where(scalable, WEIGHT_RANGE / g_bound, 0.0)
        w_unscale = tl.where(scalable, g_bound / WEIGHT_RANGE, 0.0)

    if SINGLE_D:
        zr_ptrs = ZR_ptr + offs_m[:, None] * stride_zrm + offs_d[None, :] * stride_zrd
        if EVEN_D:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None], other=0.0)
        else:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None] & out_mask[None, :], other=0.0)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, C, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = offs_n < C
        # Columns past C load zero rows and get zero weight (their s = 0 may exceed lse_r, where the
        # shared exponential's bound on w does not hold).
        if SHARED_EXP and not SCALE_WEIGHTS:
            pass  # b_c is loaded next to its use (fewer registers held across the product)
        elif EVEN_N:
            lse_c = tl.load(LSE_ptr + offs_n) * LOG2E
            g_c = tl.load(G_ptr + offs_n)
        else:
            lse_c = tl.load(LSE_ptr + offs_n, mask=col_mask, other=0.0) * LOG2E
            g_c = tl.load(G_ptr + offs_n, mask=col_mask, other=0.0)
        if SINGLE_D:
            zc_ptrs = ZC_ptr + offs_n[:, None] * stride_zcn + offs_d[None, :] * stride_zcd
            if EVEN_N & EVEN_D:
                zc = tl.load(zc_ptrs)
            else:
                zc = tl.load(zc_ptrs, mask=col_mask[:, None] & out_mask[None, :], other=0.0)
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
                zc_d = tl.load(
                    ZC_ptr + offs_n[:, None] * stride_zcn + cols_d[None, :] * stride_zcd,
                    mask=col_mask[:, None] & d_mask[None, :],
                    other=0.0,
                )
                dots = tl.dot(zr, tl.trans(zc_d), dots, input_precision=DOT_PRECISION)
            zc = tl.load(
                ZC_ptr + offs_n[:, None] * stride_zcn + offs_out[None, :] * stride_zcd,
                mask=col_mask[:, None] & out_mask[None, :],
                other=0.0,
            )
        s = dots * scale
        if SHARED_EXP:
            if SCALE_WEIGHTS:
                b_c = g_c * tl.exp2(scale - lse_c)
            else:
                b_c = tl.load(COL_W_ptr + offs_n, mask=col_mask, other=0.0)
            w = tl.exp2(s - scale) * (b_r[:, None] + b_c[None, :])
        else:
            # s_ik <= lse of both rows except in the self column (zeroed below): clamping keeps
            # that column finite instead of overflowing exp2.
            p_row = tl.exp2(tl.minimum(s - lse_r[:, None], 0.0))
            p_col = tl.exp2(tl.minimum(s - lse_c[None, :], 0.0))
            w = g_r[:, None] * p_row + g_c[None, :] * p_col
        pos_rel = pos_col - start_n
        w = tl.where(tile_cols[None, :] == pos_rel[:, None], w_pos[:, None], w)
        drop = tile_cols[None, :] == (self_col - start_n)[:, None]
        if not EVEN_N:
            drop = drop | (offs_n[None, :] >= C)
        w = tl.where(drop, 0.0, w)
        if SCALE_WEIGHTS:
            w = w * w_scale[:, None]
        acc = tl.dot(w.to(zc.dtype), zc, acc, input_precision=DOT_PRECISION)

    if SCALE_WEIGHTS:
        acc = acc * w_unscale[:, None]
    grad_ptrs = GRAD_ptr + offs_m[:, None] * stride_gradm + offs_out[None, :] * stride_gradd
    tl.store(grad_ptrs, acc * inv_temp, mask=row_mask[:, None] & out_mask[None, :])
