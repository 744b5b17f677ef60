"""The rows a benchmark renders: synthetic portraits and driving videos, or a manifest's first
rows; and streams brought to their steady state for the one-call measurements."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.animate import StreamingAnimator
from pipeline.config import BenchConfig, FramingConfig
from pipeline.media import VideoEncoder


class TooFewRows(ValueError):
    """``job.bench.manifest`` has fewer rows than the benchmark has streams."""


@dataclass
class BenchInputs:
    portraits: list[Path]
    videos: list[Path]
    frames: int
    # synthetic inputs have no faces: the whole picture (the engine alone); a manifest's rows
    # are framed as job=render frames them
    framing: FramingConfig = field(
        default_factory=lambda: FramingConfig(portrait="crop", driving="off")
    )


def bench_inputs(
    options: BenchConfig, framing: FramingConfig, folder: Path, streams: int, size: int
) -> BenchInputs:
    """``job.bench.manifest``'s first rows (the content a render job of it meets: same
    keyframes), else synthetic inputs written to ``folder``."""
    if options.manifest:
        return manifest_inputs(options.manifest, streams, options.frames, framing)
    return make_inputs(folder, streams, options.frames, size, options.rate)


def manifest_inputs(uri: str, streams: int, frames: int, framing: FramingConfig) -> BenchInputs:
    """The portraits and driving videos of a manifest's first ``streams`` rows (each row's clip
    rendered up to ``frames`` frames), framed as job=render frames them (``framing``, with the
    first row's own ``framing`` column).

    Raises:
        TooFewRows: the manifest has fewer than ``streams`` rows.
    """
    from pipeline.manifest import load_manifest  # noqa: PLC0415

    rows = load_manifest(uri).rows[:streams]
    if len(rows) < streams:
        raise TooFewRows(
            f"job.bench.manifest={uri} has {len(rows)} row(s); the benchmark needs {streams} "
            "(one per stream: lower job.bench.streams or model.streams_per_worker)"
        )
    if rows[0].framing is not None:
        framing = replace(framing, portrait=rows[0].framing)
    return BenchInputs(
        [Path(row.portrait) for row in rows],
        [Path(row.driving_video) for row in rows],
        frames,
        framing,
    )


def make_inputs(folder: Path, streams: int, frames: int, size: int, rate: int) -> BenchInputs:
    """Synthetic portraits (smooth colour fields) and driving videos (moving blobs), H.264."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    portraits, videos = [], []
    for index in range(streams):
        base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
        portrait = folder / f"portrait{index}.png"
        Image.fromarray(base).resize((size, size), Image.BICUBIC).save(portrait)
        video = folder / f"driving{index}.mp4"
        colour = rng.uniform(60, 255, 3)
        with VideoEncoder(
            video, frame_rate=Fraction(rate), width=size, height=size, preset="ultrafast"
        ) as encoder:
            for start in range(0, frames, 16):
                batch = []
                for i in range(start, min(frames, start + 16)):
                    cx, cy = 0.5 + 0.2 * np.sin(i / 9 + index), 0.45 + 0.1 * np.cos(i / 13)
                    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)[..., None]
                    batch.append((blob * colour + (1 - blob) * 30).astype(np.uint8))
                encoder.add_frames(np.stack(batch))
        portraits.append(portrait)
        videos.append(video)
    return BenchInputs(portraits, videos, frames)


def steady_streams(
    animator: StreamingAnimator, inputs: BenchInputs, streams: int
) -> tuple[list, list]:
    """``streams`` fused streams past their warm-up call, and a chunk of driving frames each."""
    from pipeline.media import VideoReader, load_image  # noqa: PLC0415

    states = [
        animator.fuse_reference(load_image(str(p)), seed=i)
        for i, p in enumerate(inputs.portraits[:streams])
    ]
    chunks = [
        next(VideoReader(str(v), size=animator.resolution).chunks(4)).frames
        for v in inputs.videos[:streams]
    ]
    for _ in range(4):
        animator.advance(states, chunks)
    return states, chunks
