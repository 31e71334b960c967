"""NT-Xent backward: gradient of Σ_j g_j loss_j with respect to the normalized rows, one row-parallel
pass that recomputes the similarity tiles from the saved log-sum-exp.

For row i of zr with global index r = row_ids[i] among the C rows of zc, pos = (r + C/2) mod C,
s_ik = inv_temp · <zr_i, zc_k>, and P_ik = exp(s_ik − lse_r) (S is symmetric, so P_ki =
exp(s_ik − lse_k)):
    w_ik    = g_r · exp(s_ik − lse_r) + g_k · exp(s_ik − lse_k)        (k ≠ r, pos)
    w_ir    = 0
    w_i,pos = −(q_r + q_pos),   q_k = g_k · Q_k = g_k · exp(lse_neg_k − lse_k)
    grad_i  = inv_temp · Σ_k w_ik zc_k

Each program owns BLOCK_M rows, one BLOCK_D-wide slice of the feature dimension (the whole of D on the
single-D fast path) and its share of the column tiles (the launcher may split them over several
programs to fill the GPU and sum their partial gradients), walked in BLOCK_N tiles: s = zr·zc_tileᵀ,
then w, then acc += w·zc_tile into an fp32 [BLOCK_M, BLOCK_D] accumulator. With SPLIT_MASKS the self
and positive columns are handled only in the tiles that hold them (kernels/nt_xent_tiles.py: the
other tiles run in a loop without masks). The positive column's weight
g_r P_r,pos + g_pos P_pos,r − g_r − g_pos is −(q_r + q_pos), with Q = 1 − P(pos) the negatives' mass
from the forward's two log-sum-exps ([C] vector q from the launcher): near convergence P(pos) → 1,
and the tile's own P − 1 would keep only an absolute error of ~ulp(lse) instead of Q's relative one
(fastclr/ops/chunked.py). The select replaces that column's weight. No atomics; memory: the [M, D]
fp32 output (times the column splits) only.

Exponentials: with SHARED_EXP (chosen by the launcher for inv_temp ≤ 30) both terms of w share one
exp2, since |s_ik| ≤ inv_temp for unit rows:
    w_ik = exp(s_ik − inv_temp) · (b_r + b_k),  b_k = g_k exp(inv_temp − lse_k)
with inv_temp ≤ 30 every factor stays inside fp32 range (exp(±2·inv_temp) = e^±60, with room for
|g| up to ~1e12, e.g. AMP loss scaling). The launcher computes the [C] vector b once (COL_W_ptr), so the
tile loop issues one MUFU.EX2 per element and loads one vector per column tile. Otherwise two exp2 per
element.

The second product runs in the operand dtype (tensor cores for fp16/bf16). fp16 cannot hold the weights
(they are ~g/C, far below fp16's smallest normal), so with SCALE_WEIGHTS each row's weights are
multiplied by 2^14 / (|g_r| + max_k |g_k|) — they are bounded by |g_r| + max|g| since 0 ≤ P ≤ 1 — and the
accumulator is divided back at the end.
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
WEIGHT_RANGE = tl.constexpr(16384.0)  # fp16 weights are scaled into [-2^14, 2^14]
MIN_WEIGHT_BOUND = tl.constexpr(2.0**-86)  # caps the fp16 weight scale at 2^14 / 2^-86 = 2^100


@triton.jit
def row_factors(
    LSE_ptr,
    G_ptr,
    POS_Q_ptr,
    G_MAX_ptr,
    row_ids,
    pos_ids,
    row_mask,
    scale,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
):
    """Per-row values of the weights: (lse_r in base 2, g_r, the positive column's weight
    −(q_r + q_pos), b_r, and the fp16 weight scale and its inverse; placeholders where unused)."""
    lse_r = tl.load(LSE_ptr + row_ids) * LOG2E
    g_r = tl.load(G_ptr + row_ids)
    w_pos = -(tl.load(POS_Q_ptr + row_ids) + tl.load(POS_Q_ptr + pos_ids))
    # Unused values are placeholders (a @triton.jit function cannot return None); the compiler drops them.
    b_r = g_r * tl.exp2(scale - lse_r) if SHARED_EXP else g_r  # = COL_W[row_ids] when loaded
    w_scale = g_r
    w_unscale = g_r
    if SCALE_WEIGHTS:
        # Rows past M get zero weights: their s = 0 may exceed lse_r, where w is not bounded.
        g_bound = tl.abs(g_r) + tl.load(G_MAX_ptr)
        scalable = row_mask & (g_bound > 0)
        # The scale is capped at 2^100 like the CUDA kernel's shift: WEIGHT_RANGE / g_bound overflows
        # fp32 for g_bound < ~4.8e-35, and an infinite scale makes the zero self weight 0·inf = NaN.
        g_bound = tl.maximum(g_bound, MIN_WEIGHT_BOUND)
        w_scale = tl.where(scalable, WEIGHT_RANGE / g_bound, 0.0)
        w_unscale = tl.where(scalable, g_bound / WEIGHT_RANGE, 0.0)

    return lse_r, g_r, w_pos, b_r, w_scale, w_unscale


@triton.jit
def column_factors(
    LSE_ptr,
    G_ptr,
    offs_n,
    C,
    EVEN_N: tl.constexpr,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
):
    """(lse_c in base 2, g_c) of the columns offs_n where the weights need them (placeholders where
    the launcher's per-column factor replaces them)."""
    # Columns past C load zero rows and get zero weight (their s = 0 may exceed lse_r, where the
    # shared exponential's bound on w does not hold).
    if SHARED_EXP and not SCALE_WEIGHTS:
        # b_c is loaded next to its use (fewer registers held across the product); placeholders.
        lse_c = 0.0
        g_c = 0.0
    elif EVEN_N:
        lse_c = tl.load(LSE_ptr + offs_n) * LOG2E
        g_c = tl.load(G_ptr + offs_n)
    else:
        lse_c = tl.load(LSE_ptr + offs_n, mask=offs_n < C, other=0.0) * LOG2E
        g_c = tl.load(G_ptr + offs_n, mask=offs_n < C, other=0.0)
    return lse_c, g_c


@triton.jit
def weight_tile(
    dots,
    offs_n,
    start_n,
    row_ids,
    pos_ids,
    COL_W_ptr,
    lse_c,
    g_c,
    b_r,
    lse_r,
    g_r,
    w_pos,
    w_scale,
    C,
    scale,
    BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
    MASKED: tl.constexpr,
):
    """fp32 [BLOCK_M, BLOCK_N] weights w_ik of the column tile at start_n (columns offs_n) from its
    products dots = <zr_i, zc_k> (module docstring); fp16 weights come scaled by w_scale. MASKED: the
    tile may hold a self or positive column (and, unless EVEN_N, columns past C), compared in int32
    relative to start_n."""
    s = dots * scale
    if SHARED_EXP:
        if SCALE_WEIGHTS:
            b_c = g_c * tl.exp2(scale - lse_c)
        elif EVEN_N:
            b_c = tl.load(COL_W_ptr + offs_n)
        else:
            b_c = tl.load(COL_W_ptr + offs_n, mask=offs_n < C, other=0.0)
        w = tl.exp2(s - scale) * (b_r[:, None] + b_c[None, :])
    else:
        # s_ik <= lse of both rows except in the self column (zeroed below): clamping keeps
        # that column finite instead of overflowing exp2.
        p_row = tl.exp2(tl.minimum(s - lse_r[:, None], 0.0))
        p_col = tl.exp2(tl.minimum(s - lse_c[None, :], 0.0))
        w = g_r[:, None] * p_row + g_c[None, :] * p_col
    if MASKED:
        cols = tl.arange(0, BLOCK_N)[None, :]
        is_pos = cols == (pos_ids - start_n).to(tl.int32)[:, None]
        w = tl.where(is_pos, w_pos[:, None], w)
        drop = cols == (row_ids - start_n).to(tl.int32)[:, None]
        if not EVEN_N:
            drop = drop | (cols >= C - start_n)
        w = tl.where(drop, 0.0, w)
    if SCALE_WEIGHTS:
        w = w * w_scale[:, None]
    return w


@triton.jit
def _gradient_tile(
    acc,
    zr,
    ZR_ptr,
    ZC_ptr,
    LSE_ptr,
    G_ptr,
    COL_W_ptr,
    offs_m,
    row_mask,
    row_ids,
    pos_ids,
    offs_d,
    offs_out,
    start_n,
    b_r,
    lse_r,
    g_r,
    w_pos,
    w_scale,
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
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """acc + w·zc for the column tile at start_n. MASKED: the tile may hold a self or positive column
    (and, unless EVEN_N, columns past C), compared in int32 relative to start_n."""
    offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)  # int64 for any start_n
    lse_c, g_c = column_factors(
        LSE_ptr, G_ptr, offs_n, C, EVEN_N, SHARED_EXP, SCALE_WEIGHTS
    )  # fmt: skip
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
        zc = load_column_tile(
            ZC_ptr, start_n, offs_out, C, D, stride_zcn, stride_zcd, BLOCK_N, EVEN_N, False
        )
    w = weight_tile(
        dots, offs_n, start_n, row_ids, pos_ids, COL_W_ptr, lse_c, g_c, b_r, lse_r, g_r,
        w_pos, w_scale, C, scale, BLOCK_N, EVEN_N, SHARED_EXP, SCALE_WEIGHTS, MASKED,
    )  # fmt: skip
    return tl.dot(w.to(zc.dtype), zc, acc, input_precision=DOT_PRECISION)


@triton.autotune(
    configs=configs.backward_configs(),
    key=["M", "C", "D", "SPLIT_MASKS"],
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
    COL_W_ptr,
    POS_Q_ptr,
    G_MAX_ptr,
    GRAD_ptr,
    M,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    stride_grads,
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
    SPLIT_MASKS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    split = tl.program_id(2)  # this program's share of the column tiles
    splits = tl.num_programs(2)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0)
    pos_ids = (row_ids + C // 2) % C
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    offs_out = pid_d * BLOCK_D + offs_d  # the feature slice this program writes
    out_mask = offs_out < D
    scale = inv_temp * LOG2E  # logits in base 2

    lse_r, g_r, w_pos, b_r, w_scale, w_unscale = row_factors(
        LSE_ptr, G_ptr, POS_Q_ptr, G_MAX_ptr, row_ids, pos_ids, row_mask, scale,
        SHARED_EXP, SCALE_WEIGHTS,
    )  # fmt: skip

    if SINGLE_D:
        zr_ptrs = ZR_ptr + offs_m[:, None] * stride_zrm + offs_d[None, :] * stride_zrd
        if EVEN_D:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None], other=0.0)
        else:
            zr = tl.load(zr_ptrs, mask=row_mask[:, None] & out_mask[None, :], other=0.0)
    else:
        zr = None  # chunked D: the tiles reload the rows chunk by chunk

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if SPLIT_MASKS:
        lo1, hi1, lo2, hi2 = mask_windows(row_ids, row_mask, C, BLOCK_N, EVEN_N, True)
        j_lo, j_hi = split_range(plain_tile_count(C, lo1, hi1, lo2, hi2, BLOCK_N), split, splits)
        for j in range(j_lo, j_hi):
            acc = _gradient_tile(
                acc, zr, ZR_ptr, ZC_ptr, LSE_ptr, G_ptr, COL_W_ptr, offs_m, row_mask, row_ids,
                pos_ids, offs_d, offs_out, plain_tile_start(j, lo1, hi1, lo2, hi2, BLOCK_N),
                b_r, lse_r, g_r, w_pos, w_scale, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, True, EVEN_D, SHARED_EXP, SCALE_WEIGHTS,
                False, DOT_PRECISION,
            )  # fmt: skip
        k_lo, k_hi = split_range((hi1 - lo1) + (hi2 - lo2), split, splits)
        for k in range(k_lo, k_hi):
            acc = _gradient_tile(
                acc, zr, ZR_ptr, ZC_ptr, LSE_ptr, G_ptr, COL_W_ptr, offs_m, row_mask, row_ids,
                pos_ids, offs_d, offs_out, window_tile_start(k, lo1, hi1, lo2, BLOCK_N),
                b_r, lse_r, g_r, w_pos, w_scale, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, EVEN_N, EVEN_D, SHARED_EXP, SCALE_WEIGHTS,
                True, DOT_PRECISION,
            )  # fmt: skip
    else:
        # One loop, every tile masked: fewer live values where the split schedule spills.
        t_lo, t_hi = split_range(tl.cdiv(C, BLOCK_N), split, splits)
        for start_n in range(t_lo * BLOCK_N, t_hi * BLOCK_N, BLOCK_N):
            acc = _gradient_tile(
                acc, zr, ZR_ptr, ZC_ptr, LSE_ptr, G_ptr, COL_W_ptr, offs_m, row_mask, row_ids,
                pos_ids, offs_d, offs_out, start_n,
                b_r, lse_r, g_r, w_pos, w_scale, C, D,
                stride_zrm, stride_zrd, stride_zcn, stride_zcd, scale,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, EVEN_N, EVEN_D, SHARED_EXP, SCALE_WEIGHTS,
                True, DOT_PRECISION,
            )  # fmt: skip

    if SCALE_WEIGHTS:
        acc = acc * w_unscale[:, None]
    # This split's partial gradient, [splits, M, D]: the launcher sums the splits.
    grad_ptrs = (
        GRAD_ptr
        + split.to(tl.int64) * stride_grads
        + offs_m[:, None] * stride_gradm
        + offs_out[None, :] * stride_gradd
    )
    tl.store(grad_ptrs, acc * inv_temp, mask=row_mask[:, None] & out_mask[None, :])
