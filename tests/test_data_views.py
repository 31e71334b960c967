"""V global views and SwAV multi-crop from both CPU backends, BYOL's per-view blur and
solarization, and the default two views staying bit-identical to the two-view loader."""

import dataclasses
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from fastclr.data import AugmentConfig, build_train_loader, load_eval_split
from fastclr.data.dali_pipeline import dali_unavailable_reason
from fastclr.errors import UsageError

needs_dali = pytest.mark.skipif(
    dali_unavailable_reason() is not None, reason=f"DALI unavailable: {dali_unavailable_reason()}"
)
BACKENDS = [pytest.param("dali-cpu", marks=needs_dali), "torch"]
EXACT = 1e-4  # |view - normalized source|: float rounding only
SIZE = 32
NO_AUGMENT = AugmentConfig(
    SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0
)

# sha256[:16] of the first two batches (epoch 1, seed 5, batch 8, one worker) of the two-view
# loader at commit 1e823f4 (before views were configurable), as the uint8 pixels under the
# normalization. torchvision's uint8 resize has an AVX2 kernel (AVX-512 machines use it too) and
# a generic one (ATEN_CPU_CAPABILITY=default) that rounds differently.
RECORDED = {
    ("torch", "digits32", "simd"): "17972bc21bb90272",
    ("torch", "skimage48", "simd"): "83e73ab14c8f7491",
    ("torch", "digits32", "generic"): "27fd460aab902aea",
    ("torch", "skimage48", "generic"): "898eddef6f6affb3",
    ("dali-cpu", "digits32", None): "612002023e0c9ec6",
    ("dali-cpu", "skimage48", None): "e5ec01932184a782",
}
RECORDED_CASES = {
    "digits32": ("digits", AugmentConfig(32)),
    "skimage48": ("skimage", AugmentConfig(48, jitter_strength=1.0, blur_p=0.5)),
}


def _loader(backend, augment, *, data="digits", batch_size=8, seed=5, num_workers=0, **kwargs):
    return build_train_loader(
        data,
        batch_size=batch_size,
        loader=backend,
        augment=augment,
        num_workers=num_workers,
        seed=seed,
        **kwargs,
    )


