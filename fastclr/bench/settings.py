"""What one benchmark session measures: the cases (LossCase, BudgetCase) and the sizes, dtypes,
budgets and limits (Settings) read from bench/conftest.py's options for this device.

Sizes (2N = rows of cat(z1, z2)); --bench-rows/--bench-dims/--bench-dtypes replace a grid,
--bench-max-rows caps it:
    CPU  2N 256..4096, D 128, fp32: a few minutes on 2 cores
    GPU  2N 1024..1,048,576 at D 128 and 2N in {1024, 8192, 65536, 1048576} at D 64 and 256,
         fp32/fp16/bf16, as far as each implementation fits (out of memory -> skipped and recorded)
    CI   2N 96, D 48, fp32 (and bf16 on a GPU)
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastclr.bench import memory

MIB = 2**20

CPU_ROWS = (256, 512, 1024, 2048, 4096)
GPU_ROWS = tuple(2**k for k in range(10, 21))
GPU_SIDE_DIMS, GPU_SIDE_ROWS = (64, 256), (1024, 8192, 65536, 1048576)
CI_ROWS, CI_DIM = (96,), 48


@dataclass(frozen=True)
class LossCase:
    impl: str
    mode: str
    rows: int
    dim: int
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.impl}-{self.mode}-2N{self.rows}-D{self.dim}-{self.dtype}"


@dataclass(frozen=True)
class BudgetCase:
    impl: str
    dim: int
    dtype: str
    budget_bytes: int

    @property
    def id(self) -> str:
        return f"{self.impl}-D{self.dim}-{self.dtype}-{self.budget_bytes // MIB}MiB"


@dataclass(frozen=True)
class Settings:
    """Everything that depends on the device and on whether this run times (full) or only checks."""

    device: torch.device
    full: bool
    grid: tuple[tuple[int, int, str], ...]  # (rows, dim, dtype) timed by the loss suite
    peer_grid: tuple[tuple[int, int, str], ...]
    impls: tuple[str, ...] | None  # only these implementations (None: all)
    budgets: tuple[int, ...]  # bytes: one largest-batch search per budget
    budget_rows: tuple[int, ...]
    budget_dim: int
    budget_dtypes: tuple[str, ...]
    max_call_s: float
    dense_limit: int  # largest 2N checked against the float64 reference
    oracle_block_bytes: int
    target_s: float  # time spent timing one case
    min_rounds: int
    max_rounds: int
    memory_limit_bytes: int | None  # CPU: sizes predicted above this are skipped, not tried
    deadline_s: float | None  # cases starting later than this after the session began: skipped
    results_dir: Path
    results_prefix: str  # file name: <prefix><UTC time>.json


def int_list(text: str) -> tuple[int, ...]:
    """'1024,4096' -> (1024, 4096): the type of the comma-separated size options."""
    return tuple(int(part) for part in text.split(",") if part.strip())


def str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def make_settings(config: pytest.Config, default_results_dir: Path) -> Settings:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    full = bool(config.getoption("benchmark_only", False))
    max_rows = config.getoption("bench_max_rows", None) or 2**62
    rows_opt = config.getoption("bench_rows", None)
    dims_opt = config.getoption("bench_dims", None)
    dtypes_opt = config.getoption("bench_dtypes", None)
    if not full:
        dtypes = ("float32", "bfloat16") if gpu else ("float32",)
        grid = tuple((rows, CI_DIM, dt) for dt in dtypes for rows in CI_ROWS)
        peer_grid, budget_rows = grid, (64, 128, 256)
    elif gpu:
        grid = tuple(
            (rows, dim, dt)
            for dt in ("bfloat16", "float16", "float32")
            for dim in (128, *GPU_SIDE_DIMS)
            for rows in (GPU_ROWS if dim == 128 else GPU_SIDE_ROWS)
        )
        peer_grid = tuple(c for c in grid if c[1] == 128)
        budget_rows = GPU_ROWS
    else:
        grid = peer_grid = tuple((rows, 128, "float32") for rows in CPU_ROWS)
        budget_rows = tuple(2**k for k in range(8, 14))
    if full and (rows_opt or dims_opt or dtypes_opt):
        grid = peer_grid = tuple(
            (rows, dim, dt)
            for dt in dtypes_opt or ("float32",)
            for dim in dims_opt or (128,)
            for rows in rows_opt or (CPU_ROWS if not gpu else GPU_ROWS)
        )
    budget_max = config.getoption("bench_budget_max_rows", None)
    budget_mib = config.getoption("bench_budget_mib", None) or ("8192" if gpu else "512")
    available = None if gpu else memory.available_bytes()
    limit = None if available is None else available // 2
    budgets = []
    for part in str_list(budget_mib):
        if part == "device":  # all this device holds: torch's total, or half the free RAM
            budgets.append(torch.cuda.get_device_properties(device).total_memory if gpu else limit)
        else:
            budgets.append(int(part) * MIB)
    impls_opt = config.getoption("bench_impls", None)
    return Settings(
        device=device,
        full=full,
        grid=tuple(c for c in grid if c[0] <= max_rows),
        peer_grid=tuple(c for c in peer_grid if c[0] <= max_rows),
        impls=impls_opt or None,
        budgets=tuple(budgets) if full else (2 * MIB,),
        budget_rows=tuple(r for r in budget_rows if budget_max is None or r <= budget_max),
        budget_dim=(dims_opt or (128,))[0] if full else CI_DIM,
        budget_dtypes=dtypes_opt or (("bfloat16", "float32") if gpu and full else (grid[0][2],)),
        max_call_s=config.getoption("bench_max_call_s", 10.0),
        dense_limit=16384 if gpu else 4096,
        oracle_block_bytes=(2048 if gpu else 256) * MIB,
        target_s=config.getoption("bench_target_s", None) or (1.0 if gpu else 2.0),
        min_rounds=10 if gpu else 3,
        max_rounds=200 if gpu else 50,
        memory_limit_bytes=limit,
        deadline_s=config.getoption("bench_deadline_s", None),
        results_dir=config.getoption("bench_results", None) or default_results_dir,
        results_prefix=config.getoption("bench_prefix", None) or "",
    )
