"""The job folder read back: ``summary.json`` (required), ``status.json`` (optional), when and
how the job ran, and the rows in the order the page shows them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..storage import NotFound, Storage, StorageError, join
from ._values import as_mapping, number_or_none, parse_time

# one logger for the package: log lines name ``pipeline.report`` as they did before the split
logger = logging.getLogger(__package__)

#: Display order of the rows: problems first, then the rest in summary order.
STATUS_ORDER = {"failed": 0, "quarantined": 1, "interrupted": 2, "done": 3, "skipped": 4}
FAILURES = ("failed", "quarantined")


class ReportError(ValueError):
    """The job folder has no usable ``summary.json`` (nothing to report on)."""


@dataclass(frozen=True)
class JobRun:
    """When and how the job ran, from ``summary["run"]`` or ``status.json`` (None: unknown)."""

    state: str | None = None  # finished | failed | interrupted | running
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    total_rows: int | None = None  # rows the job set out to do
    run_id: str | None = None


def load_summary(job_folder_uri: str, storage: Storage) -> dict[str, Any]:
    """The job's ``summary.json`` as a dict; `ReportError` if it is missing or not JSON."""
    uri = join(job_folder_uri, "summary.json")
    try:
        document = json.loads(storage.read_bytes(uri))
    except NotFound as err:
        raise ReportError(
            f"{uri} does not exist: the job has not finished (or never ran); a report needs it"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{uri} is not valid JSON ({err}); rerun the job to rewrite it") from err
    if not isinstance(document, dict) or not isinstance(document.get("rows", []), list):
        raise ReportError(f"{uri} is not a job summary (expected an object with a 'rows' list)")
    return document


def load_json(uri: str, storage: Storage) -> dict[str, Any] | None:
    """An optional JSON object (None when missing or unreadable: the report is built anyway)."""
    try:
        document = json.loads(storage.read_bytes(uri))
    except NotFound:
        return None
    except (StorageError, json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("report: ignoring %s: %s", uri, err)
        return None
    return document if isinstance(document, dict) else None


def job_run(summary: Mapping[str, Any], status: Mapping[str, Any] | None) -> JobRun:
    """When the job ran: ``summary["run"]`` first (this run's own record), else ``status.json``
    (its end time and elapsed seconds); the live state always from ``status.json``."""
    status = status or {}
    this_run = as_mapping(summary.get("run"))
    finished_at = parse_time(this_run.get("finished_at")) or parse_time(status.get("updated_at"))
    wall = number_or_none(this_run.get("wall_seconds"))
    if wall is None:
        wall = number_or_none(status.get("elapsed_seconds"))
    started_at = parse_time(this_run.get("started_at"))
    if started_at is None and finished_at and wall:
        started_at = finished_at - timedelta(seconds=wall)
    total = as_mapping(status.get("rows")).get("total")
    state = status.get("state") or this_run.get("state")
    return JobRun(
        state=str(state) if state else None,
        started_at=started_at,
        finished_at=finished_at,
        wall_seconds=wall,
        total_rows=total if isinstance(total, int) else None,
        run_id=str(this_run["id"]) if this_run.get("id") else None,
    )


def rows_in_display_order(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Row dicts, failed and quarantined first (stable: summary order within a status)."""
    valid = [dict(row) for row in rows if isinstance(row, Mapping)]
    return sorted(valid, key=lambda row: STATUS_ORDER.get(str(row.get("status")), 5))
