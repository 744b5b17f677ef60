"""A Chrome trace of a stretch of batched calls, every thread of the process included.

What ``cluster.trace_dir`` records in each worker of a real render (and ``job.bench.trace`` in
the benchmark): which kernels ran, where the GPU waited, and what the batch thread, the row
threads, the encoders and the preparation thread were doing meanwhile
(``scripts/trace_summary.py`` reads it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def profiled_activities(cuda: bool) -> list[torch.profiler.ProfilerActivity]:
    """The host's operators, and on a GPU its kernels."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def all_threads_profiler(cuda: bool) -> torch.profiler.profile:
    """``torch.profiler`` over every thread's operators (not only the starting thread's) and, on a
    GPU, the kernels; with input shapes (``trace_summary`` names the shapes behind each kernel)."""
    try:
        experimental = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    except (AttributeError, TypeError):  # a torch without it: the starting thread only
        experimental = None
    return torch.profiler.profile(
        activities=profiled_activities(cuda),
        experimental_config=experimental,
        record_shapes=True,
    )


@dataclass
class CallTrace:
    """Trace calls ``first_call`` to ``first_call + calls - 1`` (counted from 0) into ``path``."""

    path: str
    first_call: int
    calls: int


class CallTracer:
    """Starts the profiler before call ``first_call`` and writes the trace after the last traced
    call (:meth:`before_call` / :meth:`after_call`, from the thread that makes the calls)."""

    def __init__(self, trace: CallTrace, *, cuda: bool) -> None:
        if trace.first_call < 0 or trace.calls < 1:
            raise ValueError(f"a call trace needs first_call >= 0 and calls >= 1; got {trace}")
        self.trace, self.cuda = trace, cuda
        self.calls = 0
        self.written: Path | None = None
        self._profiler: torch.profiler.profile | None = None

    def before_call(self) -> None:
        if self.calls == self.trace.first_call and self._profiler is None:
            self._profiler = all_threads_profiler(self.cuda)
            self._profiler.__enter__()

    def after_call(self) -> None:
        self.calls += 1
        if self._profiler is not None and self.calls == self.trace.first_call + self.trace.calls:
            if self.cuda:
                torch.cuda.synchronize()  # the traced calls' kernels, not only their launches
            profiler, self._profiler = self._profiler, None
            profiler.__exit__(None, None, None)
            path = Path(self.trace.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            profiler.export_chrome_trace(str(path))
            self.written = path
            logger.info(
                "trace of calls %d-%d written to %s",
                self.trace.first_call,
                self.calls - 1,
                path,
            )
