"""The elastic worker pool: nodes that join a running job get workers, nodes that leave take
theirs along without losing a committed frame or counting as a crash of their rows.

The slow tests run a real multi-node Ray cluster on loopback (`ray.cluster_utils.Cluster`: a
head and worker nodes, each its own raylet, all on 127.0.0.1, no dashboard), separate from the
session's embedded Ray, and the job as the real CLI joining it (``cluster.address=<head>``).
The fast ones check the rule that sizes the pool and what ``status.json`` says of the workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from job_helpers import start_job, tiny_render_overrides, wait_until, write_manifest
from media_factory import pattern_video
from rich.console import Console

from pipeline.cluster import HEAD_RESOURCE, NODE_LEFT, workers_to_start
from pipeline.config import ClusterConfig
from pipeline.media import VideoReader
from pipeline.progress import (
    JobFinished,
    JobStarted,
    RichProgress,
    StatusFile,
    WorkerJoined,
    WorkerLeft,
    WorkerReady,
    WorkerRoster,
)

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "manifests/media/portrait_a.png"
FRAMES = 100  # per row: about 8 s on one tiny CPU worker, in 16-frame segments
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}  # one CPU worker per node


# ------------------------------------------------------------------------------------------
# The rule: how many workers each node gets
# ------------------------------------------------------------------------------------------


def node(node_id: str, cpus: float, gpus: float = 0, *, head: bool = False, alive: bool = True):
    """A node as ``ray.nodes()`` lists it (the fields the rule reads)."""
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    if head:
        resources[HEAD_RESOURCE] = 1.0
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


def test_cpu_clusters_get_cpu_workers_per_node_as_their_cpus_allow() -> None:
    cfg = ClusterConfig()  # cpu_workers=2, cpus_per_worker=1
    # one machine: cpu_workers, as before the pool was elastic
    assert workers_to_start(cfg, [node("h", 8, head=True)], {}) == ({"h": 2}, False)
    # a node joins: it gets its own; the head, full, none
    grown = [node("h", 8, head=True), node("b", 4)]
    assert workers_to_start(cfg, grown, {"h": 2}) == ({"b": 2}, False)
    # never more than a node's CPUs hold; a head started with --num-cpus=0 gets none
    small = [node("h", 0, head=True), node("b", 1)]
    assert workers_to_start(cfg, small, {}) == ({"b": 1}, False)
    # a worker that died for good keeps its place: a crashing node does not get new ones
    assert workers_to_start(cfg, [node("h", 8, head=True)], {"h": 2}) == ({}, False)
    # a node that left: its workers stop counting, the dead node gets nothing
    moved = [node("h", 8, head=True), node("b", 4, alive=False), node("c", 4)]
    assert workers_to_start(cfg, moved, {"h": 2, "b": 2}) == ({"c": 2}, False)


def test_gpu_clusters_get_a_worker_per_gpu_and_num_workers_caps_the_total() -> None:
    cfg = ClusterConfig()  # gpus_per_worker=1
    nodes = [node("h", 8, head=True), node("a", 32, 4), node("b", 32, 2)]
    assert workers_to_start(cfg, nodes, {}) == ({"a": 4, "b": 2}, True)  # none on the CPU head
    half = ClusterConfig(gpus_per_worker=0.5)
    assert workers_to_start(half, nodes, {}) == ({"a": 8, "b": 4}, True)
    few_cpus = [node("a", 2, 4)]  # each worker also reserves cpus_per_worker
    assert workers_to_start(cfg, few_cpus, {}) == ({"a": 2}, True)

    capped = ClusterConfig(num_workers=5)
    assert workers_to_start(capped, nodes, {}) == ({"a": 4, "b": 1}, True)
    assert workers_to_start(capped, nodes, {"a": 4, "b": 1}) == ({}, True)
    # node a is preempted: its workers' places go to the nodes left, up to the cap
    after = [node("h", 8, head=True), node("a", 32, 4, alive=False), node("b", 32, 2)]
    assert workers_to_start(capped, after, {"a": 4, "b": 1}) == ({"b": 1}, True)
    # a set num_workers on a CPU cluster: as many as fit, cpu_workers aside
    cpus = ClusterConfig(num_workers=3, cpu_workers=1)
    assert workers_to_start(cpus, [node("h", 2, head=True), node("b", 8)], {}) == (
        {"h": 2, "b": 1},
        False,
    )


# ------------------------------------------------------------------------------------------
# What status.json and summary.json say of the workers
# ------------------------------------------------------------------------------------------


def test_status_json_lists_the_workers_as_they_join_get_ready_and_leave(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path, min_interval_seconds=0.0)
    status.handle(JobStarted("demo", total_rows=2))
    assert "workers" not in json.loads(path.read_text())  # no pool yet (nothing to render)
    roster = WorkerRoster()
    events = [
        WorkerJoined("cpu-worker-0", "n1", "10.0.0.1", at=100.0),
        WorkerReady("cpu-worker-0", at=110.0),
        WorkerJoined("cpu-worker-1", "n2", "10.0.0.2", at=120.0, at_start=False),
        WorkerReady("cpu-worker-1", at=131.5, at_start=False),
        WorkerLeft("cpu-worker-1", NODE_LEFT, at=140.25),
    ]
    for event in events:
        status.handle(event)
        roster.handle(event)
    expected = [
        {
            "name": "cpu-worker-0",
            "node": "n1",
            "node_ip": "10.0.0.1",
            "state": "ready",
            "joined_at": 100.0,
            "ready_at": 110.0,
            "left_at": None,
            "reason": None,
        },
        {
            "name": "cpu-worker-1",
            "node": "n2",
            "node_ip": "10.0.0.2",
            "state": "left",
            "joined_at": 120.0,
            "ready_at": 131.5,
            "left_at": 140.25,
            "reason": "its node left the cluster",
        },
    ]
    assert json.loads(path.read_text())["workers"] == expected
    assert roster.entries() == expected  # what the job writes to summary.json


def test_the_console_says_when_a_worker_joins_or_leaves_after_the_start() -> None:
    output = io.StringIO()
    progress = RichProgress(
        Console(file=output, force_terminal=True, width=120, color_system=None),
        auto_refresh=False,
    )
    for event in [
        JobStarted("demo", total_rows=2),
        WorkerJoined("cpu-worker-0", "n1", "10.0.0.1", at=100.0),  # the job's own: the log says
        WorkerReady("cpu-worker-0", at=110.0),
        WorkerJoined("cpu-worker-1", "0123456789abcdef", "10.0.0.2", at=120.0, at_start=False),
        WorkerReady("cpu-worker-1", at=131.5, at_start=False),
        WorkerLeft("cpu-worker-1", NODE_LEFT, at=140.25),
        JobFinished("finished", 1.0),
    ]:
        progress.handle(event)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.getvalue())  # the terminal's codes
    lines = [line.strip() for line in re.split(r"[\r\n]", text)]
    assert [line for line in lines if line.startswith(("+", "- "))] == [
        "+ cpu-worker-1 joined on node 01234567 (10.0.0.2), loading the model",
        "+ cpu-worker-1 ready",
        "- cpu-worker-1 left: its node left the cluster",
    ]


# ------------------------------------------------------------------------------------------
# A real cluster on loopback
# ------------------------------------------------------------------------------------------


@pytest.fixture
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster of one head node (1 CPU) on 127.0.0.1 that this process does not join;
    tests add and remove worker nodes. Ray's "current cluster" address file, which the head
    overwrites, is put back, so ``address=auto`` elsewhere still finds what it found."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    previous = address_file.read_text() if address_file.exists() else None
    cluster = cluster_utils.Cluster(
        initialize_head=True, connect=False, head_node_args={**NODE, "include_dashboard": False}
    )
    if previous is not None:
        address_file.write_text(previous)
    else:
        address_file.unlink(missing_ok=True)
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elastic-clips")
    return pattern_video(folder / "clip.mp4", frames=FRAMES, rate="25", size="96x72")


def elastic_job(
    cluster: Any, clip: Path, rows: int, tmp_path: Path, weights: Path, *extra: str, rescan="1"
):
    """The CLI rendering ``rows`` rows of ``clip`` on ``cluster``: one CPU worker per node, one
    row per worker at a time (none prepared ahead), 16-frame segments, the nodes looked at every
    ``rescan`` seconds. Returns the process, its log and the job's folder."""
    manifest = write_manifest(
        tmp_path / "elastic.csv",
        [
            {"id": f"r{i}", "portrait": str(PORTRAIT), "driving_video": str(clip), "seed": str(i)}
            for i in range(rows)
        ],
    )
    args = tiny_render_overrides(
        manifest, tmp_path / "out", weights,
        f"cluster.address={cluster.address}", "cluster.cpu_workers=1", "cluster.rows_ahead=0",
        f"cluster.rescan_seconds={rescan}", "model.streams_per_worker=1", "video.segment_seconds=0.64",
        "video.first_segment_seconds=0.64", *extra,
    )  # fmt: skip
    log = tmp_path / "job.log"
    return start_job(args, log), log, tmp_path / "out/elastic"


