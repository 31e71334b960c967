"""Tuning configurations for the NT-Xent kernels.

On a GPU the kernels autotune over several (BLOCK_M, BLOCK_N, num_warps, num_stages) configs, keyed on
the problem size (M rows, C columns, D features; the autotuner adds the dtypes). Under the Triton
interpreter (TRITON_INTERPRET=1) autotuning with more than one config fails, and every tile step costs
milliseconds, so there is exactly one config with large tiles.

BLOCK_D is not tuned: the launcher derives it from D with `feature_block` (the whole feature vector in
one block when it fits, the "single-D" fast path; fixed chunks beyond that).
"""

import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Widest feature block held whole: D up to this runs the single-D fast path, where a [BLOCK_N, D] tile
# of columns is loaded once per step and (in backward) feeds both products. Beyond it, D is tiled in
# CHUNK_BLOCK_D chunks. The interpreter uses a smaller bound so its tests cover the chunked path too.
MAX_SINGLE_BLOCK_D = 128 if INTERPRET else 256
# fp32 tiles take twice the bytes, and tf32x3 stages each operand tile again as a hi/lo pair in
# shared memory: at BLOCK_D = 256 every fp32 config overflows the 227 KiB of an H100, so fp32 holds
# at most 128 features whole.
MAX_SINGLE_BLOCK_D_FP32 = 128
CHUNK_BLOCK_D = 64

# Shared memory a config may plan for (H100/H200: 227 KiB per block; keep headroom for the compiler).
SMEM_BUDGET_BYTES = 200 * 1024


def feature_block(num_features: int, elem_bytes: int = 2) -> tuple[int, bool]:
    """(BLOCK_D, SINGLE_D) for D features of `elem_bytes`-byte operands: one power-of-two block (at
    least 16, the smallest tl.dot tile) when D fits, else CHUNK_BLOCK_D-wide chunks."""
    block = max(16, triton.next_power_of_2(num_features))
    limit = MAX_SINGLE_BLOCK_D_FP32 if elem_bytes >= 4 else MAX_SINGLE_BLOCK_D
    if block <= limit:
        return block, True
    return CHUNK_BLOCK_D, False


def _config(block_m: int, block_n: int, num_warps: int, num_stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=num_stages
    )


def forward_configs() -> list[triton.Config]:
    if INTERPRET:
        return [_config(64, 128, 4, 1)]
    return [
        _config(block_m, block_n, num_warps, num_stages)
        for block_m, block_n, num_warps, num_stages in [
            (64, 64, 4, 3),
            (64, 128, 4, 3),
            (64, 128, 8, 3),
            (128, 64, 8, 3),
            (128, 128, 8, 2),
            (128, 128, 8, 3),
            (64, 64, 4, 4),
            (32, 64, 4, 3),
        ]
    ]


def backward_configs() -> list[triton.Config]:
    if INTERPRET:
        return [_config(64, 128, 4, 1)]
    return [
        _config(block_m, block_n, num_warps, num_stages)
        for block_m, block_n, num_warps, num_stages in [
            (64, 32, 4, 3),
            (64, 64, 4, 3),
            (64, 64, 8, 2),
            (64, 128, 8, 2),
            (128, 32, 8, 3),
            (128, 64, 8, 2),
            (32, 64, 4, 3),
        ]
    ]


def _shared_memory_bytes(
    config: triton.Config, block_d: int, elem_bytes: int, weights: bool
) -> int:
    """Rough shared-memory need: pipelined column tiles, the resident row tile and (backward) the
    weight tile that feeds the second product."""
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    stages = max(config.num_stages, 1)
    need = (block_n * block_d * stages + block_m * block_d) * elem_bytes
    if weights:
        need += block_m * block_n * elem_bytes
    return need


def _prune(configs, named_args, weights: bool, **kwargs):
    block_d = kwargs["BLOCK_D"]
    elem_bytes = named_args["ZC_ptr"].element_size()
    fits = [
        c
        for c in configs
        if _shared_memory_bytes(c, block_d, elem_bytes, weights) <= SMEM_BUDGET_BYTES
    ]
    # Always leave one config: the smallest tiles.
    smallest = min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])
    return fits or [smallest]


def prune_forward(configs, named_args, **kwargs):
    """early_config_prune for the forward kernel: drop configs whose tiles overflow shared memory."""
    return _prune(configs, named_args, weights=False, **kwargs)


def prune_backward(configs, named_args, **kwargs):
    """early_config_prune for the backward kernel: drop configs whose tiles overflow shared memory."""
    return _prune(configs, named_args, weights=True, **kwargs)
