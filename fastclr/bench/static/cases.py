"""What `fastclr bench static` compiles: every (kernel, precision, D, 2N, arch) case with the launch
constexprs fastclr/ops/triton_backend.py would pass, and the configs the autotuner keeps for it on
that architecture (kernels/configs.py's own prune, fed the architecture's shared-memory limit).

The loss-family kernels (kernels/family_*.py, launched by fastclr/ops/family_triton.py) are cases
too, selected by name (`--kernel family_forward,family_backward`); the default selection stays the
NT-Xent kernels. They are compiled for SupCon / multi-view SimCLR on one GPU (M = C = 2N, the self
column masked, the backward's column role on, no queue, not decoupled), with
kernels/family_configs.py's configs and prune.
"""

from dataclasses import dataclass

import triton

from fastclr.bench.static.arches import ARCHES, SMEM_LIMITS
from fastclr.bench.static.triton_compile import CompileKey
from fastclr.kernels import configs, family_configs
from fastclr.ops.triton_backend import (
    SHARED_EXP_MAX_INV_TEMP,
    SLAB_MIN_FEATURES,
    STATIC_SHIFT_MAX_INV_TEMP,
)

# NT-Xent, the default selection; "weights" is the backward's large-D path (D >= SLAB_MIN_FEATURES:
# kernels/nt_xent_weights.py, then one matmul).
KERNELS = ("forward", "backward", "weights")
FAMILY_KERNELS = ("family_forward", "family_backward")
ALL_KERNELS = KERNELS + FAMILY_KERNELS
# precision label -> (operand dtype, DOT_PRECISION)
PRECISIONS = {
    "bf16": ("bf16", "tf32"),
    "fp16": ("fp16", "tf32"),
    "fp32-tf32": ("fp32", "tf32"),
    "fp32-tf32x3": ("fp32", "tf32x3"),
}
ELEM_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ROWS = (8192, 65536)
DIMS = (64, 128, 256, 2048)
TEMPERATURE = 0.1  # SimCLR's usual value: the backward takes its shared-exponential path


@dataclass(frozen=True)
class Selection:
    """The slice of the full grid to analyse (every field defaults to all of it)."""

    arches: tuple[int, ...] = tuple(ARCHES)
    kernels: tuple[str, ...] = KERNELS
    precisions: tuple[str, ...] = tuple(PRECISIONS)
    dims: tuple[int, ...] = DIMS
    rows: tuple[int, ...] = ROWS
    all_configs: bool = False  # also compile the configs the prune drops


@dataclass
class Case:
    """One row of the results: a config of one kernel at one shape on one architecture."""

    arch: int
    kernel: str
    precision: str
    dim: int
    rows: int
    config: triton.Config
    kept: bool  # the autotuner keeps it on this architecture
    key: CompileKey
    block_d: int
    single_d: bool


def _heuristics(kernel: str) -> dict:
    from fastclr.bench.static.triton_compile import wrapped_kernel

    fn = wrapped_kernel(kernel)
    while not hasattr(fn, "values"):
        fn = fn.fn
    return fn.values


def role(kernel: str) -> str:
    """ "forward" or "backward": the pass a kernel is (family kernels included)."""
    return "forward" if kernel.endswith("forward") else "backward"


def _tuning(kernel: str):
    """The configs module that tunes `kernel`."""
    return family_configs if kernel in FAMILY_KERNELS else configs


def config_list(kernel: str) -> list[triton.Config]:
    if kernel == "weights":
        return configs.weights_configs()
    tuning = _tuning(kernel)
    return tuning.forward_configs() if role(kernel) == "forward" else tuning.backward_configs()


