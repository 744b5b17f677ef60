"""Kernels that write the next FP8 product's input (model.fp8, pipeline/models/_fp8.py).

The LayerNorm before a feed-forward and the GEGLU inside it write their result in e4m3 with one
scale per row, so the feed-forward's two products read one byte per element and no quantisation
pass of their own. Without a GPU the kernels run in Triton's interpreter (conftest sets
``TRITON_INTERPRET``); the FP8 products are emulated (e4m3 operands, fp32 product), as in
``tests/test_fp8.py``. The same checks run on a GPU in the test marked ``gpu``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from fp8_helpers import cuda_fp8
from torch import nn

from pipeline.models import _fast_layers, _fp8, _nhwc_kernels
from pipeline.models._fp8 import Fp8Linear, Fp8Rows, fp8_rows_mismatch, quantize_rows, use_fp8

pytestmark = pytest.mark.skipif(not _nhwc_kernels.available(), reason="needs triton")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


def assert_rows_of(values: torch.Tensor, scale: torch.Tensor, expected: torch.Tensor) -> None:
    """``(values, scale)`` is ``expected`` rounded to e4m3 per row, as quantize_rows rounds it."""
    assert values.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert values.shape == expected.shape and scale.shape == (expected.shape[0], 1)
    reference, reference_scale = quantize_rows(expected.float())
    assert torch.allclose(scale, reference_scale, rtol=1e-6)
    differs = values.float() != reference.float()
    # the kernel's fp32 sums run in another order: an element that lands on an e4m3 tie may go
    # the other way; never more than one e4m3 step
    assert differs.float().mean() < 2e-3
    step = (reference.float().abs() * 2.0**-3).clamp(min=2.0**-9)
    assert ((values.float() - reference.float()).abs() <= step + 1e-6).all()
    assert fp8_rows_mismatch(values, scale, expected) is None


@pytest.mark.parametrize("row_addend", [False, True])
def test_the_add_layer_norm_kernel_writes_e4m3_rows(row_addend: bool) -> None:
    torch.manual_seed(0)
    # 96 channels (not a power of two), 2 × 37 rows (a ragged last tile), rows of very different
    # magnitudes (each keeps its own precision)
    x = torch.randn(2, 37, 96) * torch.logspace(-1, 2, 37)[None, :, None]
    delta = torch.randn(2, 37, 96)
    addend = torch.randn(2, 96) if row_addend else None
    weight, bias = torch.randn(96), torch.randn(96)
    total, (values, scale) = _nhwc_kernels.add_layer_norm(
        x, delta, weight, bias, 1e-5, row_addend=addend, fp8=True
    )
    expected_total = x + delta + (addend[:, None, :] if row_addend else 0)
    assert torch.allclose(total, expected_total, atol=1e-5)
    normed = F.layer_norm(expected_total.double(), (96,), weight.double(), bias.double(), 1e-5)
    assert_rows_of(values, scale, normed.view(-1, 96))


def test_the_geglu_kernel_writes_e4m3_rows() -> None:
    torch.manual_seed(1)
    # 300 features in a 512-wide row tile (ragged columns); 13 rows in tiles of 8 (a ragged last)
    projected = torch.randn(13, 600) * torch.logspace(-1, 1, 13)[:, None]
    values, scale = _nhwc_kernels.geglu(projected, fp8=True)
    value, gate = projected.double().chunk(2, dim=-1)
    assert_rows_of(values, scale, value * F.gelu(gate))


def test_an_fp8_input_is_multiplied_as_it_lies() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(64, 32)
    x = torch.randn(3, 10, 64)
    values, scale = quantize_rows(x.view(-1, 64))
    rows = Fp8Rows(values, scale, x.shape, x.dtype)
    with torch.no_grad():
        plain = _fp8.linear(rows, layer.weight, layer.bias, layer)  # not an FP8 layer
        assert torch.allclose(plain, F.linear(rows.dequantize(), layer.weight, layer.bias))
        use_fp8(layer, min_weight_elements=0, min_tokens=1)
        got = layer(rows)
        assert got.shape == (3, 10, 32)
        assert torch.equal(got, layer(x))  # the same arithmetic as quantising x in the layer


def test_the_feed_forward_products_from_640_channels_are_chosen() -> None:
    torch.manual_seed(3)
    network = nn.ModuleList([FeedForward(320, activation_fn="geglu"), nn.Linear(640, 640)])
    network.append(FeedForward(640, activation_fn="geglu"))
    assert use_fp8(network) == 3
    narrow, wide = network[0].net, network[2].net
    # 320 → 2560 reads 320 channels: slower in FP8 even without a quantisation pass (measured)
    assert type(narrow[0].proj) is nn.Linear and isinstance(narrow[2], Fp8Linear)  # 1280 → 320
    assert isinstance(wide[0].proj, Fp8Linear) and isinstance(wide[2], Fp8Linear)
    assert type(network[1]) is nn.Linear  # not a feed-forward, too small to pay for the pass


def test_a_feed_forward_without_fp8_runs_as_the_module_s_own_call() -> None:
    """model.compile=regional compiles a FeedForward's call: without FP8 it must still be used."""
    torch.manual_seed(6)
    ff = FeedForward(32, activation_fn="geglu").eval()
    _fast_layers.use_fast_layers(ff)
    seen = []
    ff.register_forward_hook(lambda *args: seen.append(1))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = ff(x)
        assert torch.equal(_fast_layers.feed_forward(ff, x), expected) and len(seen) == 2
        use_fp8(ff, min_fed_in_features=0, min_tokens=1)
        _fast_layers.feed_forward(ff, x)  # FP8: the two products on their own path
    assert len(seen) == 2


