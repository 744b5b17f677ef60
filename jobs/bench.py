"""job=bench: throughput of the worker's real streaming path, on synthetic inputs.

Builds the model with random weights (the chosen architecture's sizes and FLOPs; no download),
writes synthetic driving videos and portraits, and renders ``job.bench.streams`` rows at once
through :class:`~pipeline.worker.RowRenderer` — decode-ahead, the batched animator, the encoder
thread, segment commits to local storage — exactly as a worker does. Reports steady-state output
fps (warm-up calls excluded; per-call CUDA-event times), ms per call, peak GPU memory, model FLOPs
per output frame (``torch.utils.flop_counter``), the GPU's measured fp16 matrix peak and the
resulting fraction, and GPU busy time (NVML) in steady state. Also runs on CPU (tests use it with
``model=tiny``). Results are printed as a table and written as JSON (``job.bench.output``).
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.table import Table

from pipeline.animate import StepBatcher, StreamingAnimator
from pipeline.config import FramingConfig, StorageConfig, VideoConfig
from pipeline.logs import CONSOLE
from pipeline.media import VideoEncoder
from pipeline.models import resolve_device, resolve_dtype
from pipeline.models.weights import random_models
from pipeline.storage import Storage
from pipeline.worker import RowRenderer, RowTask, streams_for

from . import ConfigError
from ._common import typed

logger = logging.getLogger(__name__)


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


def run(cfg: DictConfig) -> int:
    settings = typed(cfg)
    options = settings.job.bench
    model = settings.model
    device = resolve_device(model.device)
    dtype = resolve_dtype(model.dtype, device)
    peak = measure_matrix_peak(device) if device.type == "cuda" else None
    models = random_models(model.architecture, device, dtype, vae_decoder=model.vae_decoder)
    models.set_attention_backend(model.attention)
    animator = StreamingAnimator(models, model.animator, resolution=model.resolution)
    # as many streams as a worker would take (model.streams_per_worker=auto: by free memory)
    streams = int(options.streams or streams_for(model.streams_per_worker, animator))
    result = BenchResult(
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
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        if options.manifest:  # the rows a render job will take: same content, same keyframes
            inputs = manifest_inputs(options.manifest, streams, options.frames, settings.framing)
        else:
            inputs = make_inputs(
                Path(scratch), streams, options.frames, model.resolution, options.rate
            )
        if options.flops:
            result.flops_per_frame_t = count_flops(animator, inputs, streams) / 1e12
        models.optimize(
            channels_last=model.channels_last,
            compile_mode=model.compile,
            cuda_graphs=model.cuda_graphs,
            fp8=model.fp8,
        )
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
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    if options.profile:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
            inputs = make_inputs(Path(scratch), streams, 16, model.resolution, options.rate)
            CONSOLE.print(profile_calls(animator, inputs, streams))
    if result.flops_per_frame_t and result.matrix_peak_tflops:
        result.fraction_of_peak = (
            result.output_fps * result.flops_per_frame_t / result.matrix_peak_tflops
        )
    CONSOLE.print(result_table([result]))
    if options.output:
        path = Path(options.output)
        previous = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps(previous + [asdict(result)], indent=2))
    return 0 if result.rows_done == streams else 1


def measure_matrix_peak(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Dense fp16 matrix-multiply throughput of this GPU (TFLOP/s), median of timed products."""
    a = torch.randn(size, size, device=device, dtype=torch.float16)
    b = torch.randn(size, size, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * size**3 / statistics.median(times) / 1e12


@dataclass
class BenchInputs:
    portraits: list[Path]
    videos: list[Path]
    frames: int
    # synthetic inputs have no faces: the whole picture (the engine alone); a manifest's rows
    # are framed as job=render frames them
    framing: FramingConfig = field(
        default_factory=lambda: FramingConfig(portrait="crop", driving="off")
    )


def manifest_inputs(uri: str, streams: int, frames: int, framing: FramingConfig) -> BenchInputs:
    """The portraits and driving videos of a manifest's first ``streams`` rows (each row's clip
    rendered up to ``frames`` frames), framed as job=render frames them (``framing``, with the
    first row's own ``framing`` column)."""
    from pipeline.manifest import load_manifest  # noqa: PLC0415

    rows = load_manifest(uri).rows[:streams]
    if len(rows) < streams:
        raise ConfigError(
            f"job.bench.manifest={uri} has {len(rows)} row(s); the benchmark needs {streams} "
            "(one per stream: lower job.bench.streams or model.streams_per_worker)"
        )
    if rows[0].framing is not None:
        framing = replace(framing, portrait=rows[0].framing)
    return BenchInputs(
        [Path(row.portrait) for row in rows],
        [Path(row.driving_video) for row in rows],
        frames,
        framing,
    )


def make_inputs(folder: Path, streams: int, frames: int, size: int, rate: int) -> BenchInputs:
    """Synthetic portraits (smooth colour fields) and driving videos (moving blobs), H.264."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    portraits, videos = [], []
    for index in range(streams):
        base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
        portrait = folder / f"portrait{index}.png"
        Image.fromarray(base).resize((size, size), Image.BICUBIC).save(portrait)
        video = folder / f"driving{index}.mp4"
        colour = rng.uniform(60, 255, 3)
        with VideoEncoder(
            video, frame_rate=Fraction(rate), width=size, height=size, preset="ultrafast"
        ) as encoder:
            for start in range(0, frames, 16):
                batch = []
                for i in range(start, min(frames, start + 16)):
                    cx, cy = 0.5 + 0.2 * np.sin(i / 9 + index), 0.45 + 0.1 * np.cos(i / 13)
                    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)[..., None]
                    batch.append((blob * colour + (1 - blob) * 30).astype(np.uint8))
                encoder.add_frames(np.stack(batch))
        portraits.append(portrait)
        videos.append(video)
    return BenchInputs(portraits, videos, frames)


def _steady_streams(
    animator: StreamingAnimator, inputs: BenchInputs, streams: int
) -> tuple[list, list]:
    """``streams`` fused streams past their warm-up call, and a chunk of driving frames each."""
    from pipeline.media import VideoReader, load_image  # noqa: PLC0415

    states = [
        animator.fuse_reference(load_image(str(p)), seed=i)
        for i, p in enumerate(inputs.portraits[:streams])
    ]
    chunks = [
        next(VideoReader(str(v), size=animator.resolution).chunks(4)).frames
        for v in inputs.videos[:streams]
    ]
    for _ in range(4):
        animator.advance(states, chunks)
    return states, chunks


def count_flops(animator: StreamingAnimator, inputs: BenchInputs, streams: int) -> float:
    """FLOPs of one steady-state call (eager), per output frame."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    states, chunks = _steady_streams(animator, inputs, streams)
    counter = FlopCounterMode(display=False)
    with counter:
        emitted = animator.advance(states, chunks)
    frames = sum(int(o.shape[0]) for o in emitted)
    return counter.get_total_flops() / max(1, frames)


def profile_calls(
    animator: StreamingAnimator, inputs: BenchInputs, streams: int, calls: int = 2
) -> str:
    """Where the time of ``calls`` steady-state calls goes: the top operators by device time."""

    states, chunks = _steady_streams(animator, inputs, streams)
    with torch.profiler.profile(
        activities=_profiled_activities(animator.models.device.type == "cuda")
    ) as profiler:
        for _ in range(calls):
            animator.advance(states, chunks)
        if animator.models.device.type == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if animator.models.device.type == "cuda" else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60)


