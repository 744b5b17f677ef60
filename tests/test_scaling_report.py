"""The scaling benchmark's tools on CPU workers: the synthetic manifest renders, and the report
computes aggregate fps and catches a row committed twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_render_job import render

from pipeline.media import probe
from scripts.make_bench_manifest import make_bench_manifest
from scripts.scaling_report import main as scaling_report


@pytest.mark.slow
def test_bench_manifest_renders_and_every_row_lands_exactly_once(
    ray_local, tiny_weights, tmp_path: Path
) -> None:
    manifest = make_bench_manifest(
        tmp_path / "m", rows=4, frames=12, portrait_size=96, clip_size=64
    )
    clips = sorted((tmp_path / "m/media").glob("drive_*.mp4"))
    assert [probe(clip).video.num_frames for clip in clips] == [12] * 4
    assert len({clip.read_bytes() for clip in clips}) == 4  # every row its own driving video

    out = tmp_path / "out"
    assert render(manifest, out, tiny_weights, "cluster.cpu_workers=2", "job.name=scaling") == 0
    job = out / "scaling"
    # a folder of an earlier run with other settings (no commit marker) is no duplicate
    (job / "_rows/row00-0123456789/segments").mkdir(parents=True)
    report = tmp_path / "scaling.json"
    assert scaling_report(["--manifest", str(manifest), f"2={job}", "--json", str(report)]) == 0
    figures = json.loads(report.read_text())["2"]
    assert figures["exactly_once"] and figures["uncommitted_row_folders"] == 1
    assert figures["frames"] == 48 and figures["rows"] == 4
    assert figures["aggregate_fps"] > 0 and figures["efficiency"] == 1.0
    assert sum(figures["rows_per_worker"].values()) == 4

    # the same row committed under a second folder is caught
    first = next(p for p in (job / "_rows").iterdir() if (p / "commit.json").exists())
    shutil.copytree(first, job / "_rows" / f"{first.name}-copy")
    assert scaling_report(["--manifest", str(manifest), f"2={job}"]) == 1
