"""The Triton kernels compute what PyTorch computes (pipeline/models/_nhwc_kernels.py).

Without a GPU they run through Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET``): the same kernel code, indexing and masking included, that runs on CUDA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attention_reference import attention_over_concatenated_bank, attention_over_each_streams_bank

from pipeline.models import BankPadding, _fast_layers, _nhwc_kernels

pytestmark = pytest.mark.skipif(not _nhwc_kernels.available(), reason="needs triton")


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.to(memory_format=torch.channels_last)


# shapes: group sizes 10 (not a power of two) and 8, rows in several statistics chunks with a
# ragged last one (81, 130), more channels than one 64-wide tile (96), one pixel (1×1)
@pytest.mark.parametrize(
    ("shape", "groups", "offset"),
    [
        ((2, 40, 9, 9), 4, 0.0),
        ((3, 96, 10, 13), 12, 0.0),
        ((2, 32, 9, 9), 4, 20.0),
        ((4, 16, 1, 1), 2, 0.0),
    ],
)
def test_group_norm_equals_pytorch(shape, groups, offset) -> None:
    torch.manual_seed(0)
    x = nhwc(torch.randn(shape) * 3 + offset)
    weight, bias = torch.randn(shape[1]), torch.randn(shape[1])
    got = _nhwc_kernels.group_norm(x, groups, weight, bias, 1e-6)
    expected = F.group_norm(x.double(), groups, weight.double(), bias.double(), 1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last) and got.dtype == x.dtype
    # merged per-chunk centred statistics: no E[x²] − E[x]² cancellation even at a mean 7x the spread
    assert (got.double() - expected).abs().max() < 2e-5
    plain = _nhwc_kernels.group_norm(x, groups, None, None, 1e-6)
    assert (plain.double() - F.group_norm(x.double(), groups, eps=1e-6)).abs().max() < 2e-5


def test_group_norm_adds_the_addend_before_normalising_and_applies_silu() -> None:
    torch.manual_seed(1)
    x = nhwc(torch.randn(3, 40, 11, 7))
    addend = torch.randn(3, 40) * 4  # per sample and channel: a conv bias plus a time embedding
    weight, bias = torch.randn(40), torch.randn(40)
    got = _nhwc_kernels.group_norm(x, 4, weight, bias, 1e-5, addend=addend, silu=True)
    expected = F.silu(F.group_norm(x + addend[:, :, None, None], 4, weight, bias, 1e-5))
    assert (got - expected).abs().max() < 2e-5
    # the addend shifts whole channels: it changes the statistics, not just the output
    assert (got - F.silu(F.group_norm(x, 4, weight, bias, 1e-5))).abs().max() > 0.1


def test_group_norm_in_half_precision_is_within_rounding() -> None:
    torch.manual_seed(2)
    x = nhwc(torch.randn(2, 64, 16, 16) * 4 + 10).half()
    weight, bias = torch.randn(64).half(), torch.randn(64).half()
    got = _nhwc_kernels.group_norm(x, 32, weight, bias, 1e-6, silu=True)
    expected = F.silu(F.group_norm(x.float(), 32, weight.float(), bias.float(), 1e-6))
    assert got.dtype == torch.float16
    assert (got.float() - expected).abs().max() < 1e-2  # fp16 output rounding (|y| up to ~6)


def test_group_norm_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="channels-last"):
        _nhwc_kernels.group_norm(torch.randn(2, 8, 3, 3), 2, None, None, 1e-6)
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        _nhwc_kernels.group_norm(nhwc(torch.randn(2, 6, 3, 3)), 4, None, None, 1e-6)


@pytest.mark.parametrize("with_bias", [True, False])
def test_add_bias_residual_in_place(with_bias: bool) -> None:
    torch.manual_seed(3)
    x, residual = nhwc(torch.randn(2, 72, 5, 9)), nhwc(torch.randn(2, 72, 5, 9))
    bias = torch.randn(72) if with_bias else None
    expected = (x + (bias[:, None, None] if with_bias else 0) + residual) * 0.5
    out = _nhwc_kernels.add_bias_residual(x, bias, residual, 0.5)
    assert out is x and torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        _nhwc_kernels.add_bias_residual(x, bias, nhwc(torch.randn(2, 72, 5, 8)), 1.0)


@pytest.mark.parametrize("silu", [False, True])
def test_channels_last_conv_adds_its_bias_in_the_kernel(monkeypatch, silu: bool) -> None:
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(8, 24, kernel_size=3, padding=1, stride=2)
    torch.nn.init.normal_(conv.bias)
    x = nhwc(torch.randn(2, 8, 9, 10))
    with torch.no_grad():
        expected = conv(x.contiguous())
        expected = F.silu(expected) if silu else expected
        conv.__class__ = _fast_layers.ChannelsLastConv2d
        monkeypatch.setattr(_fast_layers, "_use_kernels", lambda t: True)
        got = _fast_layers.conv_silu(conv, x) if silu else conv(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("row_addend", [False, True])
def test_add_layer_norm_equals_an_add_then_layer_norm(row_addend: bool) -> None:
    torch.manual_seed(6)
    x, delta = torch.randn(3, 37, 40), torch.randn(3, 37, 40)
    addend = torch.randn(3, 40) if row_addend else None
    weight, bias = torch.randn(40), torch.randn(40)
    total, normed = _nhwc_kernels.add_layer_norm(x, delta, weight, bias, 1e-5, row_addend=addend)
    expected = x + delta + (addend[:, None, :] if row_addend else 0)
    assert torch.allclose(total, expected, atol=1e-6)
    assert (normed - F.layer_norm(expected, (40,), weight, bias, 1e-5)).abs().max() < 1e-5
    half, half_normed = _nhwc_kernels.add_layer_norm(x.half(), delta.half(), None, None, 1e-5)
    assert half.dtype == half_normed.dtype == torch.float16
    # the norm is of the sum as stored (fp16), as an add followed by LayerNorm computes it
    assert (half_normed.float() - F.layer_norm(half.float(), (40,), eps=1e-5)).abs().max() < 4e-3
    with pytest.raises(ValueError, match="contiguous"):
        _nhwc_kernels.add_layer_norm(x, delta.transpose(0, 1), None, None, 1e-5)


@pytest.mark.parametrize("channels", [40, 96, 320])
def test_layer_norm_equals_pytorch(channels: int) -> None:
    torch.manual_seed(16)
    x = torch.randn(2, 37, channels) * 2 + 3  # 74 rows: the last program's rows ragged
    weight, bias = torch.randn(channels), torch.randn(channels)
    got = _nhwc_kernels.layer_norm(x, weight, bias, 1e-5)
    expected = F.layer_norm(x.double(), (channels,), weight.double(), bias.double(), 1e-5)
    assert got.shape == x.shape and (got.double() - expected).abs().max() < 1e-5
    plain = _nhwc_kernels.layer_norm(x.half(), None, None, 1e-6)
    assert plain.dtype == torch.float16
    assert (plain.float() - F.layer_norm(x, (channels,), eps=1e-6)).abs().max() < 4e-3
    with pytest.raises(ValueError, match="contiguous"):
        _nhwc_kernels.layer_norm(x.transpose(0, 1), None, None, 1e-5)


@pytest.mark.parametrize(
    ("channels_in", "channels_out", "height", "width"),
    [
        (24, 20, 5, 7),  # channels in one 64-wide tile, ragged rows
        (16, 96, 3, 4),  # two channel tiles, the second ragged
    ],
)
def test_upsample_conv_as_phases_equals_upsample_then_conv(
    channels_in, channels_out, height, width
) -> None:
    """Nearest 2× upsampling then a 3×3 convolution, as one 2×2 convolution of the four output
    phases and the interleaving kernel: the same function (zero padding at every edge too)."""
    torch.manual_seed(17)
    conv = torch.nn.Conv2d(channels_in, channels_out, 3, padding=1)
    x = nhwc(torch.randn(2, channels_in, height, width))
    with torch.no_grad():
        expected = conv(F.interpolate(x.double(), scale_factor=2.0, mode="nearest").float())
        got = _fast_layers.upsample_conv_phases(conv, x)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 1e-5
        # the phase weights are cached until the weight changes, then made again
        cached = conv._phase_cache[1]
        assert _fast_layers.upsample_conv_phases(conv, x) is not None
        assert conv._phase_cache[1] is cached
        conv.weight.mul_(2)
        doubled = _fast_layers.upsample_conv_phases(conv, x)
    assert conv._phase_cache[1] is not cached
    assert (doubled - (2 * expected - conv.bias[:, None, None])).abs().max() < 1e-4
    with pytest.raises(ValueError, match="4 phases"):
        _nhwc_kernels.interleave_phases(nhwc(torch.randn(1, 6, 3, 3)), None)


def test_geglu_equals_value_times_gelu_of_gate() -> None:
    torch.manual_seed(8)
    # 200 features: more than one 128-wide column tile, a ragged last one; 3·37 rows: ragged too
    projected = torch.randn(3, 37, 400) * 3
    value, gate = projected.chunk(2, dim=-1)
    got = _nhwc_kernels.geglu(projected)
    assert got.shape == (3, 37, 200)
    assert (got - value * F.gelu(gate)).abs().max() < 1e-5
    half = _nhwc_kernels.geglu(projected.half())
    expected = value.half().float() * F.gelu(gate.half().float())
    assert half.dtype == torch.float16 and (half.float() - expected).abs().max() < 2e-2
    with pytest.raises(ValueError, match="contiguous"):
        _nhwc_kernels.geglu(projected.transpose(0, 1))


@pytest.mark.parametrize(("frames", "heads", "head_dim"), [(16, 2, 40), (5, 3, 8)])
def test_frame_attention_equals_softmax_attention_over_frames(frames, heads, head_dim) -> None:
    """Frame-major rows, a per-frame bias on q/k/v, head dims and frame counts that are not
    powers of two (padded tiles), two streams: against the attention written out in PyTorch."""
    torch.manual_seed(9)
    streams, positions, channels = 2, 3, heads * head_dim
    qkv = torch.randn(streams * frames, positions, 3 * channels)
    bias = torch.randn(frames, 3 * channels)
    got = _nhwc_kernels.frame_attention(qkv, bias, frames, heads, head_dim**-0.5)
    # reference: (S, F, P, 3C) + bias[f] → per (s, p, head) attention along F
    tokens = qkv.view(streams, frames, positions, 3 * channels) + bias[None, :, None, :]
    q, k, v = (
        t.permute(0, 2, 1, 3).reshape(streams, positions, frames, heads, head_dim).transpose(2, 3)
        for t in tokens.chunk(3, dim=-1)
    )
    weights = (q @ k.transpose(-1, -2) * head_dim**-0.5).softmax(dim=-1)
    expected = (weights @ v).transpose(2, 3).reshape(streams, positions, frames, channels)
    expected = expected.permute(0, 2, 1, 3).reshape(streams * frames, positions, channels)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4
    with pytest.raises(ValueError, match="float32"):
        _nhwc_kernels.frame_attention(qkv, bias.half(), frames, heads, 1.0)


def test_upsample_nearest_2x_equals_interpolate() -> None:
    x = nhwc(torch.randn(2, 96, 3, 5))  # two channel tiles, the second ragged
    got = _nhwc_kernels.upsample_nearest_2x(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, F.interpolate(x, scale_factor=2.0, mode="nearest"))


def test_vae_decoder_through_the_kernels_equals_the_stock_decoder(monkeypatch) -> None:
    """The VAE's ResNet blocks (time_embedding_norm "group", no time embedding) take the fused
    path, and its final GroupNorm carries the SiLU: same images as diffusers' decoder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(10)
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()
    latents = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        expected = vae.decode(latents).sample
        _fast_layers.use_fast_layers(vae)
        vae.to(memory_format=torch.channels_last)
        calls = []
        monkeypatch.setattr(_fast_layers, "_use_kernels", lambda t: calls.append(t) or True)
        got = vae.decode(nhwc(latents)).sample
        blocks = [
            m for m in vae.decoder.modules() if isinstance(m, _fast_layers.FusedResnetBlock2D)
        ]
        assert blocks and all(b._fusable(nhwc(torch.randn(1, b.in_channels, 2, 2))) for b in blocks)
    assert isinstance(vae.decoder.conv_norm_out, _fast_layers.ChannelsLastGroupNormSiLU)
    assert isinstance(vae.decoder.conv_act, torch.nn.Identity) and calls
    assert isinstance(vae.decoder.up_blocks[0].upsamplers[0], _fast_layers.ChannelsLastUpsample2D)
    assert (got - expected).abs().max() < 1e-4
    # its upsampler's convolution as four phases (on the 4×4 latents, below the size where the
    # phases pay on a GPU, so asked for here): the same images
    monkeypatch.setattr(_fast_layers.ChannelsLastUpsample2D, "phases_min_pixels", 0)
    phased = []
    monkeypatch.setattr(
        _nhwc_kernels,
        "interleave_phases",
        lambda *a, _real=_nhwc_kernels.interleave_phases: phased.append(1) or _real(*a),
    )
    with torch.no_grad():
        got = vae.decode(nhwc(latents)).sample
    assert phased and (got - expected).abs().max() < 1e-4


