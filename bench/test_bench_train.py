"""Training-step throughput of the SimCLR trainer: images/s of `fastclr.train.epoch.simclr_step`.

    pytest bench/test_bench_train.py --benchmark-only   timed; results also written to
                                                        bench/results/<device-slug>/train-<time>.json
    pytest bench/test_bench_train.py                    (CI) every case runs one tiny step, untimed

Axes: input (synthetic on-device tensors | the real two-view loader), loss (fused: the "auto"
backend, triton on GPU and chunked on CPU | reference: the plain 2N x 2N PyTorch loss),
channels_last on/off, AMP on/off (bf16 autocast on GPU; fp32 otherwise). On a GPU: ResNet-50 at
224 px with the largest batch (a power of two) whose step fits in memory, found once with AMP and
channels_last. On CPU: ResNet-18 (CIFAR stem) at 16 px, batch 64. images/s counts source images;
each contributes two views. Steps include optimizer (LARS) and scaler work, as the trainer runs them.
"""

import pytest
import torch

from fastclr.bench import environment
from fastclr.bench.train_step import largest_batch, make_step, synthetic_views

SCHEMA, RESULTS_PREFIX = "fastclr-bench-train/1", "train-"
GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
ARCH, IMAGE_SIZE = ("resnet50", 224) if GPU else ("resnet18", 16)
CPU_BATCH, CI_BATCH, CI_SIZE = 64, 4, 8
MAX_GPU_BATCH = 4096
STEPS_PER_ROUND = 5 if GPU else 2


def results_env() -> dict:
    """The environment recorded with this module's results (bench/conftest.py's `records`)."""
    return environment.collect(DEVICE)


@pytest.fixture(scope="module")
def gpu_batch() -> int:
    """Largest power-of-two batch whose AMP + channels_last step fits (GPU only)."""
    if not GPU:
        return CPU_BATCH
    best, _ = largest_batch(ARCH, IMAGE_SIZE, DEVICE, 64, MAX_GPU_BATCH)
    if best == 0:
        pytest.skip("not even a batch of 64 fits")
    return best


@pytest.mark.parametrize("amp", [True, False], ids=["amp", "fp32"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("loss", ["fused", "reference"])
@pytest.mark.parametrize("inputs", ["synthetic", "loader"])
def test_train_step_throughput(benchmark, records, gpu_batch, inputs, loss, channels_last, amp):
    if amp and not GPU and benchmark.enabled:
        pytest.skip("CPU autocast (bf16) is emulated here: not a number worth recording")
    batch, size = (gpu_batch, IMAGE_SIZE) if benchmark.enabled else (CI_BATCH, CI_SIZE)
    step = make_step(ARCH, batch, size, DEVICE, loss=loss, channels_last=channels_last, amp=amp)
    if inputs == "synthetic":
        views = synthetic_views(batch, size, DEVICE, channels_last)

        def next_views():
            return views
    else:
        from fastclr.data import build_train_loader

        data = "synthetic:1024" if GPU or benchmark.enabled else "synthetic:16"
        loader = build_train_loader(
            data, batch_size=batch, image_size=size, device=DEVICE,
            dtype=torch.bfloat16 if amp else torch.float32,
        )  # fmt: skip
        batches = iter(())

        def next_views():
            nonlocal batches
            try:
                first, second, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                first, second, _ = next(batches)
            return first, second

    steps = STEPS_PER_ROUND if benchmark.enabled else 1

    def one_round() -> torch.Tensor:
        for _ in range(steps):
            loss_value = step(*next_views())
        if GPU:
            torch.cuda.synchronize()
        return loss_value

    benchmark.group = f"train step {ARCH} {size}px batch {batch}"
    last = benchmark.pedantic(one_round, rounds=3 if benchmark.enabled else 1, warmup_rounds=1)
    assert torch.isfinite(last)
    if not benchmark.enabled:
        return
    seconds = benchmark.stats.stats.median
    record = {
        "suite": "train",
        "arch": ARCH,
        "image_size": size,
        "batch_size": batch,
        "inputs": inputs,
        "loss": loss,
        "channels_last": channels_last,
        "amp": "bf16" if amp else "fp32",
        "optimizer": "lars",
        "steps_per_round": steps,
        "median_round_s": seconds,
        "images_per_s": steps * batch / seconds,
    }
    benchmark.extra_info.update(record)
    records.append(record)
