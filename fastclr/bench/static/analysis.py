"""Run the static analysis: compile every selected case (in parallel, through a disk cache), then
derive per case whether it fits, its occupancy, its hot-loop cost per score element and, on sm_90,
the roofline's ESTIMATED time on H100 SXM and H200.

Result schema "fastclr-static/1" (JSON):
  env      triton / ptxas / nvcc versions, timestamp, wall time, the selection
  triton   one record per (arch, kernel, precision, D, 2N, config): compile figures (registers,
           spill_bytes, shared_dynamic, shared_static, mma), fits, ctas_per_sm, occupancy, limiter,
           instructions_per_element, mufu_ex2_per_element, kept (the autotuner keeps it there),
           estimate (sm_90 only: ESTIMATED µs per GPU) and predicted_pick (lowest estimate of the
           kept configs: the model's guess at the autotuner's choice, not a measurement)
  cuda     the CUDA extension's kernels (see cuda_ext.py)
"""

import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

from fastclr.bench.static import roofline
from fastclr.bench.static.arches import ARCHES
from fastclr.bench.static.cases import (
    ALL_KERNELS,
    ELEM_BYTES,
    KERNELS,
    PRECISIONS,
    Case,
    Selection,
    cases,
    role,
)
from fastclr.bench.static.occupancy import ctas_per_sm
from fastclr.bench.static.render import pick_order
from fastclr.bench.static.toolchain import require_tools
from fastclr.bench.static.triton_compile import (
    CompileKey,
    compile_and_analyse,
    jit_function,
    worker_environment,
)
from fastclr.errors import UsageError
from fastclr.kernels import configs

SCHEMA = "fastclr-static/1"
ANALYSIS_VERSION = 3  # bump when the SASS reading changes: invalidates cached records
TRITON_TOOLS = ("ptxas", "nvdisasm", "cuobjdump")
# Serialized estimates this close to the lowest count as ties for the model's pick: partial waves
# and rounding of tiles per split move the estimate by a few percent, the model's error is ±30-50%.
PICK_TIE = 0.05


def default_cache_dir() -> Path:
    if os.environ.get("FASTCLR_STATIC_CACHE"):
        return Path(os.environ["FASTCLR_STATIC_CACHE"])
    return Path.home() / ".cache" / "fastclr" / "static"


def tool_version(path: Path) -> str:
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
    lines = [line for line in out.splitlines() if "release" in line or "Build" in line]
    return " ".join(lines).strip() or out.strip().splitlines()[-1]


def _cache_path(cache_dir: Path, key: CompileKey, fingerprint: str) -> Path:
    text = json.dumps([fingerprint, repr(key)])
    return cache_dir / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".json")


def _compile_job(key: CompileKey, tools: dict, path: str) -> tuple[CompileKey, dict]:
    record = compile_and_analyse(key, tools)
    if "error" not in record:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
    return key, record


def _init_worker(env: dict) -> None:
    os.environ.clear()
    os.environ.update(env)


