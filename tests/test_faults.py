"""Faults with real signals, real full file systems, a real S3 server going down and real worker
deaths: every row still gets a verdict, and nothing committed is lost.

* SIGINT / SIGTERM on the driver (`python run.py` in its own session, signalled like Ctrl-C or
  ``kill``) drain the job; a rerun resumes the interrupted row from its committed segments.
* ENOSPC comes from small tmpfs mounts (an ext4 loop device where tmpfs cannot be mounted); the
  tests are skipped, saying why, when no small file system can be mounted (mounting needs root,
  which CI has).
* S3 is a moto server on 127.0.0.1 (tests/s3_server.py) that is stopped while the job runs, or a
  closed port.
* A poison row: the test plays the kernel's OOM killer, SIGKILLing the worker process each time
  it renders that row (its pid is in the row's segment markers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from job_helpers import run_in_process, start_job, tiny_render_overrides, wait_until, write_manifest
from media_factory import pattern_video
from s3_server import MotoServer, free_port

from pipeline.config import StorageConfig, VideoConfig
from pipeline.ledger import Ledger
from pipeline.media import VideoReader, probe
from pipeline.storage import Storage
from pipeline.worker import RowRenderer, RowTask, build_animator

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"
KIB = 1024


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def row(row_id: str, clip: Path, seed: int = 0) -> dict[str, str]:
    return {"id": row_id, "portrait": str(PORTRAIT), "driving_video": str(clip), "seed": str(seed)}


def job_args(
    manifest: Path | str, output_root: Path | str, weights: Path, *extra: str
) -> list[str]:
    """Overrides of a small CPU render job: tiny model at 64x64, one worker, plain progress."""
    return tiny_render_overrides(manifest, output_root, weights, "cluster.cpu_workers=1", *extra)


def session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (the job's driver, its Ray services and workers)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def kill_session(job: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a job started by `start_job` (a failing test's leftovers)."""
    for process in session_processes(job.pid):
        with contextlib.suppress(psutil.Error):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        job.wait(timeout=30)


def segment_markers(job_folder: Path, row_id: str) -> list[Path]:
    return sorted(job_folder.glob(f"_rows/{row_id}-*/segments/*.json"))


def summary_rows(job_folder: Path) -> dict[str, dict]:
    summary = json.loads((job_folder / "summary.json").read_text())
    return {entry["row_id"]: entry for entry in summary["rows"]}


def leftovers(folder: Path) -> list[Path]:
    """Temp files of atomic writes (``.<name>.<hex>.partial``): never visible as complete."""
    return [path for path in folder.rglob("*") if path.name.endswith(".partial")]


def fill_up(folder: Path) -> int:
    """Write a filler file in ``folder`` until the file system is full; returns its size."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                written += handle.write(b"\0" * 4 * KIB)
    return written


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Driving clips (no audio): "long" 240 frames, "mid" 120, "short" 8, all at 25 fps."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "long": pattern_video(folder / "long.mp4", frames=240, rate="25", size="96x72"),
        "mid": pattern_video(folder / "mid.mp4", frames=120, rate="25", size="96x72"),
        "short": pattern_video(folder / "short.mp4", frames=8, rate="25"),
    }


def _mount(command: list[str]) -> str | None:
    """Run a mount-related command; None on success, else why it failed."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (
        None if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")
    )


@contextlib.contextmanager
def mounted_small_fs(folder: Path, size_kib: int) -> Iterator[str]:
    """A real file system of about ``size_kib`` KiB at ``folder``; yields its kind.

    A tmpfs of that size (needs root, or CAP_SYS_ADMIN); else an ext4 file system in a loop
    device. Both give real ENOSPC. (`ulimit -f`, the other option, is no stand-in: it gives EFBIG
    for every file of the process, Ray's logs included, not ENOSPC.) Skips the test, saying why,
    when neither can be mounted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmpfs = _mount(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "tmpfs", str(folder)]
    )
    kind = "tmpfs"
    if tmpfs is not None:
        image = folder.parent / f"{folder.name}.ext4"
        loop = _mount(["truncate", "-s", f"{max(size_kib, 1024)}k", str(image)]) or _mount(
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)]
        )
        loop = loop or _mount(["mount", "-o", "loop", str(image), str(folder)])
        if loop is not None:
            pytest.skip(
                f"cannot mount a small file system for a real ENOSPC (tmpfs: {tmpfs}; ext4 loop "
                f"device: {loop}); run as root, as CI does"
            )
        kind = "ext4 loop device"
    try:
        yield kind
    finally:
        if _mount(["umount", str(folder)]) is not None:
            _mount(["umount", "-l", str(folder)])


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_fs(size_kib)`` mounts a small real file system and returns its folder."""
    with contextlib.ExitStack() as stack:

        def make(size_kib: int) -> Path:
            folder = tmp_path / f"fs{size_kib}k"
            stack.enter_context(mounted_small_fs(folder, size_kib))
            return folder

        yield make


