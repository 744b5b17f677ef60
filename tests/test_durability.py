"""Durable outputs: a real S3 endpoint (moto's server on 127.0.0.1), exactly-once commits,
reruns that skip committed rows, and real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from job_helpers import run_in_process, start_job, tiny_render_overrides, wait_until, write_manifest
from media_factory import pattern_video, video_with_click

from pipeline.config import S3Config, StorageConfig
from pipeline.ledger import Ledger
from pipeline.media import VideoReader, probe
from pipeline.storage import Storage

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def make_bucket(endpoint: str, name: str) -> str:
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, str]:
    """key → ETag of every object under ``prefix``."""
    client = s3_client(endpoint)
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"]
    return found


def overrides(
    manifest: str, output_root: str, weights: Path, *extra: str, endpoint: str | None = None
) -> list[str]:
    s3 = [f"storage.s3.endpoint_url={endpoint}"] if endpoint else []
    return tiny_render_overrides(manifest, output_root, weights, *s3, *extra)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def frames_of(path: str | Path) -> np.ndarray:
    return np.stack(list(VideoReader(str(path))))


@pytest.fixture
def s3_inputs(moto_s3_server, tmp_path: Path):
    """A bucket holding a manifest (relative paths), two driving clips with audio and a portrait."""
    endpoint = moto_s3_server.endpoint_url
    bucket = make_bucket(endpoint, f"job-{os.getpid()}-{time.monotonic_ns() % 10**9}")
    client = s3_client(endpoint)
    clip_a = video_with_click(tmp_path / "a.mp4", duration=1.2, click_at=0.5)
    clip_b = pattern_video(
        tmp_path / "b.mp4", frames=22, rate="25", audio="sine=frequency=440:duration=2"
    )
    for local, key in (
        (clip_a, "in/clips/a.mp4"),
        (clip_b, "in/clips/b.mp4"),
        (PORTRAIT, "in/faces/p.png"),
    ):
        client.upload_file(str(local), bucket, key)
    manifest = write_manifest(
        tmp_path / "s3job.csv",
        [
            {"id": "alpha", "portrait": "faces/p.png", "driving_video": "clips/a.mp4"},
            {"id": "beta", "portrait": "faces/p.png", "driving_video": "clips/b.mp4", "seed": "5"},
        ],
    )
    client.upload_file(str(manifest), bucket, "in/s3job.csv")
    return endpoint, bucket


@pytest.mark.slow
def test_whole_job_reads_and_writes_s3_and_a_rerun_skips_committed_rows(
    ray_local, tiny_weights, s3_inputs, tmp_path
) -> None:
    endpoint, bucket = s3_inputs
    args = overrides(
        f"s3://{bucket}/in/s3job.csv", f"s3://{bucket}/out", tiny_weights, endpoint=endpoint
    )
    assert run_in_process(args) == 0
    objects = keys(endpoint, bucket, "out/s3job/")
    public = sorted(k for k in objects if k.endswith(".mp4") and "/_rows/" not in k)
    assert len(public) == 2 and all(
        k.split("/")[-1].startswith(("alpha-", "beta-")) for k in public
    )
    markers = [k for k in objects if k.endswith("/commit.json")]
    assert len(markers) == 2
    assert not [k for k in objects if "/segments/" in k], (
        "segments are removed once a row is committed"
    )
    storage = Storage(StorageConfig(s3=S3Config(endpoint_url=endpoint)))
    for marker_key in markers:
        marker = json.loads(storage.read_bytes(f"s3://{bucket}/{marker_key}"))
        uploads = [
            k for k in objects if k.startswith(marker_key.rsplit("/", 1)[0]) and "/video." in k
        ]
        assert uploads == [
            marker["video_source"].split(f"s3://{bucket}/")[1]
        ]  # one upload per row, the committed one
        local = tmp_path / f"{marker['row_id']}.mp4"
        storage.download(marker["video"], local)
        import hashlib

        assert hashlib.sha256(local.read_bytes()).hexdigest() == marker["video_sha256"]
        info = probe(local)
        assert info.video.num_frames == marker["frames"] and info.audio is not None
    summary = json.loads(storage.read_bytes(f"s3://{bucket}/out/s3job/summary.json"))
    assert {r["status"] for r in summary["rows"]} == {"done"}

    # the same job again: nothing is rendered twice, nothing changes
    assert run_in_process(args) == 0
    assert keys(endpoint, bucket, "out/s3job/_rows/") == {
        k: v for k, v in objects.items() if "/_rows/" in k
    }
    summary = json.loads(storage.read_bytes(f"s3://{bucket}/out/s3job/summary.json"))
    assert [r["status"] for r in summary["rows"]] == ["skipped", "skipped"]
    assert all("already rendered" in r["error"] for r in summary["rows"])

    # a setting that changes the pixels re-renders the rows under new names
    assert run_in_process(args + ["video.crf=30"]) == 0
    after = keys(endpoint, bucket, "out/s3job/")
    assert len([k for k in after if k.endswith("/commit.json")]) == 4


def test_a_second_commit_of_a_row_is_refused_by_the_conditional_write(
    moto_s3_server, tmp_path
) -> None:
    endpoint = moto_s3_server.endpoint_url
    bucket = make_bucket(endpoint, "commit-twice")
    storage = Storage(StorageConfig(s3=S3Config(endpoint_url=endpoint)))
    statuses: list[tuple[str, int]] = []

    def record(http_response, **kwargs):
        statuses.append((kwargs["context"].get("s3_key", ""), http_response.status_code))

    def remember_key(params, context, **kwargs):
        context["s3_key"] = params.get("Key", "")

    storage.s3_client.meta.events.register("before-parameter-build.s3.PutObject", remember_key)
    storage.s3_client.meta.events.register("after-call.s3.PutObject", record)
    ledger = Ledger(storage, f"s3://{bucket}/job")
    video = pattern_video(tmp_path / "v.mp4", frames=8)
    won, marker = ledger.commit_row("row-abc", str(video), {"frames": 8})
    again, existing = ledger.commit_row("row-abc", str(video), {"frames": 8})
    assert won and not again
    assert existing == marker  # the first commit stands
    marker_statuses = [status for key, status in statuses if key.endswith("commit.json")]
    assert marker_statuses == [200, 412]
    rows = [k for k in keys(endpoint, bucket, "job/_rows/row-abc/") if "/video." in k]
    assert len(rows) == 1, "the losing attempt's upload is removed"


@pytest.mark.slow
def test_driver_killed_midway_then_rerun_commits_every_row_exactly_once(
    moto_s3_server, tiny_weights, tmp_path
) -> None:
    endpoint = moto_s3_server.endpoint_url
    bucket = make_bucket(endpoint, "driver-kill")
    client = s3_client(endpoint)
    clip = pattern_video(tmp_path / "clip.mp4", frames=60, rate="25")
    client.upload_file(str(clip), bucket, "in/clip.mp4")
    client.upload_file(str(PORTRAIT), bucket, "in/p.png")
    rows = [
        {"id": f"row{i}", "portrait": "p.png", "driving_video": "clip.mp4", "seed": str(i)}
        for i in range(6)
    ]
    client.upload_file(str(write_manifest(tmp_path / "six.csv", rows)), bucket, "in/six.csv")
    args = overrides(
        f"s3://{bucket}/in/six.csv",
        f"s3://{bucket}/out",
        tiny_weights,
        "cluster.cpu_workers=2",
        endpoint=endpoint,
    )

    def commits() -> dict[str, str]:
        return {
            k: v
            for k, v in keys(endpoint, bucket, "out/six/_rows/").items()
            if k.endswith("commit.json")
        }

    first = start_job(args, tmp_path / "first.log")
    try:
        wait_until(lambda: len(commits()) >= 2, 180, "two committed rows")
        os.kill(first.pid, signal.SIGKILL)  # the driver only
        first.wait(timeout=30)
    finally:
        kill_group(first)  # what the killed driver left behind (Ray's processes)
    committed_before = commits()
    assert 2 <= len(committed_before) < 6
    # a driver killed between a row's commit marker and its public copy leaves that row to be
    # repaired (copied from its committed upload) by the rerun, not skipped
    published_before = set()
    for marker_key in committed_before:
        marker = json.loads(client.get_object(Bucket=bucket, Key=marker_key)["Body"].read())
        public_key = marker["video"].split(f"s3://{bucket}/", 1)[1]
        if public_key in keys(endpoint, bucket, public_key):
            published_before.add(marker["row_key"])

    second = start_job(args, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    kill_group(second)
    committed_after = commits()
    assert len(committed_after) == 6
    assert {k: committed_after[k] for k in committed_before} == committed_before  # not re-committed
    summary = json.loads(
        client.get_object(Bucket=bucket, Key="out/six/summary.json")["Body"].read()
    )
    statuses = {r["row_id"]: r["status"] for r in summary["rows"]}
    skipped = {row for row, status in statuses.items() if status == "skipped"}
    assert len(skipped) >= len(published_before) and set(statuses.values()) <= {"done", "skipped"}
    everything = keys(endpoint, bucket, "out/six/")
    public = [k for k in everything if k.endswith(".mp4") and "/_rows/" not in k]
    uploads = [k for k in everything if "/_rows/" in k and "/video." in k]
    assert len(public) == 6 and len(uploads) == 6, (
        "one public video and one committed upload per row"
    )
    assert not [k for k in everything if "/segments/" in k or ".partial" in k]


@pytest.mark.slow
def test_worker_killed_mid_row_resumes_from_its_last_segment(tiny_weights, tmp_path) -> None:
    clip = pattern_video(tmp_path / "long.mp4", frames=240, rate="25", size="96x72")
    manifest = write_manifest(
        tmp_path / "long.csv",
        [{"id": "long", "portrait": str(PORTRAIT), "driving_video": str(clip), "seed": "3"}],
    )
    common = ("cluster.cpu_workers=1", "video.segment_seconds=0.64")  # 16-frame segments
    reference = start_job(
        overrides(str(manifest), str(tmp_path / "straight"), tiny_weights, *common),
        tmp_path / "ref.log",
    )
    assert reference.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    kill_group(reference)

    out = tmp_path / "killed"
    job = start_job(
        overrides(str(manifest), str(out), tiny_weights, *common), tmp_path / "killed.log"
    )
    try:
        segments = lambda: sorted((out / "long" / "_rows").glob("*/segments/*.json"))  # noqa: E731
        markers = wait_until(
            lambda: segments() if len(segments()) >= 3 else None, 180, "three committed segments"
        )
        worker_pid = json.loads(markers[-1].read_text())["pid"]
        os.kill(worker_pid, signal.SIGKILL)
        assert job.wait(timeout=300) == 0, (tmp_path / "killed.log").read_text()[-3000:]
    finally:
        kill_group(job)
    summary = json.loads((out / "long/summary.json").read_text())
    (row,) = summary["rows"]
    assert row["status"] == "done" and row["attempts"] == 2
    marker = json.loads(next((out / "long/_rows").glob("*/commit.json")).read_text())
    assert marker["resumed_from_frame"] >= 3 * 16  # not from frame 0
    straight = json.loads((tmp_path / "straight/long/summary.json").read_text())["rows"][0][
        "output"
    ]
    resumed, uninterrupted = frames_of(row["output"]), frames_of(straight)
    assert resumed.shape == uninterrupted.shape == (240, 64, 64, 3)
    assert np.array_equal(resumed, uninterrupted)  # frame for frame
