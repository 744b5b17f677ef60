"""Test media made with the ffmpeg binary and PyAV directly (independent of pipeline.media).

Frames of the "numbered" videos carry their index as two grey blocks, so a test can tell
which source frame a reader returned (`frame_number`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

FFMPEG = shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str | Path) -> None:
    """Run the ffmpeg binary quietly; raise with its stderr on failure."""
    command = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{command} failed:\n{result.stderr}")


def pattern_video(
    path: Path,
    *,
    frames: int,
    rate: str = "25",
    size: str = "64x48",
    gop: int = 250,
    audio: str | None = None,
    preset: str = "ultrafast",
) -> Path:
    """H.264 video of lavfi testsrc2; `audio`, if given, is a lavfi audio source spec."""
    args: list[str | Path] = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", audio, "-c:a", "aac", "-shortest"]
    args += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", preset, "-g", str(gop)]
    ffmpeg(*args, "-pix_fmt", "yuv420p", path)
    return path


def number_image(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(H, W, 3) uint8 grey image encoding `index` (0..255) as two blocks."""
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2] = (index % 16) * 16 + 8
    image[height // 2 :] = (index // 16) * 16 + 8
    return image


def frame_number(image: np.ndarray) -> int:
    """Inverse of `number_image` (robust to compression noise)."""
    height = image.shape[0]
    low = int(round((float(image[: height // 2].mean()) - 8) / 16))
    high = int(round((float(image[height // 2 :].mean()) - 8) / 16))
    return high * 16 + low


def numbered_video(
    path: Path,
    *,
    pts: Sequence[int],
    time_base: Fraction,
    rate: Fraction | None = None,
    container_format: str = "mp4",
) -> Path:
    """A video whose frame i shows `number_image(i)` at presentation time pts[i] * time_base."""
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate or Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"crf": "1", "preset": "ultrafast"}
        for index, timestamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(number_image(index), format="rgb24")
            frame.pts, frame.time_base = timestamp, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def click_audio(
    path: Path,
    *,
    click_at: float,
    duration: float,
    sample_rate: int = 44100,
    layout: str = "mono",
) -> Path:
    """An audio file, silent but for a 2 ms click at `click_at` seconds, on every channel."""
    channels = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    expr = f"if(between(t,{click_at},{click_at}+0.002),0.9,0)"
    exprs = "|".join([expr] * channels)
    source = f"aevalsrc='{exprs}':c={layout}:s={sample_rate}:d={duration}"
    ffmpeg("-f", "lavfi", "-i", source, path)
    return path


def video_with_click(
    path: Path,
    *,
    duration: float,
    click_at: float,
    video_offset: float = 0.0,
    audio_offset: float = 0.0,
) -> Path:
    """25 fps H.264 + AAC video; its streams start at the given offsets (-itsoffset), and the
    audio has a click `click_at` seconds after the audio stream's own start."""
    expr = f"if(between(t,{click_at},{click_at}+0.002),0.9,0)"
    ffmpeg(
        "-itsoffset", str(video_offset),
        "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25:duration={duration}",
        "-itsoffset", str(audio_offset),
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s=44100:d={duration}",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", path,
    )  # fmt: skip
    return path


def decode_audio(path: Path) -> tuple[np.ndarray, float, int]:
    """(samples (channels, n) float, pts of the first sample in seconds, sample rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * frame.time_base)
            chunks.append(frame.to_ndarray().reshape(frame.layout.nb_channels, -1))
    return np.concatenate(chunks, axis=1), first or 0.0, stream.sample_rate


def click_time(path: Path) -> float:
    """Presentation time of the first sample above 0.3 in the first audio stream of `path`."""
    samples, first, sample_rate = decode_audio(path)
    index = int(np.argmax(np.abs(samples[0]) > 0.3))
    assert abs(samples[0, index]) > 0.3, f"{path}: no click found"
    return first + index / sample_rate


def decode_video(path: Path) -> tuple[np.ndarray, list[int]]:
    """Every frame as RGB (n, H, W, 3) with its pts, straight from PyAV (no rotation)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [f.pts for f in frames]