# ------------------------------------------------------------------------------------------
# SIGINT / SIGTERM
# ------------------------------------------------------------------------------------------

INTERRUPTED_MID_ROW = re.compile(
    r"job interrupted while this row was rendering; (\d+) frames in (\d+) committed segment\(s\) "
    r"are kept: rerun the same job to resume it from frame \1$"
)
INTERRUPTED_WAITING = "job interrupted before this row started; rerun the same job to render it"


@pytest.mark.slow
def assert_status_agrees_with_summary(job_folder: Path) -> None:
    """status.json counts each row once, as summary.json does (in every state of the job)."""
    status = json.loads((job_folder / "status.json").read_text())
    totals = json.loads((job_folder / "summary.json").read_text())["totals"]
    statuses = ("done", "failed", "skipped", "quarantined", "interrupted")
    assert {k: status["rows"][k] for k in statuses} == {k: totals[k] for k in statuses}
    assert status["rows"]["total"] == totals["rows"]


@pytest.mark.slow
def test_sigint_drains_the_job_and_a_rerun_resumes_the_interrupted_row(
    ray_local, tiny_weights, clips, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "drain.csv",
        [
            row("long", clips["mid"]),
            row("short-a", clips["short"]),
            row("short-b", clips["short"], 1),
        ],
    )
    # no row prepared ahead: the short rows wait in the driver until the long one is done
    args = job_args(
        manifest, tmp_path / "out", tiny_weights, "video.segment_seconds=0.64",
        "cluster.rows_ahead=0",
    )  # fmt: skip
    job_folder = tmp_path / "out/drain"
    job = start_job(args, tmp_path / "drain.log")
    try:
        wait_until(lambda: len(segment_markers(job_folder, "long")) >= 2, 120, "two segments")
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        assert job.wait(timeout=60) == 130, (tmp_path / "drain.log").read_text()[-3000:]
        # Ray's services and workers went with the driver: nothing of the job is left running
        wait_until(lambda: not session_processes(job.pid), 30, "the job's processes to exit")
    finally:
        kill_session(job)
    log = (tmp_path / "drain.log").read_text()
    assert "SIGINT received: stopping. No new row starts" in log

    rows = summary_rows(job_folder)
    assert {name: entry["status"] for name, entry in rows.items()} == dict.fromkeys(
        ("long", "short-a", "short-b"), "interrupted"
    )
    kept = INTERRUPTED_MID_ROW.match(rows["long"]["error"])
    assert kept, rows["long"]["error"]
    assert rows["short-a"]["error"] == rows["short-b"]["error"] == INTERRUPTED_WAITING
    status = json.loads((job_folder / "status.json").read_text())
    assert status["state"] == "interrupted" and status["rows"]["interrupted"] == 3
    assert_status_agrees_with_summary(job_folder)
    assert (job_folder / "report.html").is_file()
    # nothing half-written looks complete: no public video, no commit marker, no temp file
    assert not list(job_folder.glob("*.mp4")) and not list(job_folder.rglob("commit.json"))
    assert not leftovers(job_folder)
    (key,) = [
        path.name for path in (job_folder / "_rows").iterdir() if path.name.startswith("long-")
    ]
    committed = Ledger(Storage(StorageConfig()), str(job_folder)).row(key)
    assert committed.frames_committed == int(kept.group(1)) >= 32
    assert len(committed.segments) == int(kept.group(2))

    # the same job again: every row renders, the long one from its last committed segment
    assert run_in_process(args) == 0
    rows = summary_rows(job_folder)
    assert {entry["status"] for entry in rows.values()} == {"done"}
    assert_status_agrees_with_summary(job_folder)
    marker = json.loads((job_folder / "_rows" / key / "commit.json").read_text())
    assert marker["resumed_from_frame"] == committed.frames_committed
    # frame for frame what a render that was never interrupted gives
    straight = write_manifest(tmp_path / "straight.csv", [row("long", clips["mid"])])
    args = job_args(straight, tmp_path / "straight", tiny_weights, "video.segment_seconds=0.64")
    assert run_in_process(args) == 0
    reference = summary_rows(tmp_path / "straight/straight")["long"]["output"]
    resumed = np.stack(list(VideoReader(rows["long"]["output"])))
    assert resumed.shape == (120, 64, 64, 3)
    assert np.array_equal(resumed, np.stack(list(VideoReader(reference))))


