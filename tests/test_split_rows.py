"""Long rows split over workers: parts that start as the whole row's stream would be there.

* the noise replay equals the whole stream's draws; a part's frames approach the uninterrupted
  frames as its overlap grows (within 1/255 at the default overlap) and part 0 is them exactly;
  keyframes decided before a part are the whole stream's;
* the driver's split: part spans, longest first, progress summed, one verdict per row;
* a real job (embedded Ray, tiny model, real video with audio): a row split in three renders every
  frame once, joined, audio in sync, frames within the bound of the unsplit render, the parts'
  files tidied by the row's commit.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RESOLUTION
from job_helpers import run_in_process, tiny_render_overrides, write_manifest
from media_factory import pattern_video

from pipeline import split_rows
from pipeline.animate import StreamingAnimator
from pipeline.animate._parts import PartStarter, skip_noise
from pipeline.config import AnimatorConfig, ClusterConfig, S3Config, StorageConfig
from pipeline.ledger import Ledger
from pipeline.media import VideoReader, probe
from pipeline.progress import RowProgress, RowStarted
from pipeline.split_rows import SplitRows, earlier_cut, fill_parts, part_spans, split_task
from pipeline.storage import Storage
from pipeline.worker import RowResult, RowTask
from scripts.bench_seams import _clip, differences, render

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"


# ------------------------------------------------------------------------------------------
# The animator's part start
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    return _clip(96, TINY_RESOLUTION)


def test_noise_replayed_in_blocks_equals_the_chunk_draws(tiny_models) -> None:
    animator = StreamingAnimator(tiny_models, resolution=TINY_RESOLUTION)
    picture = np.zeros((64, 64, 3), np.uint8)
    drawn = animator.fuse_reference(picture, seed=5)
    replayed = animator.fuse_reference(picture, seed=5)
    for _ in range(300):
        animator._noise(drawn.generator, 4)
    skip_noise(animator, replayed, 300)  # two blocks of draws
    assert torch.equal(animator._noise(drawn.generator, 4), animator._noise(replayed.generator, 4))


def test_a_part_converges_to_the_uninterrupted_frames_as_its_overlap_grows(tiny_models, clip):
    frames, picture = clip
    animator = StreamingAnimator(tiny_models, resolution=TINY_RESOLUTION)
    whole = render(animator, picture, frames, seed=3)
    assert len(whole) == 96
    first = render(animator, picture, frames, seed=3, end=48)  # part 0: the whole stream itself
    assert np.array_equal(first, whole[:48])
    cold = differences(render(animator, picture, frames, seed=3, start=48, overlap=0), whole[48:])
    warm = differences(render(animator, picture, frames, seed=3, start=48, overlap=16), whole[48:])
    assert cold["seam_max"] > warm["seam_max"]
    assert warm["max"] <= 1, warm  # within 1/255 of the uninterrupted frames
    assert cold["tail_max"] <= 1  # the window forgets its start either way


def test_keyframes_before_a_part_are_the_whole_streams(tiny_models, clip) -> None:
    frames, picture = clip
    config = AnimatorConfig(keyframe_threshold=0.0)  # every candidate joins: calls 9, 10, 11
    animator = StreamingAnimator(tiny_models, config, resolution=TINY_RESOLUTION)
    whole = animator.fuse_reference(picture, seed=3)
    calls = []
    for index in range(0, 80, 4):
        before, call = whole.num_keyframes, whole.calls
        animator.advance([whole], [frames[index : index + 4]])
        if whole.num_keyframes > before:  # the previous call's candidate joined at this call
            calls.append(call - 1)
    from scripts.bench_seams import observations_of

    base = animator.fuse_reference(picture, seed=3)
    starter = PartStarter(animator, overlap=16)
    source = observations_of(animator, frames)
    _, planned = starter.plan_keyframes(base, source, before_call=whole.calls - 1)
    assert len(planned) == whole.num_keyframes == 3
    assert [k.call for k in planned] == calls
    # calls 9 and 10: their windows reach back to the stream's start, so they are rendered from
    # it (exactly); call 11's from the 16 frames before it: close, not equal
    latents = [k.latent[0] for k in planned]
    assert torch.equal(latents[0], whole.keyframe_latents[0])
    assert torch.equal(latents[1], whole.keyframe_latents[1])
    error = (latents[2] - whole.keyframe_latents[2]).abs().max() / whole.keyframe_latents[
        2
    ].abs().max()
    assert 0 < error < 0.01


def test_the_keyframe_scan_reads_the_device_once_per_block_and_decides_call_by_call(
    monkeypatch,
) -> None:
    """400 chunks of driving motion near the portrait's, with outliers: chunk 100 and 101 the
    same far motion (101 is then near the bank: measured again after 100 joined, it must not
    join), chunk 250 another. The scan takes the keyframes a call-by-call replay takes, and
    waits for the device once per block of calls and once more per keyframe, not per call (each
    wait is a whole batched call of the other rows on a busy GPU)."""
    from types import SimpleNamespace

    from pipeline.animate import _parts

    torch.manual_seed(0)
    reference = torch.randn(1, 2, 8)
    motions = reference + 0.1 * torch.randn(400, 2, 8)
    far = torch.randn(2, 8) * 10
    motions[100] = motions[101] = far
    motions[250] = -far
    config = AnimatorConfig(keyframe_threshold=5.0)
    before_call = 380
    # the specification: the stream's own rule, call by call
    bank, expected = [reference], []
    for call in range(config.keyframe_min_chunks, before_call):
        candidate = motions[call - 3]
        distance = (torch.cat(bank).flatten(1) - candidate.flatten()).pow(2).sum(1).sqrt().min()
        if float(distance) > config.keyframe_threshold and len(expected) < config.max_keyframes:
            expected.append(call)
            bank.append(candidate[None])
    assert expected == [103, 253]

    reads = []
    to_host = _parts._to_host
    monkeypatch.setattr(_parts, "_to_host", lambda values: reads.append(1) or to_host(values))
    scan = _parts._KeyframeScan(config, SimpleNamespace(reference_motion=reference), before_call)
    frames = _parts._Frames(keep=_parts.SCAN_BLOCK + 16, step=4)
    for index in range(400):
        frames.frames.append((4 * index, None, motions[index : index + 1]))
        frames.next += 4
        if (index + 1) % _parts.SCAN_BLOCK == 0:
            scan.decide(frames)
    scan.decide(frames)
    assert scan.calls == expected
    assert all(torch.equal(m[0], motions[c - 3]) for m, c in zip(scan.motions, expected))
    assert scan.reads == len(reads) <= 12  # 7 blocks of 64 calls, 2 keyframes: not 370 reads


@pytest.mark.parametrize("read", ["face", "off", "cached"])
def test_a_workers_part_start_reads_the_frames_the_rows_stream_is_fed(
    tiny_models, tmp_path: Path, read: str
) -> None:
    """The worker's source for a part's start: the keyframe scan's chunk-first frames and the
    window's whole chunks, from frame to frame, are the frames the row's own stream is fed (cut
    around the same tracked face, or whole), observed as that stream observes them; or the
    clip's conditioning cache, when a row wrote it."""
    from contextlib import ExitStack
    from dataclasses import replace

    from pipeline.animate import Observation
    from pipeline.conditioning_cache import ConditioningWriter
    from pipeline.config import FramingConfig, StorageConfig, VideoConfig
    from pipeline.storage import Storage
    from pipeline.worker._row import RowRenderer

    animator = StreamingAnimator(tiny_models, resolution=TINY_RESOLUTION)
    renderer = RowRenderer(animator, Storage(StorageConfig()), VideoConfig(), tmp_path)
    video = str(REPO / "manifests/media/driving.mp4")  # 90 frames
    task = RowTask(
        "row", str(PORTRAIT), video, None, str(tmp_path / "job"), "k", None, 0,
        framing=FramingConfig(driving="off" if read == "off" else "face"),
    )  # fmt: skip
    with ExitStack() as stack:
        driving = stack.enter_context(renderer._open(video))
        fed = list(renderer._driving_chunks(task, driving, 0, 90, 90, stack).chunks)
    observed = [animator.observe([chunk])[0] for chunk in fed]  # as a stream alone observes them
    scanned = animator.observe([chunk[:1] for chunk in fed[:12]])  # in one call, as the scan
    if read == "cached":
        writer = ConditioningWriter(tmp_path / "clip.bin")
        for observation in observed:
            writer.add(observation)
        task = replace(task, conditioning_uri=str(writer.close()))
        scanned = [Observation(o.pose.index(slice(0, 1)), o.motion[:1]) for o in observed[:12]]
    with ExitStack() as stack:
        source = renderer._observations(task, 90, stack)
        firsts = list(source(0, 48, True))
        window = list(source(36, 48, False))
    assert len(fed) == 23 and len(firsts) == 12 and len(window) == 3  # nothing past stop
    assert all(torch.equal(a.motion, b.motion) for a, b in zip(firsts, scanned))
    assert all(torch.equal(a.motion, b.motion) for a, b in zip(window, observed[9:12]))


