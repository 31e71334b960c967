"""Which images each rank sees in each epoch, and the per-epoch random seeds.

One permutation of all N images per (seed, epoch), shared by every rank; rank r takes positions
r, r + W, r + 2W, ... of its first W * (N // W) entries (W = world_size), so the shards are
disjoint and equally long, then drops the last partial batch. Both backends use this: the same
(seed, epoch, rank) visits the same images in the same order whatever the backend.
"""

from __future__ import annotations

import numpy as np


def batches_per_epoch(num_images: int, batch_size: int, world_size: int) -> int:
    return (num_images // world_size) // batch_size


def epoch_batches(
    num_images: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int
) -> np.ndarray:
    """Image indices [batches_per_epoch, batch_size] (int64) that `rank` loads in `epoch`."""
    per_rank = num_images // world_size
    n_batches = per_rank // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    shard = order[rank : world_size * per_rank : world_size]
    return shard[: n_batches * batch_size].reshape(n_batches, batch_size).astype(np.int64)


def augment_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the random augmentations of one rank in one epoch (a 31-bit int, as DALI takes)."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF
