"""job=bench: throughput of the worker's real streaming path (the measurement lives in
:mod:`pipeline.bench`). Prints the result as a table and appends it as JSON to
``job.bench.output``; exit code 0 when every row was rendered, 1 otherwise."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from pipeline.bench import BenchResult, TooFewRows, result_table, run_benchmark
from pipeline.logs import CONSOLE

from . import ConfigError
from ._common import typed


def run(cfg: DictConfig) -> int:
    settings = typed(cfg)
    try:
        result, profile = run_benchmark(settings)
    except TooFewRows as err:  # job.bench.manifest against job.bench.streams: a setting to change
        raise ConfigError(str(err)) from err
    if profile is not None:
        CONSOLE.print(profile)
    CONSOLE.print(result_table([result]))
    if settings.job.bench.output:
        append_result(Path(settings.job.bench.output), result)
    return 0 if result.rows_done == result.streams else 1


def append_result(path: Path, result: BenchResult) -> None:
    """``path`` holds a JSON list of results, one per run; this run's is added at the end."""
    previous = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(previous + [asdict(result)], indent=2))