def test_bank_attention_merges_to_attention_over_the_concatenated_keys() -> None:
    """Each frame's own keys and its stream's bank attended separately (the bank once per stream,
    all its frames' queries as one sequence) and merged by log-sum-exp: equal to attention over
    the concatenation, for 2 streams × 3 frames with a bank longer than the frame's tokens."""
    torch.manual_seed(11)
    streams, frames, heads, tokens, head_dim, bank_length = 2, 3, 2, 10, 8, 26
    batch = streams * frames
    query = torch.randn(batch, tokens, heads * head_dim).view(batch, tokens, heads, head_dim)
    query = query.transpose(1, 2)  # as the processor's split_heads leaves it
    key, value = (
        torch.randn(batch, heads, tokens, head_dim),
        torch.randn(batch, heads, tokens, head_dim),
    )
    bank_key = torch.randn(streams, heads, bank_length, head_dim)
    bank_value = torch.randn(streams, heads, bank_length, head_dim)
    got = _fast_layers.bank_attention(query, key, value, bank_key, bank_value, head_dim**-0.5)
    expected = attention_over_concatenated_bank(query, key, value, bank_key, bank_value)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5
    # a query laid out otherwise (heads outermost) gives the same result
    packed = query.contiguous()
    again = _fast_layers.bank_attention(packed, key, value, bank_key, bank_value, head_dim**-0.5)
    assert (again - expected).abs().max() < 1e-5


