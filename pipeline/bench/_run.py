"""A whole benchmark run, from the typed config to its result: the model with random weights,
the inputs, the FLOPs, the optimised model's steady state, memory and (optionally) a profile."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from pipeline.animate import StreamingAnimator
from pipeline.config import RenderConfig
from pipeline.models import resolve_device, resolve_dtype
from pipeline.models.weights import random_models
from pipeline.worker import capture_graphs_at_start, streams_for

from ._inputs import bench_inputs, make_inputs
from ._measure import measure
from ._peak import count_flops, measure_matrix_peak
from ._result import BenchResult
from ._trace import profile_calls


def run_benchmark(settings: RenderConfig) -> tuple[BenchResult, str | None]:
    """The ``job=bench`` measurement of ``settings``; returns the result and, with
    ``job.bench.profile``, the table of the top operators of two steady-state calls.

    Raises:
        TooFewRows: ``job.bench.manifest`` has fewer rows than the benchmark has streams.
    """
    options, model = settings.job.bench, settings.model
    # 1. the model: random weights with the architecture's sizes and FLOPs (no download)
    device = resolve_device(model.device)
    dtype = resolve_dtype(model.dtype, device)
    peak = measure_matrix_peak(device) if device.type == "cuda" else None
    models = random_models(model.architecture, device, dtype, vae_decoder=model.vae_decoder)
    models.set_attention_backend(model.attention)
    animator = StreamingAnimator(models, model.animator, resolution=model.resolution)

    # 2. as many streams as a worker would take (model.streams_per_worker=auto: by free memory)
    streams = int(options.streams or streams_for(model.streams_per_worker, animator))
    result = _empty_result(settings, streams, device, dtype, peak)

    # 3. the steady state of the optimised model on the benchmark's rows
    _render_and_time(settings, animator, device, streams, result)
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30

    # 4. where the time goes (job.bench.profile), on fresh synthetic inputs
    profile = None
    if options.profile:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
            inputs = make_inputs(Path(scratch), streams, 16, model.resolution, options.rate)
            profile = profile_calls(animator, inputs, streams)

    # 5. the share of the GPU's matrix peak the output rate stands for
    if result.flops_per_frame_t and result.matrix_peak_tflops:
        result.fraction_of_peak = (
            result.output_fps * result.flops_per_frame_t / result.matrix_peak_tflops
        )
    return result, profile


def _empty_result(
    settings: RenderConfig,
    streams: int,
    device: torch.device,
    dtype: torch.dtype,
    peak: float | None,
) -> BenchResult:
    """The result's description of the run (what was measured), its figures still empty."""
    model, options = settings.model, settings.job.bench
    return BenchResult(
        label=options.label or f"{model.name} S={streams}",
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        dtype=str(dtype).removeprefix("torch."),
        attention=model.attention,
        streams=streams,
        compile=model.compile,
        channels_last=model.channels_last,
        cuda_graphs=model.cuda_graphs,
        fp8=model.fp8,
        vae_decoder=model.vae_decoder,
        resolution=model.resolution,
        frames_per_stream=options.frames,
        matrix_peak_tflops=peak,
    )


def _render_and_time(
    settings: RenderConfig,
    animator: StreamingAnimator,
    device: torch.device,
    streams: int,
    result: BenchResult,
) -> None:
    """FLOPs counted on the eager model, then the model optimised as a worker's is and every row
    rendered at once, the steady state timed (``measure``)."""
    options, model = settings.job.bench, settings.model
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        inputs = bench_inputs(options, settings.framing, Path(scratch), streams, model.resolution)
        if options.flops:
            result.flops_per_frame_t = count_flops(animator, inputs, streams) / 1e12
        animator.models.optimize(
            channels_last=model.channels_last,
            compile_mode=model.compile,
            cuda_graphs=model.cuda_graphs,
            fp8=model.fp8,
        )
        capture_graphs_at_start(model, animator, streams)  # as a worker starts
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        measure(
            animator,
            inputs,
            Path(scratch),
            settings.video,
            result,
            options.warmup_calls,
            trace=options.trace,
            sync_check=options.sync_check,
        )
