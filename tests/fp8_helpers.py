"""Shared by the FP8 tests (tests/test_fp8.py, tests/test_fp8_conv.py): the tiny model's frames
for one stream, to compare a quantised copy of the networks with the reference."""

from __future__ import annotations

import numpy as np
import torch


def stream_tiny(models, frames: int = 16) -> torch.Tensor:
    """``frames`` float frames of one stream at 64² (seeded portrait, driving frames and noise;
    every history keyframe taken: ``keyframe_threshold=0``)."""
    from pipeline.animate import StreamingAnimator
    from pipeline.config import AnimatorConfig

    config = AnimatorConfig(keyframe_threshold=0.0, output_dtype="float")
    animator = StreamingAnimator(models, config, resolution=64)
    rng = np.random.default_rng(0)
    stream = animator.fuse_reference(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), seed=0)
    driving = rng.integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8)
    outputs = [animator.push(stream, driving[i : i + 4]) for i in range(0, frames, 4)]
    return torch.cat([*outputs, animator.finish(stream)])


def cuda_fp8() -> bool:
    """A CUDA GPU with FP8 tensor cores is here (the tests marked ``gpu`` run on it)."""
    from pipeline.models import _fp8

    return torch.cuda.is_available() and _fp8.fp8_unsupported("cuda") is None
