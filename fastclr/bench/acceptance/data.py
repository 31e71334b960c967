"""Stage `data`: two-view augmentation images/s of DALI on the GPU (fastclr.data's `dali-gpu`
loader, 224 px, the SimCLR ImageNet augmentations), or the reason it was skipped when DALI does not
import. A dry run on the CPU measures `dali-cpu` instead, to exercise the same code and writer.
"""

import time

import torch

from fastclr.bench import environment, results
from fastclr.bench.acceptance.context import Context

SCHEMA = "fastclr-bench-data/1"
BATCH = 256


class DaliUnavailableError(RuntimeError):
    """DALI does not import here: the stage is skipped with this reason."""


def run(ctx: Context) -> dict:
    from fastclr.data import build_train_loader
    from fastclr.data.dali_pipeline import dali_unavailable_reason

    reason = dali_unavailable_reason()
    if reason is not None:
        raise DaliUnavailableError(f"DALI does not import: {reason}")
    sizes, device = ctx.sizes, ctx.device
    backend = "dali-gpu" if device.type == "cuda" else "dali-cpu"
    batch = BATCH if not ctx.dry_run else 4
    loader = build_train_loader(
        f"synthetic:{batch * sizes.data_batches}", batch_size=batch, image_size=sizes.image_size,
        loader=backend, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        num_workers=4,
    )  # fmt: skip
    first, second, _ = next(iter(loader))  # warm-up: pipeline build, first batch
    if first.shape != (batch, 3, sizes.image_size, sizes.image_size) or torch.equal(first, second):
        raise RuntimeError(f"{backend} gave views {tuple(first.shape)} (or two equal views)")
    start = time.perf_counter()
    count = 0
    for _ in loader:
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    env = environment.collect(device)
    record = {
        "suite": "data",
        "case": f"synthetic-{sizes.image_size}px",
        "backend": backend,
        "image_size": sizes.image_size,
        "batch_size": batch,
        "batches": count,
        "seconds": seconds,
        "images_per_s": count * batch / seconds,
        "status": "ok",
    }
    path = results.results_path(ctx.results_dir, env, prefix="data-")
    results.write(path, SCHEMA, env, [record])
    return {"results_file": str(path), "record": record}


def summary(result: dict) -> str:
    record = result["record"]
    return f"{record['backend']} {record['images_per_s']:.4g} img/s at {record['image_size']} px"
