"""Tuning configurations for the loss-family kernels (kernels/family_forward.py, family_backward.py).

Their own (BLOCK_M, BLOCK_N, num_warps, num_stages) lists, so that each kernel set can be tuned
alone; everything else is kernels/configs.py's (the NT-Xent kernels'): the family kernels stage the
same operand tiles (labels and stats are [BLOCK_N] vectors in registers), so BLOCK_D
(`feature_block`), the shared-memory model, the fallback config and the prune to the device's shared
memory are shared, not copied. Under the Triton interpreter (TRITON_INTERPRET=1) there is one config
with large tiles, as there.
"""

import triton

from fastclr.kernels.configs import (  # noqa: F401  (the shared model, used through this module)
    INTERPRET,
    config,
    feature_block,
    fitting_configs,
    prune_backward,
    prune_forward,
    shared_memory_bytes,
)

# Tried only when no regular config fits (fp32 at 65 <= D <= 128 with tf32x3 on a 99 KiB GPU); the
# same as kernels/configs.py's, which its prune recognises.
FALLBACK = (32, 32, 4, 2)


def forward_configs() -> list[triton.Config]:
    """The NT-Xent forward's shapes less BLOCK_M = 32 (mma.sync instead of wgmma on sm_90): the family forward keeps two more [BLOCK_M] accumulators (positive sum
    and count) and compares labels, a few registers more."""
    if INTERPRET:
        return [config(64, 128, 4, 1)]
    return [
        config(*shape)
        for shape in [
            (64, 64, 4, 3),
            (64, 128, 4, 3),
            (64, 128, 8, 3),
            (128, 64, 8, 3),
            (128, 128, 8, 2),
            (128, 128, 8, 3),
            (64, 64, 4, 4),
            FALLBACK,
        ]
    ]


def backward_configs() -> list[triton.Config]:
    """The NT-Xent backward's shapes: no BLOCK_M = 64 config with 8 warps (both warpgroups would
    compute the same 64-row score tile, see kernels/configs.py)."""
    if INTERPRET:
        return [config(64, 128, 4, 1)]
    return [
        config(*shape)
        for shape in [
            (64, 32, 4, 3),
            (64, 64, 4, 3),
            (128, 32, 8, 3),
            (128, 64, 8, 2),
            (32, 64, 4, 3),
            FALLBACK,
        ]
    ]
