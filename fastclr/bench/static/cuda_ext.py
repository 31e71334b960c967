"""Static analysis of the CUDA extension (csrc/): each .cu compiled to a cubin for sm_80 and sm_90
with `nvcc -Xptxas -v` (registers, spills, static shared memory per kernel) and disassembled (hot loop
as in sass.py; global loads by width). The kernels' dynamic shared memory and tile constants
(csrc/nt_xent_tiles.cuh: ForwardSmem, BackwardSmem, TileConfig) are read by compiling and running a
small host-only probe that includes the header, so nothing here restates them. The tile shape:
64 x 64 scores per step, 4 warps, reduction in kBlockD-wide chunks of D.

Each kernel comes in two variants: 16-byte cp.async tile copies (what the host picks when the rows are
16-byte aligned, the production path) and element-wise loads. Its per-thread element loops nest inside
the column loop and are counted once, so its instructions and MUFU.EX2 per element are LOWER BOUNDS
(the Triton kernels' counts are exact), and so is the roofline ESTIMATE built on them (estimate()).
"""

import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

from fastclr.bench.static import roofline, sass
from fastclr.bench.static.arches import ARCHES as ALL_ARCHES
from fastclr.bench.static.occupancy import ctas_per_sm
from fastclr.bench.static.toolchain import require_tools

ARCHES = (80, 90)  # sm_80 binaries also run on sm_86/sm_89 (cuda_backend.DEFAULT_ARCH_LIST)
SOURCES = ("nt_xent_forward.cu", "nt_xent_backward.cu")
BLOCK_M = BLOCK_N = 64
NUM_WARPS = 4
TEMPLATE_DTYPES = {"I13__nv_bfloat16": "bf16", "I6__half": "fp16", "If": "fp32"}
# The kernels' second template argument (kVec): "Lb1E" = 16-byte cp.async copies, "Lb0E" = scalar.
VARIANTS = {"Lb1E": "16-byte", "Lb0E": "element-wise"}
# The size the target is stated at (issue #14), and the plain PyTorch reference's ESTIMATE there
# (forward + backward, bf16, H100 SXM: ~15 passes over the C x C scores; docs/static-analysis.md).
ESTIMATE_ROWS = 8192
ESTIMATE_DIM = 128
REFERENCE_ESTIMATE_US = (750.0, 900.0)
_PROBE = r"""
#include <cstdio>
#include "nt_xent_tiles.cuh"
template <typename T>
void row(const char* name) {
  std::printf("%s %d %d %d %d\n", name, fastclr::ForwardSmem<T>::kBytes,
              fastclr::BackwardSmem<T>::kBytes, fastclr::TileConfig<T>::kBlockD,
              fastclr::TileConfig<T>::kBlockDOut);
}
int main() {
  row<__nv_bfloat16>("bf16");
  row<__half>("fp16");
  row<float>("fp32");
}
"""
_WIDE_LOAD = re.compile(r"^LDG(STS)?\.\S*128$")
_PTXAS_FUNCTION = re.compile(r"Function properties for (\S+)")
_PTXAS_SPILL = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


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
            found[current]["shared_static"] = int(used.group(2) or 0)
    return found


