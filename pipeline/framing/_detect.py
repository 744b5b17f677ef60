"""Finding faces in a picture: OpenCV's bundled frontal-face detector, made scale-consistent.

OpenCV's Haar cascade (``haarcascade_frontalface_alt2``, shipped inside the opencv-python wheel,
so it works on a fresh clone with no download) scans the picture at scales a factor apart, so the
box it returns for one face varies by up to that factor with the face's size in pixels. A crop
chosen from that box would then change with the photo's resolution. So detection runs twice:
a coarse pass over a downscaled copy finds the candidates, and a fine pass over each candidate's
neighbourhood, resampled so the face is always about :data:`REFINE_FACE_PX` pixels wide, measures
it with scale steps of 2 %: the box is then the same fraction of the face whatever the photo's
size (within a few per cent, see ``tests/test_framing.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

#: longest side of the coarse pass's copy of the picture (a face must be ≥ MIN_FACE_PX there)
COARSE_SIDE = 1200
#: the face's width in the fine pass's resampled neighbourhood
REFINE_FACE_PX = 160
#: smallest face the coarse pass looks for, in pixels of its copy
MIN_FACE_PX = 20
#: raw cascade hits (fine pass, 2 % scale steps) below which a candidate is not a face: real
#: faces in photos gather ~100, drawn ones 12-45, face-like textures (coins) 4-16
MIN_CONFIDENCE = 10.0


@dataclass(frozen=True)
class FaceBox:
    """A face in picture coordinates (pixels, floats): top-left corner, size and confidence."""

    x: float
    y: float
    width: float
    height: float
    score: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> FaceBox:
        """This box in another picture: ``x' = x · factor + dx``."""
        return FaceBox(
            self.x * factor + dx,
            self.y * factor + dy,
            self.width * factor,
            self.height * factor,
            self.score,
        )

    def as_list(self) -> list[float]:
        """``[x, y, width, height]`` rounded to 0.1 px (for summaries and reports)."""
        return [round(v, 1) for v in (self.x, self.y, self.width, self.height)]


class FaceDetector:
    """Faces in an RGB picture, largest first (see the module's notes on the two passes).

    One detector may be shared by threads: OpenCV's cascade object is not thread-safe, so each
    thread loads its own (a 0.5 MB XML file, ~20 ms).
    """

    def __init__(
        self,
        min_confidence: float = MIN_CONFIDENCE,
        coarse_side: int = COARSE_SIDE,
        coarse_step: float = 1.05,
    ) -> None:
        self.min_confidence = min_confidence
        self.coarse_side = coarse_side  # the coarse pass's copy is at most this long
        self.coarse_step = coarse_step  # its scale step (the fine pass measures in 2 % steps)
        # imported here, in the thread that builds the detector: OpenCV's package bootstrap is
        # not safe to run from several threads at once (a thread can see it half done)
        import cv2  # noqa: PLC0415
        import cv2.data  # noqa: PLC0415

        self._path = cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml"
        self._local = threading.local()

    def _cascade(self):
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            import cv2  # noqa: PLC0415

            cascade = cv2.CascadeClassifier(self._path)
            if cascade.empty():
                raise RuntimeError(f"OpenCV could not load its face detector from {self._path}")
            self._local.cascade = cascade
        return cascade

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Every face found in an ``(H, W, 3)`` uint8 RGB picture, largest first."""
        import cv2  # noqa: PLC0415

        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        factor = min(1.0, self.coarse_side / max(height, width))
        small = gray
        if factor < 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        found = []
        for coarse in self._scan(
            small, scale_step=self.coarse_step, min_size=MIN_FACE_PX, neighbours=3
        ):
            box = self._refine(gray, coarse.scaled(1.0 / factor))
            if box is not None and box.score >= self.min_confidence:
                found.append(box)
        return sorted(_distinct(found), key=lambda box: -box.area)

    def _scan(
        self, gray: np.ndarray, *, scale_step: float, min_size: int, neighbours: int
    ) -> list[FaceBox]:
        # local contrast equalised: the cascade reads light/dark patterns, which low-contrast
        # faces (darker skin in soft light, a flat illustration) otherwise lack. The score is how
        # many of the cascade's raw hits merged into the box: a face is hit at many neighbouring
        # positions and scales, a face-like texture at few.
        boxes, hits = self._cascade().detectMultiScale2(
            _equalised(gray),
            scaleFactor=scale_step,
            minNeighbors=neighbours,
            minSize=(min_size, min_size),
        )
        return [
            FaceBox(float(x), float(y), float(w), float(h), float(count))
            for (x, y, w, h), count in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(hits))
        ]

    def _refine(self, gray: np.ndarray, coarse: FaceBox) -> FaceBox | None:
        """Measure one candidate again with the face resampled to REFINE_FACE_PX wide."""
        import cv2  # noqa: PLC0415

        side = coarse.width * 2.0  # the face and half a face around it
        cx, cy = coarse.center
        x0, y0 = cx - side / 2, cy - side / 2
        out = round(REFINE_FACE_PX * 2.0)
        scale = out / side
        # an affine resample of the neighbourhood (the picture's edge repeated where it ends)
        matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        if scale < 0.5:  # warpAffine has no area filter: shrink with resize first
            shrink = cv2.resize(
                gray, None, fx=scale * 2, fy=scale * 2, interpolation=cv2.INTER_AREA
            )
            matrix = np.array([[0.5, 0.0, -x0 * scale], [0.0, 0.5, -y0 * scale]])
            gray, interpolation = shrink, cv2.INTER_LINEAR
        patch = cv2.warpAffine(
            gray, matrix, (out, out), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )
        boxes = self._scan(
            patch, scale_step=1.02, min_size=round(REFINE_FACE_PX * 0.7), neighbours=3
        )
        if not boxes:
            return None
        centre = out / 2
        best = min(
            boxes,
            key=lambda b: (b.center[0] - centre) ** 2 + (b.center[1] - centre) ** 2 - b.score,
        )
        return best.scaled(1.0 / scale, x0, y0)


#: brightens shadows (gamma 0.5) before the contrast equalisation: dark faces keep their features
_GAMMA = np.array([round((i / 255.0) ** 0.5 * 255) for i in range(256)], dtype=np.uint8)


def no_face_message(uri: str, found: int, face_index: int) -> str:
    """Why a portrait cannot be framed, and what to do (worker and validation say the same)."""
    if found == 0:
        return (
            f"{uri}: no face found in the portrait; use a photo where the face is visible, "
            f"frontal and at least 1/{COARSE_SIDE // MIN_FACE_PX} of the picture's longer side, "
            "or set framing.portrait=crop to animate the centre of the photo without looking "
            "for a face"
        )
    return (
        f"{uri}: framing.face_index={face_index} but the portrait has {found} face(s) "
        f"(0 is the largest); choose 0..{found - 1}"
    )


def _equalised(gray: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415

    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(cv2.LUT(gray, _GAMMA))


def _distinct(boxes: list[FaceBox]) -> list[FaceBox]:
    """Drop boxes that are mostly inside a more confident one (two candidates, one face)."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(_overlap(box, other) < 0.5 for other in kept):
            kept.append(box)
    return kept


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over the smaller box's area."""
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min(a.area, b.area)
