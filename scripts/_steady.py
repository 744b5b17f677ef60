"""What the GPU probes start from: random weights optimised as a worker's, an animator, and S
streams past their warm-up calls (``scripts/profile_call.py``, ``scripts/probe_bank_mix.py``)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from pipeline.animate import StreamingAnimator
from pipeline.bench._inputs import make_inputs, steady_streams
from pipeline.config import AnimatorConfig
from pipeline.models.weights import random_models


def add_model_arguments(parser: argparse.ArgumentParser, device_help: str) -> None:
    """``--device`` (``cpu``: a smoke test), ``--architecture`` and ``--resolution``."""
    parser.add_argument("--device", default="cuda", help=device_help)
    parser.add_argument("--architecture", default="full")
    parser.add_argument("--resolution", type=int, default=512)


def steady_animator(
    args: argparse.Namespace, streams: int, config: AnimatorConfig | None = None
) -> tuple[StreamingAnimator, list, list]:
    """The animator (fp16 on CUDA, fp32 elsewhere; sdpa, channels-last, full VAE decoder),
    ``streams`` streams in steady state and a chunk of driving frames each."""
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    models = random_models(args.architecture, device, dtype, vae_decoder="full")
    models.set_attention_backend("sdpa")
    models.optimize(channels_last=True)
    animator = StreamingAnimator(models, config or AnimatorConfig(), resolution=args.resolution)
    with tempfile.TemporaryDirectory() as scratch:
        inputs = make_inputs(Path(scratch), streams, 16, args.resolution, 25)
        states, chunks = steady_streams(animator, inputs, streams)
    return animator, states, chunks
