"""A job's story across its runs: which run rendered each output, when, how fast, with what.

A job folder is rendered by one or more runs of the same command (a rerun skips the rows already
committed and renders the rest). ``summary.json`` must describe the outputs as they stand, not
only what the latest run did: after a no-op rerun it still says that 500 videos were rendered,
when and at what speed. This module reads the previous ``summary.json`` (`JobHistory`), tells for
a skipped row who rendered its committed output (`JobHistory.rendered_before`, from the row's
commit marker and the previous summary), keeps the list of runs (`JobHistory.runs_with`), and
says what made this run's outputs (`provenance`).
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .storage import NotFound, Storage, StorageError, join

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
#: packages whose versions make a render reproducible (or explain why it is not)
VERSIONED = ("portrait-render", "torch", "diffusers", "ray", "av", "opencv-python-headless")


def run_id(started_at: float) -> str:
    """A run's id: its start (UTC, to the second) and a random suffix (two runs of one
    process in the same second stay apart)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at)) + f"-{secrets.token_hex(3)}"


def iso_time(moment: float | None) -> str | None:
    """Unix time as ISO-8601 UTC to the second, as the ledger writes commit times (None stays
    None)."""
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass
class JobHistory:
    """What the previous ``summary.json`` of a job folder recorded (empty when there is none).

    Attributes:
        runs: earlier runs, oldest first (``id``, ``started_at``, ``finished_at``, ``state`` and
            that run's counts); a summary written before runs were recorded counts as one run.
        rows: the previous summary's rows by id.
    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, storage: Storage, job_uri: str) -> JobHistory:
        """Read ``<job_uri>/summary.json``; an absent or unreadable one is an empty history."""
        uri = join(job_uri, SUMMARY_NAME)
        try:
            document = json.loads(storage.read_bytes(uri))
        except NotFound:
            return cls()
        except (StorageError, OSError, ValueError) as err:
            logger.warning(
                "could not read the previous %s (%s): the job's history starts here", uri, err
            )
            return cls()
        if not isinstance(document, dict):
            return cls()
        rows = {
            str(row["row_id"]): row
            for row in document.get("rows") or ()
            if isinstance(row, dict) and row.get("row_id")
        }
        runs = document.get("runs")
        if not isinstance(runs, list):
            runs = [_legacy_run(document)] if document.get("totals") else []
        return cls(runs=[run for run in runs if isinstance(run, dict)], rows=rows)

    def rendered_before(self, row_id: str, commit: dict[str, Any]) -> dict[str, Any]:
        """Who rendered the committed output of a row this run skips: its commit marker (run,
        time, frames, worker, render seconds), completed from the previous summary's entry for
        the same output (markers written before render times were recorded lack them)."""
        previous = self.rows.get(row_id) or {}
        same_output = previous.get("output") == commit.get("video")
        earlier = previous.get("rendered") if same_output else None
        # the run that made this commit already told its story: keep its own numbers (the
        # marker's render_seconds ends at the commit, the run's at the row's finish)
        made_by = commit.get("run_id")
        if isinstance(earlier, dict) and made_by is not None and earlier.get("run") == made_by:
            return earlier
        frames = int(commit.get("frames") or 0)
        seconds = commit.get("render_seconds")
        started_at = commit.get("render_started_at")
        worker = commit.get("worker")
        if seconds is None and same_output and previous.get("status") == "done":
            seconds, started_at = previous.get("seconds"), previous.get("started_at")
            worker = worker or previous.get("worker")
        return {
            "run": commit.get("run_id"),
            "at": commit.get("committed_at"),
            "frames": frames,
            "seconds": seconds,
            "fps": round(frames / seconds, 2) if seconds else None,
            "worker": worker,
            "started_at": started_at,
        }

    def carried(self, row_id: str, output: str | None) -> dict[str, Any]:
        """What the previous summary measured on a committed output that a skipped row keeps
        (its identity and motion signals), when it is the same output."""
        previous = self.rows.get(row_id) or {}
        if not output or previous.get("output") != output:
            return {}
        return {"signals": previous.get("signals")} if previous.get("signals") else {}

    def runs_with(self, this_run: dict[str, Any]) -> list[dict[str, Any]]:
        """The earlier runs, then this one."""
        return [*self.runs, this_run]


def _legacy_run(document: dict[str, Any]) -> dict[str, Any]:
    """One run entry from a summary written before runs were recorded."""
    totals = document.get("totals") or {}
    started = (document.get("startup") or {}).get("started_at")
    return {
        "id": None,
        "started_at": iso_time(started) if isinstance(started, (int, float)) else None,
        "finished_at": None,
        "state": None,
        **{k: totals.get(k) for k in ("done", "failed", "skipped", "quarantined", "interrupted")},
        "frames": totals.get("frames"),
        "aggregate_fps": totals.get("aggregate_fps"),
    }


def run_entry(
    identity: str,
    started_at: float,
    finished_at: float,
    state: str,
    totals: dict[str, Any],
) -> dict[str, Any]:
    """This run as the history lists it: when, how it ended, what it did."""
    return {
        "id": identity,
        "started_at": iso_time(started_at),
        "finished_at": iso_time(finished_at),
        "state": state,
        "wall_seconds": round(finished_at - started_at, 3),
        **{
            k: totals.get(k, 0) for k in ("done", "failed", "skipped", "quarantined", "interrupted")
        },
        "frames": totals.get("frames", 0),
        "aggregate_fps": totals.get("aggregate_fps"),
    }


def provenance(settings: Any, weights_revision: str, choices: dict[str, str]) -> dict[str, Any]:
    """What made this run's outputs: the model and its weights, the config groups chosen (the
    preset), the video and framing settings, package versions, host and command line."""
    model, video, framing = settings.model, settings.video, settings.framing
    return {
        "model": model.name,
        "architecture": model.architecture,
        "dtype": model.dtype,
        "fp8": model.fp8,
        "resolution": model.resolution,
        "weights_revision": weights_revision,
        "random_init": model.random_init,
        "streams_per_worker": model.streams_per_worker,
        "preset": choices.get("preset"),
        "config_groups": choices,
        "video": {k: getattr(video, k) for k in ("codec", "crf", "preset", "pix_fmt", "canvas")},
        "framing": {"portrait": framing.portrait, "driving": framing.driving},
        "versions": {"python": platform.python_version(), **_versions()},
        "host": socket.gethostname(),
        "command": shlex.join(["python", *sys.argv]),
        "config": "config.yaml",
    }


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
