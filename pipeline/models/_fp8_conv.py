"""FP8 (e4m3) convolutions for the denoising UNet (``model.fp8=unet``, issue 16).

PyTorch has no FP8 convolution, so this is an implicit-GEMM convolution in Triton
(:func:`conv2d_nhwc`): output pixels × output channels, summed over the kernel's taps × input
channels in one pipelined loop, reading the channels-last input where it lies (no im2col copy).

* Weights: e4m3 with one float32 scale per output channel, in K order (taps, then input
  channels: :func:`weight_rows`), quantised once and again only when the weight changes
  (:class:`Fp8ConvWeight`).
* Activations: one scale for the whole input tensor, from its largest magnitude
  (:func:`tensor_scale`: one reduction, a read of the input); the kernel casts each tile to e4m3
  as it loads it. A 3×3 convolution sums over nine pixels, so a per-pixel scale could not leave
  the sum; the per-tensor one multiplies the result in the epilogue, with the weight's scales
  and the bias, before the cast to the layer's dtype.
* Which convolutions: those of 64·k input channels (``groups=1``, no dilation, zero padding,
  square stride and padding) — every 3×3 and shortcut convolution of the UNet's ResNet blocks and
  its downsamplers; ``conv_in`` (4 channels) and the spatial transformers' 1×1 projections
  (linear products: :mod:`._fp8`) are not, nor the upsamplers' convolutions, which mostly run as
  four phases on the small input with weights of their own
  (:func:`._fast_layers.upsample_conv_phases`).

Off CUDA (the tests) :func:`conv` computes the same function from the e4m3-rounded operands in
fp32: the emulation the numerics are checked against. Triton's interpreter runs the kernel on CPU
too, but its fp32 → e4m3 cast mis-rounds values that carry into the next binade (31.9 → 16), so
the tests drive it with values the cast keeps exactly.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ._fp8 import FP8, FP8_MAX, Fp8Weight, quantize_weight

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

logger = logging.getLogger(__name__)

CHANNEL_MULTIPLE = 64  # input channels a converted convolution has a multiple of (K blocks)


if triton is not None:

    @triton.jit
    def _conv_kernel(
        x_ptr, w_ptr, out_ptr, bias_ptr, w_scale_ptr, x_scale_ptr,
        batch, height, width, channels, out_h, out_w, out_channels,
        KW: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr,
        HAS_BIAS: tl.constexpr, SCALED: tl.constexpr, CAST_X: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        TAPS: tl.constexpr,
    ):  # fmt: skip
        # one tile of output pixels × output channels; the reduction runs over taps × channels
        # in one loop (channels % BLOCK_K == 0, so a K block never straddles two taps). CAST_X:
        # the input comes in 16 bits and each tile is cast to e4m3 under x_scale as it is loaded
        pid = tl.program_id(0)
        pixels = batch * out_h * out_w
        tiles_m = tl.cdiv(pixels, BLOCK_M)
        tiles_n = tl.cdiv(out_channels, BLOCK_N)
        group = GROUP_M * tiles_n  # neighbouring programs share input rows (L2)
        first_m = (pid // group) * GROUP_M
        rows_in_group = min(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % group) % rows_in_group
        pid_n = (pid % group) // rows_in_group

        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        image = rm // (out_h * out_w)
        oh = (rm // out_w) % out_h
        ow = rm % out_w
        in_m = rm < pixels
        in_n = rn < out_channels
        k_total = TAPS * channels
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if CAST_X:
            inverse = 1.0 / tl.load(x_scale_ptr)
        for k0 in range(0, k_total, BLOCK_K):
            tap = k0 // channels
            c0 = k0 - tap * channels
            ih = oh * STRIDE - PAD + tap // KW
            iw = ow * STRIDE - PAD + tap % KW
            ok = in_m & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
            pixel = (image.to(tl.int64) * height + ih) * width + iw
            a = tl.load(
                x_ptr + pixel[:, None] * channels + (c0 + rk)[None, :], mask=ok[:, None], other=0.0
            )
            b = tl.load(
                w_ptr + rn.to(tl.int64)[:, None] * k_total + (k0 + rk)[None, :],
                mask=in_n[:, None],
                other=0.0,
            )
            if CAST_X:
                a = tl.clamp(a.to(tl.float32) * inverse, -448.0, 448.0).to(b.dtype)
            acc = tl.dot(a, tl.trans(b), acc)
        if SCALED:
            acc = (
                acc
                * tl.load(x_scale_ptr)
                * tl.load(w_scale_ptr + rn, mask=in_n, other=0.0)[None, :]
            )
        if HAS_BIAS:
            acc = acc + tl.load(bias_ptr + rn, mask=in_n, other=0.0).to(tl.float32)[None, :]
        tl.store(
            out_ptr + rm.to(tl.int64)[:, None] * out_channels + rn[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=in_m[:, None] & in_n[None, :],
        )


def weight_rows(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, KH, KW) → (C_out, KH·KW·C_in), input channels fastest: the kernel's K order."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()


def quantize_weight_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution's weight → e4m3 rows (:func:`weight_rows`) and one float32 scale per output
    channel."""
    return quantize_weight(weight_rows(weight.detach()))


