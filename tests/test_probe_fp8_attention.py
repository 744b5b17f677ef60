"""scripts/probe_fp8_attention.py: the padding and quantising around cuDNN's FP8 attention (on
CPU), and the attention itself against float32 on a GPU with the cuDNN frontend."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from scripts.probe_fp8_attention import (
    E4M3_MAX,
    dequantize,
    fp8_head_dim,
    quantize_padded,
    reference_attention,
    shapes,
)


def test_the_head_dims_are_padded_to_what_cudnns_fp8_attention_takes():
    assert [fp8_head_dim(d) for d in (40, 48, 64, 80, 160)] == [48, 48, 64, 80, 160]


def test_quantized_copies_are_padded_with_zeros_and_round_trip_within_e4m3s_step():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 40, dtype=torch.float16) * 3
    x8, descale = quantize_padded(x, 48)
    assert x8.dtype == torch.float8_e4m3fn and x8.shape == (2, 64, 8, 48)
    assert descale.shape == (1, 1, 1, 1) and descale.dtype == torch.float32
    assert torch.count_nonzero(x8[..., 40:].float()) == 0
    # the largest value lands on e4m3's largest, so no value saturates
    assert x8[..., :40].float().abs().max() == E4M3_MAX
    back = dequantize(x8, descale, 40)
    assert back.dtype == torch.float16 and back.shape == x.shape
    # e4m3 keeps 3 mantissa bits: a relative step of 2^-3, half of it in rounding (normal range)
    normal = x.abs() > x.abs().max() * 2**-6
    rel = ((back.float() - x.float()).abs() / x.float().abs())[normal]
    assert rel.max() <= 2**-4 + 1e-3
    assert rel.mean() < 2**-5


def test_zero_padding_leaves_scores_and_so_attention_unchanged():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 32, 40) for _ in range(3))
    pad = [F.pad(x, (0, 8)) for x in (q, k, v)]
    out, lse = reference_attention(q, k, v, 40**-0.5)
    out_padded, lse_padded = reference_attention(*pad, 40**-0.5)
    torch.testing.assert_close(out_padded[..., :40], out)
    assert torch.count_nonzero(out_padded[..., 40:]) == 0
    torch.testing.assert_close(lse_padded, lse)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_the_probed_shapes_are_one_batched_call_of_the_streams():
    rows = shapes(4)
    own = [r for r in rows if r["what"] == "own keys"]
    assert [(r["dim"], r["batch"], r["q"], r["k"]) for r in own] == [
        (40, 64, 4096, 4096),
        (80, 64, 1024, 1024),
    ]
    full = [r for r in rows if r["what"] == "bank, portrait + 3 keyframes"]
    assert [(r["batch"], r["q"], r["k"]) for r in full] == [(4, 65536, 16384), (4, 16384, 4096)]


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available()
    or torch.cuda.get_device_capability() < (9, 0)
    or importlib.util.find_spec("cudnn") is None,
    reason="needs a Hopper-or-newer GPU and nvidia-cudnn-frontend",
)
def test_gpu_cudnn_fp8_attention_matches_float32_within_e4m3s_error():
    from scripts.probe_fp8_attention import CudnnFp8Attention

    torch.manual_seed(2)
    batch, q_len, k_len, dim = 2, 256, 512, 40
    q, k, v = (
        torch.randn(batch, n, 8, dim, device="cuda", dtype=torch.float16)
        for n in (q_len, k_len, k_len)
    )
    (q8, dq), (k8, dk), (v8, dv) = (quantize_padded(x, 48) for x in (q, k, v))
    out8, lse = CudnnFp8Attention(batch, q_len, k_len, 48, dim**-0.5)(
        q8, k8, v8, (dq, dk, dv), 1.0 / dv
    )
    got = dequantize(out8, dv, dim).transpose(1, 2).float()
    want, want_lse = reference_attention(*(x.transpose(1, 2) for x in (q, k, v)), dim**-0.5)
    assert ((got - want).abs().max() / want.abs().max()).item() < 0.1
    assert (lse - want_lse).abs().max().item() < 0.1
