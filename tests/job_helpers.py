"""Shared by the job tests: manifests written as CSV, the overrides of a small CPU render, and
running the render job in this process or as the real CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest with the union of the rows' keys as columns (sorted)."""
    columns = sorted({key for row in rows for key in row})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_render_overrides(
    manifest: Path | str, output_root: Path | str, weights: Path, *extra: str
) -> list[str]:
    """Hydra overrides of a render job with the tiny model at 64x64 and plain progress lines."""
    return [
        "job=render",
        f"manifest={manifest}",
        "model=tiny",
        f"model.weights_dir={weights}",
        "model.random_init=false",
        "model.resolution=64",
        f"storage.output_root={output_root}",
        "job.progress=plain",
        "video.preset=ultrafast",
        *extra,
    ]


def run_in_process(args: list[str]) -> int:
    """``jobs.render.run`` on the Hydra-composed config (the embedded Ray of `ray_local`)."""
    from hydra import compose, initialize_config_dir

    from jobs.render import run
    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return run(compose("config", overrides=args))


def start_job(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python run.py`` in a session (process group) of its own, so a test can find and clean up
    what it leaves (its Ray, a killed driver's workers)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        env=environment, start_new_session=True,
    )  # fmt: skip


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """``predicate()``'s first truthy value; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
