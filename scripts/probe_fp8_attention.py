"""Probe (GPU, Hopper or newer): FP8 attention at the UNet's head sizes through cuDNN's FP8 scaled
dot-product attention (``nvidia-cudnn-frontend``), next to the model's fp16 cuDNN path with the
log-sum-exp the bank merge needs. Issue 16, lever 2 ("FP8 attention where it holds fidelity").

cuDNN's FP8 attention takes head dims that are multiples of 16 (at most 128) and, on Hopper,
writes its output in e4m3: the 64² level's head dim 40 is padded to 48 (and, to compare, 64) in
the quantised copies, which a producer kernel would write directly; the padded key columns are
zero, so the scores are unchanged. Per shape: ms per launch of each path (medians of CUDA-event
timed launches), the quantising and dequantising passes apart, and each path's error against
float32 attention (output and log-sum-exp) on the first sequence's first two heads.

    python -m scripts.probe_fp8_attention [--streams 4] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch

from pipeline.bench import median_cuda_ms
from pipeline.models._fast_layers import attention_with_lse
from scripts.probe_attention import FRAMES, HEADS, difference, token_major

E4M3_MAX = 448.0  # the largest finite float8_e4m3fn value
REFERENCE_QUERIES = 1024  # queries of the float32 reference (the bank's full width is too large)


def fp8_head_dim(dim: int, multiple: int = 16) -> int:
    """The head dim cuDNN's FP8 attention takes for ``dim``: the next multiple of 16."""
    return -(-dim // multiple) * multiple


def quantize_padded(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``(..., d)`` as e4m3 ``(..., dim)`` under one scale for the tensor (its largest
    value maps to 448), zero in the padding; and the descale (``1 / scale``, ``(1, 1, 1, 1)``
    float32) that undoes it."""
    amax = x.detach().abs().amax().float().clamp_min(torch.finfo(torch.float32).tiny)
    scale = E4M3_MAX / amax
    out = torch.zeros(*x.shape[:-1], dim, dtype=torch.float8_e4m3fn, device=x.device)
    out[..., : x.shape[-1]] = (x.float() * scale).to(torch.float8_e4m3fn)
    return out, (1.0 / scale).reshape(1, 1, 1, 1)


def dequantize(x8: torch.Tensor, descale: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` columns of e4m3 ``x8`` back in fp16."""
    return (x8[..., :dim].float() * descale.reshape(())).half()


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 softmax attention of ``(B, h, N, d)`` tensors and its log-sum-exp ``(B, h, N)``."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    return torch.softmax(scores, dim=-1) @ v.float(), lse


class CudnnFp8Attention:
    """cuDNN's FP8 attention for one shape: token-major e4m3 ``(B, N, h, dim)`` queries, keys
    and values (seen as ``(B, h, N, dim)``), per-tensor descales; returns the e4m3 output in the
    same layout under ``scale_o``, and the float32 log-sum-exp ``(B, h, Nq)`` (natural log)."""

    def __init__(self, batch: int, q_len: int, k_len: int, dim: int, scale: float) -> None:
        import cudnn  # nvidia-cudnn-frontend: only this probe needs it

        self.handle = cudnn.create_handle()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        e4m3, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(
            io_data_type=e4m3,
            intermediate_data_type=f32,
            compute_data_type=f32,
            handle=self.handle,
        )

        def layout(length: int) -> dict:
            return {
                "dim": [batch, HEADS, length, dim],
                "stride": [length * HEADS * dim, dim, HEADS * dim, 1],
            }

        self.q = graph.tensor(name="q", data_type=e4m3, **layout(q_len))
        self.k = graph.tensor(name="k", data_type=e4m3, **layout(k_len))
        self.v = graph.tensor(name="v", data_type=e4m3, **layout(k_len))
        one = {"dim": [1, 1, 1, 1], "stride": [1, 1, 1, 1], "data_type": f32}
        names = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
        self.scalars = [graph.tensor(name=name, **one) for name in names]
        self.o, self.stats, amax_s, amax_o = graph.sdpa_fp8(
            q=self.q,
            k=self.k,
            v=self.v,
            descale_q=self.scalars[0],
            descale_k=self.scalars[1],
            descale_v=self.scalars[2],
            descale_s=self.scalars[3],
            scale_s=self.scalars[4],
            scale_o=self.scalars[5],
            generate_stats=True,
            attn_scale=scale,
            use_causal_mask=False,
            name="fp8_attention",
        )
        self.o.set_output(True).set_data_type(e4m3).set_dim(layout(q_len)["dim"])
        self.o.set_stride(layout(q_len)["stride"])
        self.stats.set_output(True).set_data_type(f32).set_dim([batch, HEADS, q_len, 1])
        self.stats.set_stride([HEADS * q_len, q_len, 1, 1])
        self.amax = (amax_s, amax_o)
        for amax in self.amax:
            amax.set_output(True).set_data_type(f32).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1])
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        self.graph = graph
        self.workspace = torch.empty(graph.get_workspace_size(), device="cuda", dtype=torch.uint8)
        self.shape = (batch, q_len, HEADS, dim)
        self.stats_shape = (batch, HEADS, q_len, 1)
        # the probabilities (0..1) use e4m3's whole range, and come back by its inverse; these
        # and the amax outputs (unread) are made once, not in every timed launch
        s_scale = torch.full((1, 1, 1, 1), E4M3_MAX, device="cuda")
        self.softmax_scales = (1.0 / s_scale, s_scale)
        self.amax_out = {amax: torch.empty(1, 1, 1, 1, device="cuda") for amax in self.amax}

    def __call__(
        self,
        q8: torch.Tensor,
        k8: torch.Tensor,
        v8: torch.Tensor,
        descales: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        scale_o: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty(self.shape, dtype=torch.float8_e4m3fn, device="cuda")
        lse = torch.empty(self.stats_shape, dtype=torch.float32, device="cuda")
        values = [*descales, *self.softmax_scales, scale_o]
        pack = {self.q: q8, self.k: k8, self.v: v8, self.o: out, self.stats: lse}
        pack |= dict(zip(self.scalars, values, strict=True)) | self.amax_out
        self.graph.execute(pack, self.workspace, handle=self.handle)
        return out, lse.reshape(lse.shape[:3])


def shapes(streams: int) -> list[dict]:
    """The 64² (head dim 40) and 32² (80) levels' attention in one batched call of ``streams``
    streams: a frame's own keys, and a stream's 16 frames of queries against its bank of the
    portrait alone or with three history keyframes."""
    rows = []
    for tokens, dim in ((4096, 40), (1024, 80)):
        rows.append(
            {"what": "own keys", "dim": dim, "batch": streams * FRAMES, "q": tokens, "k": tokens}
        )
        for images, name in ((1, "bank, portrait"), (4, "bank, portrait + 3 keyframes")):
            rows.append(
                {
                    "what": name,
                    "dim": dim,
                    "batch": streams,
                    "q": FRAMES * tokens,
                    "k": images * tokens,
                }
            )
    return rows


def probe_fp8(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padded: int,
    scale: float,
    reference: tuple[torch.Tensor, torch.Tensor],
) -> dict:
    """cuDNN's FP8 attention of token-major fp16 ``q``, ``k``, ``v`` with the head dim padded to
    ``padded``: ms per launch, the quantising and dequantising passes, errors against
    ``reference`` (float32 output and log-sum-exp of the first sequence's first two heads)."""
    batch, q_len, _, dim = q.shape
    attention = CudnnFp8Attention(batch, q_len, k.shape[1], padded, scale)
    (q8, dq), (k8, dk), (v8, dv) = (quantize_padded(x, padded) for x in (q, k, v))
    scale_o = 1.0 / dv  # |output| <= max |value|: the values' scale keeps it in range
    run = partial(attention, q8, k8, v8, (dq, dk, dv), scale_o)
    out8, lse8 = run()
    got = dequantize(out8, dv, dim).transpose(1, 2)[:1, :2, :REFERENCE_QUERIES]
    want, want_lse = reference
    return {
        "head_dim": padded,
        "ms": round(median_cuda_ms(run, 15, warmup=2), 4),
        "quantize_qkv_ms": round(
            median_cuda_ms(lambda: [quantize_padded(x, padded) for x in (q, k, v)], 10, warmup=1), 4
        ),
        "dequantize_out_ms": round(
            median_cuda_ms(partial(dequantize, out8, dv, dim), 10, warmup=1), 4
        ),
        "error": difference(got, want),
        "lse_error": (lse8[:1, :2, :REFERENCE_QUERIES] - want_lse).abs().max().item(),
    }


def probe_shape(row: dict) -> dict:
    batch, q_len, k_len, dim = row["batch"], row["q"], row["k"], row["dim"]
    scale = dim**-0.5

    bhsd = [
        token_major(batch, n, dim) for n in (q_len, k_len, k_len)
    ]  # as the model's kernels get them
    q, k, v = (x.transpose(1, 2) for x in bhsd)  # (B, N, h, d): what the projections wrote
    # float32 attention of the first sequence's first two heads (its first queries)
    want, want_lse = reference_attention(
        bhsd[0][:1, :2, :REFERENCE_QUERIES], bhsd[1][:1, :2], bhsd[2][:1, :2], scale
    )

    def fp16() -> tuple[torch.Tensor, torch.Tensor]:
        return attention_with_lse(*bhsd, scale, "cudnn")

    out16, lse16 = fp16()
    row["fp16_cudnn_ms"] = round(median_cuda_ms(fp16, 15, warmup=2), 4)
    row["fp16_error"] = difference(out16[:1, :2, :REFERENCE_QUERIES], want)
    row["fp16_lse_error"] = (lse16[:1, :2, :REFERENCE_QUERIES] - want_lse).abs().max().item()
    row["fp8"] = []
    for padded in sorted({fp8_head_dim(dim), max(64, fp8_head_dim(dim))}):
        try:
            entry = probe_fp8(q, k, v, padded, scale, (want, want_lse))
            entry["speedup_kernel"] = round(row["fp16_cudnn_ms"] / entry["ms"], 3)
        except Exception as err:  # noqa: BLE001 - a shape or a cuDNN this frontend cannot take
            entry = {"head_dim": padded, "failed": f"{type(err).__name__}: {str(err)[:400]}"}
        row["fp8"].append(entry)
        torch.cuda.empty_cache()
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    import cudnn

    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn_backend": getattr(cudnn, "backend_version", lambda: "?")(),
        "cudnn_frontend": getattr(cudnn, "__version__", "?"),
        "streams": args.streams,
        "rows": [probe_shape(row) for row in shapes(args.streams)],
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
