"""Theoretical occupancy: how many CTAs of a compiled kernel fit on one SM at once, and which
resource limits them (the CUDA occupancy calculator's rules for sm_80..sm_90)."""

from fastclr.bench.static.arches import Arch

REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256


def ctas_per_sm(arch: Arch, registers: int, num_warps: int, shared_bytes: int) -> tuple[int, str]:
    """(resident CTAs per SM, the limiting resource) for a kernel using `registers` per thread,
    `num_warps` warps and `shared_bytes` of (dynamic + static) shared memory per CTA."""
    regs_per_warp = -(-max(registers, 1) * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    limits = {
        "registers": arch.regs_per_sm // (regs_per_warp * num_warps),
        "threads": arch.max_threads_per_sm // (num_warps * 32),
        "blocks": arch.max_blocks_per_sm,
        "shared memory": arch.smem_per_sm // (shared_bytes + arch.reserved_smem_per_block),
    }
    if shared_bytes > arch.smem_per_block_optin:
        limits["shared memory"] = 0
    limiter = min(limits, key=lambda name: limits[name])
    return limits[limiter], limiter


def occupancy(arch: Arch, registers: int, num_warps: int, shared_bytes: int) -> float:
    """Resident warps per SM over the most an SM holds (0 when the CTA does not fit)."""
    ctas, _ = ctas_per_sm(arch, registers, num_warps, shared_bytes)
    return ctas * num_warps * 32 / arch.max_threads_per_sm
