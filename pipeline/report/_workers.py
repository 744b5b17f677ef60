"""The worker pool over the job as the page's Workers panel shows it: each worker's node, when it
joined, was ready and left (and why), what it rendered; a worker that joined after the job
started or left before it ended is marked (``summary.json`` → ``workers``, `WorkerRoster`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..progress import format_duration
from ._summary import JobRun
from ._values import as_mapping, as_text, format_utc, number_or_none, parse_time

#: How much of a Ray node id the table shows (the whole id is the cell's tooltip).
NODE_ID_CHARS = 8


def workers_panel(
    summary: Mapping[str, Any], run: JobRun, rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The panel's table and its one-line summary; None when the summary lists no worker."""
    listed = summary.get("workers")
    entries = [as_mapping(e) for e in listed or [] if as_mapping(e).get("name")]
    if not isinstance(listed, list) or not entries:
        return None
    origin = _job_start(summary, run)
    first_ready = min(
        (t for e in entries if (t := number_or_none(e.get("ready_at"))) is not None), default=None
    )
    rendered = _rendered_by_worker(rows)
    found = []
    for entry in entries:
        late = _joined_late(entry, first_ready)
        early = _left_early(entry, run)
        name = as_text(entry.get("name"))
        found.append(
            {
                "name": name,
                "node": _node(entry),
                "node_id": as_text(entry.get("node")),
                "joined": _moment(entry.get("joined_at"), origin),
                "ready": _moment(entry.get("ready_at"), origin),
                "left": _moment(entry.get("left_at"), origin),
                "reason": as_text(entry.get("reason")),
                "rendered": _rendered_text(rendered[name]),
                "late": late,
                "early": early,
            }
        )
    return {"entries": found, "note": _note(found)}


def _job_start(summary: Mapping[str, Any], run: JobRun) -> datetime | None:
    """When the job started: the timeline's origin (``startup.started_at``), else this run's."""
    return parse_time(as_mapping(summary.get("startup")).get("started_at")) or run.started_at


def _joined_late(entry: Mapping[str, Any], first_ready: float | None) -> bool:
    """Joined after the job started: as the entry says (``at_start``), else it joined after the
    first worker was ready (the workers a job starts with all join before any is ready)."""
    if isinstance(entry.get("at_start"), bool):
        return not entry["at_start"]
    joined = number_or_none(entry.get("joined_at"))
    return joined is not None and first_ready is not None and joined > first_ready


def _left_early(entry: Mapping[str, Any], run: JobRun) -> bool:
    """Left the pool before the job ended (a worker is only recorded leaving when it is gone
    for good: its node left, it died too often, or it could not load the model)."""
    left = parse_time(entry.get("left_at"))
    if left is None:
        return entry.get("state") == "left"
    return run.finished_at is None or left < run.finished_at


def _node(entry: Mapping[str, Any]) -> str:
    """The node as the table shows it: its address and the start of its Ray id."""
    said = [as_text(entry.get("node_ip")), as_text(entry.get("node"))[:NODE_ID_CHARS]]
    return " · ".join(part for part in said if part) or "–"


def _moment(value: object, origin: datetime | None) -> dict[str, str] | None:
    """A time as the table shows it: the clock time, how long after the job started, and the
    full UTC time as its tooltip (None when the entry has none)."""
    moment = parse_time(value)
    if moment is None:
        return None
    text = moment.strftime("%H:%M:%S")
    if origin is not None:
        after = (moment - origin).total_seconds()
        text += f" (+{format_duration(after)})" if after >= 0 else ""
    return {"text": text, "title": format_utc(moment)}


def _rendered_by_worker(rows: Sequence[Mapping[str, Any]]) -> defaultdict[str, Counter[str]]:
    """Per worker, the rows and the parts of split rows it rendered (done ones)."""
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        parts = [as_mapping(p) for p in row.get("parts") or [] if as_mapping(p)]
        pieces = [(p, "parts") for p in parts] if parts else [(row, "rows")]
        for piece, kind in pieces:
            if piece.get("status") == "done" and piece.get("worker"):
                counts[str(piece["worker"])][kind] += 1
    return counts


def _rendered_text(count: Counter[str]) -> str:
    """ "5 rows, 2 parts" ("–" when nothing)."""
    said = [
        f"{count[kind]} {kind if count[kind] != 1 else kind[:-1]}"
        for kind in ("rows", "parts")
        if count[kind]
    ]
    return ", ".join(said) or "–"


def _note(found: Sequence[Mapping[str, Any]]) -> str:
    """One line over the table: how many workers, how many came late, how many left early."""
    late = sum(entry["late"] for entry in found)
    early = sum(entry["early"] for entry in found)
    text = f"{len(found)} worker{'s' if len(found) != 1 else ''}"
    if late:
        text += f": {len(found) - late} from the start, {late} joined while the job ran"
    if early:
        text += f"; {early} left before the job ended"
    return text + ". Times: UTC clock (after the job started)."
