"""Progress of a render job: events in; rich bars, log lines, ``status.json`` and summaries out.

The driver turns worker callbacks into small frozen *events* (`JobStarted`, `RowAccepted`,
`RowStarted`, `RowProgress`, `RowRetrying`, `RowFinished`, `JobFinished`, and from the worker
pool `WorkerJoined`, `WorkerReady`, `WorkerLeft`) and hands each to a `ProgressReporter`:

- `RichProgress`: an overall bar over rows and one bar per active row (frames, fps, ETA);
- `PlainProgress`: structured ``key=value`` log lines for CI and other non-terminals;
- `StatusFile`: ``status.json``, rewritten atomically at most about once a second;
- `MultiReporter`: fans events out to several reporters.

`make_reporter` picks the display from ``job.progress`` ("auto", "rich", "plain", "none").
Rates and ETAs are computed from the events' own ``elapsed_seconds``, never from the
driver's clock, so the same events always give the same numbers. A `RowFinished` carries the
row's `RowResult` (`pipeline/row_result.py`, imported here for the summary's readers too):
`summary_table` and `write_summary_json` show and write those results.

Reporters are not thread-safe: feed them from one thread (the driver loop).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, get_args

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from .row_result import ROW_STATUSES, RowResult, RowStatus

logger = logging.getLogger(__name__)

JobState = Literal["finished", "failed", "interrupted"]
ProgressMode = Literal["auto", "rich", "plain", "none"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
PROGRESS_MODES: tuple[str, ...] = get_args(ProgressMode)

WriteBytes = Callable[[str, bytes], None]
Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class JobStarted:
    """A job begins: `total_rows` rows in the manifest, `skipped_rows` of them already done."""

    job_name: str
    total_rows: int
    skipped_rows: int = 0

    def __post_init__(self) -> None:
        _require(
            0 <= self.skipped_rows <= self.total_rows,
            f"{self.skipped_rows = } must lie in [0, total_rows={self.total_rows}]",
        )


@dataclass(frozen=True)
class RowAccepted:
    """A worker took a row and prepares it (probe, portrait, first chunks) until a stream slot
    is free; the row then starts (`RowStarted`). A worker that dies had this row running."""

    row_id: str
    worker: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class RowReleased:
    """A row's last frame is out and its stream slot went to the next row; it now finishes (last
    segment, join, mux, commit). The driver's worker pool reads it (a finishing row no longer
    counts against the rows a worker holds, ``cluster.rows_finishing``); displays do not show it."""

    row_id: str
    worker: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class RowStarted:
    """A worker starts (or, with `attempt` > 1, restarts) streaming a row: its first denoising
    call is next."""

    row_id: str
    total_frames: int | None  # None: unknown until the driving video is probed
    worker: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class RowProgress:
    """`frames_done` of `total_frames` output frames are finished, `elapsed_seconds` into the row."""

    row_id: str
    frames_done: int
    total_frames: int | None
    elapsed_seconds: float

    def __post_init__(self) -> None:
        _require(self.frames_done >= 0, f"{self.frames_done = } must be >= 0")
        _require(self.elapsed_seconds >= 0, f"{self.elapsed_seconds = } must be >= 0")


@dataclass(frozen=True)
class RowRetrying:
    """Attempt `attempt` of a row failed with a transient error (or its worker died); it will rerun."""

    row_id: str
    attempt: int
    error: str


@dataclass(frozen=True, init=False)
class RowFinished:
    """A row reached a final state: its `RowResult`, as the summary keeps it.

    The driver sends ``RowFinished(result=...)``; ``RowFinished(row_id, status, frames, seconds,
    error=..., output=..., attempts=...)`` makes a result of just those (demos, tests). What a
    display reads (``row_id``, ``status``, ``frames``, ``seconds``, ``error``: the full text, or
    why skipped; ``output``: the committed video; ``attempts``) is the result's.
    """

    result: RowResult

    def __init__(
        self,
        row_id: str | None = None,
        status: RowStatus | None = None,
        frames: int = 0,
        seconds: float = 0.0,
        error: str | None = None,
        output: str | None = None,
        attempts: int = 1,
        *,
        result: RowResult | None = None,
    ) -> None:
        if result is None:
            if row_id is None or status is None:
                raise TypeError("RowFinished needs a result, or a row id and a status")
            result = RowResult(
                row_id, status, frames, seconds, error=error, output=output, attempts=attempts
            )
        elif row_id is not None or status is not None:
            raise TypeError("RowFinished takes a result or a row id and status, not both")
        object.__setattr__(self, "result", result)
        _require(
            self.status in ROW_STATUSES,
            f"row status {self.status!r} is not one of {', '.join(map(repr, ROW_STATUSES))}",
        )
        _require(self.frames >= 0, f"{self.frames = } must be >= 0")

    @property
    def row_id(self) -> str:
        return self.result.row_id

    @property
    def status(self) -> RowStatus:
        return self.result.status

    @property
    def frames(self) -> int:
        return self.result.frames

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def output(self) -> str | None:
        return self.result.output

    @property
    def attempts(self) -> int:
        return self.result.attempts


@dataclass(frozen=True)
class JobFinished:
    """The job ended (every row finished, it stopped on a failure, or it was interrupted)."""

    state: JobState = "finished"
    seconds: float | None = None  # wall time of the job; None: measured by the reporter

    def __post_init__(self) -> None:
        _require(
            self.state in JOB_STATES,
            f"job state {self.state!r} is not one of {', '.join(map(repr, JOB_STATES))}",
        )


@dataclass(frozen=True)
class WorkerJoined:
    """The pool started a worker on `node` (when the job started, or later on a node that joined
    the cluster); it loads the model next. `at`: Unix time."""

    worker: str
    node: str = ""  # Ray's node id
    node_ip: str = ""
    at: float = 0.0
    at_start: bool = True  # one of the workers the job started with


@dataclass(frozen=True)
class WorkerReady:
    """A worker loaded the model and takes rows."""

    worker: str
    at: float = 0.0
    at_start: bool = True  # one of the workers the job started with


@dataclass(frozen=True)
class WorkerLeft:
    """A worker is gone for good: its node left the cluster, it died more often than Ray restarts
    it, or it could not load the model (`reason`). Its rows in flight went back to the queue."""

    worker: str
    reason: str
    at: float = 0.0


WorkerEvent = WorkerJoined | WorkerReady | WorkerLeft
Event = (
    JobStarted
    | RowAccepted
    | RowStarted
    | RowProgress
    | RowRetrying
    | RowFinished
    | JobFinished
    | WorkerEvent
)


# --------------------------------------------------------------------------------------------
# State shared by the reporters
# --------------------------------------------------------------------------------------------


@dataclass
class FrameRate:
    """Frames per second, smoothed exponentially over about `time_constant_seconds`.

    Fed ``(elapsed_seconds, frames_done)`` samples of one row; the weight of a new sample
    grows with the time since the previous one, so the result does not depend on how often
    progress events arrive.
    """

    time_constant_seconds: float = 5.0
    fps: float | None = None
    _last: tuple[float, int] | None = None

    def update(self, elapsed_seconds: float, frames_done: int) -> float | None:
        """Add a sample; return the smoothed rate (None until two samples are apart in time)."""
        if self._last is None or frames_done < self._last[1]:
            self._last = (elapsed_seconds, frames_done)
            return self.fps
        seconds = elapsed_seconds - self._last[0]
        if seconds <= 0:
            return self.fps
        instant = (frames_done - self._last[1]) / seconds
        if self.fps is None:
            self.fps = instant
        else:
            weight = 1.0 - math.exp(-seconds / self.time_constant_seconds)
            self.fps += weight * (instant - self.fps)
        self._last = (elapsed_seconds, frames_done)
        return self.fps


@dataclass
class ActiveRow:
    """A row a worker is rendering right now."""

    row_id: str
    worker: str
    total_frames: int | None
    attempt: int = 1
    frames_done: int = 0
    elapsed_seconds: float = 0.0
    rate: FrameRate = field(default_factory=FrameRate)

    @property
    def fps(self) -> float | None:
        return self.rate.fps

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None when the total or the rate is unknown)."""
        if self.total_frames is None or not self.fps:
            return None
        return max(self.total_frames - self.frames_done, 0) / self.fps


