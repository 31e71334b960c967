"""Where images come from: a `data` string resolved to in-memory arrays or a list of image files.

    "digits"          scikit-learn's 1,797 real 8x8 digits (ships in the wheel), upsampled; a fixed
                      stratified 80/20 train/val split
    "skimage"         scikit-image's bundled photos (26 files; each photo is its own label);
                      no held-out images: "val" is the same photos
    "synthetic[:N]"   N (default 1024) generated images of 10 classes; "val" is N//4 more
    "cifar10:PATH"    CIFAR-10 files the user has: the python pickles (cifar-10-batches-py) or the
                      binary version (cifar-10-batches-bin); train = data_batch_*, val = test_batch
    any other string  an image folder (see image_folder.py)

In-memory sources hold uint8 RGB images [N, S, S, 3], centre-cropped to a square and resized to the
training side S, so every backend crops from the same pixels. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from fastclr.data.decode import to_rgb
from fastclr.data.image_folder import IMAGE_EXTENSIONS, FileSource, load_image_folder

SPLITS = ("train", "val")
SMALL_IMAGE_SIZE = 32
FOLDER_IMAGE_SIZE = 224  # the largest default: ImageNet's training side
STANDARD_IMAGE_SIZES = (32, 64, 96, 128, 160, 192, FOLDER_IMAGE_SIZE)
IMAGE_SIZE_SAMPLE = 32  # images whose sides choose a folder's default size
SKIMAGE_IMAGE_SIZE = 64
SYNTHETIC_DEFAULT_COUNT = 1024
SYNTHETIC_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Decoded images held in memory: images [N, S, S, 3] uint8 RGB, labels [N] int64 (-1 unknown)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)


Source = ArraySource | FileSource


def default_image_size(data: str) -> int:
    """The training side used when `image_size` is None (see default_image_size_choice)."""
    return default_image_size_choice(data)[0]


def default_image_size_choice(data: str) -> tuple[int, str | None]:
    """(side, note): 32 for digits/synthetic/CIFAR-10, 64 for the scikit-image photos (note None);
    for an image folder the smallest of STANDARD_IMAGE_SIZES at or above the median shorter side
    of a sample of its images (so a folder of 25 px images trains at 32 px, not 224), with a note
    that says how it was chosen."""
    if data in ("digits", "synthetic") or data.startswith(("synthetic:", "cifar10:")):
        return SMALL_IMAGE_SIZE, None
    if data == "skimage":
        return SKIMAGE_IMAGE_SIZE, None
    sides = []
    for path in _sample_image_files(Path(data).expanduser(), IMAGE_SIZE_SAMPLE):
        try:
            with Image.open(path) as image:  # reads the header only
                sides.append(min(image.size))
        except (OSError, ValueError):  # unreadable: named later by the folder's readability check
            continue
    if not sides:
        return FOLDER_IMAGE_SIZE, None
    median = float(np.median(sides))
    size = next((s for s in STANDARD_IMAGE_SIZES if s >= median), FOLDER_IMAGE_SIZE)
    return size, (
        f"image size {size} px: the standard size at or above the median shorter side "
        f"({median:g} px) of {len(sides)} sampled images of {data}"
    )


def _sample_image_files(root: Path, count: int) -> list[Path]:
    """Up to about `count` image files spread over the folder's classes (one listing per picked
    class, not a walk of the whole tree)."""
    top = root / "train" if (root / "train").is_dir() else root
    if not top.is_dir():
        return []
    entries = sorted(top.iterdir())
    classes = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not classes:
        files = [p for p in entries if _is_image_file(p)]
        return files[:: max(1, len(files) // count)][:count]
    picked = classes[:: max(1, len(classes) // count)][:count]
    per_class = max(1, count // len(picked))
    files = []
    for folder in picked:
        found = []
        for directory, _, names in sorted(os.walk(folder, followlinks=True)):
            found += [Path(directory, n) for n in sorted(names) if _is_image_file(Path(n))]
            if len(found) >= per_class:
                break
        files += found[:per_class]
    return files


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_source(
    data: str,
    *,
    image_size: int,
    split: str,
    strict: bool = False,
    num_threads: int = 4,
    rank: int = 0,
    world_size: int = 1,
) -> Source:
    """Resolve `data` to the images of `split` ("train" or "val"); see the module docstring.
    rank/world_size only share out the readability check of image folders (image_folder.py)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(data, str) or not data:
        raise ValueError(
            f"data must be a non-empty string ('digits', 'synthetic', 'skimage', "
            f"'cifar10:PATH' or an image folder), got {data!r}"
        )
    if data == "digits":
        return _digits(image_size, split)
    if data == "skimage":
        return _skimage_photos(image_size)
    if data == "synthetic" or data.startswith("synthetic:"):
        return _synthetic(data, image_size, split)
    if data.startswith("cifar10:"):
        return _cifar10(data.removeprefix("cifar10:"), image_size, split)
    return load_image_folder(
        data,
        split=split,
        strict=strict,
        num_threads=num_threads,
        rank=rank,
        world_size=world_size,
    )


