"""Where a split row's later part spends its start: timed (and profiled) as a worker does it.

A part that starts at frame ``--start`` reads the driving video from its beginning to re-decide
the keyframes, renders their latents from short windows, and builds its own window
(`pipeline/animate/_parts.py`). This runs that start once through the worker's own observation
source (`RowRenderer._observations`: decoding, the face track, the pose/motion networks; or the
clip's conditioning cache with ``--cache``), on the tiny model with random weights, and prints
its phases; ``--profile N`` adds cProfile's N most expensive calls.

    python -m scripts.profile_part_start --video /tmp/bench-split/long-3000/media/drive_00.mp4 \\
        --start 1500 --profile 25

The video is the one `scripts/bench_split.py` makes (its first run creates it).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="the driving video")
    parser.add_argument("--start", type=int, default=1500, help="the part's first frame")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a CPU worker's)")
    parser.add_argument("--driving", default="face", help="framing.driving: face or off")
    parser.add_argument("--profile", type=int, default=0, help="print this many cProfile rows")
    args = parser.parse_args(argv)

    from pipeline.animate import StreamingAnimator
    from pipeline.animate._parts import PartStarter
    from pipeline.config import FramingConfig, StorageConfig, VideoConfig
    from pipeline.media import VideoReader
    from pipeline.models import load_personalive, save_random_weights
    from pipeline.storage import Storage
    from pipeline.worker import RowTask
    from pipeline.worker._row import RowRenderer

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="part-start-"))
    weights = save_random_weights(work / "weights", architecture="tiny", seed=0)
    models = load_personalive(weights, "fp32", "cpu", architecture="tiny")
    animator = StreamingAnimator(models, resolution=64)
    renderer = RowRenderer(animator, Storage(StorageConfig()), VideoConfig(), work)
    frames = len(VideoReader(args.video))
    task = RowTask(
        "row", "portrait.png", args.video, None, str(work / "job"), "k", None, 42,
        framing=FramingConfig(portrait="crop", driving=args.driving),
    )  # fmt: skip
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    starter = PartStarter(animator, args.overlap)
    with ExitStack() as stack:
        base = animator.fuse_reference(portrait, seed=42)
        source = renderer._observations(task, frames, stack)
        profile = cProfile.Profile() if args.profile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        stream = starter.start(base, source, args.start)
        if profile:
            profile.disable()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    phases = {k: round(v, 3) for k, v in starter.timings.items()}
    print(json.dumps({"start": args.start, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                      "keyframes": stream.num_keyframes, **phases}))  # fmt: skip
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
