"""FP8 (model.fp8=unet-linear) on a GPU: where torch._scaled_mm pays, and what it does to frames.

Run on a CUDA GPU with FP8 tensor cores (scripts/bench_fp8.sh runs it with job=bench):

    python scripts/bench_fp8.py --out fp8.json [--frames 200]

1. Fidelity: the full-size model with random weights (fp16, channels-last, seed 0) streams
   ``--frames`` frames of a synthetic driving video; then the same model object with
   :func:`pipeline.models._fp8.use_fp8` applied streams them again (same portrait, seed, noise).
   Reported: PSNR and max/mean pixel difference of the uint8 frames (FP8 against fp16), and the
   denoising UNet's relative error ‖out − ref‖/‖ref‖ against fp16 on one steady-state call's
   inputs, for the shipped rule, the first rule tried (640² weights, 1,024 tokens) and every
   product; and for ``model.fp8=unet`` (the shipped rule plus the UNet's convolutions,
   :mod:`pipeline.models._fp8_conv`): its UNet error and its frames against fp16.
2. Feed-forwards: each transformer feed-forward shape of one denoising call, with the residual
   add + LayerNorm before it, timed at S=1 and S=4 in fp16, in FP8 as ``model.fp8=unet-linear``
   runs it (the LayerNorm and GEGLU kernels write the products' inputs in e4m3), and in FP8
   with a quantisation pass before each product instead.
3. Shapes: every matrix product of one denoising call (M tokens × K → N), recorded through
   ``_fp8.linear`` with thresholds off, timed at S=1 and S=4: fp16 ``F.linear``; FP8 with
   per-token activation scales (the Triton quantisation + ``torch._scaled_mm``) and its GEMM
   alone; FP8 with one per-tensor scale (PyTorch ops for the amax and cast) and its GEMM alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.bench import median_cuda_ms  # noqa: E402
from pipeline.models import _fp8, _fp8_conv  # noqa: E402


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


def tree(fn, value):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(tree(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: tree(fn, v) for k, v in value.items()}
    return value


def synthetic_inputs(frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A portrait (a smooth colour field) and driving frames (a moving blob): the pictures of
    ``job=bench``'s synthetic inputs (pipeline/bench/_inputs.py ``make_inputs``, stream 0), kept in memory
    (the measured figures in docs/benchmarks.md read them through an H.264 encode)."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
    portrait = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))
    colour = rng.uniform(60, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    driving = []
    for i in range(frames):
        cx, cy = 0.5 + 0.2 * np.sin(i / 9), 0.45 + 0.1 * np.cos(i / 13)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)[..., None]
        driving.append((blob * colour + (1 - blob) * 30).astype(np.uint8))
    return portrait, np.stack(driving)


def stream_frames(animator, portrait, driving: np.ndarray, calls: list | None) -> np.ndarray:
    """Every output frame of one stream (uint8); ``calls`` receives the UNet's 12th call."""
    unet = animator.models.denoising_unet
    seen = [0]

    def keep(_module, args, kwargs):
        seen[0] += 1
        if calls is not None and seen[0] == 12:
            calls.append(tree(lambda t: t.clone(), (args, kwargs)))

    hook = unet.register_forward_pre_hook(keep, with_kwargs=True)
    state = animator.fuse_reference(portrait, seed=0)
    out = []
    for start in range(0, len(driving), 4):
        chunk = driving[start : start + 4]
        if len(chunk) == 4:
            out.append(animator.push(state, chunk))
        else:
            out.append(animator.finish(state, chunk))
    if not state.done:
        out.append(animator.finish(state))
    hook.remove()
    return torch.cat([torch.as_tensor(o).cpu() for o in out]).numpy()[: len(driving)]


def frame_figures(got: np.ndarray, expected: np.ndarray) -> dict:
    diff = got.astype(np.float64) - expected.astype(np.float64)
    mse = float(np.mean(diff**2))
    per_frame = np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)
    return {
        "frames": len(got),
        "psnr_db": 10 * math.log10(255**2 / mse) if mse else float("inf"),
        "worst_frame_psnr_db": 10 * math.log10(255**2 / float(per_frame.max())),
        "max_abs_diff": int(np.abs(diff).max()),
        "mean_abs_diff": float(np.abs(diff).mean()),
    }


