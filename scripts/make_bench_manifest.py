"""Generate a fixed synthetic manifest for throughput and scaling runs (no downloads).

Every row has its own portrait and its own silent driving clip (a talking head whose motion is
phase-shifted per row), so no row reuses another's conditioning cache entry and rows of one
length cost the same: the manifest measures the render path, not the cache. Deterministic: the
same arguments write the same files.

    python -m scripts.make_bench_manifest --rows 16 --frames 160 --out-dir /tmp/scaling
    python -m scripts.make_bench_manifest --spec 1x3000,30x100 --out-dir /tmp/mix

``--spec`` mixes lengths: groups of ``<rows>x<frames>``, written in that order.

Writes ``<out-dir>/bench.csv`` and ``<out-dir>/media/`` (portrait_NN.png, drive_NN.mp4).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.media import VideoEncoder
from scripts.make_example_media import PALETTE_A, PALETTE_B, PALETTE_DRIVER, Pose, draw_face

logger = logging.getLogger("make_bench_manifest")

FRAME_RATE = Fraction(25)


def _pose(k: int, phase: float) -> Pose:
    t = float(k / FRAME_RATE) + phase
    return Pose(
        x=0.04 * math.sin(2 * math.pi * 0.3 * t),
        y=0.015 * math.sin(2 * math.pi * 0.5 * t),
        turn=0.5 * math.sin(2 * math.pi * 0.2 * t),
        mouth_open=max(0.0, math.sin(2 * math.pi * 3.0 * t)) ** 2,
        eyes_open=0.0 if (t % 2.9) < 0.12 else 1.0,
    )


def _make_row(out_dir: Path, index: int, frames: int, portrait_size: int, clip_size: int) -> str:
    media = out_dir / "media"
    portrait = media / f"portrait_{index:02d}.png"
    clip = media / f"drive_{index:02d}.mp4"
    base = PALETTE_A if index % 2 == 0 else PALETTE_B
    shade = 12 * (index % 5)  # a different background per row: a different portrait
    palette = replace(base, background=tuple(min(255, c + shade) for c in base.background))
    draw_face(portrait_size, palette, _pose(0, 0.0)).save(portrait)
    with VideoEncoder(
        clip, frame_rate=FRAME_RATE, width=clip_size, height=clip_size, crf=23, preset="veryfast"
    ) as encoder:
        for k in range(frames):
            encoder.add_frames(
                np.asarray(draw_face(clip_size, PALETTE_DRIVER, _pose(k, 0.37 * index)))
            )
    return f"row{index:02d}"


def parse_spec(spec: str) -> list[int]:
    """``"1x3000,30x100"`` → the frames of each row, in order."""
    lengths = []
    for group in spec.split(","):
        try:
            rows, frames = (int(part) for part in group.strip().lower().split("x"))
        except ValueError as err:
            raise ValueError(f"{group!r} is not <rows>x<frames> (e.g. 30x100)") from err
        if rows < 1 or frames < 1:
            raise ValueError(f"{group!r}: rows and frames must be at least 1")
        lengths += [frames] * rows
    return lengths


def make_bench_manifest(
    out_dir: Path,
    rows: int,
    frames: int,
    *,
    portrait_size: int = 512,
    clip_size: int = 256,
    lengths: list[int] | None = None,
) -> Path:
    """Write the manifest and its media (``rows`` rows of ``frames`` frames, or one row per entry
    of ``lengths``); returns the manifest's path."""
    lengths = lengths or [frames] * rows
    rows = len(lengths)
    (out_dir / "media").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        ids = list(
            pool.map(
                _make_row,
                [out_dir] * rows,
                range(rows),
                lengths,
                [portrait_size] * rows,
                [clip_size] * rows,
            )
        )
    manifest = out_dir / "bench.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        # drawn faces, which the bundled detector does not always find: the whole portrait
        # (these manifests measure throughput; scripts/make_framing_manifest.py has real faces)
        writer.writerow(("id", "portrait", "driving_video", "framing"))
        for index, row_id in enumerate(ids):
            writer.writerow(
                (row_id, f"media/portrait_{index:02d}.png", f"media/drive_{index:02d}.mp4", "crop")
            )
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--frames", type=int, default=160, help="frames per driving clip")
    parser.add_argument("--spec", help="rows of mixed lengths, e.g. 1x3000,30x100 (instead)")
    parser.add_argument("--portrait-size", type=int, default=512)
    parser.add_argument("--clip-size", type=int, default=256)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.frames < 1:
        parser.error("--rows and --frames must be at least 1")
    try:
        lengths = parse_spec(args.spec) if args.spec else [args.frames] * args.rows
    except ValueError as err:
        parser.error(f"--spec: {err}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = make_bench_manifest(
        args.out_dir,
        len(lengths),
        lengths[0],
        portrait_size=args.portrait_size,
        clip_size=args.clip_size,
        lengths=lengths,
    )
    logger.info("wrote %s: %d rows, %d frames in all", manifest, len(lengths), sum(lengths))


if __name__ == "__main__":
    main()
