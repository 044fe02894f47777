import logging

import numpy as np
import pytest
from PIL import Image

from solution.data.images import ImageLoadError, load_image, try_load_image


def _save(image, path, **kw):
    image.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    gray = _save(Image.new("L", (8, 6), 100), tmp_path / "g.png")
    cmyk = _save(Image.new("CMYK", (8, 6), (0, 255, 0, 0)), tmp_path / "c.jpg")
    palette = _save(Image.new("RGB", (8, 6), (10, 200, 30)).convert("P"), tmp_path / "p.png")
    alpha = _save(Image.new("RGBA", (8, 6), (255, 0, 0, 0)), tmp_path / "a.png")
    for path in (gray, cmyk, palette, alpha):
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (8, 6)
    assert load_image(alpha).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(image, tmp_path / "r.jpg", exif=exif)
    assert load_image(path).size == (20, 40)


def test_truncated_and_corrupt_are_named(tmp_path, caplog):
    good = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                 tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    for path in (truncated, garbage):
        with pytest.raises(ImageLoadError, match=path.name):
            load_image(path)
    with caplog.at_level(logging.WARNING):
        assert try_load_image(garbage) is None
    assert "garbage.jpg" in caplog.text and caplog.text.count("\n") == 1


def test_pixel_limit(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="exceeds the 5000-pixel limit"):
        load_image(path, max_pixels=5000)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
