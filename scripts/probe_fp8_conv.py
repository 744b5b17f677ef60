"""Probe (GPU): do FP8 (e4m3) convolutions pay at the model's own shapes? (issue 16, lever 1)

Convolutions are about a quarter of a call's GPU time (docs/benchmarks.md, "Where the GPU time
goes") and PyTorch has no FP8 convolution; ``model.fp8=unet`` runs the UNet's convolutions as an
implicit-GEMM Triton kernel (:mod:`pipeline.models._fp8_conv`). This probe times that kernel
against cuDNN at every convolution shape of a call, in three variants: on fp16 operands (which
separates "Triton against cuDNN" from "FP8 against fp16"), on an input already in e4m3 (what a
producer kernel — GroupNorm + SiLU — writing e4m3 would hand it; ``cast_ms`` is the separate
pass it would otherwise cost), and as ``model.fp8=unet`` runs it (the input's scale from one
reduction, the cast inside the kernel). The activation takes one scale per tensor (a 3×3
convolution sums over nine pixels, so a per-pixel scale cannot leave the sum), the weight one
per output channel; both scales and the bias sit in the kernel's epilogue.

Steps, on the full-size model with random weights (fp16, channels-last, the fast layers):

1. Fidelity before any kernel: ``--frames`` frames streamed with every convolution of 64·k input
   channels in the denoising UNet (then in the UNet and the VAE decoder) on e4m3-rounded
   operands (:func:`fake_fp8_convolutions`), against fp16: PSNR, worst frame, pixel differences
   (the issue's gate: ≥ 45 dB may become a default, ≥ 40 dB opt-in).
2. ``--streams`` rows stream to their steady state (``scripts/_steady.py``); every ``F.conv2d``
   of one batched call is recorded (input, weight, stride, padding: with its count).
3. Each shape is timed (medians of CUDA events; the Triton kernels at their fastest of
   :data:`CONFIGS`) and its error against the fp32 convolution of the same fp16 operands taken,
   relative to the output's largest value; the call's totals follow (``per_call``: the call's
   convolutions in each variant, and in e4m3 only where that is faster than cuDNN).

    python -m scripts.probe_fp8_conv --out probe.json [--streams 4] [--frames 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.models._fp8_conv import (
    CHANNEL_MULTIPLE,
    conv2d_nhwc,
    dequantize_weight_rows,
    quantize_tensor,
    quantize_weight_rows,
    tensor_scale,
    weight_rows,
)
from scripts._steady import steady_animator

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): tried per shape, the fastest kept
CONFIGS = [
    (128, 128, 64, 8, 3),
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 128, 8, 3),
    (128, 256, 128, 8, 4),
]


def record_convolutions(fn) -> Counter:
    """``(input shape, weight shape, stride, padding)`` of every ``F.conv2d`` in ``fn()``, counted."""
    shapes: Counter = Counter()
    original = F.conv2d

    def recording(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        stride_ = stride if isinstance(stride, int) else stride[0]
        padding_ = padding if isinstance(padding, int) else padding[0]
        if groups == 1 and dilation in (1, (1, 1)):
            shapes[(tuple(x.shape), tuple(weight.shape), stride_, padding_, bias is not None)] += 1
        return original(x, weight, bias, stride, padding, dilation, groups)

    F.conv2d = recording
    try:
        with torch.no_grad():
            fn()
    finally:
        F.conv2d = original
    return shapes


def fake_quantise(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (one scale) and ``weight`` (a scale per output channel) rounded to e4m3 and back: the
    values an e4m3 convolution multiplies, in the operands' own dtype."""
    x_scale = tensor_scale(x)
    w8, w_scale = quantize_weight_rows(weight)
    dequantised = dequantize_weight_rows(w8, w_scale, weight.shape[2:]).to(weight.dtype)
    return (quantize_tensor(x, x_scale).float() * x_scale).to(x.dtype), dequantised


