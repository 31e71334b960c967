"""Ahead-of-time compilation of the Triton kernels for an explicit GPU target, with no GPU and no
driver: the path `JITFunction.run` takes (triton/runtime/jit.py), with the signature, constexprs and
divisibility attributes the launcher's arguments would produce spelled out.

Must run in a process without TRITON_INTERPRET=1 (under it @triton.jit builds interpreter functions
and the kernel configs collapse to the interpreter's single one); `fastclr bench static` runs its
compiles in worker processes with it removed.
"""

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastclr.bench.static import sass

# Argument-name conventions of kernels/nt_xent_*.py and family_*.py: unit feature strides are
# specialized to the constant 1 by the launcher (contiguous rows); pointers are 16-byte aligned
# (torch allocations); every integer size/stride is a multiple of 16 at the analysed shapes (the
# family's queue length K is 0 there, an ordinary i32 argument).
UNIT_STRIDES = ("stride_zrd", "stride_zcd", "stride_qd", "stride_gradd")
OPERAND_POINTERS = ("ZR_ptr", "ZC_ptr", "Q_ptr", "W_ptr")
INDEX_POINTERS = ("ROW_IDS_ptr", "ROW_LABELS_ptr", "COL_LABELS_ptr", "COUNT_ptr")
INTEGER_SIZES = ("M", "C", "K", "D")
FLOAT_SCALARS = ("inv_temp",)
POINTER_TYPES = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


@dataclass(frozen=True)
class CompileKey:
    """One compile: kernel, operand dtype, launch constexprs, config, target."""

    kernel: str  # "forward" | "backward" | "weights" | "family_forward" | "family_backward"
    dtype: str  # "bf16" | "fp16" | "fp32"
    constexprs: tuple[tuple[str, object], ...]  # sorted (name, value) of the launcher's constexprs
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    cc: int

    def label(self) -> str:
        return f"M{self.block_m}_N{self.block_n}_w{self.num_warps}_s{self.num_stages}"


def wrapped_kernel(kernel: str):
    """The kernel as the launcher calls it (autotune over heuristics over @triton.jit)."""
    if kernel == "forward":
        from fastclr.kernels.nt_xent_forward import nt_xent_forward_kernel as wrapped
    elif kernel == "backward":
        from fastclr.kernels.nt_xent_backward import nt_xent_backward_kernel as wrapped
    elif kernel == "weights":
        from fastclr.kernels.nt_xent_weights import nt_xent_weights_kernel as wrapped
    elif kernel == "family_forward":
        from fastclr.kernels.family_forward import family_forward_kernel as wrapped
    else:
        from fastclr.kernels.family_backward import family_backward_kernel as wrapped
    return wrapped


def jit_function(kernel: str):
    """The @triton.jit function under the kernel's autotune/heuristics wrappers."""
    fn = wrapped_kernel(kernel)
    while not hasattr(fn, "arg_names") or not hasattr(fn, "src"):
        fn = fn.fn
    return fn


def _signature(fn, dtype: str, constexprs: dict) -> tuple[dict, dict, dict]:
    signature, constants, attrs = {}, dict(constexprs), {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            continue
        if name in UNIT_STRIDES:
            constants[name] = 1
        elif name in OPERAND_POINTERS:
            signature[name] = POINTER_TYPES[dtype]
        elif name in INDEX_POINTERS:
            signature[name] = "*i64"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        elif name in FLOAT_SCALARS:
            signature[name] = "fp32"
        elif name[:1].islower() or name in INTEGER_SIZES:
            signature[name] = "i32"
        else:
            raise ValueError(f"{fn.__name__}: no launch value for constexpr {name}")
        if name in signature and name not in FLOAT_SCALARS:
            attrs[(index,)] = [["tt.divisibility", 16]]
    for name in constants:
        signature[name] = "constexpr"
    return {name: signature[name] for name in fn.arg_names}, constants, attrs


def _resource_usage(cuobjdump: Path, cubin: Path) -> dict:
    out = subprocess.run(
        [str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {key: int(value) for key, value in fields.items()}


def compile_and_analyse(key: CompileKey, tools: dict[str, Path]) -> dict:
    """Compile one kernel config for sm_<cc> and read its resources and hot loop. Returns a JSON-able
    record; a compile error is recorded (`error`), not raised."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    fn = jit_function(key.kernel)
    constexprs = dict(key.constexprs, BLOCK_M=key.block_m, BLOCK_N=key.block_n)
    signature, constants, attrs = _signature(fn, key.dtype, constexprs)
    target = GPUTarget("cuda", key.cc, 32)
    options = make_backend(target).parse_options(
        {"num_warps": key.num_warps, "num_stages": key.num_stages}
    )
    started = time.perf_counter()
    record: dict = {"triton": triton.__version__}
    try:
        compiled = triton.compile(
            ASTSource(fn, signature, constants, attrs), target=target, options=options.__dict__
        )
    except Exception as err:  # a config that stops compiling is a finding, not a crash
        record.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
        record["compile_s"] = round(time.perf_counter() - started, 2)
        return record
    record["compile_s"] = round(time.perf_counter() - started, 2)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = _resource_usage(tools["cuobjdump"], cubin)
        text = subprocess.run(
            [str(tools["nvdisasm"]), "-c", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    instructions, _ = sass.parse(text)
    loop = sass.hot_loop(text, key.num_warps)
    record.update(
        registers=usage.get("REG", 0),
        # Register spills live in the stack frame (these kernels make no calls and keep no local
        # arrays, so the frame is all spill); STL counts the spill stores in the code.
        spill_bytes=usage.get("STACK", 0),
        local_bytes=usage.get("LOCAL", 0),
        spill_stores=sum(i.opcode.startswith("STL") for i in instructions),
        shared_dynamic=int(compiled.metadata.shared),
        shared_static=usage.get("SHARED", 0),
        mma=sass.mma_kind(instructions),
        hot_loop=loop.to_dict() if loop else None,
        mma_loop_flops=sass.mma_loop_flops(text, key.num_warps),
        sass_instructions=len(instructions),
    )
    return record


def worker_environment() -> dict[str, str]:
    """os.environ without TRITON_INTERPRET, for compile worker processes."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env
