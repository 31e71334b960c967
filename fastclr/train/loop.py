"""`train(cfg)`: resolve the config, start the run (run.py), then epochs (epoch.py), each followed by
a checkpoint and the kNN monitor (knn_monitor.py); the meter (meter.py) keeps time and draws the bar.
At the end, <out>/curves.png shows the run's loss, learning rate and kNN (fastclr/plots.py).
"""

from __future__ import annotations

from typing import Any

import torch

from fastclr.distributed.env import DistEnv
from fastclr.train.config import TrainConfig, resolve_config
from fastclr.train.epoch import train_one_epoch
from fastclr.train.knn_monitor import KNNMonitor
from fastclr.train.logging import format_duration
from fastclr.train.meter import StepMeter
from fastclr.train.run import Run


def train(cfg: TrainConfig, env: DistEnv | None = None) -> dict[str, Any]:
    """Train cfg.method as `cfg` says; returns a summary (kNN before/after, images/s, final loss).

    env: this process's place in the job (fastclr.distributed.init_from_env); default: a single
    process on the GPU if there is one, else the CPU.
    """
    if env is None:
        env = DistEnv(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, notes = resolve_config(cfg)
    with Run.start(cfg, env) as run:
        log = run.logger
        for note in notes:
            log.print(f"note: {note}")
        monitor = knn_monitor(run) if env.is_main else None
        summary: dict[str, Any] = {"out": cfg.out, "knn_init": None, "knn_final": None}
        if monitor is not None and run.step == 0:
            summary["knn_init"] = monitor(run.raw_model.backbone)
            log.log("knn", 0, epoch=0, top1=summary["knn_init"])
            log.print(f"kNN top-1 of the random-init encoder: {summary['knn_init']:.2f}%")
        log_start(run)
        meter = StepMeter(
            log, batch_size=cfg.batch_size, steps_per_epoch=run.steps_per_epoch,
            epochs=cfg.epochs, stop_at=run.stop_at, show_bar=env.is_main,
        )  # fmt: skip
        if run.step >= run.stop_at:
            log.print(
                f"nothing to train: the run is at step {run.step} of {run.stop_at}; raise --epochs "
                f"(now {cfg.epochs}) or --max-steps (now {cfg.max_steps}) to train further"
            )

        run.model.train()
        for epoch in range(run.epoch, cfg.epochs):
            if run.step >= run.stop_at or not train_one_epoch(run, epoch, meter):
                break  # stopped by --max-steps (train_one_epoch checkpointed at the stop)
            run.save(epoch + 1, 0)
            knn = None
            if monitor is not None and (epoch + 1) % cfg.knn_every == 0:
                knn = summary["knn_final"] = monitor(run.raw_model.backbone)
            images_per_s = meter.mean_images_per_s
            log.log(
                "epoch", run.step, epoch=epoch + 1, loss=meter.loss, knn_top1=knn,
                images_per_s=round(images_per_s, 2) if images_per_s is not None else None,
            )  # fmt: skip
            knn_text = f", kNN top-1 {knn:.2f}%" if knn is not None else ""
            log.print(f"epoch {epoch + 1}/{cfg.epochs}: loss {meter.loss:.4f}{knn_text}")

        images_per_s = meter.mean_images_per_s
        summary.update(
            steps=run.step,
            final_loss=meter.loss,
            train_seconds=round(meter.train_seconds, 2),
            images_per_s=round(images_per_s, 2) if images_per_s is not None else None,
            last_checkpoint=run.last_checkpoint,
        )
        log.log("run", run.step, event="end", **summary)
        if images_per_s is not None:
            views = cfg.views + cfg.local_views
            log.print(
                f"done: {run.step} steps, {images_per_s:.1f} images/s (each image = {views} views), "
                f"{format_duration(meter.train_seconds)} training time"
            )
        if summary["knn_final"] is not None:
            init = summary["knn_init"]
            init_text = f" (random-init encoder: {init:.2f}%)" if init is not None else ""
            log.print(f"kNN top-1: {summary['knn_final']:.2f}%{init_text}")
        if env.is_main:
            summary["curves"] = draw_curves(run)
    return summary


def draw_curves(run: Run) -> str | None:
    """<out>/curves.png: loss, learning rate and kNN of the whole run (as `fastclr plot` draws)."""
    from fastclr.errors import UsageError
    from fastclr.plots import plot_training_run

    try:
        png = plot_training_run(run.logger.path, run.out / "curves.png")
    except UsageError as error:  # e.g. a resumed run with nothing left to train logged no step
        run.logger.print(f"note: no curves drawn: {error}")
        return None
    run.logger.print(f"curves: {png}")
    return str(png)


def knn_monitor(run: Run) -> KNNMonitor | None:
    """The kNN monitor of --knn-every, or None when it is off or the data has no labels."""
    cfg = run.cfg
    if cfg.knn_every == 0:
        return None
    monitor = KNNMonitor.from_data(
        cfg.data,
        cfg.image_size,
        max_images=cfg.knn_max_images,
        device=run.device,
        k=cfg.knn_k,
        temperature=cfg.knn_temperature,
        autocast_dtype=run.amp_dtype,
        channels_last=cfg.channels_last,
    )
    return monitor if monitor.labelled else None


def log_start(run: Run) -> None:
    cfg, backend = run.cfg, getattr(run.loader, "backend", "?")
    run.logger.log(
        "run", run.step, event="start", config=cfg.to_dict(), device=str(run.device),
        precision=run.precision, world_size=run.env.world_size,
        steps_per_epoch=run.steps_per_epoch, loader=backend,
    )  # fmt: skip
    run.logger.print(
        f"training {cfg.method}: {cfg.arch} ({cfg.stem} stem) on {cfg.data} at {cfg.image_size}px: "
        f"{cfg.epochs} epochs x {run.steps_per_epoch} steps, batch {cfg.batch_size}, "
        f"{cfg.optimizer} peak lr {run.schedule.peak_lr:.4g}, {run.precision} on {run.device} "
        f"x{run.env.world_size}, loss backend {cfg.loss_backend}, loader {backend}"
    )
