"""job=bench runs the worker's streaming path on CPU with the tiny model (the GPU figures in
docs/benchmarks.md come from the same code on the full-size model)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_reports_throughput_flops_and_completes_every_row(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from jobs.bench import run
    from pipeline.config import register_configs

    register_configs()
    output = tmp_path / "bench.json"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(
            "config",
            overrides=[
                "job=bench", "model=tiny", "model.resolution=64", "job.bench.frames=28", "job.bench.streams=2",
                "job.bench.warmup_calls=2", f"job.bench.output={output}", "job.bench.label=cpu-test", "job.progress=plain",
            ],
        )  # fmt: skip
        assert run(cfg) == 0
    (result,) = json.loads(output.read_text())
    assert result["label"] == "cpu-test" and result["streams"] == 2 and result["rows_done"] == 2
    assert result["timed_calls"] >= 2 and result["output_fps"] > 0 and result["ms_per_call"] > 0
    assert result["flops_per_frame_t"] > 0  # counted with torch.utils.flop_counter
    assert (
        result["device"] == "cpu" and result["peak_memory_gib"] is None
    )  # GPU-only figures stay empty
