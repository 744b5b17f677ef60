"""Generate the small sample media behind `manifests/example.csv` (deterministic, no downloads).

Writes, under ``manifests/``:
    media/portrait_a.png, media/portrait_b.png   512x512 synthetic face-like portraits
    media/driving.mp4    ~3 s, 30000/1001 fps, 256x256 H.264 + AAC: a face that sways, turns,
                         blinks and opens its mouth in time with a voiced tone
    media/speech.wav     ~2 s mono 16 kHz speech-like audio (a separate audio track)
    example.csv          id,portrait,driving_video,audio (paths relative to the CSV)

Usage (from the repository root): python -m scripts.make_example_media [--out-dir manifests]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.media import VideoEncoder, mux_audio

logger = logging.getLogger("make_example_media")

DRIVING_FRAME_RATE = Fraction(30000, 1001)
DRIVING_FRAMES = 90  # 3.003 s
DRIVING_SIZE = 256
PORTRAIT_SIZE = 512
SUPERSAMPLE = 2  # shapes are drawn at 2x and downscaled: PIL draws without anti-aliasing


@dataclass(frozen=True)
class Palette:
    """Colours of one synthetic person."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    shirt: tuple[int, int, int]


PALETTE_A = Palette(
    background=(196, 214, 230),
    skin=(233, 190, 160),
    hair=(74, 48, 32),
    iris=(70, 110, 60),
    lips=(180, 80, 80),
    shirt=(60, 90, 150),
)
PALETTE_B = Palette(
    background=(232, 222, 196),
    skin=(150, 104, 76),
    hair=(24, 22, 24),
    iris=(60, 40, 30),
    lips=(120, 56, 56),
    shirt=(150, 50, 60),
)
PALETTE_DRIVER = Palette(
    background=(210, 210, 210),
    skin=(220, 176, 140),
    hair=(110, 80, 40),
    iris=(40, 70, 120),
    lips=(170, 70, 70),
    shirt=(70, 120, 90),
)


@dataclass(frozen=True)
class Pose:
    """Head pose and expression, in fractions of the image size."""

    x: float = 0.0  # horizontal offset of the head centre
    y: float = 0.0  # vertical offset of the head centre
    turn: float = 0.0  # -1 (turned to its right) .. 1 (turned to its left)
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    eyes_open: float = 1.0  # 0 closed (blink) .. 1 open


def draw_face(size: int, palette: Palette, pose: Pose) -> Image.Image:
    """A head-and-shoulders cartoon face, size x size RGB."""
    s = size * SUPERSAMPLE
    image = Image.new("RGB", (s, s), palette.background)
    draw = ImageDraw.Draw(image)
    cx, cy = s * (0.5 + pose.x), s * (0.45 + pose.y)
    head_w, head_h = s * 0.30 * (1 - 0.12 * abs(pose.turn)), s * 0.38

    def box(x: float, y: float, half_w: float, half_h: float) -> tuple[float, ...]:
        return (x - half_w, y - half_h, x + half_w, y + half_h)

    draw.ellipse(box(s * 0.5 + pose.x * s * 0.5, s * 1.02, s * 0.42, s * 0.22), fill=palette.shirt)
    draw.rectangle(box(cx, cy + head_h * 0.9, head_w * 0.35, head_h * 0.35), fill=palette.skin)
    draw.ellipse(box(cx, cy - head_h * 0.12, head_w * 1.08, head_h * 0.95), fill=palette.hair)
    draw.ellipse(box(cx, cy, head_w, head_h), fill=palette.skin)
    draw.chord(
        box(cx, cy - head_h * 0.35, head_w * 1.02, head_h * 0.7), 180, 360, fill=palette.hair
    )

    shift = pose.turn * head_w * 0.35  # features slide towards the side the head turns to
    eye_y, eye_dx = cy - head_h * 0.05, head_w * 0.42
    for side in (-1, 1):
        near = 1 + 0.25 * pose.turn * side  # the eye on the turned-away side looks narrower
        ex = cx + shift + side * eye_dx * (1 + 0.2 * pose.turn * side)
        half_w, half_h = head_w * 0.17 * near, head_h * 0.08 * max(pose.eyes_open, 0.08)
        draw.ellipse(box(ex, eye_y, half_w, half_h), fill=(250, 250, 250))
        if pose.eyes_open > 0.3:
            draw.ellipse(
                box(ex + shift * 0.15, eye_y, half_h * 0.9, half_h * 0.9), fill=palette.iris
            )
        brow = box(ex, eye_y - head_h * 0.16, half_w * 1.1, head_h * 0.025)
        draw.rectangle(brow, fill=palette.hair)
    nose_x = cx + shift * 1.3
    draw.polygon(
        [
            (nose_x, eye_y + head_h * 0.05),
            (nose_x - head_w * 0.09, cy + head_h * 0.28),
            (nose_x + head_w * 0.09, cy + head_h * 0.28),
        ],
        fill=tuple(int(c * 0.85) for c in palette.skin),
    )
    mouth_y = cy + head_h * 0.52
    mouth_w = head_w * 0.38
    mouth_h = head_h * (0.035 + 0.16 * pose.mouth_open)
    draw.ellipse(box(cx + shift * 1.1, mouth_y, mouth_w, mouth_h), fill=palette.lips)
    if pose.mouth_open > 0.1:
        inner = box(cx + shift * 1.1, mouth_y, mouth_w * 0.8, mouth_h * 0.65)
        draw.ellipse(inner, fill=(60, 20, 25))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def driving_pose(k: int) -> Pose:
    """The driver's pose at frame k: sway, a slow head turn, blinks and mouth movement."""
    t = float(k / DRIVING_FRAME_RATE)
    return Pose(
        x=0.06 * math.sin(2 * math.pi * 0.5 * t),
        y=0.02 * math.sin(2 * math.pi * 0.9 * t),
        turn=0.8 * math.sin(2 * math.pi * 0.33 * t),
        mouth_open=mouth_opening(t),
        eyes_open=0.0 if (t % 1.4) < 0.1 else 1.0,
    )


