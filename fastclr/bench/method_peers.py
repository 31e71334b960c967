"""`fastclr bench methods`: each self-supervised method trained by fastclr and by lightly on the same
data, epochs, batch, image size, optimizer and augmented views, over several seeds; kNN top-1 and
images/s side by side.

For each method, for each seed of `seeds`, in this order (so both sides of a method and seed run
back to back and see the same machine load):
  1. fastclr: `fastclr train --method M --seed S ...` in a subprocess, with the checkout of
     `fastclr_path` on PYTHONPATH (a branch that has the method: --fastclr-path); its kNN is the
     trainer's monitor after the last epoch, its images/s and seconds the trainer's (log.jsonl).
  2. lightly: lightly's model of M (method_peers_lightly.py) on the same ResNet backbone (the same
     initial weights: seeded with S as fastclr seeds it), trained here with fastclr's torch loader
     (the same augmented views: same seed, epoch and sampler), fastclr's optimizer and
     warmup-cosine schedule, and every setting read back from the fastclr run's resolved
     config.json.
The seed sets the initial weights and the views, so each seed has its own baseline: the kNN of the
random-init encoder both sides of that seed start from (one "random-init" row per seed, measured
the first time a run of that seed has a config). kNN: fastclr's monitor (weighted kNN, k=200,
T=0.1, train split as bank, val as queries); images/s = images trained / training seconds (wall
clock of the steps, loader included, kNN and checkpoints excluded), both sides at `threads` torch
threads and `workers` loader workers.

A method the fastclr checkout does not have gets "pending" rows. Results: one JSON (through
fastclr/bench/results.py, rewritten after every row; one row per method, implementation and seed,
each with its "seed") and a Markdown report beside it (method_peers_report.py: mean, range and
paired gains over the seeds), under <results_dir>/<device>/methods-<UTC time>.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import fastclr
from fastclr.bench import environment, results
from fastclr.bench.method_peers_lightly import build_lightly_model
from fastclr.bench.method_peers_report import write_markdown
from fastclr.bench.method_peers_settings import PeerSettings
from fastclr.errors import UsageError

# /2: one row per seed ("seed" in every row, settings["seeds"]); /1 had one seed (settings["seed"]).
SCHEMA = "fastclr.method_peers/2"
# MoCo's paper queue (65,536) is larger than small datasets (digits: 1,437 training images) and
# fastclr refuses it there; both sides get this one, capped at the dataset's size.
DIGITS_QUEUE = 1024
# SwAV's 3,000 prototypes are three per ImageNet class and more than a small batch can spread its
# codes over (fastclr refuses batch + queue < prototypes); both sides get three per digit class.
DIGITS_PROTOTYPES = 30


def lightly_missing() -> str | None:
    """Why lightly cannot be used here, or None when it imports."""
    try:
        import lightly.loss  # noqa: F401
        import lightly.models.modules  # noqa: F401
    except ImportError as error:
        return f"lightly does not import ({error}): pip install --no-deps lightly"
    return None


def source_of(path: str) -> dict[str, Any]:
    """Which code a fastclr checkout holds: path, commit and whether it has uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", path, *args], capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":  # a detached checkout: the branch that holds the commit, if one does
        named = git("name-rev", "--name-only", "--exclude=tags/*", "HEAD")
        branch = None if named in (None, "undefined") else named
    return {
        "path": path,
        "commit": git("rev-parse", "--short", "HEAD"),
        "branch": branch,
        "dirty": bool(status) if status is not None else None,
    }


