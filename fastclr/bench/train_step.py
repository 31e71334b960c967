"""One SimCLR training step as the benchmarks time it: `fastclr.train.epoch.simclr_step` on a model,
LARS, optional bf16 autocast, channels_last and torch.compile, fed synthetic views or a loader.

Shared by bench/test_bench_train.py (the pytest-benchmark suite) and the `train` stage of
`fastclr bench gpu`. images/s counts source images; each contributes two views [B, 3, S, S].
"""

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from fastclr.bench.memory import is_out_of_memory
from fastclr.model import build_model
from fastclr.optim import build_optimizer
from fastclr.train.epoch import simclr_step

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_step(
    arch: str,
    batch: int,
    size: int,
    device: torch.device,
    *,
    loss: str,
    channels_last: bool,
    amp: bool,
    compile_model: bool = False,
) -> Step:
    """A closure running one trainer step on views (view1, view2) of [batch, 3, size, size].

    loss: "fused" (the "auto" backend: triton/cuda on GPU, chunked on CPU) or "reference" (the
    plain 2N x 2N PyTorch loss). amp: bf16 autocast. compile_model: torch.compile(model).
    """
    model = build_model(arch, image_size=size).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer("lars", model, lr=0.1, weight_decay=1e-6)
    if compile_model:
        model = torch.compile(model)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )
    backend = "auto" if loss == "fused" else "reference"

    def step(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        return simclr_step(
            model, optimizer, scaler, view1, view2, temperature=0.2,
            loss_backend=backend, amp=autocast, memory_format=memory_format,
        )  # fmt: skip

    return step


def synthetic_views(
    batch: int, size: int, device: torch.device, channels_last: bool
) -> list[torch.Tensor]:
    """Two random views [batch, 3, size, size] on `device` (random, never zeros)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return [
        torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
        for _ in range(2)
    ]


def largest_batch(
    arch: str, size: int, device: torch.device, first: int, last: int
) -> tuple[int, list[dict]]:
    """Largest power-of-two batch in [first, last] whose bf16 channels_last fused step fits
    (doubling until out of memory or `last`); 0 if not even `first` fits. Returns it and the
    probes [{batch, fits}] tried."""
    best, batch, probes = 0, first, []
    while batch <= last:
        step = None
        try:
            step = make_step(arch, batch, size, device, loss="fused", channels_last=True, amp=True)
            step(*synthetic_views(batch, size, device, True))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            probes.append({"batch": batch, "fits": False})
            break
        finally:
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        probes.append({"batch": batch, "fits": True})
        best, batch = batch, batch * 2
    return best, probes


def cycle_views(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(view1, view2) of a two-view loader's batches, epoch after epoch."""
    while True:
        for first, second, _ in loader:
            yield first, second


def images_per_s(
    step: Step,
    views: Iterator[tuple[torch.Tensor, torch.Tensor]],
    batch: int,
    device: torch.device,
    *,
    warmup: int,
    steps: int,
) -> dict:
    """Time `steps` steps after `warmup` untimed ones (compilation, cuDNN autotuning, loader
    start-up); wall clock with the device synchronized at both ends, so the loader's time counts."""
    loss = None
    for _ in range(warmup):
        loss = step(*next(views))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(*next(views))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if loss is None or not torch.isfinite(loss):
        raise FloatingPointError(f"the timed step's loss is {loss}: not a measurement to keep")
    return {
        "steps": steps,
        "warmup_steps": warmup,
        "seconds": seconds,
        "step_s": seconds / steps,
        "images_per_s": steps * batch / seconds,
        "last_loss": loss.item(),
    }
