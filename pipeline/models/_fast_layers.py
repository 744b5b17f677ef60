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
* :class:`ChannelsLastUpsample2D` — nearest 2× upsampling that stays channels-last.
* :class:`ChannelsLastConv2d` — a convolution whose bias (and, through :func:`conv_silu`, the
  following SiLU) is added by one Triton pass instead of PyTorch's broadcasting kernel.
* :func:`add_layer_norm` — the spatial and frame transformers' residual adds together with the
  LayerNorm that follows each.
* On CUDA with Triton the channels-last norms run :mod:`._nhwc_kernels` (one read for the
  statistics, one read and write to apply them); elsewhere, and inside ``torch.compile``, the same
  arithmetic in PyTorch ops.
* :func:`frame_attention` — the temporal modules' attention over the frames, from frame-major
  tokens (no transposes; the position table as a per-frame bias) in one Triton kernel.
* :func:`bank_attention` — attention to a frame's own tokens and to its stream's reference bank
  computed apart and merged by log-sum-exp, instead of copying the bank into every frame's keys.
* :class:`SplitGEGLU` — diffusers' GEGLU projects to twice the width and splits the result, so
  GELU and the product run on strided halves (a slow generic kernel): on CUDA one Triton pass
  reads both halves and writes the product; elsewhere each half is projected with its half of the
  weights (contiguous tensors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from . import _fp8, _fp8_conv, _nhwc_kernels
from ._check_cache import cache_file, load_verdict, stack_key, store_verdict

logger = logging.getLogger(__name__)


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor whose memory is NHWC (and not also NCHW, as with one pixel or one channel)."""
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


_kernels_work = True  # cleared by check_kernels when Triton cannot run here
# the op that returns attention with its log-sum-exp on this GPU ("cudnn" or "flash"), chosen
# by check_kernels; None: bank attention concatenates the bank into every frame's keys
_lse_attention_op: str | None = None


def _use_kernels(x: torch.Tensor) -> bool:
    """Triton kernels for CUDA tensors in eager mode; inside ``torch.compile`` the PyTorch ops,
    which the compiler fuses itself."""
    return (
        x.is_cuda
        and _kernels_work
        and _nhwc_kernels.available()
        and not torch.compiler.is_compiling()
    )


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, op: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on ``(B, h, N, d)`` tensors and its float32 log-sum-exp ``(B, h, N)``
    (natural log), from PyTorch's fused kernels: ``op`` ``"cudnn"`` or ``"flash"`` on CUDA; on
    CPU its flash kernel."""
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, scale=scale
        )
    elif op == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
            query, key, value, None, True, 0.0, False, False, scale=scale
        )[:2]
    elif op == "flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, 0.0, False, False, scale=scale
        )[:2]
    else:
        raise ValueError(f"no attention-with-log-sum-exp op {op!r} on {query.device}")
    return out, lse.reshape(query.shape[:3])


def bank_attention_usable(query: torch.Tensor) -> bool:
    """On CUDA: kernels in use and a log-sum-exp op that passed :func:`check_kernels` (on other
    devices only where a test routes the layers to the kernels)."""
    return _use_kernels(query) and (_lse_attention_op is not None or not query.is_cuda)


