"""PIL images to 8-bit RGB, with 16-bit greyscale scaled rather than clipped.

PIL opens 16-bit greyscale PNG and TIFF files as mode "I;16" (or "I"), and its `convert("RGB")`
clips their values 0..65535 at 255: nearly every pixel turns white. DALI's decoder scales them to
8 bits as round(v / 257) (measured: 65535 -> 255, 32768 -> 128, 383 -> 1); `to_rgb` does the same,
so every PIL path (the torch loader, the kNN monitor, eval) sees the images DALI sees.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Integer greyscale modes PIL gives 16-bit files; "I" is 32-bit and must hold 16-bit values.
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as mode RGB, 8 bits per channel. 16-bit greyscale is scaled by 255/65535, rounded.

    Raises ValueError for a 32-bit integer image whose values lie outside 0..65535 (no 8-bit
    scale is implied by such values).
    """
    if image.mode not in WIDE_GREY_MODES:
        return image.convert("RGB")  # 8-bit modes: L, P, RGBA, CMYK, YCbCr, ...
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(
            f"a 32-bit greyscale image with values {values.min()}..{values.max()} (outside the "
            "16-bit range 0..65535): save it as an 8- or 16-bit image"
        )
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257), exactly
    return Image.fromarray(grey).convert("RGB")  # mode L: its convert to RGB copies the values