@pytest.mark.slow
def test_sigterm_to_the_driver_drains_the_job_too(tiny_weights, clips, tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "term.csv", [row("long", clips["long"]), row("short", clips["short"])]
    )
    args = job_args(
        manifest, tmp_path / "out", tiny_weights, "video.segment_seconds=0.64",
        "cluster.rows_ahead=0",
    )  # fmt: skip
    job_folder = tmp_path / "out/term"
    job = start_job(args, tmp_path / "term.log")
    try:
        wait_until(lambda: segment_markers(job_folder, "long"), 120, "a committed segment")
        job.send_signal(signal.SIGTERM)  # the driver only, as `kill` or a container runtime does
        assert job.wait(timeout=60) == 143, (tmp_path / "term.log").read_text()[-3000:]
        wait_until(lambda: not session_processes(job.pid), 30, "the job's processes to exit")
    finally:
        kill_session(job)
    rows = summary_rows(job_folder)
    assert rows["long"]["status"] == "interrupted"
    assert INTERRUPTED_MID_ROW.match(rows["long"]["error"]), rows["long"]["error"]
    assert rows["short"] == {**rows["short"], "status": "interrupted", "error": INTERRUPTED_WAITING}
    assert json.loads((job_folder / "status.json").read_text())["state"] == "interrupted"


def test_a_second_signal_stops_at_once_and_a_third_gets_the_default_action() -> None:
    from jobs.render import JobInterrupted, StopSignals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: stop.requested, 5, "the first signal to be handled")
        assert (stop.name, stop.exit_code) == ("SIGTERM", 143)
        with pytest.raises(JobInterrupted, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises in this thread as soon as the signal arrives
        assert stop.exit_code == 143  # the first signal decides the exit code
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # a third one kills the process
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ------------------------------------------------------------------------------------------
# Disk full (ENOSPC)
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_output_disk_fails_the_row_cleanly_and_the_others_render(
    ray_local, tiny_weights, clips, small_fs, tmp_path: Path
) -> None:
    """A 256 KiB file system takes the short rows' videos but not the 120-frame row's segment."""
    out = small_fs(256)
    manifest = write_manifest(
        tmp_path / "full.csv",
        [
            row("short-a", clips["short"]),
            row("big", clips["mid"]),
            row("short-b", clips["short"], 1),
        ],
    )
    # one segment per row, one row at a time (a row uploading beside another could fill the disk
    # for both)
    args = job_args(
        manifest, out, tiny_weights, "video.segment_seconds=60", "video.first_segment_seconds=null",
        "cluster.row_retries=1", "cluster.rows_ahead=0", "cluster.order=manifest",
    )  # fmt: skip
    assert run_in_process(args) == 1
    job_folder = out / "full"
    rows = summary_rows(job_folder)
    assert (rows["short-a"]["status"], rows["short-b"]["status"]) == ("done", "done")
    for name in ("short-a", "short-b"):
        assert probe(rows[name]["output"]).video.num_frames == 8
    big = rows["big"]
    assert (big["status"], big["attempts"]) == ("failed", 2)  # retried once: space may come back
    (key,) = [
        path.name for path in (job_folder / "_rows").iterdir() if path.name.startswith("big-")
    ]
    segment = job_folder / "_rows" / key / "segments/000000.mp4"
    assert big["error"] == (
        f"no space left on device writing {segment}; free space or choose another "
        "storage.output_root"
    )
    # nothing of the failed row looks complete, and no temp file is left taking space
    assert not list((job_folder / "_rows" / key).rglob("*.json"))
    assert not list(job_folder.glob("big-*.mp4")) and not leftovers(out)
    assert (job_folder / "report.html").is_file()


@pytest.mark.slow
def test_a_summary_that_cannot_be_written_is_reported_and_the_exit_code_says_so(
    ray_local, tiny_weights, clips, small_fs, tmp_path: Path, monkeypatch, caplog
) -> None:
    """The disk fills up once the job has started: rows fail, and so does summary.json."""
    import jobs.render as render_module

    out = small_fs(128)
    validate = render_module.validate_manifest

    def validate_then_fill_the_disk(*args, **kwargs):
        result = validate(*args, **kwargs)
        assert fill_up(out) > 0  # config.yaml is written: now nothing else fits
        return result

    monkeypatch.setattr(render_module, "validate_manifest", validate_then_fill_the_disk)
    manifest = write_manifest(tmp_path / "nosummary.csv", [row("short", clips["short"])])
    caplog.set_level(logging.INFO)
    code = run_in_process(
        job_args(
            manifest,
            out,
            tiny_weights,
            "cluster.row_retries=0",
            "video.segment_seconds=60",
            "video.first_segment_seconds=null",
        )
    )
    assert code == 3
    summary = out / "nosummary/summary.json"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"could not write the job summary {summary}: no space left on device writing {summary}; "
        "free space or choose another storage.output_root. The table above is this run's only "
        "record; rows committed so far stay committed (a rerun of the same job skips them)"
    ]
    assert "row_finished row=short status=failed" in caplog.text
    assert "no space left on device writing" in caplog.text
    assert not summary.exists() and not leftovers(out)


