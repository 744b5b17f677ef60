"""Probe (GPU): "nearest 2× upsampling, then a 3×3 convolution" at the decoder's and the UNet's
shapes, the stock way (upsampling kernel, then cuDNN on the 4× larger activation, then the bias
pass) against the four output phases (one 2×2 convolution of the small input, then one pass
that interleaves them and adds the bias: ``_fast_layers.upsample_conv_phases``). Medians of
CUDA-event timed launches; errors against the fp32 computation, relative to its largest value.

    python -m scripts.probe_upsample_conv [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch

from pipeline.bench import median_cuda_ms
from pipeline.models import _fast_layers, _nhwc_kernels

# (N, C_in, C_out, H) at S=8: the decoder's 32 frames, the UNet's 128 (16 frames × 8 streams)
SHAPES = [
    (32, 512, 512, 64),
    (32, 512, 512, 128),
    (32, 256, 256, 256),
    (128, 1280, 1280, 8),
    (128, 1280, 1280, 16),
    (128, 640, 640, 32),
]


def stock(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv(_nhwc_kernels.upsample_nearest_2x(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    device, rows = torch.device("cuda"), []
    for n, cin, cout, h in SHAPES:
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(device, torch.float16)
        conv.__class__ = _fast_layers.ChannelsLastConv2d  # bias in one pass, as in the models
        conv.to(memory_format=torch.channels_last)
        x = torch.randn(n, cin, h, h, device=device, dtype=torch.float16)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            exact = _fast_layers.upsample_conv_fp32(conv, x)
            scale = exact.abs().max()
            errors = {
                name: ((fn(conv, x).float() - exact).abs().max() / scale).item()
                for name, fn in (("stock", stock), ("phases", _fast_layers.upsample_conv_phases))
            }
            del exact
            row = {
                "shape": [n, cin, cout, h],
                "stock_ms": median_cuda_ms(partial(stock, conv, x), 15, warmup=1),
                "phases_ms": median_cuda_ms(
                    partial(_fast_layers.upsample_conv_phases, conv, x), 15, warmup=1
                ),
                "stock_error": errors["stock"],
                "phases_error": errors["phases"],
            }
        row["speedup"] = row["stock_ms"] / row["phases_ms"]
        rows.append(row)
        print(
            f"N={n} {cin}->{cout} {h}->{2 * h}: stock {row['stock_ms']:.3f} ms, phases "
            f"{row['phases_ms']:.3f} ms (x{row['speedup']:.2f}); max error vs fp32 "
            f"{row['stock_error']:.1e} / {row['phases_error']:.1e}"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
