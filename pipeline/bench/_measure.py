"""The measurement: every benchmark row rendered at once through the worker's path, the steady
state timed."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.animate import BatchStats, StepBatcher, StreamingAnimator
from pipeline.config import StorageConfig, VideoConfig
from pipeline.storage import Storage
from pipeline.worker import RowRenderer, RowResult, RowTask

from ._busy import BusySampler
from ._inputs import BenchInputs
from ._result import BenchResult
from ._trace import watch_steady_state

logger = logging.getLogger(__name__)


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
    """Render every benchmark row at once through the worker's path and time the steady state.

    On a GPU the rate comes from CUDA events at the end of each call (the host may run a call
    ahead of the GPU, so host times would flatter it); ``trace`` and ``sync_check`` look at the
    steady state from the inside (`pipeline.config.BenchConfig`)."""
    cuda = animator.models.device.type == "cuda"
    # 1. one batcher for all rows, as a worker has; each row on its own thread, as a worker's
    batcher = StepBatcher(animator, record_stats=True)
    threads, outcomes = _row_threads(animator, batcher, inputs, scratch, video)
    busy = BusySampler(animator.models.device)

    # 2. start the rows; GPU busy time is sampled once the warm-up calls are done
    started = time.monotonic()
    for thread in threads:
        thread.start()
    busy.start(after_calls=warmup_calls, stats=batcher.stats)

    # 3. the diagnostics (trace, sync sites) watch the calls after the warm-up
    result.sync_sites, first_timed = watch_steady_state(
        batcher, threads, warmup_calls, trace=trace, sync_check=sync_check, cuda=cuda
    )

    # 4. every row to its end
    stats = _join_rows(threads, busy, batcher)
    _record_outcomes(result, outcomes)
    for name in animator.models.graphs_given_up():  # its capture failed: slower than it should be
        result.notes.append(f"{name}: CUDA graph capture failed; it ran eagerly from then on")

    # 5. the rates over the timed window (none when the rows were too short for one)
    window = _timed_window(stats, first_timed)
    if not window:
        return
    _record_rates(result, stats, window)
    if not result.timed_calls:  # a rate of 0 would read as a measurement
        result.notes.append(
            f"no steady state: the {max(stats.streams)} streams never ran two calls together "
            f"after the {warmup_calls} warm-up calls (rows too short for job.bench.frames, or "
            "started apart); no rate was measured"
        )
        logger.warning("bench: %s", result.notes[-1])
    result.gpu_busy_percent = busy.percent_between(
        stats.finished_at[window[0]], stats.finished_at[window[-1]]
    )
    logger.info("bench: %d calls, %.1f s wall in all", stats.calls, time.monotonic() - started)


def _row_threads(
    animator: StreamingAnimator,
    batcher: StepBatcher,
    inputs: BenchInputs,
    scratch: Path,
    video: VideoConfig,
) -> tuple[list[threading.Thread], list[RowResult]]:
    """One (unstarted) thread per row, rendering it with a worker's ``RowRenderer`` to local
    storage under ``scratch``; each appends its outcome to the returned list."""
    storage = Storage(StorageConfig(output_root=str(scratch / "out")))
    # one segment per row, no audio: the rows' commits stay out of the steady state
    bench_video = VideoConfig(
        **{
            **asdict(video),
            "audio": "none",
            "segment_seconds": 1e9,
            "first_segment_seconds": None,
            "preset": "veryfast",
        }
    )
    outcomes: list[RowResult] = []
    threads = []
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
    return threads, outcomes


def _join_rows(
    threads: list[threading.Thread], busy: BusySampler, batcher: StepBatcher
) -> BatchStats:
    """Wait for every row thread, stop the sampler and the batch thread; the batcher's stats."""
    for thread in threads:
        thread.join()
    busy.stop()
    batcher.close()
    stats = batcher.stats
    assert stats is not None  # record_stats=True in measure
    return stats


def _record_outcomes(result: BenchResult, outcomes: list[RowResult]) -> None:
    """How many rows were done; why each other one was not."""
    result.rows_done = sum(1 for o in outcomes if o.status == "done")
    for outcome in outcomes:
        if outcome.status != "done":
            result.notes.append(f"{outcome.row_id}: {outcome.error}")


def _timed_window(stats: BatchStats, first_timed: int) -> list[int]:
    """The calls timed: the longest run of consecutive calls from ``first_timed`` on that hold
    every stream (the steady state) and captured no CUDA graph (a capture took seconds with the
    GPU waiting; with ``model.cuda_graphs`` a signature is captured on its second sight, which can
    fall after the warm-up calls, or near the end, when rows start to flush), the last full call
    of all left out (a stream may end in it)."""
    most = max(stats.streams)
    full = [i for i, n in enumerate(stats.streams) if n == most]
    runs: list[list[int]] = [[]]
    for i in range(first_timed, len(stats.streams)):
        captured = stats.captures[i] > (stats.captures[i - 1] if i else 0)
        if stats.streams[i] == most and not captured:
            runs[-1].append(i)
        elif runs[-1]:
            runs.append([])
    best = max(runs, key=len)
    if best and best[-1] == full[-1]:
        best = best[:-1]
    return best or full[-1:]


def _record_rates(result: BenchResult, stats: BatchStats, window: list[int]) -> None:
    """Frames per second, time per call and keyframes over ``window``: the frames of the calls
    after its first, over the time from the first call's end to the last's."""
    first, last = window[0], window[-1]
    frames = sum(stats.emitted[first + 1 : last + 1])
    seconds = stats.finished_at[last] - stats.finished_at[first]
    result.timed_calls = len(window) - 1
    result.keyframes_per_stream = [
        stats.keyframes[i] / stats.streams[i] for i in (min(first + 1, last), last)
    ]
    result.wall_fps = frames / seconds if seconds > 0 else 0.0
    device_ms = stats.device_ms()
    if device_ms:  # a GPU: the span between the calls' CUDA events, not the host's clock
        result.device_ms_per_call = statistics.median(device_ms[first : last + 1])
        seconds = stats.events[first][1].elapsed_time(stats.events[last][1]) / 1000
        # each call's span starts where the previous one ended unless the GPU had run dry
        in_calls = sum(device_ms[first + 1 : last + 1]) / 1000
        if seconds > 0:
            result.gpu_idle_between_calls_percent = max(0.0, 100 * (1 - in_calls / seconds))
    result.output_fps = frames / seconds if seconds > 0 else 0.0
    result.ms_per_call = 1000 * seconds / max(1, last - first)