def fidelity(models, animator, frames: int, results: dict, *, convolutions: bool = True) -> list:
    """Fill ``results['fidelity']``; returns the UNet call's inputs (for the shapes)."""
    portrait, driving = synthetic_inputs(frames, animator.resolution)
    calls: list = []
    started = time.monotonic()
    fp16_frames = stream_frames(animator, portrait, driving, calls)
    print(f"fp16 stream: {len(fp16_frames)} frames in {time.monotonic() - started:.1f} s")
    args, kwargs = calls[0]
    unet = models.denoising_unet
    with torch.no_grad():
        ref16 = unet(*args, **kwargs).sample.float()
    # the rule measured by the shapes table, and the first rule tried (weights of 640² and more,
    # 1,024+ token rows): the UNet's error and the frames for both
    broad = copy.deepcopy(unet)
    broad_marked = _fp8.use_fp8(broad, min_weight_elements=640 * 640, min_tokens=1024)
    with torch.no_grad():
        broad_error = relative_error(broad(*args, **kwargs).sample.float(), ref16)
    del broad
    torch.cuda.empty_cache()
    marked = _fp8.use_fp8(unet)
    with torch.no_grad():
        out8 = unet(*args, **kwargs).sample.float()
    started = time.monotonic()
    fp8_frames = stream_frames(animator, portrait, driving, None)
    print(f"fp8 stream: {len(fp8_frames)} frames in {time.monotonic() - started:.1f} s")
    entry = {
        "layers_in_fp8": marked,
        "min_weight_elements": _fp8.MIN_WEIGHT_ELEMENTS,
        "min_fed_in_features": _fp8.MIN_FED_IN_FEATURES,
        "min_tokens": _fp8.MIN_TOKENS,
        "unet_input_shape": list(args[0].shape) if args else None,
        "unet_rel_error_fp8_vs_fp16": relative_error(out8, ref16),
        "frames_fp8_vs_fp16": frame_figures(fp8_frames, fp16_frames),
        "broad_rule_640x640_1024_tokens": {
            "layers_in_fp8": broad_marked,
            "unet_rel_error_vs_fp16": broad_error,
        },
    }
    if convolutions:
        fidelity_with_convolutions(
            unet,
            call=(args, kwargs),
            ref16=ref16,
            entry=entry,
            frames=(animator, portrait, driving, fp16_frames),
        )
    # every product in FP8 (thresholds off): what the thresholds keep out
    every = _fp8.use_fp8(unet, min_weight_elements=0, min_fed_in_features=0, min_tokens=1)
    with torch.no_grad():
        entry["every_product"] = {
            "layers_in_fp8": every,
            "unet_rel_error_vs_fp16": relative_error(unet(*args, **kwargs).sample.float(), ref16),
        }
    results["fidelity"] = entry
    print(json.dumps(entry, indent=1))
    return [args, kwargs]


def fidelity_with_convolutions(unet, call, ref16, entry: dict, frames) -> None:
    """``model.fp8=unet``: the shipped rule's products and the UNet's convolutions (_fp8_conv)."""
    args, kwargs = call
    animator, portrait, driving, fp16_frames = frames
    entry["unet_convolutions"] = _fp8_conv.use_fp8_convolutions(unet)
    with torch.no_grad():
        entry["unet_rel_error_fp8_unet_vs_fp16"] = relative_error(
            unet(*args, **kwargs).sample.float(), ref16
        )
    started = time.monotonic()
    unet_frames = stream_frames(animator, portrait, driving, None)
    print(f"fp8=unet stream: {len(unet_frames)} frames in {time.monotonic() - started:.1f} s")
    entry["frames_fp8_unet_vs_fp16"] = frame_figures(unet_frames, fp16_frames)
    for module in unet.modules():  # back to the linear products alone for what follows
        if hasattr(module, "fp8_conv"):
            del module.fp8_conv


def record_shapes(unet, args, kwargs) -> Counter:
    """(M, K, N) of every product in one call (thresholds off: each goes through _fp8.linear)."""
    shapes: Counter = Counter()
    original = _fp8.linear

    def recording(x, weight, bias, owner):
        shape = x.shape  # a tensor, or an input a kernel wrote in FP8 (_fp8.Fp8Rows)
        shapes[(math.prod(shape[:-1]), shape[-1], weight.shape[0])] += 1
        return original(x, weight, bias, owner)

    _fp8.linear = recording
    try:
        with torch.no_grad():
            unet(*args, **kwargs)
    finally:
        _fp8.linear = original
    return shapes


