"""Media layer: probe, lazy constant-frame-rate decoding, incremental encoding, concat and mux.

Arrays in, arrays out (uint8 RGB, (H, W, 3) or (k, H, W, 3)); rates are exact `Fraction`s;
knows nothing of models, Ray or S3 (sources are paths or seekable binary file objects).
Every input problem a user can fix raises `MediaError` (a `ValueError`) naming the source.
"""

from ._errors import MediaError, MediaSource, source_name
from ._frames import Fit, FrameChunk
from ._image import TRANSPARENT_MODES, load_image
from ._mux import LengthPolicy, MuxResult, concat_segments, mux_audio
from ._probe import AudioStreamInfo, MediaInfo, VideoStreamInfo, probe
from ._reader import VideoReader
from ._writer import VideoEncoder

__all__ = [
    "TRANSPARENT_MODES",
    "AudioStreamInfo",
    "Fit",
    "FrameChunk",
    "LengthPolicy",
    "MediaError",
    "MediaInfo",
    "MediaSource",
    "MuxResult",
    "VideoEncoder",
    "VideoReader",
    "VideoStreamInfo",
    "concat_segments",
    "load_image",
    "mux_audio",
    "probe",
    "source_name",
]
