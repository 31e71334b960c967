"""One training step of a method (fastclr/methods) and one epoch of them.

One step: the loader's views of a batch go to the method, which returns its loss (SimCLR: the
views as one batch of V*B images through the network, NT-Xent with negatives from every rank);
LARS/SGD/AdamW takes a step at the scheduled learning rate (groups marked fixed_lr at a multiple of
the peak); then the method's after_step runs (momentum encoders, queues). `simclr_step` is the
plain SimCLR step on a SimCLRModel, as the benchmarks time it.

Host syncs are deliberate and few: the loss is read (`.item()`) only on logged steps and before a
checkpoint. A non-finite loss is caught by a flag accumulated on the device every step, so no
checkpoint is ever written from a poisoned model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fastclr.ops import nt_xent
from fastclr.train.meter import StepMeter
from fastclr.train.run import NonFiniteLossError, Run
from fastclr.train.seeding import epoch_seed, seed_everything


def simclr_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    view1: torch.Tensor,
    view2: torch.Tensor,
    *,
    temperature: float,
    loss_backend: str = "auto",
    amp: contextlib.AbstractContextManager | None = None,
    memory_format: torch.memory_format = torch.channels_last,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """One SimCLR update on views [B, 3, H, W] x 2; returns the detached loss (no host sync).

    Both views go through the network as one batch of 2B, so BN statistics cover both views.
    """
    views = torch.cat([view1, view2]).contiguous(memory_format=memory_format)
    with amp if amp is not None else contextlib.nullcontext():
        _, z = model(views)
        z1, z2 = z.chunk(2)
        loss = nt_xent(
            z1, z2, temperature, backend=loss_backend, gather_distributed=gather_distributed
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def method_step(run: Run, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """One update of run.raw_model's method at step run.step; returns the detached loss."""
    method, optimizer, scaler = run.raw_model, run.optimizer, run.scaler
    views = [view.contiguous(memory_format=run.memory_format) for view in views]
    with run.amp:
        loss = run.model(views, labels, run.step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    method.after_backward(run.step)
    scaler.step(optimizer)
    scaler.update()
    method.after_step(run.step, run.total_steps)
    return loss.detach()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, peak_lr: float) -> None:
    """Every group at `lr`, except those marked fixed_lr (a predictor) at their `peak_lr_scale` x
    `peak_lr` (1 in checkpoints written before the scale existed)."""
    for group in optimizer.param_groups:
        group["lr"] = peak_lr * group.get("peak_lr_scale", 1.0) if group.get("fixed_lr") else lr


def train_one_epoch(run: Run, epoch: int, meter: StepMeter) -> bool:
    """Train `epoch` from run.step_in_epoch (non-zero only in a resumed epoch) until its end or
    run.stop_at; checkpoints every --checkpoint-every steps and at the stop. Returns whether the
    epoch ran to its end (then the caller writes the epoch-end checkpoint)."""
    cfg = run.cfg
    seed_everything(epoch_seed(cfg.seed, run.env.rank, epoch))
    run.loader.set_epoch(epoch)
    batches = iter(run.loader)
    run.skip_trained_batches(batches)
    meter.start_epoch()
    nonfinite = torch.zeros((), dtype=torch.bool, device=run.device)

    def synced_loss(loss: torch.Tensor) -> float:
        """Host sync: the loss, after checking no loss since the last sync was NaN/Inf."""
        value = loss.item()
        if bool(nonfinite):
            raise NonFiniteLossError(run.nonfinite_message(f"the loss became {value}"))
        return value

    for *views, labels in batches:
        lr = run.schedule(run.step)
        set_learning_rate(run.optimizer, lr, run.schedule.peak_lr)
        loss = method_step(run, views, labels)
        nonfinite |= ~torch.isfinite(loss)  # no sync: checked when the loss is read
        run.step += 1
        run.step_in_epoch += 1
        epoch_end = run.step_in_epoch == run.steps_per_epoch
        stop = run.step == run.stop_at
        logged = run.step % cfg.log_every == 0 or epoch_end or stop
        meter.step(step=run.step, epoch=epoch, lr=lr, loss=synced_loss(loss) if logged else None)
        if epoch_end:
            break
        if stop or (cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0):
            synced_loss(loss)
            with meter.paused():
                run.save(epoch, run.step_in_epoch)
        if stop:
            break
    meter.end_epoch()
    finished = run.step_in_epoch == run.steps_per_epoch
    if finished:
        run.epoch, run.step_in_epoch = epoch + 1, 0
    return finished