@dataclass
class WorkerEntry:
    """One worker of the pool over the job: where it ran, its state (joined: loading the model;
    ready: taking rows; left: gone) and when it got there (Unix times)."""

    name: str
    node: str = ""
    node_ip: str = ""
    state: Literal["joined", "ready", "left"] = "joined"
    joined_at: float | None = None
    ready_at: float | None = None
    left_at: float | None = None
    reason: str | None = None  # why it left


class WorkerRoster:
    """The pool's workers as they joined, became ready and left (`status.json` and
    ``summary.json`` → ``workers``). A reporter itself, so the driver can keep one for the summary."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerEntry] = {}

    def __bool__(self) -> bool:
        return bool(self.workers)

    def handle(self, event: Event) -> None:
        """Record a worker event (other events are ignored)."""
        if isinstance(event, WorkerJoined):
            self.workers[event.worker] = WorkerEntry(
                event.worker, event.node, event.node_ip, joined_at=_round(event.at, 3)
            )
            return
        if not isinstance(event, (WorkerReady, WorkerLeft)):
            return
        entry = self.workers.setdefault(event.worker, WorkerEntry(event.worker))
        if isinstance(event, WorkerReady):
            entry.state, entry.ready_at = "ready", _round(event.at, 3)
        else:
            entry.state, entry.left_at, entry.reason = "left", _round(event.at, 3), event.reason

    def entries(self) -> list[dict[str, Any]]:
        """Every worker so far, in the order they joined."""
        return [asdict(entry) for entry in self.workers.values()]

    def close(self) -> None:
        """Nothing to release."""


class JobTracker:
    """Folds events into the job's state: counts, active rows, results, rates and ETA."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.job_name = ""
        self.total_rows = 0
        self.skipped_at_start = 0
        self.counts: dict[str, int] = dict.fromkeys(ROW_STATUSES, 0)
        self.active: dict[str, ActiveRow] = {}
        self.results: list[RowResult] = []
        self.retries = 0
        self.state: Literal["pending", "running"] | JobState = "pending"
        self.started_at: float | None = None
        self.job_seconds: float | None = None
        self.peak_active = 0
        self.workers = WorkerRoster()

    def handle(self, event: Event) -> None:
        """Update the state with one event."""
        self.workers.handle(event)
        if isinstance(event, JobStarted):
            self.job_name, self.total_rows = event.job_name, event.total_rows
            self.skipped_at_start = event.skipped_rows
            self.counts["skipped"] += event.skipped_rows
            self.state, self.started_at = "running", self.clock()
        elif isinstance(event, RowStarted):
            self.active[event.row_id] = ActiveRow(
                event.row_id, event.worker, event.total_frames, attempt=event.attempt
            )
            self.active[event.row_id].rate.update(0.0, 0)
            self.peak_active = max(self.peak_active, len(self.active))
        elif isinstance(event, RowProgress):
            self._progress(event)
        elif isinstance(event, RowRetrying):
            self.retries += 1
            self.active.pop(event.row_id, None)
        elif isinstance(event, RowFinished):
            self.active.pop(event.row_id, None)
            self.counts[event.status] += 1
            self.results.append(event.result)
        elif isinstance(event, JobFinished):
            self.state = event.state
            self.job_seconds = event.seconds if event.seconds is not None else self.elapsed_seconds
            self.active.clear()

    def _progress(self, event: RowProgress) -> None:
        row = self.active.get(event.row_id)
        if row is None:  # progress without a start (events can race): start it implicitly
            row = self.active[event.row_id] = ActiveRow(event.row_id, "", event.total_frames)
            self.peak_active = max(self.peak_active, len(self.active))
        if event.total_frames is not None:
            row.total_frames = event.total_frames
        row.frames_done, row.elapsed_seconds = event.frames_done, event.elapsed_seconds
        row.rate.update(event.elapsed_seconds, event.frames_done)

    @property
    def completed_rows(self) -> int:
        """Rows in a final state, including those skipped at the start."""
        return sum(self.counts.values())

    @property
    def pending_rows(self) -> int:
        return max(self.total_rows - self.completed_rows - len(self.active), 0)

    @property
    def failures(self) -> int:
        return self.counts["failed"] + self.counts["quarantined"]

    @property
    def frames_done(self) -> int:
        """Output frames finished in this run: finished rows plus active rows."""
        return sum(r.frames for r in self.results) + sum(
            r.frames_done for r in self.active.values()
        )

    @property
    def fps(self) -> float | None:
        """Combined rate of the active rows (None when none has a rate yet)."""
        rates = [row.fps for row in self.active.values() if row.fps is not None]
        return sum(rates) if rates else None

    @property
    def elapsed_seconds(self) -> float:
        if self.job_seconds is not None:
            return self.job_seconds
        return 0.0 if self.started_at is None else self.clock() - self.started_at

    def eta_seconds(self) -> float | None:
        """Rough seconds until the job ends (None when there is nothing to base it on).

        Active rows take their own ETA; rows not yet started take the mean time of the rows
        done so far; the sum is shared among as many workers as rows ever ran at once.
        """
        if self.state != "running":
            return 0.0 if self.state in JOB_STATES else None
        times = [r.seconds for r in self.results if r.status == "done" and r.seconds > 0]
        mean_row = sum(times) / len(times) if times else None
        work = 0.0
        for row in self.active.values():
            left = row.eta_seconds
            if left is None and mean_row is not None:
                left = max(mean_row - row.elapsed_seconds, 0.0)
            if left is None:
                return None
            work += left
        if self.pending_rows:
            if mean_row is None:
                return None
            work += self.pending_rows * mean_row
        return work / max(self.peak_active, 1)


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``0:07``, ``12:05``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = round(max(seconds, 0.0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_fps(fps: float | None) -> str:
    return "– fps" if fps is None else f"{fps:.1f} fps"


def first_line(text: str | None, limit: int = 80) -> str:
    """The first non-empty line of `text`, shortened to `limit` characters."""
    if not text:
        return ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _frames_text(done: int, total: int | None) -> str:
    return f"{done}/{total} frames" if total is not None else f"{done} frames"


# --------------------------------------------------------------------------------------------
# Reporters
# --------------------------------------------------------------------------------------------


class ProgressReporter(Protocol):
    """Something that shows or records job progress."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Shows nothing (``job.progress=none``)."""

    def handle(self, event: Event) -> None:
        """Ignore `event`."""

    def close(self) -> None:
        """Nothing to release."""


class MultiReporter:
    """Fans events out to several reporters; one failing reporter never stops the others."""

    def __init__(self, reporters: Iterable[ProgressReporter]) -> None:
        self.reporters: tuple[ProgressReporter, ...] = tuple(reporters)
        self._broken: set[int] = set()

    def handle(self, event: Event) -> None:
        for position, reporter in enumerate(self.reporters):
            self._call(position, reporter, lambda r=reporter: r.handle(event))

    def close(self) -> None:
        for position, reporter in enumerate(self.reporters):
            self._call(position, reporter, reporter.close)

    def _call(self, position: int, reporter: ProgressReporter, call: Callable[[], None]) -> None:
        try:
            call()
        # Progress display is best effort: a broken reporter must not fail the render job.
        except Exception:  # noqa: BLE001
            if position not in self._broken:
                self._broken.add(position)
                logger.warning("progress reporter %r failed", reporter, exc_info=True)


_RESULT_STYLE: dict[str, tuple[str, str]] = {
    "done": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("↷", "dim"),
    "quarantined": ("⚠", "magenta"),
    "interrupted": ("■", "yellow"),
}


def result_line(event: RowFinished) -> str:
    """One line describing a finished row (plain text)."""
    result = event.result
    if event.status == "done":
        text = f"{event.row_id} done: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} fps)"
        return text + (f" → {event.output}" if event.output else "")
    if event.status == "skipped":
        return f"{event.row_id} skipped" + (f" ({first_line(event.error)})" if event.error else "")
    attempts = f" after {event.attempts} attempts" if event.attempts > 1 else ""
    return f"{event.row_id} {event.status}{attempts}: {first_line(event.error, 160) or 'no error message'}"


def worker_line(event: Event) -> str | None:
    """One line for a change of the worker pool after the job started; None for other events and
    for the workers the job starts with (the driver's log announces those)."""
    if isinstance(event, WorkerJoined) and not event.at_start:
        return (
            f"+ {event.worker} joined on node {event.node[:8]} ({event.node_ip}), loading the model"
        )
    if isinstance(event, WorkerReady) and not event.at_start:
        return f"+ {event.worker} ready"
    if isinstance(event, WorkerLeft):
        return f"- {event.worker} left: {first_line(event.reason, 160)}"
    return None


class RichProgress:
    """Rich bars: one over the job's rows, one per active row (frames, fps, ETA).

    A finished row's bar is removed and a one-line result is printed above the bars.

    Args:
        console: where to draw (a terminal; tests pass ``Console(file=StringIO(),
            force_terminal=True, width=...)``).
        auto_refresh: redraw from a background thread about 4 times a second; False redraws
            after every event instead (tests).
        clock: monotonic clock for the job's elapsed time.
    """

    def __init__(
        self, console: Console, *, auto_refresh: bool = True, clock: Clock = time.monotonic
    ) -> None:
        self.console = console
        self.tracker = JobTracker(clock=clock)
        self._auto_refresh = auto_refresh
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]}", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            console=console,
            auto_refresh=auto_refresh,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._overall: TaskID | None = None
        self._rows: dict[str, TaskID] = {}
        self._started = False

    def handle(self, event: Event) -> None:
        """Update the bars for `event`."""
        self.tracker.handle(event)
        if not self._started:
            self._progress.start()
            self._started = True
        if isinstance(event, JobStarted):
            self._overall = self._progress.add_task(
                "", total=max(event.total_rows, 1), count="", rate="", eta=""
            )
        elif isinstance(event, (RowStarted, RowProgress)):
            self._show_row(event.row_id)
        elif isinstance(event, RowRetrying):
            self._remove_row(event.row_id)
            self._print(
                Text(
                    f"↻ {event.row_id} attempt {event.attempt} failed: "
                    f"{first_line(event.error, 160)}; retrying",
                    style="yellow",
                )
            )
        elif isinstance(event, RowFinished):
            self._remove_row(event.row_id)
            mark, style = _RESULT_STYLE[event.status]
            self._print(Text(f"{mark} {result_line(event)}", style=style))
        elif (line := worker_line(event)) is not None:
            self._print(Text(line, style="cyan"))
        self._update_overall()
        if isinstance(event, JobFinished):
            for row_id in list(self._rows):
                self._remove_row(row_id)
            self._update_overall()
            self.close()
            self.console.print(Text(self._final_line(event), style="bold"))
        elif not self._auto_refresh:
            self._progress.refresh()

    def close(self) -> None:
        """Stop drawing (the last frame of the bars stays on screen)."""
        if self._started:
            self._progress.stop()
            self._started = False

    def _print(self, text: Text) -> None:
        """One line above the bars (cut to the console's width, never wrapped)."""
        text.truncate(self.console.width, overflow="ellipsis")
        self.console.print(text, no_wrap=True, overflow="ellipsis")

    def _show_row(self, row_id: str) -> None:
        row = self.tracker.active.get(row_id)
        if row is None:
            return
        fields = {
            "count": _frames_text(row.frames_done, row.total_frames),
            "rate": format_fps(row.fps),
            "eta": f"ETA {format_duration(row.eta_seconds)}",
        }
        description = f"  {escape(row_id)}" + (
            f" [dim]{escape(row.worker)}[/]" if row.worker else ""
        )
        task = self._rows.get(row_id)
        if task is None:
            self._rows[row_id] = self._progress.add_task(
                description, total=row.total_frames, completed=row.frames_done, **fields
            )
            return
        self._progress.update(
            task,
            description=description,
            completed=row.frames_done,
            total=row.total_frames,
            **fields,
        )

    def _remove_row(self, row_id: str) -> None:
        task = self._rows.pop(row_id, None)
        if task is not None:
            self._progress.remove_task(task)

    def _update_overall(self) -> None:
        if self._overall is None:
            return
        state = self.tracker
        description = f"[bold]{escape(state.job_name)}[/] rows"
        if state.failures:
            description += f" [red]({state.failures} failed)[/]"
        self._progress.update(
            self._overall,
            description=description,
            completed=state.completed_rows,
            count=f"{state.completed_rows}/{state.total_rows} rows",
            rate=format_fps(state.fps),
            eta=f"ETA {format_duration(state.eta_seconds())}",
        )

    def _final_line(self, event: JobFinished) -> str:
        state = self.tracker
        counts = ", ".join(f"{state.counts[s]} {s}" for s in ROW_STATUSES if state.counts[s])
        return (
            f"job {state.job_name!r} {event.state}: {counts or 'no rows'}; "
            f"{state.frames_done} frames in {format_duration(state.elapsed_seconds)}"
        )


