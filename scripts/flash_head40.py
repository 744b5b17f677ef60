"""A Triton flash-attention forward for the UNet's 64² level (head dim 40), written to find out by
measurement whether anything beats cuDNN there (issue 16, lever 2): the head dimension padded to
64 in registers only (the loads are masked, memory holds 40), the softmax in the exp2 domain,
and optionally its exponentials in half precision (``ex2.approx.f16x2``: two per instruction,
where the 40-wide products leave the exponent unit the bottleneck; the probabilities are
rounded to fp16 for the second product anyway). Returns the output and the natural-log
log-sum-exp per query, which the bank attention needs for its merge.

Not wired into the model: ``scripts/probe_attention.py --triton`` times it against PyTorch's
kernels at the model's shapes; ``tests/test_flash_head40.py`` checks it in Triton's interpreter.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _exp2(x, HALF_EXP: tl.constexpr):
    if HALF_EXP:
        return tl.inline_asm_elementwise(
            "ex2.approx.f16x2 $0, $1;",
            "=r,r",
            [x.to(tl.float16)],
            dtype=tl.float16,
            is_pure=True,
            pack=2,
        )
    return tl.exp2(x)


@triton.jit
def _flash_fwd_kernel(
    Q, K, V, Out, LSE,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
    heads, n_queries, n_keys, qk_scale,
    HEAD_DIM: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_N: tl.constexpr, HALF_EXP: tl.constexpr,
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
    k_base = K + b * skb + h * skh + offs_d[:, None] + offs_n[None, :] * skn  # (D, BLOCK_N)
    v_base = V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :]  # (BLOCK_N, D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
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
        p = _exp2(s - m_new[:, None], HALF_EXP)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(
        Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=q_ok[:, None] & in_dim[None, :],
    )
    lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
    tl.store(LSE + bh * n_queries + offs_m, lse, mask=q_ok)


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
    half_exp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` ``(B, H, M, d)``, ``k``/``v`` ``(B, H, N, d)``, any strides with a unit last one
    (the model's transposed views of token-major projections). Returns ``out`` ``(B, H, M, d)``
    laid out token-major, as the model's ``to_out`` reads it, and the log-sum-exp ``(B, H, M)``
    in float32."""
    batch, heads, n_queries, dim = q.shape
    n_keys = k.shape[2]
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        raise ValueError("the head dimension must be contiguous")
    if half_exp and q.device.type != "cuda":
        raise ValueError("half_exp uses a PTX instruction: CUDA only")
    out = torch.empty(batch, n_queries, heads, dim, device=q.device, dtype=q.dtype).transpose(1, 2)
    lse = torch.empty(batch, heads, n_queries, device=q.device, dtype=torch.float32)
    scale = dim**-0.5 if scale is None else scale
    grid = (triton.cdiv(n_queries, block_m), batch * heads)
    _flash_fwd_kernel[grid](
        q, k, v, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        heads, n_queries, n_keys, scale * LOG2E,
        HEAD_DIM=dim, D=max(16, 1 << math.ceil(math.log2(dim))),
        BLOCK_M=block_m, BLOCK_N=block_n,
        EVEN_N=n_keys % block_n == 0, HALF_EXP=half_exp,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out, lse


CONFIGS = [
    dict(block_m=bm, block_n=bn, num_warps=w, num_stages=st, half_exp=he)
    for bm, w in ((128, 4), (128, 8), (64, 4))
    for bn in (64, 128)
    for st in (2, 3)
    for he in (False, True)
]
