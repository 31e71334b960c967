"""Tile code shared by the NT-Xent forward and backward kernels: the column-tile schedule that keeps the
self/positive masks out of the hot loop, and the score tile zr·zc_tileᵀ.

Schedule. A row block's self columns (row_ids) and, for the backward, its positive columns
((row_ids + C/2) mod C) lie in at most two windows of column tiles, [lo1, hi1) and [lo2, hi2) (sorted,
disjoint, in tile units). Each window spans the [min, max] range of its ids, so any row_ids work (a
shuffled multi-GPU subset only sends more tiles down the masked path). The kernels walk the other
("plain") tiles in one loop without any mask, then the window tiles in a second loop with the masks,
so the hot loop carries none of their compares. With a ragged last tile (C % BLOCK_N != 0) every tile
is a window tile and the plain loop is empty. The order of the tiles does not matter to the sums.
"""

import triton
import triton.language as tl


@triton.jit
def _id_range(ids, row_mask, C):
    """[first, last] tile-independent range of the valid rows' column ids (int64 [BLOCK_M] in)."""
    first = tl.min(tl.where(row_mask, ids, C), 0)
    last = tl.max(tl.where(row_mask, ids, -1), 0)
    return first, last


@triton.jit
def mask_windows(
    row_ids,
    row_mask,
    C,
    BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr,
    WITH_POSITIVE: tl.constexpr,
):
    """(lo1, hi1, lo2, hi2): the sorted, disjoint tile windows holding a self column of the block's
    rows (and, with WITH_POSITIVE, a positive column); int32 tile indices, hi exclusive."""
    num_tiles = tl.cdiv(C, BLOCK_N)
    if EVEN_N:
        first, last = _id_range(row_ids, row_mask, C)
        lo1 = (first // BLOCK_N).to(tl.int32)
        hi1 = (last // BLOCK_N + 1).to(tl.int32)
        lo2 = hi1
        hi2 = hi1
        if WITH_POSITIVE:
            first, last = _id_range((row_ids + C // 2) % C, row_mask, C)
            a_lo = (first // BLOCK_N).to(tl.int32)
            a_hi = (last // BLOCK_N + 1).to(tl.int32)
            swap = a_lo < lo1
            lo2 = tl.where(swap, lo1, a_lo)
            hi2 = tl.where(swap, hi1, a_hi)
            lo1 = tl.where(swap, a_lo, lo1)
            hi1 = tl.where(swap, a_hi, hi1)
            # Overlapping or adjacent windows merge into the first; the second becomes empty.
            merge = lo2 <= hi1
            hi1 = tl.where(merge, tl.maximum(hi1, hi2), hi1)
            lo2 = tl.where(merge, hi1, lo2)
            hi2 = tl.where(merge, hi1, hi2)
    else:
        lo1 = num_tiles * 0
        hi1 = num_tiles
        lo2 = num_tiles
        hi2 = num_tiles
    return lo1, hi1, lo2, hi2


@triton.jit
def plain_tile_count(C, lo1, hi1, lo2, hi2, BLOCK_N: tl.constexpr):
    return tl.cdiv(C, BLOCK_N) - (hi1 - lo1) - (hi2 - lo2)


@triton.jit
def plain_tile_start(j, lo1, hi1, lo2, hi2, BLOCK_N: tl.constexpr):
    """First column of the j-th tile outside both windows: [0, lo1), [hi1, lo2), [hi2, end)."""
    t = j + tl.where(j >= lo1, hi1 - lo1, 0)
    t = t + tl.where(t >= lo2, hi2 - lo2, 0)
    return t * BLOCK_N


@triton.jit
def window_tile_start(k, lo1, hi1, lo2, BLOCK_N: tl.constexpr):
    """First column of the k-th tile inside the windows."""
    return tl.where(k < hi1 - lo1, lo1 + k, lo2 + k - (hi1 - lo1)) * BLOCK_N


@triton.jit
def split_range(count, split, splits):
    """[lo, hi): the share of `count` tiles that column split `split` of `splits` walks (contiguous,
    sizes differ by at most one; empty when count < splits)."""
    lo = (split * count) // splits
    hi = ((split + 1) * count) // splits
    return lo, hi


@triton.jit
def load_column_tile(
    ZC_ptr,
    start_n,
    cols_d,
    C,
    D,
    stride_zcn,
    stride_zcd,
    BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
):
    """[BLOCK_N, BLOCK_D] column rows start_n ... start_n + BLOCK_N - 1 at features cols_d (int64),
    zero outside C x D; EVEN_N / EVEN_D promise that no bound needs a mask."""
    # The tile's first row as one scalar pointer plus offsets that do not change from tile to tile:
    # the compiler keeps the offsets out of the loop instead of multiplying every row index again.
    rows = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_n = start_n + rows
    ptrs = (ZC_ptr + tl.cast(start_n, tl.int64) * stride_zcn) + (
        rows[:, None] * stride_zcn + cols_d[None, :] * stride_zcd
    )
    if EVEN_N & EVEN_D:
        tile = tl.load(ptrs)
    elif EVEN_D:
        tile = tl.load(ptrs, mask=(offs_n < C)[:, None], other=0.0)
    elif EVEN_N:
        tile = tl.load(ptrs, mask=(cols_d < D)[None, :], other=0.0)
    else:
        tile = tl.load(ptrs, mask=(offs_n < C)[:, None] & (cols_d < D)[None, :], other=0.0)
    return tile


@triton.jit
def chunked_dots(
    ZR_ptr,
    ZC_ptr,
    offs_m,
    row_mask,
    start_n,
    offs_d,
    C,
    D,
    stride_zrm,
    stride_zrd,
    stride_zcn,
    stride_zcd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """fp32 [BLOCK_M, BLOCK_N] products of the rows offs_m with the columns offs_n when D does not fit
    one block: row and column tiles are loaded per BLOCK_D chunk."""
    dots = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start_d in range(0, D, BLOCK_D):
        cols_d = start_d + offs_d  # int64: no overflow for any stride
        zr = tl.load(
            ZR_ptr + offs_m[:, None] * stride_zrm + cols_d[None, :] * stride_zrd,
            mask=row_mask[:, None] & (cols_d < D)[None, :],
            other=0.0,
        )
        zc = load_column_tile(
            ZC_ptr, start_n, cols_d, C, D, stride_zcn, stride_zcd, BLOCK_N, EVEN_N, False
        )
        dots = tl.dot(zr, tl.trans(zc), dots, input_precision=DOT_PRECISION)
    return dots
