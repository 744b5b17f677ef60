"""FP8 (e4m3) convolutions (model.fp8=unet, pipeline/models/_fp8_conv.py; issue 16).

The implicit-GEMM Triton kernel computes the convolution the model runs: without a GPU through
Triton's interpreter on CPU tensors in fp32 (the same indexing, padding masks and epilogue that
run on CUDA), on a GPU compiled, on fp16 operands. The layers call it where ``use_fp8_convolutions``
chose them; off CUDA they compute the same e4m3 arithmetic in PyTorch (the emulation), whose
error against fp32 is e4m3's and no more.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fp8_helpers import cuda_fp8, stream_tiny
from torch import nn

from pipeline.models import _fp8_conv
from pipeline.models._fp8 import FP8, FP8_MAX
from pipeline.models._fp8_conv import (
    Fp8ConvWeight,
    conv2d_nhwc,
    quantize_tensor,
    quantize_weight_rows,
    tensor_scale,
    use_fp8_convolutions,
    weight_rows,
)

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPE = torch.float16 if ON_GPU else torch.float32
# tiles the interpreter runs quickly; the shapes below leave partial tiles in M and N
CONFIG = (64, 64, 64, 4, 2) if ON_GPU else (16, 32, 64, 4, 1)
TOLERANCE = {"atol": 2e-3, "rtol": 2e-3} if ON_GPU else {"atol": 1e-5, "rtol": 1e-5}

# (N, C_in, H, W, C_out, kernel, stride, padding): a 3×3 "same" convolution, a strided one
# (the downsamplers) and a 1×1 one (the shortcut convolutions)
SHAPES = [
    (2, 64, 6, 5, 40, 3, 1, 1),
    (1, 128, 7, 7, 48, 3, 2, 1),
    (2, 64, 4, 4, 40, 1, 1, 0),
]


def operands(n, c, h, w, cout, k):
    generator = torch.Generator().manual_seed(n * 1000 + c + cout)
    x = torch.randn(n, c, h, w, generator=generator)
    weight = torch.randn(cout, c, k, k, generator=generator) / (c * k * k) ** 0.5
    bias = torch.randn(cout, generator=generator)
    x, weight, bias = (t.to(DEVICE, DTYPE) for t in (x, weight, bias))
    return x.contiguous(memory_format=torch.channels_last), weight, bias


@pytest.mark.parametrize("shape", SHAPES, ids=["3x3", "3x3-stride2", "1x1"])
def test_the_kernel_computes_the_convolution(shape) -> None:
    n, c, h, w, cout, k, stride, padding = shape
    x, weight, bias = operands(n, c, h, w, cout, k)
    expected = F.conv2d(x.float(), weight.float(), bias.float(), stride=stride, padding=padding)
    got = conv2d_nhwc(
        x, weight_rows(weight), (k, k), stride=stride, padding=padding, bias=bias,
        out_dtype=torch.float32, config=CONFIG,
    )  # fmt: skip
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize("shape", SHAPES, ids=["3x3", "3x3-stride2", "1x1"])
def test_e4m3_operands_are_rescaled_in_the_epilogue(shape) -> None:
    """The kernel on e4m3 input (one scale) and weights (a scale per output channel) equals the
    fp32 convolution of the dequantised operands; against the exact one it keeps e4m3's error."""
    n, c, h, w, cout, k, stride, padding = shape
    x, weight, bias = operands(n, c, h, w, cout, k)
    w8, w_scale = quantize_weight_rows(weight)
    x_scale = (x.abs().amax() / FP8_MAX).reshape(1)
    x8 = quantize_tensor(x, x_scale)
    assert w8.dtype == x8.dtype == FP8
    assert x8.is_contiguous(memory_format=torch.channels_last)
    dequantised_w = (w8.float() * w_scale[:, None]).reshape(cout, k, k, c).permute(0, 3, 1, 2)
    expected = F.conv2d(
        x8.float() * x_scale, dequantised_w, bias.float(), stride=stride, padding=padding
    )
    got = conv2d_nhwc(
        x8, w8, (k, k), stride=stride, padding=padding, bias=bias, x_scale=x_scale,
        w_scale=w_scale, out_dtype=torch.float32, config=CONFIG,
    )  # fmt: skip
    torch.testing.assert_close(got, expected, **TOLERANCE)
    exact = F.conv2d(x.float(), weight.float(), bias.float(), stride=stride, padding=padding)
    error = ((got - exact).abs().max() / exact.abs().max()).item()
    assert 1e-3 < error < 0.08  # rounded (3 mantissa bits), not wrong


