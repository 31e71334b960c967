"""Tuning configurations for the loss-family kernels (kernels/family_forward.py, family_backward.py).

The same scheme as kernels/configs.py (the NT-Xent kernels'), kept separate so that each set can be
tuned alone: on a GPU the kernels autotune over (BLOCK_M, BLOCK_N, num_warps, num_stages), keyed on
the problem size (M anchors, C columns, K queue rows, D features; the autotuner adds the dtypes) and
pruned to the configs that fit the device's shared memory. Under the Triton interpreter
(TRITON_INTERPRET=1) autotuning with more than one config fails and every tile step costs
milliseconds: one config with large tiles.

BLOCK_D is not tuned: `feature_block` derives it from D (the whole feature vector in one block when
it fits, the single-D path; CHUNK_BLOCK_D-wide chunks beyond).
"""

import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# As kernels/configs.py: D up to this is held whole; the interpreter's smaller bound makes its tests
# cover the chunked-feature path too. fp32 (tf32x3 stages each tile twice) holds at most 128.
MAX_SINGLE_BLOCK_D = 128 if INTERPRET else 256
MAX_SINGLE_BLOCK_D_FP32 = 128
CHUNK_BLOCK_D = 64

# Tried only when no regular config fits (fp32 at 65 <= D <= 128 with tf32x3 on a 99 KiB GPU).
FALLBACK = (32, 32, 4, 2)
# Reduction scratch and sm_90's static shared memory (barriers), beyond the operand tiles.
SCRATCH_BYTES = 2048


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
    """The NT-Xent forward's shapes less BLOCK_M = 32 (mma.sync instead of wgmma on sm_90,
    KERNEL-REVIEW item 7): the family forward keeps two more [BLOCK_M] accumulators (positive sum
    and count) and compares labels, a few registers more."""
    if INTERPRET:
        return [_config(64, 128, 4, 1)]
    return [
        _config(*shape)
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
        return [_config(64, 128, 4, 1)]
    return [
        _config(*shape)
        for shape in [
            (64, 32, 4, 3),
            (64, 64, 4, 3),
            (128, 32, 8, 3),
            (128, 64, 8, 2),
            (32, 64, 4, 3),
            FALLBACK,
        ]
    ]


def _shape(config: triton.Config) -> tuple[int, int, int, int]:
    return (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages)


def shared_memory_bytes(
    config: triton.Config,
    kernel: str,
    block_d: int,
    single_d: bool,
    elem_bytes: int,
    dot_precision: str,
) -> int:
    """Upper estimate of a config's shared memory, kernels/configs.py's model (the family kernels
    stage the same operand tiles; labels and stats are [BLOCK_N] vectors in registers).

    Single-D: `num_stages` pipelined [BLOCK_N, BLOCK_D] column tiles + the resident row tile;
    chunked D: row and column chunks both pipelined; tf32x3 stages one more row + column tile; the
    backward may stage its [BLOCK_M, BLOCK_N] fp32 weight tile for the second product."""
    block_m, block_n, _, num_stages = _shape(config)
    stages = max(num_stages, 1)
    row = block_m * block_d * elem_bytes
    col = block_n * block_d * elem_bytes
    need = stages * col + row if single_d else stages * (col + row)
    if elem_bytes == 4 and dot_precision == "tf32x3":
        need += col + row
    if kernel == "backward":
        need += block_m * block_n * 4
    return need + SCRATCH_BYTES


def fitting_configs(
    configs: list[triton.Config],
    kernel: str,
    block_d: int,
    single_d: bool,
    elem_bytes: int,
    dot_precision: str,
    smem_limit: int,
) -> list[triton.Config]:
    """The configs kept for a device with `smem_limit` bytes of shared memory per block: the regular
    ones that fit, else the fallback (whose launch, if even it does not fit, fails with Triton's
    OutOfResources naming the sizes)."""
    regular = [c for c in configs if _shape(c) != FALLBACK]
    fallback = [c for c in configs if _shape(c) == FALLBACK] or configs[-1:]
    kept = [
        c
        for c in regular
        if shared_memory_bytes(c, kernel, block_d, single_d, elem_bytes, dot_precision)
        <= smem_limit
    ]
    return kept or fallback


def device_smem_limit(device) -> int:
    """Shared memory one block may opt in to on `device`, asked at prune time only."""
    import torch

    props = torch.cuda.get_device_properties(device)
    if hasattr(props, "shared_memory_per_block_optin"):
        return props.shared_memory_per_block_optin
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]


def _prune(configs, named_args, kernel: str, **kwargs):
    zc = named_args["ZC_ptr"]
    return fitting_configs(
        configs,
        kernel,
        block_d=kwargs["BLOCK_D"],
        single_d=kwargs["SINGLE_D"],
        elem_bytes=zc.element_size(),
        dot_precision=kwargs["DOT_PRECISION"],
        smem_limit=device_smem_limit(zc.device),
    )


def prune_forward(configs, named_args, **kwargs):
    """early_config_prune of the family forward: the configs that fit the device."""
    return _prune(configs, named_args, "forward", **kwargs)


def prune_backward(configs, named_args, **kwargs):
    """early_config_prune of the family backward: the configs that fit the device."""
    return _prune(configs, named_args, "backward", **kwargs)