def test_bank_attention_over_padded_banks_reads_each_streams_real_length() -> None:
    """Streams with fewer history keyframes than others share a batch padded to the longest bank:
    with their real lengths given, each attends to its own slice (equal to attention over its
    unpadded bank), whatever the padding holds; runs of equal lengths share a launch."""
    torch.manual_seed(12)
    streams, frames, heads, tokens, head_dim = 3, 2, 2, 10, 8
    lengths = (26, 14, 14)
    batch = streams * frames
    query = torch.randn(batch, tokens, heads * head_dim).view(batch, tokens, heads, head_dim)
    query = query.transpose(1, 2)
    key, value = (
        torch.randn(batch, heads, tokens, head_dim),
        torch.randn(batch, heads, tokens, head_dim),
    )
    bank_key = torch.full((streams, heads, max(lengths), head_dim), 50.0)  # padding: loud garbage
    bank_value = torch.full((streams, heads, max(lengths), head_dim), -50.0)
    for s, length in enumerate(lengths):
        bank_key[s, :, :length] = torch.randn(heads, length, head_dim)
        bank_value[s, :, :length] = torch.randn(heads, length, head_dim)
    got = _fast_layers.bank_attention(
        query, key, value, bank_key, bank_value, head_dim**-0.5, lengths
    )
    expected = attention_over_each_streams_bank(query, key, value, bank_key, bank_value, lengths)
    assert (got - expected).abs().max() < 1e-5
    assert _fast_layers._runs(lengths) == [(0, 1, 26), (1, 3, 14)]
    assert _fast_layers._runs((5, 5, 5)) == [(0, 3, 5)]


