"""`VideoReader`: lazy, constant-frame-rate decoding of a video into RGB arrays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
from av.container import InputContainer

from ._container import open_input
from ._errors import MediaError, MediaSource
from ._frames import Fit, FrameChunk, FrameConverter, check_fit, check_size
from ._probe import MediaInfo, VideoStreamInfo, probe_video

logger = logging.getLogger(__name__)

_HALF = Fraction(1, 2)
#: A stream with an exact frame count may end this many frames early (last frame repeated).
_MAX_PADDED_FRAMES = 1


class VideoReader:
    """Decode a video lazily, frame by frame, at a constant frame rate.

    Output frame ``k`` (time ``k / frame_rate`` from the first frame) is the last decoded frame
    whose presentation time is at most ``(k + 1/2) / frame_rate``: for a constant-frame-rate
    input that is exactly stored frame ``k``; a variable-frame-rate input is resampled to its
    average rate, repeating or dropping frames as needed (like FFmpeg's ``fps`` filter with
    ``round=near``; the half-frame tolerance absorbs timestamps rounded to e.g. milliseconds).
    Frames are turned upright from the rotation metadata. Only a few frames are in memory at a
    time, whatever the video's length.

    Each iteration opens the source afresh; a file-like source must not be iterated by two
    loops at once.

    Args:
        source: local path or seekable binary file-like object.
        size: if set, every frame becomes size x size (see `fit`); None keeps the display size.
        fit: how a non-square frame becomes square: "crop" (centre), "pad" (black bars) or
            "stretch".
        max_frames: if set, the video is cut to its first `max_frames` frames.
        start_frame: first frame to yield (resume); the decoder seeks to the keyframe before it
            and decodes forward, so the frames equal those of a read from frame 0.
        threads: decoder threads; 0 lets FFmpeg pick (one per core: set it to the worker's
            CPU share when several workers share a machine).

    Raises:
        MediaError: the source is not a readable video (see `probe`).
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        source: MediaSource,
        *,
        size: int | None = None,
        fit: Fit = "crop",
        max_frames: int | None = None,
        start_frame: int = 0,
        threads: int = 0,
    ) -> None:
        check_fit(fit)
        check_size(size)
        if threads < 0:
            raise ValueError(f"threads = {threads} must be >= 0 (0: automatic).")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames = {max_frames} must be None or >= 0.")
        self._source = source
        self._info = probe_video(source)
        video = self._video
        self._size = size
        self._fit: Fit = fit
        self._num_frames = (
            video.num_frames if max_frames is None else min(max_frames, video.num_frames)
        )
        if not 0 <= start_frame <= self._num_frames:
            raise ValueError(
                f"start_frame = {start_frame} must be between 0 and num_frames "
                f"({self._num_frames})."
            )
        self._start_frame = start_frame
        self._threads = threads
        if video.is_variable_frame_rate:
            logger.info(
                "%s: variable frame rate; resampling to its average rate %s fps",
                self._info.source,
                video.frame_rate,
            )

    @property
    def info(self) -> MediaInfo:
        """What `probe` found in the source."""
        return self._info

    @property
    def _video(self) -> VideoStreamInfo:
        assert self._info.video is not None  # probe_video guarantees it
        return self._info.video

    @property
    def frame_rate(self) -> Fraction:
        """Exact output frame rate (frames per second)."""
        return self._video.frame_rate

    @property
    def num_frames(self) -> int:
        """Frames of the clip from frame 0, after `max_frames` (whatever `start_frame` is).

        Exact when ``info.video.num_frames_exact``; otherwise estimated from the duration, and
        iteration may end a little earlier.
        """
        return self._num_frames

    @property
    def start_frame(self) -> int:
        """Index of the first frame this reader yields."""
        return self._start_frame

    @property
    def width(self) -> int:
        """Width of output frames in pixels."""
        return self._size if self._size is not None else self._video.width

    @property
    def height(self) -> int:
        """Height of output frames in pixels."""
        return self._size if self._size is not None else self._video.height

    def __len__(self) -> int:
        """Frames an iteration yields: ``num_frames - start_frame``."""
        return self._num_frames - self._start_frame

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 RGB frames from `start_frame` on."""
        for _, image in self._indexed_frames():
            yield image

    def chunks(self, n: int) -> Iterator[FrameChunk]:
        """Yield `FrameChunk`s of `n` frames (the last one may be shorter).

        Args:
            n: frames per chunk, >= 1.
        """
        if n < 1:
            raise ValueError(f"n = {n} must be >= 1.")
        rate = self.frame_rate
        batch: list[np.ndarray] = []
        first_index = self._start_frame
        for index, image in self._indexed_frames():
            if not batch:
                first_index = index
            batch.append(image)
            if len(batch) == n:
                yield _chunk(batch, first_index, rate)
                batch = []
        if batch:
            yield _chunk(batch, first_index, rate)

    def sample(self, every: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(k, frame)`` for every ``every``-th frame from `start_frame` on (``k % every == 0``);
        the frames between are decoded but never converted to RGB."""
        if every < 1:
            raise ValueError(f"every = {every} must be >= 1.")
        return self._indexed_frames(lambda k: k % every == 0)

    def _indexed_frames(
        self, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(k, frame) for k in [start_frame, num_frames): the constant-frame-rate resampling
        (only the k that ``wanted`` accepts, when given)."""
        video = self._video
        end = self._num_frames
        k = self._start_frame
        if k >= end:
            return
        # Position of a frame on the output grid: (pts - start_pts) * time_base * frame_rate.
        scale = video.time_base * video.frame_rate
        convert = FrameConverter(
            width=video.width,
            height=video.height,
            rotation=video.rotation,
            size=self._size,
            fit=self._fit,
        )
        held: av.VideoFrame | None = None  # last frame at or before output tick k
        held_position = Fraction(0)
        held_image: np.ndarray | None = None
        with open_input(self._source) as container:
            stream = container.streams[video.index]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self._threads
            for frame in self._decoded_frames(container, stream, k, scale):
                position = (
                    (frame.pts - video.start_pts) * scale
                    if frame.pts is not None
                    else held_position + 1
                )
                while k < end and position > k + _HALF:
                    if held is None:  # nothing decoded before tick k: show this frame
                        held, held_position = frame, position
                    if wanted is not None and not wanted(k):
                        pass
                    elif held_image is None:
                        held_image = convert(held)
                        yield k, held_image
                    else:
                        yield k, held_image.copy()
                    k += 1
                if k >= end:
                    return
                held, held_position, held_image = frame, position, None
            if held is None:
                raise MediaError(
                    f"{self._info.source}: video stream #{video.index} yielded no frame at or "
                    f"after frame {k}; the file is corrupt or truncated"
                )
            duration = held.duration * scale if held.duration else Fraction(1)
            while k < end and k + _HALF < held_position + duration:
                if wanted is None or wanted(k):
                    held_image = convert(held) if held_image is None else held_image.copy()
                    yield k, held_image
                k += 1
            missing = end - k
            if missing and video.num_frames_exact:
                if missing > _MAX_PADDED_FRAMES:
                    raise MediaError(
                        f"{self._info.source}: video stream #{video.index} ended after {k} of "
                        f"the {end} frames its container lists; the file is truncated or "
                        f"corrupt, give the complete file"
                    )
                logger.debug("%s: repeating the last frame %d time(s)", self._info.source, missing)
                while k < end:
                    if wanted is None or wanted(k):
                        held_image = convert(held) if held_image is None else held_image.copy()
                        yield k, held_image
                    k += 1
            elif missing:
                logger.info(
                    "%s: video ended at frame %d of an estimated %d", self._info.source, k, end
                )

    def _decoded_frames(
        self,
        container: InputContainer,
        stream: av.video.stream.VideoStream,
        k: int,
        scale: Fraction,
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames from (at latest) the one shown at output tick `k`, in order."""
        video = self._video
        try:
            if k > 0:
                yield from self._seek_and_decode(container, stream, k, scale)
            else:
                yield from container.decode(stream)
        except av.error.FFmpegError as err:
            raise MediaError(
                f"{self._info.source}: video stream #{video.index} ({video.codec}) could not be "
                f"decoded near frame {k} ({err.strerror or err}); the file is corrupt"
            ) from err

    def _seek_and_decode(
        self,
        container: InputContainer,
        stream: av.video.stream.VideoStream,
        k: int,
        scale: Fraction,
    ) -> Iterator[av.VideoFrame]:
        """Seek to a keyframe early enough that the first decoded frame is at or before tick k.

        Container indexes are usually in decode time, so a keyframe found for a time can still
        be shown after it, and formats without an index (MPEG-TS) land anywhere; then we seek
        further back (1 s, 2 s, 4 s, ...), down to the first frame.
        """
        video = self._video
        tick_pts = video.start_pts + int(k / scale)
        one_second = max(1, int(1 / video.time_base))
        back = 0
        while True:
            target = tick_pts - back
            at_start = target <= video.start_pts
            if at_start:  # before the first frame: every format then restarts at the beginning
                target = video.start_pts - one_second
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as err:
                if at_start:
                    raise
                logger.debug("%s: seek failed (%s); seeking further back", self._info.source, err)
                back = back * 2 if back else one_second
                continue
            frames = container.decode(stream)
            first = next(frames, None)
            early_enough = (
                first is not None
                and first.pts is not None
                and (first.pts - video.start_pts) * scale <= k + _HALF
            )
            if early_enough or at_start:
                if first is not None:
                    yield first
                    yield from frames
                return
            back = back * 2 if back else one_second  # no keyframe decoded at or before tick k


def _chunk(batch: list[np.ndarray], first_index: int, rate: Fraction) -> FrameChunk:
    indices = np.arange(first_index, first_index + len(batch), dtype=np.float64)
    return FrameChunk(
        frames=np.stack(batch),
        start_index=first_index,
        pts_seconds=indices * rate.denominator / rate.numerator,
    )
