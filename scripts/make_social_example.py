"""Generate the social-batch example: 12 rows, 6 portraits x 2 short driving clips (no downloads).

Writes, under ``manifests/social/`` (committed; rerun to regenerate them exactly):
    media/portrait_{c,d,e,f}.png   256x256 synthetic portraits (a and b come from manifests/media/)
    media/nod.mp4                  2 s, 25 fps, 192x192 H.264 + AAC: a nod and a smile, with a voice
    media/laugh.mp4                1.6 s, 25 fps, 192x192 H.264 + AAC: a laugh, head tilted back
    social.csv                     every portrait with each clip, interleaved (a_nod, a_laugh, ...)

Usage (from the repository root): python -m scripts.make_social_example
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.media import VideoEncoder, mux_audio
from scripts.make_example_media import (
    PALETTE_DRIVER,
    Palette,
    Pose,
    draw_face,
    voiced_audio,
    write_wav,
)

logger = logging.getLogger("make_social_example")

CLIP_FRAME_RATE = Fraction(25)
CLIP_SIZE = 192
PORTRAIT_SIZE = 256
PORTRAITS = {
    "portrait_c.png": (
        Palette((180, 220, 200), (245, 205, 180), (200, 150, 60), (60, 90, 140), (200, 90, 100), (220, 180, 40)),
        Pose(turn=0.2),
    ),
    "portrait_d.png": (
        Palette((240, 200, 210), (120, 80, 60), (40, 30, 30), (50, 35, 25), (110, 50, 50), (40, 40, 40)),
        Pose(mouth_open=0.3),
    ),
    "portrait_e.png": (
        Palette((200, 200, 240), (225, 180, 150), (150, 150, 150), (90, 110, 130), (170, 90, 90), (120, 60, 140)),
        Pose(turn=-0.25, y=0.02),
    ),
    "portrait_f.png": (
        Palette((250, 240, 200), (190, 140, 100), (90, 40, 20), (40, 80, 50), (150, 60, 60), (30, 120, 140)),
        Pose(x=0.03),
    ),
}  # fmt: skip
#: (row id suffix, driving video relative to social.csv)
CLIPS = (("nod", "media/nod.mp4"), ("laugh", "media/laugh.mp4"))
#: (row id prefix, portrait relative to social.csv)
FACES = (
    ("a", "../media/portrait_a.png"),
    ("b", "../media/portrait_b.png"),
    *((name[-5], f"media/{name}") for name in PORTRAITS),
)


@dataclass(frozen=True)
class Clip:
    """A short driving clip: its length, its motion and its voice (the mouth follows the voice)."""

    frames: int
    pitch_hz: float
    mouth: Callable[[float], float]  # seconds -> 0..1
    pose: Callable[[float, float], Pose]  # (seconds, mouth) -> pose


def nod_mouth(t: float) -> float:
    return max(0.0, math.sin(2 * math.pi * 2.0 * t)) ** 2 if 0.5 < t < 1.8 else 0.0


def laugh_mouth(t: float) -> float:
    return 0.5 + 0.5 * max(0.0, math.sin(2 * math.pi * 4.5 * t)) if 0.2 < t < 1.4 else 0.0


CLIP_MEDIA = {
    "nod.mp4": Clip(  # a nod (down, up, down) with a smile opening towards the end
        frames=50,
        pitch_hz=210.0,
        mouth=nod_mouth,
        pose=lambda t, mouth: Pose(
            y=0.035 * math.sin(2 * math.pi * 1.0 * t),
            turn=0.15 * math.sin(2 * math.pi * 0.5 * t),
            mouth_open=mouth,
            eyes_open=0.0 if 1.0 < t < 1.08 else 1.0,
        ),
    ),
    "laugh.mp4": Clip(  # head tilted back and shaking, mouth wide, eyes squeezed
        frames=40,
        pitch_hz=260.0,
        mouth=laugh_mouth,
        pose=lambda t, mouth: Pose(
            x=0.02 * math.sin(2 * math.pi * 4.5 * t),
            y=-0.03 * min(1.0, 3 * t),
            turn=-0.1,
            mouth_open=mouth,
            eyes_open=0.2 if mouth > 0 else 1.0,
        ),
    ),
}


def make_clip(path: Path, clip: Clip) -> None:
    sample_rate = 22_050
    duration = float(clip.frames / CLIP_FRAME_RATE)
    t = np.arange(round(duration * sample_rate)) / sample_rate
    envelope = np.array([clip.mouth(x) for x in t])
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        silent, voice = Path(scratch) / "video.mp4", Path(scratch) / "voice.wav"
        write_wav(voice, voiced_audio(envelope, sample_rate, clip.pitch_hz), sample_rate)
        with VideoEncoder(
            silent,
            frame_rate=CLIP_FRAME_RATE,
            width=CLIP_SIZE,
            height=CLIP_SIZE,
            crf=28,
            preset="slow",
        ) as encoder:
            for k in range(clip.frames):
                seconds = float(k / CLIP_FRAME_RATE)
                pose = clip.pose(seconds, clip.mouth(seconds))
                encoder.add_frames(np.asarray(draw_face(CLIP_SIZE, PALETTE_DRIVER, pose)))
        mux_audio(silent, path, audio_source=voice, audio_bitrate="32k")


def write_manifest(path: Path) -> int:
    """Each portrait with each clip (a_nod, a_laugh, b_nod, ...); returns the row count."""
    rows = [
        (f"{face}_{clip}", portrait, video) for face, portrait in FACES for clip, video in CLIPS
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("id", "portrait", "driving_video"))
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("manifests/social"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    media = args.out_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    for name, (palette, pose) in PORTRAITS.items():
        draw_face(PORTRAIT_SIZE, palette, pose).save(media / name, optimize=True)
    for name, clip in CLIP_MEDIA.items():
        make_clip(media / name, clip)
    rows = write_manifest(args.out_dir / "social.csv")
    size = sum(path.stat().st_size for path in media.iterdir())
    logger.info(
        "wrote %s (%d rows) and %s (%.0f KB)", args.out_dir / "social.csv", rows, media, size / 1024
    )


if __name__ == "__main__":
    main()
