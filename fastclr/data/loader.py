"""`build_train_loader`: one contract over three backends, chosen by `loader`.

"auto"      DALI on the GPU for a CUDA device, DALI on the CPU otherwise, torchvision without DALI
"dali"      DALI (GPU for a CUDA device, else CPU); an error if DALI is not installed
"dali-gpu"  / "dali-cpu" / "torch"   that backend exactly
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from fastclr.data.augment_config import AugmentConfig
from fastclr.data.dali_pipeline import DaliViews, dali_unavailable_reason
from fastclr.data.sampling import augment_seed, batches_per_epoch, epoch_batches
from fastclr.data.sources import Source, default_image_size, load_source
from fastclr.data.torch_pipeline import TorchViews
from fastclr.errors import UsageError

LOADERS = ("auto", "dali", "dali-gpu", "dali-cpu", "torch")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class MultiViewLoader:
    """Iterable over one epoch: (*views, labels) per step; with the default augment
    (view1, view2, labels).

    views: augment.num_views global views [B, 3, S, S] (S = augment.image_size), then
    augment.local_views local views [B, 3, s, s] (s = augment.local_size); each torch.channels_last,
    `dtype`, on `device`, normalized, each an independent augmentation of the same B images.
    labels: [B] int64 on `device` (-1 where unknown). len() = batches per epoch, the same every
    epoch and on every rank (the last partial batch is dropped). Each iteration uses the epoch set
    by `set_epoch`, then moves on by one, so epochs differ even if set_epoch is never called.
    Attributes: backend ("dali-gpu" | "dali-cpu" | "torch"), num_images (images in the whole
    training set, all ranks), skipped (unreadable images dropped), batch_size, augment.
    """

    def __init__(
        self,
        source: Source,
        pipeline: DaliViews | TorchViews,
        *,
        backend: str,
        batch_size: int,
        augment: AugmentConfig,
        device: torch.device,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.backend = backend
        self.num_images = len(source)
        self.skipped = source.skipped
        self.batch_size = batch_size
        self.augment = augment
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._labels = torch.from_numpy(np.asarray(source.labels, dtype=np.int64))
        self._pipeline = pipeline
        self._epoch = 0

    def __len__(self) -> int:
        return batches_per_epoch(self.num_images, self.batch_size, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration runs: the same (seed, epoch) gives the same batches."""
        if epoch < 0:
            raise UsageError(f"epoch must be >= 0, got {epoch}")
        self._epoch = epoch

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """Indices into the training set [len(self), batch_size] this rank loads in `epoch`."""
        return epoch_batches(
            self.num_images,
            self.batch_size,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self._epoch
        self._epoch += 1
        batches = self.epoch_batches(epoch)
        seed = augment_seed(self.seed, epoch, self.rank)
        views = self._pipeline.epoch(batches, seed)
        for index, step_views in zip(batches, views, strict=True):
            labels = self._labels[torch.from_numpy(index)].to(self.device, non_blocking=True)
            yield *step_views, labels


def build_train_loader(
    data: str,
    *,
    batch_size: int,
    image_size: int | None = None,
    loader: str = "auto",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    strict: bool = False,
    augment: AugmentConfig | None = None,
) -> MultiViewLoader:
    """Multi-view training batches of `data` for this rank: (*views, labels) per step (see
    MultiViewLoader; the views per image come from `augment`: 2 by default).

    data: "digits" | "synthetic[:N]" | "skimage" | "cifar10:PATH" | an image folder (see sources.py).
    image_size: training side S (default: 32 small datasets, 64 skimage, folders: the standard
        size at or above their median side, at most 224 (sources.default_image_size); or augment's).
    loader: "auto" | "dali" | "dali-gpu" | "dali-cpu" | "torch" (see the module docstring).
    num_workers: DataLoader workers (torch) or DALI CPU threads. strict: unreadable images raise.
    augment: augmentation settings (default AugmentConfig.for_image_size(S)).
    """
    _check_arguments(batch_size, dtype, seed, rank, world_size, num_workers)
    if augment is not None and image_size is not None and augment.image_size != image_size:
        raise UsageError(
            f"image_size={image_size} disagrees with augment.image_size={augment.image_size}: "
            f"pass one of them"
        )
    size = image_size or (augment.image_size if augment else default_image_size(data))
    augment = augment or AugmentConfig.for_image_size(size)
    device = torch.device(device)
    backend = choose_backend(loader, device)
    if loader == "auto" and device.type == "cuda" and backend != "dali-gpu":
        warnings.warn(
            f"augmenting on the CPU ({backend}) for a CUDA run: DALI does not import "
            f"({dali_unavailable_reason()}); install nvidia-dali-cuda130 to augment on the GPU",
            stacklevel=2,
        )
    source = load_source(
        data,
        image_size=size,
        split="train",
        strict=strict,
        num_threads=max(2, num_workers),
        rank=rank,
        world_size=world_size,
    )
    if batches_per_epoch(len(source), batch_size, world_size) < 1:
        raise UsageError(
            f"{data!r} has {len(source)} training images: fewer than batch_size={batch_size} per "
            f"rank over world_size={world_size}; lower the batch size"
        )
    if backend == "torch":
        pipeline = TorchViews(source, augment, device=device, dtype=dtype, num_workers=num_workers)
    else:
        pipeline = DaliViews(
            source,
            augment,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            num_threads=num_workers,
            use_gpu=backend == "dali-gpu",
        )
    return MultiViewLoader(
        source,
        pipeline,
        backend=backend,
        batch_size=batch_size,
        augment=augment,
        device=device,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def choose_backend(loader: str, device: torch.device) -> str:
    """The backend `loader` means on `device`: "dali-gpu", "dali-cpu" or "torch"."""
    if loader not in LOADERS:
        raise UsageError(f"loader must be one of {LOADERS}, got {loader!r}")
    if loader == "torch":
        return "torch"
    reason = dali_unavailable_reason()
    if reason is not None:
        if loader == "auto":
            return "torch"
        raise UsageError(
            f"loader={loader!r} needs NVIDIA DALI, which does not import ({reason}): "
            f"pip install nvidia-dali-cuda130 (or -cuda120), or pass loader='torch'"
        )
    if loader == "dali-gpu" and device.type != "cuda":
        raise UsageError(f"loader='dali-gpu' needs a CUDA device, got device={device}")
    if loader in ("auto", "dali"):
        return "dali-gpu" if device.type == "cuda" else "dali-cpu"
    return loader


def _check_arguments(
    batch_size: int, dtype: torch.dtype, seed: int, rank: int, world_size: int, num_workers: int
) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int, got {batch_size!r}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {DTYPES}, got {dtype}")
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative int, got {seed!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if num_workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {num_workers}")
