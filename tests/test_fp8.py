"""FP8 (e4m3) matrix products (model.fp8, pipeline/models/_fp8.py).

On CPU the FP8 arithmetic is emulated (operands rounded to torch.float8_e4m3fn, scales applied,
the product in fp32): the function torch._scaled_mm computes on a GPU. The tests check that the
layers compute it, that its error against fp32 is e4m3's and no more, which layers it takes, and
that the option refuses devices without FP8 tensor cores. The GPU kernels are checked against
the same emulation in the tests marked ``gpu``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fp8_helpers import cuda_fp8, stream_tiny
from torch import nn

from pipeline.models import _fp8
from pipeline.models._fp8 import Fp8Linear, quantize_rows, quantize_weight, use_fp8

# e4m3 keeps 3 mantissa bits: a normal value is rounded to within 2^-4 of itself
E4M3_ROUNDING = 2.0**-4


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


def test_weights_are_scaled_per_output_channel_and_rounded_to_e4m3() -> None:
    torch.manual_seed(0)
    # rows of very different magnitudes: one scale each keeps every row's precision
    weight = torch.randn(64, 48) * torch.logspace(-3, 2, 64)[:, None]
    quantized, scale = quantize_weight(weight)
    assert quantized.dtype == torch.float8_e4m3fn and scale.shape == (64,)
    assert torch.equal(quantized.float().abs().amax(dim=1), torch.full((64,), 448.0))
    restored = quantized.float() * scale[:, None]
    normal = weight.abs() >= scale[:, None] * 2.0**-6  # e4m3's smallest normal, scaled
    error = (restored - weight).abs() / weight.abs()
    assert error[normal].max() <= E4M3_ROUNDING + 1e-6
    for row in (0, 63):  # the smallest and largest rows alike
        assert relative_error(restored[row], weight[row]) < 0.04


def test_activations_are_scaled_per_token() -> None:
    torch.manual_seed(1)
    x = torch.randn(300, 320) * torch.logspace(-2, 3, 300)[:, None]
    quantized, scale = quantize_rows(x.half())
    assert quantized.shape == x.shape and scale.shape == (300, 1) and scale.dtype == torch.float32
    restored = quantized.float() * scale
    per_token = (restored - x).norm(dim=1) / x.norm(dim=1)
    # Gaussian rows: the largest element maps to 448, typical ones land mid-range (RMS ~2.5 %)
    assert per_token.max() < 0.04 and per_token.min() > 0.005
    with pytest.raises(ValueError, match="tokens, features"):
        quantize_rows(x[None])


def test_fp8_linear_computes_the_e4m3_product_and_stays_within_its_error() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(640, 1280)
    x = torch.randn(2, 700, 640)
    with torch.no_grad():
        expected = layer(x)
        assert use_fp8(layer, min_weight_elements=0, min_tokens=1) == 1
        assert isinstance(layer, Fp8Linear)
        got = layer(x)
    # the function torch._scaled_mm computes: dequantised operands, fp32 product, bias
    x_q, x_scale = quantize_rows(x.reshape(-1, 640))
    w_q, w_scale = quantize_weight(layer.weight)
    emulated = (x_q.float() * x_scale) @ (w_q.float() * w_scale[:, None]).T + layer.bias
    assert got.shape == expected.shape
    assert torch.allclose(got.reshape(-1, 1280), emulated, atol=1e-5, rtol=1e-5)
    # error of e4m3 operands in a 640-term dot product: ~√2 · 2.5 % RMS, averaged over the terms
    assert 0.01 < relative_error(got, expected) < 0.05


def test_small_layers_and_small_calls_stay_in_the_model_dtype() -> None:
    torch.manual_seed(3)
    network = nn.Sequential(nn.Linear(640, 2560), nn.Linear(1280, 5120), nn.Linear(5120, 1280))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    assert use_fp8(network) == 2  # narrower products gain nothing (measured): not marked
    assert type(network[0]) is nn.Linear and isinstance(network[1], Fp8Linear)
    assert network.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())
    layer = network[1]
    few = torch.randn(2, (_fp8.MIN_TOKENS - 1) // 2, 1280)  # e.g. the 8×8 level at one stream
    many = torch.randn(_fp8.MIN_TOKENS, 1280)
    with torch.no_grad():
        assert torch.equal(layer(few), F.linear(few, layer.weight, layer.bias))
        assert not torch.equal(layer(many), F.linear(many, layer.weight, layer.bias))
    with torch.enable_grad():  # training keeps full precision
        assert torch.equal(layer(many), F.linear(many, layer.weight, layer.bias))


def test_a_changed_weight_is_quantised_again() -> None:
    torch.manual_seed(4)
    layer = nn.Linear(64, 64)
    use_fp8(layer, min_weight_elements=0, min_tokens=1)
    x = torch.randn(32, 64)
    with torch.no_grad():
        first = layer(x)
        layer.weight.mul_(2)  # in place (load_state_dict copies into the same tensor)
        second = layer(x)
    assert torch.allclose(second - layer.bias, 2 * (first - layer.bias), rtol=1e-5, atol=1e-5)


def test_the_option_refuses_devices_without_fp8_tensor_cores() -> None:
    _fp8.check_fp8_mode("none", "cpu")
    with pytest.raises(ValueError, match=r"compute capability 8\.9.*model\.fp8=none"):
        _fp8.check_fp8_mode("unet-linear", "cpu")
    with pytest.raises(ValueError, match="choose one of none, unet-linear"):
        _fp8.check_fp8_mode("e4m3", "cpu")


def test_config_lists_the_fp8_choices() -> None:
    from pipeline.config import RenderConfig, config_problems

    config = RenderConfig()
    assert config.model.fp8 == "none" and not config_problems(config)
    config.model.fp8 = "fp8"
    assert any("model.fp8='fp8'" in p and "unet-linear" in p for p in config_problems(config))


def test_optimize_refuses_fp8_on_cpu(tiny_weights) -> None:
    from pipeline.models import load_personalive

    models = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
    with pytest.raises(ValueError, match="FP8 matrix products need an NVIDIA GPU"):
        models.optimize(channels_last=True, fp8="unet-linear")
    assert not any(hasattr(m, "fp8") for m in models.denoising_unet.modules())  # nothing changed


@pytest.mark.slow
def test_tiny_model_under_fp8_emulation_stays_close_to_fp32(tiny_weights) -> None:
    """The whole streaming path with every eligible product of the denoising UNet in emulated
    FP8 (tiny widths: thresholds off, so every linear layer, 1×1 projection, stacked q/k/v and
    GEGLU takes the FP8 path): the UNet's error against fp32 and the frames' PSNR. (~1 min: the
    e4m3 casts are slow on CPU.)"""
    from pipeline.models import load_personalive

    reference = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
    reference.optimize(channels_last=True)
    quantized = copy.deepcopy(reference)
    marked = use_fp8(
        quantized.denoising_unet, min_weight_elements=0, min_fed_in_features=0, min_tokens=1
    )
    assert marked > 50
    # the UNet's first call's inputs, kept to call both UNets on them
    calls: list[tuple[tuple, dict]] = []

    def keep(_module, args, kwargs):
        if not calls:
            calls.append((args, kwargs))

    hook = reference.denoising_unet.register_forward_pre_hook(keep, with_kwargs=True)
    expected = stream_tiny(reference)
    hook.remove()
    got = stream_tiny(quantized)
    assert got.shape == expected.shape and got.shape[0] == 16
    with torch.no_grad():
        args, kwargs = calls[0]
        unet_error = relative_error(
            quantized.denoising_unet(*args, **kwargs).sample,
            reference.denoising_unet(*args, **kwargs).sample,
        )
    mse = (got.double() - expected.double()).square().mean().item()
    psnr = 10 * np.log10(1.0 / mse)
    print(f"tiny UNet relative error {unet_error:.4f}; frames PSNR {psnr:.1f} dB")
    # this tiny random network amplifies rounding: bf16 weights and activations (2^-9 against
    # e4m3's 2^-4) already put its output 2.3 % off fp32; emulated FP8 in 219 layers: 12 %
    assert 0.02 < unet_error < 0.2
    assert psnr > 25


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_fp8(), reason="needs a CUDA GPU with FP8 tensor cores")
def test_gpu_kernels_compute_the_emulated_product() -> None:
    torch.manual_seed(5)
    x = (torch.randn(4096, 1280) * torch.logspace(-2, 2, 4096)[:, None]).cuda().half()
    q_gpu, s_gpu = quantize_rows(x)  # the Triton kernel
    q_cpu, s_cpu = quantize_rows(x.cpu())  # PyTorch ops
    assert torch.allclose(s_gpu.cpu(), s_cpu, rtol=1e-6)
    differs = q_gpu.cpu().float() != q_cpu.float()
    assert differs.float().mean() < 1e-3  # division rounding at e4m3 ties only
    weight = torch.randn(640, 1280, device="cuda", dtype=torch.float16)
    bias = torch.randn(640, device="cuda", dtype=torch.float16)
    w_q, w_scale = quantize_weight(weight)
    got = _fp8.scaled_matmul(q_gpu, s_gpu, w_q, w_scale, bias, torch.float16)
    emulated = _fp8.scaled_matmul(
        q_gpu.cpu(), s_gpu.cpu(), w_q.cpu(), w_scale.cpu(), bias.cpu(), torch.float32
    )
    assert relative_error(got.cpu(), emulated) < 2e-3  # fp16 output rounding
    _fp8.check_fp8_kernels("cuda", torch.float16)
    _fp8.check_fp8_kernels("cuda", torch.bfloat16)
