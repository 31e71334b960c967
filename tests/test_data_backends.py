"""The DALI-CPU and torchvision backends against each other, and sharding over ranks."""

import numpy as np
import pytest
import torch

from fastclr.data import AugmentConfig, build_train_loader, load_eval_split
from fastclr.data.dali_pipeline import dali_unavailable_reason

needs_dali = pytest.mark.skipif(
    dali_unavailable_reason() is not None, reason=f"DALI unavailable: {dali_unavailable_reason()}"
)
BACKENDS = [pytest.param("dali-cpu", marks=needs_dali), "torch"]


def _views(data, backend, augment, batch_size, batches):
    loader = build_train_loader(
        data, batch_size=batch_size, loader=backend, augment=augment, num_workers=1, seed=11
    )
    views = []
    while len(views) < 2 * batches:  # as many epochs as it takes
        for first, second, _ in loader:
            views += [first, second]
            if len(views) == 2 * batches:
                break
    return torch.cat(views)


@needs_dali
@pytest.mark.parametrize(
    ("data", "augment", "batch_size", "batches"),
    [
        ("digits", AugmentConfig.for_image_size(32), 128, 3),  # the small-image defaults
        ("skimage", AugmentConfig(64, jitter_strength=1.0, blur_p=0.5), 26, 12),  # ImageNet's
    ],
)
def test_dali_and_torch_agree_in_output_statistics(data, augment, batch_size, batches):
    """Per-channel mean and std of the views, and the mean colour spread |R - B|, agree between
    backends. Per-view channel means and stds: within 4 standard errors of their difference (from
    their spread over views: crops of few photos and brightness jitter are noisy) plus 0.05; the
    spread within 20% (turning jitter off moves it by ~20%). The backends differ by design in
    jitter details: DALI's contrast pivots on mid-gray and applies the four jitter ops in a fixed
    order; torchvision pivots on the image mean, in random order. Each op's probability is
    checked on its own in test_data_augment.py."""
    dali = _views(data, "dali-cpu", augment, batch_size, batches)
    torchvision = _views(data, "torch", augment, batch_size, batches)
    pairs = len(dali) / 2  # the two views of an image are not independent
    for stat in (torch.mean, torch.std):
        per_view_d, per_view_t = stat(dali, (2, 3)), stat(torchvision, (2, 3))
        error = (per_view_d.var(0) / pairs + per_view_t.var(0) / pairs).sqrt()
        gap = (per_view_d.mean(0) - per_view_t.mean(0)).abs()
        assert (gap <= 4 * error + 0.05).all(), (stat.__name__, gap, error)
    spread_d = (dali[:, 0] - dali[:, 2]).abs().mean()
    spread_t = (torchvision[:, 0] - torchvision[:, 2]).abs().mean()
    assert abs(spread_d - spread_t) < 0.2 * max(spread_t, 0.05), (spread_d, spread_t)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_views_match_float32(backend, dtype):
    full, low = (
        next(iter(build_train_loader("digits", batch_size=16, loader=backend, dtype=d, seed=2)))
        for d in (torch.float32, dtype)
    )
    tolerance = 0.01 if dtype == torch.float16 else 0.04  # 2.7 max |value|, 8 and 11 mantissa bits
    assert low[0].dtype == dtype and low[0].is_contiguous(memory_format=torch.channels_last)
    assert (low[0].float() - full[0]).abs().max() < tolerance


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_are_disjoint_and_equally_long(backend):
    """3 ranks over the 1,437 digits: disjoint indices, equal batch counts, and each rank's actual
    (un-augmented) output is exactly the images its indices name."""
    world_size, batch_size = 3, 64
    augment = AugmentConfig(
        32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0
    )
    images, labels = load_eval_split("digits", split="train")
    loaders = [
        build_train_loader(
            "digits",
            batch_size=batch_size,
            loader=backend,
            augment=augment,
            num_workers=1,
            rank=rank,
            world_size=world_size,
        )
        for rank in range(world_size)
    ]
    assert [len(loader) for loader in loaders] == [1437 // world_size // batch_size] * world_size
    for epoch in (0, 1):
        shards = [loader.epoch_batches(epoch).reshape(-1) for loader in loaders]
        together = np.concatenate(shards)
        assert len(np.unique(together)) == len(together) == world_size * len(loaders[0]) * 64
    for rank, loader in enumerate(loaders):
        first, second, got = next(iter(loader))
        index = torch.from_numpy(loader.epoch_batches(0)[0])
        assert (first - images[index]).abs().max() < 1e-4, f"rank {rank}"
        assert torch.equal(got, labels[index])