def read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def segments_by(job_folder: Path, worker: str) -> dict[str, int]:
    """Rows with segments committed by ``worker``: row id → the last frame committed."""
    found: dict[str, int] = {}
    for path in job_folder.glob("_rows/*/segments/*.json"):
        marker = read_json(path)
        if marker and marker.get("worker") == worker:
            found[marker["row_id"]] = max(found.get(marker["row_id"], 0), marker["end_frame"])
    return found


def finish(job: subprocess.Popen, log: Path, timeout: float) -> int:
    """The job's exit code; a job still running after ``timeout`` is killed, with its log shown."""
    try:
        return job.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        raise AssertionError(f"the job did not finish:\n{log.read_text()[-4000:]}") from None


def assert_each_row_committed_once(job_folder: Path, rows: int) -> dict[str, dict]:
    """Every row done with all its frames (decoded), one commit marker, one kept upload and one
    public video each; returns summary.json's rows by id."""
    summary = json.loads((job_folder / "summary.json").read_text())
    by_id = {row["row_id"]: row for row in summary["rows"]}
    assert sorted(by_id) == [f"r{i}" for i in range(rows)]
    for row_id, row in by_id.items():
        assert (row["status"], row["frames"]) == ("done", FRAMES), row
        assert sum(1 for _ in VideoReader(row["output"])) == FRAMES
        (folder,) = job_folder.glob(f"_rows/{row_id}-*")
        kept = sorted(path.name for path in folder.rglob("*") if path.is_file())
        assert len(kept) == 2 and kept[0] == "commit.json" and kept[1].startswith("video."), kept
        assert len(list(job_folder.glob(f"{row_id}-*.mp4"))) == 1
    return by_id