def _transformer(kind: str, channels: int) -> nn.Module:
    from pipeline.models._unet_blocks import FrameModule, SpatialTransformer

    if kind == "spatial":
        module = SpatialTransformer(channels, heads=2, context_dim=24, groups=8, layer_index=0)
    else:
        module = FrameModule(kind, channels, heads=2, motion_token_dim=8, groups=8)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)
    return module.eval()


@pytest.mark.parametrize("kind", ["spatial", "temporal", "motion"])
def test_feed_forwards_read_their_inputs_in_fp8_from_the_kernels(monkeypatch, kind: str) -> None:
    """Through the kernels, every feed-forward product reads an input a kernel wrote in e4m3 (no
    quantisation pass runs) and the block computes what the emulated FP8 path computes: the same
    roundings, up to the few ties the kernels' own sums round the other way."""
    torch.manual_seed(4)
    frames, channels = 4, 32
    module = _transformer(kind, channels)
    x = torch.randn(2 * frames, channels, 5, 6)
    clip = torch.randn(2 * frames, 1, 24)
    motion = torch.randn(2 * frames, 3, 8)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if kind == "spatial":
                return module(inputs, clip)
            return module(inputs, frames, motion if kind == "motion" else None)

    exact = run(x)
    _fast_layers.use_fast_layers(module)
    assert use_fp8(module, min_weight_elements=1 << 40, min_fed_in_features=0, min_tokens=1) == 2
    passes, products = [], []
    real_quantize, real_matmul = _fp8.quantize_rows, _fp8.scaled_matmul
    monkeypatch.setattr(_fp8, "quantize_rows", lambda t: passes.append(t) or real_quantize(t))
    monkeypatch.setattr(_fp8, "scaled_matmul", lambda *a: products.append(a[0]) or real_matmul(*a))
    emulated = run(x)  # PyTorch ops: each FP8 product quantises its own input
    assert len(passes) == 2 and len(products) == 2
    passes.clear(), products.clear()
    monkeypatch.setattr(_fast_layers, "_use_kernels", lambda t: True)
    got = run(x.to(memory_format=torch.channels_last))
    assert passes == [] and len(products) == 2  # both inputs came from the kernels in e4m3
    assert all(p.dtype == torch.float8_e4m3fn for p in products)
    assert relative_error(got, emulated) < 1e-3
    assert 1e-3 < relative_error(got, exact) < 0.05  # e4m3's error, and no more


def test_the_fp8_producer_check_passes_where_the_kernels_are_right(monkeypatch) -> None:
    _fp8.check_fp8_producers("cpu", torch.float32)  # interpreted here; compiled on CUDA
    real_geglu = _nhwc_kernels.geglu

    def off_by_one_row(projected, *, fp8=False):
        values, scale = real_geglu(projected, fp8=fp8)
        return values, scale.roll(1, dims=0)

    monkeypatch.setattr(_nhwc_kernels, "geglu", off_by_one_row)
    with pytest.raises(RuntimeError, match=r"GEGLU: row scales differ.*model\.fp8=none"):
        _fp8.check_fp8_producers("cpu", torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_fp8(), reason="needs a CUDA GPU with FP8 tensor cores")
def test_gpu_kernels_write_the_e4m3_rows_quantize_rows_writes() -> None:
    """On CUDA the kernels convert with the GPU's own instruction (no rounding in code)."""
    torch.manual_seed(5)
    x, delta = (torch.randn(4, 1024, 640, device="cuda", dtype=torch.float16) for _ in range(2))
    weight, bias = (torch.randn(640, device="cuda", dtype=torch.float16) for _ in range(2))
    total, (values, scale) = _nhwc_kernels.add_layer_norm(x, delta, weight, bias, 1e-5, fp8=True)
    normed = F.layer_norm(total.float(), (640,), weight.float(), bias.float(), 1e-5)
    assert_rows_of(values.cpu(), scale.cpu(), normed.view(-1, 640).cpu())
    projected = torch.randn(4096, 2 * 1280, device="cuda", dtype=torch.float16)
    values, scale = _nhwc_kernels.geglu(projected, fp8=True)
    value, gate = projected.float().chunk(2, dim=-1)
    assert_rows_of(values.cpu(), scale.cpu(), (value * F.gelu(gate)).cpu())
    _fp8.check_fp8_producers("cuda", torch.float16)
    _fp8.check_fp8_producers("cuda", torch.bfloat16)
