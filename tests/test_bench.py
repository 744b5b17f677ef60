"""job=bench runs the worker's streaming path on CPU with the tiny model (the GPU figures in
docs/benchmarks.md come from the same code on the full-size model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(tmp_path: Path, *overrides: str) -> dict:
    """``python run.py job=bench model=tiny model.resolution=64 job.bench.streams=2 ...`` in this
    process; returns the one result it wrote."""
    from hydra import compose, initialize_config_dir

    from jobs.bench import run
    from pipeline.config import register_configs

    register_configs()
    output = tmp_path / "bench.json"
    common = [
        "job=bench",
        "model=tiny",
        "model.resolution=64",
        "job.bench.streams=2",
        "job.progress=plain",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=[*common, f"job.bench.output={output}", *overrides])
        assert run(cfg) == 0
    (result,) = json.loads(output.read_text())
    return result


@pytest.mark.slow
def test_bench_reports_throughput_flops_and_completes_every_row(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path, "job.bench.frames=28", "job.bench.warmup_calls=2", "job.bench.label=cpu-test"
    )
    assert result["label"] == "cpu-test" and result["streams"] == 2 and result["rows_done"] == 2
    assert result["timed_calls"] >= 2 and result["output_fps"] > 0 and result["ms_per_call"] > 0
    assert result["flops_per_frame_t"] > 0  # counted with torch.utils.flop_counter
    start, end = result["keyframes_per_stream"]
    assert 0 <= start <= end <= 3  # the bank only grows, up to model.animator.max_keyframes
    assert (
        result["device"] == "cpu" and result["peak_memory_gib"] is None
    )  # GPU-only figures stay empty


def test_bench_reports_the_keyframes_its_window_attended_to(tmp_path: Path) -> None:
    """Banks that fill during the timed window make later calls longer: the result says how many
    history keyframes each stream's bank held at the window's first and last call."""
    result = run_bench(
        tmp_path,
        "job.bench.frames=40",
        "job.bench.warmup_calls=1",
        "job.bench.flops=false",
        # every candidate joins the bank, from the second call on
        "model.animator.keyframe_threshold=0",
        "model.animator.keyframe_min_chunks=1",
    )
    start, end = result["keyframes_per_stream"]
    assert start < end == 3  # filled up to model.animator.max_keyframes inside the window


@pytest.mark.slow
def test_bench_trace_records_every_thread_and_is_left_out_of_the_timing(tmp_path: Path) -> None:
    """job.bench.trace: a Chrome trace with the batch thread's operators (the denoising UNet's
    convolutions) and the row threads'; the traced calls are not timed."""
    import gzip

    trace = tmp_path / "trace.json.gz"
    result = run_bench(
        tmp_path,
        "job.bench.frames=48",
        "job.bench.warmup_calls=2",
        f"job.bench.trace={trace}",
        "job.bench.flops=false",
        "model.channels_last=true",
    )
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    ops = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
    threads_with_convolutions = {e["tid"] for e in ops if e["name"] == "aten::conv2d"}
    assert threads_with_convolutions, "the batch thread's operators are in the trace"
    assert len({e["tid"] for e in ops}) > len(threads_with_convolutions)  # row threads too
    stages = {e["name"] for e in events if e.get("cat") == "user_annotation"}
    assert {"stage:observe", "stage:denoise", "stage:decode"} <= stages
    # 48 frames = 12 calls + 3 flush calls; 2 warm-up and 4 traced calls are not timed
    assert 0 < result["timed_calls"] <= 15 - 2 - 4

    from scripts.trace_summary import summarize

    summary = summarize(trace)
    assert "GPU: no kernels in this trace (a CPU run)" in summary
    busiest = summary.splitlines()[3]  # the thread with the most operators: the batch thread
    assert busiest.startswith("  thread ") and "aten::conv2d" in busiest


