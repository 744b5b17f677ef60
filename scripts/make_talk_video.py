"""Generate a long driving video for the overnight example: a synthetic talk (no downloads).

A face talks in phrases with pauses, turns its head now and then and blinks; the voice follows
the mouth. Deterministic, so reruns of the render job find the same input (and resume).

    python -m scripts.make_talk_video                   # 20 s, 25 fps, 128x128: ~100 KB, seconds
    python -m scripts.make_talk_video --seconds 3600    # an hour, to try a real overnight run

Writes ``manifests/overnight/media/talk.mp4`` (git-ignored), which ``manifests/overnight/talk.csv``
points to. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.media import VideoEncoder, mux_audio
from scripts.make_example_media import PALETTE_DRIVER, Pose, draw_face, voiced_audio

logger = logging.getLogger("make_talk_video")

FRAME_RATE = Fraction(25)
SIZE = 128
SAMPLE_RATE = 16_000
PHRASE_SECONDS = 4.0  # speech for 3.2 s, then a 0.8 s pause


def mouth_opening(t: float) -> float:
    """0..1: syllables at ~4 Hz inside each phrase, closed in the pauses."""
    if t % PHRASE_SECONDS > PHRASE_SECONDS - 0.8:
        return 0.0
    return max(0.0, math.sin(2 * math.pi * 4.0 * t)) ** 2 * (0.6 + 0.4 * math.sin(0.9 * t) ** 2)


def talk_pose(k: int) -> Pose:
    t = float(k / FRAME_RATE)
    return Pose(
        x=0.04 * math.sin(2 * math.pi * 0.11 * t),
        y=0.015 * math.sin(2 * math.pi * 0.37 * t),
        turn=0.6 * math.sin(2 * math.pi * 0.07 * t) ** 3,
        mouth_open=mouth_opening(t),
        eyes_open=0.0 if (t % 3.3) < 0.12 else 1.0,
    )


def write_voice(path: Path, seconds: float) -> None:
    """The voice as 16-bit mono WAV, written block by block (an hour fits in little memory)."""
    block = 10 * SAMPLE_RATE
    total = round(seconds * SAMPLE_RATE)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        for start in range(0, total, block):
            t = np.arange(start, min(start + block, total)) / SAMPLE_RATE
            envelope = np.array([mouth_opening(x) for x in t])
            # the pitch glide restarts every block; inaudible in a synthetic voice
            samples = voiced_audio(envelope, SAMPLE_RATE, pitch_hz=120.0)
            pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
            wav.writeframes(pcm.tobytes())


def make_talk(path: Path, seconds: float) -> int:
    """Write the talk video to `path`; returns its number of frames."""
    frames = round(seconds * FRAME_RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        silent, voice = Path(scratch) / "video.mp4", Path(scratch) / "voice.wav"
        write_voice(voice, float(frames / FRAME_RATE))
        with VideoEncoder(
            silent, frame_rate=FRAME_RATE, width=SIZE, height=SIZE, crf=30, preset="medium"
        ) as encoder:
            for k in range(frames):
                encoder.add_frames(np.asarray(draw_face(SIZE, PALETTE_DRIVER, talk_pose(k))))
        mux_audio(silent, path, audio_source=voice, audio_bitrate="24k")
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the talk")
    parser.add_argument("--out", type=Path, default=Path("manifests/overnight/media/talk.mp4"))
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds={args.seconds} must be positive")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames = make_talk(args.out, args.seconds)
    logger.info(
        "wrote %s: %d frames at %s fps (%.0f KB)",
        args.out,
        frames,
        FRAME_RATE,
        args.out.stat().st_size / 1024,
    )


if __name__ == "__main__":
    main()
