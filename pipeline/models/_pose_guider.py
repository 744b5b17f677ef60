"""Pose guider: a drawn keypoint canvas → features added to the denoising UNet after ``conv_in``."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ._fast_layers import conv_silu


class PoseGuider(ModelMixin, ConfigMixin):
    """Small conv net: 3-channel canvas at full resolution → ``embedding_channels`` at 1/8 resolution.

    Args:
        embedding_channels: output channels; must equal the denoising UNet's first block width
            (320 for SD1.5 — the reference hard-codes 320, we derive it from the UNet config).
        conditioning_channels: canvas channels (RGB).
        block_out_channels: widths of the four stages; each of the last three halves the size.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(
            conditioning_channels, block_out_channels[0], kernel_size=3, padding=1
        )
        blocks = []
        for width_in, width_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            blocks.append(nn.Conv2d(width_in, width_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out_modify = nn.Conv2d(
            block_out_channels[-1], embedding_channels, kernel_size=3, padding=1
        )

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` canvas in [0, 1] → ``(N, embedding_channels, H/8, W/8)``."""
        x = conv_silu(self.conv_in, canvas)
        for block in self.blocks:
            x = conv_silu(block, x)
        return self.conv_out_modify(x)