def _pixels(view, augment):
    """The uint8 image under a normalized view (both pipelines normalize uint8 pixels)."""
    mean = torch.tensor(augment.mean).view(1, 3, 1, 1)
    std = torch.tensor(augment.std).view(1, 3, 1, 1)
    return ((view.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).contiguous()


def _max_diff(a, b):
    return (a - b).abs().flatten(1).amax(1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(RECORDED_CASES))
def test_default_views_are_those_of_the_two_view_loader(backend, case):
    capability = torch.backends.cpu.get_cpu_capability()
    group = None
    if backend == "torch":
        if capability not in ("AVX2", "AVX512", "DEFAULT"):
            pytest.skip(f"no recorded torchvision pixels for CPU capability {capability}")
        group = "generic" if capability == "DEFAULT" else "simd"
    data, augment = RECORDED_CASES[case]
    loader = _loader(backend, augment, data=data, num_workers=1)
    loader.set_epoch(1)
    steps = iter(loader)
    digest = hashlib.sha256()
    for _ in range(2):
        step = next(steps)
        assert len(step) == 3
        for view in step[:2]:
            digest.update(_pixels(view, augment).numpy().tobytes())
    assert digest.hexdigest()[:16] == RECORDED[(backend, case, group)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("views", "local_views", "local_size"), [(3, 0, None), (2, 4, None), (2, 3, 8)]
)
def test_views_contract(backend, views, local_views, local_size):
    augment = AugmentConfig(
        SIZE, scale=(0.14, 1.0), num_views=views, local_views=local_views, local_size=local_size
    )
    sizes = [SIZE] * views + [augment.local_size] * local_views
    assert augment.local_size == (local_size or 16)  # 32 * 96 / 224 = 13.7 -> 16
    loader = _loader(backend, augment, batch_size=12, dtype=torch.float16, seed=3)
    step = next(iter(loader))
    *out, labels = step
    assert len(out) == views + local_views
    _, all_labels = load_eval_split("digits", split="train")
    index = torch.from_numpy(loader.epoch_batches(0)[0])
    assert labels.dtype == torch.int64 and torch.equal(labels, all_labels[index])
    for view, size in zip(out, sizes, strict=True):
        assert view.shape == (12, 3, size, size) and view.dtype == torch.float16
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(view).all() and view.float().std() > 0.3
    for i in range(len(out)):  # every pair of same-size views: independent draws
        for j in range(i + 1, len(out)):
            if sizes[i] == sizes[j]:
                same = _max_diff(out[i].float(), out[j].float()) < EXACT
                assert same.float().mean() < 0.2, f"views {i} and {j} are mostly equal"
    again = next(iter(_loader(backend, augment, batch_size=12, dtype=torch.float16, seed=3)))
    assert all(torch.equal(a, b) for a, b in zip(step, again, strict=True))
    other = next(iter(_loader(backend, augment, batch_size=12, dtype=torch.float16, seed=4)))
    assert not any(torch.equal(a, b) for a, b in zip(out, other[:-1], strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_views_keep_the_first_two(backend):
    """Views are drawn one after the other: the first two of V = 3 are the default's two."""
    two = next(iter(_loader(backend, AugmentConfig(SIZE))))
    three = next(iter(_loader(backend, AugmentConfig(SIZE, num_views=3))))
    assert torch.equal(two[0], three[0]) and torch.equal(two[1], three[1])
    assert torch.equal(two[2], three[3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_views_are_resized_crops_of_the_source(backend):
    """Full-image local crops of a non-augmented view are the source resized to local_size
    (bilinear with antialias; the two libraries' resamplers differ by a few levels)."""
    augment = dataclasses.replace(NO_AUGMENT, local_views=2, local_scale=(1.0, 1.0), local_size=16)
    sources, _ = load_eval_split("digits", image_size=SIZE, split="train")
    loader = _loader(backend, augment, batch_size=16)
    first, second, local1, local2, _ = next(iter(loader))
    source = sources[torch.from_numpy(loader.epoch_batches(0)[0])]
    assert _max_diff(first, source).max() < EXACT and _max_diff(second, source).max() < EXACT
    resized = F.interpolate(source, size=(16, 16), mode="bilinear", antialias=True)
    for local in (local1, local2):
        assert local.shape == (16, 3, 16, 16)
        assert (local - resized).abs().mean() < 0.05 and _max_diff(local, resized).max() < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_view_blur_and_solarize(backend):
    """BYOL's asymmetry at its extremes: view 1 always blurred and never solarized, view 2 never
    blurred and always solarized (values >= 128 of 255 inverted)."""
    augment = dataclasses.replace(
        NO_AUGMENT,
        blur_sigma=(1.0, 2.0),
        blur_kernel_size=5,
        view_blur_p=(1.0, 0.0),
        view_solarize_p=(0.0, 1.0),
    )
    sources, _ = load_eval_split("skimage", image_size=SIZE, split="train")
    loader = _loader(backend, augment, data="skimage", batch_size=16)
    blurred, solarized, _ = next(iter(loader))
    source = sources[torch.from_numpy(loader.epoch_batches(0)[0])]
    assert (_max_diff(blurred, source) > 0.05).all()
    pixels = _pixels(source, augment).int()
    expected = torch.where(pixels >= 128, 255 - pixels, pixels)
    assert torch.equal(_pixels(solarized, augment).int(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_solarize_probability(backend):
    """Each view is exactly the source or exactly its solarization, at the binomial rate of p."""
    p = 0.3
    augment = dataclasses.replace(NO_AUGMENT, view_solarize_p=(p, p))
    sources, _ = load_eval_split("digits", image_size=SIZE, split="train")
    loader = _loader(backend, augment, batch_size=128)
    fired = []
    for step, (first, second, _) in zip(range(2), loader, strict=False):
        source = _pixels(sources[torch.from_numpy(loader.epoch_batches(0)[step])], augment).int()
        solarized = torch.where(source >= 128, 255 - source, source)
        for view in (first, second):
            pixels = _pixels(view, augment).int()
            kept = (pixels == source).flatten(1).all(1)
            inverted = (pixels == solarized).flatten(1).all(1)
            # digits always have pixels >= 128, so a view is never both
            assert (kept ^ inverted).all(), "every view must be the source or its solarization"
            fired.append(inverted)
    fired = torch.cat(fired)
    bound = 5 * math.sqrt(p * (1 - p) / fired.numel()) + 1 / fired.numel()
    assert abs(fired.float().mean().item() - p) <= bound


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_views", 1),
        ("num_views", 2.0),
        ("local_views", -1),
        ("local_size", 4),
        ("local_size", 64),
        ("local_scale", (0.2, 0.1)),
        ("local_scale", (0.05, 0.1, 0.2)),
        ("view_blur_p", (1.0,)),
        ("view_solarize_p", (0.0, 1.5)),
    ],
)
def test_bad_view_settings_name_the_field(field, value):
    with pytest.raises(UsageError, match=field) as error:
        AugmentConfig(SIZE, **{field: value})
    assert "\n" not in str(error.value)


def test_local_size_default_follows_swav():
    assert AugmentConfig(224).local_size == 96
    assert [AugmentConfig(s).local_size for s in (8, 32, 64, 96, 160)] == [8, 16, 24, 40, 72]
    specs = AugmentConfig(224, local_views=6).view_specs()
    assert [s.size for s in specs] == [224] * 2 + [96] * 6
    assert specs[-1].scale == (0.05, 0.14) and specs[-1].blur_kernel_size == 11
    assert dataclasses.replace(AugmentConfig(32), num_views=4).view_specs()[3].size == 32
