"""Long rows over many workers: a row cut into parts that render at once, seen as one row.

A row longer than ``cluster.split_frames`` becomes parts (whole 4-frame chunks; of equal length,
or the earlier ones longer by ``cluster.split_start_cost``: `part_spans`), each a
:class:`~pipeline.worker.RowTask` with a :class:`~pipeline.worker.RowPart`: its own key under the
row's (``<row key>/part-02of03``), so it commits and resumes on its own; the worker
that commits the last part joins them (stream copy) and muxes the audio over the whole
(`pipeline/worker/_row.py`). How a part starts as the whole row's stream would be there:
`pipeline/animate/_parts.py`.

:class:`SplitRows` is the driver's view: work goes out longest first (a long row's parts before
short rows, so the job's makespan is not one long row rendered last), the parts' progress is
summed into their row's, and the row gets one verdict when all its parts have one.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .config import ClusterConfig
from .ledger import SEGMENTS_DIR, Ledger
from .progress import RowAccepted, RowProgress, RowRetrying, RowStarted
from .worker import RowPart, RowResult, RowTask, RowTimeline

logger = logging.getLogger(__name__)

LOOKAHEAD = 12  # frames a part reads past its end; a part before the last needs them
CHUNK = 4
#: a part's folder under its row's key (``part-02of03``), and how an earlier run's is read back
PART_FOLDER = "part-{number:02d}of{count:02d}"
_PART_FOLDER = re.compile(r"part-\d+of(\d+)")
#: the shortest part ``cluster.split_to_fill`` cuts: a part after the first pays its overlap and a
#: read of the driving video up to its start, worth it only for a long enough stretch
FILL_MIN_PART = 320


def part_spans(frames: int, split_frames: int, start_cost: float = 0.0) -> list[tuple[int, int]]:
    """``[start, end)`` of each part of a row of ``frames`` frames, in whole chunks: as many parts
    as ``split_frames`` long parts would take; one span when the row is short enough or
    ``split_frames`` is 0.

    A part that starts at frame ``s`` first reads the driving video's frames before ``s`` (its
    keyframe decisions, `pipeline/animate/_parts.py`); ``start_cost`` is that read's time per
    frame as a share of a rendered frame's (``cluster.split_start_cost``). With 0 the parts are
    of equal length (the last takes the rest); else part ``i`` gets ``T - start_cost · s_i``
    frames, so that every part ends at ``T``: the earlier parts are longer.
    """
    if not split_frames or frames <= split_frames:
        return [(0, frames)]
    count = -(-frames // split_frames)
    if start_cost > 0:
        # s_i = T (1 - (1-c)^i) / c, with T such that s_count = frames
        kept = 1 - start_cost
        ends_at = frames * start_cost / (1 - kept**count)
        starts = [round(ends_at * (1 - kept**i) / start_cost / CHUNK) * CHUNK for i in range(count)]
    else:
        length = -(-frames // count // CHUNK) * CHUNK
        starts = list(range(0, frames, length))
    if frames - starts[-1] < LOOKAHEAD + CHUNK:  # the last part must outlast the look-ahead
        starts.pop()
    return [(start, min(frames, nxt)) for start, nxt in zip(starts, starts[1:] + [frames])]


def fill_parts(frames: dict[str, int], slots: int, min_part: int | None = None) -> dict[str, int]:
    """How many parts to cut each row into so that ``slots`` stream slots stay full to the end
    of the job (``cluster.split_to_fill``): a row longer than the job's share of a slot (all
    ``frames`` over ``slots``) would still be rendering alone after the others ended, so it takes
    about one part per share; parts of at least ``min_part`` frames (default
    :data:`FILL_MIN_PART`), at most one per slot. Rows left whole are not listed."""
    if slots < 2 or not frames:
        return {}
    min_part = FILL_MIN_PART if min_part is None else min_part
    share = sum(frames.values()) / slots
    cuts = {}
    for row_id, count in frames.items():
        if count <= share:
            continue
        parts = min(slots, -(-count // max(1, int(share))), count // min_part)
        if parts >= 2:
            cuts[row_id] = parts
    return cuts


def earlier_cut(ledger: Ledger, row_key: str) -> int | None:
    """How an earlier run of the job cut the row ``row_key``: N when it rendered N parts
    (``<row key>/part-..ofNN``), 1 when it rendered it whole (segments of its own), None when
    nothing of it is stored. A rerun keeps that cut, so what was committed is resumed."""
    prefix = ledger.row_uri(row_key).rstrip("/") + "/"
    found: Counter[int] = Counter()
    for uri, _ in ledger.storage.list(prefix):
        first = uri[len(prefix) :].split("/", 1)[0]
        if part := _PART_FOLDER.fullmatch(first):
            found[int(part[1])] += 1
        elif first == SEGMENTS_DIR:
            found[1] += 1
    return found.most_common(1)[0][0] if found else None


def split_task(task: RowTask, frames: int, cfg: ClusterConfig, parts: int = 1) -> list[RowTask]:
    """The row's tasks: itself, or its parts (``cluster.split_frames`` long at most, and at least
    ``parts`` of them)."""
    spans = part_spans(frames, cfg.split_frames, cfg.split_start_cost)
    if parts > len(spans):
        spans = part_spans(frames, -(-frames // parts), cfg.split_start_cost)
    if len(spans) == 1:
        return [task]
    count = len(spans)
    keys = tuple(
        f"{task.row_key}/{PART_FOLDER.format(number=i + 1, count=count)}" for i in range(count)
    )
    return [
        replace(
            task,
            row_key=keys[i],
            part=RowPart(
                index=i,
                count=count,
                start=start,
                end=end,
                overlap=cfg.split_overlap,
                frames=frames,
                row_key=task.row_key,
                keys=keys,
                row_id=task.row_id,
            ),
        )  # fmt: skip
        for i, (start, end) in enumerate(spans)
    ]


def part_id(row_id: str, part: RowPart) -> str:
    """The id a part goes by in the pool (its crashes and retries are its own)."""
    return f"{row_id} [{part.label}]"


@dataclass
class _SplitRow:
    """The driver's record of one split row while its parts render."""

    row_id: str
    frames: int
    parts: dict[str, RowTask]  # part id -> task
    done_frames: dict[str, int] = field(default_factory=dict)  # part id -> frames out
    outcomes: dict[str, tuple[RowResult, int]] = field(default_factory=dict)
    started: float | None = None  # monotonic: its first part took a stream slot
    accepted: bool = False  # a worker took one of its parts


