"""Generate a manifest of real-face inputs for measuring framing (no downloads).

Portraits are 1080x1350 "phone photos" with a real face in the upper third (scikit-image's
``astronaut``, public domain, placed and tinted differently per row); driving clips are 640x360,
25 fps, silent, the same face drifting across the frame and swaying, about 10 % of the frame's
width (a presenter far from the camera), phase-shifted per row so no row reuses another's
conditioning cache. Deterministic: the same arguments write the same files.

    python -m scripts.make_framing_manifest --rows 12 --frames 160 --out-dir /tmp/framing
    python -m scripts.make_framing_manifest --rows 2 --frames 75 --photo-format jpg \
        --out-dir manifests/framing        # the bundled example

Writes ``<out-dir>/framing.csv`` and ``<out-dir>/media/`` (photo_NN.png, drive_NN.mp4).
"""

from __future__ import annotations

import argparse
import csv
import math
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from pipeline.media import VideoEncoder

FACE_CENTRE = (224.0, 114.0)  # the astronaut's face in the 512x512 original (its detected box)
FACE_WIDTH = 100.0


def photo(index: int) -> np.ndarray:
    """A 1080x1350 photo, the face a fifth of its width, in the upper third."""
    rng = np.random.default_rng(index)
    canvas = np.empty((1350, 1080, 3), np.uint8)
    canvas[:] = rng.integers(40, 200, 3, dtype=np.uint8)
    zoom = 1080 * 0.2 / FACE_WIDTH
    cx, cy = 540 + rng.uniform(-120, 120), 450 + rng.uniform(-60, 60)
    matrix = np.array(
        [[zoom, 0, cx - FACE_CENTRE[0] * zoom], [0, zoom, cy - FACE_CENTRE[1] * zoom]]
    )
    picture = cv2.warpAffine(
        data.astronaut(), matrix, (1080, 1350), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT
    )
    tint = rng.uniform(0.9, 1.1, 3)
    return np.clip(picture * tint, 0, 255).astype(np.uint8)


def drive(path: Path, index: int, frames: int) -> None:
    astronaut = data.astronaut()
    phase = index * 0.37
    with VideoEncoder(
        path, frame_rate=Fraction(25), width=640, height=360, crf=18, preset="veryfast"
    ) as encoder:
        for t in range(frames):
            s = t / 25 + phase
            zoom = 64 / FACE_WIDTH * (1 + 0.1 * math.sin(2 * math.pi * 0.2 * s))
            cx = 320 + 200 * math.sin(2 * math.pi * 0.05 * s)
            cy = 150 + 15 * math.sin(2 * math.pi * 0.4 * s)
            matrix = np.array(
                [[zoom, 0, cx - FACE_CENTRE[0] * zoom], [0, zoom, cy - FACE_CENTRE[1] * zoom]]
            )
            encoder.add_frames(
                cv2.warpAffine(astronaut, matrix, (640, 360), borderValue=(90, 110, 130))
            )


def _row(args: tuple[Path, int, int, str]) -> dict[str, str]:
    media, index, frames, suffix = args
    Image.fromarray(photo(index)).save(media / f"photo_{index:02d}.{suffix}", quality=90)
    drive(media / f"drive_{index:02d}.mp4", index, frames)
    return {
        "id": f"row{index:02d}",
        "portrait": f"media/photo_{index:02d}.{suffix}",
        "driving_video": f"media/drive_{index:02d}.mp4",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--photo-format", choices=("png", "jpg"), default="png")
    args = parser.parse_args(argv)
    media = args.out_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        rows = list(
            pool.map(_row, [(media, i, args.frames, args.photo_format) for i in range(args.rows)])
        )
    with open(args.out_dir / "framing.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "portrait", "driving_video"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows x {args.frames} frames: {args.out_dir / 'framing.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