def mouth_opening(t: float) -> float:
    """0..1, "syllables" at ~3 Hz; the driving video's audio follows the same envelope."""
    return max(0.0, math.sin(2 * math.pi * 3.0 * t)) ** 2 if 0.4 < t < 2.7 else 0.0


def voiced_audio(envelope: np.ndarray, sample_rate: int, pitch_hz: float) -> np.ndarray:
    """A vowel-like signal: harmonics of a slowly gliding pitch, shaped by `envelope` (0..1)."""
    t = np.arange(envelope.size) / sample_rate
    pitch = pitch_hz * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    tone = sum(np.sin(h * phase) / h for h in range(1, 6))
    return 0.4 * envelope * tone / 1.5


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())


def make_portraits(media_dir: Path) -> None:
    for name, palette, pose in (
        ("portrait_a.png", PALETTE_A, Pose()),
        ("portrait_b.png", PALETTE_B, Pose(turn=-0.15, mouth_open=0.15)),
    ):
        draw_face(PORTRAIT_SIZE, palette, pose).save(media_dir / name, optimize=True)


def make_driving_video(media_dir: Path) -> None:
    sample_rate = 44_100
    duration = float(DRIVING_FRAMES / DRIVING_FRAME_RATE)
    t = np.arange(round(duration * sample_rate)) / sample_rate
    envelope = np.array([mouth_opening(x) for x in t])
    with tempfile.TemporaryDirectory(dir=media_dir) as scratch:
        silent, tone = Path(scratch) / "video.mp4", Path(scratch) / "voice.wav"
        write_wav(tone, voiced_audio(envelope, sample_rate, pitch_hz=140.0), sample_rate)
        with VideoEncoder(
            silent,
            frame_rate=DRIVING_FRAME_RATE,
            width=DRIVING_SIZE,
            height=DRIVING_SIZE,
            crf=26,
            preset="slow",
        ) as encoder:
            for k in range(DRIVING_FRAMES):
                frame = draw_face(DRIVING_SIZE, PALETTE_DRIVER, driving_pose(k))
                encoder.add_frames(np.asarray(frame))
        mux_audio(silent, media_dir / "driving.mp4", audio_source=tone, audio_bitrate="64k")


def make_speech(media_dir: Path) -> None:
    sample_rate = 16_000
    t = np.arange(2 * sample_rate) / sample_rate
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2 * (t > 0.2) * (t < 1.8)
    write_wav(media_dir / "speech.wav", voiced_audio(syllables, sample_rate, 200.0), sample_rate)


def make_manifest(out_dir: Path) -> None:
    rows = [
        ("a_driving", "media/portrait_a.png", "media/driving.mp4", ""),
        ("b_driving", "media/portrait_b.png", "media/driving.mp4", ""),
        ("b_speech", "media/portrait_b.png", "media/driving.mp4", "media/speech.wav"),
    ]
    with open(out_dir / "example.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("id", "portrait", "driving_video", "audio"))
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parents[1] / "manifests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    media_dir = args.out_dir / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    make_portraits(media_dir)
    make_driving_video(media_dir)
    make_speech(media_dir)
    make_manifest(args.out_dir)
    total = sum(p.stat().st_size for p in media_dir.iterdir())
    logger.info(
        "wrote %s and %s (%.0f KB of media)", args.out_dir / "example.csv", media_dir, total / 1024
    )


if __name__ == "__main__":
    main()
