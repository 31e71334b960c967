"""Stage `train`: images/s of a SimCLR training step (fastclr/bench/train_step.py), ResNet-50 at
224 px on synthetic views, bf16 autocast, channels_last, the largest power-of-two global batch that
fits; eager and torch.compile with the fused loss, against the same step fed by the torchvision
DataLoader with the reference loss. Each case is written as soon as it is measured; a case that fails
records its error and the next one runs.
"""

import os
import traceback

import torch

from fastclr.bench import environment, results
from fastclr.bench.acceptance.context import Context
from fastclr.bench.train_step import (
    cycle_views,
    images_per_s,
    largest_batch,
    make_step,
    synthetic_views,
)

SCHEMA = "fastclr-bench-train/1"


# (inputs, loss, compile) of each measurement, in the order they run.
CASES = (
    {"inputs": "synthetic", "loss": "fused", "compile": False},
    {"inputs": "synthetic", "loss": "fused", "compile": True},
    {"inputs": "loader", "loss": "reference", "compile": False},
)


def measure(ctx: Context, case: dict, batch: int) -> dict:
    sizes, device = ctx.sizes, ctx.device
    step = make_step(
        sizes.arch, batch, sizes.image_size, device,
        loss=case["loss"], channels_last=True, amp=True, compile_model=case["compile"],
    )  # fmt: skip
    if case["inputs"] == "synthetic":
        views = synthetic_views(batch, sizes.image_size, device, True)
        source = iter(lambda: views, None)
        return images_per_s(
            step, source, batch, device, warmup=sizes.warmup_steps, steps=sizes.timed_steps
        )
    from fastclr.data import build_train_loader

    workers = min(sizes.loader_workers, os.cpu_count() or 1)
    loader = build_train_loader(
        f"synthetic:{batch * (sizes.loader_steps + 1)}", batch_size=batch,
        image_size=sizes.image_size, loader="torch", device=device, dtype=torch.bfloat16,
        num_workers=workers,
    )  # fmt: skip
    measured = images_per_s(
        step, cycle_views(loader), batch, device, warmup=1, steps=sizes.loader_steps
    )
    return {**measured, "loader": loader.backend, "num_workers": workers}


def run(ctx: Context) -> dict:
    sizes, device = ctx.sizes, ctx.device
    env = environment.collect(device)
    path = results.results_path(ctx.results_dir, env, prefix="train-")
    batch, probes = largest_batch(sizes.arch, sizes.image_size, device, *sizes.batch_range)
    records: list[dict] = []
    for case in CASES:
        record = {
            "suite": "train",
            "arch": sizes.arch,
            "image_size": sizes.image_size,
            "batch_size": batch,
            "channels_last": True,
            "amp": "bf16",
            "optimizer": "lars",
            **case,
        }
        if batch == 0:
            record.update(
                status="no fit", reason=f"not even a batch of {sizes.batch_range[0]} fits"
            )
        elif case["compile"] and not sizes.compile_model:
            record.update(status="skipped", reason=sizes.compile_skip_reason)
        else:
            try:
                record.update(status="ok", **measure(ctx, case, batch))
            except Exception as err:
                record.update(
                    status="failed",
                    reason=f"{type(err).__name__}: {err}",
                    traceback=traceback.format_exc(limit=-4),
                )
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        records.append(record)
        results.write(path, SCHEMA, env, records, {"batch_probes": probes})
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        raise RuntimeError(
            "; ".join(
                f"{r['inputs']}/{r['loss']}/compile={r['compile']}: {r['reason']}" for r in failed
            )
        )
    return {"results_file": str(path), "batch_size": batch, "records": records}


def summary(result: dict) -> str:
    parts = [f"batch {result['batch_size']}"]
    for r in result.get("records", []):
        label = f"{r['inputs']}{'+compile' if r['compile'] else ''}/{r['loss']}"
        if r["status"] == "ok":
            parts.append(f"{label} {r['images_per_s']:.4g} img/s")
        else:
            parts.append(f"{label} {r['status']}")
    return ", ".join(parts)
