"""The GPU architectures the static analysis compiles for, with the per-SM limits that decide whether
a compiled kernel launches at all (shared memory per block) and how many of its CTAs share an SM
(theoretical occupancy). Figures from the CUDA C Programming Guide, "Compute Capabilities" table.
"""

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Arch:
    """One compute capability. `smem_per_block_optin` is what
    torch.cuda.get_device_properties(dev).shared_memory_per_block_optin reports on such a GPU: the
    most dynamic + static shared memory one CTA may use."""

    cc: int
    name: str
    examples: str
    smem_per_block_optin: int
    smem_per_sm: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    regs_per_sm: int = 65536
    reserved_smem_per_block: int = 1 * KIB  # the driver keeps 1 KiB per CTA on sm_80+


ARCHES = {
    80: Arch(80, "sm_80", "A100", 163 * KIB, 164 * KIB, 2048, 32),
    86: Arch(86, "sm_86", "A10, A40, RTX 30", 99 * KIB, 100 * KIB, 1536, 16),
    89: Arch(89, "sm_89", "L4, L40S, RTX 40", 99 * KIB, 100 * KIB, 1536, 24),
    90: Arch(90, "sm_90", "H100, H200", 227 * KIB, 228 * KIB, 2048, 32),
}

# cc -> per-block opt-in shared-memory limit: what the autotuner's prune sees on each architecture.
SMEM_LIMITS = {cc: arch.smem_per_block_optin for cc, arch in ARCHES.items()}
