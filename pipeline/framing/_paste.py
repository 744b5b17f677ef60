"""Putting the animated square back into the photo, on the output canvas.

``video.canvas``: ``crop`` writes the model's square as it is; ``portrait`` writes the whole
photo at its own resolution (rounded down to even sides, which H.264 in 4:2:0 needs); ``WxH``
(e.g. ``1080x1920``) scales the photo to *cover* the canvas (no bars; what overflows is cut,
the cut centred on the face as far as the photo allows), the usual framing of a social video.

Each output frame is the canvas's picture of the photo with the animated square blended in
through a feathered mask: 1 inside, falling smoothly to 0 over the outer ``feather`` of the
square, 0 outside it, so the photo's own pixels are untouched away from the face and the seam
is invisible. Before blending, the frame's colour is shifted to the photo's (per channel, the
mean difference over the feather band, where both are seen), so a small colour or brightness
drift of the model does not show as an edge. Everything runs at the canvas's resolution, from
a copy of the photo scaled once per row.
"""

from __future__ import annotations

import numpy as np

from ._geometry import Square


def feather_mask(side: int, feather: float) -> np.ndarray:
    """``(side, side)`` float32 weights: 1 inside, a smooth ramp to 0 over the outer ``feather``
    of the square (smoothstep of the distance to the nearest edge)."""
    band = max(1.0, feather * side)
    distance = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    ramp = np.clip(distance / band, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.minimum(ramp[:, None], ramp[None, :])


class PasteBack:
    """Composes output frames onto the canvas (see the module's notes).

    Args:
        photo: the portrait, ``(H, W, 3)`` uint8, upright.
        square: where the animated square sits in the photo.
        canvas: ``"portrait"`` or ``(width, height)``.
        feather: width of the mask's ramp, as a fraction of the square's side.
    """

    def __init__(
        self, photo: np.ndarray, square: Square, canvas: str | tuple[int, int], feather: float
    ) -> None:
        import cv2  # noqa: PLC0415

        height, width = photo.shape[:2]
        if canvas == "portrait":
            out_w, out_h = width - width % 2, height - height % 2
            factor, src_x, src_y = 1.0, 0.0, 0.0
        else:
            out_w, out_h = canvas
            factor = max(out_w / width, out_h / height)  # cover
            face_x = (square.x + square.side / 2) * factor
            face_y = (square.y + square.side / 2) * factor
            src_x = float(np.clip(face_x - out_w / 2, 0, width * factor - out_w))
            src_y = float(np.clip(face_y - out_h / 2, 0, height * factor - out_h))
        self.width, self.height = out_w, out_h
        if factor == 1.0:
            background = photo[:out_h, :out_w]
        else:
            # the photo scaled by `factor` and shifted by (-src_x, -src_y): one affine resample,
            # after an area-filtered shrink when it gets smaller (warpAffine has no area filter)
            source, sx, sy = photo, factor, factor
            if factor < 1:
                size = (max(1, round(width * factor)), max(1, round(height * factor)))
                source = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
                sx, sy = factor * width / size[0], factor * height / size[1]
            matrix = np.array([[sx, 0.0, -src_x], [0.0, sy, -src_y]])
            background = cv2.warpAffine(
                source, matrix, (out_w, out_h), flags=cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REPLICATE,
            )  # fmt: skip
        self.background = np.ascontiguousarray(background)
        # the square on the canvas, in whole pixels
        side = max(2, round(square.side * factor))
        x0, y0 = round(square.x * factor - src_x), round(square.y * factor - src_y)
        self.side, self.x0, self.y0 = side, x0, y0
        mask = feather_mask(side, feather)
        # the part of the square inside the canvas
        self._canvas_box = (max(0, y0), min(out_h, y0 + side), max(0, x0), min(out_w, x0 + side))
        top, bottom, left, right = self._canvas_box
        self._square_box = (top - y0, bottom - y0, left - x0, right - x0)
        st, sb, sl, sr = self._square_box
        self.mask = mask[st:sb, sl:sr, None]
        weights = np.ascontiguousarray(mask[st:sb, sl:sr])
        self._weights = (weights, np.ascontiguousarray(1.0 - weights))  # cv2.blendLinear's maps
        band = np.flatnonzero((weights > 0.0) & (weights < 1.0))
        # the colour match reads every 7th band pixel: the same mean, a fraction of the work
        self._band_sample = band[::7]
        self._band = (weights > 0.0) & (weights < 1.0)
        region = self.background[top:bottom, left:right]
        self._region = np.ascontiguousarray(region)
        self._region_band = region.reshape(-1, 3)[self._band_sample].astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the output frames."""
        return self.height, self.width

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``(k, S, S, 3)`` uint8 animated squares → ``(k, height, width, 3)`` uint8 canvases."""
        out = np.empty((frames.shape[0], self.height, self.width, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            self._compose(frame, out[i])
        return out

    def _compose(self, frame: np.ndarray, canvas: np.ndarray) -> None:
        import cv2  # noqa: PLC0415

        np.copyto(canvas, self.background)
        top, bottom, left, right = self._canvas_box
        if bottom <= top or right <= left:
            return
        interpolation = cv2.INTER_AREA if self.side < frame.shape[0] else cv2.INTER_CUBIC
        resized = cv2.resize(frame, (self.side, self.side), interpolation=interpolation)
        st, sb, sl, sr = self._square_box
        animated = np.ascontiguousarray(resized[st:sb, sl:sr])
        if self._band_sample.size:  # colour matched to the photo over the feather band
            seen = animated.reshape(-1, 3)[self._band_sample].astype(np.float32)
            shift = (self._region_band - seen).mean(axis=0)
            animated = cv2.add(animated, (*shift.tolist(), 0.0))  # saturating, per channel
        # weight 0 gives the photo's pixel exactly, 1 the animated one
        canvas[top:bottom, left:right] = cv2.blendLinear(
            animated, self._region, self._weights[0], self._weights[1]
        )


class CoverCanvas:
    """Output frames for a row framed without a face (``framing.portrait=crop|pad|stretch``):
    the animated square scaled to cover the canvas, centred (no photo to paste it into).

    Args:
        side: the square picture's side in the photo's pixels (``canvas="portrait"`` gives it
            back at that size, rounded down to even).
        canvas: ``"portrait"`` or ``(width, height)``.
    """

    def __init__(self, side: int, canvas: str | tuple[int, int]) -> None:
        even = max(16, side - side % 2)
        self.width, self.height = (even, even) if canvas == "portrait" else canvas

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import cv2  # noqa: PLC0415

        side = max(self.width, self.height)
        top, left = (side - self.height) // 2, (side - self.width) // 2
        interpolation = cv2.INTER_AREA if side < frames.shape[1] else cv2.INTER_CUBIC
        out = np.empty((frames.shape[0], self.height, self.width, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            scaled = cv2.resize(frame, (side, side), interpolation=interpolation)
            out[i] = scaled[top : top + self.height, left : left + self.width]
        return out