def time_shape(m: int, k: int, n: int) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(m + k + n)
    xs = [torch.randn(m, k, device="cuda", generator=generator).half() for _ in range(2)]
    w = torch.randn(n, k, device="cuda", generator=generator).half() / math.sqrt(k)
    b = torch.randn(n, device="cuda", generator=generator).half()
    w_q, w_s = _fp8.quantize_weight(w)
    w_s = w_s.view(1, -1)
    w_t = w_q.t()
    pre = [_fp8.quantize_rows(x) for x in xs]
    one = torch.ones((), device="cuda")
    tensor_scale = w_s.amax()
    pre_t = [
        ((x.float() / x.abs().amax().float() * 448).to(_fp8.FP8), x.abs().amax().float() / 448)
        for x in xs
    ]
    i = [0]

    def pick(items):
        i[0] ^= 1
        return items[i[0]]

    def fp16():
        F.linear(pick(xs), w, b)

    def row_full():
        q, s = _fp8.quantize_rows(pick(xs))
        torch._scaled_mm(q, w_t, scale_a=s, scale_b=w_s, bias=b, out_dtype=torch.float16)

    def row_gemm():
        q, s = pick(pre)
        torch._scaled_mm(q, w_t, scale_a=s, scale_b=w_s, bias=b, out_dtype=torch.float16)

    def tensor_full():
        x = pick(xs)
        s = x.abs().amax().float() / 448
        q = (x / s).to(_fp8.FP8)
        torch._scaled_mm(q, w_t, scale_a=s, scale_b=tensor_scale, bias=b, out_dtype=torch.float16)

    def tensor_gemm():
        q, s = pick(pre_t)
        torch._scaled_mm(q, w_t, scale_a=s, scale_b=one, bias=b, out_dtype=torch.float16)

    entry = {"M": m, "K": k, "N": n}
    for name, fn in [
        ("fp16_ms", fp16),
        ("fp8_row_ms", row_full),
        ("fp8_row_gemm_ms", row_gemm),
        ("fp8_tensor_ms", tensor_full),
        ("fp8_tensor_gemm_ms", tensor_gemm),
    ]:
        try:
            entry[name] = median_cuda_ms(fn, 30)
        except Exception as err:  # noqa: BLE001 - recorded, the other variants still run
            entry[name] = None
            entry[name.replace("_ms", "_error")] = f"{type(err).__name__}: {err}"[:200]
    entry["fp16_tflops"] = 2 * m * k * n / entry["fp16_ms"] / 1e9
    if entry.get("fp8_row_ms"):
        entry["speedup_row"] = entry["fp16_ms"] / entry["fp8_row_ms"]
    return entry


def shapes_table(shapes: Counter, results: dict) -> None:
    rows = []
    for (m, k, n), count in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2]):
        if k % 16 or n % 16:
            continue
        for streams in (1, 4):
            mm = m * streams if m >= 1024 else m  # per-frame products grow with the streams
            entry = time_shape(mm, k, n)
            entry.update(count=count, streams=streams)
            rows.append(entry)
            print(
                f"S={streams} M={mm:6d} K={k:5d} N={n:5d} x{count:3d}: fp16 {entry['fp16_ms']:.4f} "
                f"row {entry['fp8_row_ms'] or float('nan'):.4f} (gemm {entry['fp8_row_gemm_ms'] or float('nan'):.4f}) "
                f"tensor {entry['fp8_tensor_ms'] or float('nan'):.4f} (gemm {entry['fp8_tensor_gemm_ms'] or float('nan'):.4f})"
            )
    results["shapes"] = rows
    for streams in (1, 4):
        mine = [r for r in rows if r["streams"] == streams]
        fp16 = sum(r["count"] * r["fp16_ms"] for r in mine)
        chosen = sum(r["count"] * (r["fp8_row_ms"] if served(r) else r["fp16_ms"]) for r in mine)
        best = sum(r["count"] * min(r["fp16_ms"], r["fp8_row_ms"] or 1e9) for r in mine)
        results[f"products_ms_per_unet_call_S{streams}"] = {
            "fp16": fp16,
            "fp8_with_thresholds": chosen,
            "fp8_best_per_shape": best,
        }
        print(
            f"S={streams}: products per UNet call fp16 {fp16:.2f} ms, fp8 as chosen {chosen:.2f}, best {best:.2f}"
        )


