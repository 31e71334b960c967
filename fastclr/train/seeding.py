"""Seeds: one for the initial weights (the same on every rank), one per (rank, epoch) for the data."""

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Each (rank, epoch) gets its own stream, so a resumed run redraws exactly the same epoch."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**31
