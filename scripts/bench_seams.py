"""How far a split row's part drifts from the uninterrupted stream, per overlap length.

Renders one driving clip uninterrupted, then the part that starts at ``--start`` with each
overlap of ``--overlaps`` (pipeline/animate/_parts.py), and compares the part's frames with the
uninterrupted ones: the largest and mean pixel difference (0..255) over the part, over its first
chunk (the seam) and over its last 16 frames, and the PSNR. With ``--keyframe-threshold`` low
enough, history keyframes are added before the part, and their latents come from short windows.

    python -m scripts.bench_seams --model tiny --frames 160 --start 80     # CPU, tiny random model
    python -m scripts.bench_seams --model full --device cuda --dtype fp16  # GPU, full-size model

Prints a table and writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.animate import Observation, StreamingAnimator
from pipeline.animate._parts import PartStarter
from pipeline.config import AnimatorConfig


def observations_of(animator: StreamingAnimator, frames: np.ndarray):
    """An observation source over driving frames held in memory (8 chunks per batch)."""

    def source(start: int, stop: int, firsts: bool) -> Iterator[Observation]:
        stop = min(stop, len(frames))
        for batch in range(start, stop, 32):
            chunks = [frames[i : min(i + 4, stop)] for i in range(batch, min(batch + 32, stop), 4)]
            yield from animator.observe([c[:1] for c in chunks] if firsts else chunks)

    return source


def render(
    animator: StreamingAnimator,
    portrait: np.ndarray,
    frames: np.ndarray,
    *,
    seed: int,
    start: int = 0,
    end: int | None = None,
    overlap: int = 0,
) -> np.ndarray:
    """Output frames ``[start, end)``: uninterrupted when ``start`` is 0, else as a part."""
    end = len(frames) if end is None else end
    base = animator.fuse_reference(portrait, seed=seed)
    if start:
        stream = PartStarter(animator, overlap).start(
            base, observations_of(animator, frames), start
        )
    else:
        stream = base
    stop = min(len(frames), end + animator.schedule.pending_frames)
    out = []
    index = stream.frames_in
    while not stream.done and stream.frames_out < end:
        chunk = frames[index : min(index + 4, stop)] if index < stop else None
        if chunk is not None and len(chunk) == 0:
            chunk = None
        if chunk is None and stop < len(frames):
            raise RuntimeError("ran out of frames before the part's end")
        out.append(animator.advance([stream], [chunk])[0].cpu().numpy())
        index += 4
    return np.concatenate(out)[: end - start]


def differences(part: np.ndarray, whole: np.ndarray) -> dict[str, float]:
    diff = np.abs(part.astype(np.int16) - whole.astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {
        "max": int(diff.max()),
        "mean": round(float(diff.mean()), 4),
        "seam_max": int(diff[:4].max()),
        "seam_mean": round(float(diff[:4].mean()), 4),
        "tail_max": int(diff[-16:].max()),
        "tail_mean": round(float(diff[-16:].mean()), 4),
        "psnr_db": round(10 * math.log10(255**2 / mse), 2) if mse else math.inf,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--start", type=int, default=80)
    parser.add_argument("--overlaps", default="0,8,16,32,64")
    parser.add_argument("--keyframe-threshold", type=float, default=None)
    parser.add_argument(
        "--weights", default=None, help="weights folder (default: random, made here)"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from pipeline.models import load_personalive, save_random_weights

    torch.manual_seed(0)
    weights = args.weights or save_random_weights(
        Path(tempfile.mkdtemp(prefix="seams-weights-")), architecture=args.model, seed=0
    )
    models = load_personalive(weights, args.dtype, args.device, architecture=args.model)
    resolution = 64 if args.model == "tiny" else 512
    config = AnimatorConfig()
    if args.keyframe_threshold is not None:
        config = AnimatorConfig(keyframe_threshold=args.keyframe_threshold)
    animator = StreamingAnimator(models, config, resolution=resolution)
    frames, picture = _clip(args.frames, resolution)

    started = time.perf_counter()
    whole = render(animator, picture, frames, seed=3)
    seconds_whole = time.perf_counter() - started
    rows = []
    for overlap in (int(x) for x in args.overlaps.split(",")):
        started = time.perf_counter()
        part = render(animator, picture, frames, seed=3, start=args.start, overlap=overlap)
        row = {
            "overlap": overlap,
            **differences(part, whole[args.start :]),
            "seconds": round(time.perf_counter() - started, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    document = {
        "model": args.model, "device": args.device, "dtype": args.dtype,
        "frames": args.frames, "start": args.start, "whole_seconds": round(seconds_whole, 2),
        "keyframe_threshold": config.keyframe_threshold, "rows": rows,
    }  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=1))
    return 0


def _clip(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A moving, changing face-like pattern and a portrait (deterministic)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        cx, cy = 0.5 + 0.2 * np.sin(i / 9), 0.5 + 0.15 * np.cos(i / 13)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.01 * np.sin(i / 5)))
        frames[i, ..., 0] = (60 + 180 * blob).astype(np.uint8)
        frames[i, ..., 1] = (40 + 120 * blob * (0.5 + 0.5 * np.sin(i / 7))).astype(np.uint8)
        frames[i, ..., 2] = (90 + 60 * (1 - blob)).astype(np.uint8)
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 255, (9, 9, 3)).astype(np.uint8)
    from PIL import Image

    picture = np.asarray(Image.fromarray(picture).resize((size * 2, size * 2), Image.BICUBIC))
    return frames, picture


if __name__ == "__main__":
    raise SystemExit(main())
