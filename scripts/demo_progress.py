"""Replay a synthetic 8-row render job through the progress reporters, for a human to look at.

    python scripts/demo_progress.py                      # rich bars in a terminal, about 10 s
    python scripts/demo_progress.py --mode plain         # the log lines CI would show
    python scripts/demo_progress.py --status /tmp/status.json --seconds 20

Two workers render the rows concurrently; one row is found already done (skipped), one fails,
one loses its worker and is retried. Nothing is rendered: the events are made up.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rich.console import Console  # noqa: E402

from pipeline.progress import (  # noqa: E402
    Event,
    JobFinished,
    JobStarted,
    MultiReporter,
    ProgressReporter,
    RowFinished,
    RowProgress,
    RowRetrying,
    RowStarted,
    StatusFile,
    make_reporter,
    summary_table,
)

FRAMES_PER_CHUNK = 4  # the animator emits 4 frames at a time
SKIPPED_ROW, FAILED_ROW, RETRIED_ROW = 2, 5, 3  # 0-based positions of the special rows


def _render_events(
    row_id: str,
    worker: str,
    start: float,
    frames: int,
    fps: float,
    *,
    stop_at: int | None = None,
    attempt: int = 1,
) -> tuple[list[tuple[float, Event]], float]:
    """RowStarted and RowProgress events of one attempt; returns them and the attempt's end."""
    events: list[tuple[float, Event]] = [(start, RowStarted(row_id, frames, worker, attempt))]
    done = 0
    last = frames if stop_at is None else stop_at
    while done < last:
        done = min(done + FRAMES_PER_CHUNK, last)
        elapsed = done / fps
        events.append((start + elapsed, RowProgress(row_id, done, frames, elapsed)))
    return events, start + last / fps


def synthetic_job(
    *, rows: int = 8, workers: int = 2, duration_seconds: float = 10.0, seed: int = 0
) -> list[tuple[float, Event]]:
    """Timed events ``(seconds from start, event)`` of a made-up job, sorted by time."""
    rng = random.Random(seed)
    frame_counts = [rng.randrange(60, 160, FRAMES_PER_CHUNK) for _ in range(rows)]
    work = sum(frame_counts) - frame_counts[SKIPPED_ROW]
    base_fps = work * 1.15 / (workers * duration_seconds)  # 1.15: room for the retried part
    speeds = {f"worker-{n}": base_fps * rng.uniform(0.85, 1.15) for n in range(1, workers + 1)}
    free_at = dict.fromkeys(speeds, 0.0)
    events: list[tuple[float, Event]] = [(0.0, JobStarted("demo-job", rows, skipped_rows=0))]
    for index, frames in enumerate(frame_counts):
        row_id = f"row-{index + 1:02d}-{rng.getrandbits(32):08x}"
        worker = min(free_at, key=free_at.__getitem__)
        start = free_at[worker]
        if index == SKIPPED_ROW:
            events.append((start, RowFinished(row_id, "skipped", error="already committed")))
            continue
        fps = speeds[worker] * rng.uniform(0.9, 1.1)
        attempts = 1
        if index == RETRIED_ROW:
            part, start = _render_events(row_id, worker, start, frames, fps, stop_at=frames // 3)
            events += part
            events.append((start, RowRetrying(row_id, 1, "RayActorError: the worker died")))
            attempts = 2
        stop = frames * 3 // 5 if index == FAILED_ROW else None
        part, end = _render_events(
            row_id, worker, start, frames, fps, stop_at=stop, attempt=attempts
        )
        events += part
        seconds = end - start
        if index == FAILED_ROW:
            error = "RowError: driving video has no decodable frames after 00:00:04.2\n(stream 0)"
            events.append((end, RowFinished(row_id, "failed", stop or 0, seconds, error=error)))
        else:
            output = f"outputs/demo-job/{row_id}.mp4"
            events.append(
                (
                    end,
                    RowFinished(row_id, "done", frames, seconds, output=output, attempts=attempts),
                )
            )
        free_at[worker] = end
    end = max(time for time, _ in events)
    events.append((end, JobFinished("finished", seconds=end)))
    return sorted(events, key=lambda pair: pair[0])


def replay(
    events: list[tuple[float, Event]], reporter: ProgressReporter, *, speed: float = 1.0
) -> None:
    """Hand `events` to `reporter` at their times (`speed` > 1 replays faster)."""
    begin = time.monotonic()
    for at, event in events:
        delay = at / speed - (time.monotonic() - begin)
        if delay > 0:
            time.sleep(delay)
        reporter.handle(event)
    reporter.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["auto", "rich", "plain", "none"], default="auto")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the replay")
    parser.add_argument("--status", type=Path, help="also keep this status.json up to date")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    console = Console(stderr=True)
    reporters: list[ProgressReporter] = [make_reporter(args.mode, console)]
    if args.status:
        reporters.append(StatusFile(args.status))
    events = synthetic_job(duration_seconds=args.seconds)
    replay(events, MultiReporter(reporters))
    finished = [event for _, event in events if isinstance(event, RowFinished)]
    console.print(summary_table([event.result for event in finished]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
