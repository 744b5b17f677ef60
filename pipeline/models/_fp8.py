"""FP8 (e4m3) matrix products for the denoising UNet's linear layers (``model.fp8``, issue 16).

Hopper and Ada tensor cores multiply FP8 matrices at twice the fp16 rate. An FP8 product here is
``out = (x_q · s_x) @ (w_q · s_w)ᵀ + bias`` with ``x_q``, ``w_q`` in ``torch.float8_e4m3fn``
(3 mantissa bits: each element rounded to within 1/16 of itself) and float32 scales:

* weights per output channel, quantised once (:class:`Fp8Weight`, re-quantised only when the
  weight tensor changes);
* activations per token (one scale per row of the ``(tokens, C)`` matrix). Where a Triton
  kernel produces the activation — the LayerNorm before a feed-forward, the GEGLU between its two
  products — that kernel writes it in FP8 with its scales (:class:`Fp8Rows`; the kernels'
  ``fp8`` option in :mod:`._nhwc_kernels`), so the product reads one byte per element and no
  pass of its own quantises it. Elsewhere one Triton pass reads a row once and writes it in
  FP8 (:func:`quantize_rows`), or, off CUDA, the same arithmetic in PyTorch ops.

``torch._scaled_mm`` multiplies with fp32 accumulation, applies both scales and the bias, and
writes the layer's dtype. On CPU (the tests) :func:`scaled_matmul` computes the same function
from the dequantised operands in fp32: the emulation the numerics are checked against.

Which products are converted follows per-shape timings on an H200 (``docs/benchmarks.md``,
"FP8 matrix work", table 2): a feed-forward's products whose input is 640 channels or wider
(:data:`MIN_FED_IN_FEATURES`; their input comes from a kernel that writes FP8), other products
only when large enough to earn back a quantisation pass (:data:`MIN_WEIGHT_ELEMENTS`), and all
only on :data:`MIN_TOKENS` token rows or more. Everything else (norms, attention, convolutions,
the other networks) keeps ``model.dtype``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

logger = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3fn value
FP8_MODES: tuple[str, ...] = ("none", "unet-linear", "unet")
# what gains, measured at the UNet's shapes on an H200 (scripts/bench_fp8.py, docs/benchmarks.md):
# with the quantisation pass counted, only the 1280-channel feed-forwards (1280→10240 and
# 5120→1280) on 4,096+ tokens ran faster than fp16; every narrower product (the 320- and
# 640-channel levels, the stacked q/k/v) and every call with fewer token rows stays in model.dtype
MIN_WEIGHT_ELEMENTS = 1280 * 5120
MIN_TOKENS = 4096
# a feed-forward's two products read an input that the LayerNorm or GEGLU kernel before them
# writes in FP8: without the quantisation pass, the products alone were faster in FP8 at every
# UNet shape with K ≥ 640 (1.2–1.8× at S=4) and slower at K = 320 (320 → 2560: 0.82 vs 0.76 ms)
MIN_FED_IN_FEATURES = 640


def fp8_unsupported(device: torch.device | str) -> str | None:
    """Why FP8 matrix products cannot run on ``device``, or ``None`` when they can."""
    device = torch.device(device)
    if device.type != "cuda":
        return (
            f"the model runs on {device}; FP8 matrix products need an NVIDIA GPU of compute "
            "capability 8.9 or newer (Ada: L4, L40S, RTX 4090; Hopper: H100, H200; Blackwell)"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return (
            f"{name} (compute capability {major}.{minor}) has no FP8 tensor cores; they start "
            "at 8.9 (Ada: L4, L40S, RTX 4090; Hopper: H100, H200; Blackwell)"
        )
    return None


def check_fp8_mode(mode: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` with what to do when ``model.fp8=mode`` cannot run on ``device``."""
    if mode not in FP8_MODES:
        raise ValueError(f"model.fp8={mode!r} is not known; choose one of {', '.join(FP8_MODES)}")
    if mode != "none":
        reason = fp8_unsupported(device)
        if reason is not None:
            raise ValueError(
                f"model.fp8={mode} cannot run: {reason}. Use model.fp8=none (the model then "
                "runs every layer in model.dtype)"
            )


