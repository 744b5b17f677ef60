"""Check and time the Triton NHWC kernels against the PyTorch paths they replace, on a CUDA GPU.

    python scripts/check_nhwc_kernels.py [--out FILE.json]

For the activation shapes of a denoising call at 8 streams (UNet, 128 frames of 64×64 latents)
and of its VAE decode (32 frames to 512×512), fp16 channels-last: relative error against fp32
PyTorch on the same inputs, median time (``triton.testing.do_bench``) of the kernel, of the
PyTorch channels-last path (:func:`pipeline.models._fast_layers.group_norm_channels_last` without
kernels) and of ``F.group_norm`` (which copies to NCHW), and the kernel's achieved bandwidth
(bytes it must move: the input read twice, the output written once); then the same for the
fused residual add + LayerNorm of the transformers' token rows (two reads, two writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import _fast_layers, _nhwc_kernels  # noqa: E402

SHAPES = [  # (label, N, C, H, W)
    ("unet 64x64", 128, 320, 64, 64),
    ("unet 32x32", 128, 640, 32, 32),
    ("unet 16x16", 128, 1280, 16, 16),
    ("unet 8x8", 128, 1280, 8, 8),
    ("vae 64x64", 32, 512, 64, 64),
    ("vae 128x128", 32, 512, 128, 128),
    ("vae 256x256", 32, 256, 256, 256),
    ("vae 512x512", 32, 128, 512, 512),
]

TOKEN_SHAPES = [  # (label, B, L, C): spatial transformer tokens at 8 streams
    ("tokens 64x64", 128, 4096, 320),
    ("tokens 32x32", 128, 1024, 640),
    ("tokens 16x16", 128, 256, 1280),
    ("tokens 8x8", 128, 64, 1280),
]


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return ((got.float() - reference).norm() / reference.norm()).item()


def main() -> None:
    import triton.testing

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for label, n, c, h, w in SHAPES:
        x = (torch.randn(n, c, h, w, device="cuda") * 3 + 1).half()
        x = x.to(memory_format=torch.channels_last)
        weight = torch.randn(c, device="cuda").half()
        bias = torch.randn(c, device="cuda").half()
        addend = torch.randn(n, c, device="cuda")
        reference = F.silu(
            F.group_norm(
                x.float() + addend[:, :, None, None], 32, weight.float(), bias.float(), 1e-6
            )
        )
        got = _nhwc_kernels.group_norm(x, 32, weight, bias, 1e-6, addend=addend, silu=True)
        error = relative_error(got, reference)
        del reference
        residual = torch.randn_like(x)
        target = torch.randn_like(x)
        expected = target.float() + bias.float()[:, None, None] + residual.float()
        bias_error = relative_error(
            _nhwc_kernels.add_bias_residual(target.clone(), bias, residual, 1.0), expected
        )
        del expected

        def kernel(x=x, weight=weight, bias=bias, addend=addend):
            return _nhwc_kernels.group_norm(x, 32, weight, bias, 1e-6, addend=addend, silu=True)

        def torch_nhwc(x=x, weight=weight, bias=bias, addend=addend):
            with _kernels_off():
                return _fast_layers.group_norm_channels_last(
                    x, 32, weight, bias, 1e-6, addend=addend, silu=True
                )

        def stock(x=x, weight=weight, bias=bias, addend=addend):
            return F.silu(F.group_norm(x + addend.half()[:, :, None, None], 32, weight, bias, 1e-6))

        def bias_kernel(target=target, bias=bias, residual=residual):
            return _nhwc_kernels.add_bias_residual(target, bias, residual, 1.0)

        def bias_torch(target=target, bias=bias, residual=residual):
            return target + bias[:, None, None] + residual

        times = {
            name: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            for name, fn in [
                ("kernel_ms", kernel),
                ("torch_nhwc_ms", torch_nhwc),
                ("stock_ms", stock),
                ("bias_kernel_ms", bias_kernel),
                ("bias_torch_ms", bias_torch),
            ]
        }
        nbytes = x.numel() * x.element_size()
        row = {
            "shape": label,
            "NCHW": [n, c, h, w],
            "rel_error": error,
            "bias_rel_error": bias_error,
            **times,
            "kernel_GBps": 3 * nbytes / times["kernel_ms"] / 1e6,
            "bias_kernel_GBps": 3 * nbytes / times["bias_kernel_ms"] / 1e6,
        }
        rows.append(row)
        print(
            f"{label:12s} err {error:.1e}/{bias_error:.1e}  GN+SiLU kernel {times['kernel_ms']:.3f} ms "
            f"({row['kernel_GBps']:.0f} GB/s), torch NHWC {times['torch_nhwc_ms']:.3f}, "
            f"stock {times['stock_ms']:.3f}  |  bias+residual kernel {times['bias_kernel_ms']:.3f} "
            f"({row['bias_kernel_GBps']:.0f} GB/s), torch {times['bias_torch_ms']:.3f}",
            flush=True,
        )
        del x, residual, target
        torch.cuda.empty_cache()
    for label, b, length, c in TOKEN_SHAPES:
        x = torch.randn(b, length, c, device="cuda").half()
        delta = torch.randn_like(x)
        clip = torch.randn(b, c, device="cuda").half()
        weight, bias = torch.randn(c, device="cuda").half(), torch.randn(c, device="cuda").half()
        total, normed = _nhwc_kernels.add_layer_norm(x, delta, weight, bias, 1e-5, row_addend=clip)
        expected = (x.float() + delta.float() + clip.float()[:, None, :]).half().float()
        error = relative_error(
            normed, F.layer_norm(expected, (c,), weight.float(), bias.float(), 1e-5)
        )

        def fused(x=x, delta=delta, weight=weight, bias=bias, clip=clip):
            return _nhwc_kernels.add_layer_norm(x, delta, weight, bias, 1e-5, row_addend=clip)

        def separate(x=x, delta=delta, weight=weight, bias=bias, clip=clip, c=c):
            total = delta + x + clip[:, None, :]
            return total, F.layer_norm(total, (c,), weight, bias, 1e-5)

        fused_ms = triton.testing.do_bench(fused, warmup=25, rep=100, return_mode="median")
        torch_ms = triton.testing.do_bench(separate, warmup=25, rep=100, return_mode="median")
        # the feed-forward's GEGLU after its projection to 2 × 4C: kernel vs the contiguous
        # halves' GELU and in-place product (SplitGEGLU's PyTorch path)
        projected = torch.randn(b, length, 8 * c, device="cuda").half()
        value, gate = projected.chunk(2, dim=-1)
        geglu_error = relative_error(
            _nhwc_kernels.geglu(projected), value.float() * F.gelu(gate.float())
        )
        value, gate = value.contiguous(), gate.contiguous()
        geglu_ms = triton.testing.do_bench(
            lambda p=projected: _nhwc_kernels.geglu(p), warmup=25, rep=100, return_mode="median"
        )
        geglu_torch_ms = triton.testing.do_bench(
            lambda v=value, g=gate: v.clone().mul_(F.gelu(g)),
            warmup=25,
            rep=100,
            return_mode="median",
        )
        nbytes = x.numel() * x.element_size()
        row = {
            "shape": label,
            "BLC": [b, length, c],
            "rel_error": error,
            "add_ln_kernel_ms": fused_ms,
            "add_ln_torch_ms": torch_ms,
            "add_ln_kernel_GBps": 4 * nbytes / fused_ms / 1e6,
            "geglu_rel_error": geglu_error,
            "geglu_kernel_ms": geglu_ms,
            "geglu_torch_ms": geglu_torch_ms,  # includes one clone (value is reused)
            "geglu_kernel_GBps": 12 * nbytes / geglu_ms / 1e6,
        }
        rows.append(row)
        print(
            f"{label:12s} err {error:.1e}/{geglu_error:.1e}  add+LayerNorm kernel {fused_ms:.3f} ms "
            f"({row['add_ln_kernel_GBps']:.0f} GB/s), torch {torch_ms:.3f}  |  GEGLU kernel "
            f"{geglu_ms:.3f} ms ({row['geglu_kernel_GBps']:.0f} GB/s), torch {geglu_torch_ms:.3f}",
            flush=True,
        )
        del x, delta, total, normed, projected, value, gate
    copy = torch.empty(2**28, device="cuda", dtype=torch.float16)
    copy_ms = triton.testing.do_bench(
        lambda: copy.clone(), warmup=25, rep=100, return_mode="median"
    )
    print(f"device copy: {2 * copy.numel() * 2 / copy_ms / 1e6:.0f} GB/s (read + write)")
    if args.out:
        args.out.write_text(
            json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1)
        )


class _kernels_off:
    """Route :mod:`._fast_layers` to its PyTorch ops for a timing."""

    def __enter__(self):
        self.saved = _fast_layers._use_kernels
        _fast_layers._use_kernels = lambda x: False

    def __exit__(self, *exc):
        _fast_layers._use_kernels = self.saved


if __name__ == "__main__":
    main()