@pytest.mark.slow
def test_full_scratch_disk_fails_the_row_cleanly(tiny_weights, clips, small_fs, tmp_path) -> None:
    """Workers keep scratch files under TMPDIR: a 128 KiB one takes the short rows' files only."""
    scratch = small_fs(128)
    manifest = write_manifest(
        tmp_path / "scratch.csv",
        [
            row("short-a", clips["short"]),
            row("big", clips["mid"]),
            row("short-b", clips["short"], 1),
        ],
    )
    args = job_args(
        manifest, tmp_path / "out", tiny_weights, "video.segment_seconds=60",
        "video.first_segment_seconds=null",
    )  # fmt: skip
    env = {"TMPDIR": str(scratch), "RAY_TMPDIR": "/tmp"}  # Ray's own files stay off it
    job = start_job(args, tmp_path / "scratch.log", env)
    try:
        assert job.wait(timeout=180) == 1, (tmp_path / "scratch.log").read_text()[-3000:]
    finally:
        kill_session(job)
    rows = summary_rows(tmp_path / "out/scratch")
    assert (rows["short-a"]["status"], rows["short-b"]["status"]) == ("done", "done")
    big = rows["big"]
    assert big["status"] == "failed"
    assert re.search(
        rf"{re.escape(str(scratch))}/portrait-render-\w+/big-\w+/segment-000000\.mp4", big["error"]
    )
    assert "No space left on device" in big["error"]
    assert "scratch disk" in big["error"] and "point TMPDIR at a larger disk" in big["error"]
    assert not list((tmp_path / "out/scratch").glob("big-*.mp4"))


# ------------------------------------------------------------------------------------------
# S3 down
# ------------------------------------------------------------------------------------------


@pytest.fixture
def private_s3() -> Iterator[MotoServer]:
    """A moto S3 server of the test's own (stopping it does not disturb other tests)."""
    with MotoServer() as server:
        yield server


def make_bucket(endpoint: str, name: str):
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


