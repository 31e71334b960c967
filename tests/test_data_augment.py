"""Two-view augmentation on real images (scikit-learn digits, scikit-image photos), both CPU backends.

Each random op's probability is measured by switching every other op off (full-image crop, other
probabilities 0) so that a view is either the normalized source image, exactly, or the op's output:
every view is classified, and the fired fraction must lie within binomial bounds of p.
"""

import dataclasses
import math

import pytest
import torch

from fastclr.data import AugmentConfig, build_train_loader, load_eval_split
from fastclr.data.dali_pipeline import dali_unavailable_reason

needs_dali = pytest.mark.skipif(
    dali_unavailable_reason() is not None, reason=f"DALI unavailable: {dali_unavailable_reason()}"
)
BACKENDS = [pytest.param("dali-cpu", marks=needs_dali), "torch"]
EXACT = 1e-4  # |view - normalized source|: float rounding only
SIZE = 32
NO_AUGMENT = AugmentConfig(
    SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0
)


def _loader(data, backend, augment, batch_size, num_workers=1, **kwargs):
    # one worker: DataLoader workers run single-threaded torch, far faster on these tiny images
    return build_train_loader(
        data,
        batch_size=batch_size,
        loader=backend,
        augment=augment,
        num_workers=num_workers,
        **kwargs,
    )


def _views_with_sources(data, backend, augment, *, batch_size, epochs, max_batches, workers=1):
    """All views of the first `max_batches` batches of `epochs` epochs, each paired with its
    source image as load_eval_split gives it (the exact un-augmented target)."""
    sources, _ = load_eval_split(data, image_size=SIZE, split="train")
    loader = _loader(data, backend, augment, batch_size, num_workers=workers)
    views, refs = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for step, (first, second, _) in enumerate(loader):
            index = torch.from_numpy(loader.epoch_batches(epoch)[step])
            views += [first, second]
            refs += [sources[index], sources[index]]
            if step + 1 == max_batches:
                break
    return torch.cat(views), torch.cat(refs)


def _max_diff(a, b):
    return (a - b).abs().flatten(1).amax(1)


def _assert_rate(fired, p):
    n = fired.numel()
    assert n >= 300, f"only {n} usable samples: the bound would be too loose"
    rate = fired.float().mean().item()
    bound = 5 * math.sqrt(p * (1 - p) / n) + 1 / n
    assert abs(rate - p) <= bound, (
        f"fired in {rate:.3f} of {n} samples, expected {p} +- {bound:.3f}"
    )


