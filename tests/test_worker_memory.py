"""A render worker streams: its peak memory does not grow with the driving video's length."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from media_factory import pattern_video

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from pipeline.config import ModelConfig, StorageConfig, VideoConfig
    from pipeline.storage import Storage
    from pipeline.worker import RowRenderer, RowTask, build_animator
    weights, clip, job, scratch = sys.argv[1:5]
    model = ModelConfig(architecture="tiny", weights_dir=weights, dtype="fp32", device="cpu", resolution=64)
    renderer = RowRenderer(build_animator(model), Storage(StorageConfig()), VideoConfig(preset="ultrafast"), scratch)
    task = RowTask("row", sys.argv[5], clip, None, job, "row-key", None, 0)
    outcome = renderer.render(task)
    assert outcome.status == "done", outcome
    print(json.dumps({"frames": outcome.frames, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


@pytest.mark.slow
def test_worker_peak_memory_is_flat_in_video_length(tiny_weights, tmp_path: Path) -> None:
    """Peak RSS rendering a 1,200-frame driving video is within 10 % of a 150-frame one."""
    peaks = {}
    for frames in (150, 1200):
        clip = pattern_video(tmp_path / f"clip{frames}.mp4", frames=frames, rate="25", size="96x72")
        result = subprocess.run(
            [
                sys.executable, "-c", PROBE, str(tiny_weights), str(clip), str(tmp_path / f"job{frames}"),
                str(tmp_path), str(REPO / "manifests/media/portrait_a.png"),
            ],
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["frames"] == frames
        peaks[frames] = report["peak_kb"]
    assert peaks[1200] <= peaks[150] * 1.10, peaks
