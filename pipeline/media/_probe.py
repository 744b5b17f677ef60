"""`probe`: what a media file holds (streams, exact frame rate, rotation, VFR), read with PyAV."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

import av
from av.container import InputContainer

from ._container import VIDEO_HINT, is_still_image_format, open_input
from ._errors import MediaError, MediaSource, source_name

logger = logging.getLogger(__name__)

#: FFmpeg's default layout for a channel count, for streams that don't name theirs (WAV).
_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}

#: Packets whose timestamps are compared to tell constant from variable frame rate.
VFR_SCAN_PACKETS = 240


@dataclass(frozen=True)
class VideoStreamInfo:
    """The video stream a reader decodes.

    Attributes:
        index: stream index in the container.
        codec: decoder name, e.g. ``"h264"``.
        pix_fmt: stored pixel format, e.g. ``"yuv420p"`` (None when unknown).
        width: display width in pixels: stored width times the pixel aspect ratio, after
            `rotation` is applied.
        height: display height in pixels, after `rotation` is applied.
        rotation: counter-clockwise degrees (0, 90, 180 or 270) the stored picture must be
            turned to be upright, from the display-matrix side data.
        frame_rate: exact frames per second (e.g. ``Fraction(30000, 1001)``); for a variable
            frame rate stream, the average rate, which readers resample to.
        num_frames: frames at `frame_rate`: exact when `num_frames_exact`, else estimated from
            the duration (containers such as MKV/WebM/TS don't store a count).
        num_frames_exact: whether the container stored the frame count.
        duration_seconds: duration of the stream.
        is_variable_frame_rate: packet timestamps of the first packets are not evenly spaced.
        start_seconds: presentation time of the first frame (the stream's t=0 for readers).
        time_base: unit of the stream's timestamps, in seconds.
        start_pts: presentation timestamp of the first frame, in `time_base` units.
    """

    index: int
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    rotation: int
    frame_rate: Fraction
    num_frames: int
    num_frames_exact: bool
    duration_seconds: float
    is_variable_frame_rate: bool
    start_seconds: float
    time_base: Fraction
    start_pts: int


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream.

    Attributes:
        index: stream index in the container.
        codec: decoder name, e.g. ``"aac"``.
        sample_rate: samples per second.
        channels: number of channels.
        layout: channel layout name, e.g. ``"stereo"`` or ``"5.1"``.
        duration_seconds: duration of the stream (None when the container doesn't say).
        start_seconds: presentation time of the first packet.
    """

    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    duration_seconds: float | None
    start_seconds: float


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` found.

    Attributes:
        source: the name of the probed file, for messages.
        format_name: demuxer name, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``.
        duration_seconds: duration of the whole file (None when unknown).
        start_seconds: the container's start time (the earliest stream start).
        video: the first video stream (cover-art pictures are skipped), or None.
        audio: the audio stream players pick (the first marked default, else the first), or None.
        audio_streams: every audio stream, in container order (``a:N`` in FFmpeg's terms).
    """

    source: str
    format_name: str
    duration_seconds: float | None
    start_seconds: float
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None
    audio_streams: tuple[AudioStreamInfo, ...]


def probe(source: MediaSource) -> MediaInfo:
    """Describe the streams of a media file.

    Decodes only the first video frame (for the rotation and to prove the stream decodes) and
    demuxes the first `VFR_SCAN_PACKETS` packets (for variable-frame-rate detection).

    Args:
        source: local path or seekable binary file-like object.

    Returns:
        `MediaInfo`; `video` and `audio` are None when the file has no such stream.

    Raises:
        MediaError: the file cannot be read, is truncated, or its video stream has no frame.
    """
    with open_input(source) as container:
        return _probe_container(container, source_name(source), _source_size(source))


def probe_video(source: MediaSource) -> MediaInfo:
    """`probe`, and raise `MediaError` unless the file is a video with a decodable stream."""
    info = probe(source)
    if info.video is None:
        if info.audio_streams:
            found = f"only {len(info.audio_streams)} audio stream(s)"
        else:
            found = "no stream at all: an empty or zero-frame file"
        raise MediaError(
            f"{info.source} is not a video file (no video stream found; {found}); {VIDEO_HINT}"
        )
    return info


def _source_size(source: MediaSource) -> int | None:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    try:
        position = source.tell()
        size = source.seek(0, os.SEEK_END)
        source.seek(position)
    except (OSError, ValueError):
        return None
    return size


def _probe_container(container: InputContainer, name: str, size: int | None) -> MediaInfo:
    format_name = container.format.name
    if is_still_image_format(format_name):
        raise MediaError(
            f"{name} is a still image (format {format_name!r}), not a video; {VIDEO_HINT}"
        )
    _check_not_truncated(container, name, size)
    start_seconds = container.start_time / av.time_base if container.start_time else 0.0
    duration = container.duration / av.time_base if container.duration else None

    video_streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    video = _probe_video_stream(container, video_streams[0], name) if video_streams else None
    audio_streams = tuple(_probe_audio_stream(s, duration) for s in container.streams.audio)
    default_audio = next(
        (
            info
            for info, stream in zip(audio_streams, container.streams.audio, strict=True)
            if stream.disposition & av.stream.Disposition.default
        ),
        audio_streams[0] if audio_streams else None,
    )
    return MediaInfo(
        source=name,
        format_name=format_name,
        duration_seconds=duration,
        start_seconds=start_seconds,
        video=video,
        audio=default_audio,
        audio_streams=audio_streams,
    )


def _check_not_truncated(container: InputContainer, name: str, size: int | None) -> None:
    """Containers with an index up front (MP4/MOV with faststart) say where every packet is."""
    if not size:
        return
    for stream in container.streams:
        entries = stream.index_entries
        if not len(entries):
            continue
        end = max(entry.pos + entry.size for entry in entries)
        if end > size:
            raise MediaError(
                f"{name} is truncated: its index places {stream.type} stream #{stream.index} "
                f"data up to byte {end:,} but the file has {size:,} bytes; the upload or copy was "
                f"cut short, give the complete file"
            )


def _probe_video_stream(
    container: InputContainer, stream: av.video.stream.VideoStream, name: str
) -> VideoStreamInfo:
    codec = stream.codec_context.name
    label = f"{name}: video stream #{stream.index} ({codec})"
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise MediaError(f"{label} has no time base; remux it (e.g. to MP4) and try again")

    first_frame, packet_pts = _scan_packets(container, stream, label)
    if first_frame is None:
        raise MediaError(
            f"{label} has no decodable frame (a zero-frame or corrupt video); {VIDEO_HINT} "
            f"with at least one frame"
        )
    rotation = _normalise_rotation(first_frame.rotation, label)
    start_pts = first_frame.pts
    if start_pts is None:
        start_pts = stream.start_time or 0
    is_vfr = _is_variable_frame_rate(packet_pts)
    frame_rate = _frame_rate(stream, is_vfr, label)

    tagged_duration = _stream_duration(stream, float(start_pts * time_base))
    if tagged_duration is not None:
        duration = tagged_duration
    elif container.duration:
        container_start = container.start_time or 0
        duration = container.duration / av.time_base - float(
            start_pts * time_base - Fraction(container_start, av.time_base)
        )
    else:
        duration = 0.0
    num_frames, exact = max(1, round(duration * frame_rate)), False
    if stream.frames > 0 and (not duration or abs(stream.frames - duration * frame_rate) <= 1):
        num_frames, exact = stream.frames, True
    elif stream.frames > 0:  # e.g. an edit list hides frames of a file cut with "-c copy"
        logger.debug(
            "%s: %d stored frames but %.3f s shown; counting %d",
            label,
            stream.frames,
            duration,
            num_frames,
        )
    if not duration:
        duration = float(num_frames / frame_rate)

    width, height = stream.codec_context.width, stream.codec_context.height
    pixel_aspect = stream.sample_aspect_ratio
    if pixel_aspect and pixel_aspect > 0 and pixel_aspect != 1:  # non-square pixels
        width = max(1, round(width * pixel_aspect))
    if rotation in (90, 270):
        width, height = height, width
    return VideoStreamInfo(
        index=stream.index,
        codec=codec,
        pix_fmt=stream.codec_context.pix_fmt,
        width=width,
        height=height,
        rotation=rotation,
        frame_rate=frame_rate,
        num_frames=num_frames,
        num_frames_exact=exact,
        duration_seconds=duration,
        is_variable_frame_rate=is_vfr,
        start_seconds=float(start_pts * time_base),
        time_base=time_base,
        start_pts=start_pts,
    )


def _scan_packets(
    container: InputContainer, stream: av.video.stream.VideoStream, label: str
) -> tuple[av.VideoFrame | None, list[int]]:
    """Decode up to the first frame; collect packet pts of the first `VFR_SCAN_PACKETS`."""
    packet_pts: list[int] = []
    first_frame = None
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and not packet.is_discard:
                packet_pts.append(packet.pts)
            if first_frame is None:
                frames = packet.decode()
                if frames:
                    first_frame = frames[0]
            if first_frame is not None and len(packet_pts) >= VFR_SCAN_PACKETS:
                break
    except av.error.FFmpegError as err:
        raise MediaError(
            f"{label} could not be decoded ({err.strerror or err}); the file is corrupt or "
            f"truncated, give a complete video"
        ) from err
    return first_frame, packet_pts


def _is_variable_frame_rate(packet_pts: list[int]) -> bool:
    """Unevenly spaced timestamps: beyond one tick of rounding and 2 % of the typical step."""
    times = sorted(set(packet_pts))
    if len(times) < 3:
        return False
    steps = sorted(b - a for a, b in pairwise(times))
    typical = steps[len(steps) // 2]
    tolerance = max(1, typical // 50)
    return steps[-1] - typical > tolerance or typical - steps[0] > tolerance


def _frame_rate(stream: av.video.stream.VideoStream, is_vfr: bool, label: str) -> Fraction:
    """The exact rate: the average rate, or the nominal one when they agree (CFR)."""

    def valid(rate: Fraction | None) -> bool:
        return rate is not None and 0 < rate <= 1000

    average, guessed = stream.average_rate, stream.guessed_rate
    if valid(average) and valid(guessed) and not is_vfr and abs(average / guessed - 1) < 0.002:
        return Fraction(guessed)
    for rate in (average, guessed, stream.base_rate):
        if valid(rate):
            return Fraction(rate)
    raise MediaError(
        f"{label} has no usable frame rate (average {average}, guessed {guessed}); "
        f"re-encode it at a constant frame rate"
    )


def _normalise_rotation(degrees: float, label: str) -> int:
    rotation = round(degrees / 90) * 90 % 360
    if abs(((degrees - rotation) + 180) % 360 - 180) > 1:
        logger.warning(
            "%s: display rotation %.1f degrees is not a multiple of 90; using %d",
            label,
            degrees,
            rotation,
        )
    return rotation


def _probe_audio_stream(
    stream: av.audio.stream.AudioStream, container_duration: float | None
) -> AudioStreamInfo:
    time_base = stream.time_base or Fraction(1, stream.sample_rate or 1)
    start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
    duration = _stream_duration(stream, start)
    if duration is None and container_duration:
        duration = container_duration - start
    layout = stream.layout.name if stream.layout is not None else ""
    if not layout or layout.endswith("channels"):  # order unspecified: name the usual layout
        layout = _USUAL_LAYOUTS.get(stream.channels, layout)
    return AudioStreamInfo(
        index=stream.index,
        codec=stream.codec_context.name,
        sample_rate=stream.sample_rate,
        channels=stream.channels,
        layout=layout,
        duration_seconds=duration,
        start_seconds=start,
    )


def _stream_duration(stream: av.stream.Stream, start_seconds: float) -> float | None:
    """The stream's own duration: from the container, or Matroska's ``DURATION`` tag (which
    holds the stream's end time)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            end = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            return max(0.0, end - start_seconds)
        except ValueError:
            logger.debug("stream #%d: unreadable DURATION tag %r", stream.index, tag)
    return None