def run_fastclr_cli(s: PeerSettings, *args: str) -> subprocess.CompletedProcess:
    """`fastclr ARGS` of the checkout at s.fastclr_path, at s.threads torch threads. It runs in
    that folder: `python -m` puts the working folder first on sys.path, before PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": s.fastclr_path, "OMP_NUM_THREADS": str(s.threads)}
    command = [sys.executable, "-m", "fastclr.cli.main", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=s.fastclr_path, check=False
    )


def fastclr_methods(s: PeerSettings) -> set[str]:
    """The methods `fastclr train` of the checkout at s.fastclr_path accepts."""
    text = re.sub(r"\s+", " ", run_fastclr_cli(s, "train", "--help").stdout)
    match = re.search(r"--method \{([a-z,]+)\}", text)
    return set(match.group(1).split(",")) if match else {"simclr"}


def train_images(data: str, image_size: int) -> int:
    from fastclr.data.sources import load_source

    return len(load_source(data, image_size=image_size, split="train"))


def fastclr_flags(method: str, s: PeerSettings, seed: int, out: Path) -> list[str]:
    data = str(Path(s.data).resolve()) if Path(s.data).is_dir() else s.data  # it runs elsewhere
    flags = [
        "--data", data, "--image-size", str(s.image_size), "--batch-size", str(s.batch_size),
        "--epochs", str(s.epochs), "--seed", str(seed), "--loader", "torch",
        "--workers", str(s.workers), "--precision", "fp32", "--device", "cpu",
        "--knn-every", str(s.epochs), "--knn-max-images", str(s.knn_max_images),
        "--checkpoint-every", "0", "--keep-checkpoints", "1", "--resume", "none",
        "--out", str(out.resolve()),
    ]  # fmt: skip
    if method != "simclr":  # simclr is the default: also the trainer of checkouts without --method
        flags = ["--method", method, *flags]
    if method == "moco":
        flags += ["--queue-size", str(min(DIGITS_QUEUE, train_images(s.data, s.image_size)))]
    if method == "swav":
        flags += ["--prototypes", str(DIGITS_PROTOTYPES)]
    return flags


def run_fastclr(
    method: str, s: PeerSettings, seed: int, out: Path
) -> tuple[dict[str, Any], dict | None]:
    """(row, resolved config) of `fastclr train --method M --seed S`; config None if it failed."""
    flags = ["train", *fastclr_flags(method, s, seed, out)]
    start = time.perf_counter()
    done = run_fastclr_cli(s, *flags)
    row = {"wall_seconds": round(time.perf_counter() - start, 2), "command": ["fastclr", *flags]}
    end = None
    if (out / "log.jsonl").is_file():
        events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        end = next((e for e in events if e.get("event") == "end"), None)
    if done.returncode != 0 or end is None or end.get("knn_final") is None:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        row.update(status="failed", note=f"exit {done.returncode}: {lines[-1]}")
        return row, None
    row.update(
        status="measured",
        steps=end["steps"],
        knn_top1=end["knn_final"],
        knn_init=end["knn_init"],
        train_seconds=end["train_seconds"],
        images_per_s=end["images_per_s"],
    )
    return row, json.loads((out / "config.json").read_text())


def knn_monitor(data: str, config: dict[str, Any], device: torch.device):
    from fastclr.train.knn_monitor import KNNMonitor

    return KNNMonitor.from_data(
        data, config["image_size"], max_images=config["knn_max_images"], device=device,
        k=config["knn_k"], temperature=config["knn_temperature"], autocast_dtype=None,
    )  # fmt: skip


def random_init_backbone(config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
    """The backbone fastclr's trainer starts from: seeded with the run's seed, then built."""
    from fastclr.backbones import build_backbone
    from fastclr.train.seeding import seed_everything

    seed_everything(config["seed"])
    backbone, width = build_backbone(config["arch"], config["stem"], config["image_size"])
    return backbone.to(memory_format=torch.channels_last), width


def random_init_knn(s: PeerSettings, config: dict[str, Any]) -> float:
    """kNN top-1 (%) of the encoder both sides of config's seed start from."""
    backbone, _ = random_init_backbone(config)
    return knn_monitor(s.data, config, torch.device("cpu"))(backbone)


