"""Attention maths as a swappable strategy (diffusers' processor idea).

The networks own their weights in diffusers ``Attention`` modules (``to_q``/``to_k``/``to_v``/
``to_out``); an *attention processor* owns the maths. All PersonaLive attention goes through
:class:`AttentionProcessor`, which adds one thing diffusers' processors lack: extra keys/values
(the reference and history-keyframe banks) appended after the layer's own keys/values, already
projected, so the bank is projected once per stream instead of on every denoising call.

Backends: ``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``; flash/cuDNN kernels on
GPU), ``"xformers"`` (``xformers.ops.memory_efficient_attention``, CUDA only) and ``"eager"``
(explicit softmax, the reference's arithmetic). :func:`resolve_attention_backend` falls back with
a log line when the requested one cannot run here.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from . import _fast_layers

logger = logging.getLogger(__name__)

AttentionBackend = Literal["sdpa", "xformers", "eager"]
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "xformers", "eager")


class BankPadding(NamedTuple):
    """Which keys of a batch's per-stream banks are real, where streams with fewer history
    keyframes than others are padded to the longest bank: ``mask`` ``(S, L)`` boolean (``False``
    at padding; for kernels that take a mask) and ``lengths``, each stream's real length (for the
    bank attention, which slices instead: a masked kernel is several times slower)."""

    mask: torch.Tensor
    lengths: tuple[int, ...]


def resolve_attention_backend(requested: str, device: torch.device) -> AttentionBackend:
    """Return the backend that will actually run, logging why when it differs from ``requested``."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(
            f"model.attention={requested!r} is not a known attention backend; "
            f"choose one of {', '.join(ATTENTION_BACKENDS)}"
        )
    if requested == "xformers":
        if device.type != "cuda":
            logger.warning(
                "model.attention=xformers needs a CUDA GPU but the model runs on %s; using sdpa",
                device,
            )
            return "sdpa"
        if importlib.util.find_spec("xformers") is None:
            logger.warning(
                "model.attention=xformers but the xformers package is not installed "
                "(pip install 'portrait-render[xformers]'); using sdpa"
            )
            return "sdpa"
    return requested  # type: ignore[return-value]


class AttentionProcessor:
    """Multi-head attention with optional pre-projected extra keys/values.

    Call as ``processor(attn, hidden_states, context=None, extra_kv=None, extra_padding=None)``.

    Args:
        attn: the diffusers ``Attention`` holding the projection weights.
        hidden_states: queries' input, ``(B, N, C)``.
        context: keys'/values' input, ``(B, M, C_ctx)``; ``None`` means self-attention.
        extra_kv: ``(k, v)`` each ``(S, heads, L, head_dim)`` with ``S`` dividing ``B`` (one bank
            per stream of ``B / S`` frames), appended after the projected ``context``
            keys/values (the reference bank).
        extra_padding: where streams with different numbers of history keyframes share one batch,
            which keys of ``extra_kv`` are padding (:class:`BankPadding`): the bank attention
            slices each stream's bank to its real length; the other paths mask the padding.

    Returns:
        ``(B, N, C)`` after the output projection.
    """

    def __init__(self, backend: AttentionBackend = "sdpa") -> None:
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}"
            )
        self.backend = backend

    def __repr__(self) -> str:
        return f"AttentionProcessor(backend={self.backend!r})"

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        extra_padding: BankPadding | None = None,
        **_: object,
    ) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        heads = attn.heads
        source = hidden_states if context is None else context
        query = split_heads(attn.to_q(hidden_states), heads)
        key = split_heads(attn.to_k(source), heads)
        value = split_heads(attn.to_v(source), heads)
        mask = None
        if (
            extra_kv is not None
            and context is None
            and self.backend == "sdpa"
            and _fast_layers.bank_attention_usable(query)
        ):  # the bank is not copied into every frame's keys (merged by log-sum-exp)
            lengths = None if extra_padding is None else extra_padding.lengths
            out = _fast_layers.bank_attention(query, key, value, *extra_kv, attn.scale, lengths)
            return attn.to_out[1](attn.to_out[0](out))
        if extra_kv is not None:
            key, value = _append_bank(key, extra_kv[0]), _append_bank(value, extra_kv[1])
            if extra_padding is not None:
                mask = _frames_mask(extra_padding.mask, batch, source.shape[1])
        out = attend(query, key, value, attn.scale, self.backend, mask)
        out = out.transpose(1, 2).reshape(batch, length, heads * out.shape[-1])
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def _frames_mask(bank_mask: torch.Tensor, batch: int, own_keys: int) -> torch.Tensor:
    """Each stream's bank mask ``(S, L)`` for each of its frames, after the frame's own keys (all
    real): ``(S·F, 1, 1, own_keys + L)``, matching :func:`_append_bank`'s keys."""
    frames_mask = bank_mask.repeat_interleave(batch // bank_mask.shape[0], dim=0)[:, None, None, :]
    own = torch.ones(
        (*frames_mask.shape[:-1], own_keys), dtype=torch.bool, device=frames_mask.device
    )
    return torch.cat([own, frames_mask], dim=-1)


def _append_bank(own: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``own`` ``(S*F, h, N, d)`` followed by its stream's ``bank`` ``(S, h, L, d)`` on the token
    axis → ``(S*F, h, N+L, d)``; the bank is broadcast over the F frames inside the one copy."""
    streams = bank.shape[0]
    frames = own.shape[0] // streams
    if frames == 1:
        return torch.cat([own, bank.to(own.dtype)], dim=2)
    own = own.view(streams, frames, *own.shape[1:])
    bank = bank.to(own.dtype).unsqueeze(1).expand(-1, frames, -1, -1, -1)
    return torch.cat([own, bank], dim=3).view(streams * frames, own.shape[2], -1, own.shape[4])


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, heads*D)`` → ``(B, heads, N, D)``."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    backend: AttentionBackend,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention on ``(B, heads, N, D)`` tensors with the chosen backend."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    if backend == "xformers":
        import xformers.ops  # noqa: PLC0415 - optional dependency, imported only when chosen

        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
            bias = bias.masked_fill(~mask, float("-inf")).expand(
                -1, query.shape[1], query.shape[2], -1
            )
        out = xformers.ops.memory_efficient_attention(
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attn_bias=bias,
            scale=scale,
        )
        return out.transpose(1, 2)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), value)


def set_attention_backend(module: torch.nn.Module, backend: AttentionBackend) -> None:
    """Point every diffusers ``Attention`` inside ``module`` at a processor using ``backend``.

    For PersonaLive's own networks, which call the processor directly. The VAE keeps diffusers'
    processors (they also apply its group norm and residual): see :func:`set_vae_attention_backend`.
    """
    processor = AttentionProcessor(backend)
    for child in module.modules():
        if isinstance(child, Attention):
            child.set_processor(processor)


def set_vae_attention_backend(vae: torch.nn.Module, backend: AttentionBackend) -> None:
    """Choose diffusers' own processor matching ``backend`` for a diffusers VAE."""
    from diffusers.models.attention_processor import (  # noqa: PLC0415
        AttnProcessor,
        AttnProcessor2_0,
        XFormersAttnProcessor,
    )

    processor = {
        "sdpa": AttnProcessor2_0,
        "xformers": XFormersAttnProcessor,
        "eager": AttnProcessor,
    }[backend]()
    for child in vae.modules():
        if isinstance(child, Attention):
            child.set_processor(processor)
