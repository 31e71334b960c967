"""Augmentation parameters, with SimCLR's defaults (Chen et al. 2020, appendix A), and the views.

Views per image: `num_views` global views of side `image_size` (crop area `scale`), then
`local_views` small views of side `local_size` (crop area `local_scale`): SwAV's multi-crop (Caron
et al. 2020: 2 x 224 px at scale (0.14, 1) + 6 x 96 px at (0.05, 0.14)). Every view is its own
independent draw of the same augmentation; local views differ only in side and crop area (their
blur kernel scales with the side). BYOL's asymmetric augmentation (Grill et al. 2020, table 6) sets
the global views' blur and solarization probabilities one by one: `view_blur_p=(1.0, 0.1)`,
`view_solarize_p=(0.0, 0.2)`. `view_specs()` lists what differs from view to view.

Per view: random resized crop (area `scale`, aspect `ratio`) to `image_size`; horizontal flip with
`flip_p`; with `jitter_p`, colour jitter of brightness, contrast and saturation by 0.8·s and hue by
0.2·s (s = `jitter_strength`); grayscale with `gray_p`; with `blur_p`, Gaussian blur of sigma drawn
from `blur_sigma` with a kernel about 10% of the side; with the view's solarize probability (0 unless
`view_solarize_p`), solarization (values >= 128 of 255 inverted, as PIL and torchvision do);
normalization by `mean`/`std` (0–1 scale).

Small images (CIFAR-size, under LARGE_IMAGE_MIN_SIZE pixels) get s = 0.5 and no blur, as the paper's
CIFAR-10 runs; larger ones get s = 1 and blur p = 0.5, as its ImageNet runs.
"""

from __future__ import annotations

import dataclasses

from fastclr.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LARGE_IMAGE_MIN_SIZE = 96
LOCAL_SIDE_FRACTION = 96 / 224  # SwAV's local crop side over its global crop side
SOLARIZE_THRESHOLD = 128  # of 255: BYOL's 0.5 on the 0-1 scale, PIL's ImageOps.solarize default


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """What differs from one view to another: side, crop area, blur and solarization."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    blur_kernel_size: int
    solarize_p: float


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation and view settings. Leave `jitter_strength`/`blur_p`/`local_size` as None for
    the defaults of `image_size`; change one field with `dataclasses.replace(cfg, flip_p=0.0)`.
    `view_blur_p`/`view_solarize_p`: None (every global view: `blur_p`, no solarization) or one
    probability per global view."""

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
    num_views: int = 2
    local_views: int = 0
    local_size: int | None = None
    local_scale: tuple[float, float] = (0.05, 0.14)
    view_blur_p: tuple[float, ...] | None = None
    view_solarize_p: tuple[float, ...] | None = None

    @classmethod
    def for_image_size(cls, size: int) -> AugmentConfig:
        """The paper's settings for images of side `size`: s=0.5 and no blur below
        LARGE_IMAGE_MIN_SIZE pixels, s=1 and blur p=0.5 from there on."""
        return cls(image_size=size)

    @property
    def is_large(self) -> bool:
        return self.image_size >= LARGE_IMAGE_MIN_SIZE

    def view_specs(self) -> tuple[ViewSpec, ...]:
        """The `num_views` global views, then the `local_views` local ones (the loader's order).
        Local views blur with `blur_p` and a kernel scaled by local/global side; never solarize."""
        kernel = max(1, round(self.blur_kernel_size * self.local_size / self.image_size))
        local = ViewSpec(
            self.local_size, self.local_scale, self.blur_p, kernel + 1 - kernel % 2, 0.0
        )
        blur_p = self.view_blur_p or (self.blur_p,) * self.num_views
        solarize_p = self.view_solarize_p or (0.0,) * self.num_views
        global_views = tuple(
            ViewSpec(self.image_size, self.scale, blur, self.blur_kernel_size, solarize)
            for blur, solarize in zip(blur_p, solarize_p, strict=True)
        )
        return global_views + (local,) * self.local_views

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
            raise UsageError(f"image_size must be an int >= 8, got {self.image_size!r}")
        if self.local_size is None:
            side = 8 * round(self.image_size * LOCAL_SIDE_FRACTION / 8)
            set_field(self, "local_size", max(8, side))
        if self.jitter_strength is None:
            set_field(self, "jitter_strength", 1.0 if self.is_large else 0.5)
        if self.blur_p is None:
            set_field(self, "blur_p", 0.5 if self.is_large else 0.0)
        if self.blur_kernel_size is None:
            kernel = max(3, int(0.1 * self.image_size))
            set_field(self, "blur_kernel_size", kernel + 1 - kernel % 2)
        for name in ("scale", "ratio", "blur_sigma", "mean", "std", "local_scale"):
            set_field(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} is a probability: pass a value in [0, 1], got {value}")
        if not _is_fraction_range(self.scale):
            raise UsageError(
                f"scale is a crop-area range: pass 0 < low <= high <= 1, got {self.scale}"
            )
        if not (len(self.ratio) == 2 and 0.0 < self.ratio[0] <= self.ratio[1]):
            raise UsageError(f"ratio is an aspect range: pass 0 < low <= high, got {self.ratio}")
        if not (len(self.blur_sigma) == 2 and 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]):
            raise UsageError(f"blur_sigma: pass 0 < low <= high, got {self.blur_sigma}")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise UsageError(
                f"blur_kernel_size must be odd and positive, got {self.blur_kernel_size}"
            )
        if not 0.0 <= self.jitter_strength <= 2.5:
            raise UsageError(
                f"jitter_strength must be in [0, 2.5] (the hue shift 0.2·s is at most half the "
                f"colour circle), got {self.jitter_strength}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UsageError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
        self._check_views()

    def _check_per_view(self, name: str) -> None:
        """None (the same for every global view), or one probability per global view."""
        values = getattr(self, name)
        if values is None:
            return
        values = tuple(float(v) for v in values)
        if len(values) != self.num_views or not all(0.0 <= v <= 1.0 for v in values):
            raise UsageError(
                f"{name} needs one probability in [0, 1] per global view (num_views="
                f"{self.num_views}), got {getattr(self, name)}"
            )
        object.__setattr__(self, name, values)

    def _check_views(self) -> None:
        if not isinstance(self.num_views, int) or self.num_views < 2:
            raise UsageError(
                f"num_views is the number of global views per image: pass an int >= 2, "
                f"got {self.num_views!r}"
            )
        self._check_per_view("view_blur_p")
        self._check_per_view("view_solarize_p")
        if not isinstance(self.local_views, int) or self.local_views < 0:
            raise UsageError(
                f"local_views is the number of small multi-crop views: pass an int >= 0 "
                f"(SwAV: 6), got {self.local_views!r}"
            )
        if not isinstance(self.local_size, int) or not 8 <= self.local_size <= self.image_size:
            raise UsageError(
                f"local_size must be an int in [8, image_size={self.image_size}] (SwAV: 96 for "
                f"224), got {self.local_size!r}"
            )
        if not _is_fraction_range(self.local_scale):
            raise UsageError(
                f"local_scale is a crop-area range: pass 0 < low <= high <= 1 (SwAV: "
                f"(0.05, 0.14)), got {self.local_scale}"
            )


def _is_fraction_range(pair: tuple[float, ...]) -> bool:
    """A (low, high) pair with 0 < low <= high <= 1."""
    return len(pair) == 2 and 0.0 < pair[0] <= pair[1] <= 1.0