def test_s3_endpoint_down_from_the_start_is_one_clear_error(
    tiny_weights, clips, tmp_path: Path, caplog
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    manifest = write_manifest(tmp_path / "down.csv", [row("a", clips["short"])])
    args = job_args(
        manifest, "s3://outputs/run", tiny_weights,
        f"storage.s3.endpoint_url={endpoint}", "storage.s3.max_attempts=2",
    )  # fmt: skip
    assert run_in_process(args) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith(
        f"cannot write to the output folder s3://outputs/run/down: could not reach S3 endpoint "
        f"{endpoint} after 2 attempts"
    )
    assert error.endswith("; nothing was rendered")


@pytest.mark.slow
def test_s3_inputs_going_down_fail_each_row_after_bounded_retries(
    ray_local, tiny_weights, clips, private_s3: MotoServer, tmp_path: Path, monkeypatch
) -> None:
    """Inputs on S3, output local: the rows that cannot read their inputs are retried
    (cluster.row_retries) and then fail with the storage message naming the endpoint."""
    import jobs.render as render_module

    endpoint = private_s3.endpoint_url
    client = make_bucket(endpoint, "inputs")
    client.upload_file(str(clips["short"]), "inputs", "clip.mp4")
    client.upload_file(str(PORTRAIT), "inputs", "face.png")
    rows = [
        {"id": f"s3-{i}", "portrait": "s3://inputs/face.png", "driving_video": "s3://inputs/clip.mp4", "seed": str(i)}
        for i in range(2)
    ]  # fmt: skip
    manifest = write_manifest(tmp_path / "s3in.csv", rows)
    start_workers = render_module.describe_workers

    def stop_s3_then_start_workers(*args, **kwargs):
        private_s3.stop()  # validated and planned: the rows have not read their inputs yet
        return start_workers(*args, **kwargs)

    monkeypatch.setattr(render_module, "describe_workers", stop_s3_then_start_workers)
    args = job_args(
        manifest, tmp_path / "out", tiny_weights,
        f"storage.s3.endpoint_url={endpoint}", "storage.s3.max_attempts=2", "cluster.row_retries=2",
    )  # fmt: skip
    assert run_in_process(args) == 1
    for entry in summary_rows(tmp_path / "out/s3in").values():
        assert (entry["status"], entry["attempts"]) == ("failed", 3)
        assert entry["error"].startswith(f"could not reach S3 endpoint {endpoint} after 2 attempts")
        assert "check storage.s3.endpoint_url and that the store is up" in entry["error"]


@pytest.mark.slow
def test_s3_output_going_down_mid_job_fails_rows_and_says_the_summary_is_lost(
    tiny_weights, clips, private_s3: MotoServer, tmp_path: Path
) -> None:
    endpoint = private_s3.endpoint_url
    client = make_bucket(endpoint, "results")
    manifest = write_manifest(
        tmp_path / "s3out.csv", [row("long", clips["long"]), row("short", clips["short"])]
    )
    args = job_args(
        manifest, "s3://results/out", tiny_weights, "video.segment_seconds=0.64",
        f"storage.s3.endpoint_url={endpoint}", "storage.s3.max_attempts=2", "cluster.row_retries=1",
    )  # fmt: skip
    log = tmp_path / "s3out.log"
    job = start_job(args, log)

    def segment_committed() -> bool:
        listed = client.list_objects_v2(Bucket="results", Prefix="out/s3out/_rows/")
        return any(item["Key"].endswith(".json") for item in listed.get("Contents", []))

    try:
        wait_until(segment_committed, 120, "a committed segment on S3")
        private_s3.stop()
        assert job.wait(timeout=180) == 3, log.read_text()[-3000:]
    finally:
        kill_session(job)
    text = log.read_text()
    unreachable = f"could not reach S3 endpoint {endpoint} after 2 attempts"
    for name in ("long", "short"):
        assert re.search(
            rf'row_finished row={name} status=failed .*attempts=2 error="{re.escape(unreachable)}',
            text,
        ), text[-3000:]
    assert "row_retrying row=long attempt=2" in text
    assert re.search(
        rf"ERROR jobs.render: could not write the job summary s3://results/out/s3out/summary.json: "
        rf"{re.escape(unreachable)}",
        text,
    )
    assert "Traceback" not in text


def test_status_json_write_failures_back_off_and_never_stop_the_job(caplog) -> None:
    """A store that is down (any error of the writer) costs one warning, then writes are retried
    with a growing pause (so a slow, failing store does not stall the driver at every event)."""
    from pipeline.progress import JobFinished, JobStarted, RowStarted, StatusFile
    from pipeline.storage import StorageError

    now = [0.0]
    attempts: list[float] = []
    down = [True]

    def put(uri: str, data: bytes) -> None:
        attempts.append(now[0])
        if down[0]:
            raise StorageError(f"could not reach S3 endpoint http://127.0.0.1:9 to PUT {uri}")

    status = StatusFile("s3://b/job/status.json", write_bytes=put, clock=lambda: now[0])
    status.handle(JobStarted("job", 3))
    for second in range(1, 40):
        now[0] = float(second)
        status.handle(RowStarted(f"r{second}", 10))
    assert attempts == [0.0, 2.0, 6.0, 14.0, 30.0]  # 1 s doubled per failure (capped at 60 s)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "could not write s3://b/job/status.json: could not reach S3 endpoint http://127.0.0.1:9 "
        "to PUT s3://b/job/status.json (will retry in 2 s)"
    ]
    down[0] = False
    status.handle(JobFinished("interrupted"))  # the final state is always attempted
    assert status.writes == 1 and attempts[-1] == 39.0


