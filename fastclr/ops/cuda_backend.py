"""The "cuda" backend: fused NT-Xent primitives from the CUDA C++ extension in csrc/.

Implements the contract of fastclr/ops/chunked.py (`forward_rows`, `backward_rows`) with kernels
that never allocate a C x C tensor: extra memory is the [M] / [M, D] fp32 outputs plus shared
memory. fp16/bf16 tile products run on tensor cores (WMMA, fp32 accumulation), fp32 on CUDA-core
FMAs (no tf32). Tiles reach shared memory through a double-buffered pipeline of 16-byte cp.async
copies when every row of zr and zc starts 16-byte aligned (D % 8 == 0 for fp16/bf16, D % 4 == 0 for
fp32, aligned storage), else element-wise loads; the extension picks per call. Needs compute
capability 8.0+.

The extension is found in this order: the ahead-of-time module `fastclr._C_nt_xent` (built by
`FASTCLR_BUILD_CUDA=1 pip install --no-build-isolation .`), else a JIT build with ninja of csrc/
into a per-user cache (`$FASTCLR_CUDA_CACHE`, else `$TORCH_EXTENSIONS_DIR/fastclr`, else
`~/.cache/fastclr/cuda_ext`), reused until the sources change. Nothing is imported or compiled
until the first call: `import fastclr` stays cheap.
"""

import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

EXTENSION_NAME = "fastclr_nt_xent"
SOURCE_FILES = ("nt_xent.cpp", "nt_xent_forward.cu", "nt_xent_backward.cu")
HEADER_FILES = ("nt_xent_params.h", "nt_xent_tiles.cuh")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# sm_80 covers every Ampere/Ada GPU (same-major binaries run on 8.6/8.9), sm_90 Hopper; the PTX
# lets newer GPUs JIT-compile the kernels.
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
NVCC_FLAGS = ("-O3", "-lineinfo")

_lock = threading.Lock()
_extension: ModuleType | None = None
_load_error: str | None = None


def source_dir() -> Path | None:
    """csrc/ of a source checkout (editable install), else the copy installed as fastclr/csrc."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "csrc", here.parents[1] / "csrc"):
        if all((candidate / name).is_file() for name in SOURCE_FILES):
            return candidate
    return None


def cache_dir() -> Path:
    """Per-user build directory, one per torch/CUDA version so different installs never clash."""
    if os.environ.get("FASTCLR_CUDA_CACHE"):
        base = Path(os.environ["FASTCLR_CUDA_CACHE"])
    elif os.environ.get("TORCH_EXTENSIONS_DIR"):
        base = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "fastclr"
    else:
        base = Path.home() / ".cache" / "fastclr" / "cuda_ext"
    tag = f"torch{torch.__version__.split('+')[0]}_cu{torch.version.cuda}".replace(".", "")
    return base / tag


def _set_build_environment() -> None:
    # torch guesses CUDA_HOME from nvcc on PATH and reads the arch list from the visible GPU; on a
    # machine without one (CI) both must be given, and cpp_extension reads CUDA_HOME at import.
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)


def _needs_compile(build_dir: Path, sources: list[Path]) -> bool:
    built = list(build_dir.glob(f"{EXTENSION_NAME}*.so"))
    if not built:
        return True
    newest_source = max(path.stat().st_mtime for path in sources)
    return max(path.stat().st_mtime for path in built) < newest_source


def _jit_build() -> ModuleType:
    src = source_dir()
    if src is None:
        raise RuntimeError(
            "the csrc/ CUDA sources are not installed; build the extension ahead of time with "
            "FASTCLR_BUILD_CUDA=1 pip install --no-build-isolation ."
        )
    _set_build_environment()
    from torch.utils import cpp_extension

    build_dir = cache_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [src / name for name in SOURCE_FILES]
    compiling = _needs_compile(build_dir, sources + [src / name for name in HEADER_FILES])
    if compiling:
        print("fastclr: compiling the CUDA extension (first use, ~1 min)...", file=sys.stderr)
    start = time.perf_counter()
    module = cpp_extension.load(
        name=EXTENSION_NAME,
        sources=[str(path) for path in sources],
        extra_cflags=["-O3"],
        extra_cuda_cflags=list(NVCC_FLAGS),
        extra_include_paths=[str(src)],
        build_directory=str(build_dir),
        verbose=os.environ.get("FASTCLR_VERBOSE_BUILD") == "1",
    )
    if compiling:
        took = time.perf_counter() - start
        print(f"fastclr: CUDA extension built in {took:.0f} s ({build_dir})", file=sys.stderr)
    return module


def load_extension() -> ModuleType:
    """The compiled extension module: the ahead-of-time build if installed, else JIT (cached).

    Raises RuntimeError (with the compiler's message) when it cannot be built; a failure is
    remembered so later calls fail fast instead of recompiling.
    """
    global _extension, _load_error
    with _lock:
        if _extension is not None:
            return _extension
        if _load_error is not None:
            raise RuntimeError(_load_error)
        try:
            from fastclr import _C_nt_xent as module
        except ImportError:
            try:
                module = _jit_build()
            except (
                Exception
            ) as err:  # compiler errors come as RuntimeError, missing tools as OSError
                _load_error = f"extension failed to build: {err}"
                raise RuntimeError(_load_error) from err
        _extension = module
        return module


def availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the backend runs tensors of this device and dtype, else a short reason."""
    device = torch.device(device)
    if device.type != "cuda":
        return "needs a CUDA tensor"
    if dtype not in SUPPORTED_DTYPES:
        return f"supports float32, float16 and bfloat16, not {dtype}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"needs compute capability 8.0+ (sm_80), this GPU is {major}.{minor}"
    try:
        load_extension()
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


def forward_rows(
    zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row masked log-sum-exps and positive logit (contract: chunked.forward_rows).

    Args:
        zr: [M, D] normalized rows, fp32/fp16/bf16 on a CUDA device.
        zc: [C, D] all normalized columns, same dtype and device; C even.
        row_ids: [M] int64, zr[i] == zc[row_ids[i]].
        inv_temp: 1 / temperature.

    Returns:
        lse [M] fp32 (self column excluded), pos_logit [M] fp32 and lse_neg [M] fp32 (self and
        positive columns excluded).
    """
    return load_extension().forward_rows(
        zr.contiguous(), zc.contiguous(), row_ids.contiguous(), float(inv_temp)
    )


def backward_rows(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    lse_neg_c: Tensor,
    g_c: Tensor,
    inv_temp: float,
) -> Tensor:
    """Gradient of sum_j g_j loss_j with respect to zr (contract: chunked.backward_rows).

    Args:
        zr, zc, row_ids, inv_temp: as in forward_rows.
        lse_c: [C] fp32 log-sum-exp of every global row.
        lse_neg_c: [C] fp32 its negatives-only log-sum-exp.
        g_c: [C] fp32 upstream gradient of every global row's loss.

    Returns:
        [M, D] fp32.
    """
    return load_extension().backward_rows(
        zr.contiguous(),
        zc.contiguous(),
        row_ids.contiguous(),
        lse_c.float().contiguous(),
        lse_neg_c.float().contiguous(),
        g_c.float().contiguous(),
        float(inv_temp),
    )
