"""Attention written the plain way, as the reference the fused paths are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_over_concatenated_bank(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bank_key: torch.Tensor,
    bank_value: torch.Tensor,
) -> torch.Tensor:
    """Every frame ``(S·F, h, N, d)`` attends to its own keys followed by its stream's bank
    ``(S, h, L, d)`` copied in; returns ``(S·F, N, h·d)``."""
    batch, heads, tokens, head_dim = query.shape
    frames = batch // bank_key.shape[0]
    out = F.scaled_dot_product_attention(
        query,
        torch.cat([key, bank_key.repeat_interleave(frames, dim=0)], dim=2),
        torch.cat([value, bank_value.repeat_interleave(frames, dim=0)], dim=2),
    )
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def attention_over_each_streams_bank(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bank_key: torch.Tensor,
    bank_value: torch.Tensor,
    lengths: tuple[int, ...],
) -> torch.Tensor:
    """:func:`attention_over_concatenated_bank` stream by stream, each stream's frames attending to
    the first ``lengths[s]`` keys of its padded bank only; returns ``(S·F, N, h·d)``."""
    frames = query.shape[0] // bank_key.shape[0]
    parts = []
    for stream, length in enumerate(lengths):
        rows = slice(stream * frames, (stream + 1) * frames)
        parts.append(
            attention_over_concatenated_bank(
                query[rows],
                key[rows],
                value[rows],
                bank_key[stream : stream + 1, :, :length],
                bank_value[stream : stream + 1, :, :length],
            )
        )
    return torch.cat(parts)
