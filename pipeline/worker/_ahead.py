"""Producing a row's chunks on a thread of its own, ahead of the denoising calls."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_END = object()


class ReadAhead:
    """Iterate ``source`` on a thread of its own, at most ``depth`` items waiting.

    The thread starts at once: a row being prepared has its first chunks decoded before it gets a
    stream slot. :meth:`close` stops it (a row that fails or ends early leaves no thread behind
    holding its decoder). An exception in ``source`` is raised by the iteration, in order.
    """

    poll_seconds = 0.1

    def __init__(self, source: Iterable[Any], *, depth: int = 3, name: str = "read-ahead") -> None:
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _offer(self, item: Any) -> bool:
        """Queue ``item`` unless stopped first; returns whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.poll_seconds)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._offer(item):
                    return
        except BaseException as err:  # noqa: BLE001 - re-raised by the consumer
            self._offer(err)
        self._offer(_END)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop producing and wait for the thread (items still queued are dropped)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
