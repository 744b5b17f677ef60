"""`VideoEncoder`: incremental H.264 encoding of RGB frames with exact timestamps (PyAV).

Reproducible bytes: the same frames with the same settings encode to the same bytes, run after
run and machine after machine (with the same libx264 and FFmpeg builds, i.e. the same PyAV
wheel). Two things stood in the way, both found by encoding the same frames repeatedly:

* libx264 as bundled with PyAV reads memory it never wrote: in a long-lived process whose heap
  holds earlier data, the same frames encoded to different bytes (at 64x64, 4 distinct results in
  4 runs of one process; every run in a fresh process agreed, and with glibc's ``M_PERTURB``
  filling each new allocation with one fixed byte, every run agreed). `_steady_heap` sets that
  option in any process that encodes: a fresh allocation then always holds the same bytes.
  Measured cost: none beyond run-to-run noise (about 900 fps either way at 64x64, 81 vs 89 at
  256x256, CPU machine).
* x264's output depends on its thread count, and its default follows the machine's cores: a fixed
  ``threads`` gives the same bytes everywhere (``0`` keeps the encoder's own choice).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from ._errors import MediaError
from ._files import commit, discard, muxer_for, temp_path_for

logger = logging.getLogger(__name__)

#: Pixel formats whose chroma planes are half width / half height: width/height must be even.
_HALF_WIDTH_CHROMA = ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p", "yuv420p10le")
_HALF_HEIGHT_CHROMA = ("yuv420p", "yuvj420p", "nv12", "yuv420p10le")
#: pixel formats stored as RGB (encoder libx264rgb): with crf 0, a lossless master
RGB_FORMATS = ("rgb24", "bgr24", "bgr0")
_AVCOL_SPC_RGB = 0  # FFmpeg's "RGB" matrix (identity): the decoder hands the RGB back (gbrp)


#: glibc's ``mallopt`` parameter that fills every new allocation (and every freed one) with a byte
M_PERTURB = -6
_PERTURB_BYTE = 0x55


@functools.cache
def _steady_heap() -> bool:
    """Make fresh heap allocations of this process hold fixed bytes (glibc ``M_PERTURB``), so an
    encoder that reads memory it never wrote (see the module's docstring) reads the same bytes
    every time. Once per process; False where the C library has no such option (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_PERTURB, _PERTURB_BYTE))
    except (OSError, AttributeError):
        done = False
    if not done:
        logger.info(
            "this C library cannot fill new allocations with a fixed byte: the same frames may "
            "encode to different H.264 bytes from run to run (the frames themselves do not "
            "differ)"
        )
    return done