@pytest.mark.slow
def test_a_node_that_joins_mid_job_gets_a_worker_that_renders_rows(
    ray_cluster, tiny_weights, clip, tmp_path: Path
) -> None:
    job, log, job_folder = elastic_job(ray_cluster, clip, 8, tmp_path, tiny_weights)
    try:
        # the node joins while the job's first worker loads the model (so the new one is ready
        # well before the rows run out, however fast this machine renders)
        started = "1 CPU worker(s) on 1 node(s) loading the model"
        wait_until(lambda: started in log.read_text(), 90, "the job's first worker", 0.2)
        joined = ray_cluster.add_node(**NODE)
        assert finish(job, log, 150) == 0, log.read_text()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    rows = assert_each_row_committed_once(job_folder, 8)
    summary = json.loads((job_folder / "summary.json").read_text())
    workers = {entry["name"]: entry for entry in summary["workers"]}
    assert sorted(workers) == ["cpu-worker-0", "cpu-worker-1"]
    first, late = workers["cpu-worker-0"], workers["cpu-worker-1"]
    assert first["node"] == ray_cluster.head_node.node_id
    assert late["node"] == joined.node_id and late["state"] == "ready"
    assert late["joined_at"] > first["ready_at"]  # started while the job ran
    assert any(row["worker"] == "cpu-worker-1" for row in rows.values())
    assert json.loads((job_folder / "status.json").read_text())["workers"] == summary["workers"]
    assert "worker_joined worker=cpu-worker-1 node=" + joined.node_id in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("rescan", ["1", "0"], ids=["rescans", "fixed-pool"])
def test_a_node_that_leaves_mid_job_loses_no_committed_frame_and_is_no_crash(
    ray_cluster, tiny_weights, clip, tmp_path: Path, rescan: str
) -> None:
    """With rescans the pool sees the node gone from the cluster's node table; with a fixed pool
    (``cluster.rescan_seconds=0``) it learns it from the failed render call."""
    doomed = ray_cluster.add_node(**NODE)
    # poison_after=1: a node's loss counted as the row's crash would quarantine the row at once
    job, log, job_folder = elastic_job(
        ray_cluster, clip, 4, tmp_path, tiny_weights, "cluster.poison_after=1", rescan=rescan
    )
    try:
        # the worker on the doomed node has committed two segments of a row: take the node away
        committed = wait_until(
            lambda: {row: end for row, end in segments_by(job_folder, "cpu-worker-1").items()
                     if end >= 32},
            120, "two segments from the second node's worker",
        )  # fmt: skip
        ray_cluster.remove_node(doomed)
        assert finish(job, log, 150) == 0, log.read_text()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    rows = assert_each_row_committed_once(job_folder, 4)
    ((moved, end_frame),) = committed.items()
    marker = read_json(next(job_folder.glob(f"_rows/{moved}-*/commit.json")))
    # finished elsewhere, from where the lost worker's last committed segment left off
    assert marker["worker"] == "cpu-worker-0" and marker["attempt"] == 2
    assert end_frame <= marker["resumed_from_frame"] < FRAMES
    assert rows[moved]["attempts"] == 2 and rows[moved]["worker"] == "cpu-worker-0"
    summary = json.loads((job_folder / "summary.json").read_text())
    workers = {entry["name"]: entry for entry in summary["workers"]}
    assert workers["cpu-worker-1"]["node"] == doomed.node_id
    assert (workers["cpu-worker-1"]["state"], workers["cpu-worker-1"]["reason"]) == (
        "left",
        NODE_LEFT,
    )
    assert workers["cpu-worker-0"]["state"] == "ready"
    text = log.read_text()
    assert "worker_left worker=cpu-worker-1" in text and "status=quarantined" not in text