def _logfmt(**values: object) -> str:
    """``key=value`` pairs; values with spaces, quotes or control characters JSON-quoted."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not text or any(ch in text for ch in ' "=\\') or not text.isprintable():
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class PlainProgress:
    """One ``key=value`` log line per event worth logging (no ANSI codes): for CI and pipes.

    Row starts and finishes are always logged; a progress line per active row at most every
    `interval_seconds` of the row's own elapsed time.
    """

    def __init__(
        self, *, logger: logging.Logger | None = None, interval_seconds: float = 10.0
    ) -> None:
        self.log = logger or logging.getLogger(__name__)
        self.interval_seconds = interval_seconds
        self.tracker = JobTracker()
        self._last_logged: dict[str, float] = {}

    def handle(self, event: Event) -> None:
        """Log `event` if it is worth a line."""
        self.tracker.handle(event)
        state = self.tracker
        if isinstance(event, JobStarted):
            self.log.info(
                "job_started %s",
                _logfmt(job=event.job_name, rows=event.total_rows, skipped=event.skipped_rows),
            )
        elif isinstance(event, RowStarted):
            self._last_logged[event.row_id] = 0.0
            self.log.info(
                "row_started %s",
                _logfmt(
                    row=event.row_id,
                    worker=event.worker or None,
                    total_frames=event.total_frames,
                    attempt=event.attempt if event.attempt > 1 else None,
                ),
            )
        elif isinstance(event, RowProgress):
            self._maybe_log_progress(event)
        elif isinstance(event, RowRetrying):
            self.log.warning(
                "row_retrying %s",
                _logfmt(
                    row=event.row_id, attempt=event.attempt, error=first_line(event.error, 200)
                ),
            )
        elif isinstance(event, RowFinished):
            self._last_logged.pop(event.row_id, None)
            self._log_finished(event)
        elif isinstance(event, WorkerJoined):
            self.log.info(
                "worker_joined %s",
                _logfmt(worker=event.worker, node=event.node, node_ip=event.node_ip or None),
            )
        elif isinstance(event, WorkerReady):
            self.log.info("worker_ready %s", _logfmt(worker=event.worker))
        elif isinstance(event, WorkerLeft):
            self.log.warning(
                "worker_left %s", _logfmt(worker=event.worker, reason=first_line(event.reason, 200))
            )
        elif isinstance(event, JobFinished):
            self.log.info(
                "job_finished %s",
                _logfmt(
                    job=state.job_name,
                    state=event.state,
                    **{status: state.counts[status] for status in ROW_STATUSES},
                    frames=state.frames_done,
                    seconds=float(state.elapsed_seconds),
                ),
            )

    def close(self) -> None:
        """Nothing to release."""

    def _maybe_log_progress(self, event: RowProgress) -> None:
        last = self._last_logged.get(event.row_id, 0.0)
        if event.elapsed_seconds - last < self.interval_seconds:
            return
        self._last_logged[event.row_id] = event.elapsed_seconds
        row = self.tracker.active[event.row_id]
        total = row.total_frames
        self.log.info(
            "row_progress %s",
            _logfmt(
                row=event.row_id,
                frames=f"{row.frames_done}/{total}" if total is not None else row.frames_done,
                percent=round(100 * row.frames_done / total) if total else None,
                fps=row.fps,
                eta=format_duration(row.eta_seconds),
                rows_done=f"{self.tracker.completed_rows}/{self.tracker.total_rows}",
            ),
        )

    def _log_finished(self, event: RowFinished) -> None:
        result = event.result
        level = logging.INFO if event.status in ("done", "skipped") else logging.WARNING
        self.log.log(
            level,
            "row_finished %s",
            _logfmt(
                row=event.row_id,
                status=event.status,
                frames=event.frames,
                seconds=float(event.seconds),
                fps=result.fps,
                attempts=event.attempts if event.attempts > 1 else None,
                output=event.output,
                error=first_line(event.error, 200) if event.error else None,
            ),
        )


# --------------------------------------------------------------------------------------------
# status.json
# --------------------------------------------------------------------------------------------


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to the local file `path` atomically (temp file in the same folder, fsync,
    ``os.replace``): readers see the old file or the new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class StatusFile:
    """Keeps ``status.json`` up to date: rewritten at most every `min_interval_seconds` and at
    the end of the job, always atomically.

    Args:
        path: where to write (a local path, or whatever `write_bytes` understands).
        write_bytes: ``write_bytes(path, data)``; default `write_bytes_atomic` (local files).
        min_interval_seconds: shortest time between two writes (except the final one).
        clock: monotonic clock deciding when to write.
        now: wall clock for ``updated_at`` (UTC).
    """

    max_retry_interval_seconds = 60.0  # longest wait before retrying after failed writes

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        write_bytes: WriteBytes | None = None,
        min_interval_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.path = os.fspath(path)
        self.write_bytes = write_bytes or write_bytes_atomic
        self.min_interval_seconds = min_interval_seconds
        self.clock = clock
        self.now = now
        self.tracker = JobTracker(clock=clock)
        self.writes = 0
        self._next_write_at = -math.inf  # monotonic time of the next periodic write
        self._dirty = False
        self._failed_writes = 0  # in a row; only the first is logged as a warning

    def handle(self, event: Event) -> None:
        """Record `event`; write the file if the last write is old enough or the job ended."""
        self.tracker.handle(event)
        self._dirty = True
        if self.clock() >= self._next_write_at or isinstance(event, JobFinished):
            self.flush()

    def flush(self) -> None:
        """Write the current state now if it changed since the last write.

        A failed write (full disk, unreachable store: any error of `write_bytes`) is logged and
        retried at a later update, backing off up to `max_retry_interval_seconds`; it never
        raises, since the summary, not this file, records the job's results.
        """
        if not self._dirty:
            return
        data = json.dumps(self.snapshot(), indent=2, ensure_ascii=False).encode() + b"\n"
        try:
            self.write_bytes(self.path, data)
        except Exception as err:  # noqa: BLE001 - best effort, see the docstring
            self._write_failed(err)
            return
        if self._failed_writes:
            logger.info("wrote %s again after %d failed attempt(s)", self.path, self._failed_writes)
        self._failed_writes = 0
        self._next_write_at = self.clock() + self.min_interval_seconds
        self._dirty = False
        self.writes += 1

    def _write_failed(self, err: Exception) -> None:
        """Log a failed write (a warning the first time in a row) and schedule the next try."""
        self._failed_writes += 1
        wait = min(
            self.max_retry_interval_seconds,
            self.min_interval_seconds * 2 ** min(self._failed_writes, 16),
        )
        self._next_write_at = self.clock() + wait
        level = logging.WARNING if self._failed_writes == 1 else logging.DEBUG
        logger.log(level, "could not write %s: %s (will retry in %.0f s)", self.path, err, wait)

    def close(self) -> None:
        """Write the final state (if not written yet)."""
        self.flush()

    def snapshot(self) -> dict[str, Any]:
        """The content of ``status.json`` as a dict."""
        state = self.tracker
        return {
            "job": state.job_name,
            "state": state.state if state.state in JOB_STATES else "running",
            "updated_at": self.now().astimezone(timezone.utc).isoformat(timespec="seconds"),
            "elapsed_seconds": _round(state.elapsed_seconds, 1),
            "rows": {
                "total": state.total_rows,
                **{status: state.counts[status] for status in ROW_STATUSES},
                "active": len(state.active),
                "pending": state.pending_rows,
                "retries": state.retries,
            },
            "frames_done": state.frames_done,
            "fps": _round(state.fps),
            "eta_seconds": _round(state.eta_seconds(), 1),
            "active": [
                {
                    "row_id": row.row_id,
                    "worker": row.worker,
                    "attempt": row.attempt,
                    "frames_done": row.frames_done,
                    "total_frames": row.total_frames,
                    "fps": _round(row.fps),
                    "eta_seconds": _round(row.eta_seconds, 1),
                }
                for row in state.active.values()
            ],
            # the pool's workers (name, node, joined / ready / left and when), once it has any
            **({"workers": state.workers.entries()} if state.workers else {}),
        }


class ThroughputSampler:
    """Frames done by the job over time, for the report's fps chart: a sample
    ``{"t": seconds since `started_at`, "frames": frames done}`` at most every
    `interval_seconds` while rows render, and one at the end.

    Args:
        started_at: the moment ``t`` counts from (Unix time).
        interval_seconds: shortest time between two samples.
        now: wall clock (Unix time).
    """

    def __init__(
        self, started_at: float, *, interval_seconds: float = 2.0, now: Clock = time.time
    ) -> None:
        self.started_at = started_at
        self.interval_seconds = interval_seconds
        self.now = now
        self.tracker = JobTracker(clock=now)
        self.samples: list[dict[str, float | int]] = []
        self._last: float | None = None

    def handle(self, event: Event) -> None:
        self.tracker.handle(event)
        if isinstance(event, (RowProgress, RowFinished, JobFinished)):
            moment = self.now()
            final = isinstance(event, JobFinished)
            if final or self._last is None or moment - self._last >= self.interval_seconds:
                self._sample(moment)

    def _sample(self, moment: float) -> None:
        self._last = moment
        sample = {"t": round(moment - self.started_at, 2), "frames": self.tracker.frames_done}
        if self.samples and self.samples[-1]["t"] == sample["t"]:
            self.samples[-1] = sample
        else:
            self.samples.append(sample)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Choosing a reporter
# --------------------------------------------------------------------------------------------


def make_reporter(
    mode: ProgressMode | str = "auto",
    console: Console | None = None,
    *,
    plain_interval_seconds: float = 10.0,
) -> ProgressReporter:
    """The reporter for ``job.progress``.

    Args:
        mode: "auto" (rich bars when `console` is a terminal, log lines otherwise), "rich",
            "plain" or "none".
        console: where rich bars go; default a stderr console.
        plain_interval_seconds: seconds between two progress lines of a row in plain mode.
    """
    if mode not in PROGRESS_MODES:
        raise ValueError(
            f"progress mode {mode!r} is not one of {', '.join(map(repr, PROGRESS_MODES))} "
            "(job.progress)"
        )
    if mode == "none":
        return NullReporter()
    console = console or Console(stderr=True)
    if mode == "rich" or (mode == "auto" and console.is_terminal):
        return RichProgress(console)
    return PlainProgress(interval_seconds=plain_interval_seconds)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def totals_of(results: Sequence[RowResult]) -> dict[str, Any]:
    """This run's counts per status, frames, row-seconds, mean and aggregate rates."""
    frames = sum(r.frames for r in results)
    seconds = sum(r.seconds for r in results)
    totals = {
        "rows": len(results),
        **{status: sum(r.status == status for r in results) for status in ROW_STATUSES},
        "frames": frames,
        "row_seconds": round(seconds, 3),
        "fps": round(frames / seconds, 3) if seconds > 0 else 0.0,
    }
    # The job's aggregate rate: frames rendered in this run over the span from the first row's
    # start to the last row's end (worker start-up and model loading excluded). This is the
    # figure that grows with the number of workers; "fps" above is the mean per-row rate.
    timed = [r for r in results if r.started_at and r.status == "done"]
    if timed:
        span = max(r.started_at + r.seconds for r in timed) - min(r.started_at for r in timed)
        rendered = sum(r.frames for r in timed)
        totals["span_seconds"] = round(span, 3)
        totals["aggregate_fps"] = round(rendered / span, 3) if span > 0 else 0.0
    return totals