def fit_square(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop the largest square and resize it to size x size (bilinear, antialiased):
    uint8 [size, size, 3]."""
    image = to_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _fit_all(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == images.shape[2] == size:
        return np.ascontiguousarray(images)
    return np.stack([fit_square(Image.fromarray(image), size) for image in images])


def _digits(image_size: int, split: str) -> ArraySource:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, val_idx = train_test_split(
        np.arange(len(digits.target)), test_size=0.2, stratify=digits.target, random_state=0
    )
    idx = np.sort(train_idx if split == "train" else val_idx)
    gray = np.round(digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)  # pixel values 0..16
    rgb = np.repeat(gray[..., None], 3, axis=3)
    return ArraySource("digits", _fit_all(rgb, image_size), digits.target[idx].astype(np.int64))


def _skimage_photos(image_size: int) -> ArraySource:
    import skimage.data

    data_dir = Path(skimage.data.data_dir)
    files = sorted(p for p in data_dir.iterdir() if p.suffix in (".png", ".jpg"))
    if not files:
        raise ValueError(f"no bundled photos found in {data_dir}: reinstall scikit-image")
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(fit_square(image, image_size))
    return ArraySource("skimage", np.stack(images), np.arange(len(images), dtype=np.int64))


def _synthetic(data: str, image_size: int, split: str) -> ArraySource:
    """Class k: a fixed random 4x4 colour layout, shifted at random per image, plus pixel noise."""
    count_text = data.removeprefix("synthetic").removeprefix(":") or str(SYNTHETIC_DEFAULT_COUNT)
    if not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(
            f"synthetic size must be a positive integer ('synthetic:2048'), got {data!r}"
        )
    count = int(count_text) if split == "train" else max(1, int(count_text) // 4)
    layouts = np.random.default_rng(0).integers(0, 256, (SYNTHETIC_CLASSES, 4, 4, 3), np.uint8)
    bases = _fit_all(layouts, image_size).astype(np.float32)
    rng = np.random.default_rng(1 if split == "train" else 2)
    labels = np.arange(count, dtype=np.int64) % SYNTHETIC_CLASSES
    shifts = rng.integers(-image_size // 4, image_size // 4 + 1, (count, 2))
    images = np.empty((count, image_size, image_size, 3), np.uint8)
    for i in range(count):
        shifted = np.roll(bases[labels[i]], tuple(shifts[i]), axis=(0, 1))
        noisy = shifted + rng.normal(0.0, 16.0, shifted.shape)
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return ArraySource(f"synthetic:{count_text}", images, labels)


def _cifar10(path: str, image_size: int, split: str) -> ArraySource:
    root = Path(os.path.expanduser(path))
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-10-batches-bin"):
        python_files = [folder / n for n in names if (folder / n).is_file()]
        binary_files = [folder / f"{n}.bin" for n in names if (folder / f"{n}.bin").is_file()]
        if python_files or binary_files:
            break
    else:
        raise ValueError(
            f"no CIFAR-10 {split} files ({', '.join(names)}, or the same with .bin) in {root} or "
            f"its cifar-10-batches-py / cifar-10-batches-bin folders: pass cifar10:PATH with "
            f"PATH the folder you extracted cifar-10-python.tar.gz or cifar-10-binary.tar.gz into"
        )
    chunks = [_read_cifar_python(f) for f in python_files] or [
        _read_cifar_binary(f) for f in binary_files
    ]
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks]).astype(np.int64)
    return ArraySource("cifar10", _fit_all(images, image_size), labels)


def _read_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the official format: a pickled dict
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"])


def _read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(
            f"{path} is not a CIFAR-10 binary batch (size not a multiple of 3073 bytes)"
        )
    records = raw.reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), records[:, 0]