# ------------------------------------------------------------------------------------------
# Poison rows and GPU out-of-memory
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def oom_killer(job_folder: Path, row_id: str) -> Iterator[list[int]]:
    """Play the kernel's OOM killer for one row: SIGKILL the worker process each time it commits
    a segment of ``row_id`` (the pid is in the segment marker). Yields the pids killed."""
    killed: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for marker in segment_markers(job_folder, row_id):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    pid = json.loads(marker.read_text())["pid"]
                    if pid not in killed:
                        killed.append(pid)
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    thread = threading.Thread(target=watch, name="oom-killer", daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        done.set()
        thread.join()


@pytest.mark.slow
def test_a_row_that_kills_its_worker_twice_is_quarantined(
    ray_local, tiny_weights, clips, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "poison.csv",
        [
            row("good-a", clips["short"]),
            row("poison", clips["long"]),
            row("good-b", clips["short"], 1),
        ],
    )
    job_folder = tmp_path / "out/poison"
    args = job_args(manifest, tmp_path / "out", tiny_weights, "video.segment_seconds=0.64")
    with oom_killer(job_folder, "poison") as killed:
        assert run_in_process(args) == 1
    rows = summary_rows(job_folder)
    # good-b runs on the worker Ray restarted after the second death
    assert (rows["good-a"]["status"], rows["good-b"]["status"]) == ("done", "done")
    poison = rows["poison"]
    assert (poison["status"], poison["attempts"]) == ("quarantined", 2)
    assert re.fullmatch(
        r"quarantined: this row killed its worker 2 times \(last: .+\); it is skipped so the "
        r"other rows can finish",
        poison["error"],
    ), poison["error"]
    assert len(killed) == 2  # two worker processes died, then the row was left alone
    assert not list(job_folder.glob("poison-*.mp4"))
    assert segment_markers(job_folder, "poison")  # its committed segments are kept for a rerun


@pytest.mark.slow
def test_rows_left_when_every_worker_is_gone_fail_instead_of_waiting(
    ray_local, tiny_weights, clips, tmp_path: Path
) -> None:
    """With cluster.max_restarts=0 one death ends the only worker: the rows left fail at once."""
    manifest = write_manifest(
        tmp_path / "gone.csv", [row("poison", clips["long"]), row("after", clips["short"])]
    )
    job_folder = tmp_path / "out/gone"
    # no row prepared ahead: "after" waits in the driver while "poison" renders
    args = job_args(
        manifest, tmp_path / "out", tiny_weights, "video.segment_seconds=0.64",
        "cluster.max_restarts=0", "cluster.rows_ahead=0",
    )  # fmt: skip
    with oom_killer(job_folder, "poison") as killed:
        assert run_in_process(args) == 1
    assert len(killed) == 1
    rows = summary_rows(job_folder)
    for name in ("poison", "after"):
        assert rows[name]["status"] == "failed"
        assert rows[name]["error"] == (
            "no render worker left alive: every worker died more often than "
            "cluster.max_restarts=0 allows (see the warnings above); rerun the job to render this row"
        )


OOM_MESSAGE = (
    "GPU out of memory; lower model.streams_per_worker (or model.resolution), or use a GPU with "
    "more memory"
)


@pytest.mark.parametrize("where", ["fuse_reference", "advance"])
def test_gpu_out_of_memory_is_reported_with_the_setting_to_lower(
    tiny_weights, clips, tmp_path: Path, monkeypatch, where: str
) -> None:
    """An OOM from the animator (the reference pass, or a denoising step mid-row) fails the row
    with the OOM message; it is not retried, and the segments committed before it are kept."""
    from pipeline.config import ModelConfig

    model = ModelConfig(
        architecture="tiny",
        weights_dir=str(tiny_weights),
        dtype="fp32",
        device="cpu",
        resolution=64,
    )
    animator = build_animator(model)
    real = getattr(animator, where)
    calls = []

    def out_of_memory(*args, **kwargs):
        calls.append(where)
        if where == "fuse_reference" or len(calls) > 8:  # mid-row: after 8 chunk calls
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(animator, where, out_of_memory)
    renderer = RowRenderer(
        animator, Storage(StorageConfig()), VideoConfig(preset="ultrafast", segment_seconds=0.32),
        tmp_path / "scratch",
    )  # fmt: skip
    (tmp_path / "scratch").mkdir()
    job = tmp_path / "job"
    task = RowTask("row", str(PORTRAIT), str(clips["long"]), None, str(job), "row-key", None, 0)
    outcome = renderer.render(task)
    assert (outcome.status, outcome.error, outcome.retryable) == ("failed", OOM_MESSAGE, False)
    record = Ledger(Storage(StorageConfig()), str(job)).row("row-key")
    assert record.commit is None
    if where == "advance":
        assert record.frames_committed >= 8  # what was committed before the OOM stays
