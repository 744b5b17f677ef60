"""PersonaLive's reference UNet and denoising UNet.

Both are built from the SD1.5 UNet config (``sd-image-variations-diffusers/unet/config.json``), so
the same code builds the published 0.86 B / 1.7 B networks and the tiny ones the tests use.

* :class:`ReferenceUNet` runs once on the portrait's latent and returns the *bank*: the input of
  every spatial self-attention layer. It has no output head (the published file has none).
* :class:`DenoisingUNet` predicts noise for a batch of streams × 16 frames at per-frame timesteps.
  Its spatial self-attention layers also attend to the bank of their stream (pre-projected to
  keys/values by :meth:`DenoisingUNet.project_bank`), the pose guider's features are added after
  ``conv_in``, and motion/temporal modules follow every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ._attention import BankPadding, split_heads
from ._unet_blocks import DownLevel, FrameModuleSpec, LevelSpec, MidLevel, UNetContext, UpLevel

_DOWN_TYPES = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP_TYPES = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}

# Keys of an SD1.5 UNet config.json that change nothing here (or are checked for their default).
_IGNORED_KEYS = {
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "sample_size",
    "center_input_sample",
}


def unet_kwargs_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Pick and check the fields of a diffusers ``UNet2DConditionModel`` config that we build from.

    Raises:
        ValueError: for a setting this implementation does not support, naming it and its value.
    """
    unsupported = {
        "use_linear_projection": False,
        "only_cross_attention": False,
        "upcast_attention": False,
        "resnet_time_scale_shift": "default",
        "class_embed_type": None,
        "num_class_embeds": None,
        "dual_cross_attention": False,
        "center_input_sample": False,
        "act_fn": "silu",
    }
    for key, default in unsupported.items():
        if key in config and config[key] != default:
            raise ValueError(
                f"UNet config has {key}={config[key]!r}; only {default!r} is supported"
            )
    down = list(config.get("down_block_types", ()))
    up = list(config.get("up_block_types", ()))
    for kind in down:
        if kind not in _DOWN_TYPES:
            raise ValueError(
                f"UNet config down_block_types has {kind!r}; supported: {sorted(_DOWN_TYPES)}"
            )
    for kind in up:
        if kind not in _UP_TYPES:
            raise ValueError(
                f"UNet config up_block_types has {kind!r}; supported: {sorted(_UP_TYPES)}"
            )
    heads = config.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        raise ValueError(
            f"UNet config attention_head_dim={heads!r}: only one value for all blocks is supported"
        )
    return {
        "in_channels": config.get("in_channels", 4),
        "out_channels": config.get("out_channels", 4),
        "block_out_channels": tuple(config.get("block_out_channels", (320, 640, 1280, 1280))),
        "layers_per_block": config.get("layers_per_block", 2),
        "down_block_types": tuple(down) or ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": tuple(up) or ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "attention_heads": heads,
        "cross_attention_dim": config.get("cross_attention_dim", 768),
        "norm_num_groups": config.get("norm_num_groups", 32),
        "norm_eps": config.get("norm_eps", 1e-5),
        "flip_sin_to_cos": config.get("flip_sin_to_cos", True),
        "freq_shift": config.get("freq_shift", 0),
        "downsample_padding": config.get("downsample_padding", 1),
        "mid_block_scale_factor": float(config.get("mid_block_scale_factor", 1.0)),
    }


