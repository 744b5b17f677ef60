"""Drop-in replacements for layers whose stock kernels waste GPU time in this model.

All keep their parent class's parameters and state-dict keys, so they are swapped in after
loading (:func:`use_fast_layers`) and compute the same function:

* :class:`ChannelsLastGroupNorm` — PyTorch's GroupNorm kernel wants NCHW memory: on a
  channels-last activation it first copies the tensor to NCHW and returns NCHW, which the next
  convolution copies back. On the H100 those two copies took 24 % of a denoising call
  (``docs/benchmarks.md``). This one works on the NHWC memory as it is: statistics in fp32 from
  two reductions, then one pass that applies them, and returns channels-last.
* :class:`FusedResnetBlock2D` — diffusers' ResNet block on channels-last activations with its
  memory-bound steps folded together: the first convolution's bias and the time embedding are
  added inside the second GroupNorm (never as passes of their own), SiLU inside both norms, the
  second convolution's bias (plus the shortcut convolution's) with the skip connection.
* :class:`ChannelsLastConv2d` — a convolution whose bias (and, through :func:`conv_silu`, the
  following SiLU) is added by one Triton pass instead of PyTorch's broadcasting kernel.
* :func:`add_layer_norm` — the spatial and frame transformers' residual adds together with the
  LayerNorm that follows each.
* On CUDA with Triton the channels-last norms run :mod:`._nhwc_kernels` (one read for the
  statistics, one read and write to apply them); elsewhere, and inside ``torch.compile``, the same
  arithmetic in PyTorch ops.
* :class:`SplitGEGLU` — diffusers' GEGLU projects to twice the width and splits the result, so
  GELU and the product run on strided halves (a slow generic kernel); projecting each half with
  its half of the weights gives contiguous tensors.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from . import _nhwc_kernels

logger = logging.getLogger(__name__)


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor whose memory is NHWC (and not also NCHW, as with one pixel or one channel)."""
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


_kernels_work = True  # cleared by check_kernels when Triton cannot run here


def _use_kernels(x: torch.Tensor) -> bool:
    """Triton kernels for CUDA tensors in eager mode; inside ``torch.compile`` the PyTorch ops,
    which the compiler fuses itself."""
    return (
        x.is_cuda
        and _kernels_work
        and _nhwc_kernels.available()
        and not torch.compiler.is_compiling()
    )


def check_kernels(device: torch.device | str, dtype: torch.dtype = torch.float16) -> bool:
    """Run every Triton kernel once on ``device`` against the PyTorch ops. If Triton cannot build
    or launch them there (no C compiler for its launcher, an unsupported GPU) or they disagree,
    log why and use the PyTorch ops from then on (slower, same results). Returns whether the
    kernels are in use."""
    global _kernels_work
    if not _nhwc_kernels.available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, 64, 5, 7, generator=generator).to(device, dtype)
        x = x.to(memory_format=torch.channels_last)
        weight = torch.randn(64, generator=generator).to(device, dtype)
        addend = torch.randn(2, 64, generator=generator).to(device)
        reference = F.silu(F.group_norm(x.float() + addend[:, :, None, None], 8, weight.float()))
        got = _nhwc_kernels.group_norm(x, 8, weight, None, 1e-5, addend=addend, silu=True)
        tokens = x.permute(0, 2, 3, 1).reshape(2, 35, 64)
        total, normed = _nhwc_kernels.add_layer_norm(tokens, tokens, weight, None, 1e-5)
        summed = _nhwc_kernels.add_bias_residual(x.clone(), weight, x, 0.5, silu=False)
        pairs = [
            (got, reference),
            (normed, F.layer_norm(total.float(), (64,), weight.float())),
            (summed, (2 * x.float() + weight.float()[:, None, None]) / 2),
        ]
        # relative to the largest value: fp16/bf16 output rounding is 0.05 % / 0.4 %
        error = max(((a.float() - b).abs().max() / b.abs().max()).item() for a, b in pairs)
        if not error < 0.02:
            raise RuntimeError(f"results differ from PyTorch's by up to {error:.1%}")
    except Exception as err:  # noqa: BLE001 - any failure means: run the PyTorch ops
        logger.warning(
            "Triton kernels unusable on %s (%s: %s); the channels-last layers use PyTorch ops "
            "instead (slower, same results)",
            device,
            type(err).__name__,
            err,
        )
        _kernels_work = False
    return _kernels_work


