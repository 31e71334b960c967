"""Multi-view augmentation as an NVIDIA DALI pipeline: on the GPU (files decoded by the "mixed"
nvJPEG decoder) when given a device_id, on the CPU (`device_id=None`) otherwise.

Graph per view (AugmentConfig.view_specs(): global views, then local ones), after one decode per
image:
    random_resized_crop -> color_twist (jitter with p, grayscale with p) -> gaussian_blur (with p)
    -> solarize (with p) -> crop_mirror_normalize (flip with p, mean/std, HWC float)
Probabilities are per-sample coin flips that set identity parameters when off (brightness =
contrast = saturation = 1, hue = 0; blur sigma NO_BLUR_SIGMA, whose kernel is a delta; solarize
mask 0). DALI's color_twist applies the jitter in a fixed order (torchvision: random order) and in
YIQ space. Each view's random operators are created after those of the views before it, so DALI
seeds the first two views exactly as the two-view pipeline did.

A pipeline is built per epoch, seeded from (seed, epoch, rank), and fed exactly that epoch's batches
(in the order of sampling.py): the same seed and epoch always give the same batches, and every
epoch has the same length (no reliance on an external_source's end-of-data signalling).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastclr.data.augment_config import SOLARIZE_THRESHOLD, AugmentConfig, ViewSpec
from fastclr.data.image_folder import FileSource
from fastclr.data.sources import Source

NO_BLUR_SIGMA = 1e-3  # neighbour weight exp(-1 / (2 sigma^2)) underflows to 0: an exact identity
PREFETCH_DEPTH = 2


# The DALI wheels by driver generation, and the fastclr extra that installs each.
DALI_WHEELS = {
    "nvidia-dali-cuda130": ("CUDA 13 drivers", "fastclr[dali]"),
    "nvidia-dali-cuda120": ("CUDA 12 drivers", "fastclr[dali-cuda12]"),
}
DALI_INSTALL_HINT = (
    "pip install 'fastclr[dali]' (CUDA 13 drivers) or 'fastclr[dali-cuda12]' (CUDA 12 drivers)"
)


def dali_unavailable_reason() -> str | None:
    """None if NVIDIA DALI imports, else why not."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception as error:  # a missing wheel, or a wheel whose CUDA libraries do not load
        return f"{type(error).__name__}: {error}"
    return None


