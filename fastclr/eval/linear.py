"""Linear probe: a logistic-regression layer trained on frozen backbone features, top-1 accuracy.

Features are standardized with the train split's mean and std, then one nn.Linear is trained with
AdamW and cross-entropy on shuffled mini-batches, with a cosine learning rate. Cheap: the backbone
runs once per image (no augmentation), then only [N, F] features are read.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastclr.errors import UsageError


def linear_probe_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Top-1 accuracy in percent of a linear classifier trained on train_features [N, F].

    epochs >= 1 and batch_size >= 1 (a probe trained for 0 epochs would score its random init).
    """
    if epochs < 1:
        raise UsageError(f"linear probe epochs must be at least 1, got {epochs}; recommended: 100")
    if batch_size < 1:
        raise UsageError(f"linear probe batch_size must be at least 1, got {batch_size}")
    if not lr > 0:
        raise UsageError(f"linear probe lr must be > 0, got {lr}; recommended: 1e-2")
    device = train_features.device
    mean = train_features.mean(dim=0, keepdim=True)
    std = train_features.std(dim=0, keepdim=True).clamp_min(1e-6)
    x_train = (train_features.float() - mean) / std
    x_test = (test_features.float().to(device) - mean) / std
    y_train = train_labels.to(device)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)  # the layer's init; the caller's RNG is put back below
    classifier = nn.Linear(x_train.shape[1], num_classes).to(device)
    torch.set_rng_state(torch_state)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(x_train.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
    )
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=generator).to(device)
        for start in range(0, x_train.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        pred = classifier(x_test).argmax(dim=1)
    return 100.0 * (pred.cpu() == test_labels.cpu()).float().mean().item()
