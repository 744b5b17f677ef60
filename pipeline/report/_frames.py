"""Frames as the page's pictures: which frames to pick, thumbnails, the contact sheet with its
timestamps, JPEG bytes. Arrays and images in, images out: nothing here reads or writes files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..progress import format_duration

#: Largest width of one frame on the poster and on the contact sheet (smaller videos stay smaller).
THUMB_WIDTH = 320
#: Frames on a contact sheet, and how many of them per sheet row.
SHEET_FRAMES = 8
SHEET_COLUMNS = 4
JPEG_QUALITY = 82
#: Height of the timestamp text on a contact-sheet frame, as a share of the frame's width (the
#: sheet is shown about 4 x 95 px wide in a card: the labels must stay readable there).
LABEL_SCALE = 0.13


@dataclass(frozen=True)
class Thumbnail:
    """One picked frame of an output, scaled down."""

    index: int  # frame index in the output
    pts_seconds: float  # its presentation time
    image: Image.Image


def pick_frame_indices(num_frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """`count` frame indices spread evenly over `num_frames` (the centre of each equal slice).

    Fewer when the video has fewer frames; empty for an empty video. Sorted, without repeats.
    """
    if num_frames <= 0 or count <= 0:
        return []
    count = min(count, num_frames)
    return sorted({min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)})


def thumbnail(frame: np.ndarray) -> Image.Image:
    """An (H, W, 3) uint8 frame as a PIL image at most `THUMB_WIDTH` wide (aspect kept)."""
    image = Image.fromarray(frame)
    if image.width > THUMB_WIDTH:
        height = max(1, round(image.height * THUMB_WIDTH / image.width))
        image = image.resize((THUMB_WIDTH, height), Image.Resampling.LANCZOS)
    return image


def format_timestamp(seconds: float, digits: int = 1) -> str:
    """``0:03.2``: minutes, seconds and `digits` decimals (hours when needed: ``1:02:03.4``)."""
    scale = 10**digits
    ticks = round(max(seconds, 0.0) * scale)
    whole, fraction = divmod(ticks, scale)
    return f"{format_duration(whole)}.{fraction:0{digits}d}"


def timestamp_digits(times: Sequence[float]) -> int:
    """Decimals that keep neighbouring timestamps apart: 2 when two are < 0.1 s apart, else 1."""
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    return 2 if gaps and min(gaps) < 0.1 else 1


def contact_sheet(thumbnails: Sequence[Thumbnail], columns: int = SHEET_COLUMNS) -> Image.Image:
    """The thumbnails in a grid (row by row), each labelled with its timestamp."""
    if not thumbnails:
        raise ValueError("contact_sheet() needs at least one thumbnail")
    width = max(t.image.width for t in thumbnails)
    height = max(t.image.height for t in thumbnails)
    columns = max(1, min(columns, len(thumbnails)))
    rows = -(-len(thumbnails) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), (17, 24, 39))
    digits = timestamp_digits([t.pts_seconds for t in thumbnails])
    for position, thumb in enumerate(thumbnails):
        cell = thumb.image.copy()
        _label(cell, format_timestamp(thumb.pts_seconds, digits))
        row, column = divmod(position, columns)
        sheet.paste(cell, (column * width, row * height))
    return sheet


def _label(image: Image.Image, text: str) -> None:
    """Draw `text` on a dark tag in the bottom-left corner of `image` (in place)."""
    draw = ImageDraw.Draw(image, "RGBA")
    font = _font(max(11, round(image.width * LABEL_SCALE)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, image.width // 64)
    x, y = pad, image.height - (bottom - top) - 3 * pad
    draw.rectangle(
        (x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad), fill=(0, 0, 0, 170)
    )
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