def test_a_part_s_start_does_not_hold_up_other_rows_reference_passes(
    tiny_models, tmp_path: Path, monkeypatch
) -> None:
    """A later part's start (a keyframe scan from the video's start: minutes for a long video)
    runs on a thread of its own: a row accepted beside it, and the row's first part (which
    starts as the whole stream does), render while the later part is still starting; it then
    renders, and joins the row."""
    from pipeline.config import VideoConfig
    from pipeline.worker._row import RowRenderer

    entered, release = threading.Event(), threading.Event()
    original = PartStarter.start

    def slow_start(self, base, observations, first_frame):  # a later part's long scan, held
        if not self.from_start(first_frame):
            entered.set()
            assert release.wait(timeout=120)
        return original(self, base, observations, first_frame)

    monkeypatch.setattr(PartStarter, "start", slow_start)
    animator = StreamingAnimator(tiny_models, resolution=TINY_RESOLUTION)
    with ThreadPoolExecutor(1) as gpu_prep, ThreadPoolExecutor(1) as part_prep:
        renderer = RowRenderer(
            animator, Storage(StorageConfig()), VideoConfig(preset="ultrafast"), tmp_path,
            gpu_prep=gpu_prep, part_prep=part_prep,
        )  # fmt: skip
        video = str(REPO / "manifests/media/driving.mp4")  # 90 frames
        job = str(tmp_path / "job")
        long_row = RowTask("long", str(PORTRAIT), video, None, job, "long-k", None, 0)
        first, later = split_task(long_row, 90, ClusterConfig(split_frames=48, split_overlap=16))
        results: dict[str, RowResult] = {}
        part = threading.Thread(target=lambda: results.update(part=renderer.render(later)))
        part.start()
        assert entered.wait(timeout=60)
        short = RowTask("short", str(PORTRAIT), video, None, job, "short-k", 12, 1)
        results["short"] = renderer.render(short)  # would wait for the part's start before
        assert results["short"].status == "done" and results["short"].frames == 12
        results["first"] = renderer.render(first)
        assert results["first"].status == "done" and results["first"].frames == 48
        assert part.is_alive()  # the part was still starting all along
        release.set()
        part.join(timeout=120)
    assert results["part"].status == "done", results["part"].error
    assert (later.part.start, later.part.end) == (48, 90)
    assert probe(results["part"].output).video.num_frames == 90  # the joined row


