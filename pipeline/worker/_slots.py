"""The stream slots of a worker: the places in its batched denoising call."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


class StreamSlots:
    """``count`` places in the worker's batched denoising call; a row holds one while it streams.

    Rows wait for a slot in the order they asked (first come, first served) and get the lowest
    free slot number (the report draws one lane per slot).
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"{count = } stream slots; a worker needs at least 1")
        self.count = count
        self._free = list(range(count))
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def busy(self) -> int:
        """Slots held now."""
        with self._cond:
            return self.count - len(self._free)

    @property
    def waiting(self) -> int:
        """Rows waiting for a slot now."""
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot (in turn), hold it inside the ``with`` block; yields its number."""
        turn = object()
        with self._cond:
            self._waiting.append(turn)
            while self._waiting[0] is not turn or not self._free:
                self._cond.wait()
            self._waiting.popleft()
            index = min(self._free)
            self._free.remove(index)
            self._cond.notify_all()  # the next in line may find another free slot
        try:
            yield index
        finally:
            with self._cond:
                self._free.append(index)
                self._cond.notify_all()


#: ``model.streams_per_worker=auto`` on a GPU takes up to this many streams: on the H100 and H200
#: the batched call's throughput is flat from 4 streams on (docs/benchmarks.md, "Streams per
#: worker"), while each stream adds memory and makes every row take longer.
AUTO_MAX_STREAMS = 4
#: GPU memory one more stream takes at 512x512 in fp16 with full keyframe banks (measured:
#: 13.4 GiB at 4 streams, 20.8 at 8; docs/benchmarks.md); scaled by pixels and element size.
STREAM_BYTES_512_FP16 = int(1.9 * 2**30)
#: with ``model.cuda_graphs``, what one more stream may add: each graph of the denoising UNet keeps
#: its own copy of the batched banks (up to 8 graphs, each stream's bank up to 4 images of 46 MB
#: at 512x512 in fp16: 1.4 GiB); scaled as above
GRAPH_BYTES_512_FP16 = int(1.5 * 2**30)
#: memory auto leaves free (allocator fragmentation, library workspaces, CUDA graphs' scratch)
HEADROOM_BYTES = 2 * 2**30


def max_streams(setting: str) -> int:
    """The most streams ``model.streams_per_worker`` can give a worker (the actor's threads are
    sized by it before the model is loaded)."""
    return AUTO_MAX_STREAMS if setting == "auto" else int(setting)


def streams_for(setting: str, animator: Any) -> int:
    """Stream slots for a worker: ``model.streams_per_worker`` as given, or for "auto" as many as
    the GPU's free memory holds (after the model is loaded), at most :data:`AUTO_MAX_STREAMS`;
    one on a CPU, where a call's cost grows with its streams."""
    if setting != "auto":
        return int(setting)
    import torch  # noqa: PLC0415 - this module is also imported by the driver, which has no GPU work

    models = animator.models
    if models.device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(models.device)
    scale = (animator.resolution / 512) ** 2 * torch.finfo(models.dtype).bits / 16
    per_stream = STREAM_BYTES_512_FP16 + (GRAPH_BYTES_512_FP16 if models.graphed() else 0)
    fits = int((free - HEADROOM_BYTES) // (per_stream * scale))
    streams = max(1, min(AUTO_MAX_STREAMS, fits))
    logger.info(
        "model.streams_per_worker=auto: %d stream(s) (%.1f GiB free on %s)",
        streams,
        free / 2**30,
        models.device,
    )
    return streams
