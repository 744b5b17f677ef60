"""The drop-in layers compute what the stock layers compute (pipeline/models/_fast_layers.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from pipeline.models import _fast_layers, _nhwc_kernels
from pipeline.models._fast_layers import (
    ChannelsLastConv2d,
    ChannelsLastGroupNorm,
    FusedResnetBlock2D,
    SplitGEGLU,
    use_fast_layers,
)


@pytest.mark.parametrize("offset", [0.0, 20.0])
def test_channels_last_group_norm_equals_group_norm_and_keeps_the_layout(offset: float) -> None:
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 32, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = (torch.randn(3, 32, 7, 5) * 3 + offset).to(memory_format=torch.channels_last)
    expected = norm(x.contiguous())
    norm.__class__ = ChannelsLastGroupNorm
    with torch.no_grad():
        got = norm(x)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    # fp32 statistics; the variance as E[x²] − E[x]² loses ~1e-5 (relative) to cancellation at
    # a mean 7x the spread, far below fp16's output rounding (5e-4) where this layer runs
    assert (got - expected).abs().max() < (2e-5 if offset == 0 else 5e-4)
    assert torch.equal(norm(x.contiguous()), expected)  # NCHW input: the stock kernel
    assert (norm(x) - expected).abs().max() < 5e-4  # with gradients: the stock (CPU NHWC) kernel


def test_channels_last_group_norm_in_half_precision_is_within_rounding() -> None:
    torch.manual_seed(1)
    norm = ChannelsLastGroupNorm(8, 64)
    x = (torch.randn(2, 64, 6, 6) * 4 + 10).to(memory_format=torch.channels_last)
    expected = F.group_norm(x.contiguous(), 8, norm.weight, norm.bias, norm.eps)
    with torch.no_grad():
        got = norm.half()(x.half()).float()
    assert (got - expected).abs().max() < 1e-2  # fp16 output rounding (|y| up to ~4)


def test_split_geglu_equals_geglu() -> None:
    torch.manual_seed(2)
    layer = GEGLU(16, 24)
    x = torch.randn(2, 5, 16)
    expected = layer(x)
    layer.__class__ = SplitGEGLU
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_use_fast_layers_swaps_classes_and_keeps_the_state_dict() -> None:
    network = nn.Sequential(
        nn.GroupNorm(2, 8), GEGLU(8, 4), ResnetBlock2D(in_channels=8, groups=2), nn.Conv2d(8, 8, 1)
    )
    before = {k: v.clone() for k, v in network.state_dict().items()}
    use_fast_layers(network)
    assert isinstance(network[0], ChannelsLastGroupNorm) and isinstance(network[1], SplitGEGLU)
    assert isinstance(network[2], FusedResnetBlock2D)
    assert isinstance(network[2].norm1, ChannelsLastGroupNorm)
    assert isinstance(network[3], ChannelsLastConv2d) and isinstance(
        network[2].conv1, ChannelsLastConv2d
    )
    assert network.state_dict().keys() == before.keys()
    use_fast_layers(nn.Sequential(network), channels_last=False)  # idempotent, GN optional
    assert isinstance(network[0], ChannelsLastGroupNorm)


def test_channels_last_animation_equals_the_default_layout(tiny_weights) -> None:
    """model.channels_last=true (NHWC networks, ChannelsLastGroupNorm, SplitGEGLU) animates the
    same frames as the default layout, keyframes and two batched streams included."""
    import numpy as np

    from pipeline.animate import StreamingAnimator
    from pipeline.config import AnimatorConfig
    from pipeline.models import load_personalive

    def animate(channels_last: bool) -> torch.Tensor:
        models = load_personalive(tiny_weights, "fp32", "cpu", architecture="tiny")
        models.optimize(channels_last=channels_last)
        config = AnimatorConfig(keyframe_threshold=0.0, output_dtype="float")
        animator = StreamingAnimator(models, config, resolution=64)
        rng = np.random.default_rng(0)
        streams = [
            animator.fuse_reference(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), seed=i)
            for i in range(2)
        ]
        frames = rng.integers(0, 255, (60, 64, 64, 3), dtype=np.uint8)
        outputs = [animator.advance(streams, [frames[i : i + 4]] * 2) for i in range(0, 60, 4)]
        assert all(s.num_keyframes == 3 for s in streams)
        return torch.cat([torch.cat(pair) for pair in outputs])

    default, channels_last = animate(False), animate(True)
    assert default.shape == channels_last.shape and default.shape[0] > 0
    assert (default - channels_last).abs().max() < 1e-4  # fp32 rounding (measured 1.2e-6)


@pytest.mark.parametrize(
    "kernels",
    [
        False,
        pytest.param(
            True, marks=pytest.mark.skipif(not _nhwc_kernels.available(), reason="needs triton")
        ),
    ],
)
@pytest.mark.parametrize(
    ("channels_in", "temb", "scale"), [(16, True, 1.0), (24, True, 1.0), (16, False, 2.0)]
)
def test_fused_resnet_block_equals_diffusers_and_keeps_the_layout(
    monkeypatch, channels_in: int, temb: bool, scale: float, kernels: bool
) -> None:
    """The folded ResNet block (conv1's bias and the time embedding inside norm2, conv2's and the
    shortcut's biases with the skip connection) computes diffusers' block: in PyTorch ops (what
    CPUs and torch.compile run) and through the Triton kernels (what runs on a GPU; here
    interpreted)."""
    torch.manual_seed(3)
    block = ResnetBlock2D(
        in_channels=channels_in,
        out_channels=16,
        temb_channels=12 if temb else None,
        groups=4,
        output_scale_factor=scale,
    ).eval()
    for p in block.parameters():  # away from init values, so every bias and scale matters
        nn.init.normal_(p, std=0.2)
    x = torch.randn(2, channels_in, 6, 5)
    embedding = torch.randn(2, 12) if temb else None
    used = []
    if kernels:
        monkeypatch.setattr(_fast_layers, "_use_kernels", lambda t: used.append(t) or True)
    with torch.no_grad():
        expected = block(x, embedding)
        block.__class__ = FusedResnetBlock2D
        got = block(x.to(memory_format=torch.channels_last), embedding)
        # both norms and the bias + skip connection went to the kernels
        assert len(used) == (3 if kernels else 0)
        assert torch.equal(block(x, embedding), expected)  # NCHW input: the stock forward
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    assert (got - expected).abs().max() < (5e-5 if kernels else 1e-5)
