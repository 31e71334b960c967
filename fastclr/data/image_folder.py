"""Image folders: layout, a deterministic held-out split, and a readability check before training.

Layouts (class = sub-folder name, labels = index in sorted class order):
    PATH/train/<class>/*  [PATH/val/<class>/*]   ImageNet style; without val/, "val" is held out
    PATH/<class>/*                               "val" is held out from each class
    PATH/*                                       one unlabelled set (labels -1)
The held-out part is about HELDOUT_FRACTION of each class, evenly spaced in sorted file order, so
"train" and "val" never share a file and never change between runs.

Every file of the split is decoded once at reduced scale (JPEG draft mode: all entropy-coded data is
still read, so truncation is caught) before any pipeline sees it. A DALI decoder error stops a whole
pipeline, so unreadable files are counted, named in one warning and dropped here (strict: raised).
With a torch.distributed process group of `world_size` ranks, each rank checks 1/world_size of the
files and the results are all-gathered (every rank must then call this, as build_train_loader is).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fastclr.data.decode import to_rgb

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
)  # formats both PIL and DALI's decoders read
HELDOUT_FRACTION = 0.1
NAMED_IN_WARNING = 10


@dataclasses.dataclass(frozen=True)
class FileSource:
    """Image files of one split: files [N] paths, labels [N] int64 (-1 unknown), skipped = count of
    unreadable files dropped."""

    name: str
    files: tuple[str, ...]
    labels: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.files)


def load_image_folder(
    path: str, *, split: str, strict: bool, num_threads: int, rank: int = 0, world_size: int = 1
) -> FileSource:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"image folder {str(root)!r} does not exist or is not a folder: pass an existing folder "
            f"laid out as PATH/train/<class>/*.jpg or PATH/<class>/*.jpg, or a built-in dataset "
            f"(data='digits', 'synthetic', 'skimage', 'cifar10:PATH')"
        )
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _class_names(train_dir)
    if train_dir != root and (root / "val").is_dir():
        files, labels = _list_files(root / split, classes)
    else:
        files, labels = _list_files(train_dir, classes)
        files, labels = _held_out_split(files, labels, split)
    if not files:
        raise ValueError(
            f"no {split} images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {str(root)!r}: put "
            f"images in PATH/train/<class>/ (or PATH/<class>/) and check the path"
        )
    readable = _check_readable(files, num_threads, rank, world_size)
    bad = [(f, err) for f, err in zip(files, readable, strict=True) if err is not None]
    if bad:
        _report_unreadable(bad, len(files), f"{split} images in {str(root)!r}", strict)
        keep = [err is None for err in readable]
        files = [f for f, ok in zip(files, keep, strict=True) if ok]
        labels = labels[np.asarray(keep)]
        if not files:
            raise ValueError(
                f"every {split} image in {str(root)!r} is unreadable (see the warning)"
            )
    return FileSource(str(root), tuple(files), labels, skipped=len(bad))


def read_rgb(path: str) -> np.ndarray:
    """Decode one file to uint8 RGB [H, W, 3]; grayscale (8 or 16 bit), palette and RGBA (alpha
    dropped) work."""
    with Image.open(path) as image:
        return np.asarray(to_rgb(image))


def check_image(path: str) -> str | None:
    """None if `path` decodes, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))  # JPEG: decode at 1/8 scale; no effect on other formats
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, bomb errors, ...
        return f"{type(error).__name__}: {error}"
    return None


def _class_names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(entry.name for entry in os.scandir(folder) if entry.is_dir()))


def _list_files(folder: Path, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    if not classes:  # a flat folder of images: unlabelled
        files = sorted(str(p) for p in folder.iterdir() if _is_image(p))
        return files, np.full(len(files), -1, dtype=np.int64)
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for name in _class_names(folder):
        if name not in index:
            raise ValueError(
                f"class folder {str(folder / name)!r} has no counterpart in the training classes "
                f"{classes[:5]}...: val/ and train/ must have the same class folders"
            )
        for directory, _, names in sorted(os.walk(folder / name, followlinks=True)):
            found = sorted(os.path.join(directory, n) for n in names if _is_image(Path(n)))
            files += found
            labels += [index[name]] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _held_out_split(files: list[str], labels: np.ndarray, split: str) -> tuple[list, np.ndarray]:
    """Per label, about HELDOUT_FRACTION of the files (at least one when a label has two or more),
    evenly spaced in sorted order, are "val"; the rest are "train"."""
    is_val = np.zeros(len(files), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        n_val = max(1, round(HELDOUT_FRACTION * n)) if n >= 2 else 0
        is_val[members[[(2 * j + 1) * n // (2 * n_val) for j in range(n_val)]]] = True
    keep = is_val if split == "val" else ~is_val
    return [f for f, k in zip(files, keep, strict=True) if k], labels[keep]


def _check_readable(
    files: list[str], num_threads: int, rank: int, world_size: int
) -> list[str | None]:
    """check_image of every file, in order; split over the ranks of a matching process group."""
    import torch.distributed as dist

    shared = (
        world_size > 1
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() == world_size
        and dist.get_rank() == rank
    )
    mine = files[rank::world_size] if shared else files
    with ThreadPoolExecutor(max(1, num_threads)) as pool:  # PIL decodes without the GIL
        results = list(pool.map(check_image, mine))
    if not shared:
        return results
    gathered: list[list[str | None]] = [[] for _ in range(world_size)]
    dist.all_gather_object(gathered, results)
    merged: list[str | None] = [None] * len(files)
    for r, part in enumerate(gathered):
        merged[r::world_size] = part
    return merged


def _report_unreadable(bad: list[tuple[str, str]], total: int, where: str, strict: bool) -> None:
    named = "; ".join(f"{f} ({err})" for f, err in bad[:NAMED_IN_WARNING])
    more = f"; and {len(bad) - NAMED_IN_WARNING} more" if len(bad) > NAMED_IN_WARNING else ""
    message = f"{len(bad)} of {total} {where} are unreadable: {named}{more}"
    if strict:
        raise ValueError(f"{message} (strict: remove or fix them, or run without --strict)")
    # stacklevel: past load_source and build_train_loader / load_eval_split to the caller
    warnings.warn(f"{message}; skipping them", stacklevel=5)
