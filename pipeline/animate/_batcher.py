"""Several rows, one denoising call: row threads hand in chunks, one thread runs the batch.

Each row renders in its own thread (decoding, encoding and uploading its own files), and calls
:meth:`StepBatcher.advance` with its next chunk instead of calling the animator itself. A single
batch thread runs one :meth:`StreamingAnimator.advance` for every stream that has handed in a
chunk and hands each thread its frames. Streams join (`register`) and leave (`unregister`) at any
call: a row that starts joins the next call, a row whose last frame is out leaves, the others
carry on (continuous batching). The GPU works on the batch while the row threads do their CPU
work; the result equals single-stream rendering up to float rounding.

When to send a call: as soon as every registered stream has handed in its chunk; when one is
late, no longer than the GPU has work queued — the previous call's work finished (CUDA), or
``max_wait_s`` after the first chunk came in (CPU, where a call is done when it returns). A late
stream joins the next call, so the GPU never idles for a straggler and the streams fall back into
one call at the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.profiler import record_function

from ._animator import StreamingAnimator
from ._call_trace import CallTrace, CallTracer
from ._state import StreamState

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    stream: StreamState
    frames: torch.Tensor | np.ndarray | None
    done: threading.Event = field(default_factory=threading.Event)
    output: torch.Tensor | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """What the batch thread measured, one entry per call (for the benchmark)."""

    streams: list[int] = field(default_factory=list)  # streams per call
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = field(
        default_factory=list
    )  # GPU only
    finished_at: list[float] = field(default_factory=list)  # monotonic time each call ended
    emitted: list[int] = field(default_factory=list)  # output frames per call
    # history keyframes in the banks the call attended to, summed over its streams (a longer bank
    # makes every reference attention of that stream longer)
    keyframes: list[int] = field(default_factory=list)
    # CUDA graphs captured so far, after each call (a capture takes the GPU's place for seconds)
    captures: list[int] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.streams)

    def device_ms(self) -> list[float]:
        """CUDA-event time of each call (read at the end: recording never waits for the GPU)."""
        times = []
        for begin, end in self.events:
            end.synchronize()
            times.append(begin.elapsed_time(end))
        return times


class GpuClock:
    """The GPU's time in the batched calls and between them (when no call's work was queued: the
    host was late, e.g. a row not ready), from CUDA events read only once they have completed, so
    the batch thread never waits for them. Totals over the clock's life: cheap enough to keep for
    a worker rendering for days."""

    def __init__(self) -> None:
        self.calls = 0
        self.busy_seconds = 0.0
        self.idle_seconds = 0.0
        # calls sent after the previous one had finished on the GPU (their eager steps before
        # the graphed UNet ran on an idle GPU), and calls sent while a registered stream had not
        # handed in its chunk yet
        self.sent_to_idle_gpu = 0
        self.sent_without_a_stream = 0
        # calls that captured a CUDA graph: the GPU waits while the host records the graph
        self.capture_calls = 0
        self.capture_seconds = 0.0
        self._pending: deque[tuple[torch.cuda.Event, torch.cuda.Event, bool]] = deque()
        self._last_end: torch.cuda.Event | None = None
        self._lock = threading.Lock()  # the batch thread records, any thread reads the totals

    def sent(self, *, gpu_idle: bool, missing_streams: int) -> None:
        """How a call was sent (:meth:`StepBatcher._run`): to an idle GPU, without some stream."""
        with self._lock:
            self.sent_to_idle_gpu += gpu_idle
            self.sent_without_a_stream += missing_streams > 0

    def record(
        self, begin: torch.cuda.Event, end: torch.cuda.Event, *, captured: bool = False
    ) -> None:
        """One call's CUDA events; ``captured``: the call captured a CUDA graph."""
        with self._lock:
            self._pending.append((begin, end, captured))
            self._settle(wait=False)

    def _settle(self, *, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            begin, end, captured = self._pending.popleft()
            end.synchronize()
            seconds = begin.elapsed_time(end) / 1000
            self.busy_seconds += seconds
            if captured:
                self.capture_calls += 1
                self.capture_seconds += seconds
            if self._last_end is not None:
                self.idle_seconds += max(0.0, self._last_end.elapsed_time(begin) / 1000)
            self._last_end = end
            self.calls += 1

    def totals(self) -> dict[str, float]:
        """Calls, seconds in calls and between them, and the idle share of the span from the first
        call's start to the last one's end."""
        with self._lock:
            self._settle(wait=True)
        span = self.busy_seconds + self.idle_seconds
        return {
            "calls": self.calls,
            "busy_seconds": round(self.busy_seconds, 3),
            "idle_between_calls_seconds": round(self.idle_seconds, 3),
            "idle_between_calls_percent": round(100 * self.idle_seconds / span, 3) if span else 0.0,
            "calls_sent_to_idle_gpu": self.sent_to_idle_gpu,
            "calls_sent_without_a_stream": self.sent_without_a_stream,
            "calls_that_captured_a_graph": self.capture_calls,
            "seconds_in_calls_that_captured": round(self.capture_seconds, 3),
        }


class StepBatcher:
    """Run the animator for several streams at once, on behalf of the threads that own them.

    Args:
        animator: the shared animator.
        max_wait_s: on a CPU, how long a handed-in chunk may wait for the other streams' chunks
            (on a GPU a call waits for late streams only while the previous call still runs).
        record_stats: keep `stats` of every call (the benchmark): they grow with every call, so
            a worker rendering for hours does without them.
        trace: write a Chrome trace of these calls, every thread included (``cluster.trace_dir``).
    """

    def __init__(
        self,
        animator: StreamingAnimator,
        *,
        max_wait_s: float = 0.05,
        record_stats: bool = False,
        trace: CallTrace | None = None,
    ) -> None:
        self.animator = animator
        cuda = animator.models.device.type == "cuda"
        self.tracer = None if trace is None else CallTracer(trace, cuda=cuda)
        self.max_wait_s = max_wait_s
        self.stats = BatchStats() if record_stats else None
        self._cond = threading.Condition()
        self._active: set[int] = set()
        self._requests: dict[int, _Request] = {}
        self._closed = False
        self._last_call: torch.cuda.Event | None = None  # end of the previous call's GPU work
        self.gpu_clock = GpuClock() if cuda else None
        self._thread = threading.Thread(target=self._run, name="step-batcher", daemon=True)
        self._thread.start()

    def register(self, stream: StreamState) -> None:
        with self._cond:
            self._active.add(id(stream))

    def unregister(self, stream: StreamState) -> None:
        with self._cond:
            self._active.discard(id(stream))
            self._cond.notify_all()

    def advance(
        self, stream: StreamState, frames: torch.Tensor | np.ndarray | None
    ) -> torch.Tensor:
        """The frames ``stream`` finishes with this chunk (see :meth:`StreamingAnimator.advance`)."""
        self._check(stream, frames)
        request = _Request(stream, frames)
        with self._cond:
            if self._closed:
                raise RuntimeError("the step batcher is closed")
            self._active.add(id(stream))
            self._requests[id(stream)] = request
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.output is not None
        return request.output

    def finish(
        self, stream: StreamState, frames: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """End ``stream``'s input (with an optional last chunk) and return all its remaining frames."""
        outputs = [self.advance(stream, frames if frames is not None and len(frames) else None)]
        while not stream.done:
            outputs.append(self.advance(stream, None))
        return torch.cat(outputs)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _check(self, stream: StreamState, frames: torch.Tensor | np.ndarray | None) -> None:
        """Reject a bad chunk here, so it fails its own row and not the whole batch."""
        self.animator.check_chunk(stream, frames)

    def _run(self) -> None:
        while True:
            with self._cond:
                # the waits are named in traces (scripts/trace_summary.py: what the batch thread
                # was in while the GPU idled)
                with record_function("batcher:no-chunk-handed-in"):
                    while not self._requests and not self._closed:
                        self._cond.wait()
                if self._closed and not self._requests:
                    return
                deadline = time.monotonic() + self.max_wait_s
                with record_function("batcher:waiting-for-late-streams"):
                    while not self._closed and not self._should_send(deadline):
                        # a GPU's progress is polled (an event cannot notify a condition)
                        timeout = deadline - time.monotonic() if self._last_call is None else 0.001
                        self._cond.wait(max(timeout, 0.0))
                batch = list(self._requests.values())
                self._requests.clear()
                if self.gpu_clock is not None:
                    self.gpu_clock.sent(
                        gpu_idle=self._last_call is None or self._last_call.query(),
                        missing_streams=len(self._active) - len(batch),
                    )
            self._step(batch)

    def _should_send(self, deadline: float) -> bool:
        """Every registered stream has handed in, or waiting longer would idle the GPU."""
        if len(self._requests) >= len(self._active):
            return True
        if self._last_call is not None:
            return self._last_call.query()
        return time.monotonic() >= deadline

    def _step(self, batch: list[_Request]) -> None:
        stats, clock = self.stats, self.gpu_clock
        logger.debug("call: %d of %d streams", len(batch), len(self._active))
        models = self.animator.models
        captures_before = models.graph_captures()
        if self.tracer is not None:
            self.tracer.before_call()
        if clock is not None:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        try:
            outputs = self.animator.advance([r.stream for r in batch], [r.frames for r in batch])
        except BaseException as err:  # noqa: BLE001 - handed to every waiting row thread
            logger.warning("batched step failed for %d stream(s): %s", len(batch), err)
            for request in batch:
                request.error = err
                request.done.set()
            return
        captures_after = models.graph_captures()  # this call's capture, if any, included
        if clock is not None:
            end.record()
            clock.record(begin, end, captured=captures_after > captures_before)
            self._last_call = end
        if self.tracer is not None:
            self.tracer.after_call()
        if stats is not None:
            if clock is not None:
                stats.events.append((begin, end))
            stats.streams.append(len(batch))
            stats.finished_at.append(time.monotonic())
            stats.emitted.append(sum(int(o.shape[0]) for o in outputs))
            stats.keyframes.append(sum(r.stream.num_keyframes for r in batch))
            stats.captures.append(captures_after)
        with self._cond:
            # a stream whose last frames are out hands in no more chunks: the next call need not
            # wait for its row thread to leave (that thread first hands the frames to its
            # encoder, whose queue may be full)
            for request in batch:
                if request.stream.done:
                    self._active.discard(id(request.stream))
        for request, output in zip(batch, outputs):
            request.output = output
            request.done.set()
