"""`load_image`: a portrait photo as an upright 8-bit RGB array (PIL)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._errors import MediaError, MediaSource, source_name
from ._frames import Fit, check_fit, check_size

IMAGE_HINT = "give a PNG, JPEG or WebP image"
_WHITE = (255, 255, 255)
# PIL modes with an alpha channel: composited on white when converted to RGB
TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def load_image(source: MediaSource, *, size: int | None = None, fit: Fit = "crop") -> np.ndarray:
    """Load an image as an upright (H, W, 3) uint8 RGB array.

    EXIF orientation is applied; CMYK, grayscale, palette, bilevel and 16/32-bit images are
    converted to 8-bit RGB, and transparent images are composited on white.

    Args:
        source: local path or seekable binary file-like object.
        size: if set, the image becomes size x size, resized with a Lanczos filter.
        fit: how a non-square image becomes square: "crop" (centre), "pad" (black bars) or
            "stretch".

    Returns:
        (H, W, 3) uint8 RGB array; (size, size, 3) when `size` is set.

    Raises:
        MediaError: the source is missing, not an image, or truncated.
    """
    check_fit(fit)
    check_size(size)
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise MediaError(f"{name}: no such file; check the path")
    elif hasattr(source, "seek"):
        source.seek(0)
    try:
        with Image.open(source) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            image = _to_rgb(image)
    except UnidentifiedImageError as err:
        raise MediaError(f"{name} is not an image PIL can read; {IMAGE_HINT}") from err
    except Image.DecompressionBombError as err:
        raise MediaError(
            f"{name} is too large to load safely ({err}); give a smaller image"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise MediaError(
            f"{name} could not be decoded as an image ({err}); it is truncated or corrupt, "
            f"{IMAGE_HINT}"
        ) from err
    if size is not None:
        image = _fit_image(image, size, fit)
    return np.asarray(image, dtype=np.uint8).copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit "RGB"."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_gray_to_8bit(np.asarray(image)), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in TRANSPARENT_MODES or image.mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _gray_to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit int or float grayscale to uint8 (full scale of its type kept)."""
    if values.dtype.kind == "f":
        peak = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    peak = 65535 if values.max(initial=0) > 255 else 255
    scaled = values.astype(np.float64) * (255.0 / peak)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _fit_image(image: Image.Image, size: int, fit: Fit) -> Image.Image:
    if fit == "crop":
        return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    if fit == "pad":
        return ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=(0, 0, 0))
    return image.resize((size, size), Image.Resampling.LANCZOS)
