"""Deterministic evaluation images for the kNN monitor and the linear probe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from fastclr.data.augment_config import AugmentConfig
from fastclr.data.image_folder import FileSource
from fastclr.data.sources import default_image_size, fit_square, load_source

MAX_EVAL_BYTES = 8 * 2**30


def load_eval_split(
    data: str,
    *,
    image_size: int | None = None,
    split: str,
    augment: AugmentConfig | None = None,
    max_images: int | None = None,
    num_threads: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of `split` ("train" | "val"), centre-cropped to a square and resized to S (no random
    augmentation), normalized with augment's mean/std (default ImageNet's):
    images [M, 3, S, S] float32 (channels_last), labels [M] int64 (-1 unknown).

    digits: a fixed stratified 80/20 split; folders: PATH/val or a held-out tenth (image_folder.py);
    max_images: an evenly spaced subset of at most that many (deterministic; folders are sorted by
    class, so every class keeps its share). Splits above MAX_EVAL_BYTES must pass max_images.
    """
    size = image_size or (augment.image_size if augment else default_image_size(data))
    augment = augment or AugmentConfig.for_image_size(size)
    source = load_source(data, image_size=size, split=split, num_threads=num_threads)
    pick = np.arange(len(source))
    if max_images is not None and max_images < len(source):
        pick = np.unique(np.linspace(0, len(source) - 1, max(1, max_images)).round().astype(int))
    if len(pick) * 3 * size * size * 4 > MAX_EVAL_BYTES:
        raise ValueError(
            f"the {split} split of {data!r} has {len(pick)} images: {len(pick)} x 3 x {size}^2 "
            f"float32 is over {MAX_EVAL_BYTES / 2**30:.0f} GiB; pass max_images (e.g. 10000)"
        )
    if isinstance(source, FileSource):
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            arrays = list(pool.map(lambda i: _read_square(source.files[i], size), pick))
        images = torch.from_numpy(np.stack(arrays))
    else:
        images = torch.from_numpy(source.images[pick])
    mean = 255.0 * torch.tensor(augment.mean).view(1, 3, 1, 1)
    std = 255.0 * torch.tensor(augment.std).view(1, 3, 1, 1)
    images = images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    return images, torch.from_numpy(np.asarray(source.labels)[pick]).long()


def _read_square(path: str, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size
        return fit_square(image, size)
