"""Data sources: image folders (layouts, odd image modes, unreadable files), CIFAR-10 files, digits,
synthetic, evaluation splits and argument errors."""

import pickle
import warnings

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import fastclr.data.image_folder as image_folder
from fastclr.data import build_train_loader, load_eval_split
from fastclr.data.dali_pipeline import dali_unavailable_reason
from fastclr.data.sources import load_source

needs_dali = pytest.mark.skipif(
    dali_unavailable_reason() is not None, reason=f"DALI unavailable: {dali_unavailable_reason()}"
)
BACKENDS = [pytest.param("dali-cpu", marks=needs_dali), "torch"]
PHOTOS = {"astronaut": skimage.data.astronaut, "coffee": skimage.data.coffee}
CORRUPT = ("garbage.jpg", "truncated.jpg", "empty.png")


def _write_variants(folder, photo, size):
    """One real photo saved in every mode the loader must read: RGB/gray/CMYK JPEG,
    RGBA/palette/gray PNG, each at a different size."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(photo)
    variants = {
        "rgb.jpg": ("RGB", "JPEG"),
        "gray.jpg": ("L", "JPEG"),
        "cmyk.jpg": ("CMYK", "JPEG"),
        "rgba.png": ("RGBA", "PNG"),
        "palette.png": ("P", "PNG"),
        "gray.png": ("L", "PNG"),
    }
    for i, (name, (mode, fmt)) in enumerate(variants.items()):
        side = size + 8 * i
        image.resize((side + 5, side)).convert(mode).save(folder / name, fmt)
    return len(variants)


def _write_corrupt(folder):
    good = (folder / "rgb.jpg").read_bytes()
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image: ignored, not counted")


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """PATH/<class>/* of two classes, 6 good images each, plus 3 unreadable files in one."""
    root = tmp_path_factory.mktemp("photos")
    for name, load in PHOTOS.items():
        _write_variants(root / name, load(), 40)
    _write_corrupt(root / "astronaut")
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_folder_with_odd_modes_and_corrupt_files(class_folder, backend):
    with pytest.warns(UserWarning, match="unreadable") as caught:
        loader = build_train_loader(
            str(class_folder), batch_size=4, image_size=32, loader=backend, num_workers=1
        )
    message = str(caught[0].message)
    assert all(name in message for name in CORRUPT) and "notes.txt" not in message
    assert loader.skipped == 3
    n_train = 10  # 12 good images, one held out per class
    assert loader.num_images == n_train and len(loader) == n_train // 4
    seen = []
    for first, second, labels in loader:
        assert first.shape == second.shape == (4, 3, 32, 32)
        assert torch.isfinite(first).all() and torch.isfinite(second).all()
        seen += labels.tolist()
    assert sorted(set(seen)) == [0, 1]


def test_folder_strict_raises_naming_the_file(class_folder):
    with pytest.raises(ValueError, match="truncated.jpg"):
        build_train_loader(str(class_folder), batch_size=4, loader="torch", strict=True)


def test_every_image_mode_decodes_to_the_same_picture(class_folder):
    """Gray, palette, RGBA and CMYK files of one photo decode to roughly its RGB version."""
    with pytest.warns(UserWarning, match="unreadable"):
        images, labels = load_eval_split(str(class_folder), image_size=32, split="train")
    assert images.shape == (len(labels), 3, 32, 32) and images.dtype == torch.float32
    astronaut = images[labels == 0]
    gray = astronaut.mean(1)  # compare structure, not colour
    correlation = torch.corrcoef(gray.flatten(1))
    assert correlation.min() > 0.8


def test_missing_and_empty_folders_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        build_train_loader(str(missing), batch_size=2)
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no train images.*empty"):
        build_train_loader(str(tmp_path / "empty"), batch_size=2)
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.jpg").write_bytes(b"junk")
    (tmp_path / "bad" / "c" / "y.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="every train image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_train_loader(str(tmp_path / "bad"), batch_size=1)


def test_folder_layouts_and_held_out_split(tmp_path):
    photo = skimage.data.chelsea()
    for cls in ("cat", "dog"):
        for i in range(12):
            Image.fromarray(photo[i:]).resize((20, 20)).save(tmp_path / f"{cls}_{i:02d}.png")
    flat = load_source(str(tmp_path), image_size=16, split="train")
    assert len(flat) == 22 and (flat.labels == -1).all()  # unlabelled: 2 of 24 held out

    imagenet = tmp_path / "imagenet"
    for split, count in (("train", 5), ("val", 2)):
        for cls in ("cat", "dog"):
            (imagenet / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(photo).resize((20, 20)).save(imagenet / split / cls / f"{i}.jpg")
    train = load_source(str(imagenet), image_size=16, split="train")
    val = load_source(str(imagenet), image_size=16, split="val")
    assert (len(train), len(val)) == (10, 4)
    assert sorted(val.labels.tolist()) == [0, 0, 1, 1]
    assert all("/val/" in f for f in val.files)

    (imagenet / "val").rename(imagenet / "unused")  # no val/: hold out from train/
    train = load_source(str(imagenet), image_size=16, split="train")
    val = load_source(str(imagenet), image_size=16, split="val")
    assert (len(train), len(val)) == (8, 2) and not set(train.files) & set(val.files)
    assert load_source(str(imagenet), image_size=16, split="val").files == val.files


def test_distributed_readability_check_merges_every_rank(class_folder, monkeypatch):
    """With a process group, each rank checks files[rank::world] and all-gathers: the merged
    result equals the single-process check."""
    files = [str(p) for p in sorted((class_folder / "astronaut").glob("*.*g"))]  # jpg and png
    expected = image_folder._check_readable(files, 2, rank=0, world_size=1)
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(
        dist,
        "all_gather_object",
        lambda out, obj: out.__setitem__(
            slice(None), [[image_folder.check_image(f) for f in files[r::3]] for r in range(3)]
        ),
    )
    merged = image_folder._check_readable(files, 2, rank=1, world_size=3)
    assert merged == expected and sum(e is not None for e in merged) == 3


def test_digits_eval_split_is_fixed_and_stratified():
    x_train, y_train = load_eval_split("digits", split="train")
    x_val, y_val = load_eval_split("digits", split="val")
    assert x_train.shape == (1437, 3, 32, 32) and x_val.shape == (360, 3, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert torch.equal(load_eval_split("digits", split="val")[0], x_val)
    counts = torch.bincount(y_val, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of ~180 per class
    pairs = torch.cdist(x_val.flatten(1)[:50], x_train.flatten(1))
    assert pairs.min() > 0  # no validation image is also a training image
    small, _ = load_eval_split("digits", split="val", max_images=100)
    assert small.shape[0] == 100


def _write_cifar(folder, images, labels, binary):
    folder.mkdir()
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for name, part in (("data_batch_1", slice(0, 30)), ("test_batch", slice(30, 40))):
        if binary:
            records = np.concatenate([labels[part, None].astype(np.uint8), data[part]], axis=1)
            records.tofile(folder / f"{name}.bin")
        else:
            batch = {b"data": data[part], b"labels": labels[part].tolist()}
            with open(folder / name, "wb") as f:
                pickle.dump(batch, f)


def test_cifar10_python_and_binary_files_read_the_same(tmp_path):
    photos = load_source("skimage", image_size=32, split="train").images  # 26 real photos
    images = np.concatenate([photos, photos[:14]])
    labels = np.arange(40) % 10
    _write_cifar(tmp_path / "cifar-10-batches-py", images[:40], labels, binary=False)
    _write_cifar(tmp_path / "bin", images[:40], labels, binary=True)
    python_val = load_source(f"cifar10:{tmp_path}", image_size=32, split="val")
    binary_val = load_source(f"cifar10:{tmp_path / 'bin'}", image_size=32, split="val")
    assert np.array_equal(python_val.images, images[30:40])
    assert np.array_equal(binary_val.images, images[30:40])
    assert np.array_equal(binary_val.labels, labels[30:40])
    loader = build_train_loader(f"cifar10:{tmp_path}", batch_size=8, loader="torch", num_workers=0)
    assert loader.num_images == 30 and len(loader) == 3
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        load_source(f"cifar10:{tmp_path / 'nothing'}", image_size=32, split="train")


def test_synthetic_source():
    train = load_source("synthetic:200", image_size=24, split="train")
    val = load_source("synthetic:200", image_size=24, split="val")
    assert train.images.shape == (200, 24, 24, 3) and len(val) == 50
    assert np.array_equal(np.bincount(train.labels), [20] * 10)
    with pytest.raises(ValueError, match="positive integer"):
        load_source("synthetic:abc", image_size=24, split="train")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loader": "fast"}, "loader must be one of"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
        ({"batch_size": 5000}, "lower the batch size"),
        ({"batch_size": 0}, "batch_size"),
        ({"dtype": torch.int8}, "dtype"),
        ({"image_size": 48, "augment": None, "seed": -1}, "seed"),
        ({"loader": "dali-gpu"}, "CUDA device"),
    ],
)
def test_argument_errors(kwargs, match):
    if kwargs.get("loader") == "dali-gpu" and dali_unavailable_reason() is not None:
        match = "needs NVIDIA DALI"
    arguments = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_train_loader("digits", **arguments)


def test_auto_falls_back_to_torch_without_dali(monkeypatch):
    import fastclr.data.loader as loader_module

    monkeypatch.setattr(loader_module, "dali_unavailable_reason", lambda: "ImportError: no dali")
    assert build_train_loader("digits", batch_size=8).backend == "torch"
    with pytest.raises(ValueError, match="needs NVIDIA DALI.*no dali"):
        build_train_loader("digits", batch_size=8, loader="dali")


@needs_dali
def test_auto_uses_dali_on_cpu():
    assert build_train_loader("digits", batch_size=8).backend == "dali-cpu"