def bank_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bank_key: torch.Tensor,
    bank_value: torch.Tensor,
    scale: float,
    bank_lengths: Sequence[int] | None = None,
) -> torch.Tensor:
    """Attention of every frame's queries ``(S·F, h, N, d)`` to its own keys/values and its
    stream's bank ``(S, h, L, d)``, without concatenating the bank into every frame's keys: the
    own part per frame, the bank part with a stream's F frames of queries as one sequence (a
    view of the same memory), merged by their log-sum-exps (:func:`._nhwc_kernels.merge_attention`).
    ``bank_lengths``: each stream's real bank length where the banks are padded to ``L`` (streams
    with fewer history keyframes): those streams attend to their own slice, never to padding.
    Returns ``(S·F, N, h·d)``, heads concatenated."""
    batch, heads, tokens, head_dim = query.shape
    streams = bank_key.shape[0]
    own, own_lse = attention_with_lse(query, key, value, scale, _lse_attention_op)
    if query.stride() != (tokens * heads * head_dim, head_dim, heads * head_dim, 1):
        query = query.transpose(1, 2).contiguous().transpose(1, 2)  # token-major, as projected
    frames_as_one = query.as_strided(
        (streams, heads, (batch // streams) * tokens, head_dim),
        ((batch // streams) * tokens * heads * head_dim, head_dim, heads * head_dim, 1),
    )
    bank_key, bank_value = bank_key.to(query.dtype), bank_value.to(query.dtype)
    full = bank_key.shape[2]
    if bank_lengths is None or all(length == full for length in bank_lengths):
        bank, bank_lse = attention_with_lse(
            frames_as_one, bank_key, bank_value, scale, _lse_attention_op
        )
    else:  # one launch per run of streams with the same bank length (a masked kernel is slower)
        parts = [
            attention_with_lse(
                frames_as_one[start:stop],
                bank_key[start:stop, :, :length],
                bank_value[start:stop, :, :length],
                scale,
                _lse_attention_op,
            )
            for start, stop, length in _runs(bank_lengths)
        ]
        bank = torch.cat([out for out, _ in parts])
        bank_lse = torch.cat([lse for _, lse in parts])
    return _nhwc_kernels.merge_attention(own, own_lse, bank, bank_lse)


def _runs(lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(start, stop, length)`` of each run of equal consecutive ``lengths``."""
    runs: list[tuple[int, int, int]] = []
    for index, length in enumerate(lengths):
        if runs and runs[-1][2] == length:
            runs[-1] = (runs[-1][0], index + 1, length)
        else:
            runs.append((index, index + 1, length))
    return runs


def _choose_lse_attention(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """The first log-sum-exp attention op whose split-and-merge result matches attention over
    the concatenated keys here (PyTorch's private ops: checked, not assumed)."""
    generator = torch.Generator().manual_seed(1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    from ._attention import _append_bank  # noqa: PLC0415 - _attention imports this module

    # 2 streams × 3 frames, 2 heads of 40, 24 own tokens, a bank of 40
    query = randn(6, 24, 80).view(6, 24, 2, 40).transpose(1, 2)
    key, value = randn(6, 2, 24, 40), randn(6, 2, 24, 40)
    bank_key, bank_value = randn(2, 2, 40, 40), randn(2, 2, 40, 40)
    expected = F.scaled_dot_product_attention(  # the processor's concatenating path
        query.float(),
        _append_bank(key, bank_key).float(),
        _append_bank(value, bank_value).float(),
    )
    expected = expected.transpose(1, 2).reshape(6, 24, 80)
    global _lse_attention_op
    failures = []
    for op in ("cudnn", "flash"):
        _lse_attention_op = op
        try:
            got = bank_attention(query, key, value, bank_key, bank_value, 40**-0.5)
            error = ((got.float() - expected).abs().max() / expected.abs().max()).item()
            if error < 0.02:
                logger.info("bank attention: %s attention with log-sum-exp, merged", op)
                return op
            failures.append(f"{op}: off by {error:.1%}")
        except Exception as err:  # noqa: BLE001 - an op this build or GPU lacks: try the next
            failures.append(f"{op}: {type(err).__name__}: {err}")
    logger.info(
        "bank attention concatenates the bank into every frame's keys on %s (%s)",
        device,
        "; ".join(failures),
    )
    return None


def check_kernels(device: torch.device | str, dtype: torch.dtype = torch.float16) -> bool:
    """Run every Triton kernel once on ``device`` against the PyTorch ops. If Triton cannot build
    or launch them there (no C compiler for its launcher, an unsupported GPU) or they disagree,
    log why and use the PyTorch ops from then on (slower, same results). Returns whether the
    kernels are in use."""
    global _kernels_work, _lse_attention_op
    if not _nhwc_kernels.available():
        return False
    key = stack_key(device, dtype)
    kept = load_verdict(key)
    if kept is not None:  # this GPU and software stack passed before (a job earlier on it)
        _kernels_work, _lse_attention_op = True, kept.get("lse_attention_op")
        logger.info("kernel checks passed before on this GPU and software (%s)", cache_file())
        return True
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
        value, gate = tokens.float().chunk(2, dim=-1)
        # upsampling then a 3×3 convolution, as four phases (no draw from the global RNG here)
        conv = torch.nn.utils.skip_init(nn.Conv2d, 64, 16, 3, padding=1, device=device, dtype=dtype)
        conv.weight.data = (torch.randn(16, 64, 3, 3, generator=generator) / 24).to(device, dtype)
        conv.bias.data = torch.randn(16, generator=generator).to(device, dtype)
        # frame attention: 2 streams × 16 frames at one position, one head of 32
        qkv = torch.randn(32, 1, 96, generator=generator).to(device, dtype)
        zero = torch.zeros(16, 96, device=device)
        attended = _nhwc_kernels.frame_attention(qkv, zero, 16, 1, 32**-0.5)
        q, k, v = qkv.float().view(2, 16, 96).chunk(3, dim=-1)
        expected = F.scaled_dot_product_attention(q, k, v).reshape(32, 1, 32)
        pairs = [
            (got, reference),
            (normed, F.layer_norm(total.float(), (64,), weight.float())),
            (summed, (2 * x.float() + weight.float()[:, None, None]) / 2),
            (_nhwc_kernels.geglu(tokens.contiguous()), value * F.gelu(gate)),
            (attended, expected),
            (_nhwc_kernels.upsample_nearest_2x(x), F.interpolate(x.float(), scale_factor=2.0)),
            (
                _nhwc_kernels.layer_norm(tokens, weight, None, 1e-5),
                F.layer_norm(tokens.float(), (64,), weight.float()),
            ),
            (
                upsample_conv_phases(conv, x),
                upsample_conv_fp32(conv, x),
            ),
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
    _lse_attention_op = None
    if _kernels_work and torch.device(device).type == "cuda":
        _lse_attention_op = _choose_lse_attention(device, dtype)
        store_verdict(key, {"lse_attention_op": _lse_attention_op})
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
    *,
    fp8_for: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | _fp8.Fp8Rows]:
    """``total = x + delta (+ row_addend[:, None, :])`` and ``norm(total)``: a transformer's
    residual add and its next LayerNorm, one Triton pass on CUDA. Returns ``(total, normed)``;
    ``normed`` comes in FP8 (:class:`._fp8.Fp8Rows`) where the kernel runs and ``fp8_for``, the
    layer that reads it next, multiplies in FP8 (``model.fp8``)."""
    if (
        _use_kernels(x)
        and not torch.is_grad_enabled()
        and x.dim() == 3
        and x.shape == delta.shape
        and x.is_contiguous()
        and delta.is_contiguous()
        and norm.normalized_shape == (x.shape[-1],)
    ):
        fp8 = _fp8.feeds(fp8_for, x)
        total, normed = _nhwc_kernels.add_layer_norm(
            x, delta, norm.weight, norm.bias, norm.eps, row_addend=row_addend, fp8=fp8
        )
        if fp8:
            normed = _fp8.Fp8Rows(*normed, shape=x.shape, dtype=x.dtype)
        return total, normed
    total = delta + x
    if row_addend is not None:
        total = total + row_addend[:, None, :]
    return total, norm(total)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(x)``: one Triton pass on CUDA (several token rows per program)."""
    if (
        _use_kernels(x)
        and not torch.is_grad_enabled()
        and x.is_contiguous()
        and norm.normalized_shape == (x.shape[-1],)
    ):
        return _nhwc_kernels.layer_norm(x, norm.weight, norm.bias, norm.eps)
    return norm(x)


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

    silu = False  # SiLU after the norm (in the kernel's output pass)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x) and not torch.is_grad_enabled():
            return group_norm_channels_last(
                x, self.num_groups, self.weight, self.bias, self.eps, silu=self.silu
            )
        out = super().forward(x)
        return F.silu(out) if self.silu else out


class ChannelsLastGroupNormSiLU(ChannelsLastGroupNorm):
    """:class:`ChannelsLastGroupNorm` followed by SiLU (the VAE decoder's ``conv_norm_out`` →
    ``conv_act`` on its largest activation, in one pass)."""

    silu = True


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that adds its bias (and optionally SiLU) in one Triton pass on CUDA
    channels-last outputs; elsewhere the stock layer."""

    def forward(self, x: torch.Tensor, *, silu: bool = False) -> torch.Tensor:
        # _fp8_conv.conv: the layer's own convolution, or e4m3 where model.fp8 chose this layer
        if self.bias is None or not _use_kernels(x) or torch.is_grad_enabled():
            out = _fp8_conv.conv(self, x, self.bias)
        else:
            out = _fp8_conv.conv(self, x)
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
            and not self.training  # dropout
            # "group" (the VAE's blocks, no time embedding) runs like "default"
            and self.time_embedding_norm in ("default", "group")
            and isinstance(self.nonlinearity, nn.SiLU)
            and isinstance(self.norm1, nn.GroupNorm)
            and isinstance(self.norm2, nn.GroupNorm)
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs):
        if args or kwargs or not self._fusable(input_tensor):
            return super().forward(input_tensor, temb, *args, **kwargs)
        batch = input_tensor.shape[0]
        hidden = _norm_silu(input_tensor, self.norm1)
        hidden = _fp8_conv.conv(self.conv1, hidden)  # e4m3 where model.fp8 chose the layer
        # conv1's bias and the time embedding: one (N, C) addend inside norm2
        addend = self.conv1.bias
        if addend is not None:
            addend = addend.float().expand(batch, -1)
        if self.time_emb_proj is not None and temb is not None:
            projected = self.time_emb_proj(temb if self.skip_time_act else F.silu(temb)).float()
            projected = projected.expand(batch, -1)
            addend = projected if addend is None else addend + projected
        hidden = _norm_silu(hidden, self.norm2, addend)
        hidden = _fp8_conv.conv(self.conv2, hidden)
        bias = self.conv2.bias
        shortcut = input_tensor
        if self.conv_shortcut is not None:
            shortcut = _fp8_conv.conv(self.conv_shortcut, input_tensor)
            if self.conv_shortcut.bias is not None:
                bias = self.conv_shortcut.bias if bias is None else bias + self.conv_shortcut.bias
        return add_bias_residual(hidden, bias, shortcut, 1.0 / self.output_scale_factor)


def _norm_silu(
    x: torch.Tensor, norm: nn.GroupNorm, addend: torch.Tensor | None = None
) -> torch.Tensor:
    return group_norm_channels_last(
        x, norm.num_groups, norm.weight, norm.bias, norm.eps, addend=addend, silu=True
    )


def frame_attention_usable(attn: nn.Module, normed: torch.Tensor) -> bool:
    """Whether :func:`frame_attention` serves this temporal attention: CUDA kernels in eager
    mode, and not the ``eager`` backend (which asks for the reference arithmetic)."""
    return _use_kernels(normed) and getattr(attn.processor, "backend", None) != "eager"


def frame_attention(attn: nn.Module, normed: torch.Tensor, frames: int) -> torch.Tensor:
    """A temporal module's self-attention (diffusers ``Attention`` ``attn`` with an optional
    ``pos_encoder``) over the frame axis of frame-major tokens ``normed`` ``(S·F, P, C)``: one
    projection to ``[q | k | v]``, the position table folded into a per-frame bias (adding it to
    the input and projecting is the same as adding its projection), the Triton kernel, the
    output projection. Returns ``(S·F, P, C)`` like the transposing PyTorch path."""
    weight, frame_bias = _qkv_projection(attn, frames)
    qkv = _fp8.linear(normed, weight, None, attn)  # FP8 where model.fp8 chose this layer
    out = _nhwc_kernels.frame_attention(qkv, frame_bias, frames, attn.heads, attn.scale)
    return attn.to_out[1](attn.to_out[0](out))


def _qkv_projection(attn: nn.Module, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked q/k/v weights and the ``(frames, 3C)`` float32 bias (position table through
    them, plus their biases), cached on ``attn`` until its weights change."""
    projections = (attn.to_q, attn.to_k, attn.to_v)
    key = tuple((p.weight.data_ptr(), p.weight._version) for p in projections) + (frames,)
    cached = getattr(attn, "_qkv_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    weight = torch.cat([p.weight for p in projections])
    width = weight.shape[0]
    if getattr(attn, "pos_encoder", None) is not None:
        positions = attn.pos_encoder.pe[0, :frames].float()
    else:
        positions = torch.zeros(frames, weight.shape[1], device=weight.device)
    biases = [
        p.bias.float() if p.bias is not None else weight.new_zeros(width // 3, dtype=torch.float32)
        for p in projections
    ]
    frame_bias = F.linear(positions, weight.float(), torch.cat(biases))
    attn._qkv_cache = (key, weight, frame_bias)
    return weight, frame_bias


class ChannelsLastUpsample2D(Upsample2D):
    """diffusers ``Upsample2D`` (nearest 2×, then its convolution) that upsamples channels-last
    CUDA activations with :func:`._nhwc_kernels.upsample_nearest_2x`; other cases run the stock
    forward (which turns batches of 64+ to NCHW first, a copy each way around the convolution)."""

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs):
        doubled = tuple(2 * s for s in hidden_states.shape[-2:])
        if (
            args
            or kwargs
            or not (self.interpolate and self.norm is None and not self.use_conv_transpose)
            or (output_size is not None and tuple(output_size) != doubled)
            or not is_channels_last(hidden_states)
            or not _use_kernels(hidden_states)
            or torch.is_grad_enabled()
        ):
            return super().forward(hidden_states, output_size, *args, **kwargs)
        conv = (self.conv if self.name == "conv" else self.Conv2d_0) if self.use_conv else None
        if conv is not None and self._phases_pay(conv, hidden_states):
            return upsample_conv_phases(conv, hidden_states)
        hidden_states = _nhwc_kernels.upsample_nearest_2x(hidden_states)
        return hidden_states if conv is None else conv(hidden_states)

    # the small input's pixels from which the phases gain: on an H200 (fp16, channels-last;
    # scripts/probe_upsample_conv.py) 2.1-2.3x from 32x32 up, 1.8x at 16x16, 0.9x at 8x8
    phases_min_pixels = 256

    def _phases_pay(self, conv: nn.Conv2d, x: torch.Tensor) -> bool:
        return (
            x.shape[-2] * x.shape[-1] >= self.phases_min_pixels
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        )


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 convolution's weight ``(C_out, C_in, 3, 3)`` → the four phases of "nearest 2×
    upsampling, then that convolution" as one 2×2 convolution ``(4·C_out, C_in, 2, 2)`` on the
    small input, phase ``2a + b`` first by ``a``. Output row ``2i + a`` reads upsampled rows
    ``2i + a - 1 … 2i + a + 1``, i.e. small rows ``{i-1: w₀, i: w₁ + w₂}`` (a = 0) or
    ``{i: w₀ + w₁, i+1: w₂}`` (a = 1); columns alike. Summed in fp32, stored in the weight's
    dtype. 4 taps instead of 9 per output pixel, and no 4× upsampled copy of the input."""
    w = weight.float()

    def fold(taps: torch.Tensor, dim: int, phase: int) -> torch.Tensor:
        first, middle, last = taps.unbind(dim)
        return torch.stack((first, middle + last) if phase == 0 else (first + middle, last), dim)

    phases = [fold(fold(w, 2, a), 3, b) for a in (0, 1) for b in (0, 1)]
    return torch.cat(phases).to(weight.dtype)


def upsample_conv_fp32(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(F.interpolate(x, scale_factor=2))`` in fp32, the stock way: what the phases and
    the stock fp16 path are checked against (load-time check, tests, probe)."""
    bias = None if conv.bias is None else conv.bias.float()
    upsampled = F.interpolate(x.float(), scale_factor=2.0, mode="nearest")
    return F.conv2d(upsampled, conv.weight.float(), bias, padding=conv.padding)


def upsample_conv_phases(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(F.interpolate(x, scale_factor=2, mode="nearest"))`` for a 3×3, padding-1 ``conv``
    on channels-last CUDA ``x``: one 2×2 convolution (padding 1) of ``x`` with
    :func:`phase_weights` (cached on ``conv`` until its weight changes), then one Triton pass
    that interleaves the phases and adds the bias. Same function; fp16 rounding differs
    (scripts/probe_upsample_conv.py: max error against fp32 4.3e-4 of the output's range,
    3.3e-4 the stock way)."""
    key = (conv.weight.data_ptr(), conv.weight._version)
    cached = getattr(conv, "_phase_cache", None)
    if cached is None or cached[0] != key:
        weight = phase_weights(conv.weight.detach()).contiguous(memory_format=torch.channels_last)
        cached = conv._phase_cache = (key, weight)
    phases = F.conv2d(x, cached[1], None, padding=1)
    return _nhwc_kernels.interleave_phases(phases, conv.bias)


class SplitGEGLU(GEGLU):
    """diffusers ``GEGLU`` (``proj`` → value, gate halves → value · GELU(gate)) without its slow
    passes over strided halves: on CUDA one projection and :func:`._nhwc_kernels.geglu` (one read
    of each half, one write); elsewhere each half projected with its own rows of
    ``proj.weight`` (contiguous halves), then GELU and the product."""

    def forward(
        self,
        hidden_states: torch.Tensor | _fp8.Fp8Rows,
        *args,
        fp8_for: nn.Module | None = None,
        **kwargs,
    ) -> torch.Tensor | _fp8.Fp8Rows:
        """``fp8_for``: the layer that reads the result; where it multiplies in FP8 the kernel
        writes the result in FP8 (:class:`._fp8.Fp8Rows`)."""
        weight, bias = self.proj.weight, self.proj.bias
        if isinstance(hidden_states, _fp8.Fp8Rows) or (
            _use_kernels(hidden_states) and hidden_states.is_contiguous()
        ):  # an FP8 input came from a kernel: the kernels run here
            projected = _fp8.linear(hidden_states, weight, bias, self.proj)
            if not _fp8.feeds(fp8_for, projected):
                return _nhwc_kernels.geglu(projected)
            values, scale = _nhwc_kernels.geglu(projected, fp8=True)
            shape = (*projected.shape[:-1], projected.shape[-1] // 2)
            return _fp8.Fp8Rows(values, scale, torch.Size(shape), projected.dtype)
        if getattr(self.proj, "fp8", None) is not None:  # model.fp8 (emulated off CUDA: tests)
            value, gate = _fp8.linear(hidden_states, weight, bias, self.proj).chunk(2, dim=-1)
            return value * self.gelu(gate)
        half = weight.shape[0] // 2
        value = F.linear(hidden_states, weight[:half], None if bias is None else bias[:half])
        gate = F.linear(hidden_states, weight[half:], None if bias is None else bias[half:])
        return value.mul_(self.gelu(gate))


def feed_forward(ff: nn.Module, normed: torch.Tensor | _fp8.Fp8Rows) -> torch.Tensor:
    """diffusers' ``FeedForward`` (GEGLU projection, dropout, output product) at inference, where
    its input may come in FP8 and its GEGLU writes FP8 for an output product that reads it so.
    Without FP8 it is the module's own call (``model.compile=regional`` compiles that call)."""
    geglu, out = ff.net[0], ff.net[2]
    fp8 = isinstance(normed, _fp8.Fp8Rows) or getattr(out, "fp8", None) is not None
    if not fp8 or not isinstance(geglu, SplitGEGLU) or ff.training:  # training: dropout acts
        return ff(normed.dequantize() if isinstance(normed, _fp8.Fp8Rows) else normed)
    return _fp8.linear(geglu(normed, fp8_for=out), out.weight, out.bias, out)


def use_fast_layers(network: nn.Module, *, channels_last: bool = True) -> None:
    """Swap :class:`SplitGEGLU` and, for channels-last networks, :class:`ChannelsLastGroupNorm`,
    :class:`ChannelsLastConv2d`, :class:`FusedResnetBlock2D` and :class:`ChannelsLastUpsample2D`
    into ``network`` in place (same parameters; the class changes), and fold a decoder's ``conv_act`` SiLU into its
    ``conv_norm_out`` (:class:`ChannelsLastGroupNormSiLU`; ``conv_act`` becomes ``Identity``)."""
    for module in list(network.modules()):
        if (
            channels_last
            and type(getattr(module, "conv_norm_out", None)) is nn.GroupNorm
            and type(getattr(module, "conv_act", None)) is nn.SiLU
        ):  # diffusers' VAE decoder: its final norm and activation in one pass
            module.conv_norm_out.__class__ = ChannelsLastGroupNormSiLU
            module.conv_act = nn.Identity()
        if channels_last and type(module) is nn.GroupNorm:
            module.__class__ = ChannelsLastGroupNorm
        elif channels_last and type(module) is nn.Conv2d:
            module.__class__ = ChannelsLastConv2d
        elif channels_last and type(module) is ResnetBlock2D:
            module.__class__ = FusedResnetBlock2D
        elif channels_last and type(module) is Upsample2D:
            module.__class__ = ChannelsLastUpsample2D
        elif type(module) is GEGLU:
            module.__class__ = SplitGEGLU
