"""Tile helpers shared by the loss-family kernels (kernels/family_forward.py, family_backward.py).

Each helper is a @triton.jit function inlined into its caller: loading a masked [rows, BLOCK_D]
tile, the score tile of BLOCK_M anchors against BLOCK_N columns (the whole feature vector at once
on the single-D path, a loop over BLOCK_D chunks otherwise), the family's positive and
denominator masks, and one step of the online log-sum-exp in base 2.

Offsets are int64 (the callers build them so), so C·D beyond 2^31 elements is safe. Scores are fp32
(tl.dot accumulates in fp32; fp32 operands use DOT_PRECISION, "tf32" or "tf32x3").
"""

import triton
import triton.language as tl


@triton.jit
def load_tile(
    ptr, offs_n, n_mask, offs_d, D, stride_n, stride_d, MASK_N: tl.constexpr, MASK_D: tl.constexpr
):
    """[len(offs_n), len(offs_d)] tile of a row-major operand; masked entries read 0 (the neutral
    element of the dot products). MASK_N / MASK_D: whether rows past the end / features past D can
    occur (the caller knows from EVEN_N / EVEN_D), so full tiles load without a mask."""
    ptrs = ptr + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d
    if MASK_N:
        if MASK_D:
            tile = tl.load(ptrs, mask=n_mask[:, None] & (offs_d[None, :] < D), other=0.0)
        else:
            tile = tl.load(ptrs, mask=n_mask[:, None], other=0.0)
    elif MASK_D:
        tile = tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def score_tile(
    zr,
    ZR_ptr,
    ZC_ptr,
    offs_m,
    row_mask,
    offs_n,
    col_mask,
    offs_d,
    offs_out,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SINGLE_D: tl.constexpr,
    MASK_N: tl.constexpr,
    MASK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """(dots, zc): dots [BLOCK_M, BLOCK_N] fp32 = <zr_i, zc_k> for the rows offs_m and columns
    offs_n, and the column tile [BLOCK_N, BLOCK_D] over the features offs_out (the backward's second
    product; the forward ignores it and the compiler drops its load).

    SINGLE_D: zr is the resident [BLOCK_M, BLOCK_D] row tile holding all of D and the column tile
    is loaded once for both uses (offs_out == offs_d). Otherwise zr is unused: the row and column
    chunks are reloaded over D in BLOCK_D steps, and the column tile of the output slice offs_out
    loaded after.
    """
    if SINGLE_D:
        zc = load_tile(ZC_ptr, offs_n, col_mask, offs_d, D, stride_zcn, stride_zcd, MASK_N, MASK_D)
        dots = tl.dot(zr, tl.trans(zc), input_precision=DOT_PRECISION)
    else:
        dots = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for start_d in range(0, D, BLOCK_D):
            cols_d = start_d + offs_d
            zr_d = load_tile(
                ZR_ptr, offs_m, row_mask, cols_d, D, stride_zrm, stride_zrd, True, True
            )
            zc_d = load_tile(
                ZC_ptr, offs_n, col_mask, cols_d, D, stride_zcn, stride_zcd, True, True
            )
            dots = tl.dot(zr_d, tl.trans(zc_d), dots, input_precision=DOT_PRECISION)
        zc = load_tile(ZC_ptr, offs_n, col_mask, offs_out, D, stride_zcn, stride_zcd, True, True)
    return dots, zc


@triton.jit
def family_masks(
    row_labels,
    row_ids,
    col_labels,
    start_n,
    col_mask,
    BLOCK_N: tl.constexpr,
    HAS_SELF: tl.constexpr,
    DECOUPLED: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """(positive, keep), both [BLOCK_M, BLOCK_N], for the column tile starting at start_n:
    positive = k in P(i) (same label, not the self column, a real column); keep = k in N(i) (a
    real column, not self; DECOUPLED: not a positive either). row_ids (the anchors' own column) is
    read only with HAS_SELF; MASK_N: columns past the end can occur in this tile.

    The self column is compared in int32 relative to the tile (one compare per element instead
    of a 64-bit pair): each row's self index is moved into the tile once, -1 when outside it."""
    positive = row_labels[:, None] == col_labels[None, :]
    if HAS_SELF:
        inside = (row_ids >= start_n) & (row_ids < start_n + BLOCK_N)
        self_local = tl.where(inside, row_ids - start_n, -1).to(tl.int32)
        not_self = tl.arange(0, BLOCK_N)[None, :] != self_local[:, None]
        positive = positive & not_self
        keep = not_self
    else:
        keep = positive | (positive == 0)  # all True, in the tile's shape
    if MASK_N:
        positive = positive & col_mask[None, :]
        keep = keep & col_mask[None, :]
    if DECOUPLED:
        keep = keep & (positive == 0)
    return positive, keep


@triton.jit
def online_lse(m_i, l_i, s2):
    """One step of the online log-sum-exp in base 2: the running max m_i and sum l_i [BLOCK_M]
    (l_i = sum 2^(s - m_i)) updated by the tile s2 [BLOCK_M, BLOCK_N] of base-2 logits, -inf where
    excluded. A row whose entries so far are all excluded keeps m = -inf, l = 0 (its shift is
    taken as 0 so that no -inf - -inf = NaN appears)."""
    m_new = tl.maximum(m_i, tl.max(s2, 1))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    l_new = l_i * tl.exp2(m_i - shift) + tl.sum(tl.exp2(s2 - shift[:, None]), 1)
    return m_new, l_new
