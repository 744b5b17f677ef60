"""The stream slots of a worker: the places in its batched denoising call."""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class SlotTicket:
    """A row's place in the line for a stream slot, from its acceptance by the worker."""

    accepted: float  # time.monotonic() at acceptance
    order: float  # the driver's order of the row (its place in the line)
    ready: bool = False  # prepared, asking for a slot


class StreamSlots:
    """``count`` places in the worker's batched denoising call; a row holds one while it streams.

    Rows take the free slots in the driver's order (longest first; the number each row comes
    with, :meth:`accept`), not in the order they finish preparing. Otherwise the short rows sent
    with a long one, prepared sooner, take every free slot; the long row (or a split row's later
    part, whose start renders its overlap first) then starts a whole short row later and
    finishes last, alone. So a ready row leaves a free slot to each row ahead of it that is still
    preparing, for at most :attr:`reserve_seconds` after that row's acceptance (an input slow to
    arrive does not keep a slot empty for long); ready rows take slots in that order too. A row
    gets the lowest free slot number (the report draws one lane per slot).
    """

    #: how long a row still preparing keeps a free slot from rows accepted after it: a row is
    #: normally prepared within seconds
    reserve_seconds = 20.0

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"{count = } stream slots; a worker needs at least 1")
        self.count = count
        self._free = list(range(count))
        self._line: list[SlotTicket] = []  # rows accepted, not yet streaming, in the driver's order
        self._cond = threading.Condition()

    @property
    def busy(self) -> int:
        """Slots held now."""
        with self._cond:
            return self.count - len(self._free)

    @property
    def waiting(self) -> int:
        """Rows prepared and waiting for a slot now."""
        with self._cond:
            return sum(ticket.ready for ticket in self._line)

    def accept(self, order: int | None = None) -> SlotTicket:
        """A row the worker accepted joins the line: in the driver's ``order`` (the number the
        driver sent it with; Ray may start a worker's calls in another order), else at the end.
        The row must :meth:`leave` if it ends without streaming (failed while preparing,
        committed by an earlier attempt)."""
        with self._cond:
            ticket = SlotTicket(time.monotonic(), math.inf if order is None else order)
            bisect.insort(self._line, ticket, key=lambda queued: queued.order)  # after equals
        return ticket

    def leave(self, ticket: SlotTicket) -> None:
        """``ticket``'s row stops waiting (nothing happens if it took a slot already)."""
        with self._cond:
            if ticket in self._line:
                self._line.remove(ticket)
                self._cond.notify_all()  # a slot kept for it is free for the rows behind it

    @contextmanager
    def hold(self, ticket: SlotTicket | None = None) -> Iterator[int]:
        """Wait for a free slot in turn (see the class), hold it inside the ``with`` block;
        yields its number. ``ticket``: the row's place from :meth:`accept` (None: joins now)."""
        ticket = ticket or self.accept()
        with self._cond:
            ticket.ready = True
            while True:
                may_take, recheck = self._turn(ticket)
                if may_take:
                    break
                self._cond.wait(recheck)
            self._line.remove(ticket)
            index = min(self._free)
            self._free.remove(index)
            self._cond.notify_all()  # the next in line may find another free slot
        try:
            yield index
        finally:
            with self._cond:
                self._free.append(index)
                self._cond.notify_all()

    def _turn(self, ticket: SlotTicket) -> tuple[bool, float | None]:
        """Whether ``ticket`` may take a free slot now; if not, the seconds after which a slot
        kept for a row ahead lapses (None: none will). Called holding the lock."""
        now = time.monotonic()
        kept, lapse = 0, None  # slots kept for rows ahead still preparing; the first to lapse
        for ahead in self._line:
            if ahead is ticket:
                break
            if ahead.ready:
                return False, None  # a prepared row ahead of it goes first
            until = ahead.accepted + self.reserve_seconds - now
            if until > 0:
                kept += 1
                lapse = until if lapse is None else min(lapse, until)
        return len(self._free) > kept, lapse


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
