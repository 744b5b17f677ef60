"""The head-dim-40 flash-attention probe kernel (scripts/flash_head40.py, issue 16 lever 2): on
CPU through Triton's interpreter (the same indexing, masking and online softmax that run on
CUDA), against attention in float64; on a GPU in fp16 against the model's cuDNN path."""

from __future__ import annotations

import pytest
import torch

from scripts.flash_head40 import bank_attention, flash_attention

ON_GPU = torch.cuda.is_available()


def token_major(batch: int, tokens: int, heads: int, dim: int, **kw) -> torch.Tensor:
    """``(batch, heads, tokens, dim)`` as a view of ``(batch, tokens, heads·dim)``, the model's
    projection layout."""
    return (
        torch.randn(batch, tokens, heads * dim, **kw)
        .view(batch, tokens, heads, dim)
        .transpose(1, 2)
    )


def exact(q, k, v, scale):
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(scores, -1) @ v.double(), torch.logsumexp(scores, -1)


@pytest.mark.parametrize(("n_keys", "block_n"), [(96, 32), (80, 32)])  # whole blocks, ragged last
def test_the_kernel_computes_attention_and_its_log_sum_exp(n_keys: int, block_n: int) -> None:
    """Head dim 40 (padded to 64 in registers only), 3 heads, query rows not a multiple of the
    block, keys a multiple of it or not; strided token-major views as the model passes them."""
    torch.manual_seed(0)
    q = token_major(2, 50, 3, 40) * 2  # larger scores: the running maximum must move
    k, v = token_major(2, n_keys, 3, 40), token_major(2, n_keys, 3, 40)
    out, lse = flash_attention(q, k, v, 0.3, block_m=32, block_n=block_n)
    want, want_lse = exact(q, k, v, 0.3)
    assert out.shape == q.shape and out.transpose(1, 2).is_contiguous()  # token-major result
    assert (out.double() - want).abs().max() < 1e-4
    assert (lse.double() - want_lse).abs().max() < 1e-4


@pytest.mark.parametrize("lengths", [None, [64, 32], [64, 24]])  # full, whole tiles, ragged
def test_bank_attention_is_attention_over_own_keys_and_the_stream_s_real_bank(lengths) -> None:
    """2 streams × 3 frames: each frame's queries over its own 40 keys and its stream's bank
    (capacity 64), only the first ``lengths[s]`` bank keys; padding beyond them is poison (a
    kernel that read it would be far off). One pass, heads concatenated token-major."""
    torch.manual_seed(1)
    streams, frames, tokens, heads, dim = 2, 3, 40, 2, 40
    q = token_major(streams * frames, tokens, heads, dim) * 2
    k, v = (
        token_major(streams * frames, tokens, heads, dim),
        token_major(streams * frames, tokens, heads, dim),
    )
    bank_k, bank_v = torch.randn(streams, heads, 64, dim), torch.randn(streams, heads, 64, dim)
    real = lengths or [64, 64]
    for s, n in enumerate(real):
        bank_k[s, :, n:], bank_v[s, :, n:] = 1e4, 1e4
    lengths_t = None if lengths is None else torch.tensor(lengths, dtype=torch.int32)
    got = bank_attention(q, k, v, bank_k, bank_v, lengths_t, 0.2, block_m=32, block_n=16)
    assert got.shape == (streams * frames, tokens, heads * dim)
    for b in range(streams * frames):
        s = b // frames
        keys = torch.cat([k[b], bank_k[s, :, : real[s]]], 1)
        values = torch.cat([v[b], bank_v[s, :, : real[s]]], 1)
        want, _ = exact(q[b], keys, values, 0.2)
        assert (got[b].double() - want.transpose(0, 1).flatten(1)).abs().max() < 1e-4, b


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
def test_gpu_kernel_matches_attention_in_fp16() -> None:
    """fp16 at a 64²-level shape: within fp16 attention's own error of the float64 result."""
    torch.manual_seed(0)
    q, k, v = (token_major(2, 4096, 8, 40, device="cuda", dtype=torch.float16) for _ in range(3))
    out, lse = flash_attention(q, k, v)
    want, want_lse = exact(q, k, v, 40**-0.5)
    ours = ((out.double() - want).abs().max() / want.abs().max()).item()
    stock = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    theirs = ((stock.double() - want).abs().max() / want.abs().max()).item()
    assert ours < max(4 * theirs, 2e-3)
    assert (lse.double() - want_lse).abs().max() < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
def test_gpu_bank_attention_matches_the_model_s_cudnn_path() -> None:
    """A 64²-level shape at S=2 with banks of 2 and 1 images: the same result as the model's
    split-and-merge bank attention (cuDNN with log-sum-exp, merged), to fp16 rounding."""
    from pipeline.models import _fast_layers

    torch.manual_seed(0)
    kw = dict(device="cuda", dtype=torch.float16)
    q, k, v = (token_major(2 * 16, 4096, 8, 40, **kw) for _ in range(3))
    bank_k, bank_v = (torch.randn(2, 8, 2 * 4096, 40, **kw) for _ in range(2))
    lengths = [2 * 4096, 4096]
    _fast_layers.check_kernels("cuda", torch.float16)
    want = _fast_layers.bank_attention(q, k, v, bank_k, bank_v, 40**-0.5, lengths)
    got = bank_attention(q, k, v, bank_k, bank_v, torch.tensor(lengths, device="cuda"))
    assert ((got.float() - want.float()).abs().max() / want.float().abs().max()).item() < 5e-3
