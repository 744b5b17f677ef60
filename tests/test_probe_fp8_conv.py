"""The FP8 convolution probe (scripts/probe_fp8_conv.py, issue 16): its recorder finds every
convolution of a call, and its rounding (the fidelity step, before any kernel) acts only inside
the chosen networks. Its kernel is the model's: tests/test_fp8_conv.py."""

from __future__ import annotations

from argparse import Namespace
from functools import partial

import pytest
import torch

from scripts._steady import steady_animator
from scripts.probe_fp8_conv import fake_fp8_convolutions, record_convolutions

ON_GPU = torch.cuda.is_available()


@pytest.mark.skipif(ON_GPU, reason="the probe itself records the full model's calls on a GPU")
def test_the_recorder_finds_every_convolution_of_a_steady_call() -> None:
    """Tiny model on CPU, two streams: the UNet convolves 16 frames per stream, the decoder the
    call's 4 new frames per stream; each shape comes with how often one call runs it."""
    args = Namespace(device="cpu", architecture="tiny", resolution=64)
    animator, states, chunks = steady_animator(args, 2)
    shapes = record_convolutions(partial(animator.advance, states, chunks))
    batches = {x_shape[0] for (x_shape, *_), _count in shapes.items()}
    assert {32, 8} <= batches
    unet_3x3 = [
        count
        for (x_shape, w_shape, stride, padding, _), count in shapes.items()
        if x_shape[0] == 32 and w_shape[2:] == (3, 3) and stride == 1 and padding == 1
    ]
    assert sum(unet_3x3) >= 10
    assert all(count >= 1 for count in shapes.values())


def test_rounded_convolutions_act_only_inside_the_chosen_networks() -> None:
    """Inside the network, a 64-channel convolution multiplies e4m3-rounded operands (the fp32
    result moves by e4m3's rounding, not more); narrower ones and anything outside run as
    before, and the patch is gone afterwards."""
    torch.manual_seed(0)
    wide, narrow = torch.nn.Conv2d(64, 32, 3, padding=1), torch.nn.Conv2d(32, 8, 3, padding=1)
    network, outside = torch.nn.Sequential(wide, narrow), torch.nn.Conv2d(64, 8, 1)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        exact, exact_outside = network(x), outside(x)
        with fake_fp8_convolutions([network]) as converted:
            rounded, rounded_outside = network(x), outside(x)
        assert converted["convolutions"] == 1
        assert torch.equal(rounded_outside, exact_outside)
        error = ((rounded - exact).abs().max() / exact.abs().max()).item()
        assert 1e-3 < error < 0.1
        assert torch.equal(network(x), exact)  # restored
