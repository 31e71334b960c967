"""Two-view SimCLR loading throughput: DALI (CPU, and GPU where there is one) against a torchvision
DataLoader on the same images, each with the same augmentations and batch.

    pytest bench/test_bench_data.py --benchmark-only   timed; results (images/s) also written to
                                                       bench/results/<device-slug>/data-<time>.json
                                                       (--bench-results DIR: elsewhere)
    pytest bench/test_bench_data.py                    (CI) each case loads one batch of 8,
                                                       checked, untimed, nothing saved

Cases: scikit-learn digits in memory at 32 px (the paper's small-image settings) and a folder of
JPEGs of scikit-image photos at 224 px (ImageNet settings: s=1, blur), decoded by each backend.
Before timing, every case must pass a correctness gate: with augmentation off, the views are exactly
the normalized source images (digits), and augmented views have the contract's shape, dtype, memory
format and sane statistics. images/s counts source images; each gives two views.
On a GPU, test_resnet50_step_rate measures the images/s a ResNet-50 training step consumes (bf16,
channels_last) to answer whether a loader keeps it fed.
"""

from pathlib import Path

import pytest
import skimage.data
import torch
from PIL import Image

from fastclr.bench import environment
from fastclr.data import AugmentConfig, build_train_loader, load_eval_split
from fastclr.data.dali_pipeline import dali_unavailable_reason

SCHEMA, RESULTS_PREFIX = "fastclr-bench-data/1", "data-"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
COPIES = 16  # 96 JPEG files
CASES = {  # name -> (data, image size, batch size, batches timed per round)
    "digits-32px": ("digits", 32, 256, 4),
    "jpeg-224px": (None, 224, 32, 3),
}
BACKENDS = ("dali-cpu", "dali-gpu", "torch")
NUM_WORKERS = 2


def _skip_reason(backend: str) -> str | None:
    if backend.startswith("dali") and dali_unavailable_reason() is not None:
        return f"DALI unavailable: {dali_unavailable_reason()}"
    if backend == "dali-gpu" and not torch.cuda.is_available():
        return "needs a CUDA device"
    return None


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """Real photos as JPEGs (native sizes, quality 90) in two class folders."""
    root = tmp_path_factory.mktemp("bench_jpegs")
    for i, name in enumerate(PHOTOS):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for copy in range(COPIES):
            image.save(folder / f"{name}_{copy}.jpg", quality=90)
    return root


def results_env() -> dict:
    """The environment recorded with this module's results (bench/conftest.py's `records`)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {**environment.collect(device), **_versions()}


def _versions() -> dict:
    names = ("torch", "torchvision", "nvidia-dali-cuda130", "pillow", "numpy")
    return {"versions": {name: environment.package_version(name) for name in names}}


def _check_views(first, second, labels, batch_size, size, dtype) -> None:
    for view in (first, second):
        assert view.shape == (batch_size, 3, size, size) and view.dtype == dtype
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(view).all()
        assert view.float().abs().mean((0, 2, 3)).max() < 2.0
        assert 0.3 < view.float().std() < 2.5
    assert labels.shape == (batch_size,) and labels.dtype == torch.int64
    assert not torch.equal(first, second)


def _gate_no_augmentation(backend: str, device: torch.device) -> None:
    """Augmentation off: the views are exactly the normalized digits the indices name."""
    augment = AugmentConfig(
        32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0
    )
    loader = build_train_loader(
        "digits", batch_size=64, loader=backend, augment=augment, device=device, num_workers=1
    )
    images, _ = load_eval_split("digits", split="train")
    first, second, _ = next(iter(loader))
    expected = images[torch.from_numpy(loader.epoch_batches(0)[0])].to(device)
    assert (first - expected).abs().max() < 1e-4 and (second - expected).abs().max() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_loader_throughput(benchmark, records, jpeg_folder, case, backend) -> None:
    reason = _skip_reason(backend)
    if reason is not None:
        pytest.skip(reason)
    data, size, batch_size, timed_batches = CASES[case]
    data = data or str(jpeg_folder)
    if not benchmark.enabled:
        batch_size = 8  # checks only
    device = torch.device("cuda" if backend == "dali-gpu" else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    _gate_no_augmentation(backend, device)
    loader = build_train_loader(
        data,
        batch_size=batch_size,
        image_size=size,
        loader=backend,
        device=device,
        dtype=dtype,
        num_workers=NUM_WORKERS,
    )
    first, second, labels = next(iter(loader))
    _check_views(first, second, labels, batch_size, size, dtype)

    batches = min(timed_batches, len(loader)) if benchmark.enabled else 1

    def one_round() -> None:  # pipeline/worker start-up included, as every epoch pays it
        for step, _ in enumerate(loader):
            if step + 1 == batches:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.group = f"two-view loading {case}"
    benchmark.pedantic(one_round, rounds=3, iterations=1, warmup_rounds=1)
    if not benchmark.enabled:
        return
    seconds = benchmark.stats.stats.median
    record = {
        "suite": "data",
        "case": case,
        "backend": loader.backend,
        "data": "digits" if data == "digits" else "jpeg folder of scikit-image photos",
        "image_size": size,
        "batch_size": batch_size,
        "batches_per_round": batches,
        "num_workers": NUM_WORKERS,
        "dtype": str(dtype).removeprefix("torch."),
        "augment": repr(loader.augment),
        "median_round_s": seconds,
        "images_per_s": batches * batch_size / seconds,
        "views_per_s": 2 * batches * batch_size / seconds,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": environment.cpu_model(),
        **_versions(),
    }
    benchmark.extra_info.update(record)
    records.append(record)


@pytest.mark.gpu
def test_resnet50_step_rate(benchmark, records) -> None:
    """Images/s of a ResNet-50 SimCLR training step (two 224 px views per image, bf16 autocast,
    channels_last): a loader slower than this starves the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    import torchvision

    device = torch.device("cuda")
    batch_size = 128
    model = torchvision.models.resnet50().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    views = torch.randn(2 * batch_size, 3, 224, 224, device=device)
    views = views.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(views).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    if not benchmark.enabled:
        return
    seconds = benchmark.stats.stats.median
    record = {
        "suite": "data",
        "case": "resnet50-step",
        "batch_size": batch_size,
        "median_step_s": seconds,
        "images_per_s": batch_size / seconds,
        "device": torch.cuda.get_device_name(device),
        **_versions(),
    }
    benchmark.extra_info.update(record)
    records.append(record)