def summary_table(results: Iterable[RowResult], *, title: str | None = "Summary") -> Table:
    """Rows with status, frames, seconds, fps and a one-line error; totals in the caption."""
    results = list(results)
    table = Table(title=title)
    table.add_column("row", no_wrap=True, min_width=16)
    table.add_column("status", no_wrap=True, min_width=11)
    for name in ("frames", "seconds", "fps"):
        table.add_column(name, justify="right", no_wrap=True, min_width=7)
    table.add_column("error")  # wrappable, so it is what shrinks; each cell stays one line
    for result in results:
        table.add_row(
            Text(result.row_id),
            Text(result.status, style=_RESULT_STYLE[result.status][1]),
            str(result.frames),
            f"{result.seconds:.1f}",
            f"{result.fps:.1f}",
            Text(first_line(result.error, 60), no_wrap=True, overflow="ellipsis"),
        )
    totals = totals_of(results)
    counts = ", ".join(f"{totals[s]} {s}" for s in ROW_STATUSES if totals[s])
    rate = ""
    if "aggregate_fps" in totals:  # the job's own rate, rows on several workers overlapping
        rate = f" · {totals['aggregate_fps']:.1f} frames/s over {totals['span_seconds']:.1f} s"
    outputs = output_totals(results)
    standing = ""
    if any(r.rendered for r in results if r.status == "skipped"):  # earlier runs' outputs too
        rendered = f" rendered at {outputs['fps']:.1f} frames/s" if outputs["fps"] else ""
        standing = (
            f" · outputs as they stand: {outputs['committed']} videos, {outputs['frames']} "
            f"frames{rendered}"
        )
    table.caption = (
        f"{totals['rows']} rows: {counts or 'none'} · {totals['frames']} frames in "
        f"{totals['row_seconds']:.1f} row-seconds{rate}{standing} · full errors in summary.json"
    )
    return table