class DaliViews:
    """Yields a tuple of views per batch, in `augment.view_specs()` order: [B, 3, s, s] each,
    channels_last, `dtype`, on `device`."""

    def __init__(
        self,
        source: Source,
        augment: AugmentConfig,
        *,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        num_threads: int,
        use_gpu: bool,
    ) -> None:
        self.source = source
        self.augment = augment
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.num_threads = max(1, num_threads)
        self.use_gpu = use_gpu
        self.dali_dtype = torch.float32 if dtype == torch.float32 else torch.float16

    def epoch(self, batches: np.ndarray, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch over `batches` ([n, B] source indices), augmentations seeded by `seed`."""
        pipe = self._build(batches, seed)
        for step in range(len(batches)):
            try:
                views = pipe.run()
            except RuntimeError as error:
                hint = ""
                if isinstance(self.source, FileSource):
                    hint = (
                        "\n(the files were checked before training: have they changed since? "
                        "--loader torch decodes with PIL instead)"
                    )
                raise RuntimeError(
                    f"DALI pipeline failed at batch {step} of {len(batches)}: {error}{hint}"
                ) from error
            dynamic = pipe.exec_dynamic
            yield tuple(self._to_torch(view, dynamic) for view in views)

    def _build(self, batches: np.ndarray, seed: int):
        from nvidia.dali import types
        from nvidia.dali.pipeline import Pipeline

        device_id = None
        if self.use_gpu:
            index = self.device.index
            device_id = index if index is not None else torch.cuda.current_device()
        pipe = Pipeline(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=device_id,
            seed=seed,
            prefetch_queue_depth=PREFETCH_DEPTH,
        )
        out_type = types.FLOAT if self.dali_dtype == torch.float32 else types.FLOAT16
        with pipe:
            images = self._read(batches)
            pipe.set_outputs(
                *(
                    augment_view(images, self.augment, view, out_type)
                    for view in self.augment.view_specs()
                )
            )
        pipe.build()
        return pipe

    def _read(self, batches: np.ndarray):
        from nvidia.dali import fn, types

        if isinstance(self.source, FileSource):
            files = [self.source.files[i] for i in batches.reshape(-1)]
            encoded, _ = fn.readers.file(files=files, random_shuffle=False)
            if not self.use_gpu:
                return fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
            # nvJPEG on the GPU; paddings as in DALI's ResNet-50 example (fewer reallocations)
            return fn.decoders.image(
                encoded,
                device="mixed",
                output_type=types.RGB,
                device_memory_padding=211025920,
                host_memory_padding=140544512,
            )
        images = self.source.images

        def next_batch(info) -> np.ndarray:  # prefetch runs past the end: wraps, never consumed
            return images[batches[info.iteration % len(batches)]]

        decoded = fn.external_source(
            source=next_batch, batch=True, batch_info=True, layout="HWC", dtype=types.UINT8
        )
        return decoded.gpu() if self.use_gpu else decoded

    def _to_torch(self, views, exec_dynamic: bool) -> torch.Tensor:
        """DALI batch [B, S, S, 3] -> torch [B, 3, S, S] channels_last: NHWC memory read as NCHW is
        exactly channels_last, so no copy. As DALIGenericIterator does: zero-copy DLPack under the
        dynamic executor (outputs own their memory), else a copy before the buffer is recycled."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = views.as_tensor()
        where = self.device if self.use_gpu else torch.device("cpu")
        if exec_dynamic:
            with where:
                out = torch.from_dlpack(dense)
        else:
            out = torch.empty(dense.shape(), dtype=self.dali_dtype, device=where)
            stream = torch.cuda.current_stream(where) if self.use_gpu else None
            feed_ndarray(dense, out, cuda_stream=stream)
        return out.to(self.device).permute(0, 3, 1, 2).to(self.dtype)


def augment_view(images, augment: AugmentConfig, view: ViewSpec, out_type):
    """One view of uint8 HWC `images` (a DALI DataNode): float [s, s, 3], s = view.size,
    normalized."""
    from nvidia.dali import fn, types

    views = fn.random_resized_crop(
        images,
        size=(view.size, view.size),
        random_area=view.scale,
        random_aspect_ratio=augment.ratio,
        antialias=True,
    )
    jitter = augment.jitter_p > 0 and augment.jitter_strength > 0
    if jitter or augment.gray_p > 0:
        twist = {}
        saturation = 1.0
        if jitter:
            on = _coin(augment.jitter_p)
            twist["brightness"] = _factor(on, augment.brightness)
            twist["contrast"] = _factor(on, augment.contrast)
            saturation = _factor(on, augment.saturation)
            degrees = 360.0 * augment.hue  # torchvision's hue is a fraction of the circle
            twist["hue"] = on * _uniform(-degrees, degrees)
        if augment.gray_p > 0:
            saturation = saturation * (1.0 - _coin(augment.gray_p))  # saturation 0 = luma (YIQ)
        views = fn.color_twist(views, saturation=saturation, **twist)
    if view.blur_p > 0:
        on = _coin(view.blur_p)
        sigma = on * _uniform(*augment.blur_sigma) + (1.0 - on) * NO_BLUR_SIGMA
        views = fn.gaussian_blur(views, window_size=view.blur_kernel_size, sigma=sigma)
    if view.solarize_p > 0:
        views = _solarize(views, _coin(view.solarize_p))
    mirror = 0
    if augment.flip_p > 0:
        mirror = fn.random.coin_flip(probability=augment.flip_p, dtype=types.INT32)
    return fn.crop_mirror_normalize(
        views,
        dtype=out_type,
        output_layout="HWC",
        mean=[255.0 * m for m in augment.mean],
        std=[255.0 * s for s in augment.std],
        mirror=mirror,
    )


def _coin(probability: float):
    """Per-sample 0.0/1.0 (float) that is 1 with `probability` (coin_flip has no float dtype)."""
    from nvidia.dali import fn, types

    flip = fn.random.coin_flip(probability=probability, dtype=types.UINT8)
    return fn.cast(flip, dtype=types.FLOAT)


def _factor(on, amount: float):
    """Per-sample factor drawn from [max(0, 1 - amount), 1 + amount] where `on`, else 1."""
    return 1.0 + on * (_uniform(max(0.0, 1.0 - amount), 1.0 + amount) - 1.0)


def _uniform(low: float, high: float):
    """Per-sample uniform draw from [low, high] (DALI rejects an empty range: low == high)."""
    from nvidia.dali import fn

    return fn.random.uniform(range=(low, high)) if high > low else low


def _solarize(views, on):
    """uint8 HWC `views` with the values >= SOLARIZE_THRESHOLD inverted (255 - x) where `on`."""
    from nvidia.dali import fn, types

    wide = fn.cast(views, dtype=types.INT16)  # 255 - 2x does not fit uint8
    flip = fn.cast(wide >= SOLARIZE_THRESHOLD, dtype=types.INT16) * fn.cast(on, dtype=types.INT16)
    return fn.cast(wide + flip * (255 - 2 * wide), dtype=types.UINT8)
