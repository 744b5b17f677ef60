"""Probe (GPU): what a batch of streams with different numbers of history keyframes costs.

In a real render, rows join the batch at different times, so their keyframe banks differ in
length and the batch pads them. The denoising UNet's call is timed (CUDA events, median) on one
batch of S streams holding 0, 1, 2, 3, ... keyframes, through the bank attention that slices each
stream's real bank (this code) and through masked attention over the concatenated keys (what a
padded batch ran before, forced by turning the bank attention off), against the same streams with
equal banks;
the two paths' outputs are compared. Then the whole call (``StreamingAnimator.advance``) is
timed with mixed and with equal banks.

    python -m scripts.probe_bank_mix [--streams 4] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pipeline.animate._animator import _batch_banks
from pipeline.bench import median_cuda_ms
from pipeline.config import AnimatorConfig
from pipeline.models import _fast_layers
from scripts._steady import add_model_arguments, steady_animator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    add_model_arguments(parser, "cpu: a smoke test (no timings)")
    args = parser.parse_args()
    # no keyframe joins while timing: the banks are set below
    config = AnimatorConfig(keyframe_threshold=1e9)
    animator, states, chunks = steady_animator(args, args.streams, config)
    models, size = animator.models, args.resolution
    device, dtype = models.device, models.dtype
    counts = [s % 4 for s in range(args.streams)]  # 0, 1, 2, 3, 0, ...
    for stream, count in zip(states, counts):
        for _ in range(count):
            animator._add_keyframe(stream, stream.reference_latent[:1])
    unet, generator = models.denoising_unet, torch.Generator(device).manual_seed(0)
    latent = (args.streams, 16, 4, size // 8, size // 8)
    sample = torch.randn(latent, device=device, dtype=dtype, generator=generator)
    timer = median_cuda_ms if device.type == "cuda" else lambda fn, *a, **k: (fn(), 0.0)[1]
    timesteps = animator.schedule.window_timesteps(device)
    clip = torch.cat([s.clip_embeds for s in states])
    motion = torch.stack([torch.cat([c.motion for c in s.chunks] * 2)[:16] for s in states])
    pose = torch.stack([torch.cat([c.pose_features for c in s.chunks] * 2)[:16] for s in states])

    def call(banks) -> torch.Tensor:
        bank_kv, bank_mask = banks
        return unet(
            sample, timesteps, clip, motion.to(dtype), pose, bank_kv=bank_kv, bank_mask=bank_mask
        ).sample

    mixed = _batch_banks([s.bank_kv() for s in states])
    equal = _batch_banks([states[counts.index(max(counts))].bank_kv()] * args.streams)
    result: dict = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "streams": args.streams,
        "keyframes": counts,
    }
    with torch.no_grad():
        sliced = call(mixed)
        result["unet_ms"] = {
            "mixed, sliced (now)": timer(lambda: call(mixed), 10, warmup=2),
            f"equal ({max(counts)} each)": timer(lambda: call(equal), 10, warmup=2),
        }
        usable = _fast_layers.bank_attention_usable
        _fast_layers.bank_attention_usable = lambda q: False  # the masked concatenation
        try:
            masked = call(mixed)
            result["unet_ms"]["mixed, masked (before)"] = timer(lambda: call(mixed), 10, warmup=2)
        finally:
            _fast_layers.bank_attention_usable = usable
        scale = masked.float().abs().max()
        result["sliced_vs_masked_rel_error"] = (
            (sliced.float() - masked.float()).abs().max() / scale
        ).item()
        result["advance_ms_mixed"] = timer(lambda: animator.advance(states, chunks), 6, warmup=1)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