def test_a_16_bit_input_is_cast_to_e4m3_inside_the_kernel() -> None:
    """What model.fp8=unet runs: the 16-bit input with the e4m3 weight, cast in the kernel under
    the scale given, equals the kernel on the input cast beforehand.

    The input's values lie on the e4m3 grid of a power-of-two scale, so the cast is exact: Triton's
    interpreter (CPU) rounds a value that carries into the next binade wrongly (31.9 → 16, not
    32), which the GPU's conversion does not; what is checked is the kernel's own part."""
    n, c, h, w, cout, k, stride, padding = SHAPES[0]
    x, weight, bias = operands(n, c, h, w, cout, k)
    w8, w_scale = quantize_weight_rows(weight)
    x_scale = torch.exp2(torch.ceil(torch.log2(x.abs().amax().float() / FP8_MAX))).reshape(1)
    x = (quantize_tensor(x, x_scale).float() * x_scale).to(x.dtype)
    got = conv2d_nhwc(
        x, w8, (k, k), stride=stride, padding=padding, bias=bias, x_scale=x_scale,
        w_scale=w_scale, out_dtype=torch.float32, config=CONFIG,
    )  # fmt: skip
    pre_cast = conv2d_nhwc(
        quantize_tensor(x, x_scale), w8, (k, k), stride=stride, padding=padding, bias=bias,
        x_scale=x_scale, w_scale=w_scale, out_dtype=torch.float32, config=CONFIG,
    )  # fmt: skip
    torch.testing.assert_close(got, pre_cast, **TOLERANCE)
    with pytest.raises(ValueError, match="needs x_scale and w_scale"):
        conv2d_nhwc(x, w8, (k, k), padding=padding, config=CONFIG)


def test_channels_that_do_not_fill_a_k_block_are_refused() -> None:
    x, weight, _ = operands(1, 48, 4, 4, 16, 3)
    with pytest.raises(ValueError, match="48 input channels"):
        conv2d_nhwc(x, weight_rows(weight), (3, 3), padding=1, config=CONFIG)


def test_the_scale_maps_the_largest_magnitude_to_448() -> None:
    x = torch.tensor([[-3.5, 1.0], [2.0, 0.5]])
    assert tensor_scale(x).item() == pytest.approx(3.5 / 448)
    assert tensor_scale(-x).item() == pytest.approx(3.5 / 448)
    assert tensor_scale(torch.zeros(3)).item() > 0  # no division by zero


