"""Static analysis of the CUDA extension (csrc/): each .cu compiled to a cubin for sm_80 and sm_90
with `nvcc -Xptxas -v` (registers, spills, shared memory per kernel) and disassembled (hot loop as in
sass.py). The tile shape is csrc/nt_xent_tiles.cuh's: 64 x 64 scores per step, 4 warps, reduction in
64-wide (16-bit) or 32-wide (fp32) chunks of D.

Its per-thread element loops nest inside the column loop and are counted once, so its instructions
and MUFU.EX2 per element are LOWER BOUNDS (the Triton kernels' counts are exact).
"""

import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

from fastclr.bench.static import sass
from fastclr.bench.static.arches import ARCHES as ALL_ARCHES
from fastclr.bench.static.occupancy import ctas_per_sm
from fastclr.bench.static.toolchain import require_tools

ARCHES = (80, 90)  # sm_80 binaries also run on sm_86/sm_89 (cuda_backend.DEFAULT_ARCH_LIST)
SOURCES = ("nt_xent_forward.cu", "nt_xent_backward.cu")
BLOCK_M = BLOCK_N = 64
NUM_WARPS = 4
TEMPLATE_DTYPES = {"I13__nv_bfloat16E": "bf16", "I6__halfE": "fp16", "IfE": "fp32"}
_PTXAS_FUNCTION = re.compile(r"Function properties for (\S+)")
_PTXAS_SPILL = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_USED = re.compile(r"Used (\d+) registers.*?(\d+) bytes smem")


def source_dir() -> Path:
    from fastclr.ops.cuda_backend import source_dir as find

    found = find()
    if found is None:
        raise FileNotFoundError("csrc/ sources not found (run from a fastclr checkout)")
    return found


def nvcc_version() -> str:
    nvcc = require_tools(("nvcc",))["nvcc"]
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
    return next((line for line in out.splitlines() if "release" in line), out.strip())


def _ptxas_report(log: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        match = _PTXAS_FUNCTION.search(line)
        if match:
            current = match.group(1)
            found[current] = {}
            continue
        if current is None:
            continue
        spill = _PTXAS_SPILL.search(line)
        if spill:
            found[current]["stack_bytes"] = int(spill.group(1))
            found[current]["spill_bytes"] = int(spill.group(2))
        used = _PTXAS_USED.search(line)
        if used:
            found[current]["registers"] = int(used.group(1))
            found[current]["shared_static"] = int(used.group(2))
    return found


def _compile(source: Path, cc: int, tools: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        command = [str(tools["nvcc"]), "-cubin", f"-arch=sm_{cc}", "-O3", "-std=c++17"]
        command += ["-Xptxas", "-v", "-o", str(cubin), str(source)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            return [{"source": source.name, "error": done.stderr.strip()[-400:]}]
        report = _ptxas_report(done.stdout + done.stderr)
        text = subprocess.run(
            [str(tools["nvdisasm"]), "-c", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    parts = re.split(r"^//-+ \.text\.(\S+) -+$", text, flags=re.M)
    records = []
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        dtype = next((d for tag, d in TEMPLATE_DTYPES.items() if tag in name), "?")
        instructions, _ = sass.parse(body)
        loop = sass.hot_loop(body, NUM_WARPS)
        records.append(
            {
                "source": source.name,
                "kernel": "forward" if "forward" in name else "backward",
                "dtype": dtype,
                **report.get(name, {}),
                "mma": sass.mma_kind(instructions) if dtype != "fp32" else "none (FFMA)",
                "hot_loop": loop.to_dict() if loop else None,
            }
        )
    return records


def analyse(arches: list[int], cache_dir: Path, log=print) -> list[dict]:
    """One record per (arch, kernel, dtype) of the extension, cached by source and nvcc version."""
    if not arches:
        return []
    tools = require_tools(("nvcc", "nvdisasm"))
    src = source_dir()
    digest = hashlib.sha256(nvcc_version().encode())
    for path in sorted(src.iterdir()):
        if path.suffix in (".cu", ".cuh", ".h"):
            digest.update(path.read_bytes())
    records = []
    for cc in arches:
        cache = cache_dir / f"cuda-{digest.hexdigest()[:24]}-sm{cc}.json"
        if cache.is_file():
            found = json.loads(cache.read_text())
        else:
            log(f"nvcc: compiling csrc/ for sm_{cc}")
            found = [r for name in SOURCES for r in _compile(src / name, cc, tools)]
            if not any("error" in r for r in found):
                cache.write_text(json.dumps(found))
        for record in found:
            record["arch"] = ALL_ARCHES[cc].name
            record["cc"] = cc
            records.append(derive(record))
    return records


def derive(record: dict) -> dict:
    """Occupancy and per-element lower bounds (at D = 128: two 64-wide or four 32-wide D chunks)."""
    if "error" in record or "registers" not in record:
        return record
    arch = ALL_ARCHES[record["cc"]]
    shared = record["shared_static"]
    ctas, limiter = ctas_per_sm(arch, record["registers"], NUM_WARPS, shared)
    record.update(
        fits=shared <= arch.smem_per_block_optin,
        ctas_per_sm=ctas,
        occupancy=round(ctas * NUM_WARPS * 32 / arch.max_threads_per_sm, 4),
        limiter=limiter,
    )
    loop = record.get("hot_loop")
    if loop:
        trips = 128 // (32 if record["dtype"] == "fp32" else 64)
        per_element = 32 * NUM_WARPS / (BLOCK_M * BLOCK_N)
        instructions = loop["instructions"] + trips * loop["inner_instructions"]
        mufu = loop["mufu_ex2"] + trips * loop["inner_mufu_ex2"]
        record.update(
            instructions_per_element_at_least=round(instructions * per_element, 2),
            mufu_ex2_per_element_at_least=round(mufu * per_element, 3),
            nested_loops=loop["nested_loops"],
        )
    return record