def compile_all(
    keys: list[CompileKey], jobs: int, cache_dir: Path, log=print, stats: dict | None = None
) -> dict[CompileKey, dict]:
    """Compile records for `keys`: from the disk cache where present, else compiled with `jobs`
    worker processes. `stats` (if given) receives the total and cached counts."""
    stats = {} if stats is None else stats
    import triton

    tools = {name: str(path) for name, path in require_tools(TRITON_TOOLS).items()}
    fingerprint = json.dumps(
        [
            triton.__version__,
            tool_version(Path(tools["ptxas"])),
            ANALYSIS_VERSION,
            {
                kernel: jit_function(kernel).cache_key
                for kernel in ALL_KERNELS
                if kernel in KERNELS or any(key.kernel == kernel for key in keys)
            },
        ]
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    records: dict[CompileKey, dict] = {}
    todo = []
    for key in keys:
        path = _cache_path(cache_dir, key, fingerprint)
        if path.is_file():
            records[key] = json.loads(path.read_text())
        else:
            todo.append((key, str(path)))
    log(f"{len(keys)} compiles: {len(records)} cached, {len(todo)} to do on {jobs} processes")
    stats.update(total=len(keys), cached=len(records))
    if not todo:
        return records
    started = time.perf_counter()
    with ProcessPoolExecutor(
        max_workers=jobs, initializer=_init_worker, initargs=(worker_environment(),)
    ) as pool:
        futures = [pool.submit(_compile_job, key, tools, path) for key, path in todo]
        for done, future in enumerate(as_completed(futures), 1):
            key, record = future.result()
            records[key] = record
            if done % 25 == 0 or done == len(futures):
                log(f"  compiled {done}/{len(futures)} ({time.perf_counter() - started:.0f} s)")
    return records


def _hbm_bytes(kernel: str, rows: int, dim: int, elem_bytes: int) -> int:
    operands = 2 * rows * dim * elem_bytes  # zr and zc (M = C = 2N), each read from HBM once
    if role(kernel) == "forward":
        return operands + 2 * rows * 4
    return operands + rows * dim * 4 + 2 * rows * 4


def derive(case: Case, record: dict) -> dict:
    """One result row: the compile record plus what follows from it at this shape and arch."""
    arch = ARCHES[case.arch]
    block_m, block_n = case.key.block_m, case.key.block_n
    warps = case.key.num_warps
    row = {
        "arch": arch.name,
        "cc": case.arch,
        "kernel": case.kernel,
        "precision": case.precision,
        "dim": case.dim,
        "rows": case.rows,
        "config": case.key.label(),
        "block_m": block_m,
        "block_n": block_n,
        "block_d": case.block_d,
        "single_d": case.single_d,
        "num_warps": warps,
        "num_stages": case.key.num_stages,
        "kept": case.kept,
        **{k: v for k, v in record.items() if k != "hot_loop"},
    }
    if "error" in record:
        row["fits"] = False
        return row
    shared = record["shared_dynamic"] + record["shared_static"]
    row["shared_bytes"] = shared
    row["smem_limit"] = arch.smem_per_block_optin
    row["fits"] = shared <= arch.smem_per_block_optin
    ctas, limiter = ctas_per_sm(arch, record["registers"], warps, shared)
    row.update(
        ctas_per_sm=ctas,
        occupancy=round(ctas * warps * 32 / arch.max_threads_per_sm, 4),
        limiter=limiter,
    )
    if case.kernel == "weights":
        # Every score once over all of D, then the launcher's W·zc product (2·C²·D by construction).
        trips = -(-case.dim // case.block_d)
        scores = record.get("mma_loop_flops", 0) * warps * trips / (block_m * block_n * case.dim)
        row["tensor_flops_per_c2d"] = round(scores + 2, 2)
        return row
    loop = record.get("hot_loop")
    if not loop:
        return row
    trips = 1 if case.single_d else -(-case.dim // case.block_d)
    instructions = loop["instructions"] + trips * loop["inner_instructions"]
    mufu = loop["mufu_ex2"] + trips * loop["inner_mufu_ex2"]
    flops = loop["mma_flops"] + trips * loop["inner_mma_flops"]
    per_element = 32 * warps / (block_m * block_n)  # thread-instructions per score element
    row.update(
        loop_instructions=instructions,
        loop_mufu_ex2=mufu,
        loop_mma_flops=flops,
        instructions_per_element=round(instructions * per_element, 2),
        mufu_ex2_per_element=round(mufu * per_element, 3),
        nested_loops=loop["nested_loops"],
    )
    if case.kernel == "backward":  # every output slice recomputes the scores over all of D
        slices = -(-case.dim // case.block_d)
        row["tensor_flops_per_c2d"] = round(
            flops * warps * slices / (block_m * block_n * case.dim), 2
        )
    if case.arch == 90 and row["fits"]:
        grid_d = 1 if role(case.kernel) == "forward" else -(-case.dim // case.block_d)
        # The NT-Xent launchers split the column tiles to fill the GPU; the family kernels do not.
        splits = configs.column_splits(case.rows, case.rows, roofline.SMS)
        if case.kernel not in KERNELS:
            splits = 1
        tiles = -(-case.rows // block_n)
        row["column_splits"] = splits
        hbm = _hbm_bytes(
            case.kernel, case.rows, case.dim, ELEM_BYTES[PRECISIONS[case.precision][0]]
        )
        row["estimate"] = {
            gpu.name: {
                key: round(value, 2)
                for key, value in roofline.kernel_estimate_us(
                    precision=case.precision,
                    ctas=-(-case.rows // block_m) * grid_d * splits,
                    tiles_per_cta=-(-tiles // splits),
                    num_warps=warps,
                    instructions=instructions,
                    mufu_ex2=mufu,
                    mma_flops=flops,
                    hbm_bytes=hbm,
                    gpu=gpu,
                    resident_ctas=ctas,
                ).items()
            }
            for gpu in roofline.GPUS
        }
        row["estimate_floor_us"] = {
            gpu.name: round(
                roofline.floor_us(
                    kernel=case.kernel,
                    rows=case.rows,
                    cols=case.rows,
                    dim=case.dim,
                    precision=case.precision,
                    hbm_bytes=hbm,
                    gpu=gpu,
                ),
                2,
            )
            for gpu in roofline.GPUS
        }
    return row


def mark_predicted_picks(rows: list[dict]) -> None:
    """Flag, per (arch, kernel, precision, D, 2N), the kept config with the lowest serialized
    H100 estimate: the roofline's guess at what the autotuner picks (sm_90 only). Estimates within
    PICK_TIE of the lowest are ties (the model ignores far larger effects), broken by the fewer
    instructions per score element, which leave the scheduler more room."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("estimate") and row["kept"]:
            key = (row["cc"], row["kernel"], row["precision"], row["dim"], row["rows"])
            groups.setdefault(key, []).append(row)
    for members in groups.values():
        lowest = min(pick_order(r)[0] for r in members)
        tied = [r for r in members if pick_order(r)[0] <= lowest * (1 + PICK_TIE)]
        best = min(tied, key=lambda r: pick_order(r)[::-1])
        best["predicted_pick"] = True


def run(
    selection: Selection,
    jobs: int = 2,
    cache_dir: Path | None = None,
    with_cuda: bool = True,
    log=print,
) -> dict:
    """The full result document (schema fastclr-static/1) for `selection`."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise UsageError(
            "TRITON_INTERPRET=1 is set: the static analysis compiles for real GPUs; unset it"
        )
    import triton

    started = time.perf_counter()
    cache_dir = cache_dir or default_cache_dir()
    all_cases = cases(selection)
    keys = list(dict.fromkeys(case.key for case in all_cases))
    stats: dict = {}
    records = compile_all(keys, jobs, cache_dir, log, stats)
    rows = [derive(case, records[case.key]) for case in all_cases]
    mark_predicted_picks(rows)
    tools = require_tools(TRITON_TOOLS)
    document = {
        "schema": SCHEMA,
        "env": {
            "triton": triton.__version__,
            "ptxas": tool_version(tools["ptxas"]),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "selection": {
                "arches": [ARCHES[cc].name for cc in selection.arches],
                "kernels": list(selection.kernels),
                "precisions": list(selection.precisions),
                "dims": list(selection.dims),
                "rows": list(selection.rows),
                "all_configs": selection.all_configs,
            },
        },
        "triton": rows,
        "cuda": [],
    }
    document["env"]["compiles"] = stats
    if with_cuda:
        from fastclr.bench.static import cuda_ext

        document["cuda"] = cuda_ext.analyse(
            [cc for cc in selection.arches if cc in cuda_ext.ARCHES], cache_dir, log
        )
        document["env"]["nvcc"] = cuda_ext.nvcc_version()
    document["env"]["wall_s"] = round(time.perf_counter() - started, 1)
    return document
