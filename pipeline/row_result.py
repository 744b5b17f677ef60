"""One row's result, from the worker that rendered it to ``summary.json`` and the report.

A worker returns a `RowResult` (status, frames, time, output, its `RowTimeline`, framing,
signals; plus what only the driver acts on: ``retryable``, ``detail``, ``has_audio``,
``joined``); the pool makes one for a row it gave up on (quarantined, interrupted); the driver
merges a split row's parts into one (`pipeline/split_rows.py`) and completes it (attempts, times
rounded, who rendered it, the row's inputs and extra columns: `jobs/render.py`);
`progress.RowFinished` carries it to the progress displays; `RowResult.summary_entry` is its row
of ``summary.json``, which the report reads back. Plain data without torch: Ray pickles it from
the worker to the driver.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, get_args

RowStatus = Literal["done", "failed", "skipped", "quarantined", "interrupted"]
ROW_STATUSES: tuple[str, ...] = get_args(RowStatus)

#: A row of ``summary.json``: these fields of `RowResult`, in this order (``parts`` only for a
#: split row). The worker's own fields (``retryable``, ``detail``, ``has_audio``, ``joined``) stay
#: out.
SUMMARY_FIELDS = (
    "row_id", "status", "frames", "seconds", "fps", "error", "output", "attempts", "worker",
    "started_at", "timeline", "framing", "inputs", "extra", "conditioning", "rendered", "signals",
    "parts",
)  # fmt: skip


@dataclass
class RowTimeline:
    """When a row passed each point on its worker (Unix times; None: it never got there).

    A worker prepares rows ahead of its stream slots, so a row is accepted before it streams,
    and it finishes (last segment, join, audio, commit) after its slot went to the next row.
    The report draws these as bars, one lane per worker slot.
    """

    accepted_at: float | None = None  # the worker took the row and began preparing it
    fused_at: float | None = None  # its portrait fused on the GPU preparation thread (or restored)
    prepared_at: float | None = None  # ready for its first call (it then waits for a slot)
    streaming_at: float | None = None  # it took stream slot `slot` (its first denoising call next)
    first_frame_at: float | None = None  # its first output frame left the animator
    first_commit_at: float | None = None  # its first segment was committed (a resume point)
    released_at: float | None = None  # its last frame was out: the slot was free again
    encoded_at: float | None = None  # its last segment encoded and committed
    committed_at: float | None = None  # segments joined, audio muxed, the row committed
    finished_at: float | None = None  # the row's verdict (after its signals; or it failed)
    slot: int | None = None  # which of the worker's stream slots it held

    def as_dict(self) -> dict[str, Any]:
        """The points it passed (times to the millisecond) and its slot."""
        return {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in vars(self).items()
            if value is not None
        }


@dataclass(frozen=True)
class RowResult:
    """The result of one row.

    ``status``: a worker says "done" or "failed", the pool "quarantined" or "interrupted", the
    plan "skipped" (committed by an earlier run). ``error`` is what a user can act on, in full
    (summary tables show its first line). ``seconds`` runs from the row's first denoising call
    (it took a stream slot) to its commit; ``started_at`` is that first moment (Unix time; None:
    not rendered). ``fps`` left out (None) is ``frames / seconds``; whoever changes ``frames`` or
    ``seconds`` of a result with `dataclasses.replace` gives ``fps`` again.
    """

    row_id: str
    status: RowStatus
    frames: int = 0
    seconds: float = 0.0
    fps: float | None = None  # None: frames / seconds (0 without seconds)
    error: str | None = None
    output: str | None = None  # the committed video's URI
    attempts: int = 1
    worker: str = ""  # the worker that rendered it (last attempt; a split row's: all of them)
    started_at: float | None = None
    timeline: RowTimeline | None = None
    # framing: where the portrait's face was ("face": [x, y, w, h]), the square cut around it
    # ("square": [x, y, side]), the canvas, and driving frames cut without a face
    framing: dict[str, Any] | None = None
    inputs: dict[str, str | None] | None = None  # portrait, driving_video, audio (resolved URIs)
    extra: dict[str, str] | None = None  # the manifest's extra columns for this row, as text
    conditioning: str | None = None  # "cached" | "computed": the driving clip's pose and motion
    # who made the committed output: run id, commit time, its seconds, fps, frames, worker; for a
    # row skipped in this run, the earlier run's (this run's own seconds and fps stay 0)
    rendered: dict[str, Any] | None = None
    signals: dict[str, Any] | None = None  # identity and motion over the output (docs/signals.md)
    # a row split over workers: each part's frames [start, end), overlap, worker, seconds, fps
    parts: list[dict[str, Any]] | None = None
    # ---- the worker's word to the driver (not in summary.json)
    retryable: bool = False  # a failure worth another attempt (transient storage errors)
    detail: str | None = None  # the traceback of an unexpected failure
    has_audio: bool = False  # the committed video has a sound track
    joined: bool = False  # a part whose worker joined every part into the row's video

    def __post_init__(self) -> None:
        if self.fps is None:
            fps = self.frames / self.seconds if self.seconds > 0 else 0.0
            object.__setattr__(self, "fps", fps)

    def summary_entry(self) -> dict[str, Any]:
        """The row as ``summary.json`` lists it (`SUMMARY_FIELDS`; a copy, JSON values only)."""
        entry = {name: copy.deepcopy(getattr(self, name)) for name in SUMMARY_FIELDS}
        entry["timeline"] = self.timeline.as_dict() if self.timeline is not None else None
        if entry["parts"] is None:
            del entry["parts"]
        return entry
