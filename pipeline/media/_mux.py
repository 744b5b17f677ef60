"""Joining encoded segments (PyAV's FFmpeg libraries) and adding an audio track (the ffmpeg
binary), both by stream copy."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import av
import ffmpeg

from ._errors import MediaError
from ._ffmpeg import run_ffmpeg
from ._files import commit, discard, muxer_for, temp_path_for
from ._probe import AudioStreamInfo, MediaInfo, VideoStreamInfo, probe, probe_video

logger = logging.getLogger(__name__)

#: "video": the output lasts exactly as long as the video (audio trimmed or padded with
#: silence); "shortest": video and audio are both cut to the shorter of the two.
LengthPolicy = Literal["video", "shortest"]
LENGTH_POLICIES: tuple[str, ...] = get_args(LengthPolicy)

#: Muxed audio is resampled/downmixed to this, which AAC in MP4 plays everywhere.
AUDIO_SAMPLE_RATE = 48_000
AUDIO_LAYOUT = "stereo"


@dataclass(frozen=True)
class MuxResult:
    """What `mux_audio` wrote.

    Attributes:
        dest: the output file.
        has_audio: whether an audio track was written.
        reason: why there is no audio track (None when there is one).
        audio_offset_seconds: output time at which the audio source's t=0 plays (the driving
            video's first frame, or an audio file's start).
        duration_seconds: duration of the output video stream.
    """

    dest: Path
    has_audio: bool
    reason: str | None
    audio_offset_seconds: float
    duration_seconds: float


def concat_segments(
    segment_paths: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
) -> int:
    """Join video segments into one file without re-encoding (FFmpeg's concat demuxer, stream
    copy), in this process through PyAV's FFmpeg libraries: no ffmpeg binary needed.

    The segments must share codec, size, pixel format and frame rate (as written by
    `VideoEncoder` with one set of settings). The result has every frame of every segment, the
    exact frame rate and continuous timestamps; it appears at `dest` only when complete.

    Args:
        segment_paths: the segments, in order.
        dest: output file (.mp4, .m4v, .mov or .mkv).

    Returns:
        the number of frames in `dest`.

    Raises:
        MediaError: a segment is missing, unreadable or differs from the first, or the join
            failed.
    """
    if not segment_paths:
        raise ValueError("segment_paths is empty; give at least one segment")
    dest = Path(dest)
    muxer = muxer_for(dest)
    segments = [Path(p).resolve() for p in segment_paths]
    infos = [_segment_info(path) for path in segments]
    _check_compatible(segments, infos)
    expected = sum(info.num_frames for info in infos)

    dest.parent.mkdir(parents=True, exist_ok=True)
    listing = temp_path_for(dest).with_suffix(".ffconcat")
    temp = temp_path_for(dest)
    try:
        listing.write_text(
            "ffconcat version 1.0\n" + "".join(f"file {_quote(p)}\n" for p in segments),
            encoding="utf-8",
        )
        _remux(listing, temp, muxer, what=f"concatenating {len(segments)} segments into {dest}")
        written = probe_video(temp).video
        assert written is not None
        if written.num_frames != expected:
            raise MediaError(
                f"{dest}: concatenation wrote {written.num_frames} frames, expected {expected} "
                f"(the sum over {len(segments)} segments); the segments may be damaged"
            )
        commit(temp, dest)
    finally:
        discard(listing)
        discard(temp)
    logger.debug("%s: %d segments, %d frames", dest, len(segments), expected)
    return expected


def mux_audio(
    video_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    audio_source: str | os.PathLike[str] | None,
    audio_stream: Literal["auto"] | int = "auto",
    length_policy: LengthPolicy = "video",
    audio_codec: str = "aac",
    audio_bitrate: str = "192k",
    offset_seconds: float = 0.0,
    ffmpeg_binary: str | None = None,
) -> MuxResult:
    """Copy the video stream of `video_path` and add audio from `audio_source` into `dest`.

    The audio is aligned so that the audio source's t=0 plays at output time
    `offset_seconds`; for a video source (the driving video) t=0 is its first video frame, so
    an offset between its audio and video streams is kept. It is resampled to 48 kHz stereo
    (mono is duplicated, 5.1 downmixed) and encoded with `audio_codec`.

    Args:
        video_path: the rendered video (its video stream is copied, not re-encoded).
        dest: output file (.mp4, .m4v, .mov or .mkv); appears only when complete.
        audio_source: a separate audio file, or the driving video; None: video only.
        audio_stream: "auto" (the stream players pick) or the index among the source's audio
            streams (FFmpeg's ``a:N``).
        length_policy: "video": audio trimmed or padded with silence to the video's duration;
            "shortest": both cut to the shorter (a copied stream with B-frames can only be cut
            at packet boundaries: the video may keep up to a few frames more).
        audio_codec: FFmpeg audio encoder.
        audio_bitrate: audio bitrate, e.g. "192k".
        offset_seconds: output time at which the audio source's t=0 plays (e.g. when the
            rendered video starts with extra frames before the driving video's first frame).
        ffmpeg_binary: ffmpeg executable; None: PATH, then imageio-ffmpeg's.

    Returns:
        `MuxResult`; ``has_audio`` is False (with the reason) when `audio_source` is None or
        has no audio stream: the video is then written alone.

    Raises:
        MediaError: an input is unreadable, the audio stream does not exist, or ffmpeg failed.
    """
    # 1. The arguments, and the rendered video's duration and start.
    settings = _AudioSettings(length_policy, audio_codec, audio_bitrate, offset_seconds)
    dest = Path(dest)
    muxer = muxer_for(dest)
    video = probe_video(video_path).video
    assert video is not None
    video_seconds = _video_seconds(video)

    # 2. The audio stream to add, or the reason there is none.
    audio = _find_audio(audio_source, audio_stream)

    # 3. Write the video with its aligned audio (or alone) to a temporary file; commit it whole.
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(dest)
    video_input = ffmpeg.input(str(video_path))
    try:
        if isinstance(audio, _Audio):
            command = _audio_command(video_input, temp, muxer, audio, video, settings)
            run_ffmpeg(
                command,
                binary=ffmpeg_binary,
                what=f"muxing audio into {dest}",
                global_args=("-copyts",),  # timestamps as probed: the shift is all ours
            )
        else:
            logger.info("%s: writing the video without audio (%s)", dest, audio)
            command = video_input.video.output(str(temp), c="copy", movflags="+faststart", f=muxer)
            run_ffmpeg(command, binary=ffmpeg_binary, what=f"writing {dest}")
        commit(temp, dest)
    finally:
        discard(temp)

    # 4. What was written.
    return MuxResult(
        dest=dest,
        has_audio=isinstance(audio, _Audio),
        reason=None if isinstance(audio, _Audio) else audio,
        audio_offset_seconds=offset_seconds,
        duration_seconds=video_seconds,
    )


@dataclass(frozen=True)
class _AudioSettings:
    """How `mux_audio` fits the audio to the video and encodes it (its arguments of the same
    names)."""

    length_policy: LengthPolicy
    codec: str
    bitrate: str
    offset_seconds: float

    def __post_init__(self) -> None:
        if self.length_policy not in LENGTH_POLICIES:
            raise ValueError(
                f"Invalid length_policy ({self.length_policy!r}). Supported values are "
                f"{', '.join(LENGTH_POLICIES)}."
            )


@dataclass(frozen=True)
class _Audio:
    """The audio stream `mux_audio` adds: the file it is read from, that file's facts, the
    stream."""

    path: str
    source: MediaInfo
    stream: AudioStreamInfo


def _find_audio(
    audio_source: str | os.PathLike[str] | None, audio_stream: Literal["auto"] | int
) -> _Audio | str:
    """The audio stream to add, or the reason the output has none."""
    if audio_source is None:
        return "no audio source was given"
    source = probe(audio_source)
    stream = _pick_audio_stream(source, audio_stream)
    if stream is None:
        return f"{source.source} has no audio stream"
    return _Audio(os.fspath(audio_source), source, stream)


def _audio_command(
    video_input: ffmpeg.nodes.FilterableStream,
    temp: Path,
    muxer: str,
    audio: _Audio,
    video: VideoStreamInfo,
    settings: _AudioSettings,
) -> ffmpeg.nodes.OutputStream:
    """The ffmpeg command: video copied; audio shifted, resampled, padded/trimmed, encoded.

    It runs with ``-copyts``, so the audio reaches the filters with the timestamps `probe`
    read (ffmpeg's default shift by an input's start time depends on its version and on which
    streams are used). The source's t=0 (its first video frame; for an audio file, its start)
    is moved to `offset_seconds`. (Offsets are from the rendered video's first frame, which
    `VideoEncoder` and `concat_segments` put at 0.)
    """
    source = audio.source
    zero = source.video.start_seconds if source.video else source.start_seconds
    shift = settings.offset_seconds - zero
    video_seconds = _video_seconds(video)
    shortest = settings.length_policy == "shortest"
    cut = _shortest_cut(audio, shift, video_seconds) if shortest else None
    seconds = video_seconds if cut is None else cut
    aligned = _aligned_audio(
        audio,
        shift=shift,
        video_start_seconds=video.start_seconds,
        num_samples=round(seconds * AUDIO_SAMPLE_RATE),
    )
    return ffmpeg.output(
        video_input.video,
        aligned,
        str(temp),
        vcodec="copy",
        acodec=settings.codec,
        audio_bitrate=settings.bitrate,
        movflags="+faststart",
        f=muxer,
        **({} if cut is None else {"t": f"{cut:.6f}"}),
    )


def _shortest_cut(audio: _Audio, shift: float, video_seconds: float) -> float | None:
    """Where length_policy="shortest" cuts the output: the shifted audio's end when it comes
    before the video's (None: the output keeps the video's duration)."""
    audio_end = _audio_end(audio.stream)
    if audio_end is None:
        return None
    audio_end += shift
    if audio_end >= video_seconds:
        return None
    if audio_end <= 0:
        raise MediaError(
            f"{audio.source.source}: audio stream #{audio.stream.index} ends at {audio_end:.3f} "
            f"s, before the video starts; nothing is left with length_policy='shortest'"
        )
    return audio_end


def _aligned_audio(
    audio: _Audio, *, shift: float, video_start_seconds: float, num_samples: int
) -> ffmpeg.nodes.FilterableStream:
    """The audio stream moved by `shift` seconds, resampled to 48 kHz stereo and made exactly
    `num_samples` long: ``aresample=first_pts`` pads the start with silence (audio starting
    late) or cuts what lies before the video's start, and ``apad`` + ``atrim`` fix the length
    to the sample."""
    return (
        ffmpeg.input(audio.path)[str(audio.stream.index)]
        .filter("asetpts", f"PTS+({shift + video_start_seconds:.6f})/TB")
        .filter(
            "aresample",
            AUDIO_SAMPLE_RATE,
            **{"async": 1, "first_pts": round(video_start_seconds * AUDIO_SAMPLE_RATE)},
        )
        .filter(
            "aformat",
            sample_fmts="fltp",
            sample_rates=AUDIO_SAMPLE_RATE,
            channel_layouts=AUDIO_LAYOUT,
        )
        .filter("apad", whole_len=num_samples)
        .filter("atrim", end_sample=num_samples)
    )


def _audio_end(stream: AudioStreamInfo) -> float | None:
    """End time of the audio stream, on its file's timeline."""
    if stream.duration_seconds is None:
        return None
    return stream.start_seconds + stream.duration_seconds


