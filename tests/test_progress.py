"""Tests for pipeline.progress: synthetic events in, rendered text / log records / JSON out."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pipeline.progress import (
    Event,
    FrameRate,
    JobFinished,
    JobStarted,
    JobTracker,
    MultiReporter,
    NullReporter,
    PlainProgress,
    RichProgress,
    RowFinished,
    RowProgress,
    RowResult,
    RowRetrying,
    RowStarted,
    StatusFile,
    ThroughputSampler,
    format_duration,
    make_reporter,
    summary_table,
    write_bytes_atomic,
    write_summary_json,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_ERROR = (
    "ValueError: [bold]portrait has no face[/bold] "
    + "x" * 100
    + "\nTraceback (most recent call last):\n  ..."
)

# A job of 4 rows: 1 skipped up front, row-a done, row-b retried then failed, row-c done.
EVENTS: list[Event] = [
    JobStarted("demo", total_rows=4, skipped_rows=1),
    RowStarted("row-a", 100, "w1"),
    RowStarted("row-b", None, "w2"),
    RowProgress("row-a", 20, 100, 1.0),
    RowProgress("row-a", 40, 100, 2.0),
    RowProgress("row-b", 10, 50, 1.0),
    RowFinished("row-a", "done", 100, 4.0, output="out/row-a.mp4"),
    RowRetrying("row-b", 1, "RayActorError: worker died\nmore"),
    RowStarted("row-b", 50, "w1", attempt=2),
    RowProgress("row-b", 25, 50, 1.0),
    RowStarted("row-c", 40, "w2"),
    RowProgress("row-c", 40, 40, 2.0),
    RowFinished("row-c", "done", 40, 2.0),
    RowFinished("row-b", "failed", 25, 1.5, error=LONG_ERROR, attempts=2),
    JobFinished("finished", seconds=9.0),
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(text: str) -> str:
    return ANSI.sub("", text)


# ------------------------------------------------------------------------------------------
# Events, rates, tracker
# ------------------------------------------------------------------------------------------


def test_events_validate_their_values() -> None:
    with pytest.raises(
        ValueError,
        match="row status 'ok' is not one of 'done', 'failed', 'skipped', 'quarantined', 'interrupted'",
    ):
        RowFinished("r", "ok", 1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"self.skipped_rows = 5 must lie in \[0, total_rows=4\]"):
        JobStarted("j", 4, 5)
    with pytest.raises(ValueError, match=r"self.frames_done = -1 must be >= 0"):
        RowProgress("r", -1, 10, 1.0)
    with pytest.raises(
        ValueError, match="job state 'done' is not one of 'finished', 'failed', 'interrupted'"
    ):
        JobFinished("done")  # type: ignore[arg-type]


def test_frame_rate_is_exact_at_constant_speed_and_smoothed_on_change() -> None:
    rate = FrameRate(time_constant_seconds=5.0)
    assert rate.update(0.0, 0) is None
    for second in range(1, 4):
        assert rate.update(float(second), 20 * second) == pytest.approx(20.0)
    assert rate.update(3.0, 80) == pytest.approx(20.0)  # no time passed: ignored
    expected = 20.0 + (1 - math.exp(-1 / 5)) * (40.0 - 20.0)
    assert rate.update(4.0, 100) == pytest.approx(expected)  # 40 fps for 1 s from 3.0 s


def test_frame_rate_does_not_depend_on_event_frequency() -> None:
    coarse, fine = FrameRate(), FrameRate()
    coarse.update(0.0, 0)
    fine.update(0.0, 0)
    coarse.update(2.0, 40)
    for step in range(1, 5):
        fine.update(step * 0.5, step * 10)
    assert coarse.fps == pytest.approx(fine.fps)


def test_tracker_counts_and_eta() -> None:
    clock = FakeClock()
    tracker = JobTracker(clock=clock)
    for event in EVENTS[:7]:  # up to row-a done
        tracker.handle(event)
    assert tracker.completed_rows == 2  # skipped + row-a
    assert list(tracker.active) == ["row-b"]
    assert tracker.frames_done == 110
    # row-b: 10/50 at 10 fps -> 4 s; row-c not started: mean done row 4 s; 2 workers seen.
    assert tracker.pending_rows == 1
    assert tracker.eta_seconds() == pytest.approx((4.0 + 4.0) / 2)
    for event in EVENTS[7:]:
        tracker.handle(event)
    assert tracker.counts == {
        "done": 2,
        "failed": 1,
        "skipped": 1,
        "quarantined": 0,
        "interrupted": 0,
    }
    assert (tracker.failures, tracker.retries, tracker.state, tracker.eta_seconds()) == (
        1,
        1,
        "finished",
        0.0,
    )
    assert [r.row_id for r in tracker.results] == ["row-a", "row-c", "row-b"]


# ------------------------------------------------------------------------------------------
# RichProgress
# ------------------------------------------------------------------------------------------


def rich_run(events: list[Event], width: int = 110) -> tuple[RichProgress, str]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width, color_system="truecolor")
    reporter = RichProgress(console, auto_refresh=False, clock=FakeClock())
    for event in events:
        reporter.handle(event)
    reporter.close()
    return reporter, buffer.getvalue()


def test_rich_progress_draws_rows_fps_eta_and_result_lines() -> None:
    reporter, raw = rich_run(EVENTS)
    assert "\x1b[" in raw  # a terminal display
    text = plain(raw)
    assert "demo rows" in text and "1/4 rows" in text
    assert re.search(r"row-a w1 .*20/100 frames 20\.0 fps ETA 0:04", text)
    assert re.search(r"row-a w1 .*40/100 frames 20\.0 fps ETA 0:03", text)
    assert re.search(r"row-b w2 .*0 frames +– fps +ETA \?", text)  # total not known yet
    assert re.search(r"row-b w2 .*10/50 frames +10\.0 fps +ETA 0:04", text)
    assert "30.0 fps" in text  # overall: 20 + 10 fps of the two active rows
    assert "✓ row-a done: 100 frames in 4.0 s (25.0 fps) → out/row-a.mp4" in text
    assert "↻ row-b attempt 1 failed: RayActorError: worker died; retrying" in text
    assert "✓ row-c done: 40 frames in 2.0 s (20.0 fps)" in text
    assert re.search(
        r"[\r\n]✗ row-b failed after 2 attempts: ValueError: \[bold\]portrait has no face\[/bold\] x+…\n",
        text,
    )  # one line, cut to the console width
    assert "Traceback" not in text  # one line only
    assert "demo rows (1 failed)" in text
    assert text.rstrip().endswith(
        "job 'demo' finished: 2 done, 1 failed, 1 skipped; 165 frames in 0:09"
    )
    final_frame = text[text.rindex("demo rows (1 failed)") :]
    assert "4/4 rows" in final_frame and "row-" not in final_frame.split("job 'demo'")[0]
    assert reporter._rows == {}  # row bars removed


def test_rich_progress_close_is_idempotent_and_none_mode_is_silent() -> None:
    reporter, _ = rich_run(EVENTS[:3])
    reporter.close()
    null = NullReporter()
    null.handle(EVENTS[0])
    null.close()


# ------------------------------------------------------------------------------------------
# PlainProgress
# ------------------------------------------------------------------------------------------


def test_plain_progress_logs_structured_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    reporter = PlainProgress(interval_seconds=5.0)
    reporter.handle(JobStarted("demo", 3))
    reporter.handle(RowStarted("row-a", 120, "w1"))
    for second in range(1, 13):
        reporter.handle(RowProgress("row-a", 10 * second, 120, float(second)))
    reporter.handle(RowFinished("row-a", "done", 120, 12.0, output="out/a b.mp4"))
    reporter.handle(RowRetrying("row-b", 1, "worker died"))
    reporter.handle(RowFinished("row-b", "quarantined", 0, 3.0, error=LONG_ERROR, attempts=2))
    reporter.handle(RowFinished("row-c", "skipped"))
    reporter.handle(JobFinished(seconds=20.0))
    reporter.close()
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:5] == [
        "job_started job=demo rows=3 skipped=0",
        "row_started row=row-a worker=w1 total_frames=120",
        "row_progress row=row-a frames=50/120 percent=42 fps=10.0 eta=0:07 rows_done=0/3",
        "row_progress row=row-a frames=100/120 percent=83 fps=10.0 eta=0:02 rows_done=0/3",
        'row_finished row=row-a status=done frames=120 seconds=12.0 fps=10.0 output="out/a b.mp4"',
    ]
    assert messages[5] == 'row_retrying row=row-b attempt=1 error="worker died"'
    assert messages[6].startswith(
        'row_finished row=row-b status=quarantined frames=0 seconds=3.0 fps=0.0 attempts=2 error="ValueError: [bold]'
    )
    assert "Traceback" not in messages[6]
    assert messages[-1] == (
        "job_finished job=demo state=finished done=1 failed=0 skipped=1 quarantined=1 interrupted=0 "
        "frames=120 seconds=20.0"
    )
    levels = [record.levelname for record in caplog.records]
    assert levels[5:7] == ["WARNING", "WARNING"]
    assert not any("\x1b" in message for message in messages)


def test_plain_progress_escapes_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    reporter = PlainProgress()
    reporter.handle(RowFinished("row-x", "failed", error="bad \x1b[31mred\x1b[0m"))
    (record,) = caplog.records
    assert record.getMessage().endswith('error="bad \\u001b[31mred\\u001b[0m"')


# ------------------------------------------------------------------------------------------
# StatusFile
# ------------------------------------------------------------------------------------------


def test_status_file_contents_over_a_job(tmp_path: Path) -> None:
    clock = FakeClock()
    stamp = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    path = tmp_path / "job" / "status.json"
    status = StatusFile(path, clock=clock, now=lambda: stamp)

    def read() -> dict[str, Any]:
        return json.loads(path.read_text())

    status.handle(EVENTS[0])  # first event: written at once
    assert status.writes == 1
    assert read()["state"] == "running" and read()["rows"]["skipped"] == 1
    for event in EVENTS[1:6]:  # same instant: throttled
        status.handle(event)
    assert status.writes == 1
    clock.now = 1.0
    status.handle(EVENTS[6])  # row-a done, a second later: written
    assert status.writes == 2
    assert read() == {
        "job": "demo",
        "state": "running",
        "updated_at": "2024-05-01T12:00:00+00:00",
        "elapsed_seconds": 1.0,
        "rows": {
            "total": 4,
            "done": 1,
            "failed": 0,
            "skipped": 1,
            "quarantined": 0,
            "interrupted": 0,
            "active": 1,
            "pending": 1,
            "retries": 0,
        },
        "frames_done": 110,
        "fps": 10.0,
        "eta_seconds": 4.0,
        "active": [
            {
                "row_id": "row-b",
                "worker": "w2",
                "attempt": 1,
                "frames_done": 10,
                "total_frames": 50,
                "fps": 10.0,
                "eta_seconds": 4.0,
            }
        ],
    }
    for event in EVENTS[7:-1]:
        status.handle(event)
    assert status.writes == 2  # still within the second
    status.handle(EVENTS[-1])  # JobFinished: always written
    final = read()
    assert status.writes == 3
    assert (final["state"], final["rows"]["done"], final["rows"]["failed"], final["active"]) == (
        "finished",
        2,
        1,
        [],
    )
    assert (final["elapsed_seconds"], final["eta_seconds"], final["frames_done"]) == (9.0, 0.0, 165)
    status.close()  # nothing new: no write
    assert status.writes == 3
    assert sorted(os.listdir(path.parent)) == ["status.json"]  # no temp files left


def test_status_file_flush_and_custom_writer() -> None:
    written: list[tuple[str, bytes]] = []
    clock = FakeClock()
    status = StatusFile(
        "s3://bucket/job/status.json", write_bytes=lambda p, d: written.append((p, d)), clock=clock
    )
    status.handle(EVENTS[0])
    status.handle(EVENTS[1])
    assert len(written) == 1
    status.close()  # the pending change is written at the end
    assert [path for path, _ in written] == ["s3://bucket/job/status.json"] * 2
    assert json.loads(written[-1][1])["rows"]["active"] == 1


def test_status_file_write_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(path: str, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", path)

    status = StatusFile("/status.json", write_bytes=broken)
    status.handle(EVENTS[0])
    assert status.writes == 0
    assert "could not write /status.json: [Errno 13] Permission denied" in caplog.text


def test_atomic_writes_never_show_a_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "status.json"
    replaced: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        replaced.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    payloads = [json.dumps({"n": n, "pad": "x" * (50_000 + 7 * n)}).encode() for n in range(60)]
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                json.loads(data)
            except ValueError:
                errors.append(f"partial read of {len(data)} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for data in payloads:
            write_bytes_atomic(str(path), data)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert json.loads(path.read_bytes())["n"] == 59
    assert len(replaced) == 60 and all(name.startswith(".status.json.") for name in replaced)
    assert sorted(os.listdir(tmp_path)) == ["status.json"]


# ------------------------------------------------------------------------------------------
# make_reporter / MultiReporter
# ------------------------------------------------------------------------------------------


def test_make_reporter_modes() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO())
    assert isinstance(make_reporter("auto", terminal), RichProgress)
    assert isinstance(make_reporter("auto", pipe), PlainProgress)
    assert isinstance(make_reporter("rich", pipe), RichProgress)
    assert isinstance(make_reporter("plain", terminal), PlainProgress)
    assert isinstance(make_reporter("none"), NullReporter)
    with pytest.raises(
        ValueError, match="progress mode 'fancy' is not one of 'auto', 'rich', 'plain', 'none'"
    ):
        make_reporter("fancy")


def test_multi_reporter_survives_a_broken_reporter(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def handle(self, event: Event) -> None:
            raise RuntimeError("display gone")

        def close(self) -> None:
            raise RuntimeError("display gone")

    class Recorder:
        def __init__(self) -> None:
            self.events: list[Event] = []
            self.closed = False

        def handle(self, event: Event) -> None:
            self.events.append(event)

        def close(self) -> None:
            self.closed = True

    recorder = Recorder()
    multi = MultiReporter([Broken(), recorder])
    for event in EVENTS:
        multi.handle(event)
    multi.close()
    assert recorder.events == EVENTS and recorder.closed
    assert caplog.text.count("progress reporter") == 1  # logged once, not per event


# ------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------


RESULTS = [
    RowFinished("row-a", "done", 100, 4.0, output="out/row-a.mp4").result,
    RowFinished("row-b", "failed", 25, 2.5, error=LONG_ERROR, attempts=2).result,
    RowFinished("row-c", "skipped").result,
]


def test_row_finished_carries_its_result() -> None:
    assert RESULTS[0] == RowResult("row-a", "done", 100, 4.0, 25.0, None, "out/row-a.mp4", 1)
    assert (RESULTS[2].fps, RESULTS[1].attempts) == (0.0, 2)


def test_summary_table() -> None:
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(summary_table(RESULTS))
    text = buffer.getvalue()
    for header in ("row", "status", "frames", "seconds", "fps", "error"):
        assert header in text
    assert re.search(r"│ row-a +│ done +│ +100 │ +4\.0 │ +25\.0 │", text)
    assert re.search(
        r"│ row-b +│ failed +│ +25 │ +2\.5 │ +10\.0 │ ValueError: \[bold\]portrait has no face\[/bold\] x+… +│",
        text,
    )
    assert "Traceback" not in text
    assert (
        "3 rows: 1 done, 1 failed, 1 skipped · 125 frames in 6.5 row-seconds · full errors in summary.json"
        in text
    )


def test_totals_give_the_jobs_aggregate_rate_over_the_rows_span() -> None:
    """Rows that overlap in time (several workers) count once in the span: 2 rows of 50 frames,
    10 s each, the second starting 5 s after the first, make 100 frames in 15 s."""
    results = [
        RowResult("a", "done", 50, 10.0, 5.0, started_at=1000.0),
        RowResult("b", "done", 50, 10.0, 5.0, started_at=1005.0),
        RowResult("c", "failed", 0, 30.0, 0.0, started_at=900.0, error="x"),  # not rendered
        RowResult("d", "skipped", 0, 0.0, 0.0),
    ]
    totals = write_summary_json(results, lambda data: None)["totals"]
    table = summary_table(results)
    assert "100 frames in 50.0 row-seconds · 6.7 frames/s over 15.0 s" in str(table.caption)
    assert totals["span_seconds"] == 15.0
    assert totals["aggregate_fps"] == round(100 / 15, 3)
    assert totals["fps"] == round(100 / 50, 3)  # the mean rate per row-second
    assert "aggregate_fps" not in write_summary_json(results[2:], lambda data: None)["totals"]


def test_write_summary_json_to_path_and_writer(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    document = write_summary_json(RESULTS, path, job_name="demo")
    on_disk = json.loads(path.read_text())
    assert on_disk == document
    assert on_disk["job"] == "demo"
    assert on_disk["totals"] == {
        "rows": 3,
        "done": 1,
        "failed": 1,
        "skipped": 1,
        "quarantined": 0,
        "interrupted": 0,
        "frames": 125,
        "row_seconds": 6.5,
        "fps": 19.231,
    }
    assert on_disk["rows"][1] == {
        "row_id": "row-b",
        "status": "failed",
        "frames": 25,
        "seconds": 2.5,
        "fps": 10.0,
        "error": LONG_ERROR,  # the full text, traceback included
        "output": None,
        "attempts": 2,
        "worker": "",
        "started_at": None,
        "timeline": None,
        "framing": None,
        "inputs": None,
        "extra": None,
        "conditioning": None,
        "rendered": None,
        "signals": None,
    }
    assert on_disk["outputs"] == {
        "rows": 3,
        "committed": 1,  # row-a: done with an output (row-c was skipped without one)
        "frames": 100,
        "render_seconds": 0.0,
        "fps": None,
    }
    captured: list[bytes] = []
    write_summary_json(RESULTS, captured.append)
    assert json.loads(captured[0])["rows"][0]["output"] == "out/row-a.mp4"


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, math.inf, 0, 7.4, 65, 3723)] == [
        "?",
        "?",
        "0:00",
        "0:07",
        "1:05",
        "1:02:03",
    ]


# ------------------------------------------------------------------------------------------
# Demo script
# ------------------------------------------------------------------------------------------


def load_demo() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "demo_progress.py"
    spec = importlib.util.spec_from_file_location("demo_progress", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_job_is_a_consistent_8_row_2_worker_job(tmp_path: Path) -> None:
    demo = load_demo()
    events = demo.synthetic_job(duration_seconds=10.0)
    times = [at for at, _ in events]
    assert times == sorted(times) and 7.0 < times[-1] < 13.0
    finished = [e for _, e in events if isinstance(e, RowFinished)]
    assert len(finished) == 8
    assert sorted(e.status for e in finished) == ["done"] * 6 + ["failed", "skipped"]
    tracker = JobTracker()
    for _, event in events:
        tracker.handle(event)
        assert len(tracker.active) <= 2
    assert tracker.peak_active == 2 and tracker.retries == 1
    status = tmp_path / "status.json"
    demo.replay(events, StatusFile(status), speed=1e6)
    assert json.loads(status.read_text())["rows"]["done"] == 6


def test_summary_caption_tells_the_outputs_as_they_stand_after_a_rerun() -> None:
    """A rerun that skips every row still says what the job's outputs are and how fast they were
    rendered (by the earlier run)."""
    rendered = {
        "run": "r1",
        "at": "2026-12-03T12:00:00+00:00",
        "frames": 90,
        "seconds": 3.0,
        "fps": 30.0,
    }
    results = [
        RowResult("a", "skipped", 90, 0.0, 0.0, output="a.mp4", rendered=rendered),
        RowResult("b", "skipped", 90, 0.0, 0.0, output="b.mp4", rendered={**rendered, "seconds": 6.0}),
    ]  # fmt: skip
    caption = str(summary_table(results).caption)
    assert "2 rows: 2 skipped · 180 frames in 0.0 row-seconds" in caption
    assert "outputs as they stand: 2 videos, 180 frames rendered at 20.0 frames/s" in caption
    outputs = write_summary_json(results, lambda data: None)["outputs"]
    assert outputs == {"rows": 2, "committed": 2, "frames": 180, "render_seconds": 9.0, "fps": 20.0}


def test_throughput_sampler_records_frames_over_time() -> None:
    now = [100.0]
    sampler = ThroughputSampler(90.0, interval_seconds=2.0, now=lambda: now[0])
    sampler.handle(JobStarted("demo", total_rows=1))
    for second, frames in ((100.0, 0), (101.0, 10), (102.5, 30), (103.0, 40)):
        now[0] = second
        sampler.handle(RowProgress("a", frames, 50, second - 100.0))
    now[0] = 104.0
    sampler.handle(RowFinished("a", "done", 50, 4.0))
    sampler.handle(JobFinished("finished", 4.0))
    assert sampler.samples == [
        {"t": 10.0, "frames": 0},
        {"t": 12.5, "frames": 30},
        {"t": 14.0, "frames": 50},
    ]
