"""What reproducible encodes cost: one segment encoded with and without the fixes.

    python -m scripts.bench_encode [--size 512] [--frames 96] [--rounds 3]

For each of M_PERTURB on/off and ``threads`` 4/0 (x264 picks), a fresh process encodes the same
synthetic frames with `pipeline.media.VideoEncoder` (preset medium, CRF 18) three times and
reports the best frames per second; the rounds repeat the whole set, so the spread of one setting
shows the machine's noise. "off" leaves glibc's allocator as it is (the fix not applied).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np


def frames_of(size: int, count: int, noise: float = 3.0) -> np.ndarray:
    """``count`` frames of a blob moving over a grey background, with Gaussian noise (uint8 RGB)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = []
    for i in range(count):
        cx, cy = 0.5 + 0.25 * np.sin(i / 5), 0.5 + 0.2 * np.cos(i / 7)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)[..., None]
        grain = rng.normal(0, noise, (size, size, 3))
        frames.append((blob * [200, 120, 60] + (1 - blob) * 40 + grain).clip(0, 255))
    return np.stack(frames).astype(np.uint8)


def encode_fps(perturb: bool, threads: int, size: int, count: int) -> float:
    """Best of 3 encodes in this process (the child)."""
    import pipeline.media._writer as writer  # noqa: PLC0415

    if not perturb:
        writer._steady_heap = lambda: False  # type: ignore[assignment] - the fix left out
    frames = frames_of(size, count)
    best = 0.0
    with TemporaryDirectory() as folder:
        for attempt in range(3):
            started = time.monotonic()
            path = Path(folder) / f"{attempt}.mp4"
            with writer.VideoEncoder(
                path, frame_rate=Fraction(25), width=size, height=size, threads=threads
            ) as encoder:
                for at in range(0, count, 4):
                    encoder.add_frames(frames[at : at + 4])
            best = max(best, count / (time.monotonic() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("PERTURB", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        perturb, threads = args.child[0] == "on", int(args.child[1])
        print(f"{encode_fps(perturb, threads, args.size, args.frames):.1f}")
        return 0
    settings = [("on", "4"), ("on", "0"), ("off", "4"), ("off", "0")]
    results: dict[tuple[str, str], list[str]] = {setting: [] for setting in settings}
    for _ in range(args.rounds):
        for setting in settings:
            child = [sys.executable, "-m", "scripts.bench_encode", "--size", str(args.size)]
            child += ["--frames", str(args.frames), "--child", *setting]
            results[setting].append(
                subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
            )
    print(
        f"{args.size}x{args.size}, {args.frames} frames, preset medium, CRF 18, best of 3 per process"
    )
    print("| M_PERTURB | threads | fps per round |\n|---|---|---|")
    for (perturb, threads), fps in results.items():
        print(f"| {perturb} | {threads} | {' / '.join(fps)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
