"""Warm workers: on a running Ray cluster, a job with ``cluster.keep_workers=true`` leaves its
workers running, model loaded, and the next job with the same settings takes them over (no boot,
no weights, no first calls); a job with other model settings replaces them, and a job with
``keep_workers=false`` stops them at its end.

A real Ray cluster on loopback (`ray.cluster_utils.Cluster`, as in test_elastic), the real CLI
joining it, real videos decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_elastic import FRAMES, clip, elastic_job, finish, ray_cluster  # noqa: F401 - fixtures

from pipeline.cluster._warm import NAMESPACE, WarmName
from pipeline.media import VideoReader


def run_job(cluster, clip: Path, weights: Path, folder: Path, *extra: str) -> tuple[dict, str]:  # noqa: F811
    """One job of two rows on ``cluster``; returns its summary.json and its log."""
    folder.mkdir()
    job, log, job_folder = elastic_job(cluster, clip, 2, folder, weights, *extra)
    try:
        assert finish(job, log, 180) == 0, log.read_text()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    return json.loads((job_folder / "summary.json").read_text()), log.read_text()


def warm_actors(cluster) -> list[str]:
    """The names of the warm workers alive on ``cluster`` (asked from a process of its own:
    this one may be joined to the tests' embedded Ray)."""
    code = (
        "import json, ray\n"
        f"ray.init(address={cluster.address!r}, logging_level='ERROR')\n"
        "names = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True)"
        f" if a['namespace'] == {NAMESPACE!r}]\n"
        "print(json.dumps(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def frames_of(path: str) -> np.ndarray:
    return np.stack([frame for frame in VideoReader(path)])


@pytest.mark.slow
def test_a_warm_worker_serves_the_next_job_and_is_replaced_or_stopped_when_told(
    ray_cluster,  # noqa: F811
    clip,  # noqa: F811
    tiny_weights,
    tmp_path: Path,
) -> None:
    # 1. The first job starts the worker and leaves it running.
    first, log = run_job(
        ray_cluster, clip, tiny_weights, tmp_path / "first", "cluster.keep_workers=true"
    )
    (worker,) = first["startup"]["workers"]
    assert worker["jobs"] == 1 and worker["load_seconds"] >= 0
    assert "kept 1 warm worker(s) on the cluster" in log
    (kept,) = warm_actors(ray_cluster)
    parsed = WarmName.parse(kept)
    assert parsed is not None and parsed.node == ray_cluster.head_node.node_id

    # 2. The next job with the same settings takes it over: same process, nothing loaded, and
    #    the same frames as the first job rendered.
    second, log = run_job(
        ray_cluster, clip, tiny_weights, tmp_path / "second", "cluster.keep_workers=true"
    )
    (again,) = second["startup"]["workers"]
    assert (again["pid"], again["jobs"], again["name"]) == (worker["pid"], 2, worker["name"])
    assert "took over 1 warm worker(s) left by an earlier job" in log
    assert "kept warm (job 2 on it: nothing loaded)" in log
    for before, after in zip(first["rows"], second["rows"]):
        assert after["status"] == "done" and after["frames"] == FRAMES
        assert np.array_equal(frames_of(before["output"]), frames_of(after["output"]))
    assert warm_actors(ray_cluster) == [kept]

    # 3. Other model settings: the warm worker is replaced (it holds the CPU or GPU the new one
    #    needs); keep_workers=false stops the new one at the end, so none is left.
    third, log = run_job(
        ray_cluster,
        clip,
        tiny_weights,
        tmp_path / "third",
        "model.resolution=48",
        "cluster.keep_workers=false",
    )
    (fresh,) = third["startup"]["workers"]
    assert fresh["pid"] != worker["pid"] and fresh["jobs"] == 1
    assert "stopping 1 warm worker(s) that earlier jobs left with other model" in log
    assert all(row["status"] == "done" for row in third["rows"])
    assert warm_actors(ray_cluster) == []