class SplitRows:
    """Cut long rows into parts and give the job back one row per manifest row.

    Args:
        cfg: the cluster settings (``split_frames``, ``split_to_fill``, ``split_overlap``).
        frames: each row's frame count (from validation's probe), by row id.
        ledger: the job's ledger: how an earlier run cut a row (``cluster.split_to_fill``
            keeps it); None: not looked up.
    """

    def __init__(
        self, cfg: ClusterConfig, frames: dict[str, int], ledger: Ledger | None = None
    ) -> None:
        self.cfg = cfg
        self.frames = frames
        self.ledger = ledger
        self.rows: dict[str, _SplitRow] = {}
        self._row_of: dict[str, str] = {}  # part id -> row id

    def tasks(self, tasks: Iterable[RowTask], slots: int = 0) -> list[RowTask]:
        """Every row's tasks (parts under their own ids), longest first unless
        ``cluster.order=manifest``; ``slots``: the stream slots of the job's workers, for
        ``cluster.split_to_fill``."""
        tasks = list(tasks)
        cuts = self._fill_cuts(tasks, slots) if self.cfg.split_to_fill else {}
        out = []
        for task in tasks:
            frames = self.frames.get(task.row_id, 0)
            pieces = split_task(task, frames, self.cfg, cuts.get(task.row_id, 1))
            if len(pieces) == 1:
                out.append(task)
                continue
            parts = {}
            for piece in pieces:
                pid = part_id(task.row_id, piece.part)
                parts[pid] = replace(piece, row_id=pid)
                self._row_of[pid] = task.row_id
            self.rows[task.row_id] = _SplitRow(task.row_id, frames, parts)
            out.extend(parts.values())
        if self.cfg.order == "manifest":
            return out
        return sorted(out, key=self._length, reverse=True)  # stable: ties keep manifest order

    def _fill_cuts(self, tasks: list[RowTask], slots: int) -> dict[str, int]:
        """``fill_parts`` of the rows to render, except where an earlier run cut a row
        otherwise: that cut is kept (a row it rendered whole is left whole)."""
        cuts = fill_parts({t.row_id: self.frames.get(t.row_id, 0) for t in tasks}, slots)
        if self.ledger is None:
            return cuts
        for task in tasks:  # only rows long enough to have been cut are looked up
            if self.frames.get(task.row_id, 0) < 2 * FILL_MIN_PART and task.row_id not in cuts:
                continue
            earlier = earlier_cut(self.ledger, task.row_key)
            now = cuts.get(task.row_id, 1)
            if earlier is not None and earlier != now:
                logger.info(
                    "row %s: cut as an earlier run of the job cut it, %d part(s) (not %d), "
                    "so what it committed is resumed", task.row_id, earlier, now,
                )  # fmt: skip
                cuts[task.row_id] = earlier
        return cuts

    def _length(self, task: RowTask) -> int:
        if task.part is not None:
            return task.part.end - task.part.start
        return self.frames.get(task.row_id, 0)

    def row_of(self, task_id: str) -> str:
        """The manifest row a task id belongs to."""
        return self._row_of.get(task_id, task_id)

    # ------------------------------------------------------------------ progress

    def event(self, event: Any) -> Any | None:
        """A worker's event as the row's (None: nothing to show for it)."""
        row_id = self._row_of.get(getattr(event, "row_id", ""))
        if row_id is None:
            return event
        row = self.rows[row_id]
        if isinstance(event, RowAccepted):
            if row.accepted:
                return None
            row.accepted = True
            return replace(event, row_id=row_id)
        if isinstance(event, RowStarted):
            row.done_frames.setdefault(event.row_id, 0)
            if row.started is not None:
                return None
            row.started = time.monotonic()
            return replace(event, row_id=row_id, total_frames=row.frames)
        if isinstance(event, RowProgress):
            row.done_frames[event.row_id] = event.frames_done
            elapsed = time.monotonic() - (row.started or time.monotonic())
            return RowProgress(row_id, sum(row.done_frames.values()), row.frames, elapsed)
        if isinstance(event, RowRetrying):
            part = row.parts[event.row_id].part
            return replace(event, row_id=row_id, error=f"{part.label}: {event.error}")
        return event

    # ------------------------------------------------------------------ verdicts

    def outcome(self, outcome: RowResult, attempts: int) -> tuple[RowResult, int] | None:
        """The row's result once every part has one (None until then); other rows' pass."""
        row_id = self._row_of.get(outcome.row_id)
        if row_id is None:
            return outcome, attempts
        row = self.rows[row_id]
        row.outcomes[outcome.row_id] = (outcome, attempts)
        if len(row.outcomes) < len(row.parts):
            return None
        return _combined(row), max(a for _, a in row.outcomes.values())