def launch_constexprs(
    kernel: str, precision: str, dim: int, rows: int, block_n: int, cc: int
) -> dict:
    """The constexprs the launcher passes (and its heuristics derive) for a single-GPU launch:
    M = C = 2N rows, contiguous operands (family kernels: the SupCon case, module docstring)."""
    dtype, dot_precision = PRECISIONS[precision]
    block_d, single_d = _feature_block(kernel, dim, ELEM_BYTES[dtype])
    values = {"BLOCK_D": block_d, "SINGLE_D": single_d, "DOT_PRECISION": dot_precision}
    if kernel == "weights":
        del values["SINGLE_D"]  # always the D loop
    if kernel in ("backward", "weights"):
        values["SHARED_EXP"] = 1 / TEMPERATURE <= SHARED_EXP_MAX_INV_TEMP
        values["SCALE_WEIGHTS"] = dtype == "fp16"
    if kernel == "forward":
        values["STATIC_SHIFT"] = 1 / TEMPERATURE <= STATIC_SHIFT_MAX_INV_TEMP
    if kernel in ("forward", "backward"):
        values["SPLIT_MASKS"] = configs.split_masks(cc, ELEM_BYTES[dtype], dot_precision, block_d)
    if kernel in FAMILY_KERNELS:
        values.update(HAS_SELF=True, HAS_QUEUE=False, DECOUPLED=False)
    if kernel == "family_backward":  # normalized rows: the shared exponential where allowed
        values.update(
            HAS_COLUMN_ROLE=True,
            SHARED_EXP=1 / TEMPERATURE <= SHARED_EXP_MAX_INV_TEMP,
            SCALE_WEIGHTS=dtype == "fp16",
        )
    args = {"M": rows, "C": rows, "K": 0, "D": dim, "BLOCK_N": block_n, **values}
    for name, rule in _heuristics(kernel).items():
        values[name] = bool(rule(args))
    return values


def _feature_block(kernel: str, dim: int, elem_bytes: int) -> tuple[int, bool]:
    """(BLOCK_D, SINGLE_D) the launcher uses for `kernel`: the weights kernel always loops over D."""
    if kernel == "weights":
        return configs.CHUNK_BLOCK_D, False
    return _tuning(kernel).feature_block(dim, elem_bytes)


def kept_configs(kernel: str, precision: str, dim: int, cc: int) -> list[triton.Config]:
    """The configs the autotuner keeps on sm_<cc>: the kernel's configs module's prune with that
    arch's limit."""
    dtype, dot_precision = PRECISIONS[precision]
    block_d, single_d = _feature_block(kernel, dim, ELEM_BYTES[dtype])
    return _tuning(kernel).fitting_configs(
        config_list(kernel),
        kernel if kernel == "weights" else role(kernel),
        block_d=block_d,
        single_d=single_d,
        elem_bytes=ELEM_BYTES[dtype],
        dot_precision=dot_precision,
        smem_limit=SMEM_LIMITS[cc],
    )


def cases(selection: Selection) -> list[Case]:
    out = []
    for cc in selection.arches:
        for kernel in selection.kernels:
            for precision in selection.precisions:
                dtype = PRECISIONS[precision][0]
                for dim in selection.dims:
                    if kernel == "weights" and dim < SLAB_MIN_FEATURES:
                        continue  # smaller D runs the fused backward
                    kept = kept_configs(kernel, precision, dim, cc)
                    pool = config_list(kernel) if selection.all_configs else kept
                    for rows in selection.rows:
                        for config in pool:
                            block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
                            constexprs = launch_constexprs(
                                kernel, precision, dim, rows, block_n, cc
                            )
                            key = CompileKey(
                                kernel,
                                dtype,
                                tuple(sorted(constexprs.items())),
                                block_m,
                                block_n,
                                config.num_warps,
                                config.num_stages,
                                cc,
                            )
                            out.append(
                                Case(
                                    cc,
                                    kernel,
                                    precision,
                                    dim,
                                    rows,
                                    config,
                                    config in kept,
                                    key,
                                    constexprs["BLOCK_D"],
                                    constexprs.get("SINGLE_D", False),
                                )
                            )
    return out
