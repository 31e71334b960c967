"""Roofline model: compile-time figures -> ESTIMATED kernel times on H100 SXM and H200.

Every number this module returns is an estimate, never a measurement. It is built only from what the
compiled code shows (tensor-core flops, MUFU.EX2 and total SASS instructions per column tile, grid size)
and from the published peak rates below; it ignores latency, L2 traffic and the partial last wave's
imbalance, so expect ±30-50% against a GPU measurement.

Rates per SM and cycle (GH100, both parts: 132 SMs at 1.83 GHz boost):
  tensor cores      4096 flop/clk/SM bf16/fp16 dense (989 TFLOP/s), 2048 tf32 (495 TFLOP/s)
  MUFU (ex2)        16 /clk/SM (4 per SM sub-partition): 3.9e12 ex2/s
  instruction issue 4 warp-instructions/clk/SM (one per sub-partition) = 128 thread-instructions/clk
HBM bandwidth: H100 SXM 3.35 TB/s (HBM3), H200 4.8 TB/s (HBM3e). Same SMs and clocks, so the two
differ only where a kernel is memory-bound (these are not: the operands are read from L2).

Per CTA, one column tile costs (cycles on its SM)
  tensor = MMA flops / tensor rate,  mufu = 32·warps·EX2 / 16,  issue = warps·instructions / 4,
where the counts are per warp and per tile, read from the hot loop's SASS. A CTA walks its share of
the C / BLOCK_N tiles (all of them, or 1/splits with the column-split schedule); each SM runs
ceil(CTAs / SMs) CTAs. Two estimates:
  overlapped  = max(tensor, mufu, issue) per tile: the ideal of a warp scheduler that overlaps
                everything (a lower bound for this code);
  serialized  = within one CTA the MMA result is awaited at once (wgmma wait 0), so a tile takes
                tensor + max(mufu, issue). k CTAs resident on one SM at once (k = min(the occupancy's
                CTAs per SM, CTAs per SM of the grid)) interleave: while one waits on its MMA another
                exponentiates, so k tiles take max(tensor + max(mufu, issue), k·max(tensor, mufu,
                issue)). k = 1 (a grid of at most one CTA per SM) is the plain sum.
The physical floor of the operation itself (every score element exponentiated once, the minimal
tensor work, no instruction overhead) is given beside them.
"""

from dataclasses import dataclass

CLOCK_HZ = 1.83e9
SMS = 132
TENSOR_FLOP_PER_CLK = {"bf16": 4096, "fp16": 4096, "fp32-tf32": 2048, "fp32-tf32x3": 2048}
MUFU_PER_CLK = 16
WARP_ISSUE_PER_CLK = 4


@dataclass(frozen=True)
class Gpu:
    name: str
    hbm_bytes_per_s: float


GPUS = (Gpu("H100 SXM", 3.35e12), Gpu("H200", 4.8e12))


def kernel_estimate_us(
    *,
    precision: str,
    ctas: int,
    tiles_per_cta: int,
    num_warps: int,
    instructions: int,
    mufu_ex2: int,
    mma_flops: int,
    hbm_bytes: int,
    gpu: Gpu,
    resident_ctas: int = 1,
) -> dict[str, float]:
    """ESTIMATED microseconds of one launch; counts are per warp and per column tile;
    resident_ctas: CTAs one SM holds at once (the occupancy)."""
    tensor = mma_flops * num_warps / TENSOR_FLOP_PER_CLK[precision]
    mufu = 32 * num_warps * mufu_ex2 / MUFU_PER_CLK
    issue = num_warps * instructions / WARP_ISSUE_PER_CLK
    per_sm = -(-ctas // SMS)
    together = max(1, min(resident_ctas, per_sm))
    cycles_to_us = tiles_per_cta * per_sm / CLOCK_HZ * 1e6
    chain = tensor + max(mufu, issue)
    busiest = max(tensor, mufu, issue)
    memory_us = hbm_bytes / gpu.hbm_bytes_per_s * 1e6
    return {
        "overlapped_us": max(busiest * cycles_to_us, memory_us),
        "serialized_us": max(max(chain / together, busiest) * cycles_to_us, memory_us),
        "tensor_us": tensor * cycles_to_us,
        "mufu_us": mufu * cycles_to_us,
        "issue_us": issue * cycles_to_us,
        "hbm_us": memory_us,
        "sms_busy": min(ctas, SMS),
    }


def floor_us(
    *, kernel: str, rows: int, cols: int, dim: int, precision: str, hbm_bytes: int, gpu: Gpu
) -> float:
    """ESTIMATED physical floor: the minimal tensor work (2·M·C·D forward, twice that backward), one
    ex2 per score element (forward), HBM traffic; whichever is largest."""
    products = 1 if kernel.endswith("forward") else 2
    tensor = products * 2 * rows * cols * dim / (TENSOR_FLOP_PER_CLK[precision] * SMS * CLOCK_HZ)
    mufu = rows * cols / (MUFU_PER_CLK * SMS * CLOCK_HZ)
    return max(tensor, mufu, hbm_bytes / gpu.hbm_bytes_per_s) * 1e6
