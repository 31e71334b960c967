"""Loss-family backward: the anchors' gradient, one row-parallel pass that recomputes the score tiles
from the saved log-sum-exp. The Triton form of fastclr/ops/family.py's family_backward_rows (its
docstring has the notation and the derivation).

With s_ik = inv_temp · <zr_i, zc_k>, the masks P(i), N(i) of kernels/family_forward.py, the anchors'
lse_i, u_i = dL/dlse_i and vc_i = (dL/dpos_i) / max(count_i, 1), and (HAS_COLUMN_ROLE: the columns
are anchors too) the same of every column k:
    w_ik    = u_i exp(s_ik − lse_i) [k in N(i)] + vc_i [k in P(i)]                 row role
            + u_k exp(s_ik − lse_k) [k in N(i)] + vc_k [k in P(i)]                 column role
    grad_i  = inv_temp · Σ_k w_ik zc_k  +  inv_temp · Σ_k u_i exp(s_ik − lse_i) q_k  (queue rows)
    sdot_i  = Σ_k (row role of w_ik) · s_ik   (queue included; the launcher sums it to dL/dc · c)
The column role uses row i's masks: [k in N(i)] == [i in N(k)] and the same for P, by symmetry.

Each program owns BLOCK_M anchors and one BLOCK_D slice of the features (all of D on the single-D
path) and walks the C columns, then the K queue rows, in BLOCK_N tiles: s, then w in fp32 (the
positive weight vc and the softmax term are added there, before rounding: near convergence they
nearly cancel), then acc += w·zc_tile into an fp32 [BLOCK_M, BLOCK_D] accumulator. No atomics;
sdot is written per anchor by the programs of the first feature slice.

Exponentials. With SHARED_EXP (the launcher's choice for L2-normalized rows, |s| <= c, and
c <= 30) both roles share one exp2 per element, as in kernels/nt_xent_backward.py:
    u_i exp(s_ik − lse_i) + u_k exp(s_ik − lse_k) = exp(s_ik − c) · (a_i + a_k),  a = u exp(c − lse)
with the [M] and [C] factors a precomputed by the launcher (0 where lse = −inf, an anchor with an
empty N(i), which no kept entry reads); every factor stays inside fp32 for c <= 30. Otherwise each
role takes exp2(min(s − lse, 0)) (two MUFU.EX2 per element with the column role): s_ik <= lse_i
wherever k in N(i), so the clamp changes only masked entries (self, decoupled positives, padding),
keeping them finite before they are zeroed, and no bound on |s| is needed (CLIP's features are
not normalized).

fp16 (SCALE_WEIGHTS): the weights, ~u/C, sit far below fp16's smallest normal, so each row's are
multiplied by 2^14 / (|u_i| + |vc_i| + W_MAX) before the product and the accumulator divided back
(as kernels/nt_xent_backward.py): |w_ik| is bounded by that sum, W_MAX = max_k |u_k| + |vc_k| over the
columns (0 without the column role), since 0 <= exp(s − lse) <= 1. The scale is capped at 2^100.
"""

import triton
import triton.language as tl

from fastclr.kernels import family_configs
from fastclr.kernels.tiles import family_masks, load_tile, score_tile

LOG2E = tl.constexpr(1.4426950408889634)
WEIGHT_RANGE = tl.constexpr(16384.0)  # fp16 weights are scaled into [-2^14, 2^14]
MIN_WEIGHT_BOUND = tl.constexpr(2.0**-86)  # caps the fp16 weight scale at 2^14 / 2^-86 = 2^100


