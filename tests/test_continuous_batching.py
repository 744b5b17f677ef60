"""Continuous batching: rows join and leave a worker's batched denoising call independently.

* the slots and the read-ahead thread a row uses;
* a stream that joins a running batch mid-way renders the frames it renders alone;
* real jobs (embedded Ray, tiny model, real videos): rows of mixed lengths on one worker with two
  stream slots keep every frame; a worker never holds more rows than its slots plus the rows it
  prepares ahead; a worker killed with rows in flight loses only those rows' uncommitted work
  (they are retried and land exactly once).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RESOLUTION
from job_helpers import run_in_process, start_job, tiny_render_overrides, wait_until, write_manifest
from media_factory import pattern_video
from test_animator import animate, driving, portrait

from pipeline.animate import StepBatcher, StreamingAnimator
from pipeline.config import AnimatorConfig
from pipeline.media import VideoReader, probe
from pipeline.timeline import bars, slot_idle_seconds, timeline_svg
from pipeline.worker import StreamSlots
from pipeline.worker._ahead import ReadAhead

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"


# ------------------------------------------------------------------------------------------
# The parts
# ------------------------------------------------------------------------------------------


def test_stream_slots_are_taken_in_turn_lowest_number_first() -> None:
    slots = StreamSlots(2)
    order: list[tuple[str, int]] = []
    first, second = slots.hold(), slots.hold()
    a, b = first.__enter__(), second.__enter__()
    assert (a, b, slots.busy) == (0, 1, 2)

    done = threading.Event()

    def wait(name: str) -> None:
        with slots.hold() as index:
            order.append((name, index))
            done.wait(timeout=5)  # keep the slot until the test has seen who holds what

    threads = []
    for count, name in enumerate(("third", "fourth"), start=1):  # both wait: no slot is free
        thread = threading.Thread(target=wait, args=(name,))
        thread.start()
        threads.append(thread)
        wait_until(lambda count=count: slots.waiting == count, 5, f"{name} to wait")
    second.__exit__(None, None, None)  # slot 1 frees: the first in line takes it
    wait_until(lambda: order, 5, "the third row's slot")
    first.__exit__(None, None, None)
    wait_until(lambda: len(order) == 2, 5, "the fourth row's slot")
    assert order == [("third", 1), ("fourth", 0)] and slots.busy == 2
    done.set()
    for thread in threads:
        thread.join(timeout=5)
    assert slots.busy == 0
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(0)


class _Holder:
    """A thread that asks ``slots`` for a slot in ``ticket``'s turn, notes it in ``log`` and
    keeps it until :meth:`done`."""

    def __init__(self, slots: StreamSlots, ticket: object, name: str, log: list) -> None:
        self.release = threading.Event()

        def hold() -> None:
            with slots.hold(ticket) as index:
                log.append((name, index))
                self.release.wait(timeout=10)

        self.thread = threading.Thread(target=hold)
        self.thread.start()

    def done(self) -> None:
        self.release.set()
        self.thread.join(timeout=10)


def test_rows_take_slots_in_the_driver_s_order_not_the_order_they_are_prepared() -> None:
    """Four slots; the driver sent a long row's two parts, then short rows. Ray started the
    calls out of order and the second part is prepared last: two short rows stream at once, the
    fourth slot waits for the part, and the part streams before any later short row."""
    slots = StreamSlots(4)
    log: list[tuple[str, int]] = []
    tickets = {name: slots.accept(order) for order, name in [
        (3, "short-1"), (1, "part-1"), (4, "short-2"), (2, "part-2"), (5, "short-3"),
        (6, "short-4"),
    ]}  # fmt: skip
    holders = {}
    for name in ("part-1", "short-1", "short-2", "short-3", "short-4"):  # prepared in this order
        holders[name] = _Holder(slots, tickets[name], name, log)
        if name != "short-4":
            wait_until(lambda n=name: n in {e[0] for e in log} or slots.waiting, 5, name)
    wait_until(lambda: slots.waiting == 2, 5, "short-3 and short-4 to wait")
    time.sleep(0.2)
    assert [e[0] for e in log] == ["part-1", "short-1", "short-2"]  # slot 3 kept for part-2
    holders["part-2"] = _Holder(slots, tickets["part-2"], "part-2", log)
    wait_until(lambda: len(log) == 4, 5, "part-2's slot")
    assert log[3] == ("part-2", 3) and slots.busy == 4 and slots.waiting == 2
    holders["short-1"].done()  # a slot frees: the next in the driver's order takes it
    wait_until(lambda: len(log) == 5, 5, "short-3's slot")
    assert log[4] == ("short-3", 1)
    for holder in holders.values():
        holder.done()
    assert slots.busy == 0 and slots.waiting == 0


def test_a_slot_is_kept_for_a_row_still_preparing_only_for_a_while() -> None:
    """A row ahead that never gets ready (its input is slow) keeps a free slot for
    ``reserve_seconds`` after its acceptance; one that fails gives it up at once."""
    slots = StreamSlots(1)
    slots.reserve_seconds = 0.6
    log: list[tuple[str, int]] = []
    slow, failing = slots.accept(1), slots.accept(2)
    started = time.monotonic()
    waiting = _Holder(slots, slots.accept(3), "ready", log)
    wait_until(lambda: log, 5, "the reservations to lapse")
    assert time.monotonic() - started >= 0.5  # both rows ahead kept the slot, then let go
    waiting.done()
    slots.leave(slow)
    slots.leave(failing)

    slots.reserve_seconds = 60.0
    failing = slots.accept(1)
    waiting = _Holder(slots, slots.accept(2), "after-failure", log)
    time.sleep(0.3)
    assert len(log) == 1  # kept for the row ahead
    slots.leave(failing)  # it failed while preparing: the slot is free for the rows behind
    wait_until(lambda: len(log) == 2, 5, "the slot after the failure")
    waiting.done()
    assert slots.busy == 0 and slots.waiting == 0


def test_read_ahead_runs_ahead_by_its_depth_and_stops_when_closed() -> None:
    produced: list[int] = []

    def numbers():
        for i in range(1000):
            produced.append(i)
            yield i

    ahead = ReadAhead(numbers(), depth=3)
    wait_until(lambda: len(produced) >= 4, 5, "the read-ahead to fill its queue")
    time.sleep(0.2)
    assert len(produced) == 4  # 3 queued, the 4th waiting to be queued: never more
    iterator = iter(ahead)
    assert [next(iterator) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()
    assert not ahead._thread.is_alive()  # a row that stops early leaves no thread behind

    def broken():
        yield 1
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="went away"):
        list(ReadAhead(broken()))


def test_a_call_trace_holds_the_chosen_calls_only(tmp_path: Path) -> None:
    """``cluster.trace_dir``'s tracer: the profiler runs from the first chosen call to the last,
    the trace is written once, and a bad choice of calls is refused (in the config, by name)."""
    from pipeline.animate._call_trace import CallTrace, CallTracer
    from pipeline.config import RenderConfig, config_problems

    tracer = CallTracer(CallTrace(str(tmp_path / "t/worker.json.gz"), 2, 2), cuda=False)
    for call in range(6):
        tracer.before_call()
        with torch.profiler.record_function(f"call-{call}"):
            torch.ones(8).add_(1)
        tracer.after_call()
    assert tracer.written == tmp_path / "t/worker.json.gz"
    with gzip.open(tracer.written, "rt") as handle:
        names = {e.get("name") for e in json.load(handle)["traceEvents"]}
    assert {n for n in names if str(n).startswith("call-")} == {"call-2", "call-3"}
    with pytest.raises(ValueError, match="calls >= 1"):
        CallTracer(CallTrace("x.json.gz", 0, 0), cuda=False)
    cfg = RenderConfig()
    cfg.cluster.trace_calls = [5]
    assert any("cluster.trace_calls=[5]" in p for p in config_problems(cfg))


def test_rows_past_their_slot_leave_room_for_the_next_ones() -> None:
    """A worker takes rows up to its capacity (stream slots + cluster.rows_ahead); a row that
    gave its slot back and only finishes (join, mux, commit) stops counting, up to
    cluster.rows_finishing such rows (null: as many as rows_ahead, so rows_ahead=0 still means one
    row after the other); a row that must run alone goes only to a worker holding none."""
    from pipeline.cluster._pool import RenderPool, _Slot
    from pipeline.config import RenderConfig, config_problems

    cfg = RenderConfig()
    pool = RenderPool(cfg.cluster, cfg.model, cfg.video, cfg.storage)
    assert (pool.capacity(4), pool.finishing_room(4)) == (8, 4)  # 4 slots, 4 ahead, 4 finishing
    cfg.cluster.rows_ahead = 0
    assert (pool.capacity(1), pool.finishing_room(1)) == (1, 0)
    cfg.cluster.rows_finishing = 2
    assert (pool.capacity(1), pool.finishing_room(1)) == (1, 2)

    worker = _Slot("w", None, capacity=3, finishing_room=2, inflight=3)
    assert not worker.has_room(0)  # full: 3 rows preparing or streaming
    assert worker.has_room(1) and worker.has_room(2)  # one or two of them only finish
    worker.inflight = 5
    assert not worker.has_room(2) and not worker.has_room(5)  # finishing ones count from 3 on
    assert not worker.has_room(5, isolate=True)
    assert _Slot("idle", None, capacity=3, finishing_room=2).has_room(0, isolate=True)
    cfg.cluster.rows_finishing = -1
    assert any("cluster.rows_finishing=-1 must be 0 or more" in p for p in config_problems(cfg))


@pytest.mark.slow
def test_a_stream_joining_a_running_batch_renders_what_it_renders_alone(tiny_models) -> None:
    """Row B starts while row A is mid-stream and ends before it: B's frames equal B alone up
    to float rounding (the issue's bound is 1/255 of the output range), and the batcher's
    calls went from one stream to two and back to one."""
    config = AnimatorConfig(keyframe_threshold=0.5, output_dtype="float")
    animator = StreamingAnimator(tiny_models, config, resolution=TINY_RESOLUTION)
    frames_a, frames_b = driving(70, seed=1), driving(23, seed=2)
    alone = animate(animator, frames_b, seed=9, image=1)
    batcher = StepBatcher(animator, record_stats=True, max_wait_s=1.0)
    results: dict[str, torch.Tensor] = {}
    a_started = threading.Event()

    def run(name: str, frames: np.ndarray, seed: int, image: int, join_after: int = 0) -> None:
        if join_after:  # join once the other stream is past its warm-up
            a_started.wait(timeout=30)
            wait_until(lambda: batcher.stats.calls >= join_after, 60, "row A's calls")
        stream = animator.fuse_reference(portrait(image), seed=seed, stream_id=name)
        batcher.register(stream)
        a_started.set()
        outputs = []
        for start in range(0, len(frames), 4):
            outputs.append(batcher.advance(stream, frames[start : start + 4]))
        while not stream.done:
            outputs.append(batcher.advance(stream, None))
        batcher.unregister(stream)
        results[name] = torch.cat(outputs)

    threads = [
        threading.Thread(target=run, args=("A", frames_a, 5, 0)),
        threading.Thread(target=run, args=("B", frames_b, 9, 1, 6)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher.close()
    streams = batcher.stats.streams
    first_two = streams.index(2)
    assert first_two >= 6 and streams[:first_two] == [1] * first_two  # A alone, then B joins
    assert streams[-1] == 1 and 2 not in streams[streams.index(1, first_two) :]  # B left first
    assert results["A"].shape[0] == 70 and results["B"].shape == alone.shape == (23, 64, 64, 3)
    assert (results["B"] - alone).abs().max() <= 1 / 255
    assert (results["B"] - alone).abs().max() < 1e-5  # in fact: fp32 rounding only


def test_a_stream_that_has_ended_does_not_hold_back_the_next_call(tiny_models) -> None:
    """A row's thread may be slow to leave after its stream's last call (its last frames wait
    for room in a full encoder queue): the other rows' next call goes without waiting for it,
    since a finished stream hands in nothing more. Here the batcher would otherwise wait a minute
    for it (max_wait_s) and the finished row's thread leaves only once B's call is back."""
    animator = StreamingAnimator(tiny_models, AnimatorConfig(), resolution=TINY_RESOLUTION)
    batcher = StepBatcher(animator, record_stats=True, max_wait_s=60.0)
    a, b = (
        animator.fuse_reference(portrait(i), seed=i, stream_id=n) for i, n in ((0, "A"), (1, "B"))
    )
    batcher.register(a)
    batcher.register(b)
    b_next_back = threading.Event()
    took: list[float] = []

    def row_a() -> None:
        batcher.finish(a, driving(4, seed=1))  # one chunk and 3 flush calls: done after 4 calls
        b_next_back.wait(timeout=30)  # slow to leave: still registered
        batcher.unregister(a)

    def row_b() -> None:
        frames = driving(20, seed=2)
        for start in range(0, 16, 4):  # in step with A: each call waits for both streams
            batcher.advance(b, frames[start : start + 4])
        began = time.monotonic()
        batcher.advance(b, frames[16:20])
        took.append(time.monotonic() - began)
        b_next_back.set()
        batcher.unregister(b)

    threads = [threading.Thread(target=row_a), threading.Thread(target=row_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher.close()
    assert a.done and took and took[0] < 10  # not the 30 s A's thread took to leave
    assert batcher.stats.streams == [2, 2, 2, 2, 1]


def test_the_timeline_draws_one_lane_per_worker_slot_and_finds_idle_slots() -> None:
    def row(row_id: str, slot: int, stream: tuple[float, float], status: str = "done") -> dict:
        start, end = stream
        times = {"accepted_at": 100.0, "prepared_at": 100.5, "streaming_at": 100 + start}
        times |= {"released_at": 100 + end, "finished_at": 100 + end + 0.3, "slot": slot}
        return {"row_id": row_id, "worker": "w0", "status": status, "frames": 8, "timeline": times}

    summary = {
        "startup": {"started_at": 100.0, "first_frame_seconds": 2.5, "first_commit_seconds": 3.0},
        "rows": [
            row("a", 0, (1, 5)),
            row("b", 1, (1, 3)),
            row("c", 1, (4, 6), "failed"),  # slot 1 stood empty from 3 s to 4 s
            {"row_id": "skipped", "status": "skipped", "timeline": None},
        ],
    }
    found = bars(summary)
    assert [(b.row_id, b.slot, b.streaming, b.released) for b in found] == [
        ("a", 0, 1.0, 5.0),
        ("b", 1, 1.0, 3.0),
        ("c", 1, 4.0, 6.0),
    ]
    assert slot_idle_seconds(found) == {("w0", 0): 0.0, ("w0", 1): 1.0}
    picture = timeline_svg(summary)
    assert picture.count('class="lane"') == 4  # a label and a line per lane
    assert "w0 · slot 0" in picture and "w0 · slot 1" in picture
    assert picture.count('<g class="bar') == 3 and 'class="bar st-failed"' in picture
    assert "first commit 3.0 s after the job started" in picture
    assert timeline_svg({"rows": [{"row_id": "x", "status": "failed"}]}) == ""


# ------------------------------------------------------------------------------------------
# Real jobs
# ------------------------------------------------------------------------------------------

LENGTHS = {"r05": 5, "r37": 37, "r08": 8, "r61": 61, "r13": 13, "r22": 22}


@pytest.fixture(scope="module")
def mixed_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mixed")
    return {
        row_id: pattern_video(folder / f"{row_id}.mp4", frames=frames, rate="25", size="96x72")
        for row_id, frames in LENGTHS.items()
    }


def held_at_once(rows: list[dict], start: str, end: str) -> int:
    """The most rows whose [start, end) intervals overlap at one moment."""
    edges = sorted(
        [(r["timeline"][start], 1) for r in rows] + [(r["timeline"][end], -1) for r in rows]
    )
    most = now = 0
    for _, change in edges:  # an end at the same time as a start comes first
        now += change
        most = max(most, now)
    return most


@pytest.mark.slow
def test_rows_of_mixed_lengths_stream_together_on_one_worker(
    ray_local, tiny_weights, mixed_clips, tmp_path: Path
) -> None:
    """Six rows of 5 to 61 frames on one CPU worker with two stream slots and one row prepared
    ahead: every output has exactly its driving video's frames; rows started while others were
    mid-stream; the worker never streamed more than 2 rows or held more than 3. The worker also
    traces three of its calls (``cluster.trace_dir``): the batch thread's stages and the row
    threads' work in one Chrome trace."""
    manifest = write_manifest(
        tmp_path / "mixed.csv",
        [
            {"id": row_id, "portrait": str(PORTRAIT), "driving_video": str(clip)}
            for row_id, clip in mixed_clips.items()
        ],
    )
    args = tiny_render_overrides(
        manifest, tmp_path / "out", tiny_weights, "cluster.cpu_workers=1",
        "model.streams_per_worker=2", "cluster.rows_ahead=1", "video.audio=none",
        "video.segment_seconds=0.64", f"cluster.trace_dir={tmp_path / 'trace'}",
        "cluster.trace_calls=[4,3]",
    )  # fmt: skip
    assert run_in_process(args) == 0
    summary = json.loads((tmp_path / "out/mixed/summary.json").read_text())
    rows = summary["rows"]
    assert {r["row_id"]: r["status"] for r in rows} == dict.fromkeys(LENGTHS, "done")
    for r in rows:
        frames = LENGTHS[r["row_id"]]
        assert r["frames"] == frames
        assert probe(r["output"]).video.num_frames == frames
        assert len(list(VideoReader(r["output"]))) == frames  # decoded, not only counted
    assert held_at_once(rows, "streaming_at", "released_at") == 2
    # 2 slots + 1 ahead, and 1 more while one of them only finishes (rows_finishing: null = 1)
    assert held_at_once(rows, "accepted_at", "released_at") <= 3
    assert held_at_once(rows, "accepted_at", "finished_at") <= 4
    starts = sorted(rows, key=lambda r: r["timeline"]["streaming_at"])
    joined_mid_stream = [
        later["row_id"]
        for later in starts[1:]
        for earlier in starts
        if earlier["timeline"]["streaming_at"]
        < later["timeline"]["streaming_at"]
        < earlier["timeline"]["released_at"] - 0.05
    ]
    assert joined_mid_stream, "no row joined while another was streaming"
    # the longest row goes out first and takes a slot first, however soon the others are prepared
    longest = max(LENGTHS, key=LENGTHS.__getitem__)
    assert longest in {r["row_id"] for r in starts[:2]}
    assert {r["timeline"]["slot"] for r in rows} == {0, 1}
    (worker,) = summary["startup"]["workers"]
    assert worker["streams"] == 2 and worker["gpu"] is None  # a CPU worker has no GPU clock
    with gzip.open(tmp_path / "trace" / f"{worker['name']}.json.gz", "rt") as handle:
        events = json.load(handle)["traceEvents"]
    stages = [e for e in events if e.get("name") == "stage:denoise"]
    assert len(stages) == 3  # calls 4, 5 and 6, nothing before or after
    assert len({e.get("tid") for e in events if e.get("ph") == "X"}) >= 2  # not only one thread
    startup = summary["startup"]
    assert 0 < startup["workers_ready_seconds"] < startup["first_frame_seconds"]
    assert startup["first_frame_seconds"] <= startup["first_commit_seconds"]
    from scripts.render_bench_report import emitting_share, report

    figures = report("mixed", tmp_path / "out/mixed", manifest, None, None)
    assert figures["exactly_once"] and figures["frames"] == sum(LENGTHS.values())
    assert figures["emitting_share"] == round(emitting_share(list(LENGTHS.values())), 3)
    assert figures["render_fps"] > 0 and figures["bench_fps"] is None


def test_a_rows_first_segment_is_short_and_the_rest_are_full(
    tiny_weights, tmp_path: Path, monkeypatch
) -> None:
    """The segment markers of a row rendered with the default first segment (1 s) and 0.64 s
    segments: 24 frames, then 16-frame segments, then the rest."""
    from pipeline.config import ModelConfig, StorageConfig, VideoConfig
    from pipeline.ledger import Ledger
    from pipeline.storage import Storage
    from pipeline.worker import RowRenderer, RowTask, build_animator

    clip = pattern_video(tmp_path / "c.mp4", frames=70, rate="25", size="96x72")
    model = ModelConfig(
        architecture="tiny", weights_dir=str(tiny_weights), dtype="fp32", device="cpu",
        resolution=64,
    )  # fmt: skip
    renderer = RowRenderer(
        build_animator(model), Storage(StorageConfig()),
        VideoConfig(preset="ultrafast", segment_seconds=0.64, audio="none"), tmp_path,
    )  # fmt: skip
    job = tmp_path / "job"
    segments: list[tuple[int, int]] = []
    real_commit = Ledger.commit_segment

    def spy(self, key, index, start, end, *args, **kwargs):
        segments.append((start, end))
        return real_commit(self, key, index, start, end, *args, **kwargs)

    monkeypatch.setattr(Ledger, "commit_segment", spy)
    outcome = renderer.render(
        RowTask("row", str(PORTRAIT), str(clip), None, str(job), "row-k", None, 0)
    )
    assert outcome.status == "done" and outcome.frames == 70
    assert segments == [(0, 24), (24, 40), (40, 56), (56, 70)]
    timeline = outcome.timeline
    assert timeline is not None
    assert timeline.accepted_at <= timeline.fused_at <= timeline.prepared_at
    assert timeline.prepared_at <= timeline.streaming_at
    assert timeline.streaming_at <= timeline.first_frame_at <= timeline.first_commit_at
    assert timeline.first_commit_at <= timeline.released_at <= timeline.encoded_at
    assert timeline.encoded_at <= timeline.committed_at <= timeline.finished_at
    from scripts.render_bench_report import row_phases

    phases = row_phases([{"timeline": timeline.as_dict()}])  # where the row's time went
    assert list(phases) == [
        "prepare: portrait fused", "prepare: the rest", "wait for a slot", "stream",
        "last segment", "join, mux, commit", "signals",
    ]  # fmt: skip
    assert all(seconds >= 0 for seconds in phases.values())
    assert timeline.slot == 0


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_only_its_rows_in_flight(
    tiny_weights, mixed_clips, tmp_path: Path
) -> None:
    """SIGKILL the worker while two long rows stream in one batch (three slots: the short row
    streamed beside them and was committed first): the rows in flight are retried and resume; rows
    committed before the kill are not rendered again; every row lands exactly once with all its
    frames."""
    long_clip = pattern_video(tmp_path / "long.mp4", frames=160, rate="25", size="96x72")
    rows = [
        {"id": "short", "portrait": str(PORTRAIT), "driving_video": str(mixed_clips["r08"])},
        {"id": "long-a", "portrait": str(PORTRAIT), "driving_video": str(long_clip)},
        {"id": "long-b", "portrait": str(PORTRAIT), "driving_video": str(long_clip), "seed": "2"},
        {"id": "after", "portrait": str(PORTRAIT), "driving_video": str(mixed_clips["r13"])},
    ]
    manifest = write_manifest(tmp_path / "kill.csv", rows)
    out = tmp_path / "out"
    args = tiny_render_overrides(
        manifest, out, tiny_weights, "cluster.cpu_workers=1", "model.streams_per_worker=3",
        "cluster.rows_ahead=1", "video.audio=none", "video.segment_seconds=0.64",
        "cluster.order=manifest",
    )  # fmt: skip
    job = start_job(args, tmp_path / "kill.log")
    committed_at_kill: dict[str, str] = {}  # row -> its commit marker's text at the kill
    try:

        def short_committed_and_long_rows_mid_stream() -> list[Path] | None:
            # the short row's commit is waited for too: on a loaded machine its commit (encode,
            # marker) can lag behind the long rows' second segments, and the kill must come after
            markers = {
                name: sorted((out / "kill/_rows").glob(f"{name}-*/segments/*.json"))
                for name in ("long-a", "long-b")
            }
            short_done = any((out / "kill/_rows").glob("short-*/commit.json"))
            mid_stream = all(len(m) >= 2 for m in markers.values())
            return markers["long-a"] if short_done and mid_stream else None

        markers = wait_until(
            short_committed_and_long_rows_mid_stream, 240, "short committed, long rows mid-stream"
        )
        os.kill(json.loads(markers[-1].read_text())["pid"], signal.SIGKILL)
        committed_at_kill.update(
            (marker.parent.name.rsplit("-", 1)[0], marker.read_text())
            for marker in (out / "kill/_rows").glob("*/commit.json")
        )
        assert job.wait(timeout=300) == 0, (tmp_path / "kill.log").read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
    summary = {r["row_id"]: r for r in json.loads((out / "kill/summary.json").read_text())["rows"]}
    assert {name: r["status"] for name, r in summary.items()} == dict.fromkeys(
        ("short", "long-a", "long-b", "after"), "done"
    )
    assert summary["long-a"]["attempts"] == summary["long-b"]["attempts"] == 2
    assert "short" in committed_at_kill
    # a row committed before the kill is not rendered again. Its attempts may read 2: the worker
    # can die between writing the marker and its reply reaching the driver; the retry then finds
    # the marker and reports the row done without streaming a frame.
    for name, marker_text in committed_at_kill.items():
        assert next((out / "kill/_rows").glob(f"{name}-*/commit.json")).read_text() == marker_text
        assert summary[name]["attempts"] <= 2
        if summary[name]["attempts"] == 2:
            assert "first_frame_at" not in summary[name]["timeline"]
    for name, frames in (("short", 8), ("long-a", 160), ("long-b", 160), ("after", 13)):
        assert probe(summary[name]["output"]).video.num_frames == frames
        assert len(list((out / "kill/_rows").glob(f"{name}-*/commit.json"))) == 1
    for name in ("long-a", "long-b"):  # resumed from a committed segment, not from frame 0
        marker = json.loads(next((out / "kill/_rows").glob(f"{name}-*/commit.json")).read_text())
        assert marker["resumed_from_frame"] >= 24


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_the_gpu_clock_counts_the_gaps_the_host_left_between_calls() -> None:
    from pipeline.animate._batcher import GpuClock

    clock = GpuClock()
    matrix = torch.randn(4096, 4096, device="cuda")
    for call, pause in enumerate(
        (0.0, 0.0, 0.1)
    ):  # the host comes back late once, after the GPU ran dry
        torch.cuda.synchronize()
        time.sleep(pause)
        clock.sent(gpu_idle=True, missing_streams=int(pause > 0))
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(8):
            matrix = matrix @ matrix / 64
        end.record()
        clock.record(begin, end, captured=call == 0)  # as if the first call captured a graph
    totals = clock.totals()
    assert totals["calls"] == 3 and totals["busy_seconds"] > 0
    assert 0.09 <= totals["idle_between_calls_seconds"] < 0.3
    assert totals["calls_sent_to_idle_gpu"] == 3 and totals["calls_sent_without_a_stream"] == 1
    assert totals["calls_that_captured_a_graph"] == 1
    assert 0 < totals["seconds_in_calls_that_captured"] < totals["busy_seconds"]