# ------------------------------------------------------------------------------------------
# The driver's split
# ------------------------------------------------------------------------------------------


def _task(row_id: str, key: str = "k") -> RowTask:
    return RowTask(row_id, "p.png", "d.mp4", None, "/job", key, None, 0)


def test_part_spans_are_equal_whole_chunks_and_cover_the_row() -> None:
    assert part_spans(100, 0) == [(0, 100)]
    assert part_spans(100, 100) == [(0, 100)]
    assert part_spans(3000, 1500) == [(0, 1500), (1500, 3000)]
    assert part_spans(3001, 1000) == [(0, 752), (752, 1504), (1504, 2256), (2256, 3001)]
    spans = part_spans(1010, 250)
    assert spans[0][0] == 0 and spans[-1][1] == 1010
    assert all(a[1] == b[0] and a[1] % 4 == 0 for a, b in zip(spans, spans[1:]))
    assert all(end - start >= 16 for start, end in spans)


def test_a_start_cost_gives_earlier_parts_more_frames_so_that_all_end_together() -> None:
    # a part starting at s first reads the s frames before it, each at start_cost of a
    # rendered frame's time: part 2 of 3,000 frames at 0.2 renders 1,332 frames after reading
    # 1,668, ending when part 1 ends
    assert part_spans(3000, 1500, 0.2) == [(0, 1668), (1668, 3000)]
    assert part_spans(3000, 1500, 0.0) == part_spans(3000, 1500)  # 0: equal parts
    for frames, split, cost in ((3000, 1500, 0.27), (9001, 1000, 0.1), (1010, 250, 0.5)):
        spans = part_spans(frames, split, cost)
        assert len(spans) == -(-frames // split)
        assert spans[0][0] == 0 and spans[-1][1] == frames
        assert all(a[1] == b[0] and a[1] % 4 == 0 for a, b in zip(spans, spans[1:]))
        assert all(a[1] - a[0] > b[1] - b[0] for a, b in zip(spans, spans[1:]))
        ends = [cost * start + end - start for start, end in spans]  # its read, then its frames
        assert max(ends) - min(ends) <= 6, spans


def test_a_start_cost_out_of_range_is_a_config_problem() -> None:
    from pipeline.config import RenderConfig, config_problems

    cfg = RenderConfig()
    cfg.cluster.split_start_cost = 0.8
    assert any("cluster.split_start_cost=0.8" in p for p in config_problems(cfg))


def test_parts_go_out_longest_first_and_report_as_their_row() -> None:
    cfg = ClusterConfig(split_frames=100, split_overlap=16)
    split = SplitRows(cfg, {"long": 300, "short": 40, "mid": 90})
    tasks = split.tasks([_task("short"), _task("long", "L"), _task("mid")])
    assert [t.row_id for t in tasks] == [
        "long [part 1/3]", "long [part 2/3]", "long [part 3/3]", "mid", "short",
    ]  # fmt: skip
    assert [t.row_key for t in tasks[:3]] == [f"L/part-0{i}of03" for i in (1, 2, 3)]
    assert [(t.part.start, t.part.end) for t in tasks[:3]] == [(0, 100), (100, 200), (200, 300)]
    started = split.event(RowStarted("long [part 2/3]", 100))
    assert started.row_id == "long" and started.total_frames == 300
    assert split.event(RowStarted("long [part 1/3]", 100)) is None
    split.event(RowProgress("long [part 1/3]", 40, 100, 1.0))
    progress = split.event(RowProgress("long [part 2/3]", 30, 100, 1.0))
    assert (progress.row_id, progress.frames_done, progress.total_frames) == ("long", 70, 300)
    assert split.outcome(RowResult("mid", "done", frames=90), 1)[0].row_id == "mid"
    assert split.outcome(RowResult("long [part 1/3]", "done", frames=100), 1) is None
    assert split.outcome(RowResult("long [part 3/3]", "failed", error="disk"), 2) is None
    verdict, attempts = split.outcome(RowResult("long [part 2/3]", "done", frames=100), 1)
    assert (verdict.row_id, verdict.status, attempts) == ("long", "failed", 2)
    assert verdict.error == "part 3/3: disk" and len(verdict.parts) == 3


def test_a_short_row_is_not_split() -> None:
    assert split_task(_task("a"), 50, ClusterConfig(split_frames=64)) == [_task("a")]


def test_a_row_longer_than_a_slots_share_is_cut_to_keep_every_slot_busy() -> None:
    # render c of the benchmark on one worker of 4 slots: the 3,000-frame row would render alone
    # for two thirds of the job; in two parts, two slots take it and two the short rows
    mix = {"long": 3000, **{f"short-{i:02d}": 100 for i in range(30)}}
    assert fill_parts(mix, 4) == {"long": 2}
    assert fill_parts({"alone": 3000}, 4) == {"alone": 4}  # one part per slot
    assert fill_parts({"alone": 3000}, 8) == {"alone": 8}
    assert fill_parts({"alone": 700}, 4) == {"alone": 2}  # parts of at least 320 frames
    assert fill_parts({"alone": 600}, 4) == {}
    assert fill_parts({"alone": 3000}, 1) == {}  # one slot: nothing to fill
    assert fill_parts({f"r{i}": 48 for i in range(64)}, 4) == {}  # none longer than its share
    split = SplitRows(ClusterConfig(), mix)
    tasks = split.tasks([_task(row_id, row_id) for row_id in mix], slots=4)
    assert [(t.row_id, t.part.start, t.part.end) for t in tasks[:2]] == [
        ("long [part 1/2]", 0, 1500), ("long [part 2/2]", 1500, 3000),
    ]  # fmt: skip
    assert [t.part for t in tasks[2:]] == [None] * 30
    # cluster.split_frames still caps a part's length; split_to_fill=false leaves the row whole
    rows = [_task(row_id) for row_id in mix]
    capped = SplitRows(ClusterConfig(split_frames=1000), mix).tasks(rows, 4)
    assert [t.part.end - t.part.start for t in capped if t.part] == [1000, 1000, 1000]
    assert [t.part for t in SplitRows(ClusterConfig(split_to_fill=False), mix).tasks(rows, 4)] == [
        None
    ] * 31


@pytest.fixture(params=["local", "s3"])
def job_ledger(request, tmp_path: Path) -> Ledger:
    if request.param == "local":
        return Ledger(Storage(StorageConfig()), str(tmp_path / "job"))
    server = request.getfixturevalue("moto_s3_server")
    import boto3

    bucket = f"cuts-{tmp_path.name[-20:].lower().replace('_', '-')}"
    boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return Ledger(
        Storage(StorageConfig(s3=S3Config(endpoint_url=server.endpoint_url))), f"s3://{bucket}/job"
    )


def _store(ledger: Ledger, path: str) -> None:
    ledger.storage.put(b"x", f"{ledger.row_uri('long-k')}/{path}")


def test_a_row_an_earlier_run_began_keeps_its_cut(job_ledger: Ledger) -> None:
    """A rerun (other workers, fewer rows left) would cut the row otherwise: its committed
    segments or parts would then be rendered again. It keeps the cut its files show."""
    mix = {"long": 3000, **{f"short-{i:02d}": 100 for i in range(30)}}
    tasks = [_task(row_id, f"{row_id}-k") for row_id in mix]

    def cut(slots: int) -> list[str]:
        chosen = SplitRows(ClusterConfig(), mix, job_ledger).tasks(tasks, slots)
        return [t.row_id for t in chosen if t.row_id.startswith("long")]

    assert earlier_cut(job_ledger, "long-k") is None
    assert cut(4) == ["long [part 1/2]", "long [part 2/2]"]  # nothing stored: the fill cut
    _store(job_ledger, "segments/000000.json")  # an earlier run rendered it whole
    assert earlier_cut(job_ledger, "long-k") == 1
    assert cut(4) == ["long"]
    _store(job_ledger, "part-01of03/segments/000000.json")  # ... or in three parts
    _store(job_ledger, "part-02of03/segments/000000.json")
    assert earlier_cut(job_ledger, "long-k") == 3
    assert cut(4) == [f"long [part {i}/3]" for i in (1, 2, 3)]
    assert cut(1) == [f"long [part {i}/3]" for i in (1, 2, 3)]  # one slot now: still three


# ------------------------------------------------------------------------------------------
# A real job
# ------------------------------------------------------------------------------------------


def _decode(path: Path) -> np.ndarray:
    return np.stack(list(VideoReader(str(path))))


@pytest.mark.slow
def test_a_split_row_renders_every_frame_once_joined_with_audio(
    tmp_path: Path, tiny_weights: Path, ray_local
) -> None:
    video = pattern_video(
        tmp_path / "talk.mp4",
        frames=150,
        size="64x64",
        audio="sine=frequency=440:sample_rate=16000",
    )
    manifest = write_manifest(
        tmp_path / "rows.csv", [{"portrait": str(PORTRAIT), "driving_video": str(video)}]
    )
    out_whole, out_split = tmp_path / "whole", tmp_path / "split"
    base = ["cluster.cpu_workers=2", "video.segment_seconds=1", "video.crf=0"]
    assert run_in_process(tiny_render_overrides(manifest, out_whole, tiny_weights, *base)) == 0
    split = [*base, "cluster.split_frames=64", "cluster.split_overlap=16"]
    assert run_in_process(tiny_render_overrides(manifest, out_split, tiny_weights, *split)) == 0

    summary = json.loads((out_split / "rows" / "summary.json").read_text())
    (row,) = summary["rows"]
    assert row["status"] == "done" and row["frames"] == 150
    assert [(p["start"], p["end"]) for p in row["parts"]] == [(0, 52), (52, 104), (104, 150)]
    output = Path(row["output"])
    info = probe(str(output))
    assert info.video.num_frames == 150 and info.audio is not None
    assert abs(info.audio.duration_seconds - info.video.duration_seconds) <= 1 / 25
    whole = _decode(
        Path(json.loads((out_whole / "rows" / "summary.json").read_text())["rows"][0]["output"])
    )
    joined = _decode(output)
    assert joined.shape == whole.shape
    assert np.array_equal(joined[:52], whole[:52])  # part 1 is the uninterrupted stream
    # later parts: their frames within 1/255 of the unsplit ones (tests above), which the
    # encoder's YUV 4:2:0 rounding turns into a few levels at a few pixels
    difference = np.abs(joined.astype(int) - whole.astype(int))
    assert difference.mean() < 0.05 and difference.max() <= 8, (difference.mean(), difference.max())
    # the parts' folders were tidied by the row's commit
    parts = list((out_split / "rows" / "_rows").glob("*/part-*"))
    assert len(parts) == 3 and not [p for part in parts for p in part.rglob("*") if p.is_file()]
    # the row's commit names the manifest row (not its last part): the benchmarks' exactly-once
    # audit finds one commit, its bytes and its 150 frames
    from scripts.scaling_report import check_job

    assert check_job(out_split / "rows", {row["row_id"]: 150})["problems"] == []


@pytest.mark.slow
def test_an_interrupted_split_row_resumes_each_part_from_its_committed_segments(
    tmp_path: Path, tiny_weights: Path, ray_local
) -> None:
    import os
    import signal

    from job_helpers import start_job, wait_until

    video = pattern_video(tmp_path / "talk.mp4", frames=240, size="64x64")
    manifest = write_manifest(
        tmp_path / "rows.csv", [{"portrait": str(PORTRAIT), "driving_video": str(video)}]
    )
    settings = [
        "cluster.cpu_workers=2", "video.segment_seconds=0.64", "video.first_segment_seconds=0.64",
        "cluster.split_frames=120", "cluster.split_overlap=16",
    ]  # fmt: skip
    args = tiny_render_overrides(manifest, tmp_path / "out", tiny_weights, *settings)
    job_folder = tmp_path / "out" / "rows"

    def committed_segments() -> list[Path]:
        return list(job_folder.glob("_rows/*/part-*/segments/*.json"))

    job = start_job(args, tmp_path / "job.log")
    try:
        wait_until(lambda: len(committed_segments()) >= 3, 180, "segments of the parts")
        os.killpg(job.pid, signal.SIGINT)
        assert job.wait(timeout=60) == 130, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    (row,) = json.loads((job_folder / "summary.json").read_text())["rows"]
    assert row["status"] == "interrupted"

    assert run_in_process(args) == 0
    (row,) = json.loads((job_folder / "summary.json").read_text())["rows"]
    assert row["status"] == "done" and row["frames"] == 240
    commit = json.loads(next(job_folder.glob("_rows/*/commit.json")).read_text())
    assert [p["part"] for p in commit["parts"]] == [0, 1]
    resumed = [p for p in commit["parts"] if p["resumed_from_frame"] > p["start"]]
    assert resumed, commit["parts"]  # not rendered again from the part's start
    # the same frames as a split render that was never interrupted
    straight = tiny_render_overrides(manifest, tmp_path / "straight", tiny_weights, *settings)
    assert run_in_process(straight) == 0
    (clean,) = json.loads((tmp_path / "straight/rows/summary.json").read_text())["rows"]
    assert np.array_equal(_decode(Path(row["output"])), _decode(Path(clean["output"])))


@pytest.mark.slow
def test_a_long_row_is_cut_to_fill_the_workers_slots_and_keeps_its_signals(
    tmp_path: Path, tiny_weights: Path, ray_local, monkeypatch
) -> None:
    """One row on two workers: cut in two (cluster.split_to_fill; its shortest part lowered
    for the tiny clip), joined; its identity/motion samples are the whole row's, each sampled
    by the part its frame fell in."""
    monkeypatch.setattr(split_rows, "FILL_MIN_PART", 40)  # the driver decides the cut
    video = pattern_video(tmp_path / "talk.mp4", frames=150, size="64x64")
    manifest = write_manifest(
        tmp_path / "rows.csv", [{"portrait": str(PORTRAIT), "driving_video": str(video)}]
    )
    base = ["cluster.cpu_workers=2", "video.crf=0"]
    whole_args = [*base, "cluster.split_to_fill=false"]
    assert (
        run_in_process(tiny_render_overrides(manifest, tmp_path / "w", tiny_weights, *whole_args))
        == 0
    )
    assert run_in_process(tiny_render_overrides(manifest, tmp_path / "f", tiny_weights, *base)) == 0
    (whole,) = json.loads((tmp_path / "w/rows/summary.json").read_text())["rows"]
    (filled,) = json.loads((tmp_path / "f/rows/summary.json").read_text())["rows"]
    assert "parts" not in whole or not whole["parts"]
    assert filled["status"] == "done" and filled["frames"] == 150
    assert [(p["start"], p["end"]) for p in filled["parts"]] == [(0, 76), (76, 150)]
    assert len({p["worker"] for p in filled["parts"]}) == 2  # both workers rendered
    assert probe(filled["output"]).video.num_frames == 150
    ours, theirs = filled["signals"], whole["signals"]
    assert ours["times"] == theirs["times"] == [0.48, 1.48, 2.48, 3.48, 4.48, 5.48]
    assert np.allclose(ours["identity"], theirs["identity"], atol=0.02)
    assert np.allclose(ours["motion"], theirs["motion"], atol=0.01)
