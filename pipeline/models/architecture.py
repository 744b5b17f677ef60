"""Sizes of every PersonaLive network, for the published model ("full") and a tiny one ("tiny").

The UNet, VAE and CLIP sizes of a weights folder come from its ``config.json`` files (diffusers /
transformers format); the other networks (pose guider, motion encoder, keypoint extractor) have no
config file in the published layout, so their sizes come from the architecture preset here. The
tiny preset is for tests and the offline demo: same code, same file layout, a few MB of weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARCHITECTURES = ("full", "tiny")


@dataclass(frozen=True)
class NetworkSizes:
    """Sizes of the networks that have no config.json in the published layout.

    Attributes:
        pose_guider: :class:`~pipeline.models.PoseGuider` kwargs (without ``embedding_channels``,
            which follows the UNet's first block width).
        motion_encoder: :class:`~pipeline.models.MotionEncoder` kwargs.
        keypoint_extractor: :class:`~pipeline.models.KeypointExtractor` kwargs.
        frame_modules: motion/temporal module kwargs of the denoising UNet.
        canvas_radius: radius in pixels of the keypoint disks drawn for the pose guider.
    """

    pose_guider: dict[str, Any] = field(default_factory=dict)
    motion_encoder: dict[str, Any] = field(default_factory=dict)
    keypoint_extractor: dict[str, Any] = field(default_factory=dict)
    frame_modules: dict[str, Any] = field(default_factory=dict)
    canvas_radius: int = 4


FULL_SIZES = NetworkSizes()  # every network's defaults are the published sizes

TINY_SIZES = NetworkSizes(
    pose_guider={"block_out_channels": (4, 8, 8, 16)},
    motion_encoder={
        "crop_size": 32,
        "widths": (8, 16, 32),
        "hourglass_depth": 2,
        "heatmaps": 8,
        "attention_heads": 2,
        "attention_head_dim": 8,
        "embed_dim": 32,
        "token_dim": 4,
        "norm_num_groups": 4,
    },
    keypoint_extractor={"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64), "input_size": 64},
    frame_modules={"motion_heads": 2, "motion_token_dim": 4},
    canvas_radius=2,
)

# config.json contents written for tiny random weights (the published files' formats)
TINY_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 2,
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

TINY_CLIP_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}

# The published base model's UNet config (lambdalabs/sd-image-variations-diffusers, unet/config.json)
FULL_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

# stabilityai/sd-vae-ft-mse config.json
FULL_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# CLIP ViT-L/14 vision tower with projection (sd-image-variations-diffusers image_encoder/config.json)
FULL_CLIP_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
}


def network_sizes(architecture: str) -> NetworkSizes:
    """The preset for ``architecture`` ("full" or "tiny")."""
    if architecture == "full":
        return FULL_SIZES
    if architecture == "tiny":
        return TINY_SIZES
    raise ValueError(
        f"model.architecture={architecture!r} is not known; choose one of {', '.join(ARCHITECTURES)}"
    )


def base_configs(architecture: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(unet, vae, clip) config.json contents of an architecture (used for random weights and
    for building the full model on the meta device without a weights folder)."""
    if architecture == "full":
        return FULL_UNET_CONFIG, FULL_VAE_CONFIG, FULL_CLIP_CONFIG
    if architecture == "tiny":
        return TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_CLIP_CONFIG
    raise ValueError(
        f"model.architecture={architecture!r} is not known; choose one of {', '.join(ARCHITECTURES)}"
    )
