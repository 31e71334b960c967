"""SimCLR augmentation parameters, with the paper's defaults (Chen et al. 2020, appendix A).

Per view: random resized crop (area `scale`, aspect `ratio`) to `image_size`; horizontal flip with
`flip_p`; with `jitter_p`, colour jitter of brightness, contrast and saturation by 0.8·s and hue by
0.2·s (s = `jitter_strength`); grayscale with `gray_p`; with `blur_p`, Gaussian blur of sigma drawn
from `blur_sigma` with a kernel about 10% of the side; normalization by `mean`/`std` (0–1 scale).

Small images (CIFAR-size, under LARGE_IMAGE_MIN_SIZE pixels) get s = 0.5 and no blur, as the paper's
CIFAR-10 runs; larger ones get s = 1 and blur p = 0.5, as its ImageNet runs.
"""

from __future__ import annotations

import dataclasses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LARGE_IMAGE_MIN_SIZE = 96


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Two-view augmentation settings. Leave `jitter_strength`/`blur_p` as None for the defaults
    of `image_size`; change one field with `dataclasses.replace(cfg, flip_p=0.0)`."""

    image_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_strength: float | None = None
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def for_image_size(cls, size: int) -> AugmentConfig:
        """The paper's settings for images of side `size`: s=0.5 and no blur below
        LARGE_IMAGE_MIN_SIZE pixels, s=1 and blur p=0.5 from there on."""
        return cls(image_size=size)

    @property
    def is_large(self) -> bool:
        return self.image_size >= LARGE_IMAGE_MIN_SIZE

    @property
    def brightness(self) -> float:
        return 0.8 * self.jitter_strength

    @property
    def contrast(self) -> float:
        return 0.8 * self.jitter_strength

    @property
    def saturation(self) -> float:
        return 0.8 * self.jitter_strength

    @property
    def hue(self) -> float:
        """Hue shift bound as a fraction of the colour circle (torchvision's convention)."""
        return 0.2 * self.jitter_strength

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen dataclass: resolve the size-dependent defaults once
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {self.image_size!r}")
        if self.jitter_strength is None:
            set_field(self, "jitter_strength", 1.0 if self.is_large else 0.5)
        if self.blur_p is None:
            set_field(self, "blur_p", 0.5 if self.is_large else 0.0)
        if self.blur_kernel_size is None:
            kernel = max(3, int(0.1 * self.image_size))
            set_field(self, "blur_kernel_size", kernel + 1 - kernel % 2)
        for name in ("scale", "ratio", "blur_sigma", "mean", "std"):
            set_field(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability: pass a value in [0, 1], got {value}")
        low, high = self.scale
        if not (len(self.scale) == 2 and 0.0 < low <= high <= 1.0):
            raise ValueError(
                f"scale is a crop-area range: pass 0 < low <= high <= 1, got {self.scale}"
            )
        if not (len(self.ratio) == 2 and 0.0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ratio is an aspect range: pass 0 < low <= high, got {self.ratio}")
        if not (len(self.blur_sigma) == 2 and 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]):
            raise ValueError(f"blur_sigma: pass 0 < low <= high, got {self.blur_sigma}")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise ValueError(
                f"blur_kernel_size must be odd and positive, got {self.blur_kernel_size}"
            )
        if not 0.0 <= self.jitter_strength <= 2.5:
            raise ValueError(
                f"jitter_strength must be in [0, 2.5] (the hue shift 0.2·s is at most half the "
                f"colour circle), got {self.jitter_strength}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
