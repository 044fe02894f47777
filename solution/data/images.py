"""Robust image loading: EXIF orientation, any mode to RGB, a pixel limit, corrupt files reported."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own bomb threshold, applied per call instead of globally


class ImageLoadError(OSError):
    """An image that cannot be used: missing, corrupt, truncated or too large."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels carry arbitrary colour; flatten onto white as browsers do.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    if image.mode in {"I;16", "I"}:
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB") if image.mode != "RGB" else image


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` as an upright RGB image, or raise :class:`ImageLoadError` naming the file."""
    try:
        with warnings.catch_warnings():
            # PIL warns about large images, truncated data and corrupt EXIF; what matters is reported below
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.width * image.height > max_pixels:
                    raise ImageLoadError(
                        f"{path}: {image.width}x{image.height} exceeds the {max_pixels}-pixel limit"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: unreadable image ({exc})") from None


def try_load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, quiet: bool = False
                   ) -> Image.Image | None:
    """:func:`load_image`, but a bad file returns None, with one warning line unless ``quiet`` (the caller
    then names it, once per run, see :func:`warn_unreadable`)."""
    try:
        return load_image(path, max_pixels)
    except ImageLoadError as exc:
        if not quiet:
            log.warning("skipping %s", exc)
        return None


def warn_unreadable(paths: list[Path], warned: set[str] | None = None) -> int:
    """One warning line per unreadable image, with the reason; paths in ``warned`` (a run's record of those
    already named) are skipped and the new ones added, so a training run names each bad file once. Returns
    how many were named."""
    named = 0
    for path in paths:
        if warned is not None and str(path) in warned:
            continue
        try:
            load_image(path)
        except ImageLoadError as exc:
            log.warning("skipping %s", exc)
            named += 1
        if warned is not None:
            warned.add(str(path))
    return named
