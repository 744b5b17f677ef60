"""What one benchmark run measured (one JSON object in ``job.bench.output``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BenchResult:
    """One benchmark run (what docs/benchmarks.md tabulates)."""

    label: str
    device: str
    dtype: str
    attention: str
    streams: int
    compile: str
    channels_last: bool
    vae_decoder: str
    resolution: int
    frames_per_stream: int
    cuda_graphs: bool = False
    fp8: str = "none"  # model.fp8
    timed_calls: int = 0
    output_fps: float = 0.0  # GPU: over the CUDA-event span of the timed calls; CPU: wall time
    wall_fps: float = 0.0  # over the host's wall time of the timed calls
    ms_per_call: float = 0.0  # time per batched call (S streams x 4 frames), as output_fps
    sync_sites: dict[str, int] = field(default_factory=dict)  # sync_check: host waits by site
    device_ms_per_call: float | None = None
    peak_memory_gib: float | None = None
    flops_per_frame_t: float | None = None
    matrix_peak_tflops: float | None = None
    fraction_of_peak: float | None = None
    gpu_busy_percent: float | None = None
    # share of the timed window the GPU spent between calls (no call's work queued): the host
    # was late; idle inside calls (launch gaps) shows only in a trace
    gpu_idle_between_calls_percent: float | None = None
    # history keyframes per stream in the bank at the timed window's first and last call: the
    # window's fps holds for renders whose banks look alike
    keyframes_per_stream: list[float] = field(default_factory=list)
    rows_done: int = 0
    notes: list[str] = field(default_factory=list)
