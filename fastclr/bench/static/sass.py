"""Read the hot loop out of a kernel's SASS (`nvdisasm -c` text).

The hot loop is found from the control flow, not from names: every backward branch (a BRA whose
target label lies at or before it) closes a loop [target, branch]. The hot loop is the innermost such
range that holds both tensor-core instructions (HGMMA = wgmma on sm_90, HMMA = mma.sync) and
MUFU.EX2 — the column loop that computes a score tile and exponentiates it. Loops nested inside it
are counted per trip: those that hold MMA instructions (the reduction over D in chunks) run
`inner_trips` times per column tile; others once. That is exact for the Triton kernels (their only
other nested loops are barrier spin loops, which fall through); for hand-written CUDA with per-thread
element loops it is a lower bound (`nested_loops` says how many there are).
"""

import re
from dataclasses import asdict, dataclass

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*(?:/\*.*)?$")
_LABEL = re.compile(r"^\s*(\.L_[\w]+):")
_TARGET = re.compile(r"`\((\.L_[\w]+)\)")
_HGMMA = re.compile(r"HGMMA\.(\d+)x(\d+)x(\d+)")
_HMMA = re.compile(r"HMMA\.(16)(8)(\d+)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # e.g. "HGMMA.64x128x16.F32.BF16", predicate stripped
    text: str


@dataclass(frozen=True)
class LoopCounts:
    """Instructions one warp issues per column tile (static counts, nested MMA loops separately)."""

    instructions: int  # in the loop body outside nested MMA loops
    mufu_ex2: int
    mma_flops: int  # tensor-core flops per warp per iteration (see mma_flops)
    inner_instructions: int  # in nested loops holding MMA instructions (run inner_trips times)
    inner_mufu_ex2: int
    inner_mma_flops: int
    nested_loops: int
    start: int
    end: int

    def per_iteration(self, inner_trips: int) -> tuple[int, int, int]:
        """(instructions, MUFU.EX2, MMA flops) one warp issues per column tile."""
        return (
            self.instructions + inner_trips * self.inner_instructions,
            self.mufu_ex2 + inner_trips * self.inner_mufu_ex2,
            self.mma_flops + inner_trips * self.inner_mma_flops,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def parse(text: str) -> tuple[list[Instruction], dict[str, int]]:
    """The instructions of a disassembly, and each label's address."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        match = _LINE.search(line)
        if not match:
            continue
        address = int(match.group(1), 16)
        body = match.group(2).strip().rstrip(";").strip()
        if body.startswith("{") or not body:
            body = body.lstrip("{ ").strip()
        if not body:
            continue
        for name in pending:
            labels[name] = address
        pending = []
        words = body.split()
        if words[0].startswith("@"):
            words = words[1:]
        if words:
            instructions.append(Instruction(address, words[0], body))
    return instructions, labels


def mma_kind(instructions: list[Instruction]) -> str:
    """'wgmma' (Hopper warpgroup MMA), 'mma.sync' (HMMA) or 'none'."""
    opcodes = {ins.opcode.split(".")[0] for ins in instructions}
    if "HGMMA" in opcodes:
        return "wgmma"
    if "HMMA" in opcodes:
        return "mma.sync"
    return "none"


def mma_flops(ins: Instruction, num_warps: int) -> int:
    """Tensor-core flops per warp of one MMA instruction. HGMMA m×n×k is issued by the 4 warps of a
    warpgroup together (a quarter each); HMMA m16n8kK is one warp's."""
    hg = _HGMMA.match(ins.opcode)
    if hg:
        m, n, k = map(int, hg.groups())
        return 2 * m * n * k // 4
    hm = _HMMA.match(ins.opcode)
    if hm:
        m, n, k = map(int, hm.groups())
        return 2 * m * n * k
    return 0


def _is_mma(ins: Instruction) -> bool:
    return ins.opcode.startswith(("HGMMA", "HMMA"))


def _is_ex2(ins: Instruction) -> bool:
    return ins.opcode.startswith("MUFU.EX2")


def loops(instructions: list[Instruction], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(start, end) address ranges closed by backward branches."""
    found = set()
    for ins in instructions:
        if ins.opcode.startswith("BRA"):
            target = _TARGET.search(ins.text)
            if target and target.group(1) in labels and labels[target.group(1)] <= ins.address:
                found.add((labels[target.group(1)], ins.address))
    return sorted(found)


def hot_loop(text: str, num_warps: int) -> LoopCounts | None:
    """Counts of the innermost loop holding both MMA and MUFU.EX2 instructions (the column loop), or
    None when no loop holds both."""
    instructions, labels = parse(text)
    ranges = loops(instructions, labels)

    def inside(lo: int, hi: int) -> list[Instruction]:
        return [ins for ins in instructions if lo <= ins.address <= hi]

    candidates = [
        (lo, hi)
        for lo, hi in ranges
        if any(_is_mma(i) for i in inside(lo, hi)) and any(_is_ex2(i) for i in inside(lo, hi))
    ]
    if not candidates:
        # No tensor cores (the CUDA extension's fp32 path): the innermost loop holding MUFU.EX2 and
        # another loop (the column loop around its reduction over D).
        candidates = [
            (lo, hi)
            for lo, hi in ranges
            if any(_is_ex2(i) for i in inside(lo, hi))
            and any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in ranges)
        ]
    if not candidates:
        return None
    lo, hi = min(candidates, key=lambda r: r[1] - r[0])
    nested = [(a, b) for a, b in ranges if lo <= a and b <= hi and (a, b) != (lo, hi)]
    outermost = [
        r for r in nested if not any(o != r and o[0] <= r[0] and r[1] <= o[1] for o in nested)
    ]
    mma_nested = [r for r in outermost if any(_is_mma(i) for i in inside(*r))]

    def in_mma_nested(ins: Instruction) -> bool:
        return any(a <= ins.address <= b for a, b in mma_nested)

    body = [i for i in inside(lo, hi) if i.opcode != "NOP"]
    outer = [i for i in body if not in_mma_nested(i)]
    inner = [i for i in body if in_mma_nested(i)]
    return LoopCounts(
        instructions=len(outer),
        mufu_ex2=sum(_is_ex2(i) for i in outer),
        mma_flops=sum(mma_flops(i, num_warps) for i in outer),
        inner_instructions=len(inner),
        inner_mufu_ex2=sum(_is_ex2(i) for i in inner),
        inner_mma_flops=sum(mma_flops(i, num_warps) for i in inner),
        nested_loops=len(outermost),
        start=lo,
        end=hi,
    )


def mma_loop_flops(text: str, num_warps: int) -> int:
    """Tensor-core flops per warp of one trip of the innermost loop holding MMA instructions (the
    reduction over D of a kernel whose exponentials come after it, as the large-D weights kernel's);
    0 when no loop holds any."""
    instructions, labels = parse(text)
    with_mma = [
        (lo, hi)
        for lo, hi in loops(instructions, labels)
        if any(_is_mma(i) for i in instructions if lo <= i.address <= hi)
    ]
    if not with_mma:
        return 0
    lo, hi = min(with_mma, key=lambda r: r[1] - r[0])
    return sum(mma_flops(i, num_warps) for i in instructions if lo <= i.address <= hi)
