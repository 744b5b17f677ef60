"""Several rows, one denoising call: row threads hand in chunks, one thread runs the batch.

Each row renders in its own thread (decoding, encoding and uploading its own files), and calls
:meth:`StepBatcher.advance` with its next chunk instead of calling the animator itself. A single
batch thread waits until every registered stream has handed in a chunk (or ``max_wait_s``
passed), runs one :meth:`StreamingAnimator.advance` for all of them, and hands each thread its
frames. The GPU works on the batch while the row threads do their CPU work; the result equals
single-stream rendering up to float rounding.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ._animator import StreamingAnimator
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


class StepBatcher:
    """Run the animator for several streams at once, on behalf of the threads that own them.

    Args:
        animator: the shared animator.
        max_wait_s: how long a handed-in chunk may wait for the other streams' chunks.
        record_stats: keep `stats` of every call (the benchmark): they grow with every call, so
            a worker rendering for hours does without them.
    """

    def __init__(
        self, animator: StreamingAnimator, *, max_wait_s: float = 0.05, record_stats: bool = False
    ) -> None:
        self.animator = animator
        self.max_wait_s = max_wait_s
        self.stats = BatchStats() if record_stats else None
        self._cond = threading.Condition()
        self._active: set[int] = set()
        self._requests: dict[int, _Request] = {}
        self._closed = False
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
                while not self._requests and not self._closed:
                    self._cond.wait()
                if self._closed and not self._requests:
                    return
                deadline = time.monotonic() + self.max_wait_s
                while len(self._requests) < len(self._active) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = list(self._requests.values())
                self._requests.clear()
            self._step(batch)

    def _step(self, batch: list[_Request]) -> None:
        stats = self.stats
        cuda = stats is not None and self.animator.models.device.type == "cuda"
        if cuda:
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
        if stats is not None:
            if cuda:
                end.record()
                stats.events.append((begin, end))
            stats.streams.append(len(batch))
            stats.finished_at.append(time.monotonic())
            stats.emitted.append(sum(int(o.shape[0]) for o in outputs))
            stats.keyframes.append(sum(r.stream.num_keyframes for r in batch))
        for request, output in zip(batch, outputs):
            request.output = output
            request.done.set()
