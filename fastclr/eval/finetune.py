"""Fine-tuning with labels: the pretrained backbone + a linear head against the same network from
random initialization, trained the same way (the experiment that ends the SimCLR paper's story).

Both runs see the same images in the same order with the same augmentation draws and the same head
initialization, so the curves differ only by the backbone's starting weights. Training: SGD with
Nesterov momentum, lr = base_lr x batch / 256 and a per-step cosine decay without warmup (a warmup
would hide the pretrained backbone's head start in the first epochs' curves).
Augmentation is the standard supervised one (random resized crop of at least half the image plus a
horizontal flip), done on the whole batch on its device by one affine resampling. Before each
validation pass the BN running statistics are re-estimated on training images ("precise BN").

    images [M, 3, S, S] --backbone--> h [M, F] --Linear--> logits [M, classes]
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastclr.errors import UsageError

# Batches of un-augmented training images that re-estimate BN statistics before each evaluation.
BN_STATISTICS_BATCHES = 50


@dataclass(frozen=True)
class FinetuneConfig:
    """How both networks are fine-tuned. Recommended values are the defaults."""

    epochs: int = 10
    batch_size: int = 128
    base_lr: float = 0.1  # SGD lr at batch 256; scaled linearly with batch_size
    weight_decay: float = 5e-4
    momentum: float = 0.9
    min_crop_scale: float = 0.5  # smallest crop area as a fraction of the image
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("--epochs", self.epochs, self.epochs >= 1, "an integer >= 1 (recommended: 10)"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "an integer >= 1"),
            ("--lr", self.base_lr, 0 < self.base_lr < math.inf, "a number > 0 (recommended: 0.1)"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--min-crop-scale", self.min_crop_scale, 0 < self.min_crop_scale <= 1, "in (0, 1]"),
        )
        for flag, value, ok, expected in checks:
            if not ok:
                raise UsageError(f"{flag} {value}: must be {expected}")

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


@dataclass(frozen=True)
class LabelledSplits:
    """train_x [M, 3, S, S] float32 normalized, train_y [M] int64 in [0, classes); same for val."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.val_y.max())) + 1

    def check(self, data: str) -> None:
        for split, labels in (("train", self.train_y), ("val", self.val_y)):
            if labels.numel() == 0:
                raise UsageError(f"--data {data}: the {split} split is empty")
            if (labels < 0).any():
                raise UsageError(
                    f"--data {data}: fine-tuning needs class labels, but the {split} split has "
                    "unlabelled images; use a folder laid out as PATH/train/<class>/*, "
                    "PATH/val/<class>/* (or digits / cifar10:PATH)"
                )


class Classifier(nn.Module):
    """backbone [B, 3, S, S] -> [B, F], then one Linear -> [B, classes]."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def random_crop_flip(
    images: Tensor, min_scale: float, flip: bool, generator: torch.Generator
) -> Tensor:
    """Per-image random resized crop (area in [min_scale, 1], square) and flip of [B, 3, S, S].

    One batched affine resampling (bilinear, border padding) on the images' device; the random
    draws come from `generator` (CPU), so two runs with equal generators see equal crops.
    """
    batch = images.shape[0]
    side = torch.empty(batch).uniform_(min_scale, 1.0, generator=generator).sqrt()
    # The crop's centre may move as far as the crop still lies inside the image.
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (1 - side).unsqueeze(1)
    mirror = torch.ones(batch)
    if flip:
        mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = side * mirror
    theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, x: Tensor, batch_size: int, max_batches: int) -> None:
    """Precise BN (as in pycls/Detectron): running mean/var re-estimated as the plain average over
    up to `max_batches` batches of x [M, 3, S, S] with the current weights.

    A short fine-tune takes too few steps for the momentum-0.1 running averages to forget their
    initial values (0.9^12 = 28% of the init after 12 steps), and eval-mode accuracy then measures
    stale statistics, not the weights. Training itself uses batch statistics and is unaffected.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    device = next(model.parameters()).device
    for start in range(0, min(x.shape[0], batch_size * max_batches), batch_size):
        model(
            x[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        )
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) of model on x [M, 3, S, S], y [M], in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        yb = y[start : start + batch_size].to(device)
        logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / x.shape[0], 100.0 * correct / x.shape[0]


def finetune(
    backbone: nn.Module,
    feature_dim: int,
    splits: LabelledSplits,
    cfg: FinetuneConfig,
    *,
    device: torch.device,
    run: str,
) -> list[dict[str, float | int | str]]:
    """Fine-tune a copy of `backbone` + a fresh Linear head on splits; one record per epoch:
    {"run", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}."""
    torch.manual_seed(cfg.seed)  # the head's init: equal for every backbone
    model = Classifier(copy.deepcopy(backbone), feature_dim, splits.num_classes)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(splits.train_x.shape[0] / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # data order and crops: equal for both runs
    records = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        lr = schedule.get_last_lr()[0]
        order = torch.randperm(splits.train_x.shape[0], generator=generator)
        for start in range(0, order.numel(), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = splits.train_x[idx].to(device)
            x = random_crop_flip(x, cfg.min_crop_scale, cfg.flip, generator)
            y = splits.train_y[idx].to(device)
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{run}: non-finite fine-tuning loss at epoch {epoch + 1}; lower --lr "
                    f"(now {cfg.base_lr} at batch 256)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
        recompute_bn_statistics(model, splits.train_x, cfg.batch_size, BN_STATISTICS_BATCHES)
        val_loss, val_acc = evaluate(model, splits.val_x, splits.val_y, cfg.batch_size)
        records.append(
            {
                "run": run,
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / seen,
                "train_acc": 100.0 * correct / seen,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": time.perf_counter() - started,
            }
        )
    return records
