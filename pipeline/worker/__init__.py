"""A render worker: rows in, committed videos out, many rows sharing one batched denoising call.

`RenderWorker` is the Ray actor body (the model loaded once); `RowRenderer` takes one row through
its three phases (prepare, stream in a slot, finish); `StreamSlots` are the places in the batched
call (`_segments.SegmentSink` encodes and commits a row's segments). The row's plain data
(`RowTask`; `RowResult`, what a render returns, and `RowTimeline`) and `RenderWorker` import
without torch: the driver of a job uses them, and only the worker processes load the
deep-learning libraries (`RowRenderer` is imported on first use, PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._actor import RenderWorker, build_animator, capture_graphs_at_start
from ._slots import StreamSlots, max_streams, streams_for
from ._task import RowError, RowPart, RowResult, RowTask, RowTimeline

_LAZY = {"RowRenderer": "._row"}

__all__ = [
    "RenderWorker",
    "RowError",
    "RowPart",
    "RowRenderer",
    "RowResult",
    "RowTask",
    "RowTimeline",
    "StreamSlots",
    "build_animator",
    "capture_graphs_at_start",
    "max_streams",
    "streams_for",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._row import RowRenderer