def tile_constants(src: Path, tools: dict) -> dict[str, dict]:
    """{dtype: {shared_dynamic_forward, shared_dynamic_backward, block_d, block_d_out}} from a host
    build of csrc/nt_xent_tiles.cuh."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cu"
        probe.write_text(_PROBE)
        command = [str(tools["nvcc"]), "-std=c++17", "-I", str(src), "-o", str(Path(tmp) / "probe")]
        subprocess.run(command + [str(probe)], capture_output=True, text=True, check=True)
        out = subprocess.run([str(Path(tmp) / "probe")], capture_output=True, text=True, check=True)
    found = {}
    for line in out.stdout.splitlines():
        dtype, forward, backward, block_d, block_d_out = line.split()
        found[dtype] = {
            "shared_dynamic_forward": int(forward),
            "shared_dynamic_backward": int(backward),
            "block_d": int(block_d),
            "block_d_out": int(block_d_out),
        }
    return found


def global_loads(instructions: list[sass.Instruction], lo: int = 0, hi: int | None = None) -> dict:
    """Global loads in [lo, hi] by width: LDGSTS (cp.async) and LDG of 16 bytes vs narrower."""
    wide = narrow = 0
    for ins in instructions:
        if ins.address < lo or (hi is not None and ins.address > hi):
            continue
        if not ins.opcode.startswith("LDG") or ins.opcode.startswith("LDGDEPBAR"):
            continue
        if _WIDE_LOAD.match(ins.opcode):
            wide += 1
        else:
            narrow += 1
    return {"16-byte": wide, "narrower": narrow}


def _compile(source: Path, cc: int, tools: dict, constants: dict) -> list[dict]:
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
        dtype = next((d for tag, d in TEMPLATE_DTYPES.items() if f"kernel{tag}" in name), "?")
        kernel = "forward" if "forward" in name else "backward"
        instructions, _ = sass.parse(body)
        loop = sass.hot_loop(body, NUM_WARPS)
        tile = constants.get(dtype, {})
        records.append(
            {
                "source": source.name,
                "kernel": kernel,
                "dtype": dtype,
                "variant": next((v for tag, v in VARIANTS.items() if tag in name), "?"),
                **report.get(name, {}),
                "shared_dynamic": tile.get(f"shared_dynamic_{kernel}", 0),
                "block_d": tile.get("block_d"),
                "block_d_out": tile.get("block_d_out"),
                "mma": sass.mma_kind(instructions) if dtype != "fp32" else "none (FFMA)",
                "global_loads": global_loads(instructions),
                "hot_loop_global_loads": (
                    global_loads(instructions, loop.start, loop.end) if loop else None
                ),
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
    digest.update(Path(__file__).read_bytes())  # a change of what is read invalidates the cache
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
            constants = tile_constants(src, tools)
            found = [r for name in SOURCES for r in _compile(src / name, cc, tools, constants)]
            if not any("error" in r for r in found):
                cache.write_text(json.dumps(found))
        for record in found:
            record["arch"] = ALL_ARCHES[cc].name
            record["cc"] = cc
            records.append(derive(record))
    return records


def derive(record: dict) -> dict:
    """Occupancy, per-element lower bounds at D = ESTIMATE_DIM (D / kBlockD chunks per column tile)
    and, for sm_90, the roofline ESTIMATE at 2N = ESTIMATE_ROWS."""
    if "error" in record or "registers" not in record:
        return record
    arch = ALL_ARCHES[record["cc"]]
    shared = record["shared_static"] + record.get("shared_dynamic", 0)
    ctas, limiter = ctas_per_sm(arch, record["registers"], NUM_WARPS, shared)
    record.update(
        shared_bytes=shared,
        fits=shared <= arch.smem_per_block_optin,
        ctas_per_sm=ctas,
        occupancy=round(ctas * NUM_WARPS * 32 / arch.max_threads_per_sm, 4),
        limiter=limiter,
    )
    loop = record.get("hot_loop")
    if loop and record.get("block_d"):
        trips = -(-ESTIMATE_DIM // record["block_d"])
        per_element = 32 * NUM_WARPS / (BLOCK_M * BLOCK_N)
        instructions = loop["instructions"] + trips * loop["inner_instructions"]
        mufu = loop["mufu_ex2"] + trips * loop["inner_mufu_ex2"]
        record.update(
            instructions_per_element_at_least=round(instructions * per_element, 2),
            mufu_ex2_per_element_at_least=round(mufu * per_element, 3),
            nested_loops=loop["nested_loops"],
        )
        if record["cc"] == 90:
            record["estimate_at_least"] = estimate(record, instructions, mufu, trips)
    return record


def estimate(record: dict, instructions: int, mufu: int, trips: int) -> dict[str, dict]:
    """ESTIMATED µs of one launch at 2N = ESTIMATE_ROWS, D = ESTIMATE_DIM per GPU (roofline.py),
    from per-warp, per-column-tile counts that are lower bounds: a lower bound of the model too."""
    rows = cols = ESTIMATE_ROWS
    dim = ESTIMATE_DIM
    loop = record["hot_loop"]
    flops = loop["mma_flops"] + trips * loop["inner_mma_flops"]
    item = {"bf16": 2, "fp16": 2, "fp32": 4}[record["dtype"]]
    ctas = -(-rows // BLOCK_M)
    hbm = (rows + cols) * dim * item + 12 * rows
    if record["kernel"] == "backward":
        ctas *= -(-dim // record["block_d_out"])
        hbm += 4 * rows * dim + 8 * cols
    precision = "fp32-tf32" if record["dtype"] == "fp32" else record["dtype"]  # fp32: no MMA
    found = {}
    for gpu in roofline.GPUS:
        found[gpu.name] = roofline.kernel_estimate_us(
            precision=precision,
            ctas=ctas,
            tiles_per_cta=-(-cols // BLOCK_N),
            num_warps=NUM_WARPS,
            instructions=instructions,
            mufu_ex2=mufu,
            mma_flops=flops,
            hbm_bytes=hbm,
            gpu=gpu,
        )
    return found
