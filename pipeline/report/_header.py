"""The job as the page's header shows it: the state badge, when it ran, a banner for a job that
has not finished, this run's tiles, the outputs as they stand, the run history and provenance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..progress import ROW_STATUSES, format_duration
from ._summary import FAILURES, JobRun
from ._values import as_mapping, as_text, format_number, format_utc, number_or_none, parse_time

#: The runs table's count columns, in order.
RUN_COUNTS = ("done", "failed", "skipped", "quarantined", "interrupted", "frames")

#: Provenance fields in the order a reader looks for them, with their labels.
_PROVENANCE_LABELS = {
    "model": "model",
    "architecture": "architecture",
    "weights_revision": "weights",
    "random_init": "random weights",
    "dtype": "dtype",
    "resolution": "resolution",
    "preset": "preset",
    "video": "video",
    "framing": "framing",
    "streams_per_worker": "streams per worker",
    "versions": "versions",
    "host": "host",
    "command": "command",
    "config": "config",
}


@dataclass(frozen=True)
class Badge:
    """The job's state as the header's badge: a label and a tone (ok, bad, warn, live)."""

    label: str
    tone: str


def job_badge(run: JobRun, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Badge:
    """The header's badge. A job with failed or quarantined rows is never green: red "finished
    with failures"; interrupted is amber; running blue."""
    totals = as_mapping(summary.get("totals"))
    statuses = Counter(str(row.get("status")) for row in rows)
    failures = sum(max(int(totals.get(s) or 0), statuses[s]) for s in FAILURES)
    interrupted = max(int(totals.get("interrupted") or 0), statuses["interrupted"])
    state = run.state or "finished"
    if state == "running":
        return Badge("running", "live")
    if state == "interrupted":
        return Badge("interrupted" + (" with failures" if failures else ""), "warn")
    if state == "failed":
        return Badge("failed", "bad")
    if failures:
        return Badge("finished with failures", "bad")
    if interrupted:
        return Badge("finished, rows interrupted", "warn")
    return Badge(state, "ok" if state == "finished" else "warn")


def when_it_ran(run: JobRun) -> str:
    if run.started_at and run.finished_at:
        return f"Ran {format_utc(run.started_at)} → {run.finished_at.strftime('%H:%M:%S')} UTC"
    if run.finished_at:
        return f"Last update {format_utc(run.finished_at)}"
    if run.started_at:
        return f"Started {format_utc(run.started_at)}"
    return ""


def unfinished_banner(run: JobRun, rows: int) -> str:
    """A note when the job is still running or stopped before every row had a result."""
    missing = (run.total_rows or 0) - rows
    if run.state in (None, "finished", "failed") and missing <= 0:
        return ""
    what = "is still running" if run.state == "running" else f"was {run.state or 'stopped'}"
    detail = f": {missing} of {run.total_rows} rows have no result yet" if missing > 0 else ""
    return f"This job {what}{detail}. The report shows the rows finished so far."


def tiles(summary: Mapping[str, Any], run: JobRun, rows: int) -> dict[str, Any]:
    """This run's counts (status tiles filter the rows) and figures."""
    totals = as_mapping(summary.get("totals"))
    statuses = [
        {"status": status, "count": format_number(totals.get(status, 0) or 0)}
        for status in ROW_STATUSES
    ]
    stats = [
        (format_number(totals.get("frames")), "frames"),
        (format_duration(run.wall_seconds) if run.wall_seconds is not None else "–", "wall time"),
        (format_duration(totals.get("row_seconds")), "row time"),
        # the job's rate (rows overlapping on several workers count once); older summaries and
        # jobs with no rendered row have only the mean rate per row
        (format_number(totals.get("aggregate_fps", totals.get("fps")), 1), "frames/s"),
    ]
    return {"rows": rows, "statuses": statuses, "stats": stats}


def outputs(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's outputs as they stand (whichever run rendered them), when the summary says."""
    found = as_mapping(summary.get("outputs"))
    if not found:
        return None
    return {
        "committed": format_number(found.get("committed")),
        "rows": format_number(found.get("rows")),
        "frames": format_number(found.get("frames")),
        "render_time": format_duration(number_or_none(found.get("render_seconds"))),
        "fps": format_number(found.get("fps"), 1),
    }


def runs(summary: Mapping[str, Any], run: JobRun) -> list[dict[str, Any]]:
    """The job's history across reruns, oldest first (this run marked)."""
    found = []
    for entry in summary.get("runs") or []:
        entry = as_mapping(entry)
        if not entry:
            continue
        started, finished = (
            parse_time(entry.get("started_at")),
            parse_time(entry.get("finished_at")),
        )
        found.append(
            {
                "id": as_text(entry.get("id")),
                "started": format_utc(started) if started else "–",
                "took": format_duration((finished - started).total_seconds())
                if started and finished
                else "–",
                "state": as_text(entry.get("state")) or "–",
                "counts": [format_number(entry.get(key)) for key in RUN_COUNTS],
                "fps": format_number(entry.get("aggregate_fps"), 1),
                "current": bool(run.run_id) and as_text(entry.get("id")) == run.run_id,
            }
        )
    return found


def provenance(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What produced the outputs: the summary's provenance, plus the rows' conditioning."""
    given = as_mapping(summary.get("provenance"))
    items = []
    for key in [*_PROVENANCE_LABELS, *sorted(k for k in given if k not in _PROVENANCE_LABELS)]:
        if key not in given or given[key] in (None, "", {}, []):
            continue
        value = given[key]
        if isinstance(value, Mapping):
            text = " · ".join(f"{k} {as_text(v)}" for k, v in value.items() if v not in (None, ""))
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = as_text(value)
        items.append({"key": key, "label": _PROVENANCE_LABELS.get(key, key), "text": text})
    conditioning = Counter(str(row["conditioning"]) for row in rows if row.get("conditioning"))
    if conditioning:
        text = ", ".join(f"{count} {how}" for how, count in sorted(conditioning.items()))
        items.append({"key": "conditioning", "label": "driving conditioning", "text": text})
    return {
        "items": items,
        "random_init": given.get("random_init") is True,
        "command": as_text(given.get("command")) or None,
    }