def run_lightly(method: str, s: PeerSettings, config: dict[str, Any]) -> dict[str, Any]:
    """Train lightly's `method` with the settings of fastclr's resolved `config`; its row."""
    from fastclr.data import build_train_loader
    from fastclr.optim import build_optimizer, build_schedule
    from fastclr.train.config import TrainConfig
    from fastclr.train.epoch import set_learning_rate
    from fastclr.train.run import augment_config
    from fastclr.train.seeding import epoch_seed, seed_everything

    device, size = torch.device("cpu"), config["image_size"]
    # The views fastclr's Run builds from the same config: crop floor, view count, per-view blur
    # and solarization (BYOL's asymmetric pair).
    augment = augment_config(TrainConfig.from_dict(config))
    loader = build_train_loader(
        s.data, batch_size=config["batch_size"], image_size=size, loader="torch", device=device,
        seed=config["seed"], num_workers=s.workers, augment=augment,
    )  # fmt: skip
    steps_per_epoch, epochs = len(loader), config["epochs"]
    total_steps = epochs * steps_per_epoch
    backbone, width = random_init_backbone(config)
    model = build_lightly_model(
        method, backbone, feature_dim=width, settings=config, steps_per_epoch=steps_per_epoch
    ).to(memory_format=torch.channels_last)
    # BYOL's and SimSiam's predictor held at pred_lr_scale x the peak lr, as fastclr's Run holds it.
    pred_lr_scale = config.get("pred_lr_scale")
    optimizer = build_optimizer(
        config["optimizer"], model, lr=config["lr"], weight_decay=config["weight_decay"],
        momentum=config["momentum"],
        fixed_lr=model.prediction_head.parameters() if pred_lr_scale else (),
        fixed_lr_scale=pred_lr_scale or 1.0,
    )  # fmt: skip
    schedule = build_schedule(
        base_lr=config["lr"], batch_size=config["batch_size"], epochs=epochs,
        steps_per_epoch=steps_per_epoch, warmup_epochs=config["warmup_epochs"],
    )  # fmt: skip
    model.train()
    step, seconds, loss = 0, 0.0, torch.zeros(())
    for epoch in range(epochs):
        seed_everything(epoch_seed(config["seed"], 0, epoch))
        loader.set_epoch(epoch)
        batches = iter(loader)
        start = time.perf_counter()
        for view1, view2, _ in batches:
            set_learning_rate(optimizer, schedule(step), schedule.peak_lr)
            loss = model.training_loss(view1, view2, step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        seconds += time.perf_counter() - start
        if not torch.isfinite(loss):
            return {"status": "failed", "steps": step, "note": f"loss became {loss.item()}"}
    knn = knn_monitor(s.data, config, device)(model.backbone)
    return {
        "status": "measured",
        "steps": step,
        "knn_top1": knn,
        "train_seconds": round(seconds, 2),
        "images_per_s": round(step * config["batch_size"] / seconds, 2),
        "final_loss": loss.item(),
    }


def base_row(method: str, implementation: str, s: PeerSettings, seed: int) -> dict[str, Any]:
    return {
        "method": method, "implementation": implementation, "seed": seed, "status": "pending",
        "epochs": s.epochs, "batch": s.batch_size, "knn_top1": None, "images_per_s": None,
        "train_seconds": None,
    }  # fmt: skip


def settings_record(config: dict[str, Any]) -> dict[str, Any]:
    """The optimizer and method settings both sides trained with (from fastclr's config)."""
    keys = (
        "optimizer", "lr", "weight_decay", "momentum", "warmup_epochs", "temperature",
        "queue_size", "target_momentum", "proj_dim", "proj_layers", "proj_hidden", "pred_hidden",
        "pred_lr_scale", "prototypes", "sinkhorn_epsilon", "sinkhorn_iterations",
        "freeze_prototypes_steps", "crop_scale", "flip_p", "image_size", "arch", "stem",
    )  # fmt: skip
    return {k: config[k] for k in keys if config.get(k) is not None}


def run_all(
    s: PeerSettings,
    results_dir: Path,
    echo: Callable[[str], None] = print,
    work_dir: Path | None = None,
) -> Path:
    """Every method and seed of `s`, both implementations, plus each seed's random-init baseline;
    returns the JSON's path."""
    reason = lightly_missing()
    if reason is not None:
        raise UsageError(f"fastclr bench methods: {reason}")
    torch.set_num_threads(s.threads)
    env = environment.collect(torch.device("cpu"))
    env["fastclr_side"] = source_of(s.fastclr_path)
    env["harness_side"] = source_of(str(Path(fastclr.__file__).resolve().parent.parent))
    path = results.results_path(results_dir, env, prefix="methods-")
    settings = dataclasses.asdict(s)
    settings.update(methods=list(s.methods), seeds=list(s.seeds))
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        results.write(path, SCHEMA, env, rows, settings)
        write_markdown(path.with_suffix(".md"), env, settings, rows)
        knn, speed = row.get("knn_top1"), row.get("images_per_s")
        shown = f"kNN {knn:.2f}%, {speed} images/s" if knn is not None else row.get("note", "")
        echo(
            f"{row['method']:8s} seed {row['seed']:<3d} {row['implementation']:11s} "
            f"{row['status']}: {shown}"
        )

    available = fastclr_methods(s)
    echo(f"fastclr side: {s.fastclr_path} (methods: {', '.join(sorted(available))})")
    baselines: set[int] = set()  # the seeds whose random-init encoder is measured
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for method in s.methods:
            for seed in s.seeds:
                fastclr_row = base_row(method, "fastclr", s, seed)
                lightly_row = base_row(method, "lightly", s, seed)
                if method not in available:
                    note = f"`fastclr train` of {s.fastclr_path} has no --method {method} yet"
                    record({**fastclr_row, "note": note})
                    record(
                        {
                            **lightly_row,
                            "note": note + " (lightly trains with its resolved settings)",
                        }
                    )
                    continue
                measured, config = run_fastclr(method, s, seed, Path(tmp) / f"{method}-{seed}")
                record({**fastclr_row, **measured})
                if config is None:
                    note = (
                        "not run: lightly trains with the settings of fastclr's run, which failed"
                    )
                    record({**lightly_row, "note": note})
                    continue
                if seed not in baselines:
                    base = {**base_row("-", "random-init", s, seed), "epochs": 0, "batch": None}
                    record(
                        {**base, "status": "measured", "knn_top1": random_init_knn(s, config),
                         "note": "the encoder both sides of this seed start from"}
                    )  # fmt: skip
                    baselines.add(seed)
                row = {**lightly_row, "settings": settings_record(config)}
                try:
                    row.update(run_lightly(method, s, config))
                except Exception as error:  # a lightly failure is a result to record, not a crash
                    row.update(status="failed", note=f"{type(error).__name__}: {error}")
                record(row)
    return path