class VideoEncoder:
    """Encode RGB frames into a video file, a few frames at a time.

    Frame ``k`` gets ``pts = k`` in a time base of ``1 / frame_rate``, so the container's
    frame rate is exactly `frame_rate` (e.g. 30000/1001 stays 30000/1001). Frames are written
    to a hidden temporary file beside `dest_path`, which is renamed to `dest_path` only by a
    successful `close`; leaving the ``with`` block by an exception deletes it, so a file at
    `dest_path` is always complete. The RGB to YUV conversion and the stream's colour tags are
    BT.709, limited range.

    Odd sizes are rejected for chroma-subsampled pixel formats (yuv420p needs an even width
    and height): the encoder does not pad silently; crop or pad the frames, or use
    ``pix_fmt="yuv444p"``.

    Example::

        with VideoEncoder(path, frame_rate=Fraction(30000, 1001), width=512, height=512) as enc:
            for chunk in chunks:
                enc.add_frames(chunk)  # (k, 512, 512, 3) uint8
        # the file exists now; enc.num_frames frames

    Args:
        dest_path: output file (.mp4, .m4v, .mov or .mkv); its folder is created if needed.
        frame_rate: exact frames per second, e.g. ``Fraction(30000, 1001)`` or ``25``.
        width: frame width in pixels.
        height: frame height in pixels.
        codec: FFmpeg encoder name.
        crf: x264/x265 constant rate factor (lower: better quality, bigger file).
        preset: x264/x265 speed preset (ultrafast .. veryslow).
        pix_fmt: pixel format of the encoded stream.
        threads: encoder threads; the output depends on it, so a fixed number gives the same
            bytes on every machine; 0 lets the encoder pick by the machine's cores.
    """

    def __init__(
        self,
        dest_path: str | os.PathLike[str],
        *,
        frame_rate: Fraction | int,
        width: int,
        height: int,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "medium",
        pix_fmt: str = "yuv420p",
        threads: int = 0,
    ) -> None:
        if isinstance(frame_rate, float) or not isinstance(frame_rate, (int, Fraction)):
            raise TypeError(
                f"frame_rate = {frame_rate!r} must be an int or a Fraction "
                f"(e.g. Fraction(30000, 1001)), never a float: floats are not exact."
            )
        frame_rate = Fraction(frame_rate)
        if frame_rate <= 0:
            raise ValueError(f"{frame_rate = } must be > 0.")
        if width <= 0 or height <= 0:
            raise ValueError(f"width = {width} and height = {height} must be > 0.")
        if (pix_fmt in _HALF_WIDTH_CHROMA and width % 2) or (
            pix_fmt in _HALF_HEIGHT_CHROMA and height % 2
        ):
            raise ValueError(
                f"{pix_fmt} needs an even width and height, got {width}x{height}; crop or pad "
                f"the frames to even sizes, or use pix_fmt='yuv444p'."
            )
        _steady_heap()
        self._dest = Path(dest_path)
        muxer = muxer_for(self._dest)
        self._dest.parent.mkdir(parents=True, exist_ok=True)
        self._frame_rate = frame_rate
        self._width, self._height, self._pix_fmt = width, height, pix_fmt
        self._temp = temp_path_for(self._dest)
        self._num_frames = 0
        self._closed = False
        self._to_yuv = VideoReformatter()
        self._container = av.open(str(self._temp), mode="w", format=muxer)
        try:
            self._stream = self._container.add_stream(codec, rate=frame_rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = pix_fmt
            # pts = k in 1/frame_rate; the muxer may pick a finer time base of its own.
            self._time_base = 1 / frame_rate
            self._stream.time_base = self._time_base
            self._stream.codec_context.time_base = self._time_base
            if pix_fmt in RGB_FORMATS:  # stored as RGB (libx264rgb): tagged so, read back exactly
                self._stream.codec_context.colorspace = _AVCOL_SPC_RGB
                self._stream.codec_context.color_range = ColorRange.JPEG
            else:
                self._stream.codec_context.colorspace = Colorspace.ITU709
                self._stream.codec_context.color_range = ColorRange.MPEG
            self._stream.codec_context.color_primaries = 1  # BT.709
            self._stream.codec_context.color_trc = 1  # BT.709
            self._stream.codec_context.thread_count = threads
            self._stream.options = {"crf": str(crf), "preset": preset}
        except (av.error.FFmpegError, ValueError) as err:
            self._abort()
            raise ValueError(f"cannot set up encoder {codec!r} ({pix_fmt}): {err}") from err

    @property
    def dest_path(self) -> Path:
        """Where the finished file appears on `close`."""
        return self._dest

    @property
    def frame_rate(self) -> Fraction:
        """Exact frames per second of the output."""
        return self._frame_rate

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self._num_frames

    def add_frames(self, frames: np.ndarray) -> None:
        """Encode frames.

        Args:
            frames: (k, H, W, 3) or (H, W, 3) uint8 RGB, H and W as given to the constructor
                (numpy, or anything `np.asarray` takes, such as a CPU torch tensor).
        """
        if self._closed:
            raise RuntimeError(f"{self._dest}: add_frames after close")
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        expected = (self._height, self._width, 3)
        if array.ndim != 4 or array.shape[1:] != expected or array.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (k, {self._height}, {self._width}, 3) RGB, got "
                f"{array.dtype} {array.shape}"
            )
        try:
            for image in array:
                # wraps the array's memory (from_ndarray copies it holding the GIL: ~3 ms a
                # 1080x1920 frame that the denoising thread cannot launch kernels)
                rgb = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(image), format="rgb24")
                frame = (
                    rgb
                    if self._pix_fmt in RGB_FORMATS
                    else self._to_yuv.reformat(
                        rgb,
                        format=self._pix_fmt,
                        dst_colorspace=Colorspace.ITU709,
                        dst_color_range=ColorRange.MPEG,
                    )
                )
                frame.pts = self._num_frames
                frame.time_base = self._time_base
                self._container.mux(self._stream.encode(frame))
                self._num_frames += 1
        except av.error.FFmpegError as err:
            raise MediaError(
                f"{self._dest}: encoding frame {self._num_frames} failed ({err})"
            ) from err

    def close(self) -> int:
        """Flush the encoder, finish the file and move it to `dest_path`.

        Returns:
            the number of frames written.

        Raises:
            ValueError: no frame was added (no file is written).
        """
        if self._closed:
            return self._num_frames
        if self._num_frames == 0:
            self._abort()
            raise ValueError(f"{self._dest}: no frames were added; nothing was written")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except av.error.FFmpegError as err:
            self._abort()
            raise MediaError(f"{self._dest}: finishing the video failed ({err})") from err
        self._closed = True
        commit(self._temp, self._dest)
        logger.debug("%s: %d frames at %s fps", self._dest, self._num_frames, self._frame_rate)
        return self._num_frames

    def _abort(self) -> None:
        """Stop without a result: close the container and delete the temporary file."""
        self._closed = True
        try:
            self._container.close()
        except av.error.FFmpegError as err:  # the file is discarded anyway
            logger.debug("%s: closing an aborted encoder: %s", self._dest, err)
        discard(self._temp)

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._abort()
