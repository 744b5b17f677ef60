"""The "of peak" figures: model FLOPs per output frame and the GPU's measured matrix peak."""

from __future__ import annotations

import statistics

import torch

from pipeline.animate import StreamingAnimator

from ._inputs import BenchInputs, steady_streams


def median_cuda_ms(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median GPU time of ``fn()`` in milliseconds (CUDA events around each of ``repeats``
    launches, after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_matrix_peak(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Dense fp16 matrix-multiply throughput of this GPU (TFLOP/s), median of timed products."""
    a = torch.randn(size, size, device=device, dtype=torch.float16)
    b = torch.randn(size, size, device=device, dtype=torch.float16)
    seconds = median_cuda_ms(lambda: a @ b, repeats) / 1000
    return 2 * size**3 / seconds / 1e12


def count_flops(animator: StreamingAnimator, inputs: BenchInputs, streams: int) -> float:
    """FLOPs of one steady-state call (eager), per output frame."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    states, chunks = steady_streams(animator, inputs, streams)
    counter = FlopCounterMode(display=False)
    with counter:
        emitted = animator.advance(states, chunks)
    frames = sum(int(o.shape[0]) for o in emitted)
    return counter.get_total_flops() / max(1, frames)