def _layer(cin: int, cout: int, k: int, **kwargs) -> nn.Conv2d:
    torch.manual_seed(cin + cout + k)
    return nn.Conv2d(cin, cout, k, padding=k // 2, **kwargs).to(memory_format=torch.channels_last)


def test_a_chosen_layer_convolves_the_e4m3_rounded_operands() -> None:
    """Off CUDA, ``conv`` computes the kernel's function in fp32 from the e4m3-rounded input (one
    scale) and weight (a scale per output channel): equal to that, e4m3's error from the exact
    convolution; an unchosen layer, a training call or an NCHW input get the layer's own."""
    layer = _layer(64, 32, 3)
    x = torch.randn(2, 64, 5, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = layer(x)
        assert torch.equal(_fp8_conv.conv(layer, x, layer.bias), exact)  # not chosen yet
        layer.fp8_conv = Fp8ConvWeight()
        got = _fp8_conv.conv(layer, x, layer.bias)
        w_rows, w_scale = layer.fp8_conv.matrix(layer.weight)
        scale = tensor_scale(x)
        weight = (w_rows.float() * w_scale[:, None]).reshape(32, 3, 3, 64).permute(0, 3, 1, 2)
        rounded = F.conv2d(quantize_tensor(x, scale).float() * scale, weight, layer.bias, padding=1)
        torch.testing.assert_close(got, rounded, atol=1e-6, rtol=1e-6)
        error = ((got - exact).norm() / exact.norm()).item()
        assert 1e-3 < error < 0.1
        assert torch.equal(_fp8_conv.conv(layer, x.contiguous(), layer.bias), layer(x.contiguous()))
    assert torch.equal(
        _fp8_conv.conv(layer, x, layer.bias), layer._conv_forward(x, layer.weight, layer.bias)
    )


def test_a_changed_weight_is_quantised_again() -> None:
    layer = _layer(64, 16, 1)
    state = Fp8ConvWeight()
    rows, scale = (t.clone() for t in state.matrix(layer.weight))
    assert state.matrix(layer.weight)[0] is state.quantized  # cached while the weight stands
    with torch.no_grad():
        layer.weight.mul_(2)  # written in place
    new_rows, new_scale = state.matrix(layer.weight)
    torch.testing.assert_close(new_scale, 2 * scale)
    assert torch.equal(new_rows.float(), rows.float())


def test_which_convolutions_take_e4m3() -> None:
    """Convolutions of 64·k input channels; not narrower ones, grouped or dilated ones, the
    spatial transformers' 1×1 projections (linear products) or the upsamplers' convolutions."""
    from diffusers.models.upsampling import Upsample2D

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wide = nn.Conv2d(128, 64, 3, padding=1)
            self.shortcut = nn.Conv2d(64, 64, 1)
            self.down = nn.Conv2d(64, 64, 3, stride=2, padding=1)
            self.narrow = nn.Conv2d(48, 64, 3, padding=1)
            self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=2)
            self.dilated = nn.Conv2d(64, 64, 3, padding=2, dilation=2)
            self.proj_in = nn.Conv2d(64, 64, 1)
            self.upsampler = Upsample2D(64, use_conv=True)

    network = Network()
    assert use_fp8_convolutions(network) == 3
    chosen = {name for name, m in network.named_modules() if hasattr(m, "fp8_conv")}
    assert chosen == {"wide", "shortcut", "down"}
    assert use_fp8_convolutions(Network(), channel_multiple=16) == 4  # the tests' tiny widths


def test_the_option_lists_unet_and_refuses_the_cpu(tiny_weights) -> None:
    from pipeline.config import RenderConfig, config_problems
    from pipeline.models import load_personalive

    config = RenderConfig()
    config.model.fp8 = "unet"
    assert not config_problems(config)
    models = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
    with pytest.raises(ValueError, match="model.fp8=unet cannot run"):
        models.optimize(channels_last=True, fp8="unet")
    assert not any(hasattr(m, "fp8_conv") for m in models.denoising_unet.modules())


@pytest.mark.slow
def test_tiny_model_with_e4m3_convolutions_stays_close_to_fp32(tiny_weights) -> None:
    """The whole streaming path with the tiny UNet's convolutions in emulated e4m3 (its widths:
    channel multiple 16) on top of every linear product: frames close to fp32."""
    from pipeline.models import load_personalive
    from pipeline.models._fp8 import use_fp8

    reference = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
    reference.optimize(channels_last=True)
    quantized = copy.deepcopy(reference)
    assert use_fp8_convolutions(quantized.denoising_unet, channel_multiple=16) > 10
    converted = copy.deepcopy(quantized)
    use_fp8(converted.denoising_unet, min_weight_elements=0, min_fed_in_features=0, min_tokens=1)
    calls: list[nn.Module] = []  # the chosen layers' calls: the e4m3 path ran
    hooks = [
        m.register_forward_pre_hook(lambda module, _args: calls.append(module))
        for m in quantized.denoising_unet.modules()
        if hasattr(m, "fp8_conv")
    ]

    expected = stream_tiny(reference)
    for models in (quantized, converted):  # convolutions; convolutions and linear products
        got = stream_tiny(models)
        assert got.shape == expected.shape and got.shape[0] == 16
        mse = (got.double() - expected.double()).square().mean().item()
        psnr = 10 * np.log10(1.0 / mse)
        print(f"frames PSNR {psnr:.1f} dB")
        assert 25 < psnr < 90  # changed by e4m3's rounding, not broken
    assert calls
    for hook in hooks:
        hook.remove()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_fp8(), reason="needs a CUDA GPU with FP8 tensor cores")
def test_the_gpu_kernel_matches_the_emulation_and_replays_in_a_cuda_graph() -> None:
    """The load-time check passes; a chosen layer's call (scale, cast in the kernel, product) is
    captured and replayed by a CUDA graph with the result of the eager call."""
    _fp8_conv.check_fp8_conv_kernel("cuda", torch.float16)
    layer = _layer(320, 320, 3).cuda().half()
    layer.fp8_conv = Fp8ConvWeight()
    x = torch.randn(16, 320, 32, 32, device="cuda").half()
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = _fp8_conv.conv(layer, x, layer.bias)
        exact = F.conv2d(x.float(), layer.weight.float(), layer.bias.float(), padding=1)
        assert ((eager.float() - exact).norm() / exact.norm()).item() < 0.05
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = _fp8_conv.conv(layer, x, layer.bias)
        x.mul_(0.5)
        graph.replay()
        expected = _fp8_conv.conv(layer, x, layer.bias)
    torch.testing.assert_close(captured, expected, atol=0, rtol=0)