def dequantize_weight_rows(
    rows: torch.Tensor, scale: torch.Tensor, kernel: tuple[int, int]
) -> torch.Tensor:
    """e4m3 rows and their scales → the fp32 weight ``(C_out, C_in, KH, KW)`` they stand for."""
    weight = (rows.float() * scale[:, None]).reshape(rows.shape[0], *kernel, -1)
    return weight.permute(0, 3, 1, 2)


def tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """One float32 scale ``(1,)`` that maps ``x``'s largest magnitude to 448 (on ``x``'s device,
    no host synchronisation: CUDA graphs capture it)."""
    low, high = torch.aminmax(x)
    return (torch.maximum(-low, high).float().clamp(min=1e-12) / FP8_MAX).reshape(1)


def quantize_tensor(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` in e4m3 under one scale (PyTorch ops; same memory format)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def block_config(channels: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for ``channels`` input channels."""
    return (128, 128, 128 if channels % 128 == 0 else 64, 8, 3)


def conv2d_nhwc(
    x: torch.Tensor,
    w_rows: torch.Tensor,
    kernel: tuple[int, int],
    *,
    stride: int = 1,
    padding: int = 0,
    bias: torch.Tensor | None = None,
    x_scale: torch.Tensor | None = None,
    w_scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
    config: tuple[int, int, int, int, int] | None = None,
) -> torch.Tensor:
    """Convolution of a channels-last ``x`` (N, C, H, W) with ``w_rows`` (:func:`weight_rows`)
    as one implicit-GEMM Triton kernel. With ``x_scale``/``w_scale`` the operands are e4m3 (``x``
    already, or cast in the kernel under ``x_scale`` when it comes in 16 bits) and the product is
    rescaled in the epilogue. Returns channels-last (N, C_out, OH, OW) in ``out_dtype``."""
    n, c, h, w = x.shape
    kh, kw = kernel
    block_m, block_n, block_k, warps, stages = config or block_config(c)
    if c % block_k:
        raise ValueError(f"{c} input channels are not a multiple of BLOCK_K={block_k}")
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    cout = w_rows.shape[0]
    x_nhwc = x.permute(0, 2, 3, 1)
    if not x_nhwc.is_contiguous():
        raise ValueError("conv2d_nhwc needs a channels-last input")
    scaled = w_rows.dtype == FP8
    if scaled and (x_scale is None or w_scale is None):
        raise ValueError("an e4m3 weight needs x_scale and w_scale")
    out = torch.empty((n, out_h, out_w, cout), device=x.device, dtype=out_dtype)
    dummy = w_rows  # a pointer for the arguments a variant does not read
    grid = (triton.cdiv(n * out_h * out_w, block_m) * triton.cdiv(cout, block_n),)
    _conv_kernel[grid](
        x_nhwc, w_rows, out, bias if bias is not None else dummy,
        w_scale if scaled else dummy, x_scale if scaled else dummy,
        n, h, w, c, out_h, out_w, cout,
        KW=kw, STRIDE=stride, PAD=padding, HAS_BIAS=bias is not None, SCALED=scaled,
        CAST_X=scaled and x.dtype != FP8,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, TAPS=kh * kw,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out.permute(0, 3, 1, 2)


def emulated_conv(
    conv: nn.Conv2d,
    x: torch.Tensor,
    w_rows: torch.Tensor,
    w_scale: torch.Tensor,
    x_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """What the kernel computes, from the e4m3-rounded operands in fp32 (CPU; the tests)."""
    x_rounded = quantize_tensor(x, x_scale).float() * x_scale
    out = F.conv2d(
        x_rounded,
        dequantize_weight_rows(w_rows, w_scale, conv.kernel_size),
        None if bias is None else bias.float(),
        stride=conv.stride,
        padding=conv.padding,
    )
    return out.to(x.dtype)


class Fp8ConvWeight(Fp8Weight):
    """A convolution's weight in e4m3 rows (:func:`weight_rows`) with per-output-channel scales,
    kept like a linear layer's (:class:`._fp8.Fp8Weight`: quantised again whenever the weight
    tensor changes); its ``min_tokens`` is not consulted."""

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_weight_rows(weight)


def conv(conv: nn.Conv2d, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv``'s convolution of ``x`` with its weight plus ``bias`` (not the layer's own bias:
    the fused layers add that elsewhere): in e4m3 where :func:`use_fp8_convolutions` chose
    ``conv`` and this is inference on a channels-last ``x``; else the layer's own convolution."""
    fp8: Fp8ConvWeight | None = getattr(conv, "fp8_conv", None)
    if (
        fp8 is None
        or torch.is_grad_enabled()
        or x.dim() != 4
        or not x.permute(0, 2, 3, 1).is_contiguous()
    ):
        return conv._conv_forward(x, conv.weight, bias)
    w_rows, w_scale = fp8.matrix(conv.weight)
    x_scale = tensor_scale(x)
    if triton is None or not x.is_cuda:
        return emulated_conv(conv, x, w_rows, w_scale, x_scale, bias)
    return conv2d_nhwc(
        x,
        w_rows,
        conv.kernel_size,
        stride=conv.stride[0],
        padding=conv.padding[0],
        bias=bias,
        x_scale=x_scale,
        w_scale=w_scale,
        out_dtype=x.dtype,
    )


def convertible(module: nn.Module, channel_multiple: int = CHANNEL_MULTIPLE) -> bool:
    """Whether :func:`conv2d_nhwc` computes ``module``'s convolution (and it is wide enough)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
        and module.padding[0] == module.padding[1]
        and module.stride[0] == module.stride[1]
        and module.kernel_size[0] == module.kernel_size[1]
        and module.in_channels % channel_multiple == 0
    )


def use_fp8_convolutions(network: nn.Module, *, channel_multiple: int = CHANNEL_MULTIPLE) -> int:
    """Mark the convolutions of ``network`` that :func:`conv` runs in e4m3 (their weights
    quantised now), leaving out the spatial transformers' 1×1 projections (linear products,
    :func:`._fp8.use_fp8`). ``channel_multiple``: smaller in the tests' emulation (the tiny
    model's widths). Returns how many were marked."""
    from diffusers.models.upsampling import Upsample2D  # noqa: PLC0415 - diffusers is heavy

    # the upsamplers' convolutions mostly run as four phases on the small input, with weights of
    # their own (_fast_layers.upsample_conv_phases): they stay in the model's dtype throughout
    upsampling = {
        id(child) for m in network.modules() if isinstance(m, Upsample2D) for child in m.children()
    }
    marked = 0
    for name, module in network.named_modules():
        if (
            name.rsplit(".", 1)[-1] in ("proj_in", "proj_out")
            or id(module) in upsampling
            or not convertible(module, channel_multiple)
        ):
            continue
        module.fp8_conv = Fp8ConvWeight()
        module.fp8_conv.matrix(module.weight)  # quantised once, here, not inside the first call
        marked += 1
    logger.info("FP8 (e4m3) convolutions in %d layers of %s", marked, type(network).__name__)
    return marked


def check_fp8_conv_kernel(device: torch.device | str, dtype: torch.dtype) -> None:
    """One e4m3 convolution on ``device`` against its emulation: raises with what to do when
    this Triton or GPU cannot run it."""
    generator = torch.Generator().manual_seed(0)
    layer = nn.Conv2d(64, 96, 3, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / 24)
        layer = layer.to(device, dtype).to(memory_format=torch.channels_last)
        x = torch.randn(2, 64, 9, 7, generator=generator).to(device, dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        layer.fp8_conv = Fp8ConvWeight()
        w_rows, w_scale = layer.fp8_conv.matrix(layer.weight)
        x_scale = tensor_scale(x)
        try:
            got = conv(layer, x, layer.bias).float()
        except Exception as err:  # noqa: BLE001 - reported with what to do
            raise RuntimeError(
                f"model.fp8=unet: the e4m3 convolution kernel failed on {device} in {dtype} "
                f"({type(err).__name__}: {err}); use model.fp8=unet-linear or none"
            ) from err
        expected = emulated_conv(layer, x.float(), w_rows, w_scale, x_scale, layer.bias).float()
    error = ((got - expected).norm() / expected.norm()).item()
    if not error < 1e-2:
        raise RuntimeError(
            f"model.fp8=unet: the e4m3 convolution on {device} differs from the e4m3 arithmetic "
            f"by {error:.2%}; use model.fp8=unet-linear or none"
        )