# ----------------------------------------------------------------------------- quantisation


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C_out, C_in)`` → e4m3 weights and one float32 scale per output channel ``(C_out,)``."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp_(min=1e-12) / FP8_MAX
    quantized = (w / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
    return quantized, scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows ``(M, K)`` → e4m3 rows and one float32 scale per row ``(M, 1)``: each row's
    largest magnitude maps to 448. One Triton pass on CUDA; elsewhere PyTorch ops (Triton's
    interpreter rounds to e4m3 wrongly where rounding carries into the exponent: 124.3 → 64)."""
    if x.dim() != 2:
        raise ValueError(f"quantize_rows takes a (tokens, features) matrix, got {tuple(x.shape)}")
    if triton is not None and x.is_cuda and x.is_contiguous():
        return _quantize_rows_triton(x)
    xf = x.float()
    scale = xf.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12) / FP8_MAX
    return (xf / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


if triton is not None:
    from ._nhwc_kernels import e4m3_rows

    @triton.jit
    def _quantize_rows_kernel(
        x_ptr,
        q_ptr,
        scale_ptr,
        rows,
        features,
        BLOCK_R: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        """BLOCK_R whole rows per program: amax, scale, FP8 store (one read, one write)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_K)
        ok = (r < rows)[:, None] & (cols < features)[None, :]
        offsets = r[:, None].to(tl.int64) * features + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        q, scale = e4m3_rows(x, ok, False)  # CUDA only: its conversion instruction rounds
        tl.store(q_ptr + offsets, q, mask=ok)
        tl.store(scale_ptr + r, scale, mask=r < rows)