def _pick_audio_stream(
    info: MediaInfo, audio_stream: Literal["auto"] | int
) -> AudioStreamInfo | None:
    if audio_stream == "auto":
        return info.audio
    if not isinstance(audio_stream, int) or isinstance(audio_stream, bool):
        raise ValueError(f"audio_stream = {audio_stream!r} must be 'auto' or an int.")
    if not 0 <= audio_stream < len(info.audio_streams):
        raise MediaError(
            f"{info.source}: audio stream a:{audio_stream} does not exist (the file has "
            f"{len(info.audio_streams)} audio stream(s)); use audio_stream='auto' or an index "
            f"below {len(info.audio_streams)}"
        )
    return info.audio_streams[audio_stream]


def _video_seconds(video: VideoStreamInfo) -> float:
    if video.num_frames_exact:
        return float(video.num_frames / video.frame_rate)
    return video.duration_seconds


def _remux(listing: Path, dest: Path, muxer: str, *, what: str) -> None:
    """Copy the video packets the concat demuxer reads from ``listing`` into ``dest`` (the
    demuxer offsets each file's timestamps by the files before it)."""
    try:
        with av.open(str(listing), format="concat", options={"safe": "0"}) as source:
            stream = source.streams.video[0]
            with av.open(
                str(dest), "w", format=muxer, options={"movflags": "+faststart"}
            ) as target:
                copy = target.add_stream_from_template(stream)
                for packet in source.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = copy
                    target.mux(packet)
    except (av.FFmpegError, OSError) as err:
        raise MediaError(f"{what} failed: {err}") from err


def _segment_info(path: Path) -> VideoStreamInfo:
    info = probe_video(path).video
    assert info is not None
    if not info.num_frames_exact:
        raise MediaError(
            f"{path}: segment does not store its frame count; write segments as MP4/MOV with "
            f"VideoEncoder"
        )
    return info


def _check_compatible(paths: Sequence[Path], infos: Sequence[VideoStreamInfo]) -> None:
    def key(info: VideoStreamInfo) -> tuple[object, ...]:
        return (info.codec, info.width, info.height, info.pix_fmt, info.frame_rate, info.rotation)

    first = key(infos[0])
    for path, info in zip(paths[1:], infos[1:], strict=True):
        if key(info) != first:
            raise MediaError(
                f"{path}: segment differs from {paths[0]} (codec, width, height, pix_fmt, "
                f"frame_rate, rotation = {key(info)} vs {first}); segments must be encoded "
                f"with the same settings"
            )


def _quote(path: Path) -> str:
    """A path quoted for an ffconcat file (single quotes; ' becomes '\\'')."""
    return "'" + str(path).replace("'", "'\\''") + "'"