@contextmanager
def fake_fp8_convolutions(networks: list[torch.nn.Module]) -> Iterator[Counter]:
    """Inside the forward of ``networks``, every convolution of ``CHANNEL_MULTIPLE``·k input
    channels (what ``model.fp8=unet`` converts) multiplies e4m3-rounded operands
    (:func:`fake_quantise`), with a scale for the whole activation taken from the activation
    itself; the counter yielded counts them. The frames it gives are what e4m3 convolutions with exact per-tensor scales would give
    (fp16 accumulation aside), before any kernel exists."""
    depth, converted, original = [0], Counter(), F.conv2d

    def enter(*_):
        depth[0] += 1

    def leave(*_):
        depth[0] -= 1

    def quantised(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        chosen = groups == 1 and x.shape[1] % CHANNEL_MULTIPLE == 0 and x.is_floating_point()
        if depth[0] and chosen:
            converted["convolutions"] += 1
            x, weight = fake_quantise(x, weight)
        return original(x, weight, bias, stride, padding, dilation, groups)

    hooks = [
        h
        for n in networks
        for h in (n.register_forward_pre_hook(enter), n.register_forward_hook(leave))
    ]
    F.conv2d = quantised
    try:
        yield converted
    finally:
        F.conv2d = original
        for hook in hooks:
            hook.remove()


def fidelity(animator, frames: int) -> dict:
    """PSNR and pixel differences of ``frames`` streamed frames (one stream, the synthetic inputs
    of scripts/bench_fp8.py) with e4m3-rounded convolutions in the denoising UNet, then in the
    UNet and the VAE decoder, against the model's own dtype."""
    from scripts.bench_fp8 import frame_figures, stream_frames, synthetic_inputs  # noqa: PLC0415

    portrait, driving = synthetic_inputs(frames, animator.resolution)
    models = animator.models
    reference = stream_frames(animator, portrait, driving, None)
    results = {}
    for label, networks in (
        ("unet", [models.denoising_unet]),
        ("unet+decoder", [models.denoising_unet, models.vae.decoder]),
    ):
        with fake_fp8_convolutions(networks) as converted:
            got = stream_frames(animator, portrait, driving, None)
        results[label] = {
            **frame_figures(got, reference),
            "convolutions_rounded": converted["convolutions"],
        }
        print(f"fidelity, e4m3 convolutions in {label}: {results[label]}")
    return results


def time_shape(x_shape, w_shape, stride: int, padding: int, median_ms) -> dict:
    """cuDNN fp16 (channels-last), the Triton kernel on fp16 and on e4m3 operands, the cast pass;
    errors against the fp32 convolution."""
    torch.manual_seed(sum(x_shape) + sum(w_shape))
    x = torch.randn(x_shape, device="cuda").half().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(w_shape, device="cuda") / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5
    weight = weight.half().contiguous(memory_format=torch.channels_last)
    bias = torch.randn(w_shape[0], device="cuda").half()
    kernel = (w_shape[2], w_shape[3])
    conv = partial(F.conv2d, stride=stride, padding=padding)
    with torch.no_grad():
        exact = conv(x.float(), weight.float(), bias.float())
        largest = exact.abs().max()
        rows16 = weight_rows(weight)
        w8, w_scale = quantize_weight_rows(weight)
        x_scale = tensor_scale(x)
        x8 = quantize_tensor(x, x_scale)
        entry: dict = {"x": list(x_shape), "w": list(w_shape), "stride": stride, "padding": padding}
        entry["cudnn_ms"] = median_ms(lambda: conv(x, weight, bias))
        entry["cudnn_error"] = (
            (conv(x, weight, bias).float() - exact).abs().max() / largest
        ).item()
        # the scale (one reduction) and the cast: what a separate quantisation pass costs
        entry["cast_ms"] = median_ms(lambda: quantize_tensor(x, tensor_scale(x)))

        def variant(name: str, config) -> torch.Tensor:
            common = {"stride": stride, "padding": padding, "bias": bias, "config": config}
            if name == "triton16":
                return conv2d_nhwc(x, rows16, kernel, **common)
            if name == "triton8":  # the input already in e4m3 (its producer cast it)
                return conv2d_nhwc(x8, w8, kernel, x_scale=x_scale, w_scale=w_scale, **common)
            # what model.fp8=unet runs: the scale from a reduction, the cast inside the kernel
            return conv2d_nhwc(x, w8, kernel, x_scale=tensor_scale(x), w_scale=w_scale, **common)

        for name in ("triton16", "triton8", "triton8_cast"):
            best = None
            for config in CONFIGS:
                if x_shape[1] % config[2]:
                    continue
                run = partial(variant, name, config)
                try:
                    ms = median_ms(run)
                except Exception as err:  # noqa: BLE001 - a config that does not fit is skipped
                    print(f"  {name} {config}: {type(err).__name__}: {str(err)[:120]}")
                    continue
                if best is None or ms < best[0]:
                    best = (ms, config, run)
            if best is None:
                continue
            entry[f"{name}_ms"], entry[f"{name}_config"] = best[0], list(best[1])
            entry[f"{name}_error"] = ((best[2]().float() - exact).abs().max() / largest).item()
        flop = 2 * exact.numel() * w_shape[1] * kernel[0] * kernel[1]
        entry["tflop"] = flop / 1e12
    return entry


def main() -> None:
    import triton  # noqa: PLC0415

    from pipeline.bench import median_cuda_ms  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=200, help="streamed for fidelity (0: skip)")
    args = parser.parse_args()
    args.device, args.architecture, args.resolution = "cuda", "full", 512
    torch.backends.cudnn.benchmark = True
    started = time.monotonic()
    animator, states, chunks = steady_animator(args, args.streams)
    shapes = record_convolutions(partial(animator.advance, states, chunks))
    found = fidelity(animator, args.frames) if args.frames else {}
    del animator, states, chunks
    torch.cuda.empty_cache()
    print(
        f"{sum(shapes.values())} convolutions of {len(shapes)} shapes in one S={args.streams} call"
    )
    rows, totals = [], Counter()

    def save() -> None:  # after every shape: a run cut short by the device's limit keeps its rows
        if args.out:
            args.out.write_text(
                json.dumps(
                    {
                        "device": torch.cuda.get_device_name(),
                        "torch": torch.__version__,
                        "triton": triton.__version__,
                        "streams": args.streams,
                        "fidelity": found,
                        "per_call": totals,
                        "rows": rows,
                    },
                    indent=1,
                )
            )

    save()
    median_ms = partial(median_cuda_ms, repeats=10, warmup=2)
    for (x_shape, w_shape, stride, padding, _), count in shapes.most_common():
        if x_shape[1] % CHANNEL_MULTIPLE:  # conv_in, the pose guider: 4-16 channels, fp16
            totals["skipped_calls"] += count
            continue
        entry = time_shape(x_shape, w_shape, stride, padding, median_ms)
        entry["count"] = count
        rows.append(entry)
        for key in ("cudnn_ms", "triton16_ms", "triton8_ms", "triton8_cast_ms", "cast_ms"):
            totals[key] += entry.get(key, float("nan")) * count
        totals["tflop"] += entry["tflop"] * count
        # the call's convolutions if each shape took e4m3 only where it is faster than cuDNN:
        # the input cast by its producer (free), by a pass of its own, or inside the kernel
        fp8 = entry.get("triton8_ms", float("inf"))
        cudnn = entry["cudnn_ms"]
        totals["best_cast_fused_ms"] += min(cudnn, fp8) * count
        totals["best_cast_apart_ms"] += min(cudnn, fp8 + entry["cast_ms"]) * count
        totals["best_cast_in_kernel_ms"] += min(cudnn, entry.get("triton8_cast_ms", cudnn)) * count
        print(
            f"{count:3d} × x{x_shape} w{w_shape[:2]} k{w_shape[2]} s{stride}: cuDNN "
            f"{cudnn:.3f} ms ({entry['tflop'] / cudnn * 1e3:.0f} TFLOP/s), Triton fp16 "
            f"{entry.get('triton16_ms', float('nan')):.3f}, e4m3 "
            f"{entry.get('triton8_ms', float('nan')):.3f} (+ cast {entry['cast_ms']:.3f}; "
            f"cast in kernel {entry.get('triton8_cast_ms', float('nan')):.3f}); errors "
            f"{entry['cudnn_error']:.1e} / {entry.get('triton8_error', float('nan')):.1e}"
        )
        save()
    print("per call (ms):", {key: round(value, 2) for key, value in totals.items()})
    print(f"probe took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