def test_trace_summary_attributes_kernel_time_to_stages_and_shapes(tmp_path: Path) -> None:
    """A GPU trace's kernels are summed by the animator stage and by operator + input shapes that
    launched them (the links a CUDA trace carries: launch correlation ids, host op intervals)."""
    import gzip

    from scripts.trace_summary import summarize

    def op(name, ts, dur, **args):
        return {
            "ph": "X",
            "cat": "cpu_op",
            "name": name,
            "ts": ts,
            "dur": dur,
            "tid": 1,
            "args": args,
        }

    events = [
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": "stage:denoise",
            "ts": 0,
            "dur": 100,
            "tid": 1,
        },
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": "stage:decode",
            "ts": 100,
            "dur": 100,
            "tid": 1,
        },
        op("aten::mul", 10, 5, **{"Input Dims": [[8, 320], [8, 320]]}),
        op("aten::conv2d", 110, 20, **{"Input Dims": [[4, 128, 64, 64]]}),
        {
            "ph": "X",
            "cat": "cuda_runtime",
            "name": "cudaLaunchKernel",
            "ts": 12,
            "dur": 1,
            "tid": 1,
            "args": {"correlation": 7},
        },
        {
            "ph": "X",
            "cat": "cuda_runtime",
            "name": "cudaLaunchKernel",
            "ts": 115,
            "dur": 1,
            "tid": 1,
            "args": {"correlation": 8},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "mul_kernel",
            "ts": 20,
            "dur": 3000,
            "tid": 9,
            "args": {"correlation": 7},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "conv_kernel",
            "ts": 3100,
            "dur": 9000,
            "tid": 9,
            "args": {"correlation": 8},
        },
        # the GPU idles 80 µs between the kernels: the batch thread is between operators, the
        # preparation thread (named by its prep:* range) inside one
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": "prep:fuse_reference",
            "ts": 2900,
            "dur": 300,
            "tid": 2,
        },
        {**op("aten::linear", 3000, 60), "tid": 2},
        # the preparation thread's launch blocks 40 µs; its kernel waits 2 ms in the GPU's queue
        {
            "ph": "X",
            "cat": "cuda_runtime",
            "name": "cudaLaunchKernel",
            "ts": 3010,
            "dur": 40,
            "tid": 2,
            "args": {"correlation": 9},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "linear_kernel",
            "ts": 5010,
            "dur": 10,
            "tid": 9,
            "args": {"correlation": 9},
        },
    ]
    path = tmp_path / "trace.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    summary = summarize(path)
    assert "GPU: 3 kernels/copies over 12.1 ms, busy 12.0 ms" in summary
    idle = summary.split("by what the batch thread (thread 1) was in (ms):\n")[1]
    assert idle.startswith("        0.1  (no range) | (between operators)\n")
    others = summary.split("while another thread was in an operator (ms):\n")[1]
    assert others.startswith("        0.1  GPU preparation thread\n")
    assert "thread 2 (GPU preparation thread): 1 operators" in summary
    stages = summary.split("GPU time by animator stage (ms):\n")[1]
    assert stages.startswith("        9.0  stage:decode\n        3.0  stage:denoise")
    assert "9.0  conv_kernel | aten::conv2d [[4, 128, 64, 64]]" in summary
    assert (
        "0.3  prep:fuse_reference: operators 0.1, 1 launches 0.0; 1 kernels, queued 2.0" in summary
    )
    assert "3.0  mul_kernel | aten::mul [[8, 320], [8, 320]]" in summary


def test_bench_renders_the_first_rows_of_a_manifest(tmp_path: Path) -> None:
    """job.bench.manifest: the steady state of the rows a render job of that manifest meets (the
    render benchmark compares the two); each row rendered up to job.bench.frames."""
    from scripts.make_bench_manifest import make_bench_manifest, parse_spec

    assert parse_spec("1x30, 2x12") == [30, 12, 12]
    manifest = make_bench_manifest(
        tmp_path / "m", 3, 0, portrait_size=64, clip_size=64, lengths=parse_spec("1x30,2x20")
    )
    result = run_bench(
        tmp_path, f"job.bench.manifest={manifest}", "job.bench.frames=24",
        "job.bench.warmup_calls=1", "job.bench.flops=false",
    )  # fmt: skip
    assert result["streams"] == 2 and result["rows_done"] == 2
    assert result["frames_per_stream"] == 24 and result["timed_calls"] >= 2


def test_bench_says_when_a_manifest_has_too_few_rows(tmp_path: Path) -> None:
    import pytest

    from jobs import ConfigError
    from scripts.make_bench_manifest import make_bench_manifest

    manifest = make_bench_manifest(tmp_path / "m", 1, 8, portrait_size=64, clip_size=64)
    with pytest.raises(ConfigError, match=r"has 1 row\(s\); the benchmark needs 2"):
        run_bench(tmp_path, f"job.bench.manifest={manifest}", "job.bench.flops=false")


def test_the_timed_window_is_the_longest_steady_run_without_a_cuda_graph_capture() -> None:
    """A call that captured a graph took seconds (the GPU waited for the capture): with
    model.cuda_graphs a signature is captured on its second sighting, which can fall after the
    warm-up calls or near the end (rows flushing), so the window is the longest run of calls
    with every stream and no capture."""
    from pipeline.animate import BatchStats
    from pipeline.bench._measure import _timed_window

    # 2 streams join, 6 calls with both, then one leaves; captures at calls 3 and 6
    stats = BatchStats(
        streams=[1, 2, 2, 2, 2, 2, 2, 2, 1],
        captures=[0, 0, 0, 1, 1, 1, 2, 2, 3],
    )
    assert _timed_window(stats, first_timed=2) == [4, 5]
    stats.captures = [0, 0, 0, 1, 1, 1, 1, 1, 2]  # the capture at the end (1 stream) is after it
    assert _timed_window(stats, first_timed=2) == [4, 5, 6]  # the last full call left out
    stats.captures = [0, 0, 0, 0, 0, 0, 0, 1, 1]  # a capture in the last full call (flushing)
    assert _timed_window(stats, first_timed=2) == [2, 3, 4, 5, 6]
    stats.captures = [0] * 9  # no graphs: the warm-up alone decides
    assert _timed_window(stats, first_timed=2) == [2, 3, 4, 5, 6]
    stats.captures = [0, 0, 1, 2, 3, 4, 5, 6, 7]  # no steady call: one call, no rate
    assert _timed_window(stats, first_timed=2) == [7]