def measure(
    animator: StreamingAnimator,
    inputs: BenchInputs,
    scratch: Path,
    video: VideoConfig,
    result: BenchResult,
    warmup_calls: int,
    *,
    trace: str | None = None,
    sync_check: bool = False,
) -> None:
    """Render every synthetic row at once through the worker's path and time the steady state.

    On a GPU the rate comes from CUDA events at the end of each call (the host may run a call
    ahead of the GPU, so host times would flatter it); ``trace`` and ``sync_check`` look at the
    steady state from the inside (`pipeline.config.BenchConfig`)."""
    batcher = StepBatcher(animator, record_stats=True)
    storage = Storage(StorageConfig(output_root=str(scratch / "out")))
    bench_video = VideoConfig(
        **{
            **asdict(video),
            "audio": "none",
            "segment_seconds": 1e9,
            "first_segment_seconds": None,
            "preset": "veryfast",
        }
    )
    outcomes: list[Any] = []
    threads = []
    busy = _BusySampler(animator.models.device)
    for index, (portrait, driving) in enumerate(zip(inputs.portraits, inputs.videos)):
        renderer = RowRenderer(animator, storage, bench_video, scratch, batcher=batcher)
        task = RowTask(
            f"bench{index}",
            str(portrait),
            str(driving),
            None,
            str(scratch / "out/bench"),
            f"bench{index}-x",
            inputs.frames,
            index,
            framing=inputs.framing,
        )
        thread = threading.Thread(target=lambda r=renderer, t=task: outcomes.append(r.render(t)))
        threads.append(thread)
    started = time.monotonic()
    for thread in threads:
        thread.start()
    busy.start(after_calls=warmup_calls, stats=batcher.stats)
    cuda = animator.models.device.type == "cuda"
    # the diagnostics watch the calls after the warm-up; they slow those calls, so the timed
    # window starts after them
    trace_until, check_until = warmup_calls + 3, warmup_calls + 8
    with _SyncSites(enabled=sync_check and cuda) as syncs:
        if syncs.enabled or trace:
            _wait_for_calls(batcher, warmup_calls + 1, threads)
            syncs.start()
            if trace:
                _trace_calls(batcher, trace_until, threads, Path(trace), cuda)
            if syncs.enabled:
                _wait_for_calls(batcher, check_until, threads)
    for thread in threads:
        thread.join()
    busy.stop()
    result.sync_sites = syncs.counts
    batcher.close()
    stats = batcher.stats
    assert stats is not None  # record_stats=True above
    result.rows_done = sum(1 for o in outcomes if o.status == "done")
    for outcome in outcomes:
        if outcome.status != "done":
            result.notes.append(f"{outcome.row_id}: {outcome.error}")
    # steady state: after the warm-up calls, while every stream is still in its main loop
    full = [i for i, n in enumerate(stats.streams) if n == max(stats.streams)]
    first_timed = check_until if syncs.enabled else trace_until + 1 if trace else warmup_calls
    window = [i for i in full if i >= first_timed][:-1] or full[-1:]
    if not window:
        return
    first, last = window[0], window[-1]
    frames = sum(stats.emitted[first + 1 : last + 1])
    seconds = stats.finished_at[last] - stats.finished_at[first]
    result.timed_calls = len(window) - 1
    result.keyframes_per_stream = [
        stats.keyframes[i] / stats.streams[i] for i in (min(first + 1, last), last)
    ]
    result.wall_fps = frames / seconds if seconds > 0 else 0.0
    device_ms = stats.device_ms()
    if device_ms:
        result.device_ms_per_call = statistics.median(device_ms[first : last + 1])
        seconds = stats.events[first][1].elapsed_time(stats.events[last][1]) / 1000
        # each call's span starts where the previous one ended unless the GPU had run dry
        in_calls = sum(device_ms[first + 1 : last + 1]) / 1000
        if seconds > 0:
            result.gpu_idle_between_calls_percent = max(0.0, 100 * (1 - in_calls / seconds))
    result.output_fps = frames / seconds if seconds > 0 else 0.0
    result.ms_per_call = 1000 * seconds / max(1, last - first)
    result.gpu_busy_percent = busy.percent
    logger.info("bench: %d calls, %.1f s wall in all", stats.calls, time.monotonic() - started)


