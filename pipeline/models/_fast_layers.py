"""Drop-in replacements for two layers whose stock kernels waste GPU time in this model.

Both keep their parent class's parameters and state-dict keys, so they are swapped in after
loading (:func:`use_fast_layers`) and compute the same function:

* :class:`ChannelsLastGroupNorm` — PyTorch's GroupNorm kernel wants NCHW memory: on a
  channels-last activation it first copies the tensor to NCHW and returns NCHW, which the next
  convolution copies back. On the H100 those two copies took 24 % of a denoising call
  (``docs/benchmarks.md``). This one works on the NHWC memory as it is: statistics in fp32 from
  two reductions, then one pass that applies them, and returns channels-last.
* :class:`SplitGEGLU` — diffusers' GEGLU projects to twice the width and splits the result, so
  GELU and the product run on strided halves (a slow generic kernel); projecting each half with
  its half of the weights gives contiguous tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from torch import nn


def group_norm_channels_last(
    x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """``F.group_norm`` for a 4-D tensor in channels-last memory, returned in channels-last."""
    batch, channels, height, width = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, groups, channels // groups)
    count = tokens.shape[1] * tokens.shape[3]
    mean = tokens.mean(dim=(1, 3), keepdim=True, dtype=torch.float32)
    # E[x²] in fp32 without materialising x² (which could overflow fp16); E[x²] − E[x]² loses
    # ~1e-5 (relative) to cancellation at a mean 7x the spread: far below fp16 output rounding
    mean_square = (
        torch.linalg.vector_norm(tokens, dim=(1, 3), keepdim=True, dtype=torch.float32).square_()
        / count
    )
    rstd = torch.rsqrt((mean_square - mean.square()).clamp_(min=0) + eps)
    scale = rstd if weight is None else rstd * weight.float().view(1, 1, groups, -1)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.float().view(1, 1, groups, -1)
    out = torch.empty_like(tokens)
    torch.addcmul(shift, tokens, scale, out=out)  # computed in fp32, stored in x's dtype
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps channels-last activations in channels-last memory (for
    inference: with gradients enabled it is the stock layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() == 4
            and not torch.is_grad_enabled()
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


class SplitGEGLU(GEGLU):
    """diffusers ``GEGLU`` (``proj`` → value, gate halves → value · GELU(gate)) with contiguous
    halves: each is projected with its own rows of ``proj.weight``."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weight, bias = self.proj.weight, self.proj.bias
        half = weight.shape[0] // 2
        value = F.linear(hidden_states, weight[:half], None if bias is None else bias[:half])
        gate = F.linear(hidden_states, weight[half:], None if bias is None else bias[half:])
        return value.mul_(self.gelu(gate))


def use_fast_layers(network: nn.Module, *, group_norm: bool = True) -> None:
    """Swap :class:`ChannelsLastGroupNorm` (when ``group_norm``) and :class:`SplitGEGLU` into
    ``network`` in place (same parameters; the class changes)."""
    for module in network.modules():
        if group_norm and type(module) is nn.GroupNorm:
            module.__class__ = ChannelsLastGroupNorm
        elif type(module) is GEGLU:
            module.__class__ = SplitGEGLU
