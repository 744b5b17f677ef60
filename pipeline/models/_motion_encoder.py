"""Motion encoder (X-NeMo's implicit facial representation): face crop → motion tokens.

A FAN (face-alignment network) trunk — ConvBlocks, one hourglass, a heatmap head — with three
patchified self-attention blocks, reduced to a 512-d vector, projected and split into 32 tokens of
16 channels (plus a fixed sin-cos position table). Sizes are configurable so tests can build a tiny
one; the defaults are the published model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import PatchEmbed, get_1d_sincos_pos_embed_from_grid
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ._unet_blocks import _FrameAttention


def _conv3x3(width_in: int, width_out: int) -> nn.Conv2d:
    return nn.Conv2d(width_in, width_out, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """FAN's residual block: three pre-activated 3×3 convs whose outputs are concatenated."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        half, quarter = width_out // 2, width_out // 4
        self.bn1 = nn.BatchNorm2d(width_in)
        self.conv1 = _conv3x3(width_in, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample = None
        if width_in != width_out:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(width_in, eps=1e-4),
                nn.ReLU(),
                nn.Conv2d(width_in, width_out, kernel_size=1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), dim=1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels (module names ``b1_<level>`` … as published)."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(width, width))
            self.add_module(f"b2_{level}", ConvBlock(width, width))
            if level == 1:
                self.add_module(f"b2_plus_{level}", ConvBlock(width, width))
            self.add_module(f"b3_{level}", ConvBlock(width, width))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            lower = self._level(level - 1, lower)
        else:
            lower = self._modules[f"b2_plus_{level}"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(
            lower, size=upper.shape[-2:], mode="bilinear", align_corners=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class PatchSelfAttention(nn.Module):
    """Self-attention over patches of a feature map, added back as a residual.

    GroupNorm → patch embedding with 2-D sin-cos positions → transformer block (self-attention +
    GEGLU MLP) → per-patch linear un-patchify.
    """

    def __init__(
        self, channels: int, size: int, patch_size: int, heads: int, head_dim: int, groups: int
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.patch_size = patch_size
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        # name kept from the published weights ("temporal" there, though it attends over space)
        from ._unet_blocks import _FrameTransformerBlock  # noqa: PLC0415

        self.transformer_blocks = nn.ModuleList(
            [
                _FrameTransformerBlock(
                    inner, heads, num_attention=1, context_dim=None, max_frames=None
                )
            ]
        )
        self.pos_embed = PatchEmbed(
            height=size,
            width=size,
            patch_size=patch_size,
            in_channels=channels,
            embed_dim=inner,
            interpolation_scale=1,
        )
        self.proj_out = nn.Linear(inner // (patch_size**2), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p = self.patch_size
        tokens = self.pos_embed(self.norm(x))
        for block in self.transformer_blocks:
            for attn, norm in zip(block.attention_blocks, block.norms):
                assert isinstance(attn, _FrameAttention)
                tokens = attn.processor(attn, norm(tokens)) + tokens
            tokens = block.ff(block.ff_norm(tokens)) + tokens
        grid_h, grid_w = height // p, width // p
        tokens = self.proj_out(tokens.reshape(batch, grid_h, grid_w, p, p, -1))
        # (n, gh, gw, p, q, c) -> (n, c, gh, p, gw, q) -> image
        out = tokens.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)
        return out + x


class FANMotionTrunk(nn.Module):
    """FAN trunk with self-attention (the published ``FAN_SA``): face crop → ``embed_dim`` vector."""

    def __init__(
        self,
        crop_size: int,
        widths: tuple[int, int, int],
        hourglass_depth: int,
        heatmaps: int,
        attention_heads: int,
        attention_head_dim: int,
        embed_dim: int,
        groups: int,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        half = crop_size // 2
        quarter = crop_size // 4
        self.conv1 = nn.Conv2d(3, w1, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = ConvBlock(w1, w2)
        self.conv3 = ConvBlock(w2, w2)
        self.conv4 = ConvBlock(w2, w3)
        self.m0 = HourGlass(hourglass_depth, w3)
        self.top_m_0 = ConvBlock(w3, w3)
        self.conv_last0 = nn.Conv2d(w3, w3, kernel_size=1)
        self.l0 = nn.Conv2d(w3, heatmaps, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(w3)
        self.conv6 = nn.Conv2d(heatmaps, 1, 3, 2, 1)
        self.fc = nn.Linear(((quarter - 1) // 2 + 1) ** 2, embed_dim)  # conv6 halves the map
        self.bn5 = nn.BatchNorm2d(heatmaps)
        attention = {"heads": attention_heads, "head_dim": attention_head_dim, "groups": groups}
        self.att_1 = PatchSelfAttention(w2, half, patch_size=4, **attention)
        self.att_2 = PatchSelfAttention(w3, quarter, patch_size=2, **attention)
        self.att_3 = PatchSelfAttention(w3, quarter, patch_size=2, **attention)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(faces)))
        x = self.att_1(self.conv2(x))
        x = self.conv4(self.conv3(F.max_pool2d(x, 2)))
        x = self.att_2(x)
        x = self.top_m_0(self.m0(x))
        x = self.att_3(self.bn_end0(self.conv_last0(x)))
        heat = F.relu(self.bn5(self.l0(F.relu(x))))
        heat = self.conv6(heat)
        return self.fc(F.relu(heat.flatten(1)))


class MotionEncoder(ModelMixin, ConfigMixin):
    """Face crops ``(N, 3, crop, crop)`` in [-1, 1] → motion tokens ``(N, num_tokens, token_dim)``.

    Must run in eval mode (BatchNorm uses its running statistics).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        crop_size: int = 224,
        widths: tuple[int, int, int] = (64, 128, 256),
        hourglass_depth: int = 4,
        heatmaps: int = 68,
        attention_heads: int = 8,
        attention_head_dim: int = 128,
        embed_dim: int = 512,
        token_dim: int = 16,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        if embed_dim % token_dim:
            raise ValueError(
                f"motion encoder embed_dim={embed_dim} is not a multiple of token_dim={token_dim}"
            )
        self.model = FANMotionTrunk(
            crop_size,
            tuple(widths),
            hourglass_depth,
            heatmaps,
            attention_heads,
            attention_head_dim,
            embed_dim,
            norm_num_groups,
        )
        self.final_proj = nn.Linear(embed_dim, embed_dim)
        positions = torch.arange(embed_dim // token_dim, dtype=torch.float64)
        table = get_1d_sincos_pos_embed_from_grid(token_dim, positions, output_type="pt")
        self.register_buffer("pe", table.float().unsqueeze(0))

    @property
    def num_tokens(self) -> int:
        return self.config.embed_dim // self.config.token_dim

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        embedding = self.final_proj(self.model(faces))
        tokens = embedding.view(faces.shape[0], self.num_tokens, self.config.token_dim)
        return tokens + self.pe