def _combined(row: _SplitRow) -> RowResult:
    """One result from the parts': done when all are done and one joined them; else the first
    part's failure (or interruption) under the row's id."""
    ordered = [(row.parts[pid].part, *row.outcomes[pid]) for pid in row.parts]
    outcomes = [outcome for _, outcome, _ in ordered]
    joined = next((o for o in outcomes if o.joined and o.output), None)
    parts = [_part_summary(part, outcome) for part, outcome, _ in ordered]
    timelines = [o.timeline for o in outcomes if o.timeline is not None]
    common = {
        "worker": ", ".join(dict.fromkeys(o.worker for o in outcomes if o.worker)),
        "started_at": min((o.started_at for o in outcomes if o.started_at), default=None),
        "timeline": _span(timelines),
        "parts": parts,
        "framing": outcomes[0].framing,
        "conditioning": outcomes[0].conditioning,
        "signals": _merged_signals([o.signals for o in outcomes]),
    }
    started = common["started_at"] or 0.0
    seconds = max((o.started_at or 0.0) + o.seconds for o in outcomes) - started
    if all(o.status == "done" for o in outcomes) and joined is not None:
        return RowResult(
            row.row_id, "done", frames=row.frames, seconds=max(0.0, seconds),
            output=joined.output, has_audio=joined.has_audio, **common,
        )  # fmt: skip
    for status in ("quarantined", "failed", "interrupted"):
        for part, outcome, _ in ordered:
            if outcome.status == status:
                return RowResult(
                    row.row_id, status, frames=0, seconds=max(0.0, seconds),
                    error=f"{part.label}: {outcome.error}", detail=outcome.detail,
                    retryable=outcome.retryable, **common,
                )  # fmt: skip
    error = "every part was committed but none joined them; rerun the same job to join them"
    return RowResult(row.row_id, "failed", error=error, **common)


def _merged_signals(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The row's signals from its parts' (each the row's samples inside it, in order); None
    when no part has any. A part without signals (not computed, or committed by an earlier
    run) leaves its stretch without samples."""
    present = [signals for signals in parts if signals]
    if not present:
        return None
    merged: dict[str, Any] = {**present[0]}
    for key in ("times", "identity", "motion", "driving_motion"):
        merged[key] = [value for signals in present for value in signals[key]]
    return merged


def _part_summary(part: RowPart, outcome: RowResult) -> dict[str, Any]:
    return {
        "part": part.index, "start": part.start, "end": part.end, "overlap": part.overlap,
        "status": outcome.status, "frames": outcome.frames, "worker": outcome.worker,
        "seconds": round(outcome.seconds, 2), "fps": round(outcome.fps, 2),
        "timeline": outcome.timeline.as_dict() if outcome.timeline else None,
    }  # fmt: skip


def _span(timelines: list[RowTimeline]) -> RowTimeline | None:
    """The row's timeline over its parts: the first of each start, the last of each end."""
    if not timelines:
        return None
    ends = ("released_at", "encoded_at", "committed_at", "finished_at")
    points = {}
    for name in ("accepted_at", "fused_at", "prepared_at", "streaming_at", "first_frame_at",
                 "first_commit_at", *ends):  # fmt: skip
        values = [getattr(t, name) for t in timelines if getattr(t, name) is not None]
        points[name] = (max if name in ends else min)(values) if values else None
    return RowTimeline(**points, slot=timelines[0].slot)
