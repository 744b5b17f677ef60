"""Triton kernels for the memory-bound steps between the convolutions, on channels-last memory.

In eager PyTorch these steps run on its generic broadcasting kernels (a per-channel vector against
an NHWC tensor cannot take the vectorised path): on the H100 GroupNorm's apply pass, its two
statistics reductions and the convolution bias adds took a quarter of a denoising call's GPU time
(``docs/benchmarks.md``). The kernels here move each activation as few times as
their step allows, at full width:

* :func:`group_norm` — GroupNorm (+ SiLU) with an optional per-sample, per-channel addend applied
  *before* normalising, so a ResNet block's convolution bias and time embedding never get a pass
  of their own. Statistics in fp32: per-chunk means and centred sums of squares, merged with Chan's
  formula (no ``E[x²] − E[x]²`` cancellation).
* :func:`add_bias_residual` — ``(x + bias + residual) * scale`` (+ SiLU) in place (a
  convolution's bias and its block's skip connection, or its activation, in one pass).
* :func:`add_layer_norm` — a transformer's residual add (plus a per-sample vector: the CLIP
  cross-attention's value) and the next LayerNorm in one pass over token rows ``(B, L, C)``.
* :func:`geglu` — a feed-forward's ``value · GELU(gate)`` from the two halves of its projection
  (one read of each half, one write; PyTorch's GELU and multiply made five passes).
* With ``fp8=True``, :func:`add_layer_norm` and :func:`geglu` write their result in e4m3 with
  one scale per row, as the FP8 product that reads it next wants it (``model.fp8``,
  :mod:`._fp8`): no quantisation pass of its own, and a byte per element instead of two.
* :func:`upsample_nearest_2x` — nearest-neighbour 2× upsampling of a channels-last activation
  (PyTorch's NHWC kernel ran at a tenth of the copy bandwidth, and diffusers turns batches of 64
  or more back to NCHW first).
* :func:`merge_attention` — two attention results over disjoint key sets (a frame's own tokens,
  its stream's reference bank) combined by their log-sum-exps, written in the layout the output
  projection reads: the bank is attended to without being copied into every frame's keys.
* :func:`frame_attention` — the temporal modules' self-attention over the 16 frames at every
  spatial position, read straight from the frame-major projections (no transposes) with the
  position table folded in as a per-frame bias; cuDNN's flash kernel pads 16 keys to 64-128-wide
  tiles and took ~8 % of a denoising call on the H100 class of GPUs.

An activation ``(N, C, H, W)`` in channels-last memory is a row-major ``(N·H·W, C)`` matrix: every
kernel tiles that matrix. Triton is optional (CPU installs may lack it); callers check
:func:`available`. With ``TRITON_INTERPRET=1`` the kernels also run on CPU tensors (the tests).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

_ROWS = 64  # rows of the (N·H·W, C) matrix per tile
_TARGET_PROGRAMS = 1024  # enough statistics programs to fill an H100's 132 SMs several times


def available() -> bool:
    return triton is not None


def _channel_block(channels: int) -> int:
    return min(64, triton.next_power_of_2(channels))


if triton is not None:

    @triton.jit
    def _row_tile(total_rows, channels, column_block, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """This program's tile of the ``(rows, channels)`` matrix: row and column indices, the
        in-bounds masks, and element offsets (64-bit: activations pass 2³¹ elements)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = column_block * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < channels
        ok = (r < total_rows)[:, None] & col_ok[None, :]
        offsets = r[:, None].to(tl.int64) * channels + cols[None, :]
        return r, cols, col_ok, ok, offsets

    @triton.jit
    def e4m3_rows(y, ok, ROUND_IN_CODE: tl.constexpr):
        """The rows of the tile ``y`` (fp32; ``ok`` its in-bounds mask) in e4m3, each scaled so
        that its largest magnitude maps to 448, and those scales (round to nearest, ties to
        even): per-token FP8 as the products want it (``_fp8.quantize_rows`` and the kernels here
        that write FP8). A GPU's conversion instruction rounds so; Triton's interpreter does not
        where rounding carries into the next binade (124.3 → 64), so there (``ROUND_IN_CODE``)
        the value is first rounded to an e4m3 value in fp32 arithmetic, which the conversion
        then keeps exactly."""
        amax = tl.max(tl.where(ok, tl.abs(y), 0.0), axis=1)
        scale = tl.maximum(amax, 1e-12) / 448.0
        q = tl.minimum(tl.maximum(y / scale[:, None], -448.0), 448.0)
        if ROUND_IN_CODE:
            a = tl.abs(q)
            # normal range (≥ 2⁻⁶): keep 3 of fp32's 23 mantissa bits, ties to even
            bits = a.to(tl.int32, bitcast=True)
            bits = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) << 20
            normal = bits.to(tl.float32, bitcast=True)
            # subnormal range: multiples of 2⁻⁹, ties to even
            steps = a * 512.0
            floor = tl.floor(steps)
            odd = (floor - 2.0 * tl.floor(floor * 0.5)) == 1.0
            up = (steps - floor > 0.5) | ((steps - floor == 0.5) & odd)
            subnormal = (floor + tl.where(up, 1.0, 0.0)) / 512.0
            a = tl.where(a >= 0.015625, normal, subnormal)
            q = tl.where(q < 0, -a, a)
        return q.to(tl.float8e4nv), scale

    @triton.jit
    def _chunk_stats_kernel(
        x_ptr,
        mean_ptr,
        m2_ptr,
        rows,
        channels,
        chunks,
        chunk_rows,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Per (sample, chunk of rows, channel): mean and centred sum of squares."""
        pid = tl.program_id(0)
        sample = pid // chunks
        start = (pid % chunks) * chunk_rows
        stop = tl.minimum(start + chunk_rows, rows)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < channels
        base = x_ptr + sample.to(tl.int64) * rows * channels
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for first in range(start, stop, BLOCK_R):
            count = (first - start).to(tl.float32)  # rows merged so far
            r = first + tl.arange(0, BLOCK_R)
            ok = (r < stop)[:, None] & col_ok[None, :]
            offsets = r[:, None].to(tl.int64) * channels + cols[None, :]
            tile = tl.load(base + offsets, mask=ok, other=0.0).to(tl.float32)
            n_tile = tl.minimum(stop - first, BLOCK_R).to(tl.float32)
            tile_mean = tl.sum(tile, axis=0) / n_tile
            centred = tl.where(ok, tile - tile_mean[None, :], 0.0)
            tile_m2 = tl.sum(centred * centred, axis=0)
            merged = count + n_tile
            delta = tile_mean - mean
            mean += delta * (n_tile / merged)
            m2 += tile_m2 + delta * delta * (count * n_tile / merged)
        out = pid.to(tl.int64) * channels + cols
        tl.store(mean_ptr + out, mean, mask=col_ok)
        tl.store(m2_ptr + out, m2, mask=col_ok)

    @triton.jit
    def _group_affine_kernel(
        mean_ptr,
        m2_ptr,
        addend_ptr,
        weight_ptr,
        bias_ptr,
        scale_ptr,
        shift_ptr,
        rows,
        channels,
        chunks,
        chunk_rows,
        group_size,
        eps,
        HAS_ADDEND: tl.constexpr,
        HAS_WEIGHT: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_G: tl.constexpr,
    ):
        """Per (sample, group): merge the chunks' statistics; write each channel's
        ``scale``/``shift`` so that ``y = x · scale + shift``."""
        sample = tl.program_id(0)
        lane = tl.arange(0, BLOCK_G)
        cols = tl.program_id(1) * group_size + lane
        col_ok = lane < group_size
        addend = tl.zeros([BLOCK_G], dtype=tl.float32)
        if HAS_ADDEND:
            addend = tl.load(addend_ptr + sample * channels + cols, mask=col_ok, other=0.0)
        stats = (sample * chunks).to(tl.int64) * channels
        total = (rows * group_size).to(tl.float32)
        weighted = tl.zeros([BLOCK_G], dtype=tl.float32)
        for first in range(0, chunks, BLOCK_K):
            k = first + tl.arange(0, BLOCK_K)
            ok = (k < chunks)[:, None] & col_ok[None, :]
            count = tl.minimum(rows - k * chunk_rows, chunk_rows).to(tl.float32)
            mean = tl.load(mean_ptr + stats + k[:, None] * channels + cols[None, :], mask=ok)
            weighted += tl.sum(tl.where(ok, (mean + addend[None, :]) * count[:, None], 0.0), axis=0)
        group_mean = tl.sum(weighted, axis=0) / total
        spread = tl.zeros([BLOCK_G], dtype=tl.float32)
        for first in range(0, chunks, BLOCK_K):
            k = first + tl.arange(0, BLOCK_K)
            ok = (k < chunks)[:, None] & col_ok[None, :]
            count = tl.minimum(rows - k * chunk_rows, chunk_rows).to(tl.float32)
            offsets = stats + k[:, None] * channels + cols[None, :]
            mean = tl.load(mean_ptr + offsets, mask=ok)
            m2 = tl.load(m2_ptr + offsets, mask=ok)
            delta = mean + addend[None, :] - group_mean
            spread += tl.sum(tl.where(ok, m2 + delta * delta * count[:, None], 0.0), axis=0)
        rstd = 1.0 / tl.sqrt(tl.sum(spread, axis=0) / total + eps)
        scale = tl.zeros([BLOCK_G], dtype=tl.float32) + rstd
        if HAS_WEIGHT:
            scale *= tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        shift = (addend - group_mean) * scale
        if HAS_BIAS:
            shift += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        out = sample * channels + cols
        tl.store(scale_ptr + out, scale, mask=col_ok)
        tl.store(shift_ptr + out, shift, mask=col_ok)

    @triton.jit
    def _scale_shift_kernel(
        x_ptr,
        out_ptr,
        scale_ptr,
        shift_ptr,
        total_rows,
        rows,
        channels,
        SILU: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``out = x · scale[sample, c] + shift[sample, c]``, then SiLU if asked."""
        r, cols, _, ok, offsets = _row_tile(
            total_rows, channels, tl.program_id(1), BLOCK_R, BLOCK_C
        )
        per_sample = (r // rows)[:, None] * channels + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        y = x * tl.load(scale_ptr + per_sample, mask=ok, other=0.0) + tl.load(
            shift_ptr + per_sample, mask=ok, other=0.0
        )
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _bias_residual_kernel(
        x_ptr,
        bias_ptr,
        residual_ptr,
        total_rows,
        channels,
        scale,
        HAS_BIAS: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr,
        SILU: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """In place: ``x = (x + bias[c] + residual) · scale``, then SiLU if asked."""
        _, cols, col_ok, ok, offsets = _row_tile(
            total_rows, channels, tl.program_id(1), BLOCK_R, BLOCK_C
        )
        y = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_RESIDUAL:
            y += tl.load(residual_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        y = y * scale
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(x_ptr + offsets, y.to(x_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _add_layer_norm_kernel(
        x_ptr,
        delta_ptr,
        row_addend_ptr,
        weight_ptr,
        bias_ptr,
        sum_ptr,
        out_ptr,
        out_scale_ptr,
        total_rows,
        channels,
        rows_per_sample,
        eps,
        HAS_DELTA: tl.constexpr,
        HAS_ROW_ADDEND: tl.constexpr,
        HAS_WEIGHT: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        FP8_OUT: tl.constexpr,
        ROUND_IN_CODE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``sum = x + delta (+ row_addend[sample])``; ``out = layer_norm(sum)`` over channels.
        Without ``HAS_DELTA``: ``out = layer_norm(x)``, no sum stored (a plain LayerNorm).
        ``FP8_OUT``: ``out`` in e4m3 with one scale per row in ``out_scale`` (the next FP8
        product's input, written here instead of read again by a quantisation pass)."""
        r, cols, col_ok, ok, offsets = _row_tile(total_rows, channels, 0, BLOCK_R, BLOCK_C)
        total = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        if HAS_DELTA:
            total += tl.load(delta_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
            if HAS_ROW_ADDEND:
                per_sample = (r // rows_per_sample)[:, None] * channels + cols[None, :]
                total += tl.load(row_addend_ptr + per_sample, mask=ok, other=0.0).to(tl.float32)
            rounded = total.to(sum_ptr.dtype.element_ty)  # normalise the sum as stored
            tl.store(sum_ptr + offsets, rounded, mask=ok)
            total = rounded.to(tl.float32)
        mean = tl.sum(total, axis=1) / channels
        centred = tl.where(ok, total - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / channels + eps)
        y = centred * rstd[:, None]
        if HAS_WEIGHT:
            y *= tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            y += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if FP8_OUT:
            q, scale = e4m3_rows(y, ok, ROUND_IN_CODE)
            tl.store(out_ptr + offsets, q, mask=ok)
            tl.store(out_scale_ptr + r, scale, mask=r < total_rows)
        else:
            tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _geglu_tile(projected_ptr, r, cols, ok, features):
        """``value · GELU(gate)`` in fp32 for rows ``r``, columns ``cols`` of the halves."""
        row_start = r[:, None].to(tl.int64) * (2 * features)
        value = tl.load(projected_ptr + row_start + cols[None, :], mask=ok, other=0.0)
        gate = tl.load(projected_ptr + row_start + features + cols[None, :], mask=ok, other=0.0)
        gate = gate.to(tl.float32)
        return value.to(tl.float32) * (0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476)))

    @triton.jit
    def _geglu_kernel(
        projected_ptr,
        out_ptr,
        total_rows,
        features,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """``out[r, c] = projected[r, c] · GELU(projected[r, features + c])`` (exact GELU)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        ok = (r < total_rows)[:, None] & (cols < features)[None, :]
        y = _geglu_tile(projected_ptr, r, cols, ok, features)
        out_offsets = r[:, None].to(tl.int64) * features + cols[None, :]
        tl.store(out_ptr + out_offsets, y.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _geglu_fp8_kernel(
        projected_ptr,
        out_ptr,
        out_scale_ptr,
        total_rows,
        features,
        ROUND_IN_CODE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """:func:`_geglu_kernel` written in e4m3 with one scale per row: whole rows per program
        (``BLOCK_C`` ≥ ``features``), so each half is read once and the row's largest magnitude
        is known before it is written."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        ok = (r < total_rows)[:, None] & (cols < features)[None, :]
        y = _geglu_tile(projected_ptr, r, cols, ok, features)
        q, scale = e4m3_rows(y, ok, ROUND_IN_CODE)
        tl.store(out_ptr + r[:, None].to(tl.int64) * features + cols[None, :], q, mask=ok)
        tl.store(out_scale_ptr + r, scale, mask=r < total_rows)

    @triton.jit
    def _frame_attention_kernel(
        qkv_ptr,
        bias_ptr,
        out_ptr,
        positions,
        frames,
        channels,
        heads,
        head_dim,
        scale,
        BLOCK_F: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """One (stream, position) and a group of BLOCK_H heads: softmax(q kᵀ · scale) v over the
        frames, where row ``(s·frames + f)·positions + p`` of ``qkv`` holds ``[q | k | v]`` of
        frame f and ``bias[f]`` is added to it (the position table through the projections).
        The heads of a group are adjacent columns, so each frame's load is one contiguous run."""
        stream_position = tl.program_id(0)
        stream = stream_position // positions
        position = stream_position % positions
        f = tl.arange(0, BLOCK_F)[:, None, None]
        h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
        d = tl.arange(0, BLOCK_D)[None, None, :]
        ok = (f < frames) & (h < heads) & (d < head_dim)  # (F, H, D)
        rows = (stream * frames + f).to(tl.int64) * positions + position
        cols = h * head_dim + d
        at = rows * (3 * channels) + cols
        bias_at = f * (3 * channels) + cols
        dtype = qkv_ptr.dtype.element_ty
        q = tl.load(qkv_ptr + at, mask=ok, other=0.0).to(tl.float32)
        q += tl.load(bias_ptr + bias_at, mask=ok, other=0.0)
        k = tl.load(qkv_ptr + at + channels, mask=ok, other=0.0).to(tl.float32)
        k += tl.load(bias_ptr + bias_at + channels, mask=ok, other=0.0)
        v = tl.load(qkv_ptr + at + 2 * channels, mask=ok, other=0.0).to(tl.float32)
        v += tl.load(bias_ptr + bias_at + 2 * channels, mask=ok, other=0.0)
        # per head (batched over the group): products in the activations' precision with fp32
        # sums, as flash attention does
        q = tl.permute(q.to(dtype), (1, 0, 2))  # (H, F, D)
        k = tl.permute(k.to(dtype), (1, 2, 0))  # (H, D, F)
        v = tl.permute(v.to(dtype), (1, 0, 2))  # (H, F, D)
        scores = tl.dot(q, k) * scale  # (H, F, F)
        key_ok = tl.arange(0, BLOCK_F)[None, None, :] < frames
        scores = tl.where(key_ok, scores, float("-inf"))
        weights = tl.exp(scores - tl.max(scores, axis=2)[:, :, None])
        total = tl.sum(weights, axis=2)
        out = tl.dot(weights.to(dtype), v) / total[:, :, None]  # (H, F, D)
        out = tl.permute(out, (1, 0, 2))  # (F, H, D)
        tl.store(out_ptr + rows * channels + cols, out.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _upsample_2x_kernel(
        x_ptr,
        out_ptr,
        total_rows,
        height,
        width,
        channels,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Each input pixel (row of the NHWC matrix) written to its 2×2 output pixels."""
        r, cols, _, ok, offsets = _row_tile(
            total_rows, channels, tl.program_id(1), BLOCK_R, BLOCK_C
        )
        tile = tl.load(x_ptr + offsets, mask=ok)
        x = r % width
        y = (r // width) % height
        n = r // (width * height)
        top = ((n * 2 * height + 2 * y) * 2 * width + 2 * x).to(tl.int64)
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                pixel = top + dy * 2 * width + dx
                tl.store(out_ptr + pixel[:, None] * channels + cols[None, :], tile, mask=ok)

    @triton.jit
    def _interleave_phases_kernel(
        z_ptr,
        bias_ptr,
        out_ptr,
        total_rows,
        height,
        width,
        channels,
        HAS_BIAS: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Each small-input pixel ``(n, i, j)``: its four phase outputs ``z[n, i+a, j+b, phase]``
        (``z`` is ``(N, H+1, W+1, 4·C)``) written to ``out[n, 2i+a, 2j+b]``, plus the bias."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < channels
        ok = (r < total_rows)[:, None] & col_ok[None, :]
        j = r % width
        i = (r // width) % height
        n = r // (width * height)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        for a in tl.static_range(2):
            for b in tl.static_range(2):
                source = ((n * (height + 1) + i + a) * (width + 1) + j + b).to(tl.int64)
                offsets = source[:, None] * (4 * channels) + (2 * a + b) * channels + cols[None, :]
                value = tl.load(z_ptr + offsets, mask=ok, other=0.0)
                if HAS_BIAS:
                    value = (value.to(tl.float32) + bias[None, :]).to(out_ptr.dtype.element_ty)
                target = ((n * 2 * height + 2 * i + a) * 2 * width + 2 * j + b).to(tl.int64)
                tl.store(out_ptr + target[:, None] * channels + cols[None, :], value, mask=ok)

    @triton.jit
    def _merge_attention_kernel(
        own_ptr,
        own_lse_ptr,
        bank_ptr,
        bank_lse_ptr,
        out_ptr,
        total_rows,
        tokens,
        frames,
        head_dim,
        channels,
        o_b,
        o_h,
        o_n,
        ol_b,
        ol_h,
        ol_n,
        b_s,
        b_h,
        b_n,
        bl_s,
        bl_h,
        bl_n,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """Row ``(b, n)`` (frame b = s·frames + f, token n), column ``h·head_dim + j``:
        ``w·own + (1 − w)·bank`` with ``w = sigmoid(lse_own − lse_bank)``; the bank results of a
        stream hold all its frames' queries in one sequence (position ``f·tokens + n``)."""
        r, cols, col_ok, ok, offsets = _row_tile(
            total_rows, channels, tl.program_id(1), BLOCK_R, BLOCK_C
        )
        b = (r // tokens).to(tl.int64)[:, None]
        n = (r % tokens).to(tl.int64)[:, None]
        stream = b // frames
        position = (b % frames) * tokens + n
        h = (cols // head_dim).to(tl.int64)[None, :]
        j = (cols % head_dim).to(tl.int64)[None, :]
        own = tl.load(own_ptr + b * o_b + h * o_h + n * o_n + j, mask=ok, other=0.0)
        bank = tl.load(bank_ptr + stream * b_s + h * b_h + position * b_n + j, mask=ok, other=0.0)
        own_lse = tl.load(own_lse_ptr + b * ol_b + h * ol_h + n * ol_n, mask=ok, other=0.0)
        bank_lse = tl.load(
            bank_lse_ptr + stream * bl_s + h * bl_h + position * bl_n, mask=ok, other=0.0
        )
        weight = tl.sigmoid(own_lse.to(tl.float32) - bank_lse.to(tl.float32))
        bank = bank.to(tl.float32)
        y = bank + (own.to(tl.float32) - bank) * weight
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=ok)


def _check_nhwc(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 4 or not tensor.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(
            f"{name} must be a 4-D channels-last tensor, got strides {tensor.stride()}"
        )


def group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    addend: torch.Tensor | None = None,
    silu: bool = False,
) -> torch.Tensor:
    """``silu?(group_norm(x + addend[:, :, None, None]))`` for ``x`` ``(N, C, H, W)`` in
    channels-last memory; ``addend`` is ``(N, C)`` (any float dtype). Returns channels-last, in
    ``x``'s dtype; arithmetic in fp32."""
    _check_nhwc("x", x)
    samples, channels, height, width = x.shape
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    rows = height * width
    block_c = _channel_block(channels)
    column_blocks = triton.cdiv(channels, block_c)
    chunks = max(1, min(triton.cdiv(rows, _ROWS), _TARGET_PROGRAMS // (samples * column_blocks)))
    chunk_rows = triton.cdiv(triton.cdiv(rows, chunks), _ROWS) * _ROWS
    chunks = triton.cdiv(rows, chunk_rows)

    stats = torch.empty(2, samples * chunks, channels, device=x.device, dtype=torch.float32)
    _chunk_stats_kernel[(samples * chunks, column_blocks)](
        x, stats[0], stats[1], rows, channels, chunks, chunk_rows, BLOCK_R=_ROWS, BLOCK_C=block_c
    )
    affine = torch.empty(2, samples, channels, device=x.device, dtype=torch.float32)
    if addend is not None:
        addend = addend.to(torch.float32).expand(samples, channels).contiguous()
    group_size = channels // groups
    _group_affine_kernel[(samples, groups)](
        stats[0],
        stats[1],
        addend if addend is not None else affine,
        weight if weight is not None else affine,
        bias if bias is not None else affine,
        affine[0],
        affine[1],
        rows,
        channels,
        chunks,
        chunk_rows,
        group_size,
        eps,
        HAS_ADDEND=addend is not None,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        BLOCK_K=min(64, triton.next_power_of_2(chunks)),
        BLOCK_G=triton.next_power_of_2(group_size),
    )
    out = torch.empty_like(x, memory_format=torch.channels_last)
    _scale_shift_kernel[(triton.cdiv(samples * rows, _ROWS), column_blocks)](
        x,
        out,
        affine[0],
        affine[1],
        samples * rows,
        rows,
        channels,
        SILU=silu,
        BLOCK_R=_ROWS,
        BLOCK_C=block_c,
    )
    return out


def add_bias_residual(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    scale: float = 1.0,
    *,
    silu: bool = False,
) -> torch.Tensor:
    """In place: ``x = silu?((x + bias[None, :, None, None] + residual) * scale)``; ``x`` and
    ``residual`` ``(N, C, H, W)`` channels-last. Returns ``x``."""
    _check_nhwc("x", x)
    if residual is not None:
        _check_nhwc("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"residual {tuple(residual.shape)} does not match {tuple(x.shape)}")
    total_rows = x.shape[0] * x.shape[2] * x.shape[3]
    channels = x.shape[1]
    block_c = _channel_block(channels)
    _bias_residual_kernel[(triton.cdiv(total_rows, _ROWS), triton.cdiv(channels, block_c))](
        x,
        bias if bias is not None else x,
        residual if residual is not None else x,
        total_rows,
        channels,
        float(scale),
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        SILU=silu,
        BLOCK_R=_ROWS,
        BLOCK_C=block_c,
    )
    return x


def add_layer_norm(
    x: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    row_addend: torch.Tensor | None = None,
    fp8: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """``total = x + delta (+ row_addend[:, None, :])`` and ``layer_norm(total)`` over the last
    dimension, in one pass: a transformer's residual add and the next norm. ``x``/``delta``
    contiguous ``(B, L, C)``; ``row_addend`` ``(B, C)``. Returns ``(total, normed)``; with
    ``fp8``, ``normed`` is ``(values, scale)``: a ``(B·L, C)`` e4m3 matrix and one float32
    scale per row ``(B·L, 1)`` (``normed ≈ values · scale``)."""
    if not (
        x.dim() == 3 and x.shape == delta.shape and x.is_contiguous() and delta.is_contiguous()
    ):
        raise ValueError(
            f"x {tuple(x.shape)} and delta {tuple(delta.shape)} must be contiguous (B, L, C) alike"
        )
    samples, rows_per_sample, channels = x.shape
    if row_addend is not None:  # one vector per sample (or one for all), as broadcasting would
        row_addend = row_addend.reshape(-1, channels).expand(samples, channels).contiguous()
    total = torch.empty_like(x)
    normed = _layer_norm_rows(
        x, delta, row_addend, weight, bias, eps, total, rows_per_sample, fp8=fp8
    )
    return total, normed


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension of contiguous ``x``, several rows per program
    (PyTorch's kernel gives each row of 320 channels a block of its own: a tenth of copy speed)."""
    if not x.is_contiguous():
        raise ValueError(f"x {tuple(x.shape)} must be contiguous")
    return _layer_norm_rows(x, None, None, weight, bias, eps, None, 1)


def _fp8_rows(rows: int, features: int, device: torch.device):
    """Room for an e4m3 ``(rows, features)`` matrix and its float32 row scales ``(rows, 1)``."""
    values = torch.empty((rows, features), dtype=torch.float8_e4m3fn, device=device)
    return values, torch.empty((rows, 1), dtype=torch.float32, device=device)


def _whole_rows(features: int) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_C, num_warps)`` for kernels whose programs hold whole rows of
    ``features``: up to 64 rows, ~4k elements a program, 8 warps past 1,024 columns."""
    block_c = triton.next_power_of_2(features)
    return max(1, min(64, 4096 // block_c)), block_c, 4 if block_c <= 1024 else 8


def _layer_norm_rows(x, delta, row_addend, weight, bias, eps, total, rows_per_sample, fp8=False):
    channels = x.shape[-1]
    total_rows = x.numel() // channels
    block_r, block_c, num_warps = _whole_rows(channels)
    normed = _fp8_rows(total_rows, channels, x.device) if fp8 else torch.empty_like(x)
    out, out_scale = normed if fp8 else (normed, x)
    _add_layer_norm_kernel[(triton.cdiv(total_rows, block_r),)](
        x,
        delta if delta is not None else x,
        row_addend if row_addend is not None else x,
        weight if weight is not None else x,
        bias if bias is not None else x,
        total if total is not None else x,
        out,
        out_scale,
        total_rows,
        channels,
        rows_per_sample,
        eps,
        HAS_DELTA=delta is not None,
        HAS_ROW_ADDEND=row_addend is not None,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        FP8_OUT=fp8,
        ROUND_IN_CODE=not x.is_cuda,  # the interpreter's e4m3 conversion mis-rounds
        BLOCK_R=block_r,
        BLOCK_C=block_c,
        num_warps=num_warps,
    )
    return normed


def geglu(
    projected: torch.Tensor, *, fp8: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``value · GELU(gate)`` for ``projected = cat([value, gate], -1)`` contiguous ``(..., 2F)``
    (diffusers' ``GEGLU`` after its projection); returns ``(..., F)``. With ``fp8``: ``(values,
    scale)``, an e4m3 ``(rows, F)`` matrix and one float32 scale per row ``(rows, 1)``."""
    if not projected.is_contiguous() or projected.shape[-1] % 2:
        raise ValueError(
            f"projected must be contiguous with an even last dimension, got {tuple(projected.shape)}"
        )
    features = projected.shape[-1] // 2
    total_rows = projected.numel() // projected.shape[-1]
    if fp8:
        values, scale = _fp8_rows(total_rows, features, projected.device)
        block_r, block_c, num_warps = _whole_rows(features)  # 5120 features: 8192 wide, 1 row
        _geglu_fp8_kernel[(triton.cdiv(total_rows, block_r),)](
            projected,
            values,
            scale,
            total_rows,
            features,
            ROUND_IN_CODE=not projected.is_cuda,  # the interpreter's e4m3 conversion mis-rounds
            BLOCK_R=block_r,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
        return values, scale
    out = projected.new_empty((*projected.shape[:-1], features))
    block_c = min(128, triton.next_power_of_2(features))
    _geglu_kernel[(triton.cdiv(total_rows, _ROWS // 2), triton.cdiv(features, block_c))](
        projected, out, total_rows, features, BLOCK_R=_ROWS // 2, BLOCK_C=block_c
    )
    return out


def frame_attention(
    qkv: torch.Tensor, frame_bias: torch.Tensor, frames: int, heads: int, scale: float
) -> torch.Tensor:
    """Self-attention along the frame axis at every position, for frame-major tokens.

    Args:
        qkv: ``(S·F, P, 3C)`` contiguous: per token its projected ``[q | k | v]``, tokens of
            frame ``f`` of stream ``s`` at position ``p`` in row ``(s·F + f, p)``.
        frame_bias: ``(F, 3C)`` float32 added to each frame's ``[q | k | v]`` (the temporal
            position table times the projection weights, plus their biases).
        frames: F, the sequence each position attends over.
        heads: attention heads (``C`` split evenly).
        scale: the softmax scale (``head_dim ** -0.5``).

    Returns:
        ``(S·F, P, C)`` attention output per head, heads concatenated, in the same row order.
    """
    batch, positions, width = qkv.shape
    if not qkv.is_contiguous() or width % (3 * heads) or batch % frames:
        raise ValueError(
            f"qkv {tuple(qkv.shape)} must be contiguous (S·F, P, 3C) with F={frames} and C "
            f"divisible by {heads} heads"
        )
    channels = width // 3
    if frame_bias.shape != (frames, width) or frame_bias.dtype != torch.float32:
        raise ValueError(f"frame_bias must be float32 ({frames}, {width}), got {frame_bias.shape}")
    head_dim = channels // heads
    out = qkv.new_empty((batch, positions, channels))
    block_d = max(16, triton.next_power_of_2(head_dim))
    # heads per program: ~8k elements per (F, H, D) tile keeps the registers within bounds
    block_h = min(triton.next_power_of_2(heads), max(1, 8192 // (16 * block_d)))
    _frame_attention_kernel[((batch // frames) * positions, triton.cdiv(heads, block_h))](
        qkv,
        frame_bias.contiguous(),
        out,
        positions,
        frames,
        channels,
        heads,
        head_dim,
        float(scale),
        BLOCK_F=max(16, triton.next_power_of_2(frames)),
        BLOCK_H=block_h,
        BLOCK_D=block_d,
        num_warps=8,
    )
    return out


def _doubled(like: torch.Tensor, samples: int, channels: int, height: int, width: int):
    """An empty channels-last ``(N, C, 2H, 2W)`` output like ``like``: allocated in that layout,
    not allocated NCHW and converted (which copied the whole 4× output)."""
    return torch.empty(
        (samples, channels, 2 * height, 2 * width),
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last,
    )


def upsample_nearest_2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")`` for ``x`` ``(N, C, H, W)`` in
    channels-last memory; returns channels-last."""
    _check_nhwc("x", x)
    samples, channels, height, width = x.shape
    out = _doubled(x, samples, channels, height, width)
    total_rows = samples * height * width
    block_c = _channel_block(channels)
    _upsample_2x_kernel[(triton.cdiv(total_rows, _ROWS), triton.cdiv(channels, block_c))](
        x, out, total_rows, height, width, channels, BLOCK_R=_ROWS, BLOCK_C=block_c
    )
    return out


def interleave_phases(phases: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The output of "nearest 2× upsampling, then a 3×3 convolution" from its four phases.

    ``phases`` ``(N, 4·C, H+1, W+1)`` channels-last: the 2×2 convolution of the small input with
    the phase weights (``_fast_layers.phase_weights``, padding 1); phase ``2a + b`` at
    ``(i + a, j + b)`` is the output pixel ``(2i + a, 2j + b)``. Returns ``(N, C, 2H, 2W)``
    channels-last with ``bias`` ``(C,)`` added (one read and one write of the output)."""
    _check_nhwc("phases", phases)
    samples, stacked, rows, columns = phases.shape
    if stacked % 4:
        raise ValueError(f"phases must stack 4 phases of C channels, got {stacked} channels")
    channels, height, width = stacked // 4, rows - 1, columns - 1
    out = _doubled(phases, samples, channels, height, width)
    total_rows = samples * height * width
    block_c = _channel_block(channels)
    _interleave_phases_kernel[(triton.cdiv(total_rows, _ROWS), triton.cdiv(channels, block_c))](
        phases,
        bias if bias is not None else phases,
        out,
        total_rows,
        height,
        width,
        channels,
        HAS_BIAS=bias is not None,
        BLOCK_R=_ROWS,
        BLOCK_C=block_c,
    )
    return out


def merge_attention(
    own: torch.Tensor, own_lse: torch.Tensor, bank: torch.Tensor, bank_lse: torch.Tensor
) -> torch.Tensor:
    """Softmax attention over the union of two key sets from its two halves.

    Args:
        own: ``(S·F, h, N, d)`` attention of each frame's queries to its own keys (any strides,
            last dimension contiguous); ``own_lse`` ``(S·F, h, N)`` their log-sum-exps.
        bank: ``(S, h, F·N, d)`` attention of all F frames' queries of a stream (frame-major)
            to the stream's bank; ``bank_lse`` ``(S, h, F·N)``.

    Returns:
        ``(S·F, N, h·d)`` contiguous, heads concatenated (what the output projection reads).
    """
    batch, heads, tokens, head_dim = own.shape
    streams = bank.shape[0]
    if (
        batch % streams
        or bank.shape != (streams, heads, (batch // streams) * tokens, head_dim)
        or own_lse.shape != own.shape[:3]
        or bank_lse.shape != bank.shape[:3]
        or own.stride(-1) != 1
        or bank.stride(-1) != 1
    ):
        raise ValueError(
            f"own {tuple(own.shape)} / bank {tuple(bank.shape)} (and their log-sum-exps "
            f"{tuple(own_lse.shape)} / {tuple(bank_lse.shape)}) do not pair up"
        )
    channels = heads * head_dim
    total_rows = batch * tokens
    out = own.new_empty((batch, tokens, channels))
    block_c = _channel_block(channels)
    _merge_attention_kernel[(triton.cdiv(total_rows, _ROWS), triton.cdiv(channels, block_c))](
        own,
        own_lse,
        bank,
        bank_lse,
        out,
        total_rows,
        tokens,
        batch // streams,
        head_dim,
        channels,
        *own.stride()[:3],
        *own_lse.stride(),
        *bank.stride()[:3],
        *bank_lse.stride(),
        BLOCK_R=_ROWS,
        BLOCK_C=block_c,
    )
    return out
