"""What every benchmark result records about where it ran: device, driver/CUDA, versions, time."""

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

import fastclr


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, None when it cannot be asked."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(device: torch.device) -> str:
    """The results folder name of `device`: 'nvidia-h100-80gb-hbm3', 'cpu-amd-epyc'."""
    if device.type == "cuda":
        return slug(torch.cuda.get_device_properties(device).name)
    return "cpu-" + slug(cpu_model())


def collect(device: torch.device) -> dict:
    """The environment of a benchmark session on `device` (queries the GPU: call it at run time)."""
    cpu = cpu_model()
    env = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fastclr": fastclr.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": package_version("triton"),
        "lightly": package_version("lightly"),
        "pytorch_metric_learning": package_version("pytorch-metric-learning"),
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device=props.name,
            device_slug=device_slug(device),
            device_memory_bytes=props.total_memory,
            compute_capability=f"{props.major}.{props.minor}",
            driver=nvidia_driver(),
        )
    else:
        env.update(device=cpu, device_slug=device_slug(device), device_memory_bytes=None)
    return env