def _wait_for_calls(batcher: StepBatcher, calls: int, threads: list[threading.Thread]) -> None:
    """Until the batcher has made ``calls`` calls (or every row thread ended)."""
    stats = batcher.stats
    assert stats is not None
    while stats.calls < calls and any(t.is_alive() for t in threads):
        time.sleep(0.005)


def _profiled_activities(cuda: bool) -> list[torch.profiler.ProfilerActivity]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def _trace_calls(
    batcher: StepBatcher, until_calls: int, threads: list[threading.Thread], path: Path, cuda: bool
) -> None:
    """A Chrome trace of every thread (and the GPU's kernels) until call ``until_calls``."""
    try:  # the row, encoder and batch threads' operators too, not just this (idle) thread's
        experimental = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    except (AttributeError, TypeError):
        experimental = None
    with torch.profiler.profile(
        activities=_profiled_activities(cuda),
        experimental_config=experimental,
        record_shapes=True,  # trace_summary's kernel table names the shapes behind each kernel
    ) as profiler:
        _wait_for_calls(batcher, until_calls, threads)
        if cuda:
            torch.cuda.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(path))
    logger.info("bench: trace of calls up to %d written to %s", until_calls, path)


class _SyncSites:
    """Counts where the host waits for the GPU (``torch.cuda.set_sync_debug_mode("warn")``), by
    the innermost project frame of the call, from :meth:`start` until the context ends."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: dict[str, int] = {}
        self._previous_hook: Any = None
        self._previous_filters: list[Any] = []

    def __enter__(self) -> _SyncSites:
        return self

    def start(self) -> None:
        if not self.enabled:
            return
        import traceback  # noqa: PLC0415
        import warnings  # noqa: PLC0415

        root = str(Path(__file__).resolve().parent.parent)
        self._previous_hook, self._previous_filters = warnings.showwarning, warnings.filters[:]

        def record(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
            if "synchronizing" not in str(message):
                self._previous_hook(message, category, filename, lineno, file, line)
                return
            ours = [
                f"{Path(f.filename).relative_to(root)}:{f.lineno} {f.name}"
                for f in traceback.extract_stack()[:-1]
                if f.filename.startswith(root) and "/.venv/" not in f.filename
            ]
            site = ours[-1] if ours else "(outside the project)"
            self.counts[site] = self.counts.get(site, 0) + 1

        warnings.showwarning = record
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def __exit__(self, *exc: object) -> None:
        if self._previous_hook is None:
            return
        import warnings  # noqa: PLC0415

        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous_hook
        warnings.filters[:] = self._previous_filters
        if self.counts:
            logger.info("bench: host waited for the GPU at: %s", self.counts)


class _BusySampler:
    """Samples NVML's GPU utilisation (share of time a kernel ran) during the steady state."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, after_calls: int, stats: Any) -> None:
        if self.device.type != "cuda":
            return
        try:
            import pynvml  # noqa: PLC0415

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
        except Exception as err:  # noqa: BLE001 - NVML is optional
            logger.info("no GPU utilisation sampling (%s)", err)
            return

        def sample() -> None:
            while not self._stop.is_set():
                if stats.calls > after_calls:
                    self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        # drop the last samples: the rows' tails and commits, not the steady state
        samples = self.samples[:-5] if len(self.samples) > 10 else self.samples
        return statistics.mean(samples) if samples else None


def result_table(results: list[BenchResult]) -> Table:
    table = Table(title="portrait-render benchmark")
    columns = (
        "label",
        "device",
        "dtype",
        "S",
        "compile",
        "fps",
        "ms/call",
        "GPU ms/call",
        "peak GiB",
        "TF/frame",
        "of peak",
        "GPU busy",
        "idle between",
    )
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("label", "device", "dtype", "compile") else "right"
        )
    for r in results:
        table.add_row(
            r.label,
            r.device,
            r.dtype + ("" if r.fp8 == "none" else f" +fp8 {r.fp8}"),
            str(r.streams),
            r.compile + (" +graphs" if r.cuda_graphs else ""),
            f"{r.output_fps:.2f}",
            f"{r.ms_per_call:.0f}",
            _fmt(r.device_ms_per_call, "{:.0f}"),
            _fmt(r.peak_memory_gib, "{:.2f}"),
            _fmt(r.flops_per_frame_t, "{:.2f}"),
            _fmt(r.fraction_of_peak, "{:.1%}"),
            _fmt(r.gpu_busy_percent, "{:.0f}%"),
            _fmt(r.gpu_idle_between_calls_percent, "{:.1f}%"),
        )
    return table


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
