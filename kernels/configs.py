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

# Configs tried only when none of the regular ones fits the device's shared memory: fp32 at
# 65 <= D <= 128 with tf32x3 on a 99 KiB GPU (sm_86, sm_89). Kept out of the regular lists so they
# cost no tuning time where the regular ones fit.
_FALLBACK_CONFIGS = {
    "forward": [(32, 32, 4, 2)],
    "backward": [(32, 32, 4, 2)],
    "weights": [(32, 32, 4, 2)],
}
# Shared memory beyond the operand tiles: reduction scratch (up to 1 KiB) and, on sm_90, 1 KiB of
# static shared memory (barriers) that counts against the same per-block limit.
_SCRATCH_BYTES = 2048


def feature_block(num_features: int, elem_bytes: int = 2) -> tuple[int, bool]:
    """(BLOCK_D, SINGLE_D) for D features of `elem_bytes`-byte operands: one power-of-two block (at
    least 16, the smallest tl.dot tile) when D fits, else CHUNK_BLOCK_D-wide chunks."""
    block = max(16, triton.next_power_of_2(num_features))
    limit = MAX_SINGLE_BLOCK_D_FP32 if elem_bytes >= 4 else MAX_SINGLE_BLOCK_D
    if block <= limit:
        return block, True
    return CHUNK_BLOCK_D, False


def config(block_m: int, block_n: int, num_warps: int, num_stages: int) -> triton.Config:
    """One tuning config: a (BLOCK_M, BLOCK_N) tile with num_warps warps and num_stages stages."""
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=num_stages
    )


def forward_configs() -> list[triton.Config]:
    if INTERPRET:
        return [config(64, 128, 4, 1)]
    return [
        config(block_m, block_n, num_warps, num_stages)
        for block_m, block_n, num_warps, num_stages in [
            (64, 64, 4, 3),
            (64, 128, 4, 3),
            (64, 128, 8, 3),
            (128, 64, 8, 3),
            (128, 128, 8, 2),
            (128, 128, 8, 3),
            (64, 64, 4, 4),
            (32, 64, 4, 3),
            *_FALLBACK_CONFIGS["forward"],
        ]
    ]


def backward_configs() -> list[triton.Config]:
    """No BLOCK_M = 64 config with 8 warps: there both warpgroups compute the same 64-row score tile
    (their SASS issues 3 MUFU.EX2 and 40+ instructions per score element instead of 1.5 and ~23, see
    bench/results/static/), and M64_N128_w8 spills on sm_90."""
    if INTERPRET:
        return [config(64, 128, 4, 1)]
    return [
        config(block_m, block_n, num_warps, num_stages)
        for block_m, block_n, num_warps, num_stages in [
            (64, 32, 4, 3),
            (64, 64, 4, 3),
            (128, 32, 8, 3),
            (128, 64, 8, 2),
            (32, 64, 4, 3),
            *_FALLBACK_CONFIGS["backward"],
        ]
    ]


def weights_configs() -> list[triton.Config]:
    """The large-D weights kernel (kernels/nt_xent_weights.py): a score tile over D in CHUNK_BLOCK_D
    chunks and one store, the forward's shapes."""
    if INTERPRET:
        return [config(32, 64, 4, 1)]
    return [
        config(block_m, block_n, num_warps, num_stages)
        for block_m, block_n, num_warps, num_stages in [
            (128, 128, 8, 3),
            (128, 64, 4, 3),
            (64, 128, 4, 3),
            (64, 64, 4, 3),
            *_FALLBACK_CONFIGS["weights"],
        ]
    ]


def _key(config: triton.Config) -> tuple[int, int, int, int]:
    return (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages)


def shared_memory_bytes(
    config: triton.Config,
    kernel: str,
    block_d: int,
    single_d: bool,
    elem_bytes: int,
    dot_precision: str,
) -> int:
    """Upper estimate of the shared memory a config compiles to (checked against the compiled kernels
    on sm_80/86/89/90 by tests/test_static_kernels.py).

    Single-D: `num_stages` pipelined [BLOCK_N, BLOCK_D] column tiles + the resident [BLOCK_M, BLOCK_D]
    row tile. Chunked D: row and column chunks are both pipelined. fp32 with tf32x3 stages one more
    row + column tile (the hi/lo split); the backward may stage its [BLOCK_M, BLOCK_N] weight tile as
    fp32 for the layout change before the second product (the weights kernel, before its store)."""
    block_m, block_n, _, num_stages = _key(config)
    stages = max(num_stages, 1)
    row = block_m * block_d * elem_bytes
    col = block_n * block_d * elem_bytes
    need = stages * col + row if single_d else stages * (col + row)
    if elem_bytes == 4 and dot_precision == "tf32x3":
        need += col + row
    if kernel in ("backward", "weights"):
        need += block_m * block_n * 4
    return need + _SCRATCH_BYTES