def test_config_defaults_follow_the_paper():
    small, large = AugmentConfig.for_image_size(32), AugmentConfig.for_image_size(224)
    assert (small.jitter_strength, small.blur_p) == (0.5, 0.0)
    assert (large.jitter_strength, large.blur_p) == (1.0, 0.5)
    assert large.blur_kernel_size == 23 and large.blur_kernel_size % 2 == 1
    assert (large.brightness, large.hue) == pytest.approx((0.8, 0.2))
    assert (small.scale, small.ratio, small.flip_p, small.jitter_p, small.gray_p) == (
        (0.08, 1.0),
        (3 / 4, 4 / 3),
        0.5,
        0.8,
        0.2,
    )
    assert AugmentConfig(224) == large
    for bad in (
        {"flip_p": 1.5},
        {"scale": (0.5, 0.2)},
        {"blur_kernel_size": 4},
        {"std": (0, 1, 1)},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AugmentConfig(32, **bad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_output_contract(backend, dtype):
    augment = AugmentConfig.for_image_size(SIZE)
    loader = _loader("digits", backend, augment, 32, dtype=dtype, seed=3)
    assert loader.backend == backend and loader.num_images == 1437 and loader.skipped == 0
    assert len(loader) == 1437 // 32
    _, labels_all = load_eval_split("digits", split="train")
    first, second, labels = next(iter(loader))
    index = torch.from_numpy(loader.epoch_batches(0)[0])
    low = min((0 - m) / s for m, s in zip(augment.mean, augment.std, strict=True))
    high = max((1 - m) / s for m, s in zip(augment.mean, augment.std, strict=True))
    for view in (first, second):
        assert view.shape == (32, 3, SIZE, SIZE) and view.dtype == dtype
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(view).all()
        assert low - 0.02 <= view.float().min() and view.float().max() <= high + 0.02
        assert view.float().std() > 0.3  # not a constant or un-normalized 0..1 image
    assert labels.dtype == torch.int64 and torch.equal(labels, labels_all[index])
    same = _max_diff(first.float(), second.float()) < EXACT
    assert same.float().mean() < 0.05, "the two views of an image should differ"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("data", ["digits", "skimage"])
def test_no_augmentation_gives_the_normalized_source(backend, data):
    views, refs = _views_with_sources(
        data, backend, NO_AUGMENT, batch_size=16, epochs=1, max_batches=1
    )
    assert _max_diff(views, refs).max() < EXACT


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.5, 0.25])
def test_flip_probability(backend, p):
    views, refs = _views_with_sources(
        "digits",
        backend,
        dataclasses.replace(NO_AUGMENT, flip_p=p),
        batch_size=128,
        epochs=1,
        max_batches=2,
    )
    mirrored = refs.flip(3)
    usable = _max_diff(refs, mirrored) > 0.5  # skip the rare mirror-symmetric digit
    kept, flipped = _max_diff(views, refs) < EXACT, _max_diff(views, mirrored) < EXACT
    assert (kept | flipped).all(), "every view must be the source or its mirror image"
    _assert_rate(flipped[usable], p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_probability(backend):
    augment = dataclasses.replace(NO_AUGMENT, gray_p=0.2)
    views, refs = _views_with_sources(
        "skimage", backend, augment, batch_size=26, epochs=16, max_batches=1, workers=0
    )  # 26 photos: many short epochs, so no worker start-up per epoch
    std = torch.tensor(augment.std).view(1, 3, 1, 1)
    mean = torch.tensor(augment.mean).view(1, 3, 1, 1)
    pixels = (views * std + mean) * 255  # back to 0..255

    def channel_spread(x):
        return (x.amax(1) - x.amin(1)).flatten(1).amax(1)

    colourful = channel_spread((refs * std + mean) * 255) > 30  # skip the grayscale photos
    gray = channel_spread(pixels) < 1.01  # DALI's YIQ round trip: channels within one level
    kept = _max_diff(views, refs) < EXACT
    assert (gray | kept).all(), "every view must be the source or a grayscale image"
    _assert_rate(gray[colourful], 0.2)
    assert (gray[~colourful]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("field", "p", "extra"),
    [("jitter_p", 0.8, {}), ("blur_p", 0.3, {"blur_sigma": (1.0, 2.0), "blur_kernel_size": 5})],
)
def test_jitter_and_blur_probability(backend, field, p, extra):
    # blur sigma from 1: a sigma near 0.1 leaves uint8 pixels unchanged and could not be seen
    augment = dataclasses.replace(NO_AUGMENT, **{field: p}, **extra)
    views, refs = _views_with_sources(
        "digits", backend, augment, batch_size=96, epochs=1, max_batches=2
    )
    _assert_rate(_max_diff(views, refs) > EXACT, p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_batches_and_epochs_differ(backend):
    augment = AugmentConfig.for_image_size(SIZE)

    def first_batch(seed, epoch):
        loader = _loader("digits", backend, augment, 16, seed=seed)
        loader.set_epoch(epoch)
        return next(iter(loader))

    a, b = first_batch(7, 1), first_batch(7, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], first_batch(7, 2)[0])
    assert not torch.equal(a[0], first_batch(8, 1)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_epoch_has_the_same_number_of_batches(backend):
    loader = _loader("skimage", backend, NO_AUGMENT, 8)
    assert len(loader) == 26 // 8
    counts = [sum(1 for _ in loader) for _ in range(3)]
    assert counts == [len(loader)] * 3
    loader.set_epoch(0)
    again = [labels for _, _, labels in loader]
    loader.set_epoch(0)
    assert all(torch.equal(x, y) for x, y in zip(again, [y for *_, y in loader], strict=True))


def test_torch_batches_do_not_depend_on_num_workers():
    augment = AugmentConfig.for_image_size(SIZE)
    batches = []
    for workers in (0, 2):
        loader = build_train_loader(
            "skimage", batch_size=8, loader="torch", augment=augment, num_workers=workers
        )
        batches.append(next(iter(loader)))
    assert all(torch.equal(x, y) for x, y in zip(*batches, strict=True))
