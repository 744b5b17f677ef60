"""Probe (GPU): the denoising UNet's attention at its real shapes and head sizes (40 / 80 / 160),
each of PyTorch's fused kernels timed on the layouts the model hands them (queries a transposed
view of the token-major projection), and the bank attention with per-stream bank lengths through
the variable-length flash kernel (``seqused_k``), checked against attention over the unpadded bank.
With ``--triton``, only the 64² level (head dim 40), through ``scripts/flash_head40.py`` in each of
its configurations: each key set next to cuDNN with the log-sum-exp the bank merge needs, then
the whole bank attention (own keys + bank in one pass) next to the model's split-and-merge path. Medians of
CUDA-event timed launches.

    python -m scripts.probe_attention [--streams 4] [--triton] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.bench import median_cuda_ms
from pipeline.models._fast_layers import attention_with_lse

HEADS, FRAMES = 8, 16
LEVELS = [(4096, 40), (1024, 80), (256, 160), (64, 160)]  # (tokens per frame, head dim)
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def token_major(batch: int, tokens: int, head_dim: int) -> torch.Tensor:
    """``(batch, heads, tokens, d)`` as the model's projections give it: a view of ``(batch,
    tokens, heads·d)``."""
    x = torch.randn(batch, tokens, HEADS * head_dim, device="cuda", dtype=torch.float16)
    return x.view(batch, tokens, HEADS, head_dim).transpose(1, 2)


def time_backends(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, float | None]:
    times: dict[str, float | None] = {}
    for name, backend in BACKENDS.items():

        def run(backend: SDPBackend = backend) -> torch.Tensor:
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)

        try:
            times[name] = round(median_cuda_ms(run, 15, warmup=2), 4)
        except RuntimeError as err:  # a backend that cannot take this shape
            times[name] = None
            print(f"  {name}: {str(err).splitlines()[0][:100]}")
    return times


def varlen_bank(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """``q`` ``(S, T, h, d)``, ``k``/``v`` ``(S, cap, h, d)`` padded, ``lengths`` ``(S,)`` int32:
    stream ``s`` attends to its first ``lengths[s]`` keys."""
    streams, tokens, heads, dim = q.shape
    cap = k.shape[1]
    cu_q = torch.arange(0, (streams + 1) * tokens, tokens, device=q.device, dtype=torch.int32)
    cu_k = torch.arange(0, (streams + 1) * cap, cap, device=q.device, dtype=torch.int32)
    out = torch.ops.aten._flash_attention_forward(
        q.reshape(-1, heads, dim),
        k.reshape(-1, heads, dim),
        v.reshape(-1, heads, dim),
        cu_q,
        cu_k,
        tokens,
        cap,
        0.0,
        False,
        False,
        scale=scale,
        seqused_k=lengths,
    )
    return out[0].view(streams, tokens, heads, dim), out[1]


def cudnn_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The model's own-key attention: cuDNN, with the log-sum-exp the bank merge needs."""
    return attention_with_lse(q, k, v, q.shape[-1] ** -0.5, "cudnn")[0]


def time_configs(row: dict, run: Callable[..., torch.Tensor], error: Callable, key: str) -> None:
    """``row["triton"]``: each configuration of the Triton kernel ``run`` (its keyword
    arguments), its median ms and ``error`` of its result under ``key`` (or why it failed);
    prints the row with its best configuration."""
    from scripts.flash_head40 import CONFIGS

    row["triton"] = []
    for config in CONFIGS:
        call = partial(run, **config)
        try:
            got = error(call())
            ms = median_cuda_ms(call, 15, warmup=2)
            row["triton"].append({**config, "ms": round(ms, 4), key: got})
        except Exception as err:  # noqa: BLE001 - a configuration that does not compile here
            row["triton"].append({**config, "failed": str(err).splitlines()[0][:200]})
    best = min((c for c in row["triton"] if "ms" in c), key=lambda c: c["ms"], default=None)
    print(json.dumps({k: v for k, v in row.items() if k != "triton"} | {"best": best}))