def test_a_log_sum_exp_op_that_disagrees_is_not_chosen(monkeypatch) -> None:
    """PyTorch's private attention ops are checked, not trusted: one whose log-sum-exp is in
    another base (here: cudnn's, made base 2) loses to the next; none left → concatenation."""
    real = _fast_layers.attention_with_lse

    def log2_for_cudnn(query, key, value, scale, op):
        out, lse = real(query, key, value, scale, op)
        return out, lse / 0.6931471805599453 if op == "cudnn" else lse

    monkeypatch.setattr(_fast_layers, "attention_with_lse", log2_for_cudnn)
    assert _fast_layers._choose_lse_attention("cpu", torch.float32) == "flash"

    def always_wrong(query, key, value, scale, op):
        out, lse = real(query, key, value, scale, op)
        return out, 2 * lse

    monkeypatch.setattr(_fast_layers, "attention_with_lse", always_wrong)
    assert _fast_layers._choose_lse_attention("cpu", torch.float32) is None


@pytest.mark.parametrize(
    "kind", ["spatial", "spatial+bank", "spatial+padded bank", "motion", "temporal"]
)
def test_transformers_through_the_kernels_equal_their_pytorch_path(monkeypatch, kind: str) -> None:
    """A spatial transformer (channels-last: GroupNorm kernel, 1×1 convolutions as linear layers,
    residual + CLIP value + norm3 in one pass) and the motion/temporal modules (residual adds
    with the following norms) against the same modules on NCHW input in PyTorch ops."""
    from pipeline.models._unet_blocks import FrameModule, SpatialTransformer

    torch.manual_seed(7)
    frames, channels = 4, 32
    bank = (torch.randn(2, 2, 45, 16), torch.randn(2, 2, 45, 16)) if "bank" in kind else None
    padding = None
    if kind == "spatial+padded bank":  # the second stream's bank is 20 long, padded to 45
        valid = torch.arange(45)[None, :] < torch.tensor([[45], [20]])
        padding = BankPadding(valid, (45, 20))
    if kind.startswith("spatial"):
        module = SpatialTransformer(channels, heads=2, context_dim=24, groups=8, layer_index=0)
    else:
        module = FrameModule(kind, channels, heads=2, motion_token_dim=8, groups=8)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    module.eval()
    x = torch.randn(2 * frames, channels, 5, 6)
    clip = torch.randn(2 * frames, 1, 24)
    motion = torch.randn(2 * frames, 3, 8)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if kind.startswith("spatial"):
                return module(inputs, clip, bank, padding)
            return module(inputs, frames, motion if kind == "motion" else None)

    expected = run(x)
    _fast_layers.use_fast_layers(module)
    calls = []
    monkeypatch.setattr(_fast_layers, "_use_kernels", lambda t: calls.append(t) or True)
    got = run(nhwc(x))
    assert len(calls) >= 2  # the GroupNorm and at least one fused add + LayerNorm
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() < 5e-5