def fitting_configs(
    configs: list[triton.Config],
    kernel: str,
    block_d: int,
    single_d: bool,
    elem_bytes: int,
    dot_precision: str,
    smem_limit: int,
) -> list[triton.Config]:
    """The configs the autotuner keeps for a launch on a device with `smem_limit` bytes of shared
    memory per block: the regular configs that fit, else the fallback ones that fit, else the
    smallest fallback (its launch then fails with Triton's OutOfResources, naming the sizes)."""

    def fits(config: triton.Config) -> bool:
        need = shared_memory_bytes(config, kernel, block_d, single_d, elem_bytes, dot_precision)
        return need <= smem_limit

    fallback_keys = set(_FALLBACK_CONFIGS[kernel])
    regular = [c for c in configs if _key(c) not in fallback_keys]
    fallback = [c for c in configs if _key(c) in fallback_keys]
    kept = [c for c in regular if fits(c)] or [c for c in fallback if fits(c)]
    if kept:
        return kept
    return [min(fallback or configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def device_smem_limit(device) -> int:
    """Shared memory one block may opt in to on `device` (227 KiB on H100, 163 KiB on A100, 99 KiB
    on sm_86/sm_89). Asked at prune time only: nothing queries the GPU at import."""
    import torch

    props = torch.cuda.get_device_properties(device)
    if hasattr(props, "shared_memory_per_block_optin"):
        return props.shared_memory_per_block_optin
    # Older torch: the same attribute through Triton's driver (what its launcher checks against).
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
    """early_config_prune for the forward kernel: keep the configs that fit the device's shared
    memory."""
    return _prune(configs, named_args, "forward", **kwargs)


def prune_weights(configs, named_args, **kwargs):
    """early_config_prune for the large-D weights kernel (chunked D, the forward's shared memory)."""
    return fitting_configs(
        configs,
        "weights",
        block_d=kwargs["BLOCK_D"],
        single_d=False,
        elem_bytes=named_args["ZC_ptr"].element_size(),
        dot_precision=kwargs["DOT_PRECISION"],
        smem_limit=device_smem_limit(named_args["ZC_ptr"].device),
    )


def prune_backward(configs, named_args, **kwargs):
    """early_config_prune for the backward kernel: keep the configs that fit the device's shared
    memory."""
    return _prune(configs, named_args, "backward", **kwargs)


def split_masks(cc: int | None, elem_bytes: int, dot_precision: str, block_d: int) -> bool:
    """SPLIT_MASKS: walk the tiles without a self/positive column in a loop free of masks (and the
    others in a second, masked loop) or every tile in one masked loop.

    The split schedule removes the mask compares from the hot loop but keeps two loop bodies' values
    live; where registers are already tight it spills (measured by `fastclr bench static`: sm_80/86/89
    at BLOCK_D = 256, and fp32 tf32x3, which holds hi/lo operand pairs), so those take one loop.
    cc: the GPU's compute capability as major·10 + minor (None under the interpreter: split).
    """
    if elem_bytes >= 4 and dot_precision == "tf32x3":
        return False
    return cc is None or cc >= 90 or block_d <= 128


# The column-split schedule: enough programs per row block that the grid holds about this many CTAs
# per SM (co-resident CTAs hide each other's tensor-core waits), each split walking at least
# MIN_SPLIT_COLUMNS columns, at most MAX_COLUMN_SPLITS splits (the backward's partial gradients cost
# splits·M·D fp32).
TARGET_CTAS_PER_SM = 2
MIN_SPLIT_COLUMNS = 512
MAX_COLUMN_SPLITS = 4
SPLIT_ROW_BLOCK = 64  # the row block the split count assumes (the autotuner's most common pick)


def column_splits(rows: int, cols: int, sms: int | None) -> int:
    """Programs sharing each row block's column tiles for an [rows] x [cols] launch on `sms`
    multiprocessors (None: no GPU, one program per row block). Depends only on the problem size and
    the GPU, so the partial outputs are allocated before the autotuner picks a config."""
    if sms is None or rows == 0:
        return 1
    row_blocks = -(-rows // SPLIT_ROW_BLOCK)
    wanted = -(-TARGET_CTAS_PER_SM * sms // row_blocks)
    return max(1, min(wanted, cols // MIN_SPLIT_COLUMNS, MAX_COLUMN_SPLITS))