class _UNetSkeleton(ModelMixin):
    """conv_in, time embedding and the down/mid/up levels shared by both UNets."""

    def _build(self, cfg: dict[str, Any], frame_modules: FrameModuleSpec | None) -> None:
        channels = cfg["block_out_channels"]
        if len(cfg["down_block_types"]) != len(channels) or len(cfg["up_block_types"]) != len(
            channels
        ):
            raise ValueError(
                f"UNet config: {len(channels)} block_out_channels but {len(cfg['down_block_types'])} down and "
                f"{len(cfg['up_block_types'])} up block types; they must be equal"
            )
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        temb_channels = channels[0] * 4
        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)
        common = {
            "temb_channels": temb_channels,
            "groups": groups,
            "eps": eps,
            "heads": cfg["attention_heads"],
            "context_dim": cfg["cross_attention_dim"],
            "frame_modules": frame_modules,
            "layer_index": [0],  # counts spatial transformers in forward order
        }
        down = []
        previous = channels[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            spec = LevelSpec(
                previous,
                channels[i],
                cfg["layers_per_block"],
                _DOWN_TYPES[kind],
                i < len(channels) - 1,
            )
            down.append(DownLevel(spec, downsample_padding=cfg["downsample_padding"], **common))
            previous = channels[i]
        self.down_blocks = nn.ModuleList(down)
        self.mid_block = MidLevel(
            channels[-1], output_scale_factor=cfg["mid_block_scale_factor"], **common
        )
        reversed_channels = list(reversed(channels))
        up = []
        previous = reversed_channels[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            spec = LevelSpec(
                in_channels=reversed_channels[min(i + 1, len(channels) - 1)],
                out_channels=reversed_channels[i],
                num_layers=cfg["layers_per_block"] + 1,
                has_attention=_UP_TYPES[kind],
                resample=i < len(channels) - 1,
                prev_output_channels=previous,
            )
            up.append(UpLevel(spec, **common))
            previous = reversed_channels[i]
        self.up_blocks = nn.ModuleList(up)
        self.num_transformer_layers = common["layer_index"][0]

    def _time_embedding(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.time_embedding(self.time_proj(timesteps).to(dtype))

    def _levels(self, x: torch.Tensor, temb: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        skips = [x]
        for level in self.down_blocks:
            x, level_skips = level(x, temb, ctx)
            skips.extend(level_skips)
        x = self.mid_block(x, temb, ctx)
        for level in self.up_blocks:
            x = level(x, skips, temb, ctx)
        return x


class ReferenceUNet(_UNetSkeleton, ConfigMixin):
    """SD1.5 UNet without output head that returns its spatial self-attention inputs (the bank).

    Config arguments are those of :func:`unet_kwargs_from_config`.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_heads: int = 8,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self._build(dict(self.config), frame_modules=None)

    def forward(self, latents: torch.Tensor, clip_embeds: torch.Tensor) -> list[torch.Tensor]:
        """Run the portrait (or a keyframe) latent through the UNet at t = 0.

        Args:
            latents: ``(B, 4, h, w)`` VAE latents (already scaled).
            clip_embeds: ``(B, 1, C_clip)`` CLIP image tokens.

        Returns:
            One ``(B, h_l*w_l, C_l)`` tensor per spatial transformer layer, in forward order.
        """
        timesteps = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
        temb = self._time_embedding(timesteps, latents.dtype)
        bank: list[torch.Tensor] = []
        ctx = UNetContext(frames=1, clip_context=clip_embeds, bank_out=bank)
        self._levels(self.conv_in(latents), temb, ctx)
        return bank


@dataclass
class DenoisingOutput:
    sample: torch.Tensor  # (S, F, 4, h, w) predicted noise


class DenoisingUNet(_UNetSkeleton, ConfigMixin):
    """PersonaLive's denoising UNet: SD1.5 layers per frame + reference bank + motion/temporal modules.

    Config arguments are those of :func:`unet_kwargs_from_config` plus the frame-module sizes
    (``motion_heads``, ``motion_attention_blocks``, ``motion_token_dim``, ``temporal_max_frames``).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_heads: int = 8,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        motion_heads: int = 8,
        motion_attention_blocks: int = 2,
        motion_token_dim: int = 16,
        temporal_max_frames: int = 32,
    ) -> None:
        super().__init__()
        spec = FrameModuleSpec(
            motion_heads, motion_attention_blocks, motion_token_dim, temporal_max_frames
        )
        self._build(dict(self.config), frame_modules=spec)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def self_attention_layers(self) -> list[nn.Module]:
        """The ``attn1`` of every spatial transformer, in forward (bank) order."""
        layers = sorted(
            (m for m in self.modules() if hasattr(m, "layer_index")), key=lambda m: m.layer_index
        )
        return [m.transformer_blocks[0].attn1 for m in layers]

    def project_bank(self, bank: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Project a reference bank (from :class:`ReferenceUNet`) to this UNet's keys/values.

        Args:
            bank: per layer ``(S, L, C_l)`` self-attention inputs.

        Returns:
            per layer ``(k, v)`` each ``(S, heads, L, head_dim)``: what attention reads.
        """
        layers = self.self_attention_layers()
        if len(bank) != len(layers):
            raise ValueError(
                f"bank has {len(bank)} layers but the denoising UNet has {len(layers)}"
            )
        projected = []
        for attn, tokens in zip(layers, bank):
            tokens = tokens.to(attn.to_k.weight.dtype)
            projected.append(
                (
                    split_heads(attn.to_k(tokens), attn.heads),
                    split_heads(attn.to_v(tokens), attn.heads),
                )
            )
        return projected

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        clip_embeds: torch.Tensor,
        motion_tokens: torch.Tensor,
        pose_features: torch.Tensor | None = None,
        bank_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        bank_mask: list[BankPadding | None] | None = None,
    ) -> DenoisingOutput:
        """Predict noise for every frame of every stream.

        Args:
            sample: ``(S, F, 4, h, w)`` noisy latents.
            timesteps: ``(S, F)`` or ``(F,)`` per-frame diffusion timesteps.
            clip_embeds: ``(S, 1, C_clip)`` CLIP image token of each stream's portrait.
            motion_tokens: ``(S, F, T, C_m)`` motion tokens per frame.
            pose_features: ``(S, F, C0, h, w)`` pose guider output, added after ``conv_in``.
            bank_kv: per transformer layer ``(k, v)`` each ``(S, heads, L, head_dim)``.
            bank_mask: per layer, a :class:`._attention.BankPadding` where ``bank_kv`` pads streams
                with fewer history keyframes, else ``None``.

        Returns:
            :class:`DenoisingOutput` with ``sample`` of shape ``(S, F, 4, h, w)``.
        """
        streams, frames = sample.shape[:2]
        flat = sample.reshape(streams * frames, *sample.shape[2:])
        if timesteps.dim() == 1:
            timesteps = timesteps.expand(streams, frames)
        temb = self._time_embedding(timesteps.reshape(-1), flat.dtype)
        ctx = UNetContext(
            frames=frames,
            clip_context=clip_embeds.repeat_interleave(frames, dim=0),
            motion_tokens=motion_tokens.reshape(streams * frames, *motion_tokens.shape[2:]),
            bank_kv=bank_kv,
            bank_mask=bank_mask,
        )
        x = self.conv_in(flat)
        if pose_features is not None:
            x = x + pose_features.reshape(streams * frames, *pose_features.shape[2:])
        x = self._levels(x, temb, ctx)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return DenoisingOutput(sample=x.reshape(streams, frames, *x.shape[1:]))