def test_kernel_check_passes_where_triton_runs(monkeypatch) -> None:
    monkeypatch.setattr(_fast_layers, "_kernels_work", True)
    assert _fast_layers.check_kernels("cpu", torch.float32)  # interpreted here; compiled on CUDA
    assert _fast_layers._kernels_work


@pytest.mark.parametrize("failure", ["raises", "wrong"])
def test_kernels_that_cannot_run_fall_back_to_pytorch_with_a_warning(
    monkeypatch, caplog, failure: str
) -> None:
    """A GPU machine where Triton cannot build its launcher (no C compiler) or computes wrong
    results must still render: the check switches the layers to their PyTorch ops and says why."""
    monkeypatch.setattr(_fast_layers, "_kernels_work", True)

    def broken(*args, **kwargs):
        if failure == "raises":
            raise RuntimeError(
                "Failed to find C compiler. Please specify via CC environment variable."
            )
        return torch.zeros_like(args[0])

    monkeypatch.setattr(_nhwc_kernels, "group_norm", broken)
    with caplog.at_level("WARNING"):
        assert not _fast_layers.check_kernels("cpu", torch.float32)
    assert not _fast_layers._kernels_work
    message = caplog.text
    assert "Triton kernels unusable on cpu" in message and "PyTorch ops instead" in message
    assert ("C compiler" if failure == "raises" else "differ from PyTorch") in message
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert not _fast_layers._use_kernels(torch.zeros(1))  # every layer now takes PyTorch's path


def test_a_kept_verdict_skips_the_kernel_checks(monkeypatch, tmp_path) -> None:
    """A second job on the same GPU and software reads the first job's verdict instead of running
    the checks (here a check that would fail is skipped); an unreadable file means: check again."""
    from pipeline.models import _check_cache

    monkeypatch.setenv("PORTRAIT_RENDER_CACHE", str(tmp_path))
    monkeypatch.setattr(_fast_layers, "_kernels_work", True)
    key = _check_cache.stack_key("cpu", torch.float32)
    assert _check_cache.load_verdict(key) is None
    _check_cache.store_verdict(key, {"lse_attention_op": None})
    assert _check_cache.load_verdict(key) == {"lse_attention_op": None}
    assert _check_cache.load_verdict(_check_cache.stack_key("cpu", torch.float16)) is None

    def broken(*args, **kwargs):
        raise AssertionError("the checks ran although a verdict was kept")

    monkeypatch.setattr(_nhwc_kernels, "group_norm", broken)
    assert _fast_layers.check_kernels("cpu", torch.float32)
    (tmp_path / "kernel-checks.json").write_text("{not json")
    assert _check_cache.load_verdict(key) is None
