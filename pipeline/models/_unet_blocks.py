"""Building blocks of PersonaLive's two UNets, on diffusers parts.

The denoising UNet is an SD1.5 UNet run on a batch of frames: every convolution, norm and spatial
transformer works per frame on a flattened ``(streams * frames, C, H, W)`` batch (the reference's
"inflated" 3D layers are exactly this). After each layer PersonaLive adds two modules that mix
information between frames:

* a *motion module* (cross-attention from each frame's spatial tokens to that frame's 32 motion
  tokens) and
* a *temporal module* (self-attention along the 16-frame axis at every spatial position).

Module and attribute names follow the published state dicts (``down_blocks.0.resnets.0.conv1``,
``...motion_modules.0.temporal_transformer...``), so weights load without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from . import _fp8
from ._attention import AttentionProcessor, BankPadding
from ._fast_layers import (
    add_layer_norm,
    feed_forward,
    frame_attention,
    frame_attention_usable,
    is_channels_last,
    layer_norm,
)


@dataclass
class UNetContext:
    """Per-call inputs every layer may read (built once per forward pass).

    Attributes:
        frames: frames per stream ``F``; the flattened batch is ``streams * F``.
        clip_context: CLIP image token per flattened frame, ``(S*F, 1, C_clip)``.
        motion_tokens: motion tokens per flattened frame, ``(S*F, T, C_m)``, or ``None``.
        bank_kv: per spatial-transformer layer, the pre-projected reference keys/values
            ``(k, v)`` each ``(S, heads, L, head_dim)``; ``None`` for no bank.
        bank_mask: per layer, where streams with fewer history keyframes than others in the
            batch are padded: a :class:`._attention.BankPadding` (mask and real lengths), or
            ``None``.
        bank_out: when a list, each spatial transformer appends its self-attention input
            (the reference UNet's "write" mode).
    """

    frames: int
    clip_context: torch.Tensor
    motion_tokens: torch.Tensor | None = None
    bank_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    bank_mask: list[BankPadding | None] | None = None
    bank_out: list[torch.Tensor] | None = field(default=None)


def _attention(
    query_dim: int, heads: int, head_dim: int, context_dim: int | None = None
) -> Attention:
    attn = Attention(
        query_dim=query_dim,
        cross_attention_dim=context_dim,
        heads=heads,
        dim_head=head_dim,
        bias=False,
    )
    attn.set_processor(AttentionProcessor("sdpa"))
    return attn


class SpatialTransformerBlock(nn.Module):
    """SD1.5 transformer block: self-attention (plus the reference bank), CLIP cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = _attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self,
        x: torch.Tensor,
        clip_context: torch.Tensor,
        bank_kv: tuple[torch.Tensor, torch.Tensor] | None,
        bank_mask: BankPadding | None,
        bank_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        normed = layer_norm(x, self.norm1)
        if bank_out is not None:
            bank_out.append(normed)
        # each stream's bank (S, h, L, d) stays per stream: the processor broadcasts it over the
        # stream's frames (while concatenating, without a separate copy, or by slicing)
        attended = self.attn1.processor(
            self.attn1, normed, extra_kv=bank_kv, extra_padding=bank_mask
        )
        # norm3 writes FP8 where the feed-forward's projection multiplies in FP8 (model.fp8)
        ff_input = self.ff.net[0].proj
        if clip_context.shape[1] == 1:  # residual, CLIP value and norm3 in one pass (see below)
            clip_value = self._clip_value(clip_context)
            x, normed = add_layer_norm(x, attended, self.norm3, clip_value, fp8_for=ff_input)
        else:
            x = attended + x
            cross = self._cross_attention(x, clip_context)
            x, normed = add_layer_norm(x, cross, self.norm3, fp8_for=ff_input)
        return feed_forward(self.ff, normed) + x

    def _clip_value(self, context: torch.Tensor) -> torch.Tensor:
        """Attention to a single CLIP token: softmax over one key is exactly 1, so every query
        receives that token's value (``norm2``, ``to_q``, ``to_k`` and the scores change
        nothing). Returns ``(B, C)``, one vector per frame."""
        attn = self.attn2
        return attn.to_out[1](attn.to_out[0](attn.to_v(context[:, 0])))

    def _cross_attention(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attention to a CLIP context of several tokens (PersonaLive's has one: ``_clip_value``)."""
        return self.attn2.processor(self.attn2, self.norm2(x), context=context)


class SpatialTransformer(nn.Module):
    """GroupNorm → 1×1 conv → transformer block → 1×1 conv, with a residual (SD1.5 layout)."""

    def __init__(
        self, channels: int, heads: int, context_dim: int, groups: int, layer_index: int
    ) -> None:
        super().__init__()
        self.layer_index = (
            layer_index  # position in forward order: pairs reference and denoising layers
        )
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [SpatialTransformerBlock(channels, heads, context_dim)]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(
        self,
        x: torch.Tensor,
        clip_context: torch.Tensor,
        bank_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        bank_mask: BankPadding | None = None,
        bank_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Tensors in, tensors out: the caller picks this layer's bank entries (a module that
        looked them up by its own index would give ``torch.compile`` one graph per layer)."""
        batch, channels, height, width = x.shape
        if is_channels_last(x):
            return self._forward_tokens(x, clip_context, bank_kv, bank_mask, bank_out)
        residual = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        for block in self.transformer_blocks:
            x = block(x, clip_context, bank_kv, bank_mask, bank_out)
        x = x.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return self.proj_out(x) + residual

    def _forward_tokens(self, x, clip_context, bank_kv, bank_mask, bank_out) -> torch.Tensor:
        """Channels-last input is already a token matrix ``(B·H·W, C)`` in memory: the 1×1
        convolutions run as linear layers on it (bias inside the matrix multiply, where a
        convolution adds it in a separate broadcasting pass) and the permutes are free."""
        batch, channels, height, width = x.shape

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(batch, height * width, channels)

        # FP8 products where model.fp8 chose these 1×1 convolutions (pipeline/models/_fp8.py)
        hidden = _fp8.linear(
            tokens(self.norm(x)), _as_matrix(self.proj_in), self.proj_in.bias, self.proj_in
        )
        for block in self.transformer_blocks:
            hidden = block(hidden, clip_context, bank_kv, bank_mask, bank_out)
        out = _fp8.linear(hidden, _as_matrix(self.proj_out), self.proj_out.bias, self.proj_out)
        out = out.add_(tokens(x))
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def _as_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A 1×1 convolution's weight ``(C_out, C_in, 1, 1)`` as a linear layer's ``(C_out, C_in)``."""
    return conv.weight.view(conv.weight.shape[0], -1)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos position table ``pe`` of shape ``(1, max_len, dim)`` added along the frame axis."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(
            torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim)
        )
        table = torch.zeros(1, max_len, dim)
        table[0, :, 0::2] = torch.sin(position * frequency)
        table[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class _FrameAttention(Attention):
    """diffusers ``Attention`` that may carry a temporal position table (``pos_encoder``)."""

    def __init__(
        self, dim: int, heads: int, context_dim: int | None, max_frames: int | None
    ) -> None:
        super().__init__(
            query_dim=dim,
            cross_attention_dim=context_dim,
            heads=heads,
            dim_head=dim // heads,
            bias=False,
        )
        self.pos_encoder = SinusoidalPositions(dim, max_frames) if max_frames else None
        self.set_processor(AttentionProcessor("sdpa"))


class _FrameTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        num_attention: int,
        context_dim: int | None,
        max_frames: int | None,
    ) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [_FrameAttention(dim, heads, context_dim, max_frames) for _ in range(num_attention)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)


class _FrameTransformer(nn.Module):
    def __init__(
        self,
        channels: int,
        heads: int,
        num_attention: int,
        context_dim: int | None,
        max_frames: int | None,
        groups: int,
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [_FrameTransformerBlock(channels, heads, num_attention, context_dim, max_frames)]
        )
        self.proj_out = nn.Linear(channels, channels)


class FrameModule(nn.Module):
    """PersonaLive's motion module (``kind="motion"``) or temporal module (``kind="temporal"``).

    * motion: each frame's spatial tokens cross-attend to that frame's motion tokens (expression);
    * temporal: every spatial position attends over the frames of its stream (with positions).

    Input and output ``(S*F, C, H, W)``; the residual is added inside.
    """

    def __init__(
        self,
        kind: Literal["motion", "temporal"],
        channels: int,
        *,
        heads: int = 8,
        num_attention: int = 2,
        motion_token_dim: int = 16,
        max_frames: int = 32,
        groups: int = 32,
    ) -> None:
        super().__init__()
        if kind not in ("motion", "temporal"):
            raise ValueError(f"FrameModule kind must be 'motion' or 'temporal', got {kind!r}")
        self.kind = kind
        self.temporal_transformer = _FrameTransformer(
            channels,
            heads,
            num_attention,
            context_dim=motion_token_dim if kind == "motion" else None,
            max_frames=max_frames if kind == "temporal" else None,
            groups=groups,
        )

    def forward(
        self, x: torch.Tensor, frames: int, motion_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` ``(S*F, C, H, W)`` with ``frames`` = F; ``motion_tokens`` ``(S*F, T, C_m)`` for
        the motion kind."""
        module = self.temporal_transformer
        batch, channels, height, width = x.shape
        residual = x
        tokens = module.norm(x).permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        tokens = module.proj_in(tokens)
        for block in module.transformer_blocks:
            # each residual add runs together with the norm that follows it
            next_norms = [*block.norms[1:], block.ff_norm]
            normed = layer_norm(tokens, block.norms[0])
            for attn, next_norm in zip(block.attention_blocks, next_norms):
                attended = self._attend(attn, normed, frames, motion_tokens)
                # the feed-forward's norm writes FP8 where its projection multiplies in FP8
                reader = block.ff.net[0].proj if next_norm is block.ff_norm else None
                tokens, normed = add_layer_norm(tokens, attended, next_norm, fp8_for=reader)
            tokens = feed_forward(block.ff, normed) + tokens
        tokens = module.proj_out(tokens)
        out = tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return out + residual

    def _attend(
        self,
        attn: _FrameAttention,
        normed: torch.Tensor,
        frames: int,
        motion_tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.kind == "motion":
            return attn.processor(attn, normed, context=motion_tokens)
        if frame_attention_usable(attn, normed):  # one Triton pass on the frame-major tokens
            return frame_attention(attn, normed, frames)
        batch, positions, channels = normed.shape
        streams = batch // frames
        # (S*F, P, C) -> (S*P, F, C): attend along the frame axis at every position
        seq = (
            normed.view(streams, frames, positions, channels)
            .transpose(1, 2)
            .reshape(-1, frames, channels)
        )
        if attn.pos_encoder is not None:
            seq = attn.pos_encoder(seq)
        seq = attn.processor(attn, seq)
        return (
            seq.view(streams, positions, frames, channels)
            .transpose(1, 2)
            .reshape(batch, positions, channels)
        )


@dataclass(frozen=True)
class FrameModuleSpec:
    """Sizes of the motion and temporal modules (the published inference config's values)."""

    heads: int = 8
    num_attention: int = 2
    motion_token_dim: int = 16
    max_frames: int = 32


@dataclass(frozen=True)
class LevelSpec:
    """One resolution level of a UNet half."""

    in_channels: int
    out_channels: int
    num_layers: int
    has_attention: bool
    resample: bool  # downsample after (down half) / upsample after (up half)
    prev_output_channels: int = 0  # up half only: channels arriving from the level below


class _Level(nn.Module):
    """Shared machinery of down and up levels: per layer resnet → [attention] → [motion] → [temporal]."""

    def _build_layers(
        self,
        spec: LevelSpec,
        resnet_in: list[int],
        *,
        temb_channels: int,
        groups: int,
        eps: float,
        heads: int,
        context_dim: int,
        frame_modules: FrameModuleSpec | None,
        layer_index: list[int],
    ) -> None:
        out = spec.out_channels
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=c,
                    out_channels=out,
                    temb_channels=temb_channels,
                    groups=groups,
                    eps=eps,
                )
                for c in resnet_in
            ]
        )
        if spec.has_attention:
            attentions = []
            for _ in resnet_in:
                attentions.append(
                    SpatialTransformer(out, heads, context_dim, groups, layer_index[0])
                )
                layer_index[0] += 1
            self.attentions = nn.ModuleList(attentions)
        if frame_modules is not None:
            self.motion_modules = nn.ModuleList(
                [_frame_module("motion", out, frame_modules, groups) for _ in resnet_in]
            )
            self.temporal_modules = nn.ModuleList(
                [_frame_module("temporal", out, frame_modules, groups) for _ in resnet_in]
            )

    def _layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        x = self.resnets[i](x, temb)
        return _after_resnet(self, i, x, ctx)


def _after_resnet(level: nn.Module, i: int, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
    if hasattr(level, "attentions"):
        attention = level.attentions[i]
        index = attention.layer_index
        x = attention(
            x,
            ctx.clip_context,
            ctx.bank_kv[index] if ctx.bank_kv is not None else None,
            ctx.bank_mask[index] if ctx.bank_mask is not None else None,
            ctx.bank_out,
        )
    if hasattr(level, "motion_modules"):
        x = level.motion_modules[i](x, ctx.frames, ctx.motion_tokens)
        x = level.temporal_modules[i](x, ctx.frames)
    return x


def _frame_module(
    kind: Literal["motion", "temporal"], channels: int, spec: FrameModuleSpec, groups: int
) -> FrameModule:
    return FrameModule(
        kind,
        channels,
        heads=spec.heads,
        num_attention=spec.num_attention,
        motion_token_dim=spec.motion_token_dim,
        max_frames=spec.max_frames,
        groups=groups,
    )


class DownLevel(_Level):
    def __init__(self, spec: LevelSpec, *, downsample_padding: int, **kwargs) -> None:
        super().__init__()
        resnet_in = [spec.in_channels] + [spec.out_channels] * (spec.num_layers - 1)
        self._build_layers(spec, resnet_in, **kwargs)
        if spec.resample:
            self.downsamplers = nn.ModuleList(
                [
                    Downsample2D(
                        spec.out_channels, use_conv=True, padding=downsample_padding, name="op"
                    )
                ]
            )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, ctx: UNetContext
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, ctx)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpLevel(_Level):
    def __init__(self, spec: LevelSpec, **kwargs) -> None:
        super().__init__()
        n = spec.num_layers
        resnet_in = []
        for i in range(n):
            skip = spec.in_channels if i == n - 1 else spec.out_channels
            below = spec.prev_output_channels if i == 0 else spec.out_channels
            resnet_in.append(below + skip)
        self._build_layers(spec, resnet_in, **kwargs)
        if spec.resample:
            self.upsamplers = nn.ModuleList([Upsample2D(spec.out_channels, use_conv=True)])

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, ctx: UNetContext
    ) -> torch.Tensor:
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._layer(i, x, temb, ctx)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)
        return x


class MidLevel(nn.Module):
    """resnet → attention → [motion] → [temporal] → resnet."""

    def __init__(
        self,
        channels: int,
        *,
        temb_channels: int,
        groups: int,
        eps: float,
        heads: int,
        context_dim: int,
        frame_modules: FrameModuleSpec | None,
        layer_index: list[int],
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=channels,
                    out_channels=channels,
                    temb_channels=temb_channels,
                    groups=groups,
                    eps=eps,
                    output_scale_factor=output_scale_factor,
                )
                for _ in range(2)
            ]
        )
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, heads, context_dim, groups, layer_index[0])]
        )
        layer_index[0] += 1
        if frame_modules is not None:
            self.motion_modules = nn.ModuleList(
                [_frame_module("motion", channels, frame_modules, groups)]
            )
            self.temporal_modules = nn.ModuleList(
                [_frame_module("temporal", channels, frame_modules, groups)]
            )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = _after_resnet(self, 0, x, ctx)
        return self.resnets[1](x, temb)
