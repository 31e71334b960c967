"""NT-Xent backward for large D: the weights w of a slab of rows, written out for one cuBLAS product.

The fused backward (kernels/nt_xent_backward.py) gives each program one BLOCK_D slice of the output,
so at D > 256 every slice recomputes the full score tile over all of D: (D / BLOCK_D + 1)·2·M·C·D
tensor flops, 66·M·C·D at D = 2048. Here the score tile is computed once: each program writes the
weights of one [BLOCK_M, BLOCK_N] tile (the backward's own `weight_tile`, every tile masked) for a
slab of rows, and the launcher multiplies the [rows, C] slab by zc with one matmul, 4·M·C·D flops in
all. A slab holds about D rows, so its weights take about as many elements as zc: memory stays
O(C·D).

W is stored in the operand dtype, as the fused kernel rounds it for its second product; fp16
weights carry the per-row scale of SCALE_WEIGHTS, undone by the launcher after the product.
"""

import triton
import triton.language as tl

from fastclr.kernels import configs
from fastclr.kernels.nt_xent_backward import column_factors, row_factors, weight_tile
from fastclr.kernels.nt_xent_tiles import chunked_dots

LOG2E = tl.constexpr(1.4426950408889634)


@triton.autotune(
    configs=configs.weights_configs(),
    key=["M", "C", "D"],
    prune_configs_by={"early_config_prune": configs.prune_weights},
)
@triton.heuristics({"EVEN_N": lambda args: args["C"] % args["BLOCK_N"] == 0})
@triton.jit
def nt_xent_weights_kernel(
    ZR_ptr,
    ZC_ptr,
    ROW_IDS_ptr,
    LSE_ptr,
    G_ptr,
    COL_W_ptr,
    POS_Q_ptr,
    G_MAX_ptr,
    W_ptr,
    W_UNSCALE_ptr,
    M,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    stride_wm,
    stride_wn,
    inv_temp,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0)
    pos_ids = (row_ids + C // 2) % C
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    scale = inv_temp * LOG2E  # logits in base 2
    lse_r, g_r, w_pos, b_r, w_scale, w_unscale = row_factors(
        LSE_ptr, G_ptr, POS_Q_ptr, G_MAX_ptr, row_ids, pos_ids, row_mask, scale,
        SHARED_EXP, SCALE_WEIGHTS,
    )  # fmt: skip

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
    lse_c, g_c = column_factors(LSE_ptr, G_ptr, offs_n, C, EVEN_N, SHARED_EXP, SCALE_WEIGHTS)
    dots = chunked_dots(
        ZR_ptr, ZC_ptr, offs_m, row_mask, start_n, offs_d, C, D,
        stride_zrm, stride_zrd, stride_zcn, stride_zcd,
        BLOCK_M, BLOCK_N, BLOCK_D, EVEN_N, DOT_PRECISION,
    )  # fmt: skip
    w = weight_tile(
        dots, offs_n, start_n, row_ids, pos_ids, COL_W_ptr, lse_c, g_c, b_r, lse_r, g_r,
        w_pos, w_scale, C, scale, BLOCK_N, EVEN_N, SHARED_EXP, SCALE_WEIGHTS, True,
    )  # fmt: skip
    w_ptrs = W_ptr + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn
    tl.store(w_ptrs, w.to(W_ptr.dtype.element_ty), mask=row_mask[:, None] & (offs_n < C)[None, :])
    if SCALE_WEIGHTS and pid_n == 0:
        tl.store(W_UNSCALE_ptr + offs_m, w_unscale, mask=row_mask)