def group_norm_channels_last(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    addend: torch.Tensor | None = None,
    silu: bool = False,
) -> torch.Tensor:
    """``silu?(F.group_norm(x + addend[:, :, None, None]))`` for a 4-D tensor in channels-last
    memory, returned in channels-last; ``addend`` ``(N, C)`` or ``None``."""
    if _use_kernels(x):
        return _nhwc_kernels.group_norm(x, groups, weight, bias, eps, addend=addend, silu=silu)
    if addend is not None:
        x = x + addend.to(x.dtype)[:, :, None, None]
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
    if silu:
        F.silu(out, inplace=True)
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def add_layer_norm(
    x: torch.Tensor,
    delta: torch.Tensor,
    norm: nn.LayerNorm,
    row_addend: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``total = x + delta (+ row_addend[:, None, :])`` and ``norm(total)``: a transformer's
    residual add and its next LayerNorm, one Triton pass on CUDA. Returns ``(total, normed)``."""
    if (
        _use_kernels(x)
        and not torch.is_grad_enabled()
        and x.dim() == 3
        and x.shape == delta.shape
        and x.is_contiguous()
        and delta.is_contiguous()
        and norm.normalized_shape == (x.shape[-1],)
    ):
        return _nhwc_kernels.add_layer_norm(
            x, delta, norm.weight, norm.bias, norm.eps, row_addend=row_addend
        )
    total = delta + x
    if row_addend is not None:
        total = total + row_addend[:, None, :]
    return total, norm(total)


def add_bias_residual(
    x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor, scale: float
) -> torch.Tensor:
    """``(x + bias[None, :, None, None] + residual) * scale``, in place on ``x`` (a fresh
    convolution output); channels-last ``x`` and ``residual``."""
    if _use_kernels(x) and is_channels_last(residual):
        return _nhwc_kernels.add_bias_residual(x, bias, residual, scale)
    if bias is not None:
        x = x + bias.to(x.dtype)[:, None, None]
    x = x + residual
    return x if scale == 1.0 else x * scale


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps channels-last activations in channels-last memory (for
    inference: with gradients enabled it is the stock layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x) and not torch.is_grad_enabled():
            return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that adds its bias (and optionally SiLU) in one Triton pass on CUDA
    channels-last outputs; elsewhere the stock layer."""

    def forward(self, x: torch.Tensor, *, silu: bool = False) -> torch.Tensor:
        if self.bias is None or not _use_kernels(x) or torch.is_grad_enabled():
            out = super().forward(x)
        else:
            out = self._conv_forward(x, self.weight, None)
            if is_channels_last(out):
                return _nhwc_kernels.add_bias_residual(out, self.bias, None, silu=silu)
            out = out + self.bias[:, None, None]
        return F.silu(out) if silu else out


def conv_silu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``F.silu(conv(x))``, in the convolution's bias pass where it is a :class:`ChannelsLastConv2d`."""
    if isinstance(conv, ChannelsLastConv2d):
        return conv(x, silu=True)
    return F.silu(conv(x))


class FusedResnetBlock2D(ResnetBlock2D):
    """diffusers ``ResnetBlock2D`` with its elementwise passes folded into the norms and the skip
    connection, for inference on channels-last activations; any other use (training, NCHW
    input, resampling or scale-shift variants) runs the stock forward."""

    def _fusable(self, x: torch.Tensor) -> bool:
        return (
            is_channels_last(x)
            and not torch.is_grad_enabled()
            and self.upsample is None
            and self.downsample is None
            and self.time_embedding_norm == "default"
            and isinstance(self.nonlinearity, nn.SiLU)
            and isinstance(self.norm1, nn.GroupNorm)
            and isinstance(self.norm2, nn.GroupNorm)
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs):
        if args or kwargs or not self._fusable(input_tensor):
            return super().forward(input_tensor, temb, *args, **kwargs)
        batch = input_tensor.shape[0]
        hidden = _norm_silu(input_tensor, self.norm1)
        hidden = self.conv1._conv_forward(hidden, self.conv1.weight, None)
        # conv1's bias and the time embedding: one (N, C) addend inside norm2
        addend = self.conv1.bias
        if addend is not None:
            addend = addend.float().expand(batch, -1)
        if self.time_emb_proj is not None and temb is not None:
            projected = self.time_emb_proj(temb if self.skip_time_act else F.silu(temb)).float()
            projected = projected.expand(batch, -1)
            addend = projected if addend is None else addend + projected
        hidden = _norm_silu(hidden, self.norm2, addend)
        hidden = self.conv2._conv_forward(hidden, self.conv2.weight, None)
        bias = self.conv2.bias
        shortcut = input_tensor
        if self.conv_shortcut is not None:
            shortcut = self.conv_shortcut._conv_forward(
                input_tensor, self.conv_shortcut.weight, None
            )
            if self.conv_shortcut.bias is not None:
                bias = self.conv_shortcut.bias if bias is None else bias + self.conv_shortcut.bias
        return add_bias_residual(hidden, bias, shortcut, 1.0 / self.output_scale_factor)


def _norm_silu(
    x: torch.Tensor, norm: nn.GroupNorm, addend: torch.Tensor | None = None
) -> torch.Tensor:
    return group_norm_channels_last(
        x, norm.num_groups, norm.weight, norm.bias, norm.eps, addend=addend, silu=True
    )


class SplitGEGLU(GEGLU):
    """diffusers ``GEGLU`` (``proj`` → value, gate halves → value · GELU(gate)) with contiguous
    halves: each is projected with its own rows of ``proj.weight``."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weight, bias = self.proj.weight, self.proj.bias
        half = weight.shape[0] // 2
        value = F.linear(hidden_states, weight[:half], None if bias is None else bias[:half])
        gate = F.linear(hidden_states, weight[half:], None if bias is None else bias[half:])
        return value.mul_(self.gelu(gate))


def use_fast_layers(network: nn.Module, *, channels_last: bool = True) -> None:
    """Swap :class:`SplitGEGLU` and, for channels-last networks, :class:`ChannelsLastGroupNorm`,
    :class:`ChannelsLastConv2d` and :class:`FusedResnetBlock2D` into ``network`` in place (same
    parameters; the class changes)."""
    for module in network.modules():
        if channels_last and type(module) is nn.GroupNorm:
            module.__class__ = ChannelsLastGroupNorm
        elif channels_last and type(module) is nn.Conv2d:
            module.__class__ = ChannelsLastConv2d
        elif channels_last and type(module) is ResnetBlock2D:
            module.__class__ = FusedResnetBlock2D
        elif type(module) is GEGLU:
            module.__class__ = SplitGEGLU