def _quantize_rows_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows, features = x.shape
    quantized = torch.empty((rows, features), dtype=FP8, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    block_k = triton.next_power_of_2(features)
    block_r = max(1, min(16, 4096 // block_k))  # ~4k elements a program: no register spills
    _quantize_rows_kernel[(triton.cdiv(rows, block_r),)](
        x, quantized, scale, rows, features, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4
    )
    return quantized, scale


# ----------------------------------------------------------------------------- products


@dataclass(frozen=True)
class Fp8Rows:
    """An activation already in FP8, as the kernel that produced it wrote it: ``values`` an e4m3
    ``(rows, features)`` matrix, ``scale`` float32 ``(rows, 1)``, standing for the tensor of
    ``shape`` in ``dtype`` (``≈ values · scale``). :func:`linear` multiplies it as it lies."""

    values: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype

    def dequantize(self) -> torch.Tensor:
        return (self.values.float() * self.scale).to(self.dtype).view(self.shape)


def feeds(owner: nn.Module | None, x: torch.Tensor) -> bool:
    """Whether the kernel producing ``x`` should write it in FP8: its consumer ``owner`` runs
    this call as an FP8 product (:func:`use_fp8` chose it and the call is large enough)."""
    fp8: Fp8Weight | None = getattr(owner, "fp8", None)
    return fp8 is not None and fp8.serves(x)


def scaled_matmul(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``(x_q · x_scale) @ (w_q · w_scale[:, None])ᵀ + bias`` → ``(M, C_out)`` in ``out_dtype``:
    ``torch._scaled_mm`` on CUDA (fp32 accumulation); on CPU the same function from the
    dequantised operands in fp32 (the emulation the tests check)."""
    if x_q.is_cuda:
        return torch._scaled_mm(
            x_q,
            w_q.t(),  # (C_in, C_out), column-major: the layout the FP8 kernels want
            scale_a=x_scale,
            scale_b=w_scale.view(1, -1),
            bias=bias,
            out_dtype=out_dtype,
        )
    out = F.linear(x_q.float() * x_scale, w_q.float() * w_scale[:, None])
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


@dataclass
class Fp8Weight:
    """A layer's weight in e4m3 with per-output-channel scales, quantised from ``source`` and
    again whenever the weight tensor changes (another tensor, or written in place)."""

    min_tokens: int = MIN_TOKENS
    source: tuple[int, int, torch.device] | None = None
    quantized: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def serves(self, x: torch.Tensor) -> bool:
        """Whether this call runs in FP8: inference with enough token rows."""
        return not torch.is_grad_enabled() and x.numel() // x.shape[-1] >= self.min_tokens

    def matrix(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (weight.data_ptr(), weight._version, weight.device)
        if key != self.source:
            self.quantized, self.scale = self.quantize(weight.detach())
            self.source = key
        assert self.quantized is not None and self.scale is not None
        return self.quantized, self.scale

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight as an e4m3 ``(C_out, C_in)`` matrix and its scales (a linear layer's, or a
        1×1 convolution's)."""
        return quantize_weight(weight.view(weight.shape[0], -1))


def linear(
    x: torch.Tensor | Fp8Rows, weight: torch.Tensor, bias: torch.Tensor | None, owner: nn.Module
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, as an FP8 product where ``owner`` (the layer that holds
    ``weight``) was chosen by :func:`use_fp8` and the call is large enough. ``x`` may come in
    FP8 already (:class:`Fp8Rows`, from a kernel asked by :func:`feeds`)."""
    fp8: Fp8Weight | None = getattr(owner, "fp8", None)
    if isinstance(x, Fp8Rows):
        if fp8 is None:  # not an FP8 layer (after all): its own product on the dequantised input
            return F.linear(x.dequantize(), weight, bias)
        w_q, w_scale = fp8.matrix(weight)
        out = scaled_matmul(x.values, x.scale, w_q, w_scale, bias, x.dtype)
        return out.view(*x.shape[:-1], w_q.shape[0])
    if fp8 is None or not fp8.serves(x):
        return F.linear(x, weight, bias)
    w_q, w_scale = fp8.matrix(weight)
    rows = x.reshape(-1, x.shape[-1])
    x_q, x_scale = quantize_rows(rows if rows.is_contiguous() else rows.contiguous())
    out = scaled_matmul(x_q, x_scale, w_q, w_scale, bias, x.dtype)
    return out.view(*x.shape[:-1], w_q.shape[0])


class Fp8Linear(nn.Linear):
    """``nn.Linear`` whose product runs in FP8 (:func:`linear`); same parameters and state-dict
    keys (swapped in by :func:`use_fp8`; the fp16 weight stays for the calls too small to gain)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self)


def _gains(in_features: int, out_features: int, min_weight_elements: int) -> bool:
    # torch._scaled_mm needs both widths to be multiples of 16
    return (
        in_features % 16 == 0
        and out_features % 16 == 0
        and in_features * out_features >= min_weight_elements
    )


def feed_forward_products(network: nn.Module) -> set[nn.Linear]:
    """The two products of every GEGLU feed-forward in ``network`` (diffusers' ``FeedForward``:
    ``net[0].proj``, then ``net[2]``): the products whose input a kernel can write in FP8."""
    products: set[nn.Linear] = set()
    for module in network.modules():
        net = getattr(module, "net", None)
        if (
            isinstance(net, nn.ModuleList)
            and len(net) >= 3
            and isinstance(getattr(net[0], "proj", None), nn.Linear)
            and isinstance(net[2], nn.Linear)
        ):
            products.update((net[0].proj, net[2]))
    return products


def use_fp8(
    network: nn.Module,
    *,
    min_weight_elements: int = MIN_WEIGHT_ELEMENTS,
    min_fed_in_features: int = MIN_FED_IN_FEATURES,
    min_tokens: int = MIN_TOKENS,
) -> int:
    """Mark the linear layers and the spatial transformers' 1×1 convolutions (``proj_in``,
    ``proj_out``) of ``network`` whose products gain from FP8
    (their weights quantised now); ``nn.Linear`` becomes :class:`Fp8Linear`. A feed-forward's
    products (:func:`feed_forward_products`) gain from ``min_fed_in_features`` input channels,
    the others from ``min_weight_elements`` weight elements. The token-matrix
    paths that call ``F.linear`` on a layer's weight (1×1 convolutions on channels-last tokens,
    the feed-forward's GEGLU projection, the temporal attention's stacked q/k/v) ask
    :func:`linear` with the layer as ``owner``. Returns how many layers were marked."""
    fed = feed_forward_products(network)
    marked = 0
    for name, module in network.named_modules():
        if module in fed:
            if module.in_features < min_fed_in_features:
                continue
            shape = (module.in_features, module.out_features)
        elif isinstance(module, nn.Linear):
            shape = (module.in_features, module.out_features)
        elif (
            isinstance(module, nn.Conv2d)
            and name.rsplit(".", 1)[-1] in ("proj_in", "proj_out")  # the spatial transformers'
            and module.kernel_size == (1, 1)
            and module.groups == 1
        ):
            shape = (module.in_channels, module.out_channels)
        elif hasattr(module, "to_q") and hasattr(module, "to_k") and hasattr(module, "to_v"):
            # attention: its stacked [q | k | v] projection (the temporal modules' kernel path)
            shape = (module.to_q.in_features, 3 * module.to_q.out_features)
            if module.to_k.in_features != shape[0]:  # cross-attention: never stacked
                continue
        else:
            continue
        if not _gains(*shape, 0 if module in fed else min_weight_elements):
            continue
        fp8 = Fp8Weight(min_tokens=min_tokens)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fp8.matrix(module.weight)  # quantised once, here, not inside the first call
            if type(module) is nn.Linear:
                module.__class__ = Fp8Linear
        module.fp8 = fp8
        marked += 1
    logger.info("FP8 (e4m3) products in %d layers of %s", marked, type(network).__name__)
    return marked


def fp8_rows_mismatch(
    values: torch.Tensor, scale: torch.Tensor, expected: torch.Tensor
) -> str | None:
    """What is wrong with ``(values, scale)`` as the per-row e4m3 form of ``expected`` (a
    ``(rows, features)`` matrix computed in fp32 elsewhere), or ``None``: the scales must be the
    rows' largest magnitudes over 448, and at most 1 % of the values may differ from rounding
    ``expected`` (the producing kernel's own arithmetic rounds a few ties differently)."""
    reference, reference_scale = quantize_rows(expected.float().cpu())
    scale_error = ((scale.cpu() - reference_scale).abs() / reference_scale).max().item()
    if not scale_error < 1e-3:
        return f"row scales differ by up to {scale_error:.2%}"
    differs = (values.cpu().float() != reference.float()).float().mean().item()
    if not differs <= 0.01:
        return f"{differs:.2%} of the e4m3 values differ from rounding the fp32 result"
    return None


def check_fp8_producers(device: torch.device | str, dtype: torch.dtype) -> None:
    """The LayerNorm and GEGLU kernels writing FP8 (:class:`Fp8Rows`) on ``device`` against the
    same results rounded by :func:`quantize_rows`: raises with what to do when they differ."""
    from . import _nhwc_kernels

    generator = torch.Generator().manual_seed(1)
    x, delta = (torch.randn(2, 200, 640, generator=generator).to(device, dtype) for _ in range(2))
    weight, bias = (torch.randn(640, generator=generator).to(device, dtype) for _ in range(2))
    projected = torch.randn(300, 2 * 1280, generator=generator).to(device, dtype)
    total, (values, scale) = _nhwc_kernels.add_layer_norm(x, delta, weight, bias, 1e-5, fp8=True)
    normed = F.layer_norm(total.float(), (640,), weight.float(), bias.float(), 1e-5)
    problems = {"layer norm": fp8_rows_mismatch(values, scale, normed.view(-1, 640))}
    values, scale = _nhwc_kernels.geglu(projected, fp8=True)
    value, gate = projected.float().chunk(2, dim=-1)
    problems["GEGLU"] = fp8_rows_mismatch(values, scale, value * F.gelu(gate))
    failed = {name: problem for name, problem in problems.items() if problem}
    if failed:
        detail = "; ".join(f"{name}: {problem}" for name, problem in failed.items())
        raise RuntimeError(
            f"model.fp8: the kernels that write FP8 inputs compute wrong results on {device} "
            f"in {dtype} ({detail}); use model.fp8=none"
        )


def check_fp8_kernels(device: torch.device | str, dtype: torch.dtype) -> None:
    """One FP8 product on ``device`` against the fp32 emulation: raises with the reason when this
    PyTorch build or GPU cannot run ``torch._scaled_mm`` with row-wise scales into ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 640, generator=generator).to(device, dtype)
    weight = torch.randn(512, 640, generator=generator).to(device, dtype)
    bias = torch.randn(512, generator=generator).to(device, dtype)
    w_q, w_scale = quantize_weight(weight)
    x_q, x_scale = quantize_rows(x)
    try:
        got = scaled_matmul(x_q, x_scale, w_q, w_scale, bias, dtype).float()
    except Exception as err:  # noqa: BLE001 - reported with what to do
        raise RuntimeError(
            f"model.fp8: torch._scaled_mm with row-wise scales failed on {device} in {dtype} "
            f"({type(err).__name__}: {err}); use model.fp8=none"
        ) from err
    expected = scaled_matmul(x_q.cpu(), x_scale.cpu(), w_q.cpu(), w_scale.cpu(), bias.cpu(), dtype)
    error = ((got.cpu() - expected.float()).norm() / expected.float().norm()).item()
    if not error < 1e-2:
        raise RuntimeError(
            f"model.fp8: torch._scaled_mm on {device} differs from the FP8 arithmetic by "
            f"{error:.2%}; use model.fp8=none"
        )
