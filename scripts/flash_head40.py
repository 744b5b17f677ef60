"""A Triton flash-attention forward for the UNet's 64² level (head dim 40), written to find out by
measurement whether anything beats cuDNN there (issue 16, lever 2): the head dimension padded to
64 in registers only (the loads are masked, memory holds 40), the softmax in the exp2 domain.
Measured on an H200 (docs/benchmarks.md, "Attention at head dim 40"): 2.2× slower than cuDNN,
fused or not, so the model keeps cuDNN.

Two entry points: :func:`flash_attention` (one key set; returns the log-sum-exp too) and
:func:`bank_attention` — every frame's queries over its own keys *and* its stream's bank of
reference keys in one pass of the online softmax, each stream's bank its own length read from a
device tensor: no second launch, no log-sum-exp round trip and merge pass, no launch per run of
equal bank lengths (what the model's cuDNN path does: ``pipeline/models/_fast_layers.py``).

Not wired into the model: ``scripts/probe_attention.py --triton`` times it against the model's
path at the real shapes; ``tests/test_flash_head40.py`` checks it in Triton's interpreter.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _attend(
    q, acc, l_i, m_i, k_base, v_base, skn, svn, n_keys, qk_scale,
    in_dim, offs_n, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr,
):  # fmt: skip
    """The online softmax over one key set: ``k_base`` points at a ``(D, BLOCK_N)`` tile of its
    first keys, ``v_base`` at a ``(BLOCK_N, D)`` tile of its first values."""
    for start in range(0, n_keys, BLOCK_N):
        if EVEN_N:
            k = tl.load(k_base + start * skn, mask=in_dim[:, None], other=0.0)
            v = tl.load(v_base + start * svn, mask=in_dim[None, :], other=0.0)
        else:
            n_ok = (start + offs_n) < n_keys
            k = tl.load(k_base + start * skn, mask=in_dim[:, None] & n_ok[None, :], other=0.0)
            v = tl.load(v_base + start * svn, mask=n_ok[:, None] & in_dim[None, :], other=0.0)
        s = tl.dot(q, k) * qk_scale
        if not EVEN_N:
            s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _flash_fwd_kernel(
    Q, K, V, BK, BV, BANK_LEN, Out, LSE,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn,
    sbkb, sbkh, sbkn, sbvb, sbvh, sbvn, sob, soh, som,
    heads, n_queries, n_keys, frames_per_stream, qk_scale,
    HEAD_DIM: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_BANK: tl.constexpr, HAS_BANK: tl.constexpr,
    WRITE_LSE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    in_dim = offs_d < HEAD_DIM
    q_ok = offs_m < n_queries
    q = tl.load(
        Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :],
        mask=q_ok[:, None] & in_dim[None, :],
        other=0.0,
    )
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    acc, l_i, m_i = _attend(
        q, acc, l_i, m_i,
        K + b * skb + h * skh + offs_d[:, None] + offs_n[None, :] * skn,
        V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :],
        skn, svn, n_keys, qk_scale, in_dim, offs_n, BLOCK_N, EVEN_N,
    )  # fmt: skip
    if HAS_BANK:  # the stream's bank, only as long as that stream's is
        s = b // frames_per_stream
        acc, l_i, m_i = _attend(
            q, acc, l_i, m_i,
            BK + s * sbkb + h * sbkh + offs_d[:, None] + offs_n[None, :] * sbkn,
            BV + s * sbvb + h * sbvh + offs_n[:, None] * sbvn + offs_d[None, :],
            sbkn, sbvn, tl.load(BANK_LEN + s), qk_scale, in_dim, offs_n,
            BLOCK_N, EVEN_BANK,
        )  # fmt: skip
    out = acc / l_i[:, None]
    tl.store(
        Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=q_ok[:, None] & in_dim[None, :],
    )
    if WRITE_LSE:
        lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
        tl.store(LSE + bh * n_queries + offs_m, lse, mask=q_ok)


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool] | None,
    scale: float | None,
    write_lse: bool,
    block_m: int,
    block_n: int,
    num_warps: int,
    num_stages: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, heads, n_queries, dim = q.shape
    n_keys = k.shape[2]
    tensors = (q, k, v) if bank is None else (q, k, v, bank[0], bank[1])
    if any(t.stride(-1) != 1 for t in tensors):
        raise ValueError("the head dimension must be contiguous")
    out = torch.empty(batch, n_queries, heads, dim, device=q.device, dtype=q.dtype)
    lse = torch.empty(batch, heads, n_queries, device=q.device, dtype=torch.float32)
    bank_key, bank_value, lengths, even_bank = bank if bank is not None else (k, v, lse, False)
    out_heads = out.transpose(1, 2)  # (B, H, M, d) view of the token-major result
    scale = dim**-0.5 if scale is None else scale
    grid = (triton.cdiv(n_queries, block_m), batch * heads)
    _flash_fwd_kernel[grid](
        q, k, v, bank_key, bank_value, lengths, out_heads, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *bank_key.stride()[:3], *bank_value.stride()[:3], *out_heads.stride()[:3],
        heads, n_queries, n_keys, batch // bank_key.shape[0], scale * LOG2E,
        HEAD_DIM=dim, D=max(16, 1 << math.ceil(math.log2(dim))),
        BLOCK_M=block_m, BLOCK_N=block_n,
        EVEN_N=n_keys % block_n == 0, EVEN_BANK=even_bank, HAS_BANK=bank is not None,
        WRITE_LSE=write_lse,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out, (lse if write_lse else None)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    *,
    block_m: int = 128,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` ``(B, H, M, d)``, ``k``/``v`` ``(B, H, N, d)``, any strides with a unit last one
    (the model's transposed views of token-major projections). Returns ``out`` ``(B, H, M, d)``
    laid out token-major, as the model's ``to_out`` reads it, and the log-sum-exp ``(B, H, M)``
    in float32."""
    out, lse = _launch(q, k, v, None, scale, True, block_m, block_n, num_warps, num_stages)
    return out.transpose(1, 2), lse


def bank_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bank_key: torch.Tensor,
    bank_value: torch.Tensor,
    bank_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    block_m: int = 128,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Every frame's queries ``(S·F, H, N, d)`` over its own keys/values ``(S·F, H, N, d)`` and
    its stream's bank ``(S, H, L, d)``, of which stream ``s`` has ``bank_lengths[s]`` real keys
    (an int32 device tensor; ``None``: all ``L``). Returns ``(S·F, N, H·d)``, heads
    concatenated, as the model's ``_fast_layers.bank_attention`` does."""
    streams, full = bank_key.shape[0], bank_key.shape[2]
    if q.shape[0] % streams:
        raise ValueError(f"{q.shape[0]} frames do not split over {streams} streams")
    if bank_lengths is None:
        bank_lengths = torch.full((streams,), full, device=q.device, dtype=torch.int32)
        even = full % block_n == 0
    else:  # whole tiles only if the cap and every length are whole (checked on the host)
        even = full % block_n == 0 and not bool((bank_lengths % block_n).any())
    out, _ = _launch(
        q,
        k,
        v,
        (bank_key, bank_value, bank_lengths.to(torch.int32), even),
        scale,
        False,
        block_m,
        block_n,
        num_warps,
        num_stages,
    )
    return out.flatten(2)


CONFIGS = [
    dict(block_m=bm, block_n=bn, num_warps=w, num_stages=st)
    for bm, w in ((128, 4), (128, 8), (64, 4))
    for bn in (64, 128)
    for st in (2, 3)
]
