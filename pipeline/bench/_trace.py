"""Looking at the steady state from the inside: the top operators (``job.bench.profile``), a
Chrome trace of every thread (``job.bench.trace``) and where the host waited for the GPU
(``job.bench.sync_check``)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from pipeline.animate import StepBatcher, StreamingAnimator
from pipeline.animate._call_trace import all_threads_profiler, profiled_activities

from ._inputs import BenchInputs, steady_streams

logger = logging.getLogger(__name__)

# the project's root: sync sites are named by their file relative to it
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def profile_calls(
    animator: StreamingAnimator, inputs: BenchInputs, streams: int, calls: int = 2
) -> str:
    """Where the time of ``calls`` steady-state calls goes: the top operators by device time."""

    states, chunks = steady_streams(animator, inputs, streams)
    with torch.profiler.profile(
        activities=profiled_activities(animator.models.device.type == "cuda")
    ) as profiler:
        for _ in range(calls):
            animator.advance(states, chunks)
        if animator.models.device.type == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if animator.models.device.type == "cuda" else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60)


def watch_steady_state(
    batcher: StepBatcher,
    threads: list[threading.Thread],
    warmup_calls: int,
    *,
    trace: str | None,
    sync_check: bool,
    cuda: bool,
) -> tuple[dict[str, int], int]:
    """Trace and/or sync-check the calls after the warm-up while the rows render.

    Returns the host's waits by site and the first call to time: the diagnostics slow the calls
    they watch, so the timed window starts after them."""
    trace_until, check_until = warmup_calls + 3, warmup_calls + 8
    with SyncSites(enabled=sync_check and cuda) as syncs:
        if syncs.enabled or trace:
            wait_for_calls(batcher, warmup_calls + 1, threads)
            syncs.start()
            if trace:
                trace_calls(batcher, trace_until, threads, Path(trace), cuda)
            if syncs.enabled:
                wait_for_calls(batcher, check_until, threads)
    first_timed = check_until if syncs.enabled else trace_until + 1 if trace else warmup_calls
    return syncs.counts, first_timed


def wait_for_calls(batcher: StepBatcher, calls: int, threads: list[threading.Thread]) -> None:
    """Until the batcher has made ``calls`` calls (or every row thread ended)."""
    stats = batcher.stats
    assert stats is not None
    while stats.calls < calls and any(t.is_alive() for t in threads):
        time.sleep(0.005)


def trace_calls(
    batcher: StepBatcher, until_calls: int, threads: list[threading.Thread], path: Path, cuda: bool
) -> None:
    """A Chrome trace of every thread (and the GPU's kernels) until call ``until_calls``."""
    # the row, encoder and batch threads' operators too, not just this (idle) thread's
    with all_threads_profiler(cuda) as profiler:
        wait_for_calls(batcher, until_calls, threads)
        if cuda:
            torch.cuda.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(path))
    logger.info("bench: trace of calls up to %d written to %s", until_calls, path)


class SyncSites:
    """Counts where the host waits for the GPU (``torch.cuda.set_sync_debug_mode("warn")``), by
    the innermost project frame of the call, from :meth:`start` until the context ends."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: dict[str, int] = {}
        self._previous_hook: Any = None
        self._previous_filters: list[Any] = []

    def __enter__(self) -> SyncSites:
        return self

    def start(self) -> None:
        if not self.enabled:
            return
        self._previous_hook, self._previous_filters = warnings.showwarning, warnings.filters[:]
        warnings.showwarning = self._record
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if "synchronizing" not in str(message):
            self._previous_hook(message, category, filename, lineno, file, line)
            return
        root = str(PROJECT_ROOT)
        ours = [
            f"{Path(f.filename).relative_to(root)}:{f.lineno} {f.name}"
            for f in traceback.extract_stack()[:-1]
            if f.filename.startswith(root) and "/.venv/" not in f.filename
        ]
        site = ours[-1] if ours else "(outside the project)"
        self.counts[site] = self.counts.get(site, 0) + 1

    def __exit__(self, *exc: object) -> None:
        if self._previous_hook is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous_hook
        warnings.filters[:] = self._previous_filters
        if self.counts:
            logger.info("bench: host waited for the GPU at: %s", self.counts)
