"""Stage `env`: what the run ran on: versions of everything it uses, the device, clocks, memory."""

import subprocess

import torch

from fastclr.bench import environment
from fastclr.bench.acceptance.context import Context

# nvidia-smi fields (csv, no units): the clocks the figures were measured at and what limits them.
SMI_FIELDS = (
    "name",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
    "memory.total",
    "memory.used",
    "power.limit",
    "temperature.gpu",
    "pstate",
)
PACKAGES = ("torchvision", "numpy", "nvidia-dali-cuda130", "matplotlib", "pytest", "ninja")


def nvidia_smi() -> dict | str:
    """nvidia-smi's view of GPU 0 (field -> text), or why it could not be asked."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi: {type(err).__name__}: {err}"
    first = out.stdout.strip().splitlines()[0]
    return dict(zip(SMI_FIELDS, (v.strip() for v in first.split(",")), strict=False))


def run(ctx: Context) -> dict:
    env = environment.collect(ctx.device)
    env["packages"] = {name: environment.package_version(name) for name in PACKAGES}
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        free, total = torch.cuda.mem_get_info(ctx.device)
        env.update(
            multiprocessors=props.multi_processor_count,
            memory_free_bytes=free,
            memory_total_bytes=total,
            cudnn=torch.backends.cudnn.version(),
            nvidia_smi=nvidia_smi(),
        )
    return env


def summary(result: dict) -> str:
    smi = result.get("nvidia_smi")
    clocks = ""
    if isinstance(smi, dict):
        clocks = f", SM {smi.get('clocks.sm')}/{smi.get('clocks.max.sm')} MHz"
    memory = result.get("device_memory_bytes")
    size = f", {memory / 2**30:.0f} GiB" if memory else ""
    return f"{result['device']}{size}{clocks}; torch {result['torch']}, triton {result['triton']}"
