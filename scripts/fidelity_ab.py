"""Frames of two code trees compared: the fidelity gate of a speed change (docs/benchmarks.md).

Run ``stream`` once in each tree (``PYTHONPATH`` pointing at it; the script imports only
``pipeline``), then ``compare``:

    PYTHONPATH=/path/to/old python scripts/fidelity_ab.py stream --out old.npy
    PYTHONPATH=$PWD        python scripts/fidelity_ab.py stream --out new.npy
    python scripts/fidelity_ab.py compare old.npy new.npy

``stream``: the full-size model with random weights (seed 0), fp16, channels-last, as a worker
runs it, streams ``--frames`` frames of a synthetic driving video (one stream, same portrait,
seed and noise every time); the uint8 frames go to a ``.npy`` file. ``compare``: PSNR over all
frames, the worst frame's PSNR, max and mean absolute pixel difference.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np


def synthetic(frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    portrait = np.asarray(
        np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((size // 8, size // 8, 1))), np.uint8
    )
    driving = []
    for i in range(frames):
        cx, cy = 0.5 + 0.2 * np.sin(i / 9), 0.45 + 0.1 * np.cos(i / 13)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)[..., None]
        driving.append((blob * np.array([200, 150, 120]) + (1 - blob) * 30).astype(np.uint8))
    return portrait, np.stack(driving)


def stream(frames: int, out: str) -> None:
    import torch  # noqa: PLC0415

    from pipeline.animate import StreamingAnimator  # noqa: PLC0415
    from pipeline.config import AnimatorConfig  # noqa: PLC0415
    from pipeline.models.weights import random_models  # noqa: PLC0415

    models = random_models("full", torch.device("cuda"), torch.float16)
    models.set_attention_backend("sdpa")
    models.optimize(channels_last=True)
    animator = StreamingAnimator(models, AnimatorConfig(), resolution=512)
    portrait, driving = synthetic(frames, 512)
    state = animator.fuse_reference(portrait, seed=0)
    produced = []
    for start in range(0, frames, 4):
        chunk = driving[start : start + 4]
        step = animator.push if len(chunk) == 4 else animator.finish
        produced.append(step(state, chunk))
    if not state.done:
        produced.append(animator.finish(state))
    np.save(out, torch.cat([torch.as_tensor(p).cpu() for p in produced]).numpy()[:frames])


def compare(first: str, second: str) -> dict:
    a, b = np.load(first).astype(np.float64), np.load(second).astype(np.float64)
    if a.shape != b.shape:
        raise SystemExit(f"{first} {a.shape} and {second} {b.shape} differ in shape")
    diff = np.abs(a - b)

    def psnr(mse: float) -> float:
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)

    per_frame = [(diff[i] ** 2).mean() for i in range(len(a))]
    return {
        "frames": len(a),
        "psnr_db": psnr(float((diff**2).mean())),
        "worst_frame_psnr_db": psnr(float(max(per_frame))),
        "max_diff": float(diff.max()),
        "mean_diff": float(diff.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    streaming = commands.add_parser("stream")
    streaming.add_argument("--frames", type=int, default=200)
    streaming.add_argument("--out", required=True)
    comparing = commands.add_parser("compare")
    comparing.add_argument("first")
    comparing.add_argument("second")
    args = parser.parse_args()
    if args.command == "stream":
        stream(args.frames, args.out)
    else:
        print(json.dumps(compare(args.first, args.second)))


if __name__ == "__main__":
    main()