@triton.autotune(
    configs=family_configs.backward_configs(),
    key=["M", "C", "K", "D"],
    prune_configs_by={"early_config_prune": family_configs.prune_backward},
)
@triton.heuristics(
    {
        "EVEN_N": lambda args: args["C"] % args["BLOCK_N"] == 0,
        "EVEN_D": lambda args: args["D"] % args["BLOCK_D"] == 0,
    }
)
@triton.jit
def family_backward_kernel(
    ZR_ptr,
    ZC_ptr,
    Q_ptr,
    ROW_LABELS_ptr,
    COL_LABELS_ptr,
    ROW_IDS_ptr,
    LSE_R_ptr,
    U_R_ptr,
    VC_R_ptr,
    A_R_ptr,
    LSE_C_ptr,
    U_C_ptr,
    VC_C_ptr,
    A_C_ptr,
    W_MAX_ptr,
    GRAD_ptr,
    SDOT_ptr,
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
    stride_gradm,
    stride_gradd,
    inv_temp,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    HAS_SELF: tl.constexpr,
    HAS_QUEUE: tl.constexpr,
    HAS_COLUMN_ROLE: tl.constexpr,
    DECOUPLED: tl.constexpr,
    SHARED_EXP: tl.constexpr,
    SCALE_WEIGHTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < M
    row_labels = tl.load(ROW_LABELS_ptr + offs_m, mask=row_mask, other=0)
    # Without a self column row_ids is unused.
    row_ids = tl.load(ROW_IDS_ptr + offs_m, mask=row_mask, other=0) if HAS_SELF else offs_m
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    offs_out = pid_d * BLOCK_D + offs_d  # the feature slice this program writes
    scale = inv_temp * LOG2E  # logits in base 2

    # Rows past M read zero stats: zero weights, and their accumulator rows are never stored.
    lse_r = tl.load(LSE_R_ptr + offs_m, mask=row_mask, other=0.0) * LOG2E
    u_r = tl.load(U_R_ptr + offs_m, mask=row_mask, other=0.0)
    vc_r = tl.load(VC_R_ptr + offs_m, mask=row_mask, other=0.0)
    if SHARED_EXP:
        a_r = tl.load(A_R_ptr + offs_m, mask=row_mask, other=0.0)
    if SCALE_WEIGHTS:
        w_bound = tl.maximum(tl.abs(u_r) + tl.abs(vc_r) + tl.load(W_MAX_ptr), MIN_WEIGHT_BOUND)
        w_scale = tl.where(row_mask, WEIGHT_RANGE / w_bound, 0.0)
        w_unscale = tl.where(row_mask, w_bound / WEIGHT_RANGE, 0.0)

    if SINGLE_D:
        zr = load_tile(
            ZR_ptr, offs_m, row_mask, offs_d, D, stride_zrm, stride_zrd, True, not EVEN_D
        )
    else:
        zr = tl.zeros([BLOCK_M, BLOCK_D], dtype=ZR_ptr.dtype.element_ty)  # unused: chunks reloaded

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    sdot = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, C, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = offs_n < C
        dots, zc = score_tile(
            zr, ZR_ptr, ZC_ptr, offs_m, row_mask, offs_n, col_mask, offs_d, offs_out, D,
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
        s2 = dots * scale
        if SHARED_EXP:
            shared = tl.where(keep, tl.exp2(s2 - scale), 0.0)  # exp(s - c) on N(i)
            w = shared * a_r[:, None] + tl.where(positive, vc_r[:, None], 0.0)
        else:
            p_row = tl.exp2(tl.minimum(s2 - lse_r[:, None], 0.0))
            w = tl.where(keep, u_r[:, None] * p_row, 0.0) + tl.where(positive, vc_r[:, None], 0.0)
        sdot += tl.sum(w * dots, 1)
        if HAS_COLUMN_ROLE:
            vc_c = tl.load(VC_C_ptr + offs_n, mask=col_mask, other=0.0)
            if SHARED_EXP:
                a_c = tl.load(A_C_ptr + offs_n, mask=col_mask, other=0.0)
                w += shared * a_c[None, :] + tl.where(positive, vc_c[None, :], 0.0)
            else:
                lse_c = tl.load(LSE_C_ptr + offs_n, mask=col_mask, other=0.0) * LOG2E
                u_c = tl.load(U_C_ptr + offs_n, mask=col_mask, other=0.0)
                p_col = tl.exp2(tl.minimum(s2 - lse_c[None, :], 0.0))
                w += tl.where(keep, u_c[None, :] * p_col, 0.0)
                w += tl.where(positive, vc_c[None, :], 0.0)
        if SCALE_WEIGHTS:
            w = w * w_scale[:, None]
        acc = tl.dot(w.to(zc.dtype), zc, acc, input_precision=DOT_PRECISION)
    if HAS_QUEUE:
        # Queue rows: the row role's softmax only (every queue row is in N(i)); no gradient to q.
        for start_k in range(0, K, BLOCK_N):
            offs_k = start_k + tl.arange(0, BLOCK_N).to(tl.int64)
            queue_mask = offs_k < K
            dots, q = score_tile(
                zr, ZR_ptr, Q_ptr, offs_m, row_mask, offs_k, queue_mask, offs_d, offs_out, D,
                stride_zrm, stride_zrd, stride_qn, stride_qd,
                BLOCK_M, BLOCK_N, BLOCK_D, SINGLE_D, True, not EVEN_D, DOT_PRECISION,
            )  # fmt: skip
            if SHARED_EXP:
                w = tl.exp2(dots * scale - scale) * a_r[:, None]
            else:
                w = tl.exp2(tl.minimum(dots * scale - lse_r[:, None], 0.0)) * u_r[:, None]
            w = tl.where(queue_mask[None, :], w, 0.0)
            sdot += tl.sum(w * dots, 1)
            if SCALE_WEIGHTS:
                w = w * w_scale[:, None]
            acc = tl.dot(w.to(q.dtype), q, acc, input_precision=DOT_PRECISION)

    if SCALE_WEIGHTS:
        acc = acc * w_unscale[:, None]
    out_mask = offs_out < D
    grad_ptrs = GRAD_ptr + offs_m[:, None] * stride_gradm + offs_out[None, :] * stride_gradd
    tl.store(grad_ptrs, acc * inv_temp, mask=row_mask[:, None] & out_mask[None, :])
    # sdot is the same in every feature slice: the first slice writes it.
    tl.store(SDOT_ptr + offs_m, sdot * inv_temp, mask=row_mask & (pid_d == 0))