def time_feed_forward(m: int, channels: int) -> dict:
    """One transformer feed-forward as the UNet runs it — the residual add + LayerNorm kernel,
    the GEGLU projection, the GEGLU kernel, the output product — on ``m`` token rows: fp16;
    FP8 as ``model.fp8=unet-linear`` runs it (inputs written in e4m3 by the two kernels, where
    the rule chose the product); and FP8 with a quantisation pass before each product instead."""
    from diffusers.models.attention import FeedForward  # noqa: PLC0415

    from pipeline.models import _fast_layers  # noqa: PLC0415

    shape = (16, m // 16, channels)  # (frames, pixels, C), as the transformers' tokens
    generator = torch.Generator(device="cuda").manual_seed(m + channels)
    x, delta = (torch.randn(shape, device="cuda", generator=generator).half() for _ in range(2))
    norm = torch.nn.LayerNorm(channels).cuda().half()
    ff = FeedForward(channels, activation_fn="geglu").cuda().half().eval()
    _fast_layers.use_fast_layers(ff)

    def chain():
        total, normed = _fast_layers.add_layer_norm(x, delta, norm, fp8_for=ff.net[0].proj)
        return _fast_layers.feed_forward(ff, normed) + total

    entry = {"M": m, "C": channels}
    with torch.no_grad():
        ref = chain().float()
        entry["fp16_ms"] = median_cuda_ms(chain, 30)
        entry["products_in_fp8"] = _fp8.use_fp8(ff)
        entry["fp8_fed_ms"] = median_cuda_ms(chain, 30)
        entry["fp8_fed_rel_error"] = relative_error(chain().float(), ref)
        real_feeds = _fp8.feeds
        _fp8.feeds = lambda owner, x: False  # each product quantises its own input
        try:
            entry["fp8_pass_ms"] = median_cuda_ms(chain, 30)
        finally:
            _fp8.feeds = real_feeds
    return entry


def feed_forward_table(call_shapes: Counter, results: dict) -> None:
    """:func:`time_feed_forward` at every feed-forward shape of one call, S=1 and S=4."""
    rows = []
    for (m, k, n), count in sorted(call_shapes.items()):
        if n != 8 * k:  # a feed-forward's GEGLU projection: C → 2 · 4C
            continue
        for streams in (1, 4):
            entry = time_feed_forward(m * streams, k)
            entry.update(count=count, streams=streams)
            rows.append(entry)
            print(
                f"feed-forward S={streams} M={m * streams:6d} C={k:5d} x{count:3d}: fp16 "
                f"{entry['fp16_ms']:.4f} ms, fp8 fed {entry['fp8_fed_ms']:.4f} "
                f"({entry['products_in_fp8']} products, rel. error {entry['fp8_fed_rel_error']:.4f}), "
                f"fp8 with passes {entry['fp8_pass_ms']:.4f}"
            )
    results["feed_forwards"] = rows
    for streams in (1, 4):
        mine = [r for r in rows if r["streams"] == streams]
        results[f"feed_forwards_ms_per_unet_call_S{streams}"] = {
            key: sum(r["count"] * r[f"{key}_ms"] for r in mine)
            for key in ("fp16", "fp8_fed", "fp8_pass")
        }
        print(
            f"S={streams}: feed-forwards per UNet call",
            results[f"feed_forwards_ms_per_unet_call_S{streams}"],
        )


def served(row: dict) -> bool:
    return (
        row["K"] * row["N"] >= _fp8.MIN_WEIGHT_ELEMENTS
        and row["M"] >= _fp8.MIN_TOKENS
        and row["fp8_row_ms"] is not None
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--skip-shapes", action="store_true")
    parser.add_argument(
        "--linear-only", action="store_true", help="no model.fp8=unet (convolutions) fidelity"
    )
    parser.add_argument(
        "--feed-forwards-only",
        action="store_true",
        help="time the feed-forwards (section 2), not every product shape (section 3)",
    )
    options = parser.parse_args()
    from pipeline.animate import StreamingAnimator  # noqa: PLC0415
    from pipeline.config import AnimatorConfig  # noqa: PLC0415
    from pipeline.models.weights import random_models  # noqa: PLC0415

    device = torch.device("cuda")
    results: dict = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    _fp8.check_fp8_kernels(device, torch.float16)
    models = random_models("full", device, torch.float16)
    models.set_attention_backend("sdpa")
    models.optimize(channels_last=True)
    animator = StreamingAnimator(models, AnimatorConfig(), resolution=512)
    call = fidelity(models, animator, options.frames, results, convolutions=not options.linear_only)
    Path(options.out).write_text(json.dumps(results, indent=1))
    if not options.skip_shapes:
        args, kwargs = call
        shapes = record_shapes(models.denoising_unet, args, kwargs)
        feed_forward_table(shapes, results)
        if not options.feed_forwards_only:
            shapes_table(shapes, results)
        Path(options.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
