"""What the driver sends a worker for one row, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..config import FramingConfig


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
    """

    index: int
    count: int
    start: int
    end: int
    overlap: int
    frames: int
    row_key: str
    keys: tuple[str, ...]

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


@dataclass
class RowTimeline:
    """When a row passed each point on its worker (Unix times; None: it never got there).

    A worker prepares rows ahead of its stream slots, so a row is accepted before it streams,
    and it finishes (last segment, join, audio, commit) after its slot went to the next row.
    The report draws these as bars, one lane per worker slot.
    """

    accepted_at: float | None = None  # the worker took the row and began preparing it
    prepared_at: float | None = None  # ready for its first call (it then waits for a slot)
    streaming_at: float | None = None  # it took stream slot `slot` (its first denoising call next)
    first_frame_at: float | None = None  # its first output frame left the animator
    first_commit_at: float | None = None  # its first segment was committed (a resume point)
    released_at: float | None = None  # its last frame was out: the slot was free again
    finished_at: float | None = None  # the row was committed (or failed)
    slot: int | None = None  # which of the worker's stream slots it held

    def as_dict(self) -> dict[str, Any]:
        """The points it passed (times to the millisecond) and its slot."""
        return {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in vars(self).items()
            if value is not None
        }


@dataclass(frozen=True)
class RowOutcome:
    """The verdict on one row.

    ``status`` is "done" or "failed"; ``retryable`` marks failures worth another attempt
    (transient storage errors); ``error`` is one line a user can act on, ``detail`` the traceback
    of an unexpected failure. ``seconds`` runs from the row's first denoising call (it took a
    stream slot) to its commit; ``started_at`` is that first moment, in Unix time.
    """

    row_id: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None
    retryable: bool = False
    detail: str | None = None
    has_audio: bool = False
    worker: str = ""
    started_at: float = 0.0  # wall clock (Unix time) when the worker began the row; 0 if unknown
    timeline: RowTimeline | None = None
    framing: dict[str, Any] | None = None  # where the face was, what was cut (see RowRenderer)
    signals: dict[str, Any] | None = None  # identity/motion over time (docs/signals.md)
    conditioning: str | None = None  # "cached" | "computed": the driving pose/motion's source
    joined: bool = False  # a part whose worker joined every part into the row's video
    parts: list[dict[str, Any]] | None = None  # a split row's parts (the driver fills it)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class RowError(Exception):
    """A problem with the row's input; retrying cannot help. The message says what to fix."""