def difference(out: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference from ``want``, over its largest value."""
    return ((out.float() - want).abs().max() / want.abs().max()).item()


def relative_error(out: torch.Tensor, want: torch.Tensor) -> float:
    """:func:`difference` of the first two heads of the first sequence (``want``'s shape)."""
    return difference(out[:1, :2], want)


def flash_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **config) -> torch.Tensor:
    """The Triton kernel's attention (its log-sum-exp left out)."""
    from scripts.flash_head40 import flash_attention

    return flash_attention(q, k, v, **config)[0]


def triton_table(streams: int) -> list[dict]:
    """The 64² level's own-key, portrait-bank and full-bank attention: cuDNN (with log-sum-exp)
    against each configuration of the Triton kernel; its error against fp32 attention of the
    first two heads of one sequence, next to cuDNN's."""
    tokens, dim = 4096, 40
    shapes = {
        "own": (streams * FRAMES, tokens, tokens),
        "bank_portrait": (streams, FRAMES * tokens, tokens),
        "bank_full": (streams, FRAMES * tokens, 4 * tokens),
    }
    rows = []
    for what, (batch, n_q, n_k) in shapes.items():
        q = token_major(batch, n_q, dim)
        k, v = (token_major(batch, n_k, dim) for _ in range(2))
        want = F.scaled_dot_product_attention(
            q[:1, :2].float(), k[:1, :2].float(), v[:1, :2].float()
        )

        row = {"what": what, "batch": batch, "queries": n_q, "keys": n_k}
        row["cudnn_ms"] = round(median_cuda_ms(partial(cudnn_with_lse, q, k, v), 15, warmup=2), 4)
        row["cudnn_error"] = relative_error(cudnn_with_lse(q, k, v), want)
        time_configs(
            row,
            partial(flash_output, q, k, v),
            partial(relative_error, want=want),
            "error",
        )
        rows.append(row)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def fused_table(streams: int) -> list[dict]:
    """The whole bank attention of a 64² layer as the model runs it (cuDNN over own keys, cuDNN
    over each run of equal bank lengths, the log-sum-exp merge: ``_fast_layers.bank_attention``)
    against the Triton kernel that does all of it in one pass, for banks of the portrait alone,
    of the portrait and 3 keyframes, and of mixed lengths (1–4 images); the kernel's difference
    from the model's result."""
    from pipeline.models import _fast_layers
    from scripts.flash_head40 import bank_attention

    tokens, dim = 4096, 40
    _fast_layers.check_kernels("cuda", torch.float16)
    q, k, v = (token_major(streams * FRAMES, tokens, dim) for _ in range(3))
    banks = {
        "portrait": [tokens] * streams,
        "full": [4 * tokens] * streams,
        "mixed": [tokens * (1 + s % 4) for s in range(streams)],
    }
    rows = []
    for what, lengths in banks.items():
        bank_k, bank_v = (token_major(streams, max(lengths), dim) for _ in range(2))
        model = partial(_fast_layers.bank_attention, q, k, v, bank_k, bank_v, dim**-0.5, lengths)
        want = model().float()
        lengths_t = torch.tensor(lengths, device="cuda", dtype=torch.int32)
        row = {"bank": what, "lengths": lengths}
        row["model_ms"] = round(median_cuda_ms(model, 15, warmup=2), 4)
        time_configs(
            row,
            partial(bank_attention, q, k, v, bank_k, bank_v, lengths_t),
            partial(difference, want=want),
            "vs_model",
        )
        rows.append(row)
        del bank_k, bank_v
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--triton", action="store_true", help="only the 64² level's Triton table")
    args = parser.parse_args()
    if args.triton:
        torch.manual_seed(0)
        with torch.no_grad():
            rows = triton_table(args.streams)
            fused = fused_table(args.streams)
        if args.out:
            args.out.write_text(
                json.dumps(
                    {"gpu": torch.cuda.get_device_name(), "triton": rows, "fused": fused}, indent=1
                )
            )
        return
    streams, rows = args.streams, []
    torch.manual_seed(0)
    with torch.no_grad():
        for tokens, dim in LEVELS:
            batch = streams * FRAMES
            q, k, v = (token_major(batch, tokens, dim) for _ in range(3))
            row = {"tokens": tokens, "head_dim": dim, "streams": streams}
            row["own"] = time_backends(q, k, v)
            # the bank: a stream's 16 frames of queries as one sequence, a bank of 1 + 3 images
            qb = token_major(streams, FRAMES * tokens, dim)
            kb, vb = (token_major(streams, 4 * tokens, dim) for _ in range(2))
            row["bank_full"] = time_backends(qb, kb, vb)
            # temporal: every spatial position over its stream's 16 frames
            qt, kt, vt = (token_major(streams * tokens, FRAMES, dim) for _ in range(3))
            row["temporal"] = time_backends(qt, kt, vt)
            # variable bank lengths: 1, 2, 3 and 4 images, padded to 4
            lengths = torch.tensor(
                [tokens * (1 + s % 4) for s in range(streams)], dtype=torch.int32, device="cuda"
            )
            q4, k4, v4 = (x.transpose(1, 2) for x in (qb, kb, vb))  # (S, T, h, d) views
            scale = dim**-0.5
            try:
                got, _ = varlen_bank(q4, k4, v4, lengths, scale)
                worst = 0.0
                for s in range(streams):
                    n = int(lengths[s])
                    ref = F.scaled_dot_product_attention(
                        qb[s : s + 1].float(),
                        kb[s : s + 1, :, :n].float(),
                        vb[s : s + 1, :, :n].float(),
                        scale=scale,
                    ).transpose(1, 2)[0]
                    worst = max(worst, difference(got[s], ref))
                row["varlen_error"] = worst
                row["varlen_ms"] = round(
                    median_cuda_ms(partial(varlen_bank, q4, k4, v4, lengths, scale), 15, warmup=2),
                    4,
                )
                full = torch.full_like(lengths, 4 * tokens)
                row["varlen_full_ms"] = round(
                    median_cuda_ms(partial(varlen_bank, q4, k4, v4, full, scale), 15, warmup=2), 4
                )
            except RuntimeError as err:
                row["varlen_error"] = str(err).splitlines()[0][:200]
            print(json.dumps(row))
            rows.append(row)
            del q, k, v, qb, kb, vb, qt, kt, vt
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(
            json.dumps({"gpu": torch.cuda.get_device_name(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
