"""Multi-view augmentation with torchvision v2 transforms in a DataLoader: the path without DALI.

Workers decode (PIL) and augment uint8 images; the main process moves each uint8 batch to the
device and normalizes it there (4x less host-to-device traffic than float). Each sample's
transforms are seeded from (epoch seed, image index) and draw the views one after the other from
that one generator, so the batches depend on the seed and epoch, never on num_workers or which
worker ran a sample (and the first two views are those of the two-view loader before V views).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fastclr.data.augment_config import SOLARIZE_THRESHOLD, AugmentConfig, ViewSpec
from fastclr.data.image_folder import FileSource, check_image, read_rgb
from fastclr.data.sources import Source


def build_transform(augment: AugmentConfig, view: ViewSpec) -> v2.Compose:
    """One view of a uint8 [3, H, W] image: uint8 [3, s, s], s = view.size (the paper's order of
    operations; solarization last, as BYOL)."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(view.size, scale=view.scale, ratio=augment.ratio, antialias=True)
    ]
    if augment.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(augment.flip_p))
    if augment.jitter_p > 0 and augment.jitter_strength > 0:
        jitter = v2.ColorJitter(
            augment.brightness, augment.contrast, augment.saturation, augment.hue
        )
        steps.append(v2.RandomApply([jitter], p=augment.jitter_p))
    if augment.gray_p > 0:
        steps.append(v2.RandomGrayscale(augment.gray_p))
    if view.blur_p > 0:
        blur = v2.GaussianBlur(view.blur_kernel_size, sigma=augment.blur_sigma)
        steps.append(v2.RandomApply([blur], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(v2.RandomSolarize(SOLARIZE_THRESHOLD, p=view.solarize_p))
    return v2.Compose(steps)


class MultiViewDataset(Dataset):
    """Item i: the views of source image i, uint8 [3, s, s] each, one independent draw each."""

    def __init__(self, source: Source, augment: AugmentConfig) -> None:
        self.source = source
        self.transforms = [build_transform(augment, view) for view in augment.view_specs()]
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image = self._image(index)
        sample_seed = np.random.SeedSequence([self.epoch_seed, index]).generate_state(1)[0]
        with torch.random.fork_rng(devices=[]):  # never disturb the caller's global RNG
            torch.default_generator.manual_seed(int(sample_seed))  # CPU only: transforms run here
            return tuple(transform(image) for transform in self.transforms)

    def _image(self, index: int) -> torch.Tensor:
        if not isinstance(self.source, FileSource):
            return torch.from_numpy(self.source.images[index]).permute(2, 0, 1)
        files = self.source.files
        for attempt in range(len(files)):  # files were checked up front; this is for changed files
            path = files[(index + attempt) % len(files)]
            try:
                return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)
            except Exception:
                warnings.warn(
                    f"skipping unreadable image {path} ({check_image(path)}): using the next one",
                    stacklevel=2,
                )
        raise RuntimeError(f"no image in {self.source.name!r} is readable any more")


def _stack_views(samples: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(views) for views in zip(*samples, strict=True))


class TorchViews:
    """Yields a tuple of views per batch, in `augment.view_specs()` order: [B, 3, s, s] each,
    channels_last, `dtype`, on `device`."""

    def __init__(
        self,
        source: Source,
        augment: AugmentConfig,
        *,
        device: torch.device,
        dtype: torch.dtype,
        num_workers: int,
    ) -> None:
        self.dataset = MultiViewDataset(source, augment)
        self.device = device
        self.dtype = dtype
        self.num_workers = num_workers
        self.mean = 255.0 * torch.tensor(augment.mean, device=device).view(1, 3, 1, 1)
        self.inv_std = 1.0 / (255.0 * torch.tensor(augment.std, device=device).view(1, 3, 1, 1))

    def epoch(self, batches: np.ndarray, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch over `batches` ([n, B] source indices), augmentations seeded by `seed`."""
        self.dataset.epoch_seed = seed  # workers start after this line and copy it
        pin = self.device.type == "cuda"
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches.tolist(),
            num_workers=self.num_workers,
            collate_fn=_stack_views,
            pin_memory=pin,
        )
        for views in loader:
            yield tuple(self._normalize(view, pin) for view in views)

    def _normalize(self, views: torch.Tensor, non_blocking: bool) -> torch.Tensor:
        views = views.to(self.device, non_blocking=non_blocking)
        views = views.contiguous(memory_format=torch.channels_last)
        return views.float().sub_(self.mean).mul_(self.inv_std).to(self.dtype)
