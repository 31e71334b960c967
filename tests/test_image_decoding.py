"""16-bit greyscale images (issue 12.7): every PIL path scales them to 8 bits as DALI does.

Before, PIL's convert("RGB") clipped mode I;16 at 255 and ~99.8% of the pixels came out white in
the torch loader, the kNN monitor and eval.
"""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from fastclr.data import load_eval_split
from fastclr.data.decode import to_rgb
from fastclr.data.image_folder import read_rgb
from fastclr.data.sources import fit_square

# 16-bit values and what DALI 2.4's CPU decoder makes of them (measured): round(v / 257)
DALI_MEASURED = {0: 0, 127: 0, 128: 0, 255: 1, 256: 1, 383: 1, 384: 1, 385: 1, 511: 2, 512: 2,
                 32767: 127, 32768: 128, 65279: 254, 65280: 254, 65535: 255}  # fmt: skip


def random_16bit(rng, height, width) -> np.ndarray:
    return rng.integers(0, 65536, (height, width), dtype=np.uint16)


def expected_rgb(values: np.ndarray) -> np.ndarray:
    grey = np.round(values.astype(np.float64) / 257).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_to_rgb_scales_16bit_like_dali():
    values = np.array(list(DALI_MEASURED), dtype=np.uint16)[None]
    assert to_rgb(Image.fromarray(values)).mode == "RGB"
    got = np.asarray(to_rgb(Image.fromarray(values)))[0, :, 0]
    assert got.tolist() == list(DALI_MEASURED.values())
    wide = Image.fromarray(values.astype(np.int32))  # mode I, 16-bit values
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == list(DALI_MEASURED.values())
    with pytest.raises(ValueError, match="outside the 16-bit range"):
        to_rgb(Image.fromarray(np.array([[70000, 5]], dtype=np.int32)))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_files_decode_to_scaled_8bit_on_every_pil_path(tmp_path, suffix):
    rng = np.random.default_rng()
    height, width = rng.integers(5, 40, 2)
    values = random_16bit(rng, height, width)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")  # what PIL opens such files as
    assert np.array_equal(read_rgb(str(path)), expected_rgb(values))  # the torch loader
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    with Image.open(path) as image:  # kNN monitor and eval, at the images' own side: no resize
        square = fit_square(image, side)
    assert np.array_equal(square, expected_rgb(values[top : top + side, left : left + side]))
    assert (square == 255).mean() < 0.05  # before: ~99.8% white


def test_eval_split_of_a_16bit_folder_is_not_white(tmp_path):
    rng = np.random.default_rng()
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.fromarray(random_16bit(rng, 12, 12)).save(tmp_path / label / f"{i}.png")
    images, labels = load_eval_split(str(tmp_path), image_size=12, split="train", num_threads=1)
    pixels = images * 0.229 + 0.485  # undo the red channel's normalization: [0, 1]
    assert labels.tolist() == [0] * 9 + [1] * 9
    assert 0.3 < pixels[:, 0].mean() < 0.7 and (pixels[:, 0] > 0.999).float().mean() < 0.05


@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="DALI not installed")
def test_pil_and_dali_agree_on_a_16bit_png(tmp_path):
    from nvidia.dali import fn, pipeline_def, types

    values = random_16bit(np.random.default_rng(), 9, 14)
    path = tmp_path / "image.png"
    Image.fromarray(values).save(path)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def decode():
        encoded, _ = fn.readers.file(files=[str(path)])
        return fn.decoders.image(encoded, device="cpu", output_type=types.RGB)

    pipeline = decode()
    pipeline.build()
    (decoded,) = pipeline.run()
    assert np.array_equal(decoded.as_array()[0], read_rgb(str(path)))
