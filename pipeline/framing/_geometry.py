"""Where the square the model animates sits in a picture, and cutting it out.

The rule (:func:`face_square`): the square's side is ``scale`` times the face box's width and the
face's centre sits at the square's horizontal middle, ``center_y`` of the way down. The defaults
(2.5 and 0.45: the face about 40 % of the frame's width, a little above the middle, with the
neck and shoulders below) follow how PersonaLive's inputs are framed: its demo portraits and the
centred webcam close-ups its online path assumes, head and shoulders as in the talking-head
datasets it was trained on. It is a choice, not fitted to the training set (which is not
public); both numbers are options. The driving video is cut at
the same scale around its own face, so the driver's face fills the motion networks' input as the
portrait's fills the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._detect import FaceBox


@dataclass(frozen=True)
class Square:
    """A square region of a picture in pixels (may reach past the picture's edges)."""

    x: int
    y: int
    side: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.side]


def face_square(
    face: FaceBox, scale: float, center_y: float, picture: tuple[int, int] | None = None
) -> Square:
    """The square around ``face`` (see the module's notes), rounded to whole pixels.

    With the ``picture``'s ``(width, height)``, the square stays inside it where it can: a
    photo framed tighter than the rule (a close headshot) gives the largest square that fits,
    moved as little as needed, instead of one padded with repeated edge pixels. Only a face at
    the very edge still reaches past it.
    """
    side = max(2.0, face.width * scale)
    cx, cy = face.center
    x, y = cx - side / 2, cy - center_y * side
    if picture is not None:
        width, height = picture
        side = min(side, float(min(width, height)))
        x, y = cx - side / 2, cy - center_y * side
        # moved inside, but never so far that the face leaves the square
        x = min(max(x, 0.0), width - side) if side <= width else x
        y = min(max(y, 0.0), height - side) if side <= height else y
        x = min(max(x, face.x + face.width - side), face.x)
        y = min(max(y, face.y + face.height - side), face.y)
    return Square(round(x), round(y), round(side))


def cut_square(image: np.ndarray, square: Square, size: int | None = None) -> np.ndarray:
    """The pixels of ``square`` (the picture's edge rows and columns repeated where it reaches
    past them), resized to ``size`` x ``size`` when given (area filter shrinking, cubic growing)."""
    import cv2  # noqa: PLC0415

    height, width = image.shape[:2]
    x0, y0, side = square.x, square.y, square.side
    inside = image[
        max(0, y0) : max(0, min(height, y0 + side)), max(0, x0) : max(0, min(width, x0 + side))
    ]
    pad = (
        max(0, -y0), max(0, y0 + side - height), max(0, -x0), max(0, x0 + side - width)
    )  # fmt: skip
    if inside.size == 0:  # wholly outside: nothing to repeat, the nearest edge pixel fills it
        inside = image[min(max(y0, 0), height - 1) : min(max(y0, 0), height - 1) + 1,
                       min(max(x0, 0), width - 1) : min(max(x0, 0), width - 1) + 1]  # fmt: skip
        pad = (0, side - 1, 0, side - 1)
    patch = inside
    if any(pad):
        patch = cv2.copyMakeBorder(
            np.ascontiguousarray(inside), *pad, borderType=cv2.BORDER_REPLICATE
        )
    if size is None or patch.shape[0] == size:
        return np.ascontiguousarray(patch)
    interpolation = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def square_picture(image: np.ndarray, fit: str) -> np.ndarray:
    """A non-square picture made square at its own resolution without a face: centre "crop",
    black "pad" or "stretch" (the modes of ``framing.portrait`` other than "face")."""
    height, width = image.shape[:2]
    if height == width:
        return image
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return image[top : top + side, left : left + side]
    side = max(height, width)
    if fit == "pad":
        canvas = np.zeros((side, side, 3), dtype=image.dtype)
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = image
        return canvas
    from PIL import Image  # noqa: PLC0415

    return np.asarray(Image.fromarray(image).resize((side, side), resample=Image.LANCZOS))