def startup_times(
    results: Sequence[RowResult], started_at: float, **steps: float | None
) -> dict[str, Any]:
    """How long the job took to get going, in seconds after it started (``started_at``, Unix
    time): each of its own ``steps`` (Unix times, e.g. ``workers_ready_at``, reported as
    ``workers_ready_seconds``), the first output frame out of a worker, the first segment
    committed to storage (the first frames a producer can fetch)."""

    def since(moment: float | None) -> float | None:
        return None if moment is None else round(moment - started_at, 3)

    def first(point: str) -> float | None:
        points = [r.timeline.as_dict() for r in results if r.timeline is not None]
        times = [found[point] for found in points if point in found]
        return since(min(times)) if times else None

    return {
        "started_at": round(started_at, 3),
        **{f"{name.removesuffix('_at')}_seconds": since(moment) for name, moment in steps.items()},
        "first_frame_seconds": first("first_frame_at"),
        "first_commit_seconds": first("first_commit_at"),
    }


def output_totals(results: Sequence[RowResult]) -> dict[str, Any]:
    """The job's outputs as they stand, whichever run rendered them: rows with a committed video
    (done in this run or skipped as done before), their frames, and the seconds and rate at
    which they were rendered."""
    committed = [r for r in results if r.status in ("done", "skipped") and r.output]
    frames = sum(r.frames for r in committed)
    seconds = sum(float((r.rendered or {}).get("seconds") or 0.0) for r in committed)
    return {
        "rows": len(results),
        "committed": len(committed),
        "frames": frames,
        "render_seconds": round(seconds, 3),
        "fps": round(frames / seconds, 3) if seconds > 0 else None,
    }


def write_summary_json(
    results: Iterable[RowResult],
    path_or_writer: str | os.PathLike[str] | Callable[[bytes], None],
    *,
    job_name: str | None = None,
    startup: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` (every row's result with its full error text, plus totals).

    Args:
        results: the rows' results.
        path_or_writer: a local path (written atomically) or ``writer(data: bytes)``.
        job_name: recorded as ``"job"``.
        startup: recorded as ``"startup"`` (see :func:`startup_times`).
        sections: more top-level entries (``run``, ``runs``, ``provenance``, ``throughput``,
            ``workers``).

    Returns:
        The written document: ``totals`` counts this run's work, ``outputs`` the job's outputs
        as they stand (`output_totals`).
    """
    results = list(results)
    document = {
        "job": job_name,
        "totals": totals_of(results),
        "outputs": output_totals(results),
        "startup": startup,
        **(sections or {}),
        "rows": [result.summary_entry() for result in results],
    }
    data = json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"
    if callable(path_or_writer):
        path_or_writer(data)
    else:
        write_bytes_atomic(os.fspath(path_or_writer), data)
    return document
