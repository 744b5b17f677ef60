"""The Triton kernels and the split bank attention on a real GPU, in fp16 at the shapes of a
denoising call's 64×64 level (on CPU the same code runs through Triton's interpreter:
tests/test_nhwc_kernels.py). Run on the lent GPU with the benchmark (scripts/bench_gpu.sh)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attention_reference import attention_over_concatenated_bank, attention_over_each_streams_bank

from pipeline.models import _fast_layers, _nhwc_kernels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or not _nhwc_kernels.available(), reason="needs a CUDA GPU"
    ),
]


def test_the_load_time_check_picks_a_log_sum_exp_attention_op() -> None:
    assert _fast_layers.check_kernels("cuda", torch.float16)
    assert _fast_layers._lse_attention_op in ("cudnn", "flash")


def test_bank_attention_equals_concatenated_keys_in_fp16() -> None:
    _fast_layers.check_kernels("cuda", torch.float16)
    torch.manual_seed(0)
    streams, frames, heads, tokens, head_dim = 2, 16, 8, 1024, 40
    batch = streams * frames
    query = torch.randn(batch, tokens, heads * head_dim, device="cuda", dtype=torch.half)
    query = query.view(batch, tokens, heads, head_dim).transpose(1, 2)
    key = torch.randn(batch, heads, tokens, head_dim, device="cuda", dtype=torch.half)
    value = torch.randn_like(key)
    for keyframes in (0, 3):  # the portrait alone, then with 3 history keyframes
        bank_key = torch.randn(
            streams, heads, (1 + keyframes) * tokens, head_dim, device="cuda", dtype=torch.half
        )
        bank_value = torch.randn_like(bank_key)
        got = _fast_layers.bank_attention(query, key, value, bank_key, bank_value, head_dim**-0.5)
        expected = attention_over_concatenated_bank(query, key, value, bank_key, bank_value)
        assert (got.float() - expected.float()).abs().max() < 2e-3, keyframes
    # a padded batch: the first stream holds 3 keyframes, the second none (its bank padded)
    bank_key = torch.randn(streams, heads, 4 * tokens, head_dim, device="cuda", dtype=torch.half)
    bank_value = torch.randn_like(bank_key)
    lengths = (4 * tokens, tokens)
    got = _fast_layers.bank_attention(
        query, key, value, bank_key, bank_value, head_dim**-0.5, lengths
    )
    expected = attention_over_each_streams_bank(query, key, value, bank_key, bank_value, lengths)
    assert (got.float() - expected.float()).abs().max() < 2e-3


def test_frame_attention_and_upsampling_in_fp16() -> None:
    torch.manual_seed(1)
    streams, frames, positions, heads, head_dim = 2, 16, 256, 8, 40
    channels = heads * head_dim
    qkv = torch.randn(streams * frames, positions, 3 * channels, device="cuda", dtype=torch.half)
    bias = torch.randn(frames, 3 * channels, device="cuda")
    got = _nhwc_kernels.frame_attention(qkv, bias, frames, heads, head_dim**-0.5)
    tokens = (qkv.float().view(streams, frames, positions, 3 * channels) + bias[:, None]).half()
    q, k, v = (
        t.permute(0, 2, 1, 3).reshape(streams * positions, frames, heads, head_dim).transpose(1, 2)
        for t in tokens.chunk(3, dim=-1)
    )
    expected = F.scaled_dot_product_attention(q, k, v)  # (S·P, h, F, d)
    expected = expected.transpose(1, 2).reshape(streams, positions, frames, channels)
    expected = expected.permute(0, 2, 1, 3).reshape(streams * frames, positions, channels)
    assert (got.float() - expected.float()).abs().max() < 2e-3
    x = torch.randn(4, 320, 16, 16, device="cuda", dtype=torch.half)
    x = x.to(memory_format=torch.channels_last)
    assert torch.equal(_nhwc_kernels.upsample_nearest_2x(x), F.interpolate(x, scale_factor=2.0))


def test_upsampling_as_phases_and_layer_norm_in_fp16() -> None:
    """At the decoder's 256-channel level and the UNet's 64×64 tokens: the phases within fp16
    rounding of the stock upsample-then-convolve (both against fp32), and the LayerNorm kernel
    against PyTorch's."""
    _fast_layers.check_kernels("cuda", torch.float16)
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to("cuda", torch.half)
    conv.__class__ = _fast_layers.ChannelsLastConv2d
    conv.to(memory_format=torch.channels_last)
    x = torch.randn(2, 256, 32, 32, device="cuda", dtype=torch.half)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = _fast_layers.upsample_conv_fp32(conv, x)
        stock = conv(_nhwc_kernels.upsample_nearest_2x(x)).float()
        phases = _fast_layers.upsample_conv_phases(conv, x)
    assert phases.is_contiguous(memory_format=torch.channels_last)
    scale = exact.abs().max()
    assert (phases.float() - exact).abs().max() / scale < 2 * (
        stock - exact
    ).abs().max() / scale + 1e-4
    tokens = torch.randn(16, 4096, 320, device="cuda", dtype=torch.half)
    weight, bias = (
        torch.randn(320, device="cuda", dtype=torch.half),
        torch.randn(320, device="cuda", dtype=torch.half),
    )
    got = _nhwc_kernels.layer_norm(tokens, weight, bias, 1e-5)
    assert (
        got.float() - F.layer_norm(tokens.float(), (320,), weight.float(), bias.float())
    ).abs().max() < 1e-2
