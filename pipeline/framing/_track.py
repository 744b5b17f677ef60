"""Following the face through a driving video: detections every few frames, smoothed, cut out.

The face is detected on every ``every``-th frame (a *sample*). A frame's box is the
Gaussian-weighted (``sigma`` samples) least-squares line through the boxes found within
``3·sigma`` samples on either side, read at the frame's own time: a weighted mean that a face
moving at steady speed does not drag ahead or behind, also where the window is cut short (the
video's ends, lost detections), and smooth from frame to frame. Samples where the detector found
nothing have no weight, so the track goes on through a few lost frames (a turned head, a hand in
front). The window is centred (it looks ahead as far as it looks back), so the crop does not lag
behind a moving presenter, and a box depends only on the frames within it: a row resumed in the
middle gets the boxes the uninterrupted row had. A frame with no detection anywhere in its
window is cut as ``framing.driving=off`` cuts it (the whole picture, ``video.fit``) and counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np

from ._detect import FaceBox, FaceDetector
from ._geometry import cut_square, face_square

#: a frame's place in the driving video and its pixels (display size, RGB)
IndexedFrames = Iterator[tuple[int, np.ndarray]]


class FaceTrack:
    """Smoothed face boxes for frames asked for in increasing order.

    Args:
        detections: ``(sample index, the sample's faces)`` for consecutive samples from
            ``first_sample`` on (pulled lazily, as far ahead as the window needs).
        every: frames per sample.
        sigma: width of the smoothing, in samples.
        face_index: which face of each sample to follow (0: the largest).
        first_sample: the first sample ``detections`` yields.
    """

    def __init__(
        self,
        detections: Iterator[tuple[int, list[FaceBox]]],
        *,
        every: int,
        sigma: float,
        face_index: int = 0,
        first_sample: int = 0,
    ) -> None:
        self.every = every
        self.sigma = sigma
        self.radius = self.window_radius(sigma)
        self.face_index = face_index
        self._detections = detections
        self._found: dict[int, FaceBox | None] = {}
        self._next = first_sample
        self._ended_at: int | None = None  # first sample past the video's end

    @staticmethod
    def window_radius(sigma: float) -> int:
        """Samples on either side that a sample's smoothed box depends on."""
        return max(1, math.ceil(3 * sigma)) if sigma > 0 else 0

    def box(self, frame: int) -> FaceBox | None:
        """The smoothed box of ``frame``, or None when no face was found near it."""
        position = frame / self.every  # in samples
        centre = int(position)
        self._pull(centre + self.radius + 1)
        for old in [key for key in self._found if key < centre - self.radius - 1]:
            del self._found[old]  # memory stays flat over a long video
        found = [
            (j - position, face)
            for j in range(centre - self.radius, centre + self.radius + 2)
            if (face := self._found.get(j)) is not None and abs(j - position) <= self.radius + 0.5
        ]
        if not found:
            return None
        offsets = np.array([offset for offset, _ in found])
        weights = np.exp(-0.5 * (offsets / self.sigma) ** 2) if self.sigma > 0 else offsets * 0 + 1
        values = np.array([_values(face) for _, face in found])
        line = _local_line(offsets, values, weights)
        return FaceBox(*line, score=max(face.score for _, face in found))

    def _pull(self, sample: int) -> None:
        while self._next <= sample and self._ended_at is None:
            try:
                index, faces = next(self._detections)
            except StopIteration:
                self._ended_at = self._next
                return
            chosen = faces[self.face_index] if len(faces) > self.face_index else None
            self._found[index] = chosen
            self._next = index + 1


def _local_line(offsets: np.ndarray, values: np.ndarray, weights: np.ndarray) -> list[float]:
    """The weighted least-squares line through ``values`` (one per offset, four columns) read
    at offset 0: a weighted mean that a face moving at steady speed does not drag ahead or
    behind, also where the window is cut short (the video's ends, lost detections)."""
    total = weights.sum()
    mean_offset = (weights * offsets).sum() / total
    mean_value = (weights[:, None] * values).sum(axis=0) / total
    spread = (weights * (offsets - mean_offset) ** 2).sum()
    if spread < 1e-9:  # one offset only: no slope to fit
        return mean_value.tolist()
    slope = (weights[:, None] * (offsets - mean_offset)[:, None] * (values - mean_value)).sum(
        axis=0
    ) / spread
    return (mean_value - slope * mean_offset).tolist()


def _values(face: FaceBox) -> tuple[float, float, float, float]:
    return face.x, face.y, face.width, face.height


def sample_detections(
    frames: IndexedFrames, detector: FaceDetector, every: int
) -> Iterator[tuple[int, list[FaceBox]]]:
    """Faces of every ``every``-th frame of ``frames`` (other frames are passed over; a reader's
    ``sample(every)`` gives just those)."""
    for index, frame in frames:
        if index % every == 0:
            yield index // every, detector.detect(frame)


class DrivingFramer:
    """Driving frames cut around the tracked face, ``size`` x ``size``, in chunks.

    Args:
        frames: the frames to cut, from the first one the row needs.
        track: the face track of the same video.
        size: output side (the model's resolution).
        scale / center_y: the portrait's framing (:func:`face_square`).
        whole_frame: how a frame without a face is made square (``framing.driving=off``'s cut).
    """

    def __init__(
        self,
        frames: IndexedFrames,
        track: FaceTrack,
        *,
        size: int,
        scale: float,
        center_y: float,
        whole_frame: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.frames, self.track, self.size = frames, track, size
        self.scale, self.center_y = scale, center_y
        self.whole_frame = whole_frame
        self.frames_without_face = 0
        self.seconds = 0.0  # spent following the face and cutting (decoding its frames included)

    def chunks(self, n: int) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        for index, frame in self.frames:
            batch.append(self._cut(index, frame))
            if len(batch) == n:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def _cut(self, index: int, frame: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._cut_around_face(index, frame)
        finally:
            self.seconds += time.perf_counter() - started

    def _cut_around_face(self, index: int, frame: np.ndarray) -> np.ndarray:
        face = self.track.box(index)
        if face is None:
            self.frames_without_face += 1
            return self.whole_frame(frame)
        square = face_square(face, self.scale, self.center_y, (frame.shape[1], frame.shape[0]))
        return cut_square(frame, square, self.size)
