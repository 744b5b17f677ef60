"""Frames as arrays: `FrameChunk`, the `Fit` modes, and turning decoded frames into RGB arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

#: How a non-square picture becomes size x size: "crop" keeps the centre, "pad" letterboxes
#: with black bars, "stretch" changes the aspect ratio.
Fit = Literal["crop", "pad", "stretch"]
FIT_MODES: tuple[str, ...] = get_args(Fit)

#: swscale filter for resizing: sharp, and fast enough (see the media throughput notes).
RESIZE_FILTER = Interpolation.LANCZOS


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive frames of a video with their presentation times.

    Attributes:
        frames: (k, H, W, 3) uint8 RGB.
        start_index: index of ``frames[0]`` in the constant-frame-rate output.
        pts_seconds: (k,) float64, presentation time of each frame from the video's start
            (``index / frame_rate``).
    """

    frames: np.ndarray
    start_index: int
    pts_seconds: np.ndarray

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (k, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        if self.pts_seconds.shape != (self.frames.shape[0],):
            raise ValueError(
                f"pts_seconds must have shape ({self.frames.shape[0]},) to match frames, "
                f"got {self.pts_seconds.shape}"
            )

    def __len__(self) -> int:
        return self.frames.shape[0]


def check_fit(fit: str) -> None:
    """Raise `ValueError` unless `fit` is one of `FIT_MODES`."""
    if fit not in FIT_MODES:
        raise ValueError(f"Invalid fit ({fit!r}). Supported values are {', '.join(FIT_MODES)}.")


def check_size(size: int | None) -> None:
    """Raise `ValueError` unless `size` is None or a positive int."""
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ValueError(f"size = {size!r} must be None or a positive int.")


def scaled_size(width: int, height: int, size: int, fit: Fit) -> tuple[int, int]:
    """(width, height) a width x height picture is resized to before cropping/padding to size."""
    if fit == "stretch":
        return size, size
    scale = size / (min(width, height) if fit == "crop" else max(width, height))
    scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
    if fit == "crop":
        return max(size, scaled[0]), max(size, scaled[1])
    return min(size, scaled[0]), min(size, scaled[1])


def crop_or_pad(image: np.ndarray, size: int, fit: Fit) -> np.ndarray:
    """Centre-crop ("crop") or centre-pad with black ("pad") an (h, w, 3) image to size x size."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    if fit == "pad":
        canvas = np.zeros((size, size, 3), dtype=image.dtype)
        top, left = (size - height) // 2, (size - width) // 2
        canvas[top : top + height, left : left + width] = image
        return canvas
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


class FrameConverter:
    """Turns decoded `av.VideoFrame`s into upright RGB arrays, optionally size x size.

    The resize runs in the stored pixel format (swscale, Lanczos) before the RGB conversion,
    which measured faster than converting first; the rotation and crop/pad are numpy views.
    One converter serves one stream (it keeps its swscale contexts between frames).

    Without `size`, frames come out at the stream's display size (frames of another size, or
    with non-square pixels, are resized to it, so every frame has the same shape).

    Args:
        width: display width of the stream (after rotation).
        height: display height of the stream (after rotation).
        rotation: counter-clockwise degrees to turn stored frames (0, 90, 180, 270).
        size: output side length, or None for the display size.
        fit: how a non-square picture becomes square.
    """

    def __init__(
        self, *, width: int, height: int, rotation: int, size: int | None, fit: Fit
    ) -> None:
        check_fit(fit)
        check_size(size)
        self._turns = (rotation // 90) % 4
        self._size = size
        self._fit = fit
        if size is None:  # the display size: differs from the stored one for non-square pixels
            scaled_w, scaled_h = width, height
        else:
            scaled_w, scaled_h = scaled_size(width, height, size, fit)
        self._scaled = (scaled_h, scaled_w) if self._turns % 2 else (scaled_w, scaled_h)
        self._scaler = VideoReformatter()
        self._to_rgb = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """Return the frame as an (H, W, 3) uint8 RGB array (a new, contiguous array)."""
        if (frame.width, frame.height) != self._scaled:
            frame = self._scaler.reformat(
                frame, self._scaled[0], self._scaled[1], interpolation=RESIZE_FILTER
            )
        image = self._to_rgb.reformat(frame, format="rgb24").to_ndarray()
        if self._turns:
            image = np.rot90(image, k=self._turns)
        if self._size is not None and self._fit != "stretch":
            image = crop_or_pad(image, self._size, self._fit)
        return np.ascontiguousarray(image)
