"""What the driver sends a worker for one row; what comes back is a `RowResult`
(`pipeline/row_result.py`, with the row's `RowTimeline`), the one result type from the worker to
the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..config import FramingConfig
from ..row_result import RowResult, RowTimeline

__all__ = ["RowError", "RowPart", "RowResult", "RowTask", "RowTimeline"]


@dataclass(frozen=True)
class RowPart:
    """One part of a row split over workers (`pipeline/split_rows.py`): output frames
    ``[start, end)`` of the row, rendered from ``overlap`` driving frames earlier.

    Attributes:
        index / count: which part, of how many (0-based).
        start / end: the row's output frames this part renders.
        overlap: driving frames denoised before ``start`` and discarded (docs/cluster.md).
        frames: the row's frame count (the last part ends there).
        row_key: the whole row's key: the part that commits last joins the parts under it.
        keys: every part's key, in order.
        row_id: the manifest row's id (the part's task goes by its own: `split_rows.part_id`);
            the joined row's commit names it.
    """

    index: int
    count: int
    start: int
    end: int
    overlap: int
    frames: int
    row_key: str
    keys: tuple[str, ...]
    row_id: str

    @property
    def last(self) -> bool:
        return self.end >= self.frames

    @property
    def label(self) -> str:
        return f"part {self.index + 1}/{self.count}"


@dataclass(frozen=True)
class RowTask:
    """What the driver sends a worker for one row (plain data: cheap to pickle).

    Attributes:
        row_id: the manifest row's stable id.
        portrait / driving_video / audio: input URIs (local paths or ``s3://``).
        job_uri: the job's output folder (``<output_root>/<job>``).
        row_key: ``<stem>-<hash>`` naming the row's outputs (see :mod:`pipeline.ledger`).
        max_frames: cap on frames (None: the whole driving video).
        seed: noise seed of the row.
        meta: recorded in the row's commit marker (fingerprint, config hash, model revision).
        attempt: 1 for the first try, 2 for the first retry, ...
        framing: how the row's portrait and driving frames are framed (the job's settings).
        portrait_face: the face validation found in the portrait (``[x, y, width, height]``
            in the upright photo's pixels), so the worker need not look again; None: look.
    """

    row_id: str
    portrait: str
    driving_video: str
    audio: str | None
    job_uri: str
    row_key: str
    max_frames: int | None
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    isolate: bool = False  # render without other rows on the same worker (a retry after a crash)
    conditioning_uri: str | None = None  # cache of the driving video's pose/motion (shared by rows)
    framing: FramingConfig = field(default_factory=FramingConfig)
    portrait_face: tuple[float, float, float, float] | None = None
    signals_every_seconds: float = 1.0  # job.signals_every_seconds (0: no signals)
    part: RowPart | None = None  # one part of a split row (its row_key is the part's own)
    # what validation probed (frames after max_frames, exact rate): the worker does not probe again
    frames: int | None = None
    frame_rate: Fraction | None = None


class RowError(Exception):
    """A problem with the row's input; retrying cannot help. The message says what to fix."""
